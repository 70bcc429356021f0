//! 自己情報: the resident's own register record as the municipality holds it, item by item
//! in the data-item dictionary's words, with a way to ask for a correction (recorded for the
//! counter's staff; nothing on the register changes). docs/sharing.md.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::{error_page, forbidden, message, render, PageReader};
use crate::service::ServiceError;
use crate::PortalState;

/// The longest correction request, in characters.
const MAX_REQUEST: usize = 1000;

/// An item's value as the page writes it.
fn written(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("、"),
        ),
        Value::Object(o) => Some(
            ["postal_code", "text", "kind", "reason"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Value::Bool(b) => Some((if *b { "あり" } else { "なし" }).to_owned()),
        other => Some(other.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct MeQuery {
    requested: Option<String>,
    /// Someone the reader may act for on their record (a guardian's child, an all-scope
    /// proxy's principal).
    #[serde(rename = "for")]
    for_id: Option<String>,
}

/// Whose record: the reader's, or that of a person they may act for; else `None`.
async fn whose(
    s: &PortalState,
    reader: &PageReader,
    for_id: Option<&str>,
) -> Result<Option<oshirase_engine::ids::ResidentId>, ServiceError> {
    let Some(id) = for_id.filter(|f| !f.is_empty()) else {
        return Ok(Some(reader.id.id().clone()));
    };
    let Ok(whom) = oshirase_engine::ids::ResidentId::parse(id) else {
        return Ok(None);
    };
    if &whom == reader.id.id() || s.portal().acts_for(&reader.id, &whom).await? {
        Ok(Some(whom))
    } else {
        Ok(None)
    }
}

pub(crate) async fn me(
    State(s): State<PortalState>,
    reader: PageReader,
    Query(q): Query<MeQuery>,
) -> Response {
    let store = &s.portal().store;
    let whom = match whose(&s, &reader, q.for_id.as_deref()).await {
        Ok(Some(w)) => w,
        Ok(None) => return error_page(&s, ServiceError::NotFound),
        Err(e) => return error_page(&s, e),
    };
    let own = &whom == reader.id.id();
    let resident = match store.resident(whom.as_str()).await {
        Ok(r) => r,
        Err(e) => return error_page(&s, e.into()),
    };
    // The notices the reader receives about this person, as the inbox lists them.
    let notices: Vec<minijinja::Value> = match s.portal().notices(&reader.id).await {
        Ok(list) => list
            .into_iter()
            .filter(|n| n.subject == whom)
            .map(|n| context! { title => n.title, url => n.url, created => n.created })
            .collect(),
        Err(e) => return error_page(&s, e),
    };
    let others = match s.portal().acting_for(&reader.id).await {
        Ok(o) => o,
        Err(e) => return error_page(&s, e),
    };
    let switch: Vec<minijinja::Value> = others
        .iter()
        .map(|p| context! { id => p.for_id.as_str(), about => p.about.clone() })
        .collect();
    let audit = oshirase_store::AuditEntry::new(
        s.now(),
        reader.id.as_str(),
        "record.read",
        &format!("resident/{}", whom.as_str()),
        None,
    );
    if let Err(e) = store.append_audit(&[audit]).await {
        return error_page(&s, e.into());
    }
    let Some(dict) = store.exchange().map(|x| &x.dictionary) else {
        return error_page(&s, ServiceError::Internal("no data-item dictionary".into()));
    };
    let items: Vec<minijinja::Value> = match &resident {
        Some(r) => dict
            .items()
            .iter()
            .map(|i| {
                context! {
                    code => i.code.as_str(),
                    name => i.name.clone(),
                    value => written(&dict.value(i, r)),
                }
            })
            .collect(),
        None => Vec::new(),
    };
    render(
        &s,
        StatusCode::OK,
        "me.html",
        context! {
            reader => true,
            csrf => reader.csrf(),
            on_register => resident.is_some(),
            items,
            notices,
            own,
            for_id => (!own).then(|| whom.as_str().to_owned()),
            switch,
            requested => q.requested.is_some(),
            max => MAX_REQUEST,
        },
    )
}

pub(crate) async fn request_correction(
    State(s): State<PortalState>,
    reader: PageReader,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let (item, text) = (get("item"), get("message"));
    let store = &s.portal().store;
    let known = store
        .exchange()
        .is_some_and(|x| x.dictionary.get(&item).is_some());
    let problem = if !known {
        Some("訂正を求める項目を選んでください。".to_owned())
    } else if text.is_empty() {
        Some("正しい内容を入力してください。".to_owned())
    } else if text.chars().count() > MAX_REQUEST {
        Some(format!("{MAX_REQUEST}文字以内で入力してください。"))
    } else {
        None
    };
    if let Some(p) = problem {
        return message(
            &s,
            StatusCode::UNPROCESSABLE_ENTITY,
            "入力内容を確認してください",
            &p,
        );
    }
    let whom = match whose(&s, &reader, Some(&get("for"))).await {
        Ok(Some(w)) => w,
        Ok(None) => return error_page(&s, ServiceError::NotFound),
        Err(e) => return error_page(&s, e),
    };
    match store
        .request_correction(whom.as_str(), reader.id.as_str(), &item, &text, s.now())
        .await
    {
        Ok(()) if &whom == reader.id.id() => Redirect::to("/me?requested=1").into_response(),
        Ok(()) => Redirect::to(&format!("/me?for={}&requested=1", whom.as_str())).into_response(),
        Err(e) => error_page(&s, e.into()),
    }
}
