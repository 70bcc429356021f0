//! The JSON API under `/api`: bearer tokens, the service layer, JSON errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};

use oshirase_engine::eval::DecisionKey;

use crate::auth::{Reader, TokenError};
use crate::service::{PreferencesInput, ServiceError, SubscriptionInput};
use crate::{CheckedToken, PortalState};

/// The reader named by a valid bearer token.
pub(crate) struct ApiReader(pub(crate) Reader);

/// A decision key from a path, parsed before anything is read or audited: a malformed key is
/// missing, the same answer as a key that is not the reader's.
pub(crate) fn notice_key(raw: &str) -> Result<DecisionKey, ServiceError> {
    DecisionKey::parse(raw).map_err(|_| ServiceError::NotFound)
}

/// The `for` of a query string (the first, percent-decoded, never failing): whom a reader
/// asks to read for. Parsed as a resident id by the service.
pub(crate) fn for_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "for")
        .map(|(_, v)| v.into_owned())
}

/// 401 with the RFC 6750 challenge.
pub(crate) struct Unauthorized(TokenError);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_token", "message": self.0.to_string() })),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        r
    }
}

impl FromRequestParts<PortalState> for ApiReader {
    type Rejection = Unauthorized;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        // The middleware verified the token, if the request has one.
        match parts.extensions.get::<CheckedToken>() {
            Some(CheckedToken(checked)) => checked
                .clone()
                .map(|v| ApiReader(v.reader))
                .map_err(Unauthorized),
            None => Err(Unauthorized(TokenError::Missing)),
        }
    }
}

pub(crate) struct ApiError(ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self(ServiceError::Unprocessable {
            field: None,
            message: e.body_text(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0 {
            // One body for missing and not allowed alike.
            ServiceError::NotFound => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" }))).into_response()
            }
            ServiceError::Conflict { state } => (
                StatusCode::CONFLICT,
                Json(json!({ "error": "conflict", "message": format!("the draft is already {state}"), "state": state })),
            )
                .into_response(),
            ServiceError::Taken(message) => (
                StatusCode::CONFLICT,
                Json(json!({ "error": "conflict", "message": message })),
            )
                .into_response(),
            ServiceError::Unprocessable { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "unprocessable", "field": field, "message": message })),
            )
                .into_response(),
            ServiceError::Internal(detail) => {
                tracing::error!(error = %detail, "portal request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({ "error": "internal" })),
                )
                    .into_response()
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

pub(crate) async fn notices(State(s): State<PortalState>, ApiReader(r): ApiReader) -> ApiResult {
    ok(json!({ "notices": s.portal().notices(&r).await? }))
}

pub(crate) async fn notice(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    Path(key): Path<String>,
) -> ApiResult {
    let key = notice_key(&key)?;
    ok(s.portal().notice(&r, &key).await?)
}

pub(crate) async fn mark_read(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    Path(key): Path<String>,
) -> ApiResult {
    let key = notice_key(&key)?;
    s.portal().mark_read(&r, &key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn draft(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    Path(key): Path<String>,
) -> ApiResult {
    let key = notice_key(&key)?;
    ok(s.portal().draft(&r, &key).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitInput {
    #[serde(default)]
    corrections: IndexMap<String, Value>,
}

pub(crate) async fn submit(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    Path(key): Path<String>,
    body: Result<Json<SubmitInput>, JsonRejection>,
) -> ApiResult {
    let key = notice_key(&key)?;
    let Json(input) = body?;
    ok(s.portal().submit(&r, &key, input.corrections).await?)
}

pub(crate) async fn decline(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    Path(key): Path<String>,
) -> ApiResult {
    let key = notice_key(&key)?;
    ok(s.portal().decline(&r, &key).await?)
}

/// The record of what was provided about the reader, or with `?for=` about someone they may
/// read it for (audited).
pub(crate) async fn records(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let whom = for_param(query.as_deref());
    ok(s.portal().records(&r, whom.as_deref()).await?)
}

pub(crate) async fn subscriptions(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
) -> ApiResult {
    ok(json!({ "subscriptions": s.portal().subscriptions(&r).await? }))
}

pub(crate) async fn subscribe(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    body: Result<Json<SubscriptionInput>, JsonRejection>,
) -> ApiResult {
    let Json(input) = body?;
    let view = s.portal().subscribe(&r, input).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnsubscribeInput {
    endpoint: String,
}

pub(crate) async fn unsubscribe(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    body: Result<Json<UnsubscribeInput>, JsonRejection>,
) -> ApiResult {
    let Json(input) = body?;
    s.portal().unsubscribe(&r, &input.endpoint).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn preferences(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
) -> ApiResult {
    ok(s.portal().preferences(&r).await?)
}

pub(crate) async fn set_preferences(
    State(s): State<PortalState>,
    ApiReader(r): ApiReader,
    body: Result<Json<PreferencesInput>, JsonRejection>,
) -> ApiResult {
    let Json(input) = body?;
    ok(s.portal().set_preferences(&r, input).await?)
}
