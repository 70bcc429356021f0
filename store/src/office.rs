//! Submitted applications for the back office (docs/office.md): written in the transaction
//! that submits the draft, numbered by a contiguous counter, with their status history; the
//! status machine; the core systems' scopes (`office_clients`).
//!
//! The sequence is a counter row incremented in the submitting transaction, so a rolled back
//! submission leaves no gap and a later number never commits before an earlier one (the
//! counter row is locked until the commit): a core system polling `after` its last number
//! misses nothing and sees nothing twice.

use std::fmt;

use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use super::days::notice_rows;
use super::portal::{AuditEntry, NoticeBody, RegisterAccess};
use super::{parse_time, q, utc_text, ApplicationNews, Result, Store, StoreError};
use oshirase_engine::eval::{DecisionKey, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::resident::Channel;

/// The longest message an office may send a resident, in characters.
pub const MAX_STATUS_MESSAGE: usize = 2000;

/// How many applications stand at a status, and since when the oldest of them does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationCount {
    pub status: ApplicationStatus,
    pub count: i64,
    pub oldest: DateTime<FixedOffset>,
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationStatus {
    /// 申請済み: set at submission.
    Submitted,
    /// 受付: the office has taken it in.
    Received,
    /// 審査中.
    InReview,
    /// 完了.
    Completed,
    /// 差戻し: back to the resident with a message; they may correct and resubmit (a new
    /// application version with the same decision key).
    Returned,
    /// 却下, with a message.
    Rejected,
}

impl ApplicationStatus {
    pub const ALL: [ApplicationStatus; 6] = [
        ApplicationStatus::Submitted,
        ApplicationStatus::Received,
        ApplicationStatus::InReview,
        ApplicationStatus::Completed,
        ApplicationStatus::Returned,
        ApplicationStatus::Rejected,
    ];

    /// The name stored and used in the API.
    pub fn name(self) -> &'static str {
        match self {
            ApplicationStatus::Submitted => "submitted",
            ApplicationStatus::Received => "received",
            ApplicationStatus::InReview => "in_review",
            ApplicationStatus::Completed => "completed",
            ApplicationStatus::Returned => "returned",
            ApplicationStatus::Rejected => "rejected",
        }
    }

    /// As residents and staff read it.
    pub fn ja(self) -> &'static str {
        match self {
            ApplicationStatus::Submitted => "申請済み",
            ApplicationStatus::Received => "受付",
            ApplicationStatus::InReview => "審査中",
            ApplicationStatus::Completed => "完了",
            ApplicationStatus::Returned => "差戻し",
            ApplicationStatus::Rejected => "却下",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The statuses an application in this one may move to. 完了, 差戻し and 却下 are final
    /// (a resubmission after 差戻し is a new application version).
    pub fn next(self) -> &'static [ApplicationStatus] {
        use ApplicationStatus::*;
        match self {
            Submitted => &[Received, Returned, Rejected],
            Received => &[InReview, Completed, Returned, Rejected],
            InReview => &[Completed, Returned, Rejected],
            Completed | Returned | Rejected => &[],
        }
    }

    /// Whether the resident must be told why (差戻し, 却下).
    pub fn needs_message(self) -> bool {
        matches!(
            self,
            ApplicationStatus::Returned | ApplicationStatus::Rejected
        )
    }
}

impl fmt::Display for ApplicationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a status change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("an application that is {from} ({}) cannot become {to} ({}); from {from} it may become: {}",
        from.ja(), to.ja(), allowed(*from))]
    NotAllowed {
        from: ApplicationStatus,
        to: ApplicationStatus,
    },
    #[error("a message to the resident is required for {status} ({})", status.ja())]
    MessageRequired { status: ApplicationStatus },
    #[error("the message has {len} characters; at most {MAX_STATUS_MESSAGE} are allowed")]
    MessageTooLong { len: usize },
}

fn allowed(from: ApplicationStatus) -> String {
    let next: Vec<&str> = from.next().iter().map(|s| s.name()).collect();
    if next.is_empty() {
        "nothing (it is final)".to_owned()
    } else {
        next.join(", ")
    }
}

/// The state machine: whether `from` may become `to` with `message`.
pub fn check_transition(
    from: ApplicationStatus,
    to: ApplicationStatus,
    message: Option<&str>,
) -> std::result::Result<(), TransitionError> {
    if let Some(m) = message {
        let len = m.chars().count();
        if len > MAX_STATUS_MESSAGE {
            return Err(TransitionError::MessageTooLong { len });
        }
    }
    if !from.next().contains(&to) {
        return Err(TransitionError::NotAllowed { from, to });
    }
    if to.needs_message() && message.is_none_or(|m| m.trim().is_empty()) {
        return Err(TransitionError::MessageRequired { status: to });
    }
    Ok(())
}

/// A field the resident corrected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    pub before: Value,
    pub after: Value,
}

/// One submitted application, as a core system reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Application {
    /// The contiguous sequence number (受付番号).
    pub seq: i64,
    pub decision_key: DecisionKey,
    /// 1 for the first submission, then one more for each resubmission after 差戻し.
    pub version: i64,
    pub rule: RuleId,
    pub rule_version: i64,
    /// The procedure's title (ja) as the notice gave it.
    pub title: String,
    /// The law the procedure rests on, as the notice gave it (the rule's `legal_basis`);
    /// none for applications submitted before it was kept.
    pub legal_basis: Option<String>,
    /// Whom the procedure is about.
    pub subject: ResidentId,
    /// Who submitted it (the reader).
    pub applicant: ResidentId,
    /// Why the applicant could: the subject, a guardian, a proxy …
    pub role: Role,
    /// A proxy's scopes (rule categories or `all`) on the subject's record.
    pub proxy_scopes: Option<Vec<String>>,
    /// The draft as prefilled.
    pub prefilled: IndexMap<String, Value>,
    /// The fields the resident changed, before → after.
    pub corrections: IndexMap<String, Correction>,
    /// RFC 3339 UTC.
    pub submitted_at: String,
    pub status: ApplicationStatus,
    /// The office's message of the last change (差戻し, 却下, or any it chose to send).
    pub message: Option<String>,
    pub status_at: String,
}

impl Application {
    /// The fields as submitted: the prefill with the corrections.
    pub fn submitted_fields(&self) -> IndexMap<String, Value> {
        let mut out = self.prefilled.clone();
        for (k, c) in &self.corrections {
            out.insert(k.clone(), c.after.clone());
        }
        out
    }
}

/// The applicant's role in Japanese (本人, 保護者, 代理人（範囲）…).
pub fn role_ja(role: Role, scopes: Option<&[String]>) -> String {
    match role {
        Role::Subject => "本人".to_owned(),
        Role::Guardian => "保護者".to_owned(),
        Role::Householder => "世帯主".to_owned(),
        Role::Spouse => "配偶者".to_owned(),
        Role::Survivor => "遺族".to_owned(),
        Role::Proxy => match scopes {
            Some(s) if !s.is_empty() => format!("代理人（{}）", s.join("・")),
            _ => "代理人".to_owned(),
        },
    }
}

/// One entry of an application's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    pub status: ApplicationStatus,
    pub message: Option<String>,
    /// `resident:ID` or `office:CLIENT`.
    pub actor: String,
    pub at: String,
}

/// A status change asked by a core system.
#[derive(Debug, Clone, Copy)]
pub struct StatusChange<'a> {
    pub seq: i64,
    pub to: ApplicationStatus,
    pub message: Option<&'a str>,
    /// Who asks (`office:CLIENT`), for the history and the audit log.
    pub actor: &'a str,
    /// The procedures the asker may change; an application outside them is missing.
    pub rules: &'a [RuleId],
    pub now: DateTime<FixedOffset>,
}

/// How a status change ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusOutcome {
    Changed(Box<Application>),
    /// No such application in the asker's procedures.
    Missing,
    /// The state machine refused it; nothing changed but the audit row.
    Refused(TransitionError),
}

fn corrupt(what: &'static str, detail: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

const SELECT: &str =
    "SELECT seq, decision_key, version, rule, rule_version, title, subject, applicant,
    role, proxy_scopes, prefilled, corrections, submitted_at, status, message, status_at,
    legal_basis
    FROM applications";

fn application_from_row(row: &sqlx::any::AnyRow) -> Result<Application> {
    let what = "reading applications";
    let text = |c: &str| row.try_get::<String, _>(c).map_err(q(what));
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(q(what));
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(q(what));
    let json = |c: &str| -> Result<Value> {
        serde_json::from_str(&text(c)?).map_err(|e| corrupt("application", e))
    };
    let status = text("status")?;
    let role = text("role")?;
    Ok(Application {
        seq: int("seq")?,
        decision_key: DecisionKey::parse(&text("decision_key")?)
            .map_err(|e| corrupt("application decision key", e))?,
        version: int("version")?,
        rule: RuleId::parse(&text("rule")?).map_err(|e| corrupt("application rule", e))?,
        rule_version: int("rule_version")?,
        title: text("title")?,
        legal_basis: opt("legal_basis")?,
        subject: ResidentId::parse(&text("subject")?)
            .map_err(|e| corrupt("application subject", e))?,
        applicant: ResidentId::parse(&text("applicant")?)
            .map_err(|e| corrupt("application applicant", e))?,
        role: serde_json::from_value(Value::String(role.clone()))
            .map_err(|e| corrupt("application role", format!("{role:?}: {e}")))?,
        proxy_scopes: opt("proxy_scopes")?
            .map(|s| serde_json::from_str(&s).map_err(|e| corrupt("application scopes", e)))
            .transpose()?,
        prefilled: serde_json::from_value(json("prefilled")?)
            .map_err(|e| corrupt("application prefill", e))?,
        corrections: serde_json::from_value(json("corrections")?)
            .map_err(|e| corrupt("application corrections", e))?,
        submitted_at: text("submitted_at")?,
        status: ApplicationStatus::from_name(&status)
            .ok_or_else(|| corrupt("application status", format!("{status:?}")))?,
        message: opt("message")?,
        status_at: text("status_at")?,
    })
}

impl Store {
    /// Writes the application of a draft being submitted, in the submission's transaction:
    /// the next number of the counter, the next version for the decision, the applicant's
    /// role (from the decision's recipients) and a proxy's scopes (from the subject's record).
    pub(crate) async fn write_application(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: &DecisionKey,
        applicant: &ResidentId,
        submitted: &IndexMap<String, Value>,
        at: &str,
    ) -> Result<i64> {
        let what = "writing an application";
        let row = sqlx::query(self.sql(
            "SELECT d.rule, d.rule_version, d.subject, d.body, dr.fields, r.record
             FROM decisions d JOIN drafts dr ON dr.decision_key = d.key
             LEFT JOIN residents r ON r.id = d.subject
             WHERE d.key = $1",
        ))
        .bind(key.as_str().to_owned())
        .fetch_one(&mut **tx)
        .await
        .map_err(q(what))?;
        let rule: String = row.try_get("rule").map_err(q(what))?;
        let rule_version: i64 = row.try_get("rule_version").map_err(q(what))?;
        let subject: String = row.try_get("subject").map_err(q(what))?;
        let body: NoticeBody =
            serde_json::from_str(&row.try_get::<String, _>("body").map_err(q(what))?)
                .map_err(|e| corrupt("decision body", e))?;
        let prefilled: IndexMap<String, Value> =
            serde_json::from_str(&row.try_get::<String, _>("fields").map_err(q(what))?)
                .map_err(|e| corrupt("draft fields", e))?;
        let record: Option<RegisterAccess> = row
            .try_get::<Option<String>, _>("record")
            .map_err(q(what))?
            .map(|r| serde_json::from_str(&r).map_err(|e| corrupt("resident record", e)))
            .transpose()?;
        // The portal lets only a recipient read, and so submit, a notice: the role is the
        // one the decision gave them.
        let role = match body.recipients.iter().find(|r| &r.id == applicant) {
            Some(r) => r.role,
            None if applicant.as_str() == subject => Role::Subject,
            None => {
                return Err(corrupt(
                    "application applicant",
                    format!(
                        "{} is not a recipient of {}",
                        applicant.as_str(),
                        key.as_str()
                    ),
                ))
            }
        };
        let scopes = match (role, &record) {
            (Role::Proxy, Some(rec)) => rec
                .proxies
                .iter()
                .find(|p| &p.id == applicant)
                .map(|p| p.scopes.clone()),
            _ => None,
        };
        let corrections: IndexMap<String, Correction> = submitted
            .iter()
            .filter_map(|(k, after)| {
                let before = prefilled.get(k).cloned().unwrap_or(Value::Null);
                (&before != after).then(|| {
                    (
                        k.clone(),
                        Correction {
                            before,
                            after: after.clone(),
                        },
                    )
                })
            })
            .collect();
        let seq: i64 = sqlx::query(self.sql(
            "UPDATE office_counters SET value = value + 1 WHERE name = 'applications'
             RETURNING value",
        ))
        .fetch_one(&mut **tx)
        .await
        .map_err(q(what))?
        .try_get("value")
        .map_err(q(what))?;
        let version: i64 = sqlx::query(self.sql(
            "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM applications WHERE decision_key = $1",
        ))
        .bind(key.as_str().to_owned())
        .fetch_one(&mut **tx)
        .await
        .map_err(q(what))?
        .try_get("v")
        .map_err(q(what))?;
        sqlx::query(self.sql(
            "INSERT INTO applications (seq, decision_key, version, rule, rule_version, subject,
               applicant, role, proxy_scopes, prefilled, corrections, submitted_at, status,
               message, status_at, title, legal_basis)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'submitted', NULL, $12,
               $13, $14)",
        ))
        .bind(seq)
        .bind(key.as_str().to_owned())
        .bind(version)
        .bind(rule)
        .bind(rule_version)
        .bind(subject)
        .bind(applicant.as_str().to_owned())
        .bind(role_name(role))
        .bind(scopes.map(|s| json_text(&s)))
        .bind(json_text(&prefilled))
        .bind(json_text(&corrections))
        .bind(at.to_owned())
        .bind(body.title.ja.clone())
        .bind(body.legal_basis.clone())
        .execute(&mut **tx)
        .await
        .map_err(q(what))?;
        self.insert_history(
            tx,
            seq,
            ApplicationStatus::Submitted,
            None,
            &format!("resident:{}", applicant.as_str()),
            at,
        )
        .await?;
        Ok(seq)
    }

    async fn insert_history(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        seq: i64,
        status: ApplicationStatus,
        message: Option<&str>,
        actor: &str,
        at: &str,
    ) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO application_statuses (seq, status, message, actor, at)
             VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(seq)
        .bind(status.name().to_owned())
        .bind(message.map(str::to_owned))
        .bind(actor.to_owned())
        .bind(at.to_owned())
        .execute(&mut **tx)
        .await
        .map_err(q("writing an application status"))?;
        Ok(())
    }

    /// Up to `limit` applications of `rules` numbered after `after`, in number order, with
    /// one audit row naming the reader and the numbers read, written before they are
    /// returned.
    pub async fn applications_after(
        &self,
        after: i64,
        limit: i64,
        rules: &[RuleId],
        actor: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<Application>> {
        let what = "reading applications";
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = String::from(SELECT);
        sql.push_str(" WHERE seq > ");
        self.push_placeholder(&mut sql, 1);
        sql.push_str(" AND rule IN (");
        for i in 0..rules.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push_placeholder(&mut sql, i + 2);
        }
        sql.push_str(") ORDER BY seq LIMIT ");
        self.push_placeholder(&mut sql, rules.len() + 2);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after);
        for r in rules {
            query = query.bind(r.as_str().to_owned());
        }
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q(what))?;
        let apps = rows
            .iter()
            .map(application_from_row)
            .collect::<Result<Vec<_>>>()?;
        let seqs: Vec<i64> = apps.iter().map(|a| a.seq).collect();
        let detail = serde_json::json!({ "after": after, "limit": limit, "seqs": seqs });
        self.append_audit(&[AuditEntry::new(
            now,
            actor,
            "application.read",
            "applications",
            Some(detail.to_string()),
        )])
        .await?;
        Ok(apps)
    }

    /// Every application submitted at or after `since` (RFC 3339 UTC text), in number
    /// order (the export), audited as one read by `actor`.
    pub async fn applications_since(
        &self,
        since: &str,
        actor: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<Application>> {
        let rows =
            sqlx::query(self.sql_built(format!("{SELECT} WHERE submitted_at >= $1 ORDER BY seq")))
                .bind(since.to_owned())
                .fetch_all(&self.pool)
                .await
                .map_err(q("reading applications"))?;
        let apps = rows
            .iter()
            .map(application_from_row)
            .collect::<Result<Vec<_>>>()?;
        let detail = serde_json::json!({ "since": since, "count": apps.len() });
        self.append_audit(&[AuditEntry::new(
            now,
            actor,
            "application.export",
            "applications",
            Some(detail.to_string()),
        )])
        .await?;
        Ok(apps)
    }

    /// One application by number (not audited: for the portal, tests and operators).
    pub async fn application(&self, seq: i64) -> Result<Option<Application>> {
        let row = sqlx::query(self.sql_built(format!("{SELECT} WHERE seq = $1")))
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading an application"))?;
        row.as_ref().map(application_from_row).transpose()
    }

    /// The applications of a decision, newest version first (what the portal shows).
    pub async fn applications_of(&self, key: &DecisionKey) -> Result<Vec<Application>> {
        let rows = sqlx::query(self.sql_built(format!(
            "{SELECT} WHERE decision_key = $1 ORDER BY version DESC"
        )))
        .bind(key.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading applications"))?;
        rows.iter().map(application_from_row).collect()
    }

    /// The status history of an application, oldest first.
    pub async fn application_history(&self, seq: i64) -> Result<Vec<StatusEntry>> {
        let what = "reading an application's history";
        let rows = sqlx::query(self.sql(
            "SELECT status, message, actor, at FROM application_statuses WHERE seq = $1 ORDER BY id",
        ))
        .bind(seq)
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status").map_err(q(what))?;
                Ok(StatusEntry {
                    status: ApplicationStatus::from_name(&status)
                        .ok_or_else(|| corrupt("application status", format!("{status:?}")))?,
                    message: r.try_get("message").map_err(q(what))?,
                    actor: r.try_get("actor").map_err(q(what))?,
                    at: r.try_get("at").map_err(q(what))?,
                })
            })
            .collect()
    }

    /// A refused status change: nothing changes, but the refusal is in the audit log.
    async fn refuse_change(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        change: &StatusChange<'_>,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.insert_audit(
            &mut tx,
            &[AuditEntry::new(
                change.now,
                change.actor,
                "application.status.refused",
                target,
                Some(detail.to_string()),
            )],
        )
        .await?;
        tx.commit()
            .await
            .map_err(q("recording a refused status change"))
    }

    /// Moves an application to `change.to` if the state machine allows it: the status, its
    /// history row and the audit row in one transaction, the notice unread again for its
    /// readers, and the news for the applicant by e-mail and push (outbox rows with the topic
    /// `application/{seq}/{status}`, due now); a 差戻し reopens the draft so the resident can
    /// correct and resubmit. A refusal changes nothing but is audited.
    pub async fn change_application_status(
        &self,
        change: StatusChange<'_>,
    ) -> Result<StatusOutcome> {
        let what = "changing an application's status";
        let at = utc_text(change.now);
        let target = format!("application/{}", change.seq);
        let mut tx = self.begin_write(what).await?;
        let row = sqlx::query(self.sql(
            "SELECT a.rule, a.status, a.decision_key, a.applicant, d.body
             FROM applications a JOIN decisions d ON d.key = a.decision_key WHERE a.seq = $1",
        ))
        .bind(change.seq)
        .fetch_optional(&mut *tx)
        .await
        .map_err(q(what))?;
        let in_scope = row.as_ref().and_then(|r| {
            let rule: String = r.try_get("rule").ok()?;
            change.rules.iter().any(|x| x.as_str() == rule).then_some(r)
        });
        let Some(row) = in_scope else {
            let detail = serde_json::json!({ "to": change.to.name(), "refused": "missing" });
            self.refuse_change(tx, &change, &target, detail).await?;
            return Ok(StatusOutcome::Missing);
        };
        let status: String = row.try_get("status").map_err(q(what))?;
        let key: String = row.try_get("decision_key").map_err(q(what))?;
        let from = ApplicationStatus::from_name(&status)
            .ok_or_else(|| corrupt("application status", format!("{status:?}")))?;
        if let Err(e) = check_transition(from, change.to, change.message) {
            let detail = serde_json::json!({
                "from": from.name(), "to": change.to.name(), "refused": e.to_string(),
            });
            self.refuse_change(tx, &change, &target, detail).await?;
            return Ok(StatusOutcome::Refused(e));
        }
        // The status guards the update: a racing change of the same application loses here.
        let done = sqlx::query(self.sql(
            "UPDATE applications SET status = $1, message = $2, status_at = $3
             WHERE seq = $4 AND status = $5",
        ))
        .bind(change.to.name().to_owned())
        .bind(change.message.map(str::to_owned))
        .bind(at.clone())
        .bind(change.seq)
        .bind(from.name().to_owned())
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        if done.rows_affected() != 1 {
            return Err(corrupt(
                "application status",
                "changed during the transaction",
            ));
        }
        self.insert_history(
            &mut tx,
            change.seq,
            change.to,
            change.message,
            change.actor,
            &at,
        )
        .await?;
        // News for whoever reads the notice: it shows unread in their inbox again.
        sqlx::query(self.sql("DELETE FROM notice_reads WHERE decision_key = $1"))
            .bind(key.clone())
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        // And news by e-mail or push for the applicant, on the channels the decision found
        // them reachable on; the send-time gate still decides with their current record.
        let applicant: String = row.try_get("applicant").map_err(q(what))?;
        let body: NoticeBody =
            serde_json::from_str(&row.try_get::<String, _>("body").map_err(q(what))?)
                .map_err(|e| corrupt("decision body", e))?;
        let news = ApplicationNews {
            seq: change.seq,
            status: change.to,
        };
        self.insert_outbox(
            &mut tx,
            &key,
            &news_rows(&body, &news, &applicant),
            Some(&news),
            &at,
        )
        .await?;
        if change.to == ApplicationStatus::Returned {
            sqlx::query(self.sql(
                "UPDATE drafts SET state = 'open', updated_at = $1
                 WHERE decision_key = $2 AND state = 'submitted'",
            ))
            .bind(at.clone())
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        // The message is the office's text to the resident: its length only in the log.
        let detail = serde_json::json!({
            "from": from.name(), "to": change.to.name(),
            "message_chars": change.message.map(|m| m.chars().count()),
        });
        self.insert_audit(
            &mut tx,
            &[AuditEntry::new(
                change.now,
                change.actor,
                "application.status",
                &target,
                Some(detail.to_string()),
            )],
        )
        .await?;
        let row = sqlx::query(self.sql_built(format!("{SELECT} WHERE seq = $1")))
            .bind(change.seq)
            .fetch_one(&mut *tx)
            .await
            .map_err(q(what))?;
        let app = application_from_row(&row)?;
        tx.commit().await.map_err(q(what))?;
        Ok(StatusOutcome::Changed(Box::new(app)))
    }

    /// Marks agency `agency` as a core system that may read and change the applications of
    /// `rules` (replacing any scope it had).
    /// Applications per status, with the time the oldest of each entered it: what the
    /// operator's metrics show (how many wait for 受付, and for how long).
    pub async fn application_counts(&self) -> Result<Vec<ApplicationCount>> {
        let what = "counting applications";
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n, MIN(status_at) AS oldest FROM applications GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get("status").map_err(q(what))?;
            let status =
                ApplicationStatus::from_name(&name).ok_or_else(|| StoreError::Corrupt {
                    what: "application status",
                    detail: name.clone(),
                })?;
            let oldest: String = r.try_get("oldest").map_err(q(what))?;
            out.push(ApplicationCount {
                status,
                count: r.try_get("n").map_err(q(what))?,
                oldest: parse_time("application status time", &oldest)?,
            });
        }
        out.sort_by_key(|c| c.status);
        Ok(out)
    }

    pub async fn set_office_client(
        &self,
        agency: &str,
        rules: &[RuleId],
        now: DateTime<FixedOffset>,
    ) -> Result<()> {
        let what = "registering an office client";
        let rules: Vec<&str> = rules.iter().map(|r| r.as_str()).collect();
        let mut tx = self.begin_write(what).await?;
        sqlx::query(self.sql("DELETE FROM office_clients WHERE agency_id = $1"))
            .bind(agency.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        sqlx::query(
            self.sql(
                "INSERT INTO office_clients (agency_id, rules, created_at) VALUES ($1, $2, $3)",
            ),
        )
        .bind(agency.to_owned())
        .bind(serde_json::to_string(&rules).map_err(|e| corrupt("office scope", e))?)
        .bind(utc_text(now))
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        tx.commit().await.map_err(q(what))
    }

    /// The procedures an office client may read, or `None` if the agency is not one.
    pub async fn office_scope(&self, agency: &str) -> Result<Option<Vec<RuleId>>> {
        let row = sqlx::query(self.sql("SELECT rules FROM office_clients WHERE agency_id = $1"))
            .bind(agency.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading an office client"))?;
        row.map(|r| {
            let text: String = r.try_get("rules").map_err(q("reading an office client"))?;
            let names: Vec<String> =
                serde_json::from_str(&text).map_err(|e| corrupt("office scope", e))?;
            names
                .iter()
                .map(|n| RuleId::parse(n).map_err(|e| corrupt("office scope", e)))
                .collect()
        })
        .transpose()
    }
}

/// The outbox rows of the news that an application became `news.status`: the applicant's
/// e-mail and push rows among the notice's own (never `portal`, whose inbox shows the status
/// already, nor `staff`); none for 申請済み, which is the resident's own act.
fn news_rows(
    body: &NoticeBody,
    news: &ApplicationNews,
    applicant: &str,
) -> Vec<(String, &'static str)> {
    if news.status == ApplicationStatus::Submitted {
        return Vec::new();
    }
    let sent = [Channel::Email.name(), Channel::Webpush.name()];
    notice_rows(
        body.recipients
            .iter()
            .filter(|r| r.id.as_str() == applicant)
            .map(|r| (r.id.as_str(), r.channels.as_slice())),
        false,
    )
    .into_iter()
    .filter(|(_, channel)| sent.contains(channel))
    .collect()
}

fn role_name(role: Role) -> String {
    match serde_json::to_value(role) {
        Ok(Value::String(s)) => s,
        _ => "proxy".to_owned(),
    }
}

/// A value this module serializes itself (maps of JSON values, strings): never fails.
fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oshirase_engine::rule::Category;

    fn body() -> NoticeBody {
        let mut body = NoticeBody::titled("児童手当の認定請求", Category::Childcare, false);
        let recipient = |id: &str, role, channels: &[Channel]| {
            serde_json::from_value(serde_json::json!({
                "id": id, "role": role, "channels": channels,
            }))
            .unwrap()
        };
        body.recipients = vec![
            recipient(
                "R10003",
                "guardian",
                &[Channel::Portal, Channel::Email, Channel::Webpush],
            ),
            recipient("R10004", "householder", &[Channel::Portal, Channel::Email]),
        ];
        body
    }

    #[test]
    fn news_goes_to_the_applicants_mail_and_push_only() {
        let news = |status| ApplicationNews { seq: 3, status };
        let rows = news_rows(&body(), &news(ApplicationStatus::Received), "R10003");
        assert_eq!(
            rows,
            vec![
                ("R10003".to_owned(), "email"),
                ("R10003".to_owned(), "webpush")
            ]
        );
        // Somebody who is not a recipient, and the resident's own submission: nothing.
        assert!(news_rows(&body(), &news(ApplicationStatus::Received), "R10009").is_empty());
        assert!(news_rows(&body(), &news(ApplicationStatus::Submitted), "R10003").is_empty());
        // An applicant the decision reached by the portal only: nothing either.
        let mut portal = body();
        portal.recipients[0].channels = vec![Channel::Portal];
        assert!(news_rows(&portal, &news(ApplicationStatus::Completed), "R10003").is_empty());
    }
}
