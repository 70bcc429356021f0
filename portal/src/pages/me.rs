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
}

pub(crate) async fn me(
    State(s): State<PortalState>,
    reader: PageReader,
    Query(q): Query<MeQuery>,
) -> Response {
    let store = &s.portal().store;
    let resident = match store.resident(reader.id.as_str()).await {
        Ok(r) => r,
        Err(e) => return error_page(&s, e.into()),
    };
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
    let who = reader.id.as_str();
    match store
        .request_correction(who, who, &item, &text, s.now())
        .await
    {
        Ok(()) => Redirect::to("/me?requested=1").into_response(),
        Err(e) => error_page(&s, e.into()),
    }
}
