//! The outbox in the store: rows claimed with leases (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), every attempt recorded, rows settled, listed and put back for operators.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate};
use sqlx::{AssertSqlSafe, Row};

use oshirase_engine::eval::DecisionKey;
use oshirase_engine::resident::Resident;

use super::{
    parse_time, q, utc_text, ApplicationStatus, Backend, NoticeBody, PortalPreferences, Result,
    Store, StoreError, Val,
};

/// What an outbox row carries when it is not the notice itself: the news that the
/// application `seq` of the notice became `status` (docs/office.md). Stored as the row's
/// `topic`, `application/{seq}/{status}`; the notice's own rows have the topic `''`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApplicationNews {
    pub seq: i64,
    pub status: ApplicationStatus,
}

impl ApplicationNews {
    /// The row's `topic`.
    pub fn topic(&self) -> String {
        format!("application/{}/{}", self.seq, self.status.name())
    }

    /// The news a stored `topic` names: `Ok(None)` for the notice itself (`''`), an error
    /// for anything that is neither.
    pub fn from_topic(topic: &str) -> Result<Option<Self>> {
        if topic.is_empty() {
            return Ok(None);
        }
        let bad = || corrupt("outbox topic")(format!("{topic:?}"));
        let rest = topic.strip_prefix("application/").ok_or_else(bad)?;
        let (seq, status) = rest.split_once('/').ok_or_else(bad)?;
        let seq: i64 = seq
            .parse()
            .ok()
            .filter(|n| *n > 0 && seq.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)?;
        let status = ApplicationStatus::from_name(status).ok_or_else(bad)?;
        Ok(Some(Self { seq, status }))
    }
}

/// The `topic` column of a row carrying `news` (`''` for the notice itself).
pub(crate) fn topic_of(news: Option<&ApplicationNews>) -> String {
    news.map(ApplicationNews::topic).unwrap_or_default()
}

/// An outbox row claimed by a worker, with the notice it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub decision_key: DecisionKey,
    /// A resident id, or `staff` for notices nobody on the register can receive.
    pub recipient: String,
    /// The outbox channel name (`Channel::name`).
    pub channel: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The procedure's deadline, which bounds retries of the notice; `None` for news (a
    /// status may be set long after the deadline, and its news must still go out).
    pub deadline: Option<NaiveDate>,
    /// `None` for the notice itself; the application status news this row carries otherwise.
    pub news: Option<ApplicationNews>,
    /// What a channel may show of the decision: its title, message, category, recipients and
    /// whether it is critical.
    pub notice: NoticeBody,
    /// The recipient's register record now (contact points, consents), if they are on it.
    pub resident: Option<Resident>,
    /// The preferences the recipient saved in the portal, if any; they override the record's.
    pub preferences: Option<PortalPreferences>,
}

/// How an attempt ended, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Delivered,
    /// Try again at this time.
    RetryAt {
        at: DateTime<FixedOffset>,
        reason: String,
    },
    /// Given up: the row is a dead letter with the reason.
    Dead {
        reason: String,
    },
    /// The address or subscription no longer exists.
    Gone {
        reason: String,
    },
    /// Not an attempt: held until `at` (quiet hours, the daily cap); attempts are unchanged.
    Deferred {
        at: DateTime<FixedOffset>,
        reason: String,
    },
    /// Not sent: the recipient no longer accepts this channel (a preference set after the
    /// decision). The portal still has the notice.
    Muted {
        reason: String,
    },
}

impl Settle {
    /// The outcome as metrics, logs and `delivery_attempts` name it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Settle::Delivered => "delivered",
            Settle::RetryAt { .. } => "retry",
            Settle::Dead { .. } => "dead",
            Settle::Gone { .. } => "gone",
            Settle::Deferred { .. } => "deferred",
            Settle::Muted { .. } => "muted",
        }
    }

    /// The state the row is left in.
    pub fn state(&self) -> OutboxState {
        match self {
            Settle::Delivered => OutboxState::Delivered,
            Settle::RetryAt { .. } | Settle::Deferred { .. } => OutboxState::Pending,
            Settle::Dead { .. } => OutboxState::Dead,
            Settle::Gone { .. } => OutboxState::Gone,
            Settle::Muted { .. } => OutboxState::Muted,
        }
    }
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutboxState {
    /// Due at `next_attempt_at` (waiting, or to be retried).
    Pending,
    Delivered,
    /// A dead letter: given up, with the reason.
    Dead,
    /// The address or subscription no longer exists.
    Gone,
    /// Not sent: the recipient no longer accepts the channel.
    Muted,
}

impl OutboxState {
    pub const ALL: [OutboxState; 5] = [
        OutboxState::Pending,
        OutboxState::Delivered,
        OutboxState::Dead,
        OutboxState::Gone,
        OutboxState::Muted,
    ];

    /// The name stored in `outbox.state`.
    pub fn name(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
            OutboxState::Gone => "gone",
            OutboxState::Muted => "muted",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An outbox row for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub decision_key: DecisionKey,
    pub recipient: String,
    pub channel: String,
    pub state: OutboxState,
    pub attempts: i64,
    pub next_attempt_at: DateTime<FixedOffset>,
    pub last_error: Option<String>,
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |detail| StoreError::Corrupt { what, detail }
}

fn parse_key(key: &str) -> Result<DecisionKey> {
    DecisionKey::parse(key).map_err(|e| corrupt("outbox decision key")(e.to_string()))
}

impl Store {
    /// Claims up to `limit` due rows of `channel` for `worker` until `lease_until`. On
    /// PostgreSQL rows locked by another claimer are skipped (`FOR UPDATE SKIP LOCKED`); SQLite
    /// serializes writers, so its claims never overlap either.
    pub async fn claim_outbox(
        &self,
        channel: &str,
        worker: &str,
        limit: i64,
        now: DateTime<FixedOffset>,
        lease_until: DateTime<FixedOffset>,
    ) -> Result<Vec<OutboxItem>> {
        let sql = match self.backend {
            Backend::Postgres => self.sql(
                // `= ANY(ARRAY(…))` keeps the planner on the primary key instead of hashing
                // the whole table against the batch.
                "UPDATE outbox SET lease_until = $1, leased_by = $2 WHERE id = ANY(ARRAY(
                   SELECT id FROM outbox WHERE channel = $3 AND state = 'pending' AND next_attempt_at <= $4
                     AND (lease_until IS NULL OR lease_until < $4)
                   ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)) RETURNING id",
            ),
            Backend::Sqlite => self.sql(
                "UPDATE outbox SET lease_until = $1, leased_by = $2 WHERE id IN (
                   SELECT id FROM outbox WHERE channel = $3 AND state = 'pending' AND next_attempt_at <= $4
                     AND (lease_until IS NULL OR lease_until < $4)
                   ORDER BY id LIMIT $5) RETURNING id",
            ),
        };
        let lease = utc_text(lease_until);
        let claimed: Vec<i64> = sqlx::query(sql)
            .bind(lease)
            .bind(worker.to_owned())
            .bind(channel.to_owned())
            .bind(utc_text(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| rows.iter().map(|r| r.try_get("id")).collect())
            .map_err(q("claiming outbox rows"))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // The claimed rows with their decisions, the recipients' records and saved preferences
        // in one read by id (the worker's checks then need no query per row).
        let mut sql = self.in_list(
            "SELECT o.id, o.decision_key, o.recipient, o.channel, o.attempts, o.topic, d.body, d.deadline,
                    r.record, p.channels, p.email_consent, p.webpush_consent
             FROM outbox o JOIN decisions d ON d.key = o.decision_key
               LEFT JOIN residents r ON r.id = o.recipient
               LEFT JOIN resident_preferences p ON p.resident_id = o.recipient
             WHERE o.id IN (",
            claimed.len(),
        );
        sql.push_str(" ORDER BY o.id");
        // Fixed text and placeholders only.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in &claimed {
            query = query.bind(*id);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading claimed outbox rows"))?;
        let json_corrupt = |what| move |e: serde_json::Error| corrupt(what)(e.to_string());
        rows.iter()
            .map(|r| {
                let read = q("reading claimed outbox rows");
                let get = |c: &str| r.try_get::<String, _>(c);
                let opt = |c: &str| r.try_get::<Option<String>, _>(c);
                let (deadline, record, channels) = (
                    opt("deadline").map_err(read)?,
                    opt("record").map_err(q("reading claimed outbox rows"))?,
                    opt("channels").map_err(q("reading claimed outbox rows"))?,
                );
                let preferences = match channels {
                    None => None,
                    Some(c) => {
                        let flag = |col: &str| {
                            r.try_get::<i64, _>(col)
                                .map(|v| v != 0)
                                .map_err(q("reading claimed outbox rows"))
                        };
                        Some(PortalPreferences {
                            channels: serde_json::from_str(&c)
                                .map_err(json_corrupt("preferences"))?,
                            email_consent: flag("email_consent")?,
                            webpush_consent: flag("webpush_consent")?,
                        })
                    }
                };
                let text = |c: &str| get(c).map_err(q("reading claimed outbox rows"));
                let news = ApplicationNews::from_topic(&text("topic")?)?;
                Ok(OutboxItem {
                    id: r.try_get("id").map_err(q("reading claimed outbox rows"))?,
                    decision_key: parse_key(&text("decision_key")?)?,
                    recipient: text("recipient")?,
                    channel: text("channel")?,
                    attempts: r
                        .try_get("attempts")
                        .map_err(q("reading claimed outbox rows"))?,
                    deadline: deadline
                        .and_then(|x| x.parse().ok())
                        .filter(|_| news.is_none()),
                    news,
                    notice: serde_json::from_str(&text("body")?)
                        .map_err(json_corrupt("decision body"))?,
                    resident: record
                        .map(|x| serde_json::from_str(&x))
                        .transpose()
                        .map_err(json_corrupt("resident record"))?,
                    preferences,
                })
            })
            .collect()
    }

    /// Records attempts and settles rows in one transaction, those `worker` still holds;
    /// returns their ids (a row missing from the answer was taken over by another worker).
    /// Delivered rows, the common case, settle with one statement for the whole batch.
    pub async fn settle_outbox_batch(
        &self,
        worker: &str,
        settles: &[(i64, Settle)],
        now: DateTime<FixedOffset>,
    ) -> Result<BTreeSet<i64>> {
        let now_t = utc_text(now);
        let mut held = BTreeSet::new();
        let mut attempts: Vec<Vec<Val>> = Vec::new();
        let mut tx = self.begin_write("settling outbox rows").await?;
        let delivered: Vec<i64> = settles
            .iter()
            .filter(|(_, s)| *s == Settle::Delivered)
            .map(|(id, _)| *id)
            .collect();
        for chunk in delivered.chunks(1000) {
            let mut sql = self.in_list(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL,
                   lease_until = NULL, leased_by = NULL WHERE id IN (",
                chunk.len(),
            );
            sql.push_str(" AND leased_by = ");
            self.push_placeholder(&mut sql, chunk.len() + 1);
            sql.push_str(" RETURNING id");
            // Fixed text and placeholders only.
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            query = query.bind(worker.to_owned());
            for row in query
                .fetch_all(&mut *tx)
                .await
                .map_err(q("settling delivered rows"))?
            {
                let id: i64 = row.try_get("id").map_err(q("settling delivered rows"))?;
                held.insert(id);
                attempts.push(vec![
                    Val::Int(id),
                    Val::Text(now_t.clone()),
                    Val::Text("delivered".into()),
                    Val::OptText(None),
                ]);
            }
        }
        for (id, settle) in settles.iter().filter(|(_, s)| *s != Settle::Delivered) {
            let (next, error) = match settle {
                Settle::Delivered => unreachable!("settled above"),
                Settle::RetryAt { at, reason } | Settle::Deferred { at, reason } => {
                    (Some(utc_text(*at)), Some(reason.clone()))
                }
                Settle::Dead { reason } | Settle::Gone { reason } | Settle::Muted { reason } => {
                    (None, Some(reason.clone()))
                }
            };
            // A deferral is not an attempt: it does not count towards giving up.
            let counted = i64::from(!matches!(settle, Settle::Deferred { .. }));
            let done = sqlx::query(self.sql(
                "UPDATE outbox SET state = $1, attempts = attempts + $6, next_attempt_at = COALESCE($2, next_attempt_at),
                   last_error = $3, lease_until = NULL, leased_by = NULL
                 WHERE id = $4 AND leased_by = $5",
            ))
            .bind(settle.state().name().to_owned())
            .bind(next)
            .bind(error.clone())
            .bind(*id)
            .bind(worker.to_owned())
            .bind(counted)
            .execute(&mut *tx)
            .await
            .map_err(q("settling an outbox row"))?;
            if done.rows_affected() > 0 {
                held.insert(*id);
                attempts.push(vec![
                    Val::Int(*id),
                    Val::Text(now_t.clone()),
                    Val::Text(settle.outcome().to_owned()),
                    Val::OptText(error),
                ]);
            }
        }
        if !attempts.is_empty() {
            self.insert_rows(
                &mut tx,
                "INSERT INTO delivery_attempts (outbox_id, attempted_at, outcome, detail) VALUES ",
                "",
                attempts,
                "recording delivery attempts",
            )
            .await?;
        }
        tx.commit().await.map_err(q("settling outbox rows"))?;
        Ok(held)
    }

    /// Gives rows `worker` claimed and did not send back to the queue at once, instead of at
    /// the end of their lease; rows it no longer holds are left alone.
    pub async fn release_outbox(&self, worker: &str, ids: &[i64]) -> Result<u64> {
        let mut released = 0;
        for chunk in ids.chunks(1000) {
            let mut sql = self.in_list(
                "UPDATE outbox SET lease_until = NULL, leased_by = NULL WHERE state = 'pending' AND id IN (",
                chunk.len(),
            );
            sql.push_str(" AND leased_by = ");
            self.push_placeholder(&mut sql, chunk.len() + 1);
            // Fixed text and placeholders only.
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            released += query
                .bind(worker.to_owned())
                .execute(&self.pool)
                .await
                .map_err(q("giving back outbox rows"))?
                .rows_affected();
        }
        Ok(released)
    }

    /// Outbox rows, optionally only those in `state`, in id order.
    pub async fn outbox_rows(&self, state: Option<OutboxState>) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, decision_key, recipient, channel, state, attempts, next_attempt_at, last_error
             FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY id",
        ))
        .bind(state.map(|s| s.name().to_owned()))
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing the outbox"))?;
        rows.iter()
            .map(|r| {
                let read = q("listing the outbox");
                let text = |c: &str| r.try_get::<String, _>(c).map_err(q("listing the outbox"));
                let state = text("state")?;
                Ok(OutboxRow {
                    id: r.try_get("id").map_err(read)?,
                    decision_key: parse_key(&text("decision_key")?)?,
                    recipient: text("recipient")?,
                    channel: text("channel")?,
                    state: OutboxState::from_name(&state)
                        .ok_or_else(|| corrupt("outbox state")(state.clone()))?,
                    attempts: r.try_get("attempts").map_err(q("listing the outbox"))?,
                    next_attempt_at: parse_time("outbox time", &text("next_attempt_at")?)?,
                    last_error: r.try_get("last_error").map_err(q("listing the outbox"))?,
                })
            })
            .collect()
    }

    /// Puts dead letters (all, or those in `ids`) back in the queue, due now.
    pub async fn retry_outbox(&self, ids: &[i64], now: DateTime<FixedOffset>) -> Result<u64> {
        let now = utc_text(now);
        let mut n = 0;
        if ids.is_empty() {
            n += sqlx::query(self.sql(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, lease_until = NULL, leased_by = NULL WHERE state = 'dead'",
            ))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(q("retrying dead letters"))?
            .rows_affected();
        } else {
            for id in ids {
                n += sqlx::query(self.sql(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = $1, lease_until = NULL, leased_by = NULL
                     WHERE id = $2 AND state IN ('dead', 'gone')",
                ))
                .bind(now.clone())
                .bind(*id)
                .execute(&self.pool)
                .await
                .map_err(q("retrying an outbox row"))?
                .rows_affected();
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_topics_round_trip_and_anything_else_is_corrupt() {
        assert_eq!(ApplicationNews::from_topic("").unwrap(), None);
        for status in ApplicationStatus::ALL {
            let news = ApplicationNews { seq: 42, status };
            assert_eq!(
                ApplicationNews::from_topic(&news.topic()).unwrap(),
                Some(news)
            );
        }
        assert_eq!(
            ApplicationNews {
                seq: 7,
                status: ApplicationStatus::InReview
            }
            .topic(),
            "application/7/in_review"
        );
        assert_eq!(topic_of(None), "");
        for bad in [
            "application",
            "application/",
            "application/7",
            "application/7/",
            "application/x/received",
            "application/-7/received",
            "application/+7/received",
            "application/0/received",
            "application/7/done",
            "application/7/received/again",
            "notice/7/received",
        ] {
            let e = ApplicationNews::from_topic(bad).unwrap_err();
            assert!(
                matches!(&e, StoreError::Corrupt { what: "outbox topic", detail } if detail.contains(bad)),
                "{bad}: {e}"
            );
        }
    }
}
