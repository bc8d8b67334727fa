//! The admin pages' sign-in: the admin password's hash (in `settings`)
//! and browser sessions (`admin_sessions`).

use super::{Result, Store, now_ms};

const ADMIN_PASSWORD_HASH: &str = "admin_password_hash";

/// A signed-in browser session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminSession {
    pub csrf_token: String,
    pub expires_at: i64,
}

impl Store {
    /// The admin password's argon2id hash (PHC string), if one is set.
    pub async fn admin_password_hash(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(ADMIN_PASSWORD_HASH)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn set_admin_password_hash(&self, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(ADMIN_PASSWORD_HASH)
        .bind(hash)
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Records a session whose cookie hashes to `id_hash`; expired ones
    /// are removed in the same statement's transaction.
    pub async fn create_admin_session(
        &self,
        id_hash: &str,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session whose cookie hashes to `id_hash`.
    pub async fn admin_session(&self, id_hash: &str) -> Result<Option<AdminSession>> {
        Ok(sqlx::query_as(
            "SELECT csrf_token, expires_at FROM admin_sessions
              WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn delete_admin_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.writer())
            .await?;
        Ok(())
    }
}
