-- camhub's schema. This file is the source of truth for what is stored; the code in src/storage/db.rs only reads and
-- writes these tables. Times are Unix milliseconds (INTEGER). Never edit a migration that has shipped: add a new one.

-- Every camera camhub has known. Ids are public and stable: a camera keeps its id across restarts (and, for devices,
-- across unplug/replug via `device_key`). `url` may carry credentials and never leaves the process.
CREATE TABLE cameras (
    id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    kind        TEXT NOT NULL CHECK (kind IN ('rtsp', 'v4l2')),
    -- 'config': declared in the config file (re-read at every start); 'api': added at run time, kept until removed.
    origin      TEXT NOT NULL CHECK (origin IN ('config', 'api')),
    name        TEXT NOT NULL,
    url         TEXT,
    -- For devices: the physical identity (udev ID_PATH, serial, vendor/model) that maps back to the same id.
    device_key  TEXT UNIQUE,
    created_at  INTEGER NOT NULL
);

-- API keys. Only a SHA-256 of the key is stored: the key itself is shown once, when created. Keys are 256-bit random
-- values, so a plain hash is enough (no password stretching needed).
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    -- First characters of the key, so an admin can tell keys apart without the secret.
    prefix        TEXT NOT NULL,
    name          TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

-- The event log: what happened, when, to which camera. Pruned by age.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    topic     TEXT NOT NULL,
    -- No foreign key: events outlive the cameras they mention.
    device    TEXT,
    details   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_device_at ON events (device, at);
