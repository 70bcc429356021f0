//! The agencies' API (axum), on its own listener: agencies reach it over the government
//! network, never through the residents' portal. Every call but the JWKS and the token
//! endpoint needs an access token from `POST /agency/v1/token`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use oshirase_engine::clock::Clock;
use oshirase_engine::items::ItemCode;
use oshirase_engine::purposes::{Exchange, Following, ProtectedAddress, Purpose};
use oshirase_store::{Agency, InterestSpec, Provision, Store, StoreError};

use crate::auth::{self, OAuthError};
use crate::cloudevent;
use crate::keys::Keys;
use crate::metrics::{Call, ExchangeMetrics};

/// Bodies larger than this are refused before they are read.
pub const MAX_BODY: usize = 16 * 1024;

/// The media type of the signed pull (RFC 7519 §10.3.1).
pub const JWT_MEDIA_TYPE: &str = "application/jwt";

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL agencies reach this API at (no trailing slash): the issuer of our tokens and
    /// the audience of their assertions (`{public_url}/agency/v1/token`).
    pub public_url: String,
    /// The longest interest an agency may register, in days.
    pub max_interest_days: u32,
    /// Access tokens live this long.
    pub token_ttl_seconds: i64,
    /// The portal's consent page (`{portal}/oauth/authorize`), named in the authorization
    /// server's metadata; `None` without a portal.
    pub authorization_endpoint: Option<String>,
}

impl ApiConfig {
    pub fn token_url(&self) -> String {
        format!("{}/agency/v1/token", self.public_url)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub exchange: Arc<Exchange>,
    pub keys: Arc<Keys>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<ExchangeMetrics>,
    pub config: ApiConfig,
}

/// An RFC 9457 problem: what was wrong, and for bad input every field at once.
#[derive(Debug, Serialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FieldError {
    field: String,
    message: String,
}

pub(crate) fn problem(
    status: StatusCode,
    detail: impl Into<String>,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.into(),
        errors,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_string(&body).expect("a problem serializes"),
    )
        .into_response()
}

pub(crate) fn store_error(e: StoreError) -> Response {
    tracing::error!(error = %e, "agency API: store error");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the service cannot read its database now; try again later",
        Vec::new(),
    )
}

/// The one answer for a person the agency may not read, whatever the reason: it cannot tell
/// a person it has no interest in, an item it may not have, or a pseudonym of nobody apart.
fn no_such_person() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "no such person for this purpose",
        Vec::new(),
    )
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/agency/v1/jwks.json", get(jwks))
        .route("/agency/v1/token", post(token))
        .route(
            "/.well-known/oauth-authorization-server",
            get(crate::share::metadata),
        )
        .route("/share/v1/token", post(crate::share::token))
        .route("/share/v1/data", get(crate::share::data))
        .route("/share/v1/status", get(crate::share::status_list))
        .route("/share/v1/grants", get(crate::share::grants))
        .route("/agency/v1/dictionary", get(dictionary))
        .route(
            "/agency/v1/interests",
            post(add_interest)
                .get(list_interests)
                .delete(remove_interest),
        )
        .route("/agency/v1/events", get(events))
        .route("/agency/v1/status", get(status))
        .route("/agency/v1/persons/{pseudonym}", get(person))
        .route("/metrics", get(metrics))
        .merge(crate::office::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "agency API listening");
    }
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
    })
    .await
}

async fn jwks(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/jwk-set+json")],
        s.keys.jwks().to_string(),
    )
        .into_response()
}

fn oauth_error(e: OAuthError) -> Response {
    let status = if e.error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(e)).into_response()
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    // Accepted and ignored: an agency's reach is its registered purposes, not a scope it asks.
    #[allow(dead_code)]
    scope: Option<String>,
}

async fn token(State(s): State<ApiState>, Form(f): Form<TokenForm>) -> Response {
    match issue_token(&s, f).await {
        Ok(resp) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Json(resp),
        )
            .into_response(),
        Err((agency, e)) => {
            if let Some(a) = agency {
                s.metrics.observe_call(&a, Call::Token { issued: false });
            }
            tracing::warn!(error = e.error, reason = %e.error_description, "agency token refused");
            oauth_error(e)
        }
    }
}

async fn issue_token(s: &ApiState, f: TokenForm) -> Result<Value, (Option<String>, OAuthError)> {
    let plain = |e| (None, e);
    if f.grant_type.as_deref() != Some("client_credentials") {
        return Err(plain(OAuthError {
            error: "unsupported_grant_type",
            error_description: "only client_credentials".into(),
        }));
    }
    if f.client_assertion_type.as_deref() != Some(auth::ASSERTION_TYPE) {
        return Err(plain(OAuthError::invalid_client(format!(
            "authenticate with private_key_jwt: client_assertion_type must be {}",
            auth::ASSERTION_TYPE
        ))));
    }
    let assertion = f
        .client_assertion
        .ok_or_else(|| plain(OAuthError::invalid_request("client_assertion is missing")))?;
    let client = auth::claimed_client(&assertion).map_err(plain)?;
    if f.client_id.as_deref().is_some_and(|c| c != client) {
        return Err(plain(OAuthError::invalid_client(
            "client_id differs from the assertion's `iss`",
        )));
    }
    let agency = s
        .store
        .agency(&client)
        .await
        .map_err(|_| {
            plain(OAuthError::invalid_request(
                "the service cannot read its database now",
            ))
        })?
        .filter(|a| a.enabled)
        .ok_or_else(|| plain(OAuthError::invalid_client("unknown client")))?;
    let now = s.clock.now();
    let checked = auth::check_assertion(
        &assertion,
        &agency.spec.id,
        &agency.spec.client_jwks,
        &s.config.token_url(),
        now,
    )
    .map_err(|e| (Some(client.clone()), e))?;
    let expires = chrono::DateTime::from_timestamp(checked.expires, 0)
        .map(|t| t.fixed_offset())
        .unwrap_or(now);
    let fresh = s
        .store
        .spend_assertion(&checked.client_id, &checked.jti, expires, now)
        .await
        .map_err(|_| {
            plain(OAuthError::invalid_request(
                "the service cannot read its database now",
            ))
        })?;
    if !fresh {
        return Err((
            Some(client),
            OAuthError::invalid_client("this client assertion was used before (jti)"),
        ));
    }
    s.metrics
        .observe_call(&client, Call::Token { issued: true });
    let token = auth::issue_access_token(
        &s.keys,
        &s.config.public_url,
        &client,
        s.config.token_ttl_seconds,
        now,
    );
    Ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": s.config.token_ttl_seconds,
    }))
}

/// The calling agency, from its bearer token.
pub(crate) async fn caller(s: &ApiState, headers: &HeaderMap) -> Result<Agency, Response> {
    let auth_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = auth::check_bearer(&s.keys, &s.config.public_url, auth_header, s.clock.now())
        .map_err(|e| {
            let mut r = problem(StatusCode::UNAUTHORIZED, e.to_string(), Vec::new());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            r
        })?;
    match s.store.agency(&claims.sub).await {
        Ok(Some(a)) if a.enabled => Ok(a),
        Ok(_) => Err(problem(
            StatusCode::UNAUTHORIZED,
            "the client is no longer registered",
            Vec::new(),
        )),
        Err(e) => Err(store_error(e)),
    }
}

/// The calling agency, from its bearer token: what every call but the JWKS and the token
/// endpoint extracts first (a refusal is the 401 `caller` gives).
pub(crate) struct Caller(pub Agency);

impl axum::extract::FromRequestParts<ApiState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &ApiState,
    ) -> Result<Self, Response> {
        caller(s, &parts.headers).await.map(Caller)
    }
}

/// The purpose, if the agency holds it and the purpose table knows it.
fn held<'a>(s: &'a ApiState, agency: &Agency, purpose: &str) -> Option<&'a Purpose> {
    if !agency.spec.purposes.iter().any(|p| p == purpose) {
        return None;
    }
    s.exchange.purpose(purpose)
}

async fn dictionary(State(s): State<ApiState>, Caller(agency): Caller) -> Response {
    let v = agency.spec.dictionary_version;
    let items: Vec<Value> = s
        .exchange
        .dictionary
        .known_at(v)
        .map(|i| {
            json!({
                "code": i.code.as_str(), "name": i.name, "standard_name": i.standard_name,
                "gif_term": i.gif_term, "kind": i.kind, "since": i.since,
            })
        })
        .collect();
    let purposes: Vec<Value> = agency
        .spec
        .purposes
        .iter()
        .filter_map(|p| s.exchange.purpose(p))
        .map(|p| {
            json!({
                "id": p.id.as_str(), "body": p.body, "duty": p.duty, "legal_basis": p.legal_basis,
                "items": s.exchange.permitted(p, v, None).iter().map(ItemCode::as_str).collect::<Vec<_>>(),
                "following": match p.following { Following::Persons => "persons", Following::Municipality => "municipality" },
            })
        })
        .collect();
    Json(json!({ "version": v, "latest_version": s.exchange.dictionary.version(), "items": items, "purposes": purposes }))
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InterestDoc {
    purpose: String,
    /// The agency's pseudonym of the person; absent with `scope: municipality`.
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    items: Option<Vec<String>>,
    valid_to: NaiveDate,
}

pub(crate) fn field(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Reads a JSON body with every error named by its field.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Box::new(problem(
            StatusCode::BAD_REQUEST,
            "the body is not a valid request",
            vec![field(
                if path == "." { "" } else { &path },
                e.inner().to_string(),
            )],
        ))
    })
}

fn interest_json(i: &oshirase_store::Interest, subject: Option<String>) -> Value {
    json!({
        "purpose": i.spec.purpose_id,
        "subject": subject,
        "scope": if i.spec.resident.is_none() { "municipality" } else { "person" },
        "items": i.spec.items.as_ref().map(|s| s.iter().map(ItemCode::as_str).collect::<Vec<_>>()),
        "valid_to": i.spec.valid_to,
        "updated_at": i.updated_at.to_rfc3339(),
    })
}

async fn add_interest(
    State(s): State<ApiState>,
    Caller(agency): Caller,
    body: axum::body::Bytes,
) -> Response {
    let doc: InterestDoc = match read_json(&body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let now = s.clock.now();
    let today = now
        .with_timezone(&oshirase_engine::clock::jst())
        .date_naive();
    let mut errors = Vec::new();
    let purpose = held(&s, &agency, &doc.purpose);
    if purpose.is_none() {
        errors.push(field(
            "purpose",
            format!(
                "not a purpose this agency holds (it holds: {})",
                agency.spec.purposes.join(", ")
            ),
        ));
    }
    let municipality = match (doc.scope.as_deref(), &doc.subject) {
        (Some("municipality"), None) => true,
        (None | Some("person"), Some(_)) => false,
        (Some("municipality"), Some(_)) => {
            errors.push(field(
                "subject",
                "a municipality-wide interest names no subject",
            ));
            true
        }
        (None | Some("person"), None) => {
            errors.push(field(
                "subject",
                "the person's pseudonym is missing (or give `scope: municipality`)",
            ));
            false
        }
        (Some(other), _) => {
            errors.push(field(
                "scope",
                format!(
                    "{} is neither \"person\" nor \"municipality\"",
                    oshirase_engine::shown::quoted(other)
                ),
            ));
            false
        }
    };
    if let Some(p) = purpose {
        if municipality && p.following != Following::Municipality {
            errors.push(field(
                "scope",
                format!(
                    "purpose {} may follow only persons it registers, not the whole municipality",
                    p.id
                ),
            ));
        }
    }
    let mut items = None;
    if let Some(list) = &doc.items {
        let mut set = BTreeSet::new();
        let allowed = purpose.map(|p| {
            s.exchange
                .permitted(p, agency.spec.dictionary_version, None)
        });
        for (i, code) in list.iter().enumerate() {
            match ItemCode::parse(code) {
                Ok(c) if allowed.as_ref().is_some_and(|a| a.contains(&c)) => {
                    set.insert(c);
                }
                Ok(_) => errors.push(field(
                    &format!("items[{i}]"),
                    format!(
                        "{} is not an item this purpose may receive at dictionary version {}",
                        oshirase_engine::shown::quoted(code),
                        agency.spec.dictionary_version
                    ),
                )),
                Err(e) => errors.push(field(&format!("items[{i}]"), e)),
            }
        }
        if list.is_empty() {
            errors.push(field(
                "items",
                "an empty list; leave it out for every item the purpose allows",
            ));
        }
        items = Some(set);
    }
    if doc.valid_to < today {
        errors.push(field("valid_to", "is in the past"));
    }
    let longest = oshirase_engine::calendar::days_between(today, doc.valid_to);
    if longest > i64::from(s.config.max_interest_days) {
        errors.push(field(
            "valid_to",
            format!(
                "an interest may last at most {} days; renew it before it ends",
                s.config.max_interest_days
            ),
        ));
    }
    let mut resident = None;
    if let (false, Some(subject)) = (municipality, &doc.subject) {
        match s.store.resolve_pseudonym(&agency.spec.id, subject).await {
            Ok(Some(r)) => resident = Some(r),
            Ok(None) => errors.push(field("subject", "not a pseudonym issued to this agency")),
            Err(e) => return store_error(e),
        }
    }
    if !errors.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the interest was not registered",
            errors,
        );
    }
    let spec = InterestSpec {
        agency_id: agency.spec.id.clone(),
        purpose_id: doc.purpose.clone(),
        resident,
        items,
        valid_to: doc.valid_to,
    };
    if let Err(e) = s.store.register_interest(&spec, now).await {
        return store_error(e);
    }
    let stored = oshirase_store::Interest {
        spec,
        created_at: now,
        updated_at: now,
    };
    (
        StatusCode::CREATED,
        Json(interest_json(&stored, doc.subject)),
    )
        .into_response()
}

async fn list_interests(State(s): State<ApiState>, Caller(agency): Caller) -> Response {
    let interests = match s.store.interests(&agency.spec.id).await {
        Ok(i) => i,
        Err(e) => return store_error(e),
    };
    // Each person's pseudonym was issued when their interest was registered.
    let names = match s.store.pseudonyms(&agency.spec.id).await {
        Ok(Some(n)) => n,
        Ok(None) => return no_such_person(),
        Err(e) => return store_error(e),
    };
    let out: Vec<Value> = interests
        .iter()
        .map(|i| interest_json(i, i.spec.resident.as_ref().map(|r| names.of(r.as_str()))))
        .collect();
    Json(json!({ "interests": out })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveDoc {
    purpose: String,
    #[serde(default)]
    subject: Option<String>,
}

async fn remove_interest(
    State(s): State<ApiState>,
    Caller(agency): Caller,
    body: axum::body::Bytes,
) -> Response {
    let doc: RemoveDoc = match read_json(&body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let resident = match &doc.subject {
        Some(p) => match s.store.resolve_pseudonym(&agency.spec.id, p).await {
            Ok(Some(r)) => Some(r),
            Ok(None) => return problem(StatusCode::NOT_FOUND, "no such interest", Vec::new()),
            Err(e) => return store_error(e),
        },
        None => None,
    };
    match s
        .store
        .remove_interest(&agency.spec.id, &doc.purpose, resident.as_ref())
        .await
    {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(StatusCode::NOT_FOUND, "no such interest", Vec::new()),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    purpose: String,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<i64>,
}

async fn events(
    State(s): State<ApiState>,
    Caller(agency): Caller,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return problem(
            StatusCode::BAD_REQUEST,
            "give `purpose` and optionally `after` (a sequence number) and `limit` (1 to 1000)",
            Vec::new(),
        );
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) || q.after < 0 {
        return problem(
            StatusCode::BAD_REQUEST,
            "`after` must be 0 or more and `limit` 1 to 1000",
            Vec::new(),
        );
    }
    if held(&s, &agency, &q.purpose).is_none() {
        return problem(
            StatusCode::NOT_FOUND,
            "not a purpose this agency holds",
            Vec::new(),
        );
    }
    let streams = match s.store.streams(Some(&agency.spec.id)).await {
        Ok(st) => st,
        Err(e) => return store_error(e),
    };
    let last = streams
        .iter()
        .find(|st| st.purpose_id == q.purpose)
        .map_or(0, |st| st.last_seq);
    match s.store.first_kept_seq(&agency.spec.id, &q.purpose).await {
        // Archived events cannot be replayed: say so, rather than hand out a gap.
        Ok(Some(first)) if q.after + 1 < first => {
            return problem(
                StatusCode::GONE,
                format!(
                    "events up to {} are past their retention; read the persons you follow again",
                    first - 1
                ),
                Vec::new(),
            )
        }
        Ok(None) if q.after < last => {
            return problem(
                StatusCode::GONE,
                format!(
                "events up to {last} are past their retention; read the persons you follow again"
            ),
                Vec::new(),
            )
        }
        Ok(_) => {}
        Err(e) => return store_error(e),
    }
    let events = match s
        .store
        .agency_events_after(&agency.spec.id, &q.purpose, q.after, limit)
        .await
    {
        Ok(e) => e,
        Err(e) => return store_error(e),
    };
    // An agency without an endpoint is told by reading: what it read reached it.
    if let (None, Some(last_read)) = (&agency.spec.endpoint, events.last()) {
        if let Err(e) = s
            .store
            .settle_read(&agency.spec.id, &q.purpose, last_read.seq, s.clock.now())
            .await
        {
            return store_error(e);
        }
    }
    let body: Vec<Value> = events.iter().map(cloudevent::event).collect();
    Json(json!({ "events": body, "last_sequence": last })).into_response()
}

async fn status(State(s): State<ApiState>, Caller(agency): Caller) -> Response {
    let streams = match s.store.streams(Some(&agency.spec.id)).await {
        Ok(st) => st,
        Err(e) => return store_error(e),
    };
    let streams: Vec<Value> = streams
        .iter()
        .map(|st| {
            json!({
                "purpose": st.purpose_id,
                "last_sequence": st.last_seq,
                "delivered_sequence": st.delivered_seq,
                "pending": st.last_seq - st.delivered_seq,
                "dead_letters": st.dead,
                "attempts": st.attempts,
                "next_attempt_at": (st.last_seq > st.delivered_seq).then(|| st.next_attempt_at.to_rfc3339()),
                "last_error": st.last_error,
                "last_delivered_at": st.last_delivered_at.map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    Json(json!({
        "agency": agency.spec.id,
        "endpoint": agency.spec.endpoint,
        "endpoint_verified": agency.verified_at.is_some(),
        "dictionary_version": agency.spec.dictionary_version,
        "streams": streams,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct PersonQuery {
    purpose: String,
    #[serde(default)]
    items: Option<String>,
    #[serde(default)]
    as_of: Option<NaiveDate>,
}

/// The signed extract's claims.
#[derive(Debug, Serialize)]
struct Extract {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    jti: String,
    purpose: String,
    legal_basis: String,
    as_of: NaiveDate,
    dictionary_version: u32,
    items: BTreeMap<String, Value>,
    /// Items held back, with why (a support measure).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    withheld: BTreeMap<String, &'static str>,
    /// The address given is protected by a support measure (支援措置): keep it from anyone
    /// the agency would otherwise give it to.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    protected_address: bool,
}

async fn person(
    State(s): State<ApiState>,
    Caller(agency): Caller,
    Path(pseudonym): Path<String>,
    q: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return problem(
            StatusCode::BAD_REQUEST,
            "give `purpose`, and optionally `items` (comma-separated codes) and `as_of` (YYYY-MM-DD)",
            Vec::new(),
        );
    };
    let refuse = |why: &'static str| {
        tracing::info!(agency = %agency.spec.id, purpose = %q.purpose, why, "agency pull refused");
        s.metrics
            .observe_call(&agency.spec.id, Call::Pull { provided: false });
        no_such_person()
    };
    let Some(purpose) = held(&s, &agency, &q.purpose) else {
        return refuse("purpose not held");
    };
    let now = s.clock.now();
    let today = now
        .with_timezone(&oshirase_engine::clock::jst())
        .date_naive();
    let as_of = q.as_of.unwrap_or(today);
    if as_of > today {
        return problem(
            StatusCode::BAD_REQUEST,
            "`as_of` is in the future",
            Vec::new(),
        );
    }
    let resident = match s.store.resolve_pseudonym(&agency.spec.id, &pseudonym).await {
        Ok(Some(r)) => r,
        Ok(None) => return refuse("unknown pseudonym"),
        Err(e) => return store_error(e),
    };
    let interest = match s
        .store
        .interest_covering(
            &agency.spec.id,
            &q.purpose,
            &resident,
            purpose.following == Following::Municipality,
            today,
        )
        .await
    {
        Ok(Some(i)) => i,
        Ok(None) => return refuse("no interest"),
        Err(e) => return store_error(e),
    };
    let permitted = s.exchange.permitted(
        purpose,
        agency.spec.dictionary_version,
        interest.spec.items.as_ref(),
    );
    let wanted: BTreeSet<ItemCode> = match &q.items {
        None => permitted.clone(),
        Some(list) => {
            let mut set = BTreeSet::new();
            for code in list.split(',').filter(|c| !c.is_empty()) {
                match ItemCode::parse(code) {
                    Ok(c) if permitted.contains(&c) => {
                        set.insert(c);
                    }
                    _ => return refuse("item not permitted"),
                }
            }
            set
        }
    };
    let record = match s.store.resident_as_of(&resident, as_of).await {
        Ok(Some(r)) => r,
        Ok(None) => return refuse("not on the register then"),
        Err(e) => return store_error(e),
    };
    let names = match s.store.pseudonyms(&agency.spec.id).await {
        Ok(Some(n)) => n,
        Ok(None) => return refuse("unknown agency"),
        Err(e) => return store_error(e),
    };
    let dictionary = &s.exchange.dictionary;
    let mut items = BTreeMap::new();
    let mut withheld = BTreeMap::new();
    let mut protected_address = false;
    for code in &wanted {
        let Some(item) = dictionary.get(code.as_str()) else {
            continue;
        };
        if record.support_measure && dictionary.is_address(item) {
            match purpose.protected_address {
                ProtectedAddress::Withhold => {
                    withheld.insert(code.as_str().to_owned(), "support_measure");
                    continue;
                }
                ProtectedAddress::ProvideMarked => protected_address = true,
            }
        }
        let mut value = dictionary.value(item, &record);
        // Related persons are named by this agency's pseudonyms, never by register ids.
        if let Some(list) = value.as_array_mut() {
            if matches!(
                item.source,
                oshirase_engine::items::ItemSource::Guardians
                    | oshirase_engine::items::ItemSource::Proxies
            ) {
                for v in list.iter_mut() {
                    let Some(id) = v
                        .as_str()
                        .and_then(|i| oshirase_engine::ids::ResidentId::parse(i).ok())
                    else {
                        continue;
                    };
                    match s.store.issue_pseudonym(&agency.spec.id, &id, now).await {
                        Ok(Some(p)) => *v = Value::String(p),
                        Ok(None) => *v = Value::Null,
                        Err(e) => return store_error(e),
                    }
                }
            }
        }
        if matches!(item.source, oshirase_engine::items::ItemSource::Household) {
            if let Some(h) = value.as_str() {
                value = Value::String(names.of(&format!("household:{h}")));
            }
        }
        items.insert(code.as_str().to_owned(), value);
    }
    let mut jti = [0u8; 16];
    let _ = getrandom::fill(&mut jti);
    let extract = Extract {
        iss: s.config.public_url.clone(),
        aud: agency.spec.id.clone(),
        sub: pseudonym,
        iat: now.timestamp(),
        jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        purpose: purpose.id.as_str().to_owned(),
        legal_basis: purpose.legal_basis.clone(),
        as_of,
        dictionary_version: agency.spec.dictionary_version,
        items,
        withheld,
        protected_address,
    };
    let jws = s.keys.current.sign("oshirase-extract+jwt", &extract);
    // The resident's record of what was provided, written before the data leaves.
    let log = |items: Vec<ItemCode>, outcome: &str| Provision {
        resident_id: resident.as_str().to_owned(),
        at: now,
        accessor_kind: "agency".into(),
        accessor_id: agency.spec.id.clone(),
        accessor_name: agency.spec.name.clone(),
        basis: purpose.id.as_str().to_owned(),
        action: "pull".into(),
        items,
        outcome: outcome.into(),
    };
    let provided: Vec<ItemCode> = extract
        .items
        .keys()
        .filter_map(|c| ItemCode::parse(c).ok())
        .collect();
    if let Err(e) = s.store.log_provision(&log(provided, "provided")).await {
        return store_error(e);
    }
    if !extract.withheld.is_empty() {
        let held_back = extract
            .withheld
            .keys()
            .filter_map(|c| ItemCode::parse(c).ok())
            .collect();
        if let Err(e) = s.store.log_provision(&log(held_back, "withheld")).await {
            return store_error(e);
        }
    }
    s.metrics
        .observe_call(&agency.spec.id, Call::Pull { provided: true });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, JWT_MEDIA_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jws,
    )
        .into_response()
}

/// Every agency's backlog is the operator's, not another agency's: answered to clients on
/// this machine only (a scraper beside the service).
async fn metrics(State(s): State<ApiState>, req: axum::extract::Request) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    if !peer.is_some_and(|axum::extract::ConnectInfo(a)| a.ip().is_loopback()) {
        return problem(
            StatusCode::FORBIDDEN,
            "metrics are for the operator: scrape them from the service's machine",
            Vec::new(),
        );
    }
    let (streams, applications) = match (
        s.store.streams(None).await,
        s.store.application_counts().await,
    ) {
        (Ok(st), Ok(a)) => (st, a),
        (Err(e), _) | (_, Err(e)) => return store_error(e),
    };
    let now = s.clock.now();
    let mut text = s.metrics.render(&streams, now);
    text.push_str(&crate::office::render_metrics(&applications, now));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
