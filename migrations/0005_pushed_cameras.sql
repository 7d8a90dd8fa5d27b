-- Cameras that are pushed to camhub (RTMP, SRT, WHIP) and clips played in a loop. A pushed camera is opened by its
-- stream key: only a SHA-256 of the key is stored (`key_hash`; the key is 256-bit random, shown once when created),
-- with its first characters (`key_prefix`) so an operator can tell keys apart. Revoking a key removes its camera.
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt with the same rows (nothing refers to it
-- by foreign key).
CREATE TABLE cameras_new (
    id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    kind        TEXT NOT NULL CHECK (kind IN ('rtsp', 'v4l2', 'file', 'push')),
    -- 'config': declared in the config file (re-read at every start); 'api': added at run time, kept until removed;
    -- 'discovered': a local device, listed while camhub runs once it has been seen, its id kept forever.
    origin      TEXT NOT NULL CHECK (origin IN ('config', 'api', 'discovered')),
    name        TEXT NOT NULL,
    url         TEXT,
    device_key  TEXT UNIQUE,
    created_at  INTEGER NOT NULL,
    key_hash    TEXT UNIQUE CHECK ((kind = 'push') = (key_hash IS NOT NULL)),
    key_prefix  TEXT
);
INSERT INTO cameras_new (id, kind, origin, name, url, device_key, created_at)
    SELECT id, kind, origin, name, url, device_key, created_at FROM cameras;
DROP TABLE cameras;
ALTER TABLE cameras_new RENAME TO cameras;
