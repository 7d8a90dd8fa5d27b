-- Several storage roots for recordings (`[[storage.roots]]`). Each root directory carries a marker file
-- (`.camhub-root`) naming this database (the `database_id` setting, a random id made once) and the root's id, so a
-- swapped or foreign disk is recognised, never mixed up. This table is what the database knows of its roots: a root
-- seen once is expected to carry its marker from then on (an empty directory at a known path is an unmounted disk,
-- not a fresh root), and a disk found at another path is recognised by its marker and its path updated.
CREATE TABLE storage_roots (
    -- The id in the marker: 'default' for STORAGE_ROOT/recordings, 16 hex digits for the others.
    id          TEXT PRIMARY KEY NOT NULL,
    -- Where the root was last found.
    path        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Which root holds each segment file. Rows stay while their root is away (a missing disk is not a lost recording);
-- a file on an absent root is listed but cannot be downloaded until the root returns. Segments recorded before
-- several roots existed are in STORAGE_ROOT/recordings, the 'default' root.
ALTER TABLE segments ADD COLUMN root_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX segments_root ON segments (root_id, started_at);

-- Segments being written, with the exact time of their first frame: a file recovered later (after a crash, or from
-- a root that failed under it and came back) is placed on the timeline by it, where its name and modification time
-- only give an estimate. A row goes when its segment is indexed; one left over names a file never indexed.
CREATE TABLE open_segments (
    filename    TEXT PRIMARY KEY NOT NULL,
    started_at  INTEGER NOT NULL
);
