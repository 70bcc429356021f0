//! The core systems' API (基幹業務システム, docs/office.md), on the agencies' listener and with
//! their authentication: a core system is an agency-like client (OAuth client credentials
//! with `private_key_jwt`, `POST /agency/v1/token`) with an `office_clients` row naming the
//! procedures (rule ids) whose applications it may read and change.
//!
//! - `GET /office/v1/applications?after=SEQ&limit=N`: the applications numbered after `SEQ`,
//!   in number order (contiguous: poll with the last number seen).
//! - `POST /office/v1/applications/{seq}/status`: `{"status": …, "message": …}`.
//!
//! An application outside the client's procedures answers exactly like a missing one.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use oshirase_engine::ids::RuleId;
use oshirase_store::{
    role_ja, Application, ApplicationStatus, StatusChange, StatusOutcome, TransitionError,
    MAX_STATUS_MESSAGE,
};

use crate::api::{caller, field, problem, read_json, store_error, ApiState};

/// The most applications one poll answers.
pub const MAX_LIMIT: i64 = 1000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/office/v1/applications", get(list))
        .route("/office/v1/applications/{seq}/status", post(set_status))
}

/// An application as a core system reads it.
pub fn application_json(a: &Application) -> Value {
    json!({
        "seq": a.seq,
        "decision_key": a.decision_key.as_str(),
        "version": a.version,
        "rule": a.rule.as_str(),
        "rule_version": a.rule_version,
        "title": a.title,
        "legal_basis": a.legal_basis,
        "subject": a.subject.as_str(),
        "applicant": a.applicant.as_str(),
        "role": a.role,
        "role_ja": role_ja(a.role, a.proxy_scopes.as_deref()),
        "proxy_scopes": a.proxy_scopes,
        "prefilled": a.prefilled,
        "corrections": a.corrections,
        "submitted_at": a.submitted_at,
        "status": a.status,
        "status_ja": a.status.ja(),
        "message": a.message,
        "status_at": a.status_at,
    })
}

/// The calling core system and its procedures.
async fn office_caller(
    s: &ApiState,
    headers: &HeaderMap,
) -> Result<(String, Vec<RuleId>), Response> {
    let agency = caller(s, headers).await?;
    match s.store.office_scope(&agency.spec.id).await {
        Ok(Some(rules)) => Ok((agency.spec.id, rules)),
        Ok(None) => Err(problem(
            StatusCode::FORBIDDEN,
            "this client is not registered as a core system (office client)",
            Vec::new(),
        )),
        Err(e) => Err(store_error(e)),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let (client, rules) = match office_caller(&s, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(Query(q)) = q else {
        return problem(
            StatusCode::BAD_REQUEST,
            "the query is `after` (a sequence number) and `limit` (1 to 1000)",
            Vec::new(),
        );
    };
    let mut errors = Vec::new();
    let after = match q.after.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) if n >= 0 => n,
        Some(_) => {
            errors.push(field("after", "a sequence number, 0 or more"));
            0
        }
    };
    let limit = match q.limit.as_deref().map(str::parse::<i64>) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            errors.push(field("limit", format!("a number from 1 to {MAX_LIMIT}")));
            100
        }
    };
    if !errors.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the query is not valid",
            errors,
        );
    }
    let actor = format!("office:{client}");
    match s
        .store
        .applications_after(after, limit, &rules, &actor, s.clock.now())
        .await
    {
        Ok(apps) => {
            let next = apps.last().map_or(after, |a| a.seq);
            Json(json!({
                "applications": apps.iter().map(application_json).collect::<Vec<_>>(),
                "next_after": next,
            }))
            .into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusDoc {
    status: String,
    #[serde(default)]
    message: Option<String>,
}

async fn set_status(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (client, rules) = match office_caller(&s, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return problem(
                e.status(),
                format!(
                    "the body could not be read ({e}); a status change is at most {} bytes",
                    crate::api::MAX_BODY
                ),
                vec![field("", e.body_text())],
            )
        }
    };
    let Ok(seq) = seq.parse::<i64>() else {
        return no_such_application();
    };
    let doc: StatusDoc = match read_json(&body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let Some(to) = ApplicationStatus::from_name(&doc.status) else {
        let names: Vec<&str> = ApplicationStatus::ALL[1..]
            .iter()
            .map(|s| s.name())
            .collect();
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a status",
            vec![field("status", format!("one of: {}", names.join(", ")))],
        );
    };
    if let Some(m) = &doc.message {
        let len = m.chars().count();
        if len > MAX_STATUS_MESSAGE {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the message is too long",
                vec![field(
                    "message",
                    format!("{len} characters; at most {MAX_STATUS_MESSAGE}"),
                )],
            );
        }
    }
    let actor = format!("office:{client}");
    let change = StatusChange {
        seq,
        to,
        message: doc.message.as_deref(),
        actor: &actor,
        rules: &rules,
        now: s.clock.now(),
    };
    match s.store.change_application_status(change).await {
        Ok(StatusOutcome::Changed(a)) => Json(application_json(&a)).into_response(),
        Ok(StatusOutcome::Missing) => no_such_application(),
        Ok(StatusOutcome::Refused(e)) => {
            let (status, name) = match &e {
                TransitionError::NotAllowed { .. } => (StatusCode::CONFLICT, "status"),
                TransitionError::MessageRequired { .. }
                | TransitionError::MessageTooLong { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "message")
                }
            };
            problem(
                status,
                "the status change is refused; nothing changed",
                vec![field(name, e.to_string())],
            )
        }
        Err(e) => store_error(e),
    }
}

fn no_such_application() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "no such application for this client",
        Vec::new(),
    )
}

/// The applications' metrics: how many stand at each status, and how long the oldest has
/// waited at each status an office still has to act on (the queue's age).
pub fn render_metrics(
    counts: &[oshirase_store::ApplicationCount],
    now: chrono::DateTime<chrono::FixedOffset>,
) -> String {
    use oshirase_store::ApplicationStatus as S;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP oshirase_applications Applications by status.");
    let _ = writeln!(out, "# TYPE oshirase_applications gauge");
    for status in S::ALL {
        let n = counts
            .iter()
            .find(|c| c.status == status)
            .map_or(0, |c| c.count);
        let _ = writeln!(
            out,
            "oshirase_applications{{status=\"{}\"}} {n}",
            status.name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP oshirase_application_queue_age_seconds Since the oldest application entered a status the office must act on."
    );
    let _ = writeln!(out, "# TYPE oshirase_application_queue_age_seconds gauge");
    for status in S::ALL.into_iter().filter(|s| !s.next().is_empty()) {
        let age = counts
            .iter()
            .find(|c| c.status == status)
            .and_then(|c| oshirase_engine::clock::until(c.oldest, now))
            .map_or(0, |d| d.as_secs());
        let _ = writeln!(
            out,
            "oshirase_application_queue_age_seconds{{status=\"{}\"}} {age}",
            status.name()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oshirase_store::{ApplicationCount, ApplicationStatus};

    #[test]
    fn every_status_is_counted_and_only_open_ones_age() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T09:00:00+09:00").unwrap();
        let an_hour_ago = oshirase_engine::clock::before(now, std::time::Duration::from_secs(3600));
        let text = render_metrics(
            &[
                ApplicationCount {
                    status: ApplicationStatus::Submitted,
                    count: 3,
                    oldest: an_hour_ago,
                },
                ApplicationCount {
                    status: ApplicationStatus::Completed,
                    count: 7,
                    oldest: an_hour_ago,
                },
            ],
            now,
        );
        assert!(
            text.contains("oshirase_applications{status=\"submitted\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("oshirase_applications{status=\"completed\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("oshirase_applications{status=\"in_review\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("oshirase_application_queue_age_seconds{status=\"submitted\"} 3600"),
            "{text}"
        );
        assert!(
            !text.contains("queue_age_seconds{status=\"completed\"}"),
            "a final status has no queue: {text}"
        );
    }
}
