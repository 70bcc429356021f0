//! The one service layer under the API and the pages: who may read what, drafts, read
//! marks, push subscriptions and preferences. Handlers only translate HTTP.

use std::sync::Arc;

use chrono::NaiveDate;
use indexmap::IndexMap;
use oshirase_engine::clock::Clock;
use oshirase_engine::resident::Channel;
use oshirase_store::{
    AuditEntry, DraftDecision, NoticeBody, PortalNotice, PortalPreferences, RegisterAccess, Store,
    StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::Auditor;
use crate::config::PortalConfig;
use crate::push;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Missing and not allowed are the same answer.
    #[error("not found")]
    NotFound,
    #[error("the draft is already {state}")]
    Conflict { state: String },
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
    pub key: String,
    pub title: String,
    pub subject: String,
    pub category: String,
    /// Why this reader receives it: subject, guardian, householder, spouse, survivor, proxy.
    pub role: String,
    pub deadline: Option<String>,
    pub created: String,
    pub critical: bool,
    pub read: bool,
    /// `open`, `submitted` or `declined`.
    pub draft_state: Option<String>,
    /// The page of this notice.
    pub url: String,
}

/// One notice with its message and recommended procedures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoticeDetail {
    #[serde(flatten)]
    pub summary: NoticeSummary,
    pub message: String,
    pub recommendations: Vec<String>,
}

/// A draft as the reader sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DraftView {
    pub key: String,
    pub title: String,
    pub deadline: Option<String>,
    pub state: String,
    /// The prefilled fields, in the rule's order.
    pub fields: IndexMap<String, Value>,
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

/// The role of `reader` among the decision's recipients.
fn role_of<'a>(body: &'a NoticeBody, reader: &str) -> Option<&'a str> {
    body.recipients
        .iter()
        .find(|r| r.id == reader)
        .map(|r| r.role.as_str())
}

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
        reader: &str,
        action: &str,
        target: &str,
        detail: Option<String>,
    ) -> Result<()> {
        self.auditor
            .record(AuditEntry::new(
                self.clock.now(),
                reader,
                action,
                target,
                detail,
            ))
            .await
            .map_err(ServiceError::Internal)
    }

    /// The live check on top of the outbox row: the register may have changed since the
    /// decision. A subject under a support measure is visible to nobody else; a proxy must
    /// still hold a scope covering the category, within `until`.
    async fn may_read(&self, reader: &str, n: &PortalNotice) -> Result<bool> {
        let Some(role) = role_of(&n.body, reader) else {
            return Ok(false);
        };
        if reader == n.subject {
            return Ok(true);
        }
        let Some(subject) = &n.subject_record else {
            return Ok(false);
        };
        if subject.support_measure {
            return Ok(false);
        }
        if role != "proxy" {
            return Ok(true);
        }
        let today = self.today();
        let covers = |r: &RegisterAccess| {
            r.proxies
                .iter()
                .any(|p| p.id.as_str() == reader && p.covers(&n.body.category, today))
        };
        if covers(subject) {
            return Ok(true);
        }
        // A proxy of another recipient (say a guardian): read that principal's record now.
        for p in n.body.recipients.iter().filter(|r| r.role != "proxy") {
            if let Some(record) = self.store.register_access(&p.id).await? {
                if covers(&record) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A notice `reader` may read, or `NotFound` whether it is missing or not theirs.
    async fn readable(&self, reader: &str, key: &str) -> Result<PortalNotice> {
        let n = self.store.portal_notice(reader, key).await?;
        match n {
            Some(n) if self.may_read(reader, &n).await? => Ok(n),
            _ => Err(ServiceError::NotFound),
        }
    }

    fn summary(&self, reader: &str, n: &PortalNotice) -> NoticeSummary {
        NoticeSummary {
            key: n.key.clone(),
            title: n.body.title.ja.clone(),
            subject: n.subject.clone(),
            category: n.body.category.clone(),
            role: role_of(&n.body, reader).unwrap_or_default().to_owned(),
            deadline: n.deadline.clone(),
            created: n.created_at.clone(),
            critical: n.critical,
            read: n.read,
            draft_state: n.draft.as_ref().map(|d| d.state.clone()),
            url: format!(
                "{}/notices/{}",
                self.config.public_url.trim_end_matches('/'),
                n.key
            ),
        }
    }

    pub(crate) async fn notices(&self, reader: &str) -> Result<Vec<NoticeSummary>> {
        let mut out = Vec::new();
        for n in self.store.portal_notices(reader).await? {
            if self.may_read(reader, &n).await? {
                out.push(self.summary(reader, &n));
            }
        }
        Ok(out)
    }

    pub(crate) async fn notice(&self, reader: &str, key: &str) -> Result<NoticeDetail> {
        let n = self.readable(reader, key).await?;
        let recommendations = self.store.recommendations(key).await?;
        self.audit(reader, "notice.view", key, None).await?;
        Ok(NoticeDetail {
            summary: self.summary(reader, &n),
            message: n.body.message.ja.clone(),
            recommendations,
        })
    }

    pub(crate) async fn mark_read(&self, reader: &str, key: &str) -> Result<()> {
        self.readable(reader, key).await?;
        self.store
            .mark_notice_read(key, reader, self.clock.now())
            .await?;
        Ok(())
    }

    fn draft_view(n: PortalNotice) -> Result<DraftView> {
        let title = n.body.title.ja;
        let d = n.draft.ok_or(ServiceError::NotFound)?;
        Ok(DraftView {
            key: n.key,
            title,
            deadline: n.deadline,
            state: d.state,
            fields: d.fields,
            submitted_fields: d.submitted_fields,
            decided_by: d.decided_by,
            updated_at: d.updated_at,
        })
    }

    /// A draft `reader` may read; every attempt is audited, a refused one (missing or not
    /// theirs, the same) as `draft.refused`.
    async fn readable_draft(&self, reader: &str, key: &str, action: &str) -> Result<DraftView> {
        match self.readable(reader, key).await.and_then(Self::draft_view) {
            Ok(d) => Ok(d),
            Err(ServiceError::NotFound) => {
                self.audit(
                    reader,
                    "draft.refused",
                    key,
                    Some(format!(r#"{{"attempt":"{action}"}}"#)),
                )
                .await?;
                Err(ServiceError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn draft(&self, reader: &str, key: &str) -> Result<DraftView> {
        let d = self.readable_draft(reader, key, "read").await?;
        self.audit(reader, "draft.read", key, None).await?;
        Ok(d)
    }

    /// Submits the draft with `corrections` (only fields of the draft, scalar values).
    pub(crate) async fn submit(
        &self,
        reader: &str,
        key: &str,
        corrections: IndexMap<String, Value>,
    ) -> Result<DraftView> {
        let d = self.readable_draft(reader, key, "submit").await?;
        self.submit_draft(reader, d, corrections).await
    }

    /// Submits a form's text values: a field whose text differs from how its prefilled value
    /// shows is a correction, typed like the prefilled value where it parses.
    pub(crate) async fn submit_form(
        &self,
        reader: &str,
        key: &str,
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
        reader: &str,
        mut d: DraftView,
        corrections: IndexMap<String, Value>,
    ) -> Result<DraftView> {
        let key = d.key.clone();
        let key = key.as_str();
        if d.state != "open" {
            return Err(ServiceError::Conflict { state: d.state });
        }
        for (field, value) in &corrections {
            if !d.fields.contains_key(field) {
                return Err(ServiceError::Unprocessable {
                    field: Some(field.clone()),
                    message: format!("{field:?} is not a field of this draft"),
                });
            }
            if value.is_array() || value.is_object() {
                return Err(ServiceError::Unprocessable {
                    field: Some(field.clone()),
                    message: format!("{field:?} must be a string, number, boolean or null"),
                });
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
        let entry = AuditEntry::new(self.clock.now(), reader, "draft.submit", key, Some(detail));
        match self
            .store
            .decide_draft(key, reader, "submitted", Some(&submitted), &entry)
            .await?
        {
            DraftDecision::Done => {}
            DraftDecision::AlreadyDecided => return Err(self.conflict(reader, key).await),
        }
        d.state = "submitted".into();
        d.submitted_fields = Some(submitted);
        d.decided_by = Some(reader.to_owned());
        d.updated_at = entry.at;
        Ok(d)
    }

    pub(crate) async fn decline(&self, reader: &str, key: &str) -> Result<DraftView> {
        let mut d = self.readable_draft(reader, key, "decline").await?;
        if d.state != "open" {
            return Err(ServiceError::Conflict { state: d.state });
        }
        let entry = AuditEntry::new(self.clock.now(), reader, "draft.decline", key, None);
        match self
            .store
            .decide_draft(key, reader, "declined", None, &entry)
            .await?
        {
            DraftDecision::Done => {}
            DraftDecision::AlreadyDecided => return Err(self.conflict(reader, key).await),
        }
        d.state = "declined".into();
        d.decided_by = Some(reader.to_owned());
        d.updated_at = entry.at;
        Ok(d)
    }

    /// Another request decided the draft first: report its state now.
    async fn conflict(&self, reader: &str, key: &str) -> ServiceError {
        match self.readable(reader, key).await.and_then(Self::draft_view) {
            Ok(d) => ServiceError::Conflict { state: d.state },
            Err(e) => e,
        }
    }

    pub(crate) async fn subscriptions(&self, reader: &str) -> Result<Vec<SubscriptionView>> {
        Ok(self
            .store
            .push_subscriptions(reader)
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
        reader: &str,
        input: SubscriptionInput,
    ) -> Result<SubscriptionView> {
        let bad = |field: &str, message: String| ServiceError::Unprocessable {
            field: Some(field.to_owned()),
            message,
        };
        oshirase_adapters::check_endpoint(&input.endpoint, self.config.allow_loopback_push)
            .map_err(|m| bad("endpoint", m))?;
        push::check_keys(&input.keys.p256dh, &input.keys.auth).map_err(|m| bad("keys", m))?;
        let id = self
            .store
            .add_push_subscription(
                reader,
                &input.endpoint,
                &input.keys.p256dh,
                &input.keys.auth,
                self.clock.now(),
            )
            .await?;
        Ok(SubscriptionView {
            id,
            endpoint: input.endpoint,
        })
    }

    /// Removes the reader's subscription for `endpoint`; another's is `NotFound`.
    pub(crate) async fn unsubscribe(&self, reader: &str, endpoint: &str) -> Result<()> {
        let subs = self.store.push_subscriptions(reader).await?;
        let Some(s) = subs.iter().find(|s| s.endpoint == endpoint) else {
            return Err(ServiceError::NotFound);
        };
        if self
            .store
            .delete_push_subscription(s.id, Some(reader))
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound)
        }
    }

    pub(crate) async fn preferences(&self, reader: &str) -> Result<PreferencesView> {
        if let Some(p) = self.store.portal_preferences(reader).await? {
            return Ok(PreferencesView {
                channels: p.channels,
                email_consent: p.email_consent,
                webpush_consent: p.webpush_consent,
                saved: true,
            });
        }
        // Never saved here: what the register says.
        Ok(match self.store.resident(reader).await? {
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
        reader: &str,
        input: PreferencesInput,
    ) -> Result<PreferencesView> {
        let mut channels = input.channels;
        channels.sort();
        channels.dedup();
        let prefs = PortalPreferences {
            channels,
            email_consent: input.email_consent,
            webpush_consent: input.webpush_consent,
        };
        self.store
            .set_portal_preferences(reader, &prefs, self.clock.now())
            .await?;
        self.audit(reader, "preferences.update", reader, None)
            .await?;
        self.preferences(reader).await
    }
}
