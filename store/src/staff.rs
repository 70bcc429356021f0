//! What the staff console reads and records (docs/office.md): the work queue (notices only
//! staff can deliver, dead letters, applications waiting for 受付, the last run's rule
//! failures), what a staff member did about an item, and a resident's notices for a counter
//! visit. Every read of a person and every action is in the audit log.
//!
//! Scope is by procedure: the console passes the rules a staff member may see (`None` for
//! all), and an item outside them answers like a missing one.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::Serialize;
use sqlx::Row;

use super::portal::{AuditEntry, NoticeBody, RegisterAccess};
use super::{q, utc_text, Result, Store, StoreError};
use oshirase_engine::eval::RuleFailure;
use oshirase_engine::ids::RuleId;

/// The most items of one kind the queue lists at once (the count says how many wait).
pub const QUEUE_PAGE: i64 = 200;

/// The longest note a staff member may record, in characters.
pub const MAX_STAFF_NOTE: usize = 500;

/// What kind of work an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// A notice nobody on the register can receive (a support measure, a death in a
    /// single-person household): staff reach out themselves.
    StaffNotice,
    /// A notice a channel gave up on, with the reason.
    DeadLetter,
    /// A submitted application nobody has taken in (受付).
    Application,
    /// A rule that failed for a resident in the last run.
    RuleFailure,
    /// A resident asked for their register record to be corrected (訂正の申出).
    CorrectionRequest,
}

impl WorkKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkKind::StaffNotice => "staff_notice",
            WorkKind::DeadLetter => "dead_letter",
            WorkKind::Application => "application",
            WorkKind::RuleFailure => "rule_failure",
            WorkKind::CorrectionRequest => "correction_request",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            WorkKind::StaffNotice,
            WorkKind::DeadLetter,
            WorkKind::Application,
            WorkKind::RuleFailure,
            WorkKind::CorrectionRequest,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// One item of the work queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkItem {
    pub kind: WorkKind,
    /// What names it in `handle_work_item`: the outbox row's id, the application's number,
    /// or `rule/resident/day` for a failure.
    pub item: String,
    /// The procedure (none for a correction request: that is the register's).
    pub rule: Option<RuleId>,
    /// The procedure's title (ja), the rule id for a failure, 住民記録の訂正の申出 for a
    /// correction request.
    pub title: String,
    /// Whom it is about (a register id).
    pub subject: String,
    /// The decision, for a notice or an application.
    pub decision_key: Option<String>,
    /// Why it needs a person: the staff review reason, the dead letter's reason, the
    /// applicant's role, the failure's place and message.
    pub reason: String,
    /// For a dead letter: the recipient and the channel that failed.
    pub recipient: Option<String>,
    pub channel: Option<String>,
    /// Since when it waits (RFC 3339 UTC, or the day for a failure).
    pub since: String,
}

/// A kind's items (at most `QUEUE_PAGE`) and how many wait in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkList {
    pub kind: WorkKind,
    pub total: i64,
    pub items: Vec<WorkItem>,
}

/// How recording an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// Someone recorded it already; nothing changed.
    Already,
    /// No such item in the staff member's scope.
    Missing,
}

/// One of a resident's notices as the counter sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResidentNotice {
    pub decision_key: String,
    pub rule: RuleId,
    pub title: String,
    /// Whom it is about: the resident looked up, or someone they receive it for.
    pub subject: String,
    pub deadline: Option<String>,
    pub created_at: String,
    /// `open`, `submitted`, `declined`, or none for a notice with nothing to apply for.
    pub draft: Option<String>,
    /// The latest application's number and status.
    pub application: Option<(i64, String)>,
    pub staff_review: Option<String>,
}

/// A resident for a counter visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResidentOverview {
    pub id: String,
    pub on_register: bool,
    /// Under a support measure (支援措置): nothing about them is told to anyone else.
    pub protected: bool,
    pub notices: Vec<ResidentNotice>,
}

fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

fn title_of(body: &str) -> Result<String> {
    let body: NoticeBody = serde_json::from_str(body).map_err(|e| corrupt("decision body", e))?;
    Ok(body.title.ja)
}

fn rule_of(text: &str) -> Result<RuleId> {
    RuleId::parse(text).map_err(|e| corrupt("rule id", e))
}

impl Store {
    /// ` AND {column} IN (…)` for a scope, its placeholders numbered from `first`.
    fn scope_clause(&self, sql: &mut String, column: &str, scope: Option<&[RuleId]>, first: usize) {
        let Some(rules) = scope else { return };
        sql.push_str(" AND ");
        sql.push_str(column);
        sql.push_str(" IN (");
        if rules.is_empty() {
            sql.push_str("NULL");
        }
        for i in 0..rules.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push_placeholder(sql, first + i);
        }
        sql.push(')');
    }

    async fn scoped_rows(
        &self,
        mut sql: String,
        column: &str,
        scope: Option<&[RuleId]>,
        tail: &str,
        what: &'static str,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        self.scope_clause(&mut sql, column, scope, 1);
        sql.push(' ');
        sql.push_str(tail);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in scope.unwrap_or_default() {
            query = query.bind(r.as_str().to_owned());
        }
        query.fetch_all(&self.pool).await.map_err(q(what))
    }

    /// One kind of the work queue: its oldest items first, within `scope`, with the count
    /// of all that wait.
    pub async fn work_list(&self, kind: WorkKind, scope: Option<&[RuleId]>) -> Result<WorkList> {
        let what = "reading the staff work queue";
        let (from, column, select, order) = match kind {
            WorkKind::StaffNotice => (
                "FROM outbox o JOIN decisions d ON d.key = o.decision_key
                 WHERE o.channel = 'staff' AND o.state = 'pending'",
                "d.rule",
                "SELECT CAST(o.id AS TEXT) AS item, d.rule, d.subject, d.key, d.body,
                   COALESCE(d.staff_review, '') AS reason, NULL AS recipient, NULL AS channel,
                   '' AS topic, d.created_at AS since",
                "ORDER BY d.created_at, o.id",
            ),
            WorkKind::DeadLetter => (
                "FROM outbox o JOIN decisions d ON d.key = o.decision_key
                 WHERE o.state = 'dead' AND NOT EXISTS (SELECT 1 FROM staff_actions a
                   WHERE a.kind = 'dead_letter' AND a.item = CAST(o.id AS TEXT))",
                "d.rule",
                "SELECT CAST(o.id AS TEXT) AS item, d.rule, d.subject, d.key, d.body,
                   COALESCE(o.last_error, '') AS reason, o.recipient, o.channel, o.topic,
                   COALESCE((SELECT MAX(t.attempted_at) FROM delivery_attempts t
                     WHERE t.outbox_id = o.id), o.next_attempt_at) AS since",
                "ORDER BY o.id",
            ),
            WorkKind::Application => (
                "FROM applications a JOIN decisions d ON d.key = a.decision_key
                 WHERE a.status = 'submitted'",
                "a.rule",
                "SELECT CAST(a.seq AS TEXT) AS item, a.rule, a.subject, d.key, d.body,
                   a.role AS reason, a.applicant AS recipient, NULL AS channel,
                   '' AS topic, a.submitted_at AS since",
                "ORDER BY a.seq",
            ),
            WorkKind::RuleFailure => (
                "FROM rule_failures f WHERE NOT EXISTS (SELECT 1 FROM staff_actions a
                   WHERE a.kind = 'rule_failure'
                   AND a.item = f.rule || '/' || f.resident || '/' || f.day)",
                "f.rule",
                "SELECT f.rule || '/' || f.resident || '/' || f.day AS item, f.rule,
                   f.resident AS subject, NULL AS key, NULL AS body,
                   f.file || ':' || CAST(f.line AS TEXT) || ': ' || f.field || ': ' || f.message
                     AS reason,
                   NULL AS recipient, NULL AS channel, '' AS topic, f.day AS since",
                "ORDER BY f.id",
            ),
            WorkKind::CorrectionRequest => (
                "FROM correction_requests c WHERE NOT EXISTS (SELECT 1 FROM staff_actions a
                   WHERE a.kind = 'correction_request' AND a.item = CAST(c.id AS TEXT))",
                // No procedure: only those who see every procedure see these.
                "NULL",
                "SELECT CAST(c.id AS TEXT) AS item, NULL AS rule, c.resident_id AS subject,
                   NULL AS key, NULL AS body, c.item || ': ' || c.message AS reason,
                   c.requested_by AS recipient, NULL AS channel, '' AS topic,
                   c.created_at AS since",
                "ORDER BY c.id",
            ),
        };
        let count = self
            .scoped_rows(
                format!("SELECT COUNT(*) AS n {from}"),
                column,
                scope,
                "",
                what,
            )
            .await?;
        let total: i64 = count
            .first()
            .map(|r| r.try_get("n"))
            .transpose()
            .map_err(q(what))?
            .unwrap_or(0);
        let rows = self
            .scoped_rows(
                format!("{select} {from}"),
                column,
                scope,
                &format!("{order} LIMIT {QUEUE_PAGE}"),
                what,
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| {
                let text = |c: &str| r.try_get::<String, _>(c).map_err(q(what));
                let opt = |c: &str| r.try_get::<Option<String>, _>(c).map_err(q(what));
                let rule = opt("rule")?.map(|r| rule_of(&r)).transpose()?;
                let mut title = match (opt("body")?, &rule) {
                    (Some(b), _) => title_of(&b)?,
                    (None, Some(r)) => r.as_str().to_owned(),
                    (None, None) => "住民記録の訂正の申出".to_owned(),
                };
                // A dead letter may be the news of an application's status, not the notice.
                if !text("topic")?.is_empty() {
                    title.push_str("（申請の状況が更新されたお知らせ）");
                }
                Ok(WorkItem {
                    kind,
                    item: text("item")?,
                    rule,
                    title,
                    subject: text("subject")?,
                    decision_key: opt("key")?,
                    reason: text("reason")?,
                    recipient: opt("recipient")?,
                    channel: opt("channel")?,
                    since: text("since")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WorkList { kind, total, items })
    }

    /// Records that `actor` dealt with an item (a staff notice delivered by a person, a dead
    /// letter followed up, a failure looked at), once, with the audit row, in one
    /// transaction. A staff notice's outbox row becomes delivered, with the attempt.
    /// Applications are not handled here: their status changes (`change_application_status`).
    pub async fn handle_work_item(
        &self,
        kind: WorkKind,
        item: &str,
        actor: &str,
        note: Option<&str>,
        scope: Option<&[RuleId]>,
        now: DateTime<FixedOffset>,
    ) -> Result<Handled> {
        let what = "recording a staff action";
        let at = utc_text(now);
        let mut tx = self.begin_write(what).await?;
        let (lookup, column) = match kind {
            WorkKind::StaffNotice => (
                "SELECT d.rule FROM outbox o JOIN decisions d ON d.key = o.decision_key
                 WHERE o.channel = 'staff' AND CAST(o.id AS TEXT) = ",
                "d.rule",
            ),
            WorkKind::DeadLetter => (
                "SELECT d.rule FROM outbox o JOIN decisions d ON d.key = o.decision_key
                 WHERE o.state = 'dead' AND CAST(o.id AS TEXT) = ",
                "d.rule",
            ),
            WorkKind::RuleFailure => (
                "SELECT f.rule FROM rule_failures f
                 WHERE f.rule || '/' || f.resident || '/' || f.day = ",
                "f.rule",
            ),
            WorkKind::CorrectionRequest => (
                "SELECT NULL AS rule FROM correction_requests c WHERE CAST(c.id AS TEXT) = ",
                "NULL",
            ),
            WorkKind::Application => return Ok(Handled::Missing),
        };
        let mut sql = lookup.to_owned();
        self.push_placeholder(&mut sql, 1);
        self.scope_clause(&mut sql, column, scope, 2);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(item.to_owned());
        for r in scope.unwrap_or_default() {
            query = query.bind(r.as_str().to_owned());
        }
        if query
            .fetch_optional(&mut *tx)
            .await
            .map_err(q(what))?
            .is_none()
        {
            return Ok(Handled::Missing);
        }
        let inserted = sqlx::query(self.sql(
            "INSERT INTO staff_actions (kind, item, actor, note, at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, item) DO NOTHING",
        ))
        .bind(kind.name().to_owned())
        .bind(item.to_owned())
        .bind(actor.to_owned())
        .bind(note.map(str::to_owned))
        .bind(at.clone())
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        if inserted.rows_affected() == 0 {
            return Ok(Handled::Already);
        }
        if kind == WorkKind::StaffNotice {
            let id: i64 = item.parse().map_err(|e| corrupt("outbox id", e))?;
            sqlx::query(self.sql(
                "UPDATE outbox SET state = 'delivered', lease_until = NULL, leased_by = NULL
                 WHERE id = $1 AND state = 'pending'",
            ))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
            sqlx::query(self.sql(
                "INSERT INTO delivery_attempts (outbox_id, attempted_at, outcome, detail)
                 VALUES ($1, $2, 'handled', $3)",
            ))
            .bind(id)
            .bind(at.clone())
            .bind(actor.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        // The note is the staff member's own words about a person: its length only.
        let detail = serde_json::json!({ "note_chars": note.map(|n| n.chars().count()) });
        self.insert_audit(
            &mut tx,
            &[AuditEntry::new(
                now,
                actor,
                "staff.handled",
                &format!("{}/{item}", kind.name()),
                Some(detail.to_string()),
            )],
        )
        .await?;
        tx.commit().await.map_err(q(what))?;
        Ok(Handled::Done)
    }

    /// A resident's notices (as subject or recipient) within `scope`, newest first, for a
    /// counter visit; the read is audited before it is returned.
    pub async fn resident_overview(
        &self,
        id: &str,
        scope: Option<&[RuleId]>,
        actor: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<ResidentOverview> {
        let what = "reading a resident for staff";
        self.append_audit(&[AuditEntry::new(
            now,
            actor,
            "staff.resident.read",
            &format!("resident/{id}"),
            None,
        )])
        .await?;
        let record = sqlx::query(self.sql("SELECT record FROM residents WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q(what))?;
        let access: Option<RegisterAccess> = record
            .map(|r| {
                let text: String = r.try_get("record").map_err(q(what))?;
                serde_json::from_str(&text).map_err(|e| corrupt("resident record", e))
            })
            .transpose()?;
        let mut sql = String::from(
            "SELECT d.key, d.rule, d.subject, d.deadline, d.created_at, d.body, d.staff_review,
               dr.state AS draft, a.seq, a.status
             FROM decisions d
             LEFT JOIN drafts dr ON dr.decision_key = d.key
             LEFT JOIN applications a ON a.decision_key = d.key
               AND a.version = (SELECT MAX(version) FROM applications x WHERE x.decision_key = d.key)
             WHERE (d.subject = ",
        );
        self.push_placeholder(&mut sql, 1);
        sql.push_str(" OR d.key IN (SELECT decision_key FROM outbox WHERE recipient = ");
        self.push_placeholder(&mut sql, 2);
        sql.push_str("))");
        self.scope_clause(&mut sql, "d.rule", scope, 3);
        sql.push_str(" ORDER BY d.created_at DESC, d.key LIMIT 200");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_owned())
            .bind(id.to_owned());
        for r in scope.unwrap_or_default() {
            query = query.bind(r.as_str().to_owned());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(q(what))?;
        let notices = rows
            .iter()
            .map(|r| {
                let text = |c: &str| r.try_get::<String, _>(c).map_err(q(what));
                let opt = |c: &str| r.try_get::<Option<String>, _>(c).map_err(q(what));
                let seq: Option<i64> = r.try_get("seq").map_err(q(what))?;
                Ok(ResidentNotice {
                    decision_key: text("key")?,
                    rule: rule_of(&text("rule")?)?,
                    title: title_of(&text("body")?)?,
                    subject: text("subject")?,
                    deadline: opt("deadline")?,
                    created_at: text("created_at")?,
                    draft: opt("draft")?,
                    application: match (seq, opt("status")?) {
                        (Some(s), Some(st)) => Some((s, st)),
                        _ => None,
                    },
                    staff_review: opt("staff_review")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResidentOverview {
            id: id.to_owned(),
            on_register: access.is_some(),
            protected: access.is_some_and(|a| a.support_measure),
            notices,
        })
    }

    /// Records a resident's request that their register record be corrected, for the
    /// counter's staff (nothing on the register changes), with its audit row.
    pub async fn request_correction(
        &self,
        resident: &str,
        requested_by: &str,
        item: &str,
        message: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<()> {
        let what = "recording a correction request";
        let mut tx = self.begin_write(what).await?;
        sqlx::query(self.sql(
            "INSERT INTO correction_requests (resident_id, requested_by, item, message, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(resident.to_owned())
        .bind(requested_by.to_owned())
        .bind(item.to_owned())
        .bind(message.to_owned())
        .bind(utc_text(now))
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        // The request's words are the resident's: their length only in the log.
        let detail = serde_json::json!({ "item": item, "message_chars": message.chars().count() });
        self.insert_audit(
            &mut tx,
            &[AuditEntry::new(
                now,
                &format!("resident:{requested_by}"),
                "record.correction.request",
                &format!("resident/{resident}"),
                Some(detail.to_string()),
            )],
        )
        .await?;
        tx.commit().await.map_err(q(what))
    }

    /// Replaces the recorded rule failures with those of the run of `day`: the console
    /// shows the last run's.
    pub async fn record_rule_failures(
        &self,
        day: NaiveDate,
        failures: &[RuleFailure],
        now: DateTime<FixedOffset>,
    ) -> Result<()> {
        let what = "recording rule failures";
        let mut tx = self.begin_write(what).await?;
        sqlx::query("DELETE FROM rule_failures")
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        let at = utc_text(now);
        for f in failures {
            sqlx::query(self.sql(
                "INSERT INTO rule_failures
                   (day, rule, rule_version, resident, file, line, field, message, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            ))
            .bind(day.to_string())
            .bind(f.rule.as_str().to_owned())
            .bind(i64::from(f.rule_version))
            .bind(f.resident.as_str().to_owned())
            .bind(f.file.clone())
            .bind(i64::try_from(f.line).unwrap_or(i64::MAX))
            .bind(f.field.clone())
            .bind(f.message.clone())
            .bind(at.clone())
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        tx.commit().await.map_err(q(what))
    }
}
