//! Days in the store: the rule-set versions, the watermark, and each day's decisions written
//! with their drafts, recommendations and outbox rows in one transaction; and the reads of
//! what was decided.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate};
use sqlx::{AssertSqlSafe, Row};

use oshirase_engine::eval::Decision;
use oshirase_engine::resident::Channel;
use oshirase_engine::rule::Application;

use super::outbox::topic_of;
use super::{now_text, q, utc_text, ApplicationNews, Result, Store, StoreError};

/// The outbox rows a notice makes, as (recipient, channel): each recipient on each channel
/// the decision found them reachable on, then `staff` when staff must reach out. The day's
/// commit writes them for the notice; a status change writes some of them again for its news.
pub(crate) fn notice_rows<'a>(
    recipients: impl IntoIterator<Item = (&'a str, &'a [Channel])>,
    staff_review: bool,
) -> Vec<(String, &'static str)> {
    let mut rows: Vec<(String, &'static str)> = Vec::new();
    for (id, channels) in recipients {
        for c in channels {
            rows.push((id.to_owned(), c.name()));
        }
    }
    if staff_review {
        rows.push(("staff".to_owned(), "staff"));
    }
    rows
}

/// What committing one day did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayCommit {
    /// Decisions written now.
    pub inserted: usize,
    /// Decisions whose key was already stored (a re-run, or another instance).
    pub already_decided: usize,
}

/// A stored decision, as tests and operators read it back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredDecision {
    pub key: String,
    pub rule: String,
    pub rule_set: String,
    pub notify_on: String,
    pub critical: bool,
}

impl Store {
    /// Records a rule-set version (content hash) the first time it is used.
    pub async fn record_rule_set(
        &self,
        version: &str,
        rules: usize,
        source: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "INSERT INTO rule_sets (version, rules, source, loaded_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (version) DO NOTHING",
        ))
        .bind(version.to_owned())
        .bind(rules as i64)
        .bind(source.to_owned())
        .bind(now_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("recording the rule set"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The last day the scheduler completed.
    pub async fn watermark(&self) -> Result<Option<NaiveDate>> {
        let row = sqlx::query("SELECT MAX(day) AS day FROM scheduler_days")
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the watermark"))?;
        let day: Option<String> = row.try_get("day").map_err(q("reading the watermark"))?;
        day.map(|d| {
            d.parse()
                .map_err(|e: chrono::ParseError| StoreError::Corrupt {
                    what: "watermark",
                    detail: e.to_string(),
                })
        })
        .transpose()
    }

    /// The newest register batch a committed run read (`None` before the first run, or if
    /// the runs stored predate the column): events stored by later batches no run has seen.
    pub async fn evaluated_batch(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(register_batch) AS batch FROM scheduler_days")
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the evaluated batch"))?;
        row.try_get("batch")
            .map_err(q("reading the evaluated batch"))
    }

    /// Writes a day's decisions with their drafts, recommendations and outbox rows, and the
    /// day's watermark row with the register batch the run read (`register_batch`), in ONE
    /// transaction. A key already stored is left alone: re-runs and concurrent instances
    /// never decide twice.
    pub async fn commit_day(
        &self,
        day: NaiveDate,
        rule_set: &str,
        register_batch: i64,
        decisions: impl IntoIterator<Item = &Decision>,
        now: DateTime<FixedOffset>,
    ) -> Result<DayCommit> {
        let due = utc_text(now);
        let now = now_text(now);
        let mut tx = self.begin_write("starting a day").await?;
        let insert = self.sql(
            "INSERT INTO decisions (key, rule, rule_version, rule_set, subject, occurrence, notify_on, deadline,
               staff_review, critical, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (key) DO NOTHING",
        );
        let draft =
            self.sql("INSERT INTO drafts (decision_key, fields, updated_at) VALUES ($1, $2, $3)");
        let rec = self.sql("INSERT INTO recommendations (decision_key, rule_id) VALUES ($1, $2)");
        let mut commit = DayCommit::default();
        // Keys in one order everywhere, so two instances never deadlock on each other.
        let mut sorted: Vec<&Decision> = decisions.into_iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for d in sorted {
            let body = serde_json::to_string(d).map_err(|e| StoreError::Corrupt {
                what: "decision",
                detail: e.to_string(),
            })?;
            let done = sqlx::query(insert.clone())
                .bind(d.key.as_str().to_owned())
                .bind(d.rule.as_str().to_owned())
                .bind(i64::from(d.rule_version))
                .bind(rule_set.to_owned())
                .bind(d.subject.as_str().to_owned())
                .bind(d.occurrence.to_string())
                .bind(d.notify_on.to_string())
                .bind(d.deadline.map(|x| x.to_string()))
                .bind(d.staff_review.clone())
                .bind(i64::from(d.critical))
                .bind(body)
                .bind(now.clone())
                .execute(&mut *tx)
                .await
                .map_err(q("writing a decision"))?;
            if done.rows_affected() == 0 {
                commit.already_decided += 1;
                continue;
            }
            commit.inserted += 1;
            // A notice with nothing to apply for has no draft to open, submit or decline.
            if d.application != Application::None {
                let fields =
                    serde_json::to_string(&d.prefill).map_err(|e| StoreError::Corrupt {
                        what: "draft",
                        detail: e.to_string(),
                    })?;
                sqlx::query(draft.clone())
                    .bind(d.key.as_str().to_owned())
                    .bind(fields)
                    .bind(now.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(q("writing a draft"))?;
            }
            for r in &d.recommend {
                sqlx::query(rec.clone())
                    .bind(d.key.as_str().to_owned())
                    .bind(r.as_str().to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(q("writing a recommendation"))?;
            }
            let rows = notice_rows(
                d.recipients
                    .iter()
                    .map(|r| (r.id.as_str(), r.channels.as_slice())),
                d.staff_review.is_some(),
            );
            self.insert_outbox(&mut tx, d.key.as_str(), &rows, None, &due)
                .await?;
        }
        sqlx::query(self.sql(
            "INSERT INTO scheduler_days (day, rule_set, decisions, completed_at, register_batch)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (day) DO UPDATE SET decisions = scheduler_days.decisions + excluded.decisions,
               rule_set = excluded.rule_set, completed_at = excluded.completed_at,
               register_batch = CASE
                 WHEN scheduler_days.register_batch IS NULL
                   OR excluded.register_batch > scheduler_days.register_batch
                 THEN excluded.register_batch ELSE scheduler_days.register_batch END",
        ))
        .bind(day.to_string())
        .bind(rule_set.to_owned())
        .bind(commit.inserted as i64)
        .bind(now)
        .bind(register_batch)
        .execute(&mut *tx)
        .await
        .map_err(q("writing the watermark"))?;
        tx.commit().await.map_err(q("committing the day"))?;
        Ok(commit)
    }

    /// Writes the outbox rows `rows` of the decision `key`, carrying `news` (`None`: the
    /// notice itself), due at `due`; a row already there is left alone.
    pub(crate) async fn insert_outbox(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: &str,
        rows: &[(String, &'static str)],
        news: Option<&ApplicationNews>,
        due: &str,
    ) -> Result<()> {
        let topic = topic_of(news);
        let insert = self.sql(
            "INSERT INTO outbox (decision_key, recipient, channel, topic, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (decision_key, recipient, channel, topic) DO NOTHING",
        );
        for (recipient, channel) in rows {
            sqlx::query(insert.clone())
                .bind(key.to_owned())
                .bind(recipient.clone())
                .bind((*channel).to_owned())
                .bind(topic.clone())
                .bind(due.to_owned())
                .execute(&mut **tx)
                .await
                .map_err(q("writing an outbox row"))?;
        }
        Ok(())
    }

    /// Every stored decision, in key order.
    pub async fn decisions(&self) -> Result<Vec<StoredDecision>> {
        let rows = sqlx::query(
            "SELECT key, rule, rule_set, notify_on, critical FROM decisions ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading decisions"))?;
        rows.iter()
            .map(|r| {
                Ok(StoredDecision {
                    key: r.try_get("key")?,
                    rule: r.try_get("rule")?,
                    rule_set: r.try_get("rule_set")?,
                    notify_on: r.try_get("notify_on")?,
                    critical: r.try_get::<i64, _>("critical")? != 0,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("reading decisions"))
    }

    /// Row counts of the main tables, for summaries and tests.
    pub async fn counts(&self) -> Result<BTreeMap<&'static str, i64>> {
        let mut out = BTreeMap::new();
        for table in [
            "residents",
            "life_events",
            "decisions",
            "drafts",
            "recommendations",
            "outbox",
            "delivery_attempts",
            "scheduler_days",
            "ingest_batches",
        ] {
            let row = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
                .fetch_one(&self.pool)
                .await
                .map_err(q("counting rows"))?;
            out.insert(
                table,
                row.try_get::<i64, _>("n").map_err(q("counting rows"))?,
            );
        }
        Ok(out)
    }

    /// Outbox rows per channel (for the demo summary).
    pub async fn outbox_by_channel(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS n FROM outbox GROUP BY channel ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("counting the outbox"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("n")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("counting the outbox"))
    }

    /// Stored decision bodies (JSON) of up to `limit` decisions, one per rule, for examples.
    pub async fn sample_bodies(&self, limit: i64) -> Result<Vec<serde_json::Value>> {
        let rows = sqlx::query(self.sql(
            "SELECT body FROM decisions WHERE key IN (SELECT MIN(key) FROM decisions GROUP BY rule)
             ORDER BY key LIMIT $1",
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading decisions"))?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body").map_err(q("reading decisions"))?;
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    what: "decision body",
                    detail: e.to_string(),
                })
            })
            .collect()
    }
}
