//! The resident portal: the authenticated JSON API and the server-rendered pages, on one
//! axum server over the store.
//!
//! A reader (resident, guardian or proxy) is named by the `sub` of a bearer JWT from the
//! portal's identity provider. They see exactly the decisions with an outbox row
//! `(key, reader, 'portal')`, re-checked live against the register; a notice that is not
//! theirs answers exactly like a missing one. API and pages share one service layer.

mod api;
mod audit;
mod auth;
mod config;
mod console;
mod limit;
mod metrics;
mod openapi;
mod pages;
mod push;
mod service;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset};
use oshirase_engine::clock::Clock;
use oshirase_service::metrics::{DeliveryMetrics, WorkerState};
use oshirase_store::Store;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::{mint_token, Reader, TokenError, Verified};
pub use config::{ConfigError, JwtConfig, JwtKey, PortalConfig, RateLimit, Secret, SessionConfig};
pub use console::{
    console_router, mint_staff_token, serve_console, ConsoleConfig, ConsoleState, StaffRole,
};
pub use service::{
    DraftView, NoticeDetail, NoticeSummary, PreferencesInput, PreferencesView, ProvidedItem,
    ProvisionView, RecordsPerson, RecordsView, SubscriptionView, NOT_FOUND_FLOOR,
};

/// Everything a request needs, shared.
#[derive(Clone)]
pub struct PortalState(Arc<Inner>);

struct Inner {
    portal: service::Portal,
    verifier: auth::Verifier,
    limiter: limit::Limiter,
    metrics: metrics::HttpMetrics,
    /// The delivery workers' counters, rendered beside the portal's own.
    delivery: Arc<DeliveryMetrics>,
    templates: minijinja::Environment<'static>,
    sessions: session::Sessions,
}

impl PortalState {
    /// Checks the configuration and starts the audit writer (call inside a Tokio runtime).
    pub fn new(
        store: Store,
        config: PortalConfig,
        clock: Arc<dyn Clock>,
        delivery: Arc<DeliveryMetrics>,
    ) -> Result<Self, ConfigError> {
        config.check()?;
        let verifier =
            auth::Verifier::new(&config.jwt).map_err(|e| ConfigError(vec![e.to_string()]))?;
        Ok(Self(Arc::new(Inner {
            limiter: limit::Limiter::new(config.rate_limit),
            sessions: session::Sessions::new(store.clone(), config.session),
            portal: service::Portal::new(store, clock, config),
            verifier,
            metrics: metrics::HttpMetrics::default(),
            delivery,
            templates: pages::templates(),
        })))
    }

    fn portal(&self) -> &service::Portal {
        &self.0.portal
    }

    fn config(&self) -> &PortalConfig {
        &self.0.portal.config
    }

    fn now(&self) -> DateTime<FixedOffset> {
        self.0.portal.clock.now()
    }

    fn templates(&self) -> &minijinja::Environment<'static> {
        &self.0.templates
    }

    fn sessions(&self) -> &session::Sessions {
        &self.0.sessions
    }

    /// Whether the portal is served over TLS (cookies `Secure`, HSTS).
    fn secure(&self) -> bool {
        self.config().public_url.starts_with("https:")
    }

    /// Verifies a token against the configuration and the injected clock.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        self.0.verifier.verify(token, self.now())
    }
}

/// What the bearer token of a request verified to: checked once, by the middleware, for
/// the rate limit and the handler both.
#[derive(Clone)]
pub(crate) struct CheckedToken(pub(crate) Result<Verified, TokenError>);

/// Route list entries: method, path, handler. The router and `route_table` both come from
/// here, so the table is what the router serves.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr,)*) => {
        fn routes() -> Vec<(&'static str, &'static str, MethodRouter<PortalState>)> {
            vec![$((
                stringify!($method),
                $path,
                axum::routing::on(axum::routing::MethodFilter::$method, $handler),
            ),)*]
        }
    };
}

routes! {
    GET "/api/notices" => api::notices,
    GET "/api/notices/{key}" => api::notice,
    POST "/api/notices/{key}/read" => api::mark_read,
    GET "/api/drafts/{key}" => api::draft,
    POST "/api/drafts/{key}/submit" => api::submit,
    POST "/api/drafts/{key}/decline" => api::decline,
    GET "/api/push-subscriptions" => api::subscriptions,
    POST "/api/push-subscriptions" => api::subscribe,
    DELETE "/api/push-subscriptions" => api::unsubscribe,
    GET "/api/records" => api::records,
    GET "/api/preferences" => api::preferences,
    PUT "/api/preferences" => api::set_preferences,
    GET "/openapi.json" => openapi_json,
    GET "/health" => health,
    GET "/metrics" => metrics_text,
    GET "/assets/portal.css" => pages::stylesheet,
    GET "/assets/login.js" => pages::login_script,
    GET "/assets/push.js" => pages::webpush::script,
    GET "/sw.js" => pages::webpush::service_worker,
    GET "/" => pages::home,
    GET "/login" => pages::login,
    POST "/login" => pages::login_post,
    POST "/logout" => pages::logout,
    GET "/inbox" => pages::inbox,
    GET "/notices/{*key}" => pages::notice,
    GET "/drafts/{*key}" => pages::draft,
    POST "/drafts/{*key}" => pages::draft_post,
    GET "/records" => pages::records::records,
    GET "/me" => pages::me::me,
    POST "/me/corrections" => pages::me::request_correction,
    GET "/oauth/authorize" => pages::sharing::authorize,
    POST "/oauth/authorize" => pages::sharing::approve,
    GET "/sharing" => pages::sharing::dashboard,
    POST "/sharing/{id}/revoke" => pages::sharing::revoke,
    GET "/preferences" => pages::preferences,
    POST "/preferences" => pages::preferences_post,
    POST "/preferences/push" => pages::webpush::subscribe,
    POST "/preferences/push/unsubscribe" => pages::webpush::unsubscribe,
}

/// Every (method, path) the router serves, paths in axum's syntax (`{*key}` for the page
/// routes whose key keeps its slashes).
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    openapi::spec()
}

/// The portal's router: API, pages, operations endpoints, with CORS, per-reader rate limits
/// and request metrics.
pub fn router(state: PortalState) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    let origins: Vec<HeaderValue> = state
        .config()
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    r.fallback(no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_and_limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// No script or style but the site's own, no framing, no referrer, nothing kept by a browser
/// or a proxy (every page and API answer may hold personal data; the stylesheet says
/// otherwise itself), and TLS only once the portal is served over it.
async fn security_headers(State(state): State<PortalState>, req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    security_headers_on(r.headers_mut(), state.secure());
    r
}

/// The Content-Security-Policy of every page, up to where its forms may go.
const CSP_BUT_FORMS: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action";

/// The policy of a page whose forms (and the redirects that answer them) may also go to
/// `origin`: the consent page, answered with a redirect to the party.
pub(crate) fn csp_with_form_action(origin: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{CSP_BUT_FORMS} 'self' {origin}")).ok()
}

/// The headers of `security_headers`, for the portal and the staff console alike. A page
/// that set its own policy keeps it.
pub(crate) fn security_headers_on(h: &mut axum::http::HeaderMap, secure: bool) {
    // Every response: built once, not formatted per request.
    static DEFAULT_CSP: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| {
        HeaderValue::from_str(&format!("{CSP_BUT_FORMS} 'self'"))
            .expect("a fixed policy is a valid header value")
    });
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert_with(|| DEFAULT_CSP.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

async fn no_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "message": "no such route" })),
    )
        .into_response()
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::spec())
}

/// The database answers and every delivery worker runs and makes progress: 200; else 503.
/// The body names each worker's state (no error text: that is in the log).
async fn health(State(s): State<PortalState>) -> Response {
    let database = s.portal().store.ping().await;
    if let Err(e) = &database {
        tracing::warn!(error = %e, "health check: database unreachable");
    }
    let workers = s.0.delivery.workers();
    let healthy = database.is_ok() && workers.iter().all(|w| w.state.is_healthy());
    let workers: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            let mut v = json!({ "name": w.name, "channel": w.channel, "state": w.state.name() });
            match &w.state {
                WorkerState::Failing { failures } => v["failures"] = json!(failures),
                WorkerState::Stuck { since } => v["idle_seconds"] = json!(since.as_secs()),
                WorkerState::Stopped { reason } => v["reason"] = json!(reason),
                WorkerState::Running => {}
            }
            v
        })
        .collect();
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "database": if database.is_ok() { "ok" } else { "unreachable" },
        "workers": workers,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Whether a request may read `/metrics`: with a configured token, only a bearer of that
/// token (compared by digest, so timing does not tell how much of it matched); without
/// one, only a client on this machine.
fn may_scrape(s: &PortalState, req: &Request) -> bool {
    match &s.config().metrics_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            Sha256::digest(given.as_bytes()) == Sha256::digest(token.expose().as_bytes())
        }
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none_or(|ConnectInfo(addr)| addr.ip().is_loopback()),
    }
}

async fn metrics_text(State(s): State<PortalState>, req: Request) -> Response {
    if !may_scrape(&s, &req) {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_token", "message": "metrics need the metrics token" })),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return r;
    }
    let body = format!("{}{}", s.0.metrics.render(), s.0.delivery.render());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The bearer token of a request's `Authorization` header.
fn bearer_token(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
}

/// The bucket a request draws from: the verified reader's (whatever token or session
/// carries them, however its signature is encoded), else the client's address, so that
/// junk tokens and fresh logins do not each get a new bucket.
fn rate_key(req: &Request) -> [u8; 32] {
    let by_token = req
        .extensions()
        .get::<CheckedToken>()
        .and_then(|c| c.0.as_ref().ok())
        .map(|v| &v.reader);
    let by_session = req
        .extensions()
        .get::<session::SessionCheck>()
        .and_then(|c| c.0.as_ref().ok())
        .map(|s| &s.who);
    let who = match by_token.or(by_session) {
        Some(reader) => format!("reader {}", reader.as_str()),
        None => match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => format!("client {}", addr.ip()),
            None => "client unknown".to_owned(),
        },
    };
    Sha256::digest(who.as_bytes()).into()
}

/// Who is asking, once per request (a bearer token's signature, a session cookie's row),
/// then the rate limit on that answer; a session rotated here gets its new cookie.
async fn authenticate_and_limit(
    State(s): State<PortalState>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(token) = bearer_token(&req) {
        let checked = CheckedToken(s.verify(token));
        req.extensions_mut().insert(checked);
    }
    if let Some(cookie) = session::cookie::<Reader>(req.headers()).map(str::to_owned) {
        let check = s.sessions().check(&cookie, s.now()).await;
        req.extensions_mut().insert(check);
    }
    if let Err(wait) = s.0.limiter.take(rate_key(&req)) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": "rate_limited", "message": format!("too many requests; retry in {secs} s") })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let rotated = req
        .extensions()
        .get::<session::SessionCheck>()
        .and_then(|c| c.0.as_ref().ok())
        .and_then(|s| s.rotated.clone());
    let mut r = next.run(req).await;
    // A response that sets the cookie itself (a logout, a login) knows better.
    if let Some(id) = rotated {
        if !r.headers().contains_key(header::SET_COOKIE) {
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie::<Reader>(Some(&id), s.secure()),
            );
        }
    }
    r
}

async fn record_metrics(State(s): State<PortalState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    s.0.metrics.record(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Serves the portal on `listener` until `shutdown` turns true; requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    config: PortalConfig,
    clock: Arc<dyn Clock>,
    delivery: Arc<DeliveryMetrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = PortalState::new(store, config, clock, delivery)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "portal listening");
    }
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        // A dropped sender also means stop.
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
}
