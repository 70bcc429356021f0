//! The party's side of a resident's consent (docs/sharing.md), on the agencies' listener and
//! with the municipality's keys: the token endpoint (authorization code + PKCE S256, the
//! party authenticated with `private_key_jwt`, the token bound to its DPoP key) and the data
//! endpoint, which answers a DPoP-bound token with the consented items as an SD-JWT bound to
//! the same key. A revoked or expired grant gives nothing, at once: every call reads it.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset};
use oshirase_store::{Grant, Provision, Spend, TokenOutcome, TokenRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::ApiState;
use crate::auth::{self, OAuthError};
use crate::{dpop, sdjwt};

/// How long the signed extract may be kept as evidence, at most (and never past the grant).
const EXTRACT_TTL: i64 = 30 * 86_400;
/// The audience of the sharing API's access tokens.
const SHARE_AUDIENCE: &str = "oshirase-share";
/// The audience of a party's tokens for its grants list.
const GRANTS_AUDIENCE: &str = "oshirase-share-grants";

/// Every problem with a party's registration, at once.
pub fn check_party(
    p: &oshirase_store::PartySpec,
    exchange: &oshirase_engine::purposes::Exchange,
) -> Vec<String> {
    let mut problems = crate::register::client_problems(&p.id, &p.client_jwks);
    if p.name.trim().is_empty() || p.purpose.trim().is_empty() {
        problems
            .push("the name and the purpose must be given: the consent page shows them".to_owned());
    }
    if p.redirect_uris.is_empty() {
        problems.push("it has no redirect URI".to_owned());
    }
    for u in p.redirect_uris.iter().chain(&p.revocation_uri) {
        match url::Url::parse(u) {
            Err(e) => problems.push(format!("{u:?} is not a URL: {e}")),
            Ok(url) => {
                if let Err(why) = oshirase_adapters::webhook::check_endpoint(&url) {
                    problems.push(format!("{u}: {why}"));
                }
                if url.fragment().is_some() {
                    problems.push(format!("{u}: a redirect URI has no fragment"));
                }
            }
        }
    }
    if p.items.is_empty() {
        problems.push("it may ask for no item".to_owned());
    }
    for i in &p.items {
        if exchange.dictionary.get(i).is_none() {
            problems.push(format!("item {i:?} is not in the data-item dictionary"));
        }
    }
    if !(1..=366).contains(&p.max_grant_days) {
        problems.push("max_grant_days must be 1 to 366".to_owned());
    }
    problems
}

/// The authorization server's metadata (RFC 8414), at
/// `/.well-known/oauth-authorization-server`: what a party's OAuth library discovers the
/// endpoints and the methods from. `issuer` is this API's public URL: the `iss` of every token
/// and extract, and of the portal's redirects back to the party (RFC 9207).
pub(crate) async fn metadata(State(s): State<ApiState>) -> Response {
    let mut m = json!({
        "issuer": s.config.public_url,
        "token_endpoint": token_url(&s),
        "jwks_uri": format!("{}/agency/v1/jwks.json", s.config.public_url),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "authorization_details_types_supported": [oshirase_store::DETAILS_TYPE],
        "authorization_response_iss_parameter_supported": true,
    });
    // Without a portal there is no consent page, so no code flow to announce.
    if let Some(endpoint) = &s.config.authorization_endpoint {
        m["authorization_endpoint"] = json!(endpoint);
        m["response_types_supported"] = json!(["code"]);
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "max-age=3600")],
        Json(m),
    )
        .into_response()
}

pub(crate) fn token_url(s: &ApiState) -> String {
    format!("{}/share/v1/token", s.config.public_url)
}

fn status_url(s: &ApiState) -> String {
    format!("{}/share/v1/status", s.config.public_url)
}

/// How long a party may keep the status list before asking again (its `ttl`).
const STATUS_TTL: i64 = 300;

/// The status list (draft-ietf-oauth-status-list): one bit per grant, 1 for revoked,
/// DEFLATE/ZLIB-compressed and signed, at the `uri` every extract names with its `idx`.
pub(crate) async fn status_list(State(s): State<ApiState>) -> Response {
    use std::io::Write as _;
    let (size, revoked) = match s.store.revoked_status().await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "the status list failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service cannot answer now",
            )
                .into_response();
        }
    };
    let mut bits = vec![0u8; usize::try_from(size).unwrap_or(0).div_ceil(8).max(1)];
    for idx in revoked {
        if let Ok(i) = usize::try_from(idx) {
            if let Some(b) = bits.get_mut(i / 8) {
                *b |= 1 << (i % 8);
            }
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let compressed = z.write_all(&bits).and_then(|()| z.finish());
    let Ok(compressed) = compressed else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "compression failed").into_response();
    };
    let now = s.clock.now().timestamp();
    let claims = json!({
        "sub": status_url(&s),
        "iss": s.config.public_url,
        "iat": now,
        "exp": now + 2 * STATUS_TTL,
        "ttl": STATUS_TTL,
        "status_list": { "bits": 1, "lst": URL_SAFE_NO_PAD.encode(compressed) },
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/statuslist+jwt"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        s.keys.current.sign("statuslist+jwt", &claims),
    )
        .into_response()
}

fn data_url(s: &ApiState) -> String {
    format!("{}/share/v1/data", s.config.public_url)
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// The sharing API's access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShareClaims {
    iss: String,
    aud: String,
    /// The grant.
    sub: String,
    client_id: String,
    iat: i64,
    exp: i64,
    jti: String,
    cnf: Cnf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cnf {
    jkt: String,
}

fn oauth(status: StatusCode, e: OAuthError) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": e.error, "error_description": e.error_description })),
    )
        .into_response()
}

fn invalid_grant(why: &str) -> OAuthError {
    OAuthError {
        error: "invalid_grant",
        error_description: why.to_owned(),
    }
}

fn unavailable() -> OAuthError {
    OAuthError::invalid_request("the service cannot read its database now")
}

/// Verifies the request's DPoP proof and spends its `jti`.
fn bad_proof(why: String) -> OAuthError {
    OAuthError {
        error: "invalid_dpop_proof",
        error_description: why,
    }
}

/// The request's DPoP proof, checked; its `jti` not spent yet.
fn checked_proof(
    s: &ApiState,
    headers: &HeaderMap,
    method: &str,
    url: &str,
    access_token: Option<&str>,
) -> Result<dpop::Proof, OAuthError> {
    let mut values = headers.get_all("dpop").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(bad_proof("exactly one DPoP header is required".into()));
    };
    let text = value
        .to_str()
        .map_err(|_| bad_proof("the DPoP header is not text".into()))?;
    dpop::verify(text, method, url, s.clock.now().timestamp(), access_token)
        .map_err(|e| bad_proof(e.to_string()))
}

/// Verifies the request's DPoP proof and spends its `jti`.
async fn proof(
    s: &ApiState,
    headers: &HeaderMap,
    method: &str,
    url: &str,
    access_token: Option<&str>,
) -> Result<dpop::Proof, OAuthError> {
    let p = checked_proof(s, headers, method, url, access_token)?;
    if !s
        .store
        .first_dpop_use(&p.jkt, &p.jti, s.clock.now())
        .await
        .map_err(|_| unavailable())?
    {
        return Err(bad_proof("this DPoP proof was used before".into()));
    }
    Ok(p)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    // A failed random source leaves a predictable id, not a predictable token: it is signed.
    let _ = getrandom::fill(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub(crate) async fn token(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    match issue(&s, &headers, f).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = e.error, reason = %e.error_description, "party token refused");
            let status = if e.error == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            oauth(status, e)
        }
    }
}

async fn issue(s: &ApiState, headers: &HeaderMap, f: TokenForm) -> Result<Value, OAuthError> {
    #[derive(PartialEq)]
    enum Flow {
        Code,
        Refresh,
        /// The party's own dashboard: a token for its list of grants, nothing of a person.
        Dashboard,
    }
    let flow =
        match f.grant_type.as_deref() {
            Some("authorization_code") => Flow::Code,
            Some("refresh_token") => Flow::Refresh,
            Some("client_credentials") => Flow::Dashboard,
            _ => return Err(OAuthError {
                error: "unsupported_grant_type",
                error_description:
                    "authorization_code, refresh_token, or client_credentials for the grants list"
                        .into(),
            }),
        };
    if f.client_assertion_type.as_deref() != Some(auth::ASSERTION_TYPE) {
        return Err(OAuthError::invalid_client(format!(
            "authenticate with private_key_jwt: client_assertion_type must be {}",
            auth::ASSERTION_TYPE
        )));
    }
    let assertion = f
        .client_assertion
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_request("client_assertion is missing"))?;
    let client = auth::claimed_client(assertion)?;
    if f.client_id.as_deref().is_some_and(|c| c != client) {
        return Err(OAuthError::invalid_client(
            "client_id differs from the assertion's `iss`",
        ));
    }
    let party = s
        .store
        .party(&client)
        .await
        .map_err(|_| unavailable())?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let now = s.clock.now();
    let url = token_url(s);
    let checked = auth::check_assertion(assertion, &party.id, &party.client_jwks, &url, now)?;
    let expires = DateTime::from_timestamp(checked.expires, 0)
        .map(|t| t.fixed_offset())
        .unwrap_or(now);
    let p = checked_proof(s, headers, "POST", &url, None)?;
    // The signatures are checked; what is spent is spent in one transaction.
    let challenge = f
        .code_verifier
        .as_deref()
        .map(|v| URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())));
    let spend = match flow {
        Flow::Dashboard => Spend::Dashboard,
        Flow::Code => {
            let code = f
                .code
                .as_deref()
                .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
            Spend::Code {
                hash: oshirase_store::secret_digest(code),
                redirect_uri: f.redirect_uri.clone(),
                challenge,
            }
        }
        Flow::Refresh => {
            let token = f
                .refresh_token
                .as_deref()
                .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
            Spend::Refresh {
                hash: oshirase_store::secret_digest(token),
            }
        }
    };
    // A new refresh token each time, bound to the same key; it never outlives the grant,
    // which every use reads.
    let refresh = (flow != Flow::Dashboard).then(|| format!("rt_{}{}", random_id(), random_id()));
    let outcome = s
        .store
        .token_request(TokenRequest {
            party: party.id.clone(),
            assertion_jti: checked.jti.clone(),
            assertion_expires: expires,
            jkt: p.jkt.clone(),
            proof_jti: p.jti.clone(),
            spend,
            next_refresh: refresh.as_deref().map(oshirase_store::secret_digest),
            now,
        })
        .await
        .map_err(|_| unavailable())?;
    let grant = match outcome {
        TokenOutcome::AssertionReplayed => {
            return Err(OAuthError::invalid_client(
                "this client assertion was used before",
            ))
        }
        TokenOutcome::ProofReplayed => {
            return Err(bad_proof("this DPoP proof was used before".into()))
        }
        TokenOutcome::Refused(why) => return Err(invalid_grant(why)),
        TokenOutcome::Granted(g) => g,
    };
    let (aud, sub) = match &grant {
        Some(g) => (SHARE_AUDIENCE, g.id.clone()),
        None => (GRANTS_AUDIENCE, party.id.clone()),
    };
    let claims = ShareClaims {
        iss: s.config.public_url.clone(),
        aud: aud.to_owned(),
        sub,
        client_id: party.id.clone(),
        iat: now.timestamp(),
        exp: now.timestamp() + s.config.token_ttl_seconds,
        jti: random_id(),
        cnf: Cnf { jkt: p.jkt.clone() },
    };
    let token = s.keys.current.sign("at+jwt", &claims);
    let Some(grant) = grant else {
        return Ok(
            json!({ "access_token": token, "token_type": "DPoP", "expires_in": s.config.token_ttl_seconds }),
        );
    };
    Ok(json!({
        "access_token": token,
        "token_type": "DPoP",
        "expires_in": s.config.token_ttl_seconds,
        "refresh_token": refresh,
        "grant_id": grant.id,
        "authorization_details": [{
            "type": oshirase_store::DETAILS_TYPE,
            "items": grant.items,
        }],
    }))
}

async fn live_grant(
    s: &ApiState,
    id: &str,
    now: DateTime<FixedOffset>,
) -> Result<Grant, OAuthError> {
    s.store
        .grant(id)
        .await
        .map_err(|_| unavailable())?
        .filter(|g| g.live(now))
        .ok_or_else(|| invalid_grant("the grant is revoked or expired"))
}

fn invalid_token(why: &str) -> Response {
    let mut r = oauth(
        StatusCode::UNAUTHORIZED,
        OAuthError {
            error: "invalid_token",
            error_description: why.to_owned(),
        },
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("DPoP algs=\"ES256\", error=\"invalid_token\""),
    );
    r
}

/// A GET with a DPoP-bound token of `audience`: the token's claims and the proof, made
/// with the key the token is bound to; else the 401 to answer.
async fn bound_call(
    s: &ApiState,
    headers: &HeaderMap,
    audience: &str,
    url: &str,
) -> Result<(ShareClaims, dpop::Proof), Box<Response>> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .map(str::trim)
    else {
        return Err(Box::new(invalid_token(
            "a DPoP-bound access token is required (Authorization: DPoP …)",
        )));
    };
    let claims: ShareClaims = auth::check_access_token(
        &s.keys,
        &s.config.public_url,
        audience,
        token,
        s.clock.now(),
    )
    .map_err(|e| Box::new(invalid_token(&e.to_string())))?;
    let p = proof(s, headers, "GET", url, Some(token))
        .await
        .map_err(|e| Box::new(oauth(StatusCode::UNAUTHORIZED, e)))?;
    if p.jkt != claims.cnf.jkt {
        return Err(Box::new(invalid_token(
            "the DPoP proof is made with another key than the token's",
        )));
    }
    Ok((claims, p))
}

/// The consented items as an SD-JWT bound to the party's DPoP key.
pub(crate) async fn data(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let now = s.clock.now();
    let (claims, p) = match bound_call(&s, &headers, SHARE_AUDIENCE, &data_url(&s)).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let grant = match live_grant(&s, &claims.sub, now).await {
        Ok(g) => g,
        Err(_) => return invalid_token("the grant is revoked or expired"),
    };
    match extract(&s, &grant, &p.jwk, now).await {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/dc+sd-jwt"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a party's extract failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service cannot answer now",
            )
                .into_response()
        }
    }
}

/// The party's dashboard: every grant it holds (no person named: it knows its grants by
/// their ids), with since, until, the last use and whether it still gives anything.
pub(crate) async fn grants(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let now = s.clock.now();
    let url = format!("{}/share/v1/grants", s.config.public_url);
    let (claims, _) = match bound_call(&s, &headers, GRANTS_AUDIENCE, &url).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let list = match s.store.grants_of_party(&claims.sub).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "a party's grants list failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service cannot answer now",
            )
                .into_response();
        }
    };
    let ts = |t: Option<DateTime<FixedOffset>>| t.map(|t| t.timestamp());
    let grants: Vec<Value> = list
        .iter()
        .map(|g| {
            json!({
                "grant_id": g.id,
                "items": g.items,
                "purpose": g.purpose,
                "created_at": g.created_at.timestamp(),
                "expires_at": g.expires_at.timestamp(),
                "revoked_at": ts(g.revoked_at),
                "last_used_at": ts(g.last_used_at),
                "status": if g.revoked_at.is_some() { "revoked" } else if g.live(now) { "active" } else { "expired" },
            })
        })
        .collect();
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "grants": grants })),
    )
        .into_response()
}

impl auth::Expiring for ShareClaims {
    fn expires(&self) -> i64 {
        self.exp
    }
}

#[derive(Debug, thiserror::Error)]
enum ExtractError {
    #[error(transparent)]
    Store(#[from] oshirase_store::StoreError),
    #[error("grant {0} names nobody on the register")]
    NoResident(String),
    #[error(transparent)]
    Sign(#[from] sdjwt::SdJwtError),
}

/// The SD-JWT of a grant's items as the register holds them now; a support measure
/// withholds the address items. The read is in the resident's access log before it leaves.
async fn extract(
    s: &ApiState,
    grant: &Grant,
    holder_jwk: &Value,
    now: DateTime<FixedOffset>,
) -> Result<String, ExtractError> {
    let resident = s
        .store
        .resident(&grant.resident_id)
        .await?
        .ok_or_else(|| ExtractError::NoResident(grant.id.clone()))?;
    let dict = &s.exchange.dictionary;
    let mut items = Vec::new();
    let mut given = Vec::new();
    let mut withheld = false;
    for code in &grant.items {
        let Some(item) = dict.get(code) else { continue };
        if resident.support_measure && dict.is_address(item) {
            withheld = true;
            continue;
        }
        items.push((code.clone(), dict.value(item, &resident)));
        given.push(item.code.clone());
    }
    let party = s.store.party(&grant.party_id).await?;
    s.store
        .log_provision(&Provision {
            resident_id: grant.resident_id.clone(),
            at: now,
            accessor_kind: "party".into(),
            accessor_id: grant.party_id.clone(),
            accessor_name: party.map_or_else(|| grant.party_id.clone(), |p| p.name),
            basis: format!("grant/{}", grant.id),
            action: "pull".into(),
            items: given,
            outcome: if withheld { "withheld" } else { "provided" }.into(),
        })
        .await?;
    s.store.touch_grant(&grant.id, now).await?;
    let expires = (now.timestamp() + EXTRACT_TTL).min(grant.expires_at.timestamp());
    let status = status_url(s);
    let spec = sdjwt::Issue {
        issuer: &s.config.public_url,
        vct: "urn:oshirase:resident-extract:1",
        subject_pseudonym: None,
        items: &items,
        holder_jwk,
        issued_at: now.timestamp(),
        expires_at: expires,
        status: Some((u64::try_from(grant.status_idx).unwrap_or(0), &status)),
    };
    Ok(sdjwt::issue(&s.keys.current, &spec)?)
}

/// The event type of a revoked grant in the Security Event Tokens pushed to its party.
pub const GRANT_REVOKED: &str = "urn:oshirase:secevent:grant-revoked";

/// Pushes each revocation to its party as a signed Security Event Token (RFC 8417, pushed
/// per RFC 8935), retried with backoff until the party accepts it. The status list says the
/// same to a party that does not take pushes.
pub struct RevocationPusher {
    pub store: oshirase_store::Store,
    pub keys: std::sync::Arc<crate::Keys>,
    /// The SETs' `iss`: the agencies' listener's public URL.
    pub issuer: String,
    pub sender: std::sync::Arc<oshirase_adapters::webhook::WebhookSender>,
    pub clock: std::sync::Arc<dyn oshirase_engine::clock::Clock>,
}

#[derive(Serialize)]
struct SecurityEvent<'a> {
    iss: &'a str,
    iat: i64,
    jti: String,
    aud: &'a str,
    events: Value,
}

impl RevocationPusher {
    /// The SET telling `party` that `grant` was revoked at `at`.
    pub fn event(&self, party: &str, grant: &str, at: DateTime<FixedOffset>) -> String {
        let set = SecurityEvent {
            iss: &self.issuer,
            iat: self.clock.now().timestamp(),
            jti: random_id(),
            aud: party,
            events: json!({ GRANT_REVOKED: { "grant_id": grant, "revoked_at": at.timestamp() } }),
        };
        self.keys.current.sign("secevent+jwt", &set)
    }

    /// Pushes what is due now; returns how many were delivered.
    pub async fn push_due(&self) -> Result<usize, oshirase_store::StoreError> {
        use oshirase_adapters::webhook::WebhookOutcome;
        let now = self.clock.now();
        let mut delivered = 0;
        for due in self.store.due_revocations(now, 100).await? {
            let outcome = match url::Url::parse(&due.uri) {
                Ok(u) => {
                    let set = self.event(&due.party_id, &due.grant_id, due.revoked_at);
                    self.sender.send_set(&u, &set, now).await
                }
                Err(e) => WebhookOutcome::Refused {
                    reason: format!("the revocation URI is not a URL: {e}"),
                },
            };
            let settled = match outcome {
                WebhookOutcome::Delivered => {
                    delivered += 1;
                    Ok(())
                }
                WebhookOutcome::Retry { after, reason } => Err((
                    oshirase_engine::clock::after(
                        now,
                        after.unwrap_or_else(|| backoff(due.attempts)),
                    ),
                    reason,
                )),
                WebhookOutcome::Refused { reason } => Err((
                    oshirase_engine::clock::after(now, backoff(due.attempts)),
                    reason,
                )),
            };
            if let Err((_, why)) = &settled {
                tracing::warn!(party = %due.party_id, reason = %why, "a revocation push failed; it is retried");
            }
            self.store
                .settle_revocation(&due.grant_id, settled, now)
                .await?;
        }
        Ok(delivered)
    }

    /// Pushes every few seconds until `shutdown`; forgets the DPoP proofs past their window
    /// on the way.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.push_due().await {
                tracing::error!(error = %e, "revocation pushes failed");
            }
            let window = std::time::Duration::from_secs(2 * dpop::IAT_WINDOW.unsigned_abs());
            let before = oshirase_engine::clock::before(self.clock.now(), window);
            if let Err(e) = self.store.prune_dpop_proofs(before).await {
                tracing::warn!(error = %e, "pruning DPoP proofs failed; retried soon");
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// A minute, doubled each attempt, at most six hours.
fn backoff(attempts: i64) -> std::time::Duration {
    let exp = u32::try_from(attempts.clamp(0, 9)).unwrap_or(9);
    std::time::Duration::from_secs((60u64 << exp).min(6 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> oshirase_engine::purposes::Exchange {
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        oshirase_engine::purposes::load_dir(&rules).unwrap()
    }

    fn party() -> oshirase_store::PartySpec {
        oshirase_store::PartySpec {
            id: "kyuyo-soft".into(),
            name: "株式会社サンプル給与".into(),
            purpose: "年末調整".into(),
            redirect_uris: vec!["https://payroll.example.com/cb".into()],
            client_jwks: json!({"keys": [crate::SigningKey::generate().unwrap().public_jwk()]})
                .to_string(),
            items: vec!["name".into(), "address".into()],
            max_grant_days: 365,
            revocation_uri: None,
        }
    }

    #[test]
    fn a_party_is_checked_whole() {
        let x = exchange();
        assert!(check_party(&party(), &x).is_empty());
        let mut p = party();
        p.id = "Kyuyo Soft".into();
        p.redirect_uris = vec![
            "http://payroll.example.com/cb".into(),
            "https://a.example/cb#f".into(),
        ];
        p.items.push("my_number".into());
        p.max_grant_days = 0;
        p.client_jwks = json!({"keys": []}).to_string();
        p.revocation_uri = Some("not a url".into());
        let problems = check_party(&p, &x).join("\n");
        for expected in [
            "the id must be",
            "http://payroll.example.com/cb",
            "no fragment",
            "\"my_number\" is not in the data-item dictionary",
            "max_grant_days",
            "has no key",
            "\"not a url\" is not a URL",
        ] {
            assert!(problems.contains(expected), "{expected} in:\n{problems}");
        }
    }

    #[test]
    fn pushes_back_off_to_six_hours() {
        assert_eq!(backoff(0).as_secs(), 60);
        assert_eq!(backoff(3).as_secs(), 480);
        assert_eq!(backoff(50).as_secs(), 6 * 3600);
    }
}
