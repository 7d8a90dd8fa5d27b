//! The SQLite database: opening it (WAL, foreign keys, migrations) and the queries camhub runs. The schema itself is
//! `migrations/*.sql`, commented there.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::base::Role;
use crate::base::time::now_ms;
use crate::error::{Dependency, Error, Result};

/// A handle on the database; cloning shares the pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
}

/// A camera row, as stored.
#[derive(Debug, Clone)]
pub struct CameraRow {
    pub id: String,
    pub kind: String,
    pub origin: String,
    pub name: String,
    pub url: Option<String>,
    /// A device's physical identity (V4L2 cameras).
    pub device_key: Option<String>,
    /// A pushed camera's stream key: its SHA-256 (hex) and first characters.
    pub key_hash: Option<String>,
    pub key_prefix: Option<String>,
}

impl Db {
    /// Opens (creating if needed) `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Db> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(Error::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL is durable across process crashes and keeps commits cheap; index rows are written
            // only after their files are fsynced, so a power cut can lose a row, never point one at a missing file.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let migrator = sqlx::migrate!("./migrations");
        // Two processes opening one new database at once (`camhub token` beside a starting `camhub run`) race: one
        // may find the file locked while the other turns on WAL (which takes no busy timeout), and sqlx reads which
        // migrations are applied, then runs each in a transaction with nothing held between, so both may start
        // migration 1 and the loser fails on the tables the winner made (its transaction rolled back). Opened again,
        // it finds the winner's work applied and goes on from there.
        let mut attempt = 0;
        let pool = loop {
            let opened = async {
                let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await?;
                match migrator.run(&pool).await {
                    Ok(()) => Ok(pool),
                    Err(e) => {
                        pool.close().await;
                        Err(Error::dependency(Dependency::Database, format!("migration: {e}")))
                    }
                }
            };
            match opened.await {
                Ok(pool) => break pool,
                Err(e) if attempt < MIGRATION_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(err = %e, attempt, "opening the database failed; another opener may be migrating: again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Db { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn cameras(&self) -> Result<Vec<CameraRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, origin, name, url, device_key, key_hash, key_prefix FROM cameras ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CameraRow {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    origin: r.try_get("origin")?,
                    name: r.try_get("name")?,
                    url: r.try_get("url")?,
                    device_key: r.try_get("device_key")?,
                    key_hash: r.try_get("key_hash")?,
                    key_prefix: r.try_get("key_prefix")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Inserts or refreshes a camera row.
    pub async fn upsert_camera(&self, row: &CameraRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO cameras (id, kind, origin, name, url, device_key, key_hash, key_prefix, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, origin = excluded.origin,
                 name = excluded.name, url = excluded.url, device_key = excluded.device_key,
                 key_hash = excluded.key_hash, key_prefix = excluded.key_prefix",
        )
        .bind(&row.id)
        .bind(&row.kind)
        .bind(&row.origin)
        .bind(&row.name)
        .bind(&row.url)
        .bind(&row.device_key)
        .bind(&row.key_hash)
        .bind(&row.key_prefix)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_camera(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM cameras WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn insert_api_key(&self, key_hash: &str, prefix: &str, name: &str, role: Role) -> Result<i64> {
        let r = sqlx::query("INSERT INTO api_keys (key_hash, prefix, name, role, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(key_hash)
            .bind(prefix)
            .bind(name)
            .bind(role.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.last_insert_rowid())
    }

    /// The role of the unrevoked key with this hash, marking it used.
    pub async fn api_key_role(&self, key_hash: &str) -> Result<Option<(i64, Role)>> {
        let row = sqlx::query("SELECT id, role FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("id")?;
        let role: String = row.try_get("role")?;
        let role = Role::parse(&role).ok_or_else(|| Error::internal(format!("api key {id} has unknown role")))?;
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(Some((id, role)))
    }

    pub async fn insert_event(&self, at_ms: i64, topic: &str, device: Option<&str>, details: &str) -> Result<()> {
        sqlx::query("INSERT INTO events (at, topic, device, details) VALUES (?, ?, ?, ?)")
            .bind(at_ms)
            .bind(topic)
            .bind(device)
            .bind(details)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes events older than `before_ms`; returns how many.
    pub async fn prune_events(&self, before_ms: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM events WHERE at < ?").bind(before_ms).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }
}

/// A recording session row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub camera: String,
    pub format: String,
    pub requested_at: i64,
    pub started_at: i64,
    pub trigger: String,
}

/// A segment row: one complete, synced recording file.
#[derive(Debug, Clone)]
pub struct SegmentRow {
    pub session_id: String,
    pub camera: String,
    pub filename: String,
    pub format: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub recovered: bool,
    /// The storage root holding the file (`storage_roots.id`).
    pub root: String,
}

fn segment_from(r: &sqlx::sqlite::SqliteRow) -> Result<SegmentRow, sqlx::Error> {
    Ok(SegmentRow {
        session_id: r.try_get("session_id")?,
        camera: r.try_get("camera")?,
        filename: r.try_get("filename")?,
        format: r.try_get("format")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        duration_ms: r.try_get("duration_ms")?,
        size_bytes: r.try_get("size_bytes")?,
        recovered: r.try_get::<i64, _>("recovered")? != 0,
        root: r.try_get("root_id")?,
    })
}

/// How many times migrations are run again after a failure (another process migrating the same new database).
const MIGRATION_ATTEMPTS: u64 = 5;

/// `SELECT <segment columns> FROM segments <rest>`, as a static string (sqlx refuses dynamic SQL).
macro_rules! select_segments {
    ($rest:literal) => {
        concat!(
            "SELECT session_id, camera, filename, format, started_at, ended_at, duration_ms, size_bytes, recovered, ",
            "root_id ",
            "FROM segments ",
            $rest
        )
    };
}

impl Db {
    pub async fn insert_session(&self, s: &SessionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO recording_sessions (id, camera, format, requested_at, started_at, state, trigger)
             VALUES (?, ?, ?, ?, ?, 'recording', ?)",
        )
        .bind(&s.id)
        .bind(&s.camera)
        .bind(&s.format)
        .bind(s.requested_at)
        .bind(s.started_at)
        .bind(&s.trigger)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a session ended: `state` is 'stopped', 'error' or 'interrupted'.
    pub async fn finish_session(&self, id: &str, ended_at: i64, state: &str, reason: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE recording_sessions SET ended_at = ?, state = ?, reason = ? WHERE id = ?")
            .bind(ended_at)
            .bind(state)
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sessions a previous process left running; they are now interrupted.
    pub async fn interrupt_open_sessions(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT id, camera, started_at FROM recording_sessions WHERE state = 'recording'")
            .fetch_all(&self.pool)
            .await?;
        let open = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("id")?,
                    r.try_get::<String, _>("camera")?,
                    r.try_get::<i64, _>("started_at")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        for (id, _, _) in &open {
            let end = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(ended_at) FROM segments WHERE session_id = ?")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
            self.finish_session(id, end.unwrap_or_else(now_ms), "interrupted", Some("camhub stopped unexpectedly"))
                .await?;
        }
        Ok(open)
    }

    /// The session of `camera` whose id starts with `tag` (how a recovered file finds its session).
    pub async fn session_by_tag(&self, camera: &str, tag: &str) -> Result<Option<String>> {
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(None);
        }
        Ok(sqlx::query_scalar(
            "SELECT id FROM recording_sessions WHERE camera = ? AND substr(id, 1, length(?)) = ? ORDER BY started_at DESC",
        )
        .bind(camera)
        .bind(tag)
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Notes a segment being written and the time of its first frame (see `open_segments`).
    pub async fn note_open_segment(&self, filename: &str, started_at: i64) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO open_segments (filename, started_at) VALUES (?, ?)")
            .bind(filename)
            .bind(started_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn open_segment_start(&self, filename: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT started_at FROM open_segments WHERE filename = ?")
            .bind(filename)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Inserts a segment's row (its file complete and synced); it is no longer an open segment.
    pub async fn insert_segment(&self, s: &SegmentRow) -> Result<()> {
        sqlx::query("DELETE FROM open_segments WHERE filename = ?").bind(&s.filename).execute(&self.pool).await?;
        sqlx::query(
            "INSERT INTO segments (session_id, camera, filename, format, started_at, ended_at, duration_ms,
                 size_bytes, recovered, created_at, root_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.session_id)
        .bind(&s.camera)
        .bind(&s.filename)
        .bind(&s.format)
        .bind(s.started_at)
        .bind(s.ended_at)
        .bind(s.duration_ms)
        .bind(s.size_bytes)
        .bind(s.recovered as i64)
        .bind(now_ms())
        .bind(&s.root)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Segments, newest first, and how many there are in all.
    pub async fn list_segments(&self, limit: i64, offset: i64) -> Result<(Vec<SegmentRow>, i64)> {
        let rows = sqlx::query(select_segments!("ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM segments").fetch_one(&self.pool).await?;
        Ok((rows.iter().map(segment_from).collect::<Result<_, _>>()?, total))
    }

    /// Segments, oldest first (retention deletes from the front).
    pub async fn oldest_segments(&self, limit: i64) -> Result<Vec<SegmentRow>> {
        let rows =
            sqlx::query(select_segments!("ORDER BY started_at, id LIMIT ?")).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(segment_from).collect::<Result<_, _>>()?)
    }

    pub async fn segments_of_session(&self, session_id: &str) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(select_segments!("WHERE session_id = ? ORDER BY started_at, id"))
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(segment_from).collect::<Result<_, _>>()?)
    }

    /// The segments of `camera` that overlap `[from, to)` (Unix ms), oldest first.
    pub async fn segments_between(&self, camera: &str, from: i64, to: i64) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(select_segments!(
            "WHERE camera = ? AND started_at < ? AND ended_at > ? ORDER BY started_at, id"
        ))
        .bind(camera)
        .bind(to)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(segment_from).collect::<Result<_, _>>()?)
    }

    /// Whether any segment of `camera` is indexed (recordings outlive the cameras that made them).
    pub async fn camera_has_segments(&self, camera: &str) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, i64>("SELECT EXISTS (SELECT 1 FROM segments WHERE camera = ?)")
            .bind(camera)
            .fetch_one(&self.pool)
            .await?
            != 0)
    }

    pub async fn segment(&self, filename: &str) -> Result<Option<SegmentRow>> {
        let row = sqlx::query(select_segments!("WHERE filename = ?")).bind(filename).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(segment_from).transpose()?)
    }

    pub async fn delete_segment(&self, filename: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM segments WHERE filename = ?").bind(filename).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn segment_filenames(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT filename FROM segments").fetch_all(&self.pool).await?)
    }

    /// The names of the segments on one root.
    pub async fn segment_filenames_on(&self, root: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT filename FROM segments WHERE root_id = ?")
            .bind(root)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Segments on any of `roots`, oldest first (retention deletes from the front; files on an absent root cannot be
    /// deleted, so they are left out).
    pub async fn oldest_segments_on(&self, roots: &[String], limit: i64) -> Result<Vec<SegmentRow>> {
        let roots = serde_json::to_string(roots).map_err(Error::internal)?;
        let rows = sqlx::query(select_segments!(
            "WHERE root_id IN (SELECT value FROM json_each(?)) ORDER BY started_at, id LIMIT ?"
        ))
        .bind(roots)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(segment_from).collect::<Result<_, _>>()?)
    }

    /// Bytes of the segments on one root.
    pub async fn segments_size_on(&self, root: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(size_bytes), 0) FROM segments WHERE root_id = ?")
            .bind(root)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The roots this database knows: (id, path).
    pub async fn storage_roots(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, path FROM storage_roots ORDER BY created_at").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("path")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Records where a root was found (a new root, or a known one at another path).
    pub async fn upsert_storage_root(&self, id: &str, path: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO storage_roots (id, path, created_at) VALUES (?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET path = excluded.path",
        )
        .bind(id)
        .bind(path)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn segments_total_size(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(size_bytes), 0) FROM segments").fetch_one(&self.pool).await?)
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = ?").bind(key).fetch_optional(&self.pool).await?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two openers of one new database at once (`camhub token` beside a starting `camhub run`) both come up.
    #[tokio::test]
    async fn a_new_database_opened_twice_at_once_is_migrated_once() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("camhub.db");
            let (a, b) = tokio::join!(Db::open(&path), Db::open(&path));
            a.expect("the first opener");
            b.expect("the second opener");
        }
    }

    #[tokio::test]
    async fn schema_applies_and_round_trips() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("camhub.db")).await.expect("open");
        let row = CameraRow {
            id: "front".into(),
            kind: "rtsp".into(),
            origin: "api".into(),
            name: "Front".into(),
            url: Some("rtsp://h/x".into()),
            device_key: None,
            key_hash: None,
            key_prefix: None,
        };
        db.upsert_camera(&row).await.expect("insert");
        let device = CameraRow {
            id: "camera0".into(),
            kind: "v4l2".into(),
            origin: "discovered".into(),
            name: "Webcam".into(),
            url: None,
            device_key: Some("usb:046d:0825:ABC".into()),
            key_hash: None,
            key_prefix: None,
        };
        db.upsert_camera(&device).await.expect("a discovered device");
        db.upsert_camera(&CameraRow { name: "Front door".into(), ..row }).await.expect("update");
        let rows = db.cameras().await.expect("list");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].name, "Front door");
        assert_eq!(rows[0].device_key.as_deref(), Some("usb:046d:0825:ABC"));
        db.insert_api_key("abc", "chk_1", "", Role::Operator).await.expect("key");
        assert_eq!(db.api_key_role("abc").await.expect("lookup").map(|k| k.1), Some(Role::Operator));
        assert_eq!(db.api_key_role("nope").await.expect("lookup"), None);
        db.close().await;
        // Reopening runs no migration twice.
        let db = Db::open(&dir.path().join("camhub.db")).await.expect("reopen");
        assert_eq!(db.cameras().await.expect("list").len(), 2);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&db.pool).await.expect("pragma");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&db.pool).await.expect("pragma");
        assert_eq!(fk, 1);
    }
}

/// A detection event row (see `migrations/0004_detections.sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRow {
    pub id: i64,
    pub camera: String,
    pub track: i64,
    pub label: String,
    pub score: f64,
    pub top_score: f64,
    pub rect: [f64; 4],
    pub started_at: i64,
    pub frame_time: i64,
    pub ended_at: Option<i64>,
    pub snapshot: Option<String>,
    pub recording: Option<String>,
}

/// Which detection events to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct DetectionFilter {
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Milliseconds since the epoch: events that started at or after / before.
    pub since: Option<i64>,
    pub until: Option<i64>,
}

fn detection_from(r: &sqlx::sqlite::SqliteRow) -> Result<DetectionRow, sqlx::Error> {
    Ok(DetectionRow {
        id: r.try_get("id")?,
        camera: r.try_get("camera")?,
        track: r.try_get("track")?,
        label: r.try_get("label")?,
        score: r.try_get("score")?,
        top_score: r.try_get("top_score")?,
        rect: [r.try_get("x1")?, r.try_get("y1")?, r.try_get("x2")?, r.try_get("y2")?],
        started_at: r.try_get("started_at")?,
        frame_time: r.try_get("frame_time")?,
        ended_at: r.try_get("ended_at")?,
        snapshot: r.try_get("snapshot")?,
        recording: r.try_get("recording")?,
    })
}

/// The filter as SQL, a literal (sqlx refuses dynamic SQL): placeholders 1-4 are camera, label, since, until; an
/// absent one matches everything.
macro_rules! detection_where {
    () => {
        "WHERE (?1 IS NULL OR camera = ?1) AND (?2 IS NULL OR label = ?2) \
         AND (?3 IS NULL OR started_at >= ?3) AND (?4 IS NULL OR started_at < ?4)"
    };
}

impl Db {
    /// Inserts a confirmed object's event; returns its id.
    pub async fn insert_detection(&self, d: &DetectionRow) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO detections (camera, track, label, score, top_score, x1, y1, x2, y2, started_at, frame_time, \
             ended_at, snapshot, recording) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.camera)
        .bind(d.track)
        .bind(&d.label)
        .bind(d.score)
        .bind(d.top_score)
        .bind(d.rect[0])
        .bind(d.rect[1])
        .bind(d.rect[2])
        .bind(d.rect[3])
        .bind(d.started_at)
        .bind(d.frame_time)
        .bind(d.ended_at)
        .bind(&d.snapshot)
        .bind(&d.recording)
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_rowid())
    }

    /// Writes an event's changing fields (scores, best box and frame, end, picture, recording).
    pub async fn update_detection(&self, d: &DetectionRow) -> Result<()> {
        sqlx::query(
            "UPDATE detections SET score = ?, top_score = ?, x1 = ?, y1 = ?, x2 = ?, y2 = ?, frame_time = ?, \
             ended_at = ?, snapshot = ?, recording = ? WHERE id = ?",
        )
        .bind(d.score)
        .bind(d.top_score)
        .bind(d.rect[0])
        .bind(d.rect[1])
        .bind(d.rect[2])
        .bind(d.rect[3])
        .bind(d.frame_time)
        .bind(d.ended_at)
        .bind(&d.snapshot)
        .bind(&d.recording)
        .bind(d.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Events matching `filter`, newest first, and how many match.
    pub async fn list_detections(
        &self,
        filter: &DetectionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DetectionRow>, i64)> {
        let select = concat!(
            "SELECT * FROM detections ",
            detection_where!(),
            " ORDER BY started_at DESC, id DESC LIMIT ?5 OFFSET ?6"
        );
        let rows = sqlx::query(select)
            .bind(&filter.camera)
            .bind(&filter.label)
            .bind(filter.since)
            .bind(filter.until)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*) FROM detections ", detection_where!()))
            .bind(&filter.camera)
            .bind(&filter.label)
            .bind(filter.since)
            .bind(filter.until)
            .fetch_one(&self.pool)
            .await?;
        let rows = rows.iter().map(detection_from).collect::<Result<_, sqlx::Error>>()?;
        Ok((rows, total))
    }

    pub async fn detection(&self, id: i64) -> Result<Option<DetectionRow>> {
        let row = sqlx::query("SELECT * FROM detections WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(detection_from).transpose()?)
    }

    /// Up to `limit` ended events that started before `before_ms`, oldest first: (id, picture).
    pub async fn old_detections(&self, before_ms: i64, limit: i64) -> Result<Vec<(i64, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT id, snapshot FROM detections WHERE started_at < ? AND ended_at IS NOT NULL ORDER BY id LIMIT ?",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("snapshot")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    pub async fn delete_detection(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM detections WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Closes events left open by a previous run (camhub stopped while objects were in view) at their last known
    /// frame.
    pub async fn end_open_detections(&self) -> Result<u64> {
        let r = sqlx::query("UPDATE detections SET ended_at = frame_time WHERE ended_at IS NULL")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

/// What `backup` needs of a database file: a consistent copy while camhub uses it, and what the copy holds.
impl Db {
    /// Opens an existing database as it is: no migrations (a newer or older camhub may be using it), nothing created.
    pub async fn open_existing(path: &Path) -> Result<Db> {
        if !path.is_file() {
            return Err(Error::dependency(Dependency::Database, format!("{} does not exist", path.display())));
        }
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(Error::from)?
            .filename(path)
            .create_if_missing(false)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        Ok(Db { pool })
    }

    /// Writes a consistent copy of the whole database to `dest` (`VACUUM INTO`), which must not exist. Runs as one
    /// read transaction: with WAL, the service goes on writing meanwhile and the copy is the database as of its start.
    pub async fn vacuum_into(&self, dest: &Path) -> Result<()> {
        let dest = dest.to_str().ok_or_else(|| Error::internal("backup path is not UTF-8"))?;
        sqlx::query("VACUUM INTO ?").bind(dest).execute(&self.pool).await?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: `Ok` when SQLite finds the file sound, else what it found.
    pub async fn integrity_check(&self) -> Result<(), String> {
        let found: Vec<String> =
            sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&self.pool).await.map_err(|e| e.to_string())?;
        if found == ["ok"] { Ok(()) } else { Err(found.join("; ")) }
    }

    /// The schema version: the newest migration applied (0 for an empty database).
    pub async fn schema_version(&self) -> Result<i64> {
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(None);
        Ok(version.unwrap_or(0))
    }

    /// How many segments the index holds, and their total duration (ms).
    pub async fn segments_summary(&self) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(duration_ms), 0) AS ms FROM segments")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("n")?, row.try_get("ms")?))
    }
}

/// The schema version this camhub brings its databases to (its newest migration).
pub fn latest_schema_version() -> i64 {
    sqlx::migrate!("./migrations").iter().map(|m| m.version).max().unwrap_or(0)
}

/// What `check --rebuild` changes besides inserting and deleting rows.
impl Db {
    /// Sets a segment's measured size and duration (its file changed since the row was written); the end follows.
    pub async fn update_segment_measure(&self, filename: &str, size_bytes: i64, duration_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE segments SET size_bytes = ?, duration_ms = ?, ended_at = started_at + ?, recovered = 1
             WHERE filename = ?",
        )
        .bind(size_bytes)
        .bind(duration_ms)
        .bind(duration_ms)
        .bind(filename)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves the end of each ended session to the end of its last segment where that is later (segments indexed from
    /// files after the session was closed: recreated from names, or recorded after the backup a database came from);
    /// returns how many.
    pub async fn extend_sessions_to_segments(&self) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE recording_sessions SET ended_at = last.last_end
             FROM (SELECT session_id, MAX(ended_at) AS last_end FROM segments GROUP BY session_id) AS last
             WHERE last.session_id = recording_sessions.id AND state != 'recording'
                 AND last.last_end > COALESCE(recording_sessions.ended_at, 0)",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod backup_tests {
    use super::*;

    fn segment(session: &str, name: &str, started_at: i64, duration_ms: i64) -> SegmentRow {
        SegmentRow {
            session_id: session.into(),
            camera: "cam".into(),
            filename: name.into(),
            format: "fmp4".into(),
            started_at,
            ended_at: started_at + duration_ms,
            duration_ms,
            size_bytes: 1000,
            recovered: false,
            root: "default".into(),
        }
    }

    #[tokio::test]
    async fn a_copy_made_while_open_holds_what_was_committed_and_says_its_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("camhub.db")).await.expect("open");
        let session = SessionRow {
            id: "s1".into(),
            camera: "cam".into(),
            format: "fmp4".into(),
            requested_at: 1000,
            started_at: 1000,
            trigger: "api".into(),
        };
        db.insert_session(&session).await.expect("session");
        db.insert_segment(&segment("s1", "a.mp4", 1000, 2000)).await.expect("segment");
        let copy = dir.path().join("copy.db");
        db.vacuum_into(&copy).await.expect("vacuum into");
        assert!(db.vacuum_into(&copy).await.is_err(), "VACUUM INTO refuses an existing file");
        let copied = Db::open_existing(&copy).await.expect("open the copy");
        copied.integrity_check().await.expect("sound");
        assert_eq!(copied.schema_version().await.expect("version"), latest_schema_version());
        assert_eq!(copied.segments_summary().await.expect("summary"), (1, 2000));
        copied.close().await;
        assert!(Db::open_existing(&dir.path().join("absent.db")).await.is_err(), "nothing is created");
        assert!(!dir.path().join("absent.db").exists());

        // A session closed early, then segments found on disk: its end follows its last one.
        db.finish_session("s1", 3000, "interrupted", None).await.expect("finish");
        db.insert_segment(&segment("s1", "b.mp4", 3000, 2000)).await.expect("later segment");
        assert_eq!(db.extend_sessions_to_segments().await.expect("extend"), 1);
        let end: i64 = sqlx::query_scalar("SELECT ended_at FROM recording_sessions WHERE id = 's1'")
            .fetch_one(&db.pool)
            .await
            .expect("end");
        assert_eq!(end, 5000);
        assert_eq!(db.extend_sessions_to_segments().await.expect("again"), 0);
        db.update_segment_measure("b.mp4", 1500, 1800).await.expect("measure");
        let row = db.segment("b.mp4").await.expect("query").expect("row");
        assert_eq!((row.size_bytes, row.duration_ms, row.ended_at, row.recovered), (1500, 1800, 4800, true));
    }
}
