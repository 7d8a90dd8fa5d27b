-- Detection events: one row per tracked object, from `new` to `end`, owned by `detection`.
CREATE TABLE detections (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    camera      TEXT    NOT NULL,
    -- The tracker's id for the object, unique per camera while camhub runs.
    track       INTEGER NOT NULL,
    label       TEXT    NOT NULL,
    -- The last score reported, and the best.
    score       REAL    NOT NULL,
    top_score   REAL    NOT NULL,
    -- The box of the best frame, as fractions of the frame (x1, y1, x2, y2).
    x1          REAL    NOT NULL,
    y1          REAL    NOT NULL,
    x2          REAL    NOT NULL,
    y2          REAL    NOT NULL,
    -- Milliseconds since the epoch: confirmed, best frame, ended (NULL while in view).
    started_at  INTEGER NOT NULL,
    frame_time  INTEGER NOT NULL,
    ended_at    INTEGER,
    -- The best picture's file name in the events area, and the first file of the recording it started or joined.
    snapshot    TEXT,
    recording   TEXT
);
CREATE INDEX detections_by_time ON detections (started_at);
CREATE INDEX detections_by_camera ON detections (camera, started_at);
