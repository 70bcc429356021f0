//! What the portal reads and changes: notices, drafts, recommendations, read marks and the
//! audit log.
//!
//! A reader's notices are the decisions with an outbox row `(key, reader, 'portal')`: the
//! evaluator already decided who may read what. The portal re-checks that against the
//! register (support measures, proxy scopes) with the subject's record read in the same query.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{q, utc_text, Result, Store, StoreError, Val};
use oshirase_engine::eval::{DecisionKey, Role};
use oshirase_engine::ids::{HouseholdId, ResidentId, RuleId};
use oshirase_engine::resident::{Channel, Guardian, HouseholdLink, Proxy, Status};
use oshirase_engine::rule::{Application, Category, Contact, FieldSpec};

/// What the portal shows of a stored decision body, and who it is addressed to. Read with
/// the rest of the body skipped: this is parsed on every request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NoticeBody {
    pub title: NoticeText,
    pub message: NoticeText,
    /// The rule's category (proxies are authorised per category).
    pub category: Category,
    pub recipients: Vec<NoticeRecipient>,
    /// Critical notices can be re-routed but not muted.
    #[serde(default)]
    pub critical: bool,
    /// How the draft's fields are shown (labels, kinds); empty for notices decided before
    /// rules had them.
    #[serde(default)]
    pub form: IndexMap<String, FieldSpec>,
    #[serde(default)]
    pub application: Application,
    /// Whom to ask.
    #[serde(default)]
    pub contact: Option<Contact>,
    /// The life event the notice is one of (`birth-…`, `death-…`), for event rules.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The deadline had passed when the notice was made.
    #[serde(default)]
    pub urgent: bool,
    /// The law the procedure rests on (the rule's `legal_basis`); none for notices decided
    /// before decisions carried it.
    #[serde(default)]
    pub legal_basis: Option<String>,
}

impl NoticeBody {
    /// A notice with only a title (the message is the title too), addressed to nobody: what
    /// a channel needs to be exercised on its own.
    pub fn titled(title: &str, category: Category, critical: bool) -> Self {
        let text = NoticeText {
            ja: title.to_owned(),
            en: None,
        };
        Self {
            title: text.clone(),
            message: text,
            category,
            recipients: Vec::new(),
            critical,
            form: IndexMap::new(),
            application: Application::default(),
            contact: None,
            event_id: None,
            urgent: false,
            legal_basis: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NoticeText {
    pub ja: String,
    #[serde(default)]
    pub en: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NoticeRecipient {
    pub id: ResidentId,
    /// Why this person receives the notice.
    pub role: Role,
    /// The channels the decision found this person reachable on for it (its outbox rows).
    #[serde(default)]
    pub channels: Vec<Channel>,
}

/// A recommended procedure that applies: the decision its rule made for the same subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommended {
    pub rule: RuleId,
    pub key: DecisionKey,
    pub deadline: Option<NaiveDate>,
    pub body: NoticeBody,
}

/// The parts of a register record that decide who else may read a person's notices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegisterAccess {
    #[serde(default)]
    pub support_measure: bool,
    #[serde(default)]
    pub proxies: Vec<Proxy>,
    #[serde(default)]
    pub guardians: Vec<Guardian>,
    #[serde(default)]
    pub household: Option<HouseholdLink>,
    #[serde(default)]
    pub status: Option<Status>,
    /// How pages name the person ("陽さん（お子さま）"), never by register id.
    #[serde(default)]
    pub name: Option<RegisterName>,
}

/// The written name of a register record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegisterName {
    #[serde(default)]
    pub kanji: String,
}

impl RegisterAccess {
    /// Not deceased: a person whose death is registered reads nothing and authorises
    /// nobody (民法111条 ends a proxy's authority).
    pub fn alive(&self) -> bool {
        !matches!(self.status, Some(Status::Deceased { .. }))
    }

    /// Whether this person lives now in `other`'s household (on the register, same
    /// household): what a householder, spouse or survivor role rests on.
    pub fn lives_with(&self, other: &RegisterAccess) -> bool {
        let here = matches!(self.status, None | Some(Status::Resident { .. }));
        here && matches!((&self.household, &other.household), (Some(a), Some(b)) if a.id == b.id)
    }

    /// Whether `guardian` (with their own record) may read this person's notices as their
    /// guardian: listed in `guardians`, and, under a support measure, living in the same
    /// household (the engine's routing, docs/support-measures.md).
    pub fn has_guardian(&self, id: &ResidentId, guardian: &RegisterAccess) -> bool {
        let same_household = match (&self.household, &guardian.household) {
            (Some(a), Some(b)) => a.id == b.id,
            _ => false,
        };
        self.guardians.iter().any(|g| &g.id == id) && (!self.support_measure || same_household)
    }
}

/// A notice as one reader sees it, with its draft and the subject's current register record.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalNotice {
    pub key: DecisionKey,
    pub rule: RuleId,
    pub subject: ResidentId,
    pub deadline: Option<NaiveDate>,
    pub critical: bool,
    /// When the decision was made (RFC 3339).
    pub created_at: String,
    pub body: NoticeBody,
    /// Whether this reader has opened it.
    pub read: bool,
    pub draft: Option<PortalDraft>,
    /// The subject's record now (`None` if the register no longer has it).
    pub subject_record: Option<RegisterAccess>,
    /// The latest application submitted from its draft, and where the office has it.
    pub application: Option<NoticeApplication>,
}

/// Where the latest application of a notice stands (`office`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeApplication {
    pub seq: i64,
    pub version: i64,
    pub status: crate::ApplicationStatus,
    /// The office's message of the last change.
    pub message: Option<String>,
    /// When the status was set (RFC 3339 UTC).
    pub at: String,
}

/// A draft: the prefilled fields, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalDraft {
    pub fields: IndexMap<String, serde_json::Value>,
    pub state: DraftState,
    /// The fields as submitted (prefill with the reader's corrections).
    pub submitted_fields: Option<IndexMap<String, serde_json::Value>>,
    pub decided_by: Option<String>,
    pub updated_at: String,
}

/// One audit log row. `detail` never holds field values, names or addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// RFC 3339 UTC (`utc_text`).
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(
        at: DateTime<FixedOffset>,
        actor: &str,
        action: &str,
        target: &str,
        detail: Option<String>,
    ) -> Self {
        Self {
            at: utc_text(at),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        }
    }
}

/// Where a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftState {
    /// Prefilled, waiting for the reader.
    Open,
    Submitted,
    Declined,
}

impl DraftState {
    /// The name stored in `drafts.state` and shown in the API.
    pub fn name(self) -> &'static str {
        match self {
            DraftState::Open => "open",
            DraftState::Submitted => "submitted",
            DraftState::Declined => "declined",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            DraftState::Open,
            DraftState::Submitted,
            DraftState::Declined,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

impl fmt::Display for DraftState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a reader decides an open draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftChoice<'a> {
    /// Submitted with these fields (the prefill with the reader's corrections).
    Submit(&'a IndexMap<String, serde_json::Value>),
    Decline,
}

/// How deciding a draft ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftDecision {
    /// The draft was open and is now in the asked state.
    Done,
    /// The draft was already submitted or declined: nothing changed.
    AlreadyDecided,
}

/// The columns of one notice row; the SQL is fixed text either way, only the filter differs.
macro_rules! notice_select {
    () => {
        "SELECT d.key, d.rule, d.subject, d.deadline, d.critical, d.created_at, d.body,
           dr.fields, dr.state, dr.submitted_fields, dr.decided_by, dr.updated_at,
           r.record AS subject_record,
           ap.seq AS app_seq, ap.version AS app_version, ap.status AS app_status,
           ap.message AS app_message, ap.status_at AS app_at,
           (SELECT COUNT(*) FROM notice_reads n WHERE n.decision_key = d.key AND n.reader = $1) AS read_n
         FROM outbox o
         JOIN decisions d ON d.key = o.decision_key
         LEFT JOIN drafts dr ON dr.decision_key = d.key
         LEFT JOIN residents r ON r.id = d.subject
         LEFT JOIN applications ap ON ap.decision_key = d.key AND ap.version =
           (SELECT MAX(a2.version) FROM applications a2 WHERE a2.decision_key = d.key)
         WHERE o.recipient = $1 AND o.channel = 'portal' AND o.topic = ''"
    };
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

/// A stored value of a newtype that must parse.
fn parsed<T, E: fmt::Display>(
    what: &'static str,
    text: String,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> Result<T> {
    parse(&text).map_err(|e| StoreError::Corrupt {
        what,
        detail: format!("{text:?}: {e}"),
    })
}

fn notice_from_row(row: &sqlx::any::AnyRow) -> Result<PortalNotice> {
    let get = |c: &str| row.try_get::<String, _>(c).map_err(q("reading notices"));
    let opt = |c: &str| {
        row.try_get::<Option<String>, _>(c)
            .map_err(q("reading notices"))
    };
    let fields = |text: Option<String>| -> Result<Option<IndexMap<String, serde_json::Value>>> {
        text.map(|t| serde_json::from_str(&t).map_err(corrupt("draft fields")))
            .transpose()
    };
    let draft = match opt("state")? {
        Some(state) => Some(PortalDraft {
            fields: fields(opt("fields")?)?.unwrap_or_default(),
            state: parsed("draft state", state, |s| {
                DraftState::from_name(s).ok_or("not a draft state")
            })?,
            submitted_fields: fields(opt("submitted_fields")?)?,
            decided_by: opt("decided_by")?,
            updated_at: opt("updated_at")?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(PortalNotice {
        key: parsed("decision key", get("key")?, DecisionKey::parse)?,
        rule: parsed("rule id", get("rule")?, RuleId::parse)?,
        subject: parsed("resident id", get("subject")?, ResidentId::parse)?,
        deadline: opt("deadline")?
            .map(|d| parsed("deadline", d, str::parse::<NaiveDate>))
            .transpose()?,
        critical: row
            .try_get::<i64, _>("critical")
            .map_err(q("reading notices"))?
            != 0,
        created_at: get("created_at")?,
        body: serde_json::from_str(&get("body")?).map_err(corrupt("decision body"))?,
        read: row
            .try_get::<i64, _>("read_n")
            .map_err(q("reading notices"))?
            > 0,
        draft,
        subject_record: opt("subject_record")?
            .map(|t| serde_json::from_str(&t).map_err(corrupt("resident record")))
            .transpose()?,
        application: match opt("app_status")? {
            None => None,
            Some(status) => Some(NoticeApplication {
                seq: row
                    .try_get::<i64, _>("app_seq")
                    .map_err(q("reading notices"))?,
                version: row
                    .try_get::<i64, _>("app_version")
                    .map_err(q("reading notices"))?,
                status: parsed("application status", status, |s| {
                    crate::ApplicationStatus::from_name(s).ok_or("not an application status")
                })?,
                message: opt("app_message")?,
                at: get("app_at")?,
            }),
        },
    })
}

impl Store {
    /// The notices `reader` has a portal row for, newest first. Authorization beyond the
    /// outbox row (support measures, proxy scopes) is the caller's check.
    pub async fn portal_notices(&self, reader: &ResidentId) -> Result<Vec<PortalNotice>> {
        let rows = sqlx::query(self.sql(concat!(
            notice_select!(),
            " ORDER BY d.created_at DESC, d.key"
        )))
        .bind(reader.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading notices"))?;
        rows.iter().map(notice_from_row).collect()
    }

    /// One notice of `reader`'s, if they have a portal row for it.
    pub async fn portal_notice(
        &self,
        reader: &ResidentId,
        key: &DecisionKey,
    ) -> Result<Option<PortalNotice>> {
        let row = sqlx::query(self.sql(concat!(notice_select!(), " AND o.decision_key = $2")))
            .bind(reader.as_str().to_owned())
            .bind(key.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a notice"))?;
        row.as_ref().map(notice_from_row).transpose()
    }

    /// The access-relevant part of a person's current register record.
    pub async fn register_access(&self, id: &ResidentId) -> Result<Option<RegisterAccess>> {
        let row = sqlx::query(self.sql("SELECT record FROM residents WHERE id = $1"))
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a resident"))?;
        row.map(|r| {
            let record: String = r.try_get("record").map_err(q("reading a resident"))?;
            serde_json::from_str(&record).map_err(corrupt("resident record"))
        })
        .transpose()
    }

    /// The access-relevant records of everyone registered in `household`, in id order.
    pub async fn household_access(
        &self,
        household: &HouseholdId,
    ) -> Result<Vec<(ResidentId, RegisterAccess)>> {
        let rows = sqlx::query(
            self.sql("SELECT id, record FROM residents WHERE household_id = $1 ORDER BY id"),
        )
        .bind(household.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading a household"))?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(q("reading a household"))?;
                let record: String = r.try_get("record").map_err(q("reading a household"))?;
                Ok((
                    parsed("resident id", id, ResidentId::parse)?,
                    serde_json::from_str(&record).map_err(corrupt("resident record"))?,
                ))
            })
            .collect()
    }

    /// The procedures recommended with a decision that apply: those of its recommended
    /// rules that decided for the same subject (their conditions and audience held), each
    /// with that decision (the latest, if several), in rule id order.
    pub async fn recommended_decisions(&self, key: &DecisionKey) -> Result<Vec<Recommended>> {
        let what = "reading recommendations";
        let rows = sqlx::query(self.sql(
            "SELECT r.rule_id, d.key, d.deadline, d.body
             FROM recommendations r
             JOIN decisions src ON src.key = r.decision_key
             JOIN decisions d ON d.rule = r.rule_id AND d.subject = src.subject
             WHERE r.decision_key = $1
             ORDER BY r.rule_id, d.occurrence DESC, d.key",
        ))
        .bind(key.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        let mut out: Vec<Recommended> = Vec::new();
        for r in &rows {
            let rule: String = r.try_get("rule_id").map_err(q(what))?;
            let rule = parsed("recommended rule id", rule, RuleId::parse)?;
            if out.last().is_some_and(|o| o.rule == rule) {
                continue;
            }
            let key: String = r.try_get("key").map_err(q(what))?;
            let deadline: Option<String> = r.try_get("deadline").map_err(q(what))?;
            let body: String = r.try_get("body").map_err(q(what))?;
            out.push(Recommended {
                rule,
                key: parsed("decision key", key, DecisionKey::parse)?,
                deadline: deadline
                    .map(|d| parsed("deadline", d, |t| t.parse::<NaiveDate>()))
                    .transpose()?,
                body: serde_json::from_str(&body).map_err(corrupt("decision body"))?,
            });
        }
        Ok(out)
    }

    /// Marks a notice read by `reader`; returns false if it already was.
    pub async fn mark_notice_read(
        &self,
        key: &DecisionKey,
        reader: &ResidentId,
        now: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "INSERT INTO notice_reads (decision_key, reader, read_at) VALUES ($1, $2, $3)
             ON CONFLICT (decision_key, reader) DO NOTHING",
        ))
        .bind(key.as_str().to_owned())
        .bind(reader.as_str().to_owned())
        .bind(utc_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("marking a notice read"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Submits or declines an open draft, with its audit row and, submitted, its application
    /// for the back office (`office`), in one transaction.
    pub async fn decide_draft(
        &self,
        key: &DecisionKey,
        reader: &ResidentId,
        choice: DraftChoice<'_>,
        audit: &AuditEntry,
    ) -> Result<DraftDecision> {
        let (state, submitted) = match choice {
            DraftChoice::Submit(fields) => (
                DraftState::Submitted,
                Some(serde_json::to_string(fields).map_err(corrupt("draft fields"))?),
            ),
            DraftChoice::Decline => (DraftState::Declined, None),
        };
        let mut tx = self.begin_write("deciding a draft").await?;
        let done = sqlx::query(self.sql(
            "UPDATE drafts SET state = $1, submitted_fields = $2, decided_by = $3, updated_at = $4
             WHERE decision_key = $5 AND state = 'open'",
        ))
        .bind(state.name().to_owned())
        .bind(submitted)
        .bind(reader.as_str().to_owned())
        .bind(audit.at.clone())
        .bind(key.as_str().to_owned())
        .execute(&mut *tx)
        .await
        .map_err(q("deciding a draft"))?;
        if done.rows_affected() == 0 {
            return Ok(DraftDecision::AlreadyDecided);
        }
        // The application reaches the back office with the submission, or not at all.
        if let DraftChoice::Submit(fields) = choice {
            self.write_application(&mut tx, key, reader, fields, &audit.at)
                .await?;
        }
        self.insert_audit(&mut tx, std::slice::from_ref(audit))
            .await?;
        tx.commit().await.map_err(q("deciding a draft"))?;
        Ok(DraftDecision::Done)
    }

    pub(crate) async fn insert_audit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        entries: &[AuditEntry],
    ) -> Result<u64> {
        let rows = entries
            .iter()
            .map(|e| {
                vec![
                    Val::Text(e.at.clone()),
                    Val::Text(e.actor.clone()),
                    Val::Text(e.action.clone()),
                    Val::Text(e.target.clone()),
                    Val::OptText(e.detail.clone()),
                ]
            })
            .collect::<Vec<_>>();
        if rows.is_empty() {
            return Ok(0);
        }
        self.insert_rows(
            tx,
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ",
            "",
            rows,
            "writing the audit log",
        )
        .await
    }

    /// Appends audit rows in one transaction (the portal batches concurrent requests' rows
    /// into one commit).
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write("writing the audit log").await?;
        self.insert_audit(&mut tx, entries).await?;
        tx.commit().await.map_err(q("writing the audit log"))
    }

    /// Audit rows, optionally only those about `target`, oldest first.
    pub async fn audit_entries(&self, target: Option<&str>) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(self.sql(
            "SELECT at, actor, action, target, detail FROM audit_log
             WHERE ($1 IS NULL OR target = $1) ORDER BY id",
        ))
        .bind(target.map(str::to_owned))
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the audit log"))?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("reading the audit log"))
    }

    /// Whether the database answers (health checks).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(q("checking the database"))?;
        Ok(())
    }
}
