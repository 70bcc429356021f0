//! The one service layer under the API and the pages: who may read what, drafts, read
//! marks, push subscriptions and preferences. Handlers only translate HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate};
use indexmap::IndexMap;
use oshirase_engine::clock::{jst, Clock};
use oshirase_engine::eval::{DecisionKey, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::items::ItemCode;
use oshirase_engine::purposes::Exchange;
use oshirase_engine::resident::is_katakana;
use oshirase_engine::resident::Channel;
use oshirase_engine::rule::{Application, Category, Contact, FieldKind, FieldSpec};
use oshirase_store::{
    ApplicationStatus, AuditEntry, DraftChoice, DraftDecision, DraftState, NoticeApplication,
    NoticeBody, PortalNotice, PortalPreferences, Provision, RegisterAccess, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::Auditor;
use crate::auth::Reader;
use crate::config::PortalConfig;
use crate::push;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Missing and not allowed are the same answer.
    #[error("not found")]
    NotFound,
    #[error("the draft is already {state}")]
    Conflict { state: DraftState },
    /// Something the reader asked to hold belongs to another resident.
    #[error("{0}")]
    Taken(&'static str),
    #[error("{message}")]
    Unprocessable {
        field: Option<String>,
        message: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

/// A notice in a reader's list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoticeSummary {
    pub key: DecisionKey,
    pub title: String,
    pub subject: ResidentId,
    pub category: Category,
    /// Why this reader receives it.
    pub role: Role,
    pub deadline: Option<NaiveDate>,
    pub created: String,
    pub critical: bool,
    pub read: bool,
    pub draft_state: Option<DraftState>,
    /// Whom the notice is about, for this reader, by name: "ご本人あて",
    /// "陽さん（お子さま）について", "山田 花子さんの代理人として".
    pub about: String,
    /// The life event this notice is one of (a birth, a death), for grouping.
    pub event: Option<String>,
    /// Its deadline had passed when it was made: do it now.
    pub urgent: bool,
    /// Whether the resident applies: with a form here, at a counter, or not at all.
    pub application: Application,
    /// Where the office has the latest application submitted from its draft.
    #[serde(default)]
    pub application_status: Option<ApplicationStatusView>,
    /// The page of this notice.
    pub url: String,
}

/// Where a submitted application stands: 申請済み → 受付 → 審査中 → 完了, or 差戻し (with
/// the office's message; the draft is open again to correct and resubmit) or 却下.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApplicationStatusView {
    /// The application's number at the office (受付番号).
    pub seq: i64,
    /// 1, then one more for each resubmission.
    pub version: i64,
    pub status: ApplicationStatus,
    /// The status as the resident reads it (申請済み, 受付 …).
    pub label: String,
    /// How many of 申請済み → 受付 → 審査中 → 完了 are reached (1 to 4); 0 for 差戻し and 却下.
    pub step: u8,
    /// The office's message (why it was returned or rejected).
    pub message: Option<String>,
    pub updated: String,
}

impl ApplicationStatusView {
    fn of(a: &NoticeApplication) -> Self {
        let step = match a.status {
            ApplicationStatus::Submitted => 1,
            ApplicationStatus::Received => 2,
            ApplicationStatus::InReview => 3,
            ApplicationStatus::Completed => 4,
            ApplicationStatus::Returned | ApplicationStatus::Rejected => 0,
        };
        Self {
            seq: a.seq,
            version: a.version,
            status: a.status,
            label: a.status.ja().to_owned(),
            step,
            message: a.message.clone(),
            updated: a.at.clone(),
        }
    }
}

/// One notice with its message and recommended procedures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoticeDetail {
    #[serde(flatten)]
    pub summary: NoticeSummary,
    pub message: String,
    /// Related procedures that apply to the same person, with their own notices.
    pub recommendations: Vec<RecommendationView>,
    /// Whom to ask (問い合わせ先).
    pub contact: Option<Contact>,
}

/// A recommended procedure that applies: its title, why it is shown, its deadline, and
/// its own notice when the reader may open it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecommendationView {
    pub rule: RuleId,
    pub title: String,
    pub why: String,
    pub deadline: Option<NaiveDate>,
    /// The page of its notice, when this reader receives it.
    pub url: Option<String>,
}

/// A draft as the reader sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DraftView {
    pub key: DecisionKey,
    pub title: String,
    pub deadline: Option<NaiveDate>,
    pub state: DraftState,
    /// The prefilled fields, in the rule's order.
    pub fields: IndexMap<String, Value>,
    /// How each field is shown and checked (label, kind, help), by name.
    pub form: IndexMap<String, FieldSpec>,
    /// `form`: submitted here; `counter`: read-only, brought to the counter.
    pub application: Application,
    /// Whom to ask about it.
    pub contact: Option<Contact>,
    pub submitted_fields: Option<IndexMap<String, Value>>,
    pub decided_by: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscriptionView {
    pub id: i64,
    pub endpoint: String,
}

/// The browser's `PushSubscription.toJSON()`.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionInput {
    pub endpoint: String,
    pub keys: SubscriptionKeys,
    #[serde(default, rename = "expirationTime")]
    pub _expiration_time: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionKeys {
    pub p256dh: String,
    pub auth: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreferencesInput {
    pub channels: Vec<Channel>,
    pub email_consent: bool,
    pub webpush_consent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreferencesView {
    pub channels: Vec<Channel>,
    pub email_consent: bool,
    pub webpush_consent: bool,
    /// False while the register's preferences and consents apply (never saved here).
    pub saved: bool,
}

/// One register item named in a provision: its code and its Japanese name, never its value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProvidedItem {
    pub code: String,
    /// The data-item dictionary's name (氏名); the code when the dictionary does not know it.
    pub name: String,
}

/// One provision (情報の提供) as the resident reads it: to whom, under which purpose, what
/// kind, which items, and which were held back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProvisionView {
    /// When, in Asia/Tokyo (RFC 3339 in JSON).
    pub at: DateTime<FixedOffset>,
    /// `agency` or `party`.
    pub accessor_kind: String,
    /// Whom it was provided to (the agency's registered name).
    pub accessor: String,
    /// The purpose (or, for a party, the grant) it was provided under.
    pub basis: String,
    /// The purpose's kind of body (日本年金機構), duty (年金給付の支給に関する事務) and legal
    /// basis; `None` when the purpose table does not know `basis`.
    pub body: Option<String>,
    pub duty: Option<String>,
    pub legal_basis: Option<String>,
    /// `event` (a change event) or `pull` (a data pull).
    pub action: String,
    /// The action in words: 「変更の通知」, 「情報の照会・提供」.
    pub action_text: String,
    /// The items provided, in the dictionary's order.
    pub items: Vec<ProvidedItem>,
    /// The items held back because of a support measure (支援措置).
    pub withheld: Vec<ProvidedItem>,
}

/// Someone whose record of provisions the reader may read for them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordsPerson {
    /// The `for` to ask with.
    #[serde(rename = "for")]
    pub for_id: ResidentId,
    /// How the reader knows them: 「陽さん（お子さま）」, 「山田 花子さん（代理人として）」.
    pub about: String,
    pub role: Role,
}

/// A person's record of provisions (情報の提供記録), newest first.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordsView {
    /// Whose record, for this reader: 「ご本人」, 「陽さん（お子さま）」,
    /// 「山田 花子さん（代理人として）」.
    pub about: String,
    /// Whose, in a sentence: 「あなた」, 「陽さん」, 「山田 花子さん」.
    pub whose: String,
    /// `subject` (their own), `guardian` or `proxy`.
    pub role: Role,
    pub records: Vec<ProvisionView>,
    /// On the reader's own record: the others whose record they may read.
    pub others: Vec<RecordsPerson>,
}

pub(crate) struct Portal {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: PortalConfig,
    auditor: Auditor,
}

/// How a value shows in a form field, and whether it is editable (scalars only).
pub(crate) fn display(v: &Value) -> (String, bool) {
    match v {
        Value::Null => (String::new(), true),
        Value::String(s) => (s.clone(), true),
        Value::Bool(_) | Value::Number(_) => (v.to_string(), true),
        _ => (v.to_string(), false),
    }
}

/// A corrected form value as JSON of the prefilled value's type where it parses.
fn typed(original: &Value, input: &str) -> Value {
    match original {
        Value::Number(_) => input
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| input.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(input.to_owned())),
        Value::Bool(_) if input == "true" || input == "false" => Value::Bool(input == "true"),
        Value::Null if input.is_empty() => Value::Null,
        _ => Value::String(input.to_owned()),
    }
}

/// Longest text a correction may hold: more than any name or address.
const MAX_CORRECTION_CHARS: usize = 500;

/// Why `value` cannot replace the prefilled `original`: the same kind of value, and text
/// short and free of control characters. A list or a map is computed from the register
/// and is not corrected by hand.
fn check_correction(
    original: &Value,
    value: &Value,
    spec: Option<&FieldSpec>,
) -> std::result::Result<(), String> {
    check_value(original, value)?;
    let Some(spec) = spec else { return Ok(()) };
    let text = value.as_str().unwrap_or_default();
    let empty = value.is_null() || text.is_empty();
    if spec.computed {
        return Err("is computed and cannot be changed".into());
    }
    match spec.kind {
        FieldKind::Kana if !empty && !is_katakana(text) => {
            Err("must be full-width katakana (spaces allowed)".into())
        }
        FieldKind::Date if !empty && NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err() => {
            Err("must be a date (YYYY-MM-DD)".into())
        }
        FieldKind::Amount if !value.is_null() && value.as_u64().is_none() => {
            Err("must be a whole number of yen, 0 or more".into())
        }
        FieldKind::Choice if !empty && !spec.choices.iter().any(|c| c == text) => {
            Err(format!("must be one of {}", spec.choices.join(", ")))
        }
        _ => Ok(()),
    }
}

/// The kind of JSON value a correction may be: that of the prefilled value.
fn check_value(original: &Value, value: &Value) -> std::result::Result<(), String> {
    match (original, value) {
        (Value::Array(_) | Value::Object(_), _) => {
            Err("is computed from the register and cannot be changed".into())
        }
        (_, Value::Array(_) | Value::Object(_)) => {
            Err("must be a string, number, boolean or null".into())
        }
        (_, Value::Null) => Ok(()),
        (Value::Number(_), Value::Number(_)) | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (Value::Number(_), _) => Err("must be a number".into()),
        (Value::Bool(_), _) => Err("must be true or false".into()),
        (Value::String(_) | Value::Null, Value::String(t)) => {
            if t.chars().count() > MAX_CORRECTION_CHARS {
                Err(format!("is longer than {MAX_CORRECTION_CHARS} characters"))
            } else if t.chars().any(char::is_control) {
                Err("must not hold control characters".into())
            } else {
                Ok(())
            }
        }
        (Value::String(_) | Value::Null, _) => Err("must be text".into()),
    }
}

/// A draft of a procedure done elsewhere (at a counter): shown, not submitted.
fn not_applied_here() -> ServiceError {
    ServiceError::Unprocessable {
        field: None,
        message: "this procedure is done at the counter, not submitted here".into(),
    }
}

/// Whom a notice is about, said for `role`: the subject's name, never their register id.
fn about(role: Role, subject: Option<&RegisterAccess>) -> String {
    let full = subject
        .and_then(|s| s.name.as_ref())
        .map(|n| n.kanji.trim().to_owned())
        .filter(|n| !n.is_empty());
    let Some(full) = full else {
        return match role {
            Role::Subject => "ご本人あて".to_owned(),
            _ => "ご家族について".to_owned(),
        };
    };
    // The given name: the register writes "氏 名".
    let given = full.rsplit([' ', '\u{3000}']).next().unwrap_or(&full);
    match role {
        Role::Subject => "ご本人あて".to_owned(),
        Role::Guardian => format!("{given}さん（お子さま）について"),
        Role::Proxy => format!("{full}さんの代理人として"),
        Role::Survivor => format!("故 {full}さんについて"),
        Role::Householder => format!("世帯主として、{full}さんについて"),
        Role::Spouse => format!("配偶者として、{full}さんについて"),
    }
}

/// The role of `reader` among the decision's recipients.
fn role_of(body: &NoticeBody, reader: &Reader) -> Option<Role> {
    body.recipients
        .iter()
        .find(|r| &r.id == reader.id())
        .map(|r| r.role)
}

/// The least time a "not found" for one notice takes. A refusal reads the register (the
/// reader, the principal, their scopes) where a missing key reads nothing more; held to
/// this floor, the two take the same time, and timing does not tell a reader that a notice
/// exists. Far above a refusal's few reads, far below what a resident notices.
pub const NOT_FOUND_FLOOR: std::time::Duration = std::time::Duration::from_millis(20);

impl Portal {
    pub(crate) fn new(store: Store, clock: Arc<dyn Clock>, config: PortalConfig) -> Self {
        let auditor = Auditor::start(store.clone());
        Self {
            store,
            clock,
            config,
            auditor,
        }
    }

    fn today(&self) -> NaiveDate {
        self.clock.today()
    }

    async fn audit(
        &self,
        reader: &Reader,
        action: &str,
        target: &str,
        detail: Option<String>,
    ) -> Result<()> {
        self.auditor
            .record(AuditEntry::new(
                self.clock.now(),
                reader.as_str(),
                action,
                target,
                detail,
            ))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// The live check on top of the outbox row: the register may have changed since the
    /// decision, and every role is checked against it as it is now, in this one place.
    ///
    /// - the subject reads their own notices while alive;
    /// - a guardian must still be listed in the subject's `guardians` (living with them when
    ///   the subject is under a support measure), or, for a death, in those of someone the
    ///   deceased lived with (a minor survivor);
    /// - a householder, spouse or survivor must still live in the subject's household;
    /// - a proxy must still hold a scope covering the category, within `until`, for a living
    ///   principal (the subject or another recipient) who may read the notice now and is
    ///   not under a support measure;
    /// - a subject under a support measure is visible to nobody else but a guardian living
    ///   with them.
    ///
    /// The reader's role, if they may read the notice: `None` is refused.
    async fn may_read(&self, reader: &Reader, n: &PortalNotice) -> Result<Option<Role>> {
        let Some(role) = role_of(&n.body, reader) else {
            return Ok(None);
        };
        let Some(subject) = &n.subject_record else {
            return Ok(None);
        };
        // The subject's own record came with the notice: no second read.
        if reader.id() == &n.subject {
            return Ok(subject.alive().then_some(role));
        }
        let Some(me) = self.store.register_access(reader.id()).await? else {
            return Ok(None);
        };
        if !me.alive() {
            return Ok(None);
        }
        if subject.support_measure {
            let allowed = role == Role::Guardian && subject.has_guardian(reader.id(), &me);
            return Ok(allowed.then_some(role));
        }
        let allowed = match role {
            Role::Subject => false,
            Role::Guardian => {
                subject.has_guardian(reader.id(), &me)
                    || (!subject.alive() && self.guards_a_housemate(reader, &me, subject).await?)
            }
            Role::Householder | Role::Spouse | Role::Survivor => me.lives_with(subject),
            Role::Proxy => self.proxy_may_read(reader, n, subject).await?,
        };
        Ok(allowed.then_some(role))
    }

    /// Whether `reader` is the listed guardian of someone living in the deceased `subject`'s
    /// household: the route of a minor survivor's notice.
    async fn guards_a_housemate(
        &self,
        reader: &Reader,
        me: &RegisterAccess,
        subject: &RegisterAccess,
    ) -> Result<bool> {
        let Some(household) = &subject.household else {
            return Ok(false);
        };
        let members = self.store.household_access(&household.id).await?;
        Ok(members
            .iter()
            .any(|(_, m)| m.alive() && m.lives_with(subject) && m.has_guardian(reader.id(), me)))
    }

    async fn proxy_may_read(
        &self,
        reader: &Reader,
        n: &PortalNotice,
        subject: &RegisterAccess,
    ) -> Result<bool> {
        let today = self.today();
        let covers = |r: &RegisterAccess| {
            r.alive()
                && !r.support_measure
                && r.proxies
                    .iter()
                    .any(|p| &p.id == reader.id() && p.covers(n.body.category.name(), today))
        };
        if covers(subject) {
            return Ok(true);
        }
        // A proxy of another recipient (say a guardian or a survivor): that principal must
        // still hold their own role, checked the same way.
        for p in n.body.recipients.iter().filter(|r| r.role != Role::Proxy) {
            let Some(record) = self.store.register_access(&p.id).await? else {
                continue;
            };
            if !covers(&record) {
                continue;
            }
            let holds = match p.role {
                Role::Subject => false,
                Role::Guardian => subject.has_guardian(&p.id, &record) || !subject.alive(),
                Role::Householder | Role::Spouse | Role::Survivor => record.lives_with(subject),
                Role::Proxy => false,
            };
            if holds {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A notice `reader` may read with their role, or `NotFound` whether it is missing or
    /// not theirs, never sooner than `NOT_FOUND_FLOOR`.
    async fn readable(&self, reader: &Reader, key: &DecisionKey) -> Result<(PortalNotice, Role)> {
        let started = tokio::time::Instant::now();
        let n = self.store.portal_notice(reader.id(), key).await?;
        if let Some(n) = n {
            if let Some(role) = self.may_read(reader, &n).await? {
                return Ok((n, role));
            }
        }
        tokio::time::sleep_until(started + NOT_FOUND_FLOOR).await;
        Err(ServiceError::NotFound)
    }

    fn notice_url(&self, key: &DecisionKey) -> String {
        format!(
            "{}/notices/{}",
            self.config.public_url.trim_end_matches('/'),
            key
        )
    }

    fn summary(&self, n: &PortalNotice, role: Role) -> NoticeSummary {
        NoticeSummary {
            key: n.key.clone(),
            title: n.body.title.ja.clone(),
            subject: n.subject.clone(),
            category: n.body.category,
            role,
            deadline: n.deadline,
            created: n.created_at.clone(),
            critical: n.critical,
            read: n.read,
            draft_state: n.draft.as_ref().map(|d| d.state),
            about: about(role, n.subject_record.as_ref()),
            event: n.body.event_id.clone(),
            urgent: n.body.urgent,
            application: n.body.application.clone(),
            application_status: n.application.as_ref().map(ApplicationStatusView::of),
            url: self.notice_url(&n.key),
        }
    }

    /// The reader's notices, what to do first first: urgent ones, then by deadline (none
    /// last), then newest.
    pub(crate) async fn notices(&self, reader: &Reader) -> Result<Vec<NoticeSummary>> {
        let mut out = Vec::new();
        for n in self.store.portal_notices(reader.id()).await? {
            if let Some(role) = self.may_read(reader, &n).await? {
                out.push(self.summary(&n, role));
            }
        }
        // Stable: notices alike keep the store's newest-first order.
        out.sort_by_key(|n| (!n.urgent, n.deadline.is_none(), n.deadline));
        Ok(out)
    }

    pub(crate) async fn notice(&self, reader: &Reader, key: &DecisionKey) -> Result<NoticeDetail> {
        let (n, role) = self.readable(reader, key).await?;
        let mut recommendations = Vec::new();
        for r in self.store.recommended_decisions(key).await? {
            let mine = match self.store.portal_notice(reader.id(), &r.key).await? {
                Some(other) => self.may_read(reader, &other).await?.is_some(),
                None => false,
            };
            let why = match r.body.application {
                Application::None => "お手続は不要ですが、あわせてお知らせしています。",
                Application::Counter { .. } => "あわせて窓口での手続が必要です。",
                Application::Form => "あわせて届出・申請が必要です。",
            };
            recommendations.push(RecommendationView {
                rule: r.rule,
                title: r.body.title.ja,
                why: why.to_owned(),
                deadline: r.deadline,
                url: mine.then(|| self.notice_url(&r.key)),
            });
        }
        self.audit(reader, "notice.view", key.as_str(), None)
            .await?;
        Ok(NoticeDetail {
            summary: self.summary(&n, role),
            message: n.body.message.ja.clone(),
            recommendations,
            contact: n.body.contact.clone(),
        })
    }

    pub(crate) async fn mark_read(&self, reader: &Reader, key: &DecisionKey) -> Result<()> {
        self.readable(reader, key).await?;
        self.store
            .mark_notice_read(key, reader.id(), self.clock.now())
            .await?;
        Ok(())
    }

    fn draft_view((n, _): (PortalNotice, Role)) -> Result<DraftView> {
        let title = n.body.title.ja;
        let d = n.draft.ok_or(ServiceError::NotFound)?;
        Ok(DraftView {
            key: n.key,
            title,
            deadline: n.deadline,
            state: d.state,
            fields: d.fields,
            form: n.body.form,
            application: n.body.application,
            contact: n.body.contact,
            submitted_fields: d.submitted_fields,
            decided_by: d.decided_by,
            updated_at: d.updated_at,
        })
    }

    /// Records a refused attempt on a draft the reader may read (a conflict, an invalid
    /// correction) and gives back the error; field names and status only, never values.
    /// An audit failure wins: the attempt must not pass unrecorded.
    async fn refused(
        &self,
        reader: &Reader,
        key: &DecisionKey,
        action: &str,
        e: ServiceError,
    ) -> ServiceError {
        let status = match &e {
            ServiceError::Conflict { .. } => 409,
            ServiceError::Unprocessable { .. } => 422,
            _ => 500,
        };
        let field = match &e {
            ServiceError::Unprocessable { field: Some(f), .. } => {
                format!(
                    r#","field":{}"#,
                    serde_json::Value::from(f.chars().take(64).collect::<String>())
                )
            }
            _ => String::new(),
        };
        let detail = format!(r#"{{"attempt":"{action}","status":{status}{field}}}"#);
        match self
            .audit(reader, "draft.refused", key.as_str(), Some(detail))
            .await
        {
            Ok(()) => e,
            Err(audit) => audit,
        }
    }

    /// A draft `reader` may read; every attempt is audited, a refused one (missing or not
    /// theirs, the same) as `draft.refused`.
    async fn readable_draft(
        &self,
        reader: &Reader,
        key: &DecisionKey,
        action: &str,
    ) -> Result<DraftView> {
        match self.readable(reader, key).await.and_then(Self::draft_view) {
            Ok(d) => Ok(d),
            Err(ServiceError::NotFound) => {
                self.audit(
                    reader,
                    "draft.refused",
                    key.as_str(),
                    Some(format!(r#"{{"attempt":"{action}"}}"#)),
                )
                .await?;
                Err(ServiceError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn draft(&self, reader: &Reader, key: &DecisionKey) -> Result<DraftView> {
        let d = self.readable_draft(reader, key, "read").await?;
        self.audit(reader, "draft.read", key.as_str(), None).await?;
        Ok(d)
    }

    /// Submits the draft with `corrections` (only fields of the draft, scalar values).
    pub(crate) async fn submit(
        &self,
        reader: &Reader,
        key: &DecisionKey,
        corrections: IndexMap<String, Value>,
    ) -> Result<DraftView> {
        let d = self.readable_draft(reader, key, "submit").await?;
        self.submit_draft(reader, d, corrections).await
    }

    /// Submits a form's text values: a field whose text differs from how its prefilled value
    /// shows is a correction, typed like the prefilled value where it parses.
    pub(crate) async fn submit_form(
        &self,
        reader: &Reader,
        key: &DecisionKey,
        inputs: Vec<(String, String)>,
    ) -> Result<DraftView> {
        let d = self.readable_draft(reader, key, "submit").await?;
        let mut corrections = IndexMap::new();
        for (field, input) in inputs {
            let original = d.fields.get(&field).cloned().unwrap_or(Value::Null);
            if display(&original).0 != input {
                corrections.insert(field, typed(&original, &input));
            }
        }
        self.submit_draft(reader, d, corrections).await
    }

    async fn submit_draft(
        &self,
        reader: &Reader,
        mut d: DraftView,
        corrections: IndexMap<String, Value>,
    ) -> Result<DraftView> {
        let key = d.key.clone();
        if d.application != Application::Form {
            return Err(self
                .refused(reader, &key, "submit", not_applied_here())
                .await);
        }
        if d.state != DraftState::Open {
            return Err(self
                .refused(
                    reader,
                    &key,
                    "submit",
                    ServiceError::Conflict { state: d.state },
                )
                .await);
        }
        for (field, value) in &corrections {
            let problem = match d.fields.get(field) {
                None => Some(format!("{field:?} is not a field of this draft")),
                Some(original) => check_correction(original, value, d.form.get(field))
                    .err()
                    .map(|why| format!("{field:?} {why}")),
            };
            if let Some(message) = problem {
                let e = ServiceError::Unprocessable {
                    field: Some(field.clone()),
                    message,
                };
                return Err(self.refused(reader, &key, "submit", e).await);
            }
        }
        let mut submitted = d.fields.clone();
        let corrected: Vec<&String> = corrections
            .iter()
            .filter(|(k, v)| submitted.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        // Field names only: the values stay out of the log.
        let detail = serde_json::json!({ "corrected": corrected }).to_string();
        for (k, v) in &corrections {
            submitted.insert(k.clone(), v.clone());
        }
        let entry = AuditEntry::new(
            self.clock.now(),
            reader.as_str(),
            "draft.submit",
            key.as_str(),
            Some(detail),
        );
        match self
            .store
            .decide_draft(&key, reader.id(), DraftChoice::Submit(&submitted), &entry)
            .await?
        {
            DraftDecision::Done => {}
            DraftDecision::AlreadyDecided => return Err(self.conflict(reader, &key).await),
        }
        d.state = DraftState::Submitted;
        d.submitted_fields = Some(submitted);
        d.decided_by = Some(reader.as_str().to_owned());
        d.updated_at = entry.at;
        Ok(d)
    }

    pub(crate) async fn decline(&self, reader: &Reader, key: &DecisionKey) -> Result<DraftView> {
        let mut d = self.readable_draft(reader, key, "decline").await?;
        if d.application != Application::Form {
            return Err(self
                .refused(reader, key, "decline", not_applied_here())
                .await);
        }
        if d.state != DraftState::Open {
            let e = ServiceError::Conflict { state: d.state };
            return Err(self.refused(reader, key, "decline", e).await);
        }
        let entry = AuditEntry::new(
            self.clock.now(),
            reader.as_str(),
            "draft.decline",
            key.as_str(),
            None,
        );
        match self
            .store
            .decide_draft(key, reader.id(), DraftChoice::Decline, &entry)
            .await?
        {
            DraftDecision::Done => {}
            DraftDecision::AlreadyDecided => return Err(self.conflict(reader, key).await),
        }
        d.state = DraftState::Declined;
        d.decided_by = Some(reader.as_str().to_owned());
        d.updated_at = entry.at;
        Ok(d)
    }

    /// Another request decided the draft first: report its state now.
    async fn conflict(&self, reader: &Reader, key: &DecisionKey) -> ServiceError {
        match self.readable(reader, key).await.and_then(Self::draft_view) {
            Ok(d) => ServiceError::Conflict { state: d.state },
            Err(e) => e,
        }
    }

    pub(crate) async fn subscriptions(&self, reader: &Reader) -> Result<Vec<SubscriptionView>> {
        Ok(self
            .store
            .push_subscriptions(reader.as_str())
            .await?
            .into_iter()
            .map(|s| SubscriptionView {
                id: s.id,
                endpoint: s.endpoint,
            })
            .collect())
    }

    pub(crate) async fn subscribe(
        &self,
        reader: &Reader,
        input: SubscriptionInput,
    ) -> Result<SubscriptionView> {
        let bad = |field: &str, message: String| ServiceError::Unprocessable {
            field: Some(field.to_owned()),
            message,
        };
        oshirase_adapters::check_endpoint(&input.endpoint, self.config.allow_loopback_push)
            .map_err(|e| bad("endpoint", e.to_string()))?;
        push::check_keys(&input.keys.p256dh, &input.keys.auth)
            .map_err(|e| bad("keys", e.to_string()))?;
        let id = self
            .store
            .add_push_subscription(
                reader.as_str(),
                &input.endpoint,
                &input.keys.p256dh,
                &input.keys.auth,
                self.clock.now(),
            )
            .await?
            .ok_or(ServiceError::Taken(
                "this push endpoint is subscribed for another resident: unsubscribe it there first",
            ))?;
        Ok(SubscriptionView {
            id,
            endpoint: input.endpoint,
        })
    }

    /// Removes the reader's subscription for `endpoint`; another's is `NotFound`.
    pub(crate) async fn unsubscribe(&self, reader: &Reader, endpoint: &str) -> Result<()> {
        let subs = self.store.push_subscriptions(reader.as_str()).await?;
        let Some(s) = subs.iter().find(|s| s.endpoint == endpoint) else {
            return Err(ServiceError::NotFound);
        };
        if self
            .store
            .delete_push_subscription(s.id, Some(reader.as_str()))
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound)
        }
    }

    pub(crate) async fn preferences(&self, reader: &Reader) -> Result<PreferencesView> {
        if let Some(p) = self.store.portal_preferences(reader.as_str()).await? {
            return Ok(PreferencesView {
                channels: p.channels,
                email_consent: p.email_consent,
                webpush_consent: p.webpush_consent,
                saved: true,
            });
        }
        // Never saved here: what the register says.
        Ok(match self.store.resident(reader.as_str()).await? {
            Some(r) => PreferencesView {
                channels: r
                    .preferences
                    .channels
                    .clone()
                    .unwrap_or_else(|| vec![Channel::Portal, Channel::Email, Channel::Webpush]),
                email_consent: r.consents.email,
                webpush_consent: r.consents.webpush,
                saved: false,
            },
            None => PreferencesView {
                channels: vec![Channel::Portal],
                email_consent: false,
                webpush_consent: false,
                saved: false,
            },
        })
    }

    pub(crate) async fn set_preferences(
        &self,
        reader: &Reader,
        input: PreferencesInput,
    ) -> Result<PreferencesView> {
        // Only a living person on the register has preferences to keep: a valid token for
        // anyone else must not leave rows behind.
        let on_register = self
            .store
            .register_access(reader.id())
            .await?
            .is_some_and(|r| r.alive());
        if !on_register {
            return Err(ServiceError::NotFound);
        }
        let mut channels = input.channels;
        channels.sort();
        channels.dedup();
        let prefs = PortalPreferences {
            channels,
            email_consent: input.email_consent,
            webpush_consent: input.webpush_consent,
        };
        self.store
            .set_portal_preferences(reader.as_str(), &prefs, self.clock.now())
            .await?;
        self.audit(reader, "preferences.update", reader.as_str(), None)
            .await?;
        self.preferences(reader).await
    }
}

// ---------------------------------------------------------------------------------------------
// 情報の提供記録: what was provided about a person (change events, data pulls, what was held
// back), and who may read it.
// ---------------------------------------------------------------------------------------------

/// The action of a provision in words.
fn action_text(action: &str) -> &'static str {
    match action {
        "event" => "変更の通知",
        "pull" => "情報の照会・提供",
        _ => "情報の提供",
    }
}

/// How a record's reader names whose it is: (`about`, `whose`), by name, never by register id.
fn records_names(role: Role, principal: Option<&RegisterAccess>) -> (String, String) {
    let full = principal
        .and_then(|s| s.name.as_ref())
        .map(|n| n.kanji.trim().to_owned())
        .filter(|n| !n.is_empty());
    match (role, full) {
        (Role::Subject, _) => ("ご本人".to_owned(), "あなた".to_owned()),
        (_, None) => ("ご家族".to_owned(), "ご家族".to_owned()),
        (Role::Guardian, Some(full)) => {
            // The given name: the register writes "氏 名".
            let given = full.rsplit([' ', '\u{3000}']).next().unwrap_or(&full);
            (format!("{given}さん（お子さま）"), format!("{given}さん"))
        }
        (_, Some(full)) => (format!("{full}さん（代理人として）"), format!("{full}さん")),
    }
}

/// The store's provision rows as the resident reads them, newest first. A pull that provided
/// some items and held others back is logged as two rows at the same instant: they become
/// one entry. Items are named by the dictionary and kept in its order; a purpose is read
/// from the purpose table (its body, duty and legal basis).
fn provision_views(exchange: Option<&Exchange>, rows: Vec<Provision>) -> Vec<ProvisionView> {
    let rank = |code: &str| {
        exchange
            .and_then(|x| {
                x.dictionary
                    .items()
                    .iter()
                    .position(|i| i.code.as_str() == code)
            })
            .unwrap_or(usize::MAX)
    };
    let item = |code: &ItemCode| ProvidedItem {
        code: code.as_str().to_owned(),
        name: exchange
            .and_then(|x| x.dictionary.get(code.as_str()))
            .map_or_else(|| code.as_str().to_owned(), |i| i.name.clone()),
    };
    type Key = (DateTime<FixedOffset>, String, String, String, String);
    let mut at: HashMap<Key, usize> = HashMap::new();
    let mut out: Vec<ProvisionView> = Vec::new();
    for p in rows {
        let key = (
            p.at,
            p.accessor_kind.clone(),
            p.accessor_id.clone(),
            p.basis.clone(),
            p.action.clone(),
        );
        let i = *at.entry(key).or_insert_with(|| {
            let purpose = (p.accessor_kind == "agency")
                .then(|| exchange.and_then(|x| x.purpose(&p.basis)))
                .flatten();
            out.push(ProvisionView {
                at: p.at.with_timezone(&jst()),
                accessor_kind: p.accessor_kind.clone(),
                accessor: p.accessor_name.clone(),
                basis: p.basis.clone(),
                body: purpose.map(|x| x.body.clone()),
                duty: purpose.map(|x| x.duty.clone()),
                legal_basis: purpose.map(|x| x.legal_basis.clone()),
                action: p.action.clone(),
                action_text: action_text(&p.action).to_owned(),
                items: Vec::new(),
                withheld: Vec::new(),
            });
            out.len() - 1
        });
        let view = &mut out[i];
        let list = if p.outcome == "withheld" {
            &mut view.withheld
        } else {
            &mut view.items
        };
        for code in &p.items {
            if !list.iter().any(|x| x.code == code.as_str()) {
                list.push(item(code));
            }
        }
    }
    for v in &mut out {
        v.items.sort_by_key(|x| rank(&x.code));
        v.withheld.sort_by_key(|x| rank(&x.code));
    }
    out
}

impl Portal {
    /// The role in which `reader` (with their own record `me`) may read `whom`'s record of
    /// provisions, with `whom`'s record; `None` is refused. Checked live against the
    /// register, as notices are:
    ///
    /// - their own, unless their death is registered (also after moving away, or off the
    ///   register: the record is still theirs);
    /// - a minor's, as a guardian still listed in the minor's `guardians` (and living with
    ///   them when the minor is under a support measure);
    /// - a living principal's, as a proxy within `until` whose scope is `all`: the record
    ///   spans every purpose, so no narrower scope covers it; never the record of a principal
    ///   under a support measure;
    /// - nobody else's: nobody reads the record of someone whose death is registered, and
    ///   nobody but themselves that of someone no longer on the register.
    async fn records_role(
        &self,
        reader: &Reader,
        me: Option<&RegisterAccess>,
        whom: &ResidentId,
    ) -> Result<Option<(Role, Option<RegisterAccess>)>> {
        if whom == reader.id() {
            let alive = me.is_none_or(|m| m.alive());
            return Ok(alive.then(|| (Role::Subject, me.cloned())));
        }
        let Some(me) = me.filter(|m| m.alive()) else {
            return Ok(None);
        };
        let Some(principal) = self.store.register_access(whom).await? else {
            return Ok(None);
        };
        if !principal.alive() {
            return Ok(None);
        }
        let today = self.today();
        if principal.has_guardian(reader.id(), me) {
            let minor = self.store.resident(whom.as_str()).await?.is_some_and(|r| {
                oshirase_engine::calendar::age_on(r.birth_date, today)
                    < oshirase_engine::eval::ADULT_AGE
            });
            if minor {
                return Ok(Some((Role::Guardian, Some(principal))));
            }
        }
        // A protected person is reached through nobody but a guardian living with them.
        if principal.support_measure {
            return Ok(None);
        }
        let proxy = principal.proxies.iter().any(|p| {
            &p.id == reader.id()
                && p.until.is_none_or(|u| today <= u)
                && p.scopes.iter().any(|s| s == "all")
        });
        Ok(proxy.then_some((Role::Proxy, Some(principal))))
    }

    /// Whether the reader may act for `whom` on their own record (read it, share it): the
    /// rule of `records_role`, so a guardian for a minor, a proxy whose scope is `all`, and
    /// never for a person under a support measure or whose death is registered.
    pub(crate) async fn acts_for(&self, reader: &Reader, whom: &ResidentId) -> Result<bool> {
        let me = self.store.register_access(reader.id()).await?;
        Ok(self
            .records_role(reader, me.as_ref(), whom)
            .await?
            .is_some())
    }

    /// The others the reader may act for on their record, with how the reader knows them.
    pub(crate) async fn acting_for(&self, reader: &Reader) -> Result<Vec<RecordsPerson>> {
        let me = self.store.register_access(reader.id()).await?;
        self.records_others(reader, me.as_ref()).await
    }

    /// The others whose record the reader may read: the persons the reader receives notices
    /// about (as a guardian or a proxy), each re-checked by `records_role`.
    async fn records_others(
        &self,
        reader: &Reader,
        me: Option<&RegisterAccess>,
    ) -> Result<Vec<RecordsPerson>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for n in self.store.portal_notices(reader.id()).await? {
            if &n.subject == reader.id() || !seen.insert(n.subject.clone()) {
                continue;
            }
            if let Some((role, principal)) = self.records_role(reader, me, &n.subject).await? {
                out.push(RecordsPerson {
                    about: records_names(role, principal.as_ref()).0,
                    for_id: n.subject.clone(),
                    role,
                });
            }
        }
        Ok(out)
    }

    /// The record of what was provided about `whom` (the reader when `None`, else a
    /// resident id as text), if the reader may read it: refused, missing and malformed are
    /// all `NotFound`, a refusal and a missing person no sooner than `NOT_FOUND_FLOOR`.
    /// Every read is in the audit log (`records.read`, with the reader's role) before the
    /// record leaves, and every refusal (`records.refused`).
    pub(crate) async fn records(&self, reader: &Reader, whom: Option<&str>) -> Result<RecordsView> {
        let whom = match whom {
            None => reader.id().clone(),
            Some(raw) => ResidentId::parse(raw).map_err(|_| ServiceError::NotFound)?,
        };
        let started = tokio::time::Instant::now();
        let me = self.store.register_access(reader.id()).await?;
        let Some((role, principal)) = self.records_role(reader, me.as_ref(), &whom).await? else {
            self.audit(reader, "records.refused", whom.as_str(), None)
                .await?;
            tokio::time::sleep_until(started + NOT_FOUND_FLOOR).await;
            return Err(ServiceError::NotFound);
        };
        let records = provision_views(self.store.exchange(), self.store.provisions(&whom).await?);
        let others = if role == Role::Subject {
            self.records_others(reader, me.as_ref()).await?
        } else {
            Vec::new()
        };
        let (about, whose) = records_names(role, principal.as_ref());
        let detail = serde_json::json!({ "role": role }).to_string();
        self.audit(reader, "records.read", whom.as_str(), Some(detail))
            .await?;
        Ok(RecordsView {
            about,
            whose,
            role,
            records,
            others,
        })
    }
}
