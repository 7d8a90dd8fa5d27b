-- Playback and spans by time range (`list_recording_spans`, `/playback`, `export_recording`) ask for one camera's
-- segments that overlap a window: this index answers them without reading other cameras' rows.
CREATE INDEX segments_camera ON segments (camera, started_at);
