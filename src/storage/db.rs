//! The SQLite database: opening it (WAL, foreign keys, migrations) and the queries camhub runs. The schema itself is
//! `migrations/*.sql`, commented there.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::auth::Role;
use crate::error::{Error, Result};

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
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
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
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| Error::Dependency { dependency: "database", detail: format!("migration: {e}") })?;
        Ok(Db { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn cameras(&self) -> Result<Vec<CameraRow>> {
        let rows =
            sqlx::query("SELECT id, kind, origin, name, url FROM cameras ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(CameraRow {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    origin: r.try_get("origin")?,
                    name: r.try_get("name")?,
                    url: r.try_get("url")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Inserts or refreshes a camera row.
    pub async fn upsert_camera(&self, row: &CameraRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO cameras (id, kind, origin, name, url, created_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, origin = excluded.origin,
                 name = excluded.name, url = excluded.url",
        )
        .bind(&row.id)
        .bind(&row.kind)
        .bind(&row.origin)
        .bind(&row.name)
        .bind(&row.url)
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

    pub async fn count_events(&self, topic: &str, device: Option<&str>) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE topic = ? AND (? IS NULL OR device = ?)")
            .bind(topic)
            .bind(device)
            .bind(device)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        db.upsert_camera(&row).await.expect("insert");
        db.upsert_camera(&CameraRow { name: "Front door".into(), ..row }).await.expect("update");
        let rows = db.cameras().await.expect("list");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "Front door");
        db.insert_api_key("abc", "chk_1", "", Role::Operator).await.expect("key");
        assert_eq!(db.api_key_role("abc").await.expect("lookup").map(|k| k.1), Some(Role::Operator));
        assert_eq!(db.api_key_role("nope").await.expect("lookup"), None);
        db.close().await;
        // Reopening runs no migration twice.
        let db = Db::open(&dir.path().join("camhub.db")).await.expect("reopen");
        assert_eq!(db.cameras().await.expect("list").len(), 1);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&db.pool).await.expect("pragma");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&db.pool).await.expect("pragma");
        assert_eq!(fk, 1);
    }
}
