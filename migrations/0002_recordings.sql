-- Recordings: sessions (one start..stop of one camera) and their segment files. The invariant: a `segments` row exists
-- only for a file that is complete on disk and synced (file fsynced, then its directory, then the row inserted). A
-- segment still being written has no row; after a crash, start-up recovery makes the file playable and indexes it.

CREATE TABLE recording_sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    -- No foreign key to cameras: recordings outlive the cameras that made them.
    camera        TEXT NOT NULL,
    format        TEXT NOT NULL CHECK (format IN ('fmp4', 'mp4', 'mkv')),
    -- Wall time of the call, and of the first recorded frame (earlier by the pre-roll).
    requested_at  INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    -- 'recording' until stopped; 'stopped' after a stop or a duration; 'error' when it ended on a failure;
    -- 'interrupted' when camhub died while it ran (set by start-up recovery).
    state         TEXT NOT NULL CHECK (state IN ('recording', 'stopped', 'error', 'interrupted')),
    -- Why it ended, when it did not end by request.
    reason        TEXT,
    -- 'api' (start_recording) or 'continuous' (record = "always" in the config).
    trigger       TEXT NOT NULL
);
CREATE INDEX recording_sessions_camera ON recording_sessions (camera, started_at);

CREATE TABLE segments (
    id           INTEGER PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES recording_sessions (id) ON DELETE CASCADE,
    camera       TEXT NOT NULL,
    -- A plain file name in STORAGE_ROOT/recordings: never a path.
    filename     TEXT NOT NULL UNIQUE,
    format       TEXT NOT NULL,
    -- Wall-clock times (Unix ms) of the first frame and of the end of the last one.
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    size_bytes   INTEGER NOT NULL,
    -- 1 when the file was recovered after a crash (trimmed to its last complete fragment).
    recovered    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE INDEX segments_started ON segments (started_at);
CREATE INDEX segments_session ON segments (session_id, started_at);

-- Small persistent settings, such as the retention policy set through the API. Values are JSON.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);
