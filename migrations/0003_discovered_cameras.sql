-- Cameras found on the machine (V4L2 devices through udev) are neither configured nor added by a client: their origin
-- is 'discovered', and their `device_key` (the physical identity) maps a replugged device back to its id. SQLite
-- cannot change a CHECK constraint in place, so the table is rebuilt with the same columns and rows (nothing refers
-- to it by foreign key).
CREATE TABLE cameras_new (
    id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    kind        TEXT NOT NULL CHECK (kind IN ('rtsp', 'v4l2')),
    -- 'config': declared in the config file (re-read at every start); 'api': added at run time, kept until removed;
    -- 'discovered': a local device, listed while camhub runs once it has been seen, its id kept forever.
    origin      TEXT NOT NULL CHECK (origin IN ('config', 'api', 'discovered')),
    name        TEXT NOT NULL,
    url         TEXT,
    device_key  TEXT UNIQUE,
    created_at  INTEGER NOT NULL
);
INSERT INTO cameras_new (id, kind, origin, name, url, device_key, created_at)
    SELECT id, kind, origin, name, url, device_key, created_at FROM cameras;
DROP TABLE cameras;
ALTER TABLE cameras_new RENAME TO cameras;
