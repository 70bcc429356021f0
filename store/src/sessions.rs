//! The portal's sessions: one row per live session id, keyed by the id's SHA-256. The
//! portal decides when a session is idle, old or due for a new id; this file only reads and
//! writes rows, each change in one statement or one transaction.

use chrono::{DateTime, FixedOffset};
use sqlx::Row;

use super::{parse_time, q, utc_text, Result, Store};

/// A live session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// The resident's id, or a staff member's.
    pub resident_id: String,
    /// For a staff member's session, who they are (the console's JSON); `None` for a
    /// resident's.
    pub staff: Option<String>,
    /// The token the session's forms carry.
    pub csrf: String,
    /// When this id was issued: by the login, or by the last rotation.
    pub issued_at: DateTime<FixedOffset>,
    pub last_seen_at: DateTime<FixedOffset>,
    /// The end of the session's life (or of a replaced id's grace).
    pub expires_at: DateTime<FixedOffset>,
}

impl Store {
    pub async fn open_session(
        &self,
        id_hash: &str,
        resident: &str,
        staff: Option<&str>,
        csrf: &str,
        now: DateTime<FixedOffset>,
        expires_at: DateTime<FixedOffset>,
    ) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO portal_sessions
               (id_hash, resident_id, csrf, issued_at, last_seen_at, expires_at, staff)
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        ))
        .bind(id_hash.to_owned())
        .bind(resident.to_owned())
        .bind(csrf.to_owned())
        .bind(utc_text(now))
        .bind(utc_text(expires_at))
        .bind(staff.map(str::to_owned))
        .execute(&self.pool)
        .await
        .map_err(q("opening a portal session"))?;
        Ok(())
    }

    pub async fn portal_session(&self, id_hash: &str) -> Result<Option<PortalSession>> {
        let row = sqlx::query(self.sql(
            "SELECT resident_id, staff, csrf, issued_at, last_seen_at, expires_at
             FROM portal_sessions WHERE id_hash = $1",
        ))
        .bind(id_hash.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(q("reading a portal session"))?;
        let Some(r) = row else { return Ok(None) };
        let text =
            |c: &str| -> Result<String> { r.try_get(c).map_err(q("reading a portal session")) };
        let time = |c: &str| -> Result<DateTime<FixedOffset>> {
            parse_time("portal session time", &text(c)?)
        };
        Ok(Some(PortalSession {
            resident_id: text("resident_id")?,
            staff: r.try_get("staff").map_err(q("reading a portal session"))?,
            csrf: text("csrf")?,
            issued_at: time("issued_at")?,
            last_seen_at: time("last_seen_at")?,
            expires_at: time("expires_at")?,
        }))
    }

    /// Records use of a session (its idle timeout counts from here).
    pub async fn touch_session(&self, id_hash: &str, now: DateTime<FixedOffset>) -> Result<()> {
        sqlx::query(self.sql(
            "UPDATE portal_sessions SET last_seen_at = $2
             WHERE id_hash = $1 AND last_seen_at < $2",
        ))
        .bind(id_hash.to_owned())
        .bind(utc_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("touching a portal session"))?;
        Ok(())
    }

    /// Gives the session of `old_hash` the new id `new_hash`; the old id lives on until
    /// `old_until` for requests already under way. Returns false (and changes nothing) when
    /// the old id is gone or was already replaced: of two requests rotating at once, one
    /// wins and the other goes on with the old id's grace.
    pub async fn rotate_session(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: DateTime<FixedOffset>,
        old_until: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let what = "rotating a portal session";
        let mut tx = self.begin_write(what).await?;
        let row = sqlx::query(self.sql(
            "SELECT resident_id, staff, csrf, expires_at FROM portal_sessions
             WHERE id_hash = $1 AND expires_at > $2",
        ))
        .bind(old_hash.to_owned())
        .bind(utc_text(old_until))
        .fetch_optional(&mut *tx)
        .await
        .map_err(q(what))?;
        let Some(r) = row else { return Ok(false) };
        let resident: String = r.try_get("resident_id").map_err(q(what))?;
        let staff: Option<String> = r.try_get("staff").map_err(q(what))?;
        let csrf: String = r.try_get("csrf").map_err(q(what))?;
        let expires: String = r.try_get("expires_at").map_err(q(what))?;
        sqlx::query(self.sql("UPDATE portal_sessions SET expires_at = $2 WHERE id_hash = $1"))
            .bind(old_hash.to_owned())
            .bind(utc_text(old_until))
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        sqlx::query(self.sql(
            "INSERT INTO portal_sessions
               (id_hash, resident_id, csrf, issued_at, last_seen_at, expires_at, staff)
             VALUES ($1, $2, $3, $4, $4, $5, $6)",
        ))
        .bind(new_hash.to_owned())
        .bind(resident)
        .bind(csrf)
        .bind(utc_text(now))
        .bind(expires)
        .bind(staff)
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        tx.commit().await.map_err(q(what))?;
        Ok(true)
    }

    /// Ends the session of an id (a logout, a timeout, a new login from the same browser):
    /// that id and every id it was rotated from or to, which share its CSRF token.
    pub async fn end_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query(self.sql(
            "DELETE FROM portal_sessions
             WHERE csrf IN (SELECT csrf FROM portal_sessions WHERE id_hash = $1)",
        ))
        .bind(id_hash.to_owned())
        .execute(&self.pool)
        .await
        .map_err(q("ending a portal session"))?;
        Ok(())
    }

    /// Deletes sessions past their life or idle since `idle_before`; returns how many.
    pub async fn prune_sessions(
        &self,
        now: DateTime<FixedOffset>,
        idle_before: DateTime<FixedOffset>,
    ) -> Result<u64> {
        let done = sqlx::query(
            self.sql("DELETE FROM portal_sessions WHERE expires_at <= $1 OR last_seen_at <= $2"),
        )
        .bind(utc_text(now))
        .bind(utc_text(idle_before))
        .execute(&self.pool)
        .await
        .map_err(q("pruning portal sessions"))?;
        Ok(done.rows_affected())
    }
}
