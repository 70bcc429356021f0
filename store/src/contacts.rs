//! How a resident can be reached now: the register's record, the preferences they set in
//! the portal, and their web push subscriptions. The outbox workers read these at send time,
//! so a preference saved after a decision still applies to its notices.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::outbox::topic_of;
use super::{q, utc_text, OutboxItem, Result, Store, StoreError};
use oshirase_engine::resident::{Channel, Resident};

/// A browser's push subscription (the Push API's `PushSubscription`, flattened).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    pub id: i64,
    pub resident_id: String,
    pub endpoint: String,
    /// base64url P-256 public key of the browser.
    pub p256dh: String,
    /// base64url 16-byte authentication secret.
    pub auth: String,
}

/// Preferences a resident saved in the portal; they override the register's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalPreferences {
    /// Channels the resident accepts (the portal itself always has every notice).
    pub channels: Vec<Channel>,
    pub email_consent: bool,
    pub webpush_consent: bool,
}

impl PortalPreferences {
    /// Whether a notice may go to `channel`. Critical notices cannot be muted.
    pub fn accepts(&self, channel: Channel, critical: bool) -> bool {
        match channel {
            Channel::Portal => true,
            Channel::Email => self.email_consent && (critical || self.channels.contains(&channel)),
            Channel::Webpush => {
                self.webpush_consent && (critical || self.channels.contains(&channel))
            }
        }
    }
}

impl Store {
    /// The register's current record of a person, if any.
    pub async fn resident(&self, id: &str) -> Result<Option<Resident>> {
        let row = sqlx::query(self.sql("SELECT record FROM residents WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a resident"))?;
        row.map(|r| {
            let record: String = r.try_get("record").map_err(q("reading a resident"))?;
            serde_json::from_str(&record).map_err(|e| StoreError::Corrupt {
                what: "resident record",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Registers the subscription for `endpoint`, or renews `resident`'s own (new keys);
    /// returns its id, or `None` when another resident holds the endpoint: it is never moved,
    /// or that resident's notices would go to whoever posted it.
    pub async fn add_push_subscription(
        &self,
        resident: &str,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Option<i64>> {
        let row = sqlx::query(self.sql(
            "INSERT INTO push_subscriptions (resident_id, endpoint, p256dh, auth, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (endpoint) DO UPDATE SET
               p256dh = excluded.p256dh, auth = excluded.auth, created_at = excluded.created_at
             WHERE push_subscriptions.resident_id = excluded.resident_id
             RETURNING id",
        ))
        .bind(resident.to_owned())
        .bind(endpoint.to_owned())
        .bind(p256dh.to_owned())
        .bind(auth.to_owned())
        .bind(utc_text(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(q("registering a push subscription"))?;
        row.map(|r| r.try_get("id"))
            .transpose()
            .map_err(q("registering a push subscription"))
    }

    /// A resident's push subscriptions, oldest first.
    pub async fn push_subscriptions(&self, resident: &str) -> Result<Vec<PushSubscription>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, resident_id, endpoint, p256dh, auth FROM push_subscriptions
             WHERE resident_id = $1 ORDER BY id",
        ))
        .bind(resident.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading push subscriptions"))?;
        rows.iter()
            .map(|r| {
                Ok(PushSubscription {
                    id: r.try_get("id")?,
                    resident_id: r.try_get("resident_id")?,
                    endpoint: r.try_get("endpoint")?,
                    p256dh: r.try_get("p256dh")?,
                    auth: r.try_get("auth")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("reading push subscriptions"))
    }

    /// Deletes a subscription; with `resident`, only if it is theirs. Returns whether one was.
    pub async fn delete_push_subscription(&self, id: i64, resident: Option<&str>) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "DELETE FROM push_subscriptions WHERE id = $1 AND ($2 IS NULL OR resident_id = $2)",
        ))
        .bind(id)
        .bind(resident.map(str::to_owned))
        .execute(&self.pool)
        .await
        .map_err(q("deleting a push subscription"))?;
        Ok(done.rows_affected() > 0)
    }

    /// The preferences a resident saved in the portal, if they ever did.
    pub async fn portal_preferences(&self, resident: &str) -> Result<Option<PortalPreferences>> {
        let row = sqlx::query(self.sql(
            "SELECT channels, email_consent, webpush_consent FROM resident_preferences
             WHERE resident_id = $1",
        ))
        .bind(resident.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(q("reading preferences"))?;
        row.map(|r| {
            let channels: String = r.try_get("channels").map_err(q("reading preferences"))?;
            let email: i64 = r
                .try_get("email_consent")
                .map_err(q("reading preferences"))?;
            let push: i64 = r
                .try_get("webpush_consent")
                .map_err(q("reading preferences"))?;
            Ok(PortalPreferences {
                channels: serde_json::from_str(&channels).map_err(|e| StoreError::Corrupt {
                    what: "preferences",
                    detail: e.to_string(),
                })?,
                email_consent: email != 0,
                webpush_consent: push != 0,
            })
        })
        .transpose()
    }

    pub async fn set_portal_preferences(
        &self,
        resident: &str,
        prefs: &PortalPreferences,
        now: DateTime<FixedOffset>,
    ) -> Result<()> {
        let channels = serde_json::to_string(&prefs.channels).map_err(|e| StoreError::Corrupt {
            what: "preferences",
            detail: e.to_string(),
        })?;
        sqlx::query(self.sql(
            "INSERT INTO resident_preferences (resident_id, channels, email_consent, webpush_consent, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (resident_id) DO UPDATE SET channels = excluded.channels,
               email_consent = excluded.email_consent, webpush_consent = excluded.webpush_consent,
               updated_at = excluded.updated_at",
        ))
        .bind(resident.to_owned())
        .bind(channels)
        .bind(i64::from(prefs.email_consent))
        .bind(i64::from(prefs.webpush_consent))
        .bind(utc_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("saving preferences"))?;
        Ok(())
    }

    /// Rows of `channel` delivered to `recipient` since `since` (the daily cap counts these).
    pub async fn delivered_since(
        &self,
        recipient: &str,
        channel: &str,
        since: DateTime<FixedOffset>,
    ) -> Result<i64> {
        let row = sqlx::query(self.sql(
            "SELECT COUNT(*) AS n FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
             WHERE o.recipient = $1 AND o.channel = $2 AND a.outcome = 'delivered' AND a.attempted_at >= $3",
        ))
        .bind(recipient.to_owned())
        .bind(channel.to_owned())
        .bind(utc_text(since))
        .fetch_one(&self.pool)
        .await
        .map_err(q("counting today's deliveries"))?;
        row.try_get("n").map_err(q("counting today's deliveries"))
    }

    /// Queues what `item` carried (the notice, or its status news) for its recipient on
    /// `channel` (push → e-mail fallback). Returns false if such a row already existed.
    pub async fn queue_fallback(
        &self,
        item: &OutboxItem,
        channel: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "INSERT INTO outbox (decision_key, recipient, channel, topic, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (decision_key, recipient, channel, topic) DO NOTHING",
        ))
        .bind(item.decision_key.as_str().to_owned())
        .bind(item.recipient.clone())
        .bind(channel.to_owned())
        .bind(topic_of(item.news.as_ref()))
        .bind(utc_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("queueing a fallback"))?;
        Ok(done.rows_affected() > 0)
    }
}
