//! Agency clients authenticate with OAuth 2.0 client credentials and `private_key_jwt`
//! (RFC 6749 §4.4, RFC 7523, OpenID Connect Core §9): the client signs an assertion with its
//! own key, registered as a JWKS; no shared secret exists to leak. The token endpoint answers
//! with a short-lived access token (RFC 9068 `at+jwt`) signed by the municipality's key, which
//! every other call presents as a bearer token. Times are checked against the injected clock.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::Keys;

/// The client assertion type of RFC 7523.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The audience of our access tokens.
pub const API_AUDIENCE: &str = "oshirase-agency-api";

/// The longest life an assertion may claim: a long-lived one is as good as a password.
const MAX_ASSERTION_SECONDS: i64 = 300;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY: i64 = 30;

/// An OAuth error response (RFC 6749 §5.2): `error` is one of the registered codes; the
/// description says what was wrong, never a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthError {
    pub error: &'static str,
    pub error_description: String,
}

impl OAuthError {
    pub fn invalid_client(why: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_client",
            error_description: why.into(),
        }
    }
    pub fn invalid_request(why: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_request",
            error_description: why.into(),
        }
    }
}

/// The claims we read from a client assertion.
#[derive(Debug, Deserialize)]
struct Assertion {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    jti: String,
}

/// A checked assertion: whose it is and its `jti`, to be spent once, remembered until
/// `expires` (the last second it would be accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAssertion {
    pub client_id: String,
    pub jti: String,
    pub expires: i64,
}

/// The `iss` an assertion claims, read without checking it: only to find whose keys check
/// it. Nothing else of an unchecked assertion is used.
pub fn claimed_client(assertion: &str) -> Result<String, OAuthError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(assertion)
        .map(|c| c.iss)
        .map_err(|_| OAuthError::invalid_client("the client assertion is not a JWT with `iss`"))
}

/// Checks a client assertion against the client's registered keys (`jwks`), the token
/// endpoint's URL (its audience) and the clock.
pub fn check_assertion(
    assertion: &str,
    client_id: &str,
    jwks: &str,
    token_url: &str,
    now: DateTime<FixedOffset>,
) -> Result<CheckedAssertion, OAuthError> {
    let bad = OAuthError::invalid_client;
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| bad("the client assertion is not a JWT"))?;
    // Asymmetric only: HS256 with a public key as its secret is the classic forgery.
    if !matches!(
        header.alg,
        Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
            | Algorithm::RS256
            | Algorithm::PS256
    ) {
        return Err(bad(
            "the client assertion must be signed with ES256, EdDSA, RS256 or PS256",
        ));
    }
    let set: JwkSet = serde_json::from_str(jwks)
        .map_err(|_| bad("the client's registered keys are not a JWKS; ask the operator"))?;
    let candidates: Vec<_> = match &header.kid {
        Some(kid) => set.find(kid).into_iter().collect(),
        None => set.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(bad(
            "no registered key of the client matches the assertion's `kid`",
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims =
        HashSet::from(["exp", "sub", "iss", "aud", "jti"].map(str::to_owned));
    let mut last = "bad signature";
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Assertion>(assertion, &key, &validation) {
            Ok(data) => {
                let c = data.claims;
                let now = now.timestamp();
                if c.iss != client_id || c.sub != client_id {
                    return Err(bad("`iss` and `sub` must both be the client id"));
                }
                if c.exp + LEEWAY < now {
                    return Err(bad("the client assertion has expired"));
                }
                if c.nbf.is_some_and(|nbf| nbf - LEEWAY > now)
                    || c.iat.is_some_and(|iat| iat - LEEWAY > now)
                {
                    return Err(bad("the client assertion is not valid yet"));
                }
                if c.exp - now > MAX_ASSERTION_SECONDS + LEEWAY {
                    return Err(OAuthError::invalid_client(format!(
                        "the client assertion lives too long (at most {MAX_ASSERTION_SECONDS} s)"
                    )));
                }
                if c.jti.is_empty() || c.jti.len() > 200 {
                    return Err(bad("`jti` must be 1 to 200 characters"));
                }
                return Ok(CheckedAssertion {
                    client_id: client_id.to_owned(),
                    jti: c.jti,
                    // Kept until it can no longer be accepted (exp plus the leeway): a jti
                    // forgotten earlier could be spent twice.
                    expires: c.exp + LEEWAY,
                });
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::InvalidSignature => "bad signature",
                    K::InvalidAudience => "`aud` must be the token endpoint's URL",
                    K::InvalidIssuer | K::InvalidSubject => {
                        "`iss` and `sub` must both be the client id"
                    }
                    K::MissingRequiredClaim(_) => {
                        "a required claim (iss, sub, aud, exp, jti) is missing"
                    }
                    K::InvalidAlgorithm => "the key does not match the assertion's algorithm",
                    _ => "malformed client assertion",
                };
            }
        }
    }
    Err(bad(last))
}

/// A `private_key_jwt` client assertion (RFC 7523) of `client_id` for the token endpoint
/// `aud`, issued at `iat` and good for a minute, signed with `key` (its `kid` in the
/// header): what a client (the demo's core system and party, benchmarks) sends.
pub fn client_assertion(
    key: &crate::SigningKey,
    client_id: &str,
    aud: &str,
    iat: i64,
    jti: &str,
) -> String {
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": aud, "iat": iat, "exp": iat + 60, "jti": jti,
    });
    key.sign("JWT", &claims)
}

/// Our access token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The agency.
    pub sub: String,
    pub client_id: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Issues an access token for a client, valid `ttl_seconds`.
pub fn issue_access_token(
    keys: &Keys,
    issuer: &str,
    client_id: &str,
    ttl_seconds: i64,
    now: DateTime<FixedOffset>,
) -> String {
    let mut id = [0u8; 16];
    // A failed random source leaves a predictable id, not a predictable token: the token is
    // signed, and its id only labels it in logs.
    let _ = getrandom::fill(&mut id);
    let claims = AccessClaims {
        iss: issuer.to_owned(),
        aud: API_AUDIENCE.to_owned(),
        sub: client_id.to_owned(),
        client_id: client_id.to_owned(),
        iat: now.timestamp(),
        exp: now.timestamp() + ttl_seconds,
        jti: id.iter().map(|b| format!("{b:02x}")).collect(),
    };
    keys.current.sign("at+jwt", &claims)
}

/// Why a bearer token was refused (RFC 6750 `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("no bearer token")]
    Missing,
    #[error("{0}")]
    Invalid(&'static str),
}

/// Checks a bearer token we issued: signature (any published key, for rotation), issuer,
/// audience, expiry.
pub fn check_bearer(
    keys: &Keys,
    issuer: &str,
    authorization: Option<&str>,
    now: DateTime<FixedOffset>,
) -> Result<AccessClaims, BearerError> {
    let token = authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(BearerError::Missing)?;
    check_access_token(keys, issuer, API_AUDIENCE, token, now)
}

/// Claims of an access token of ours: they say until when it holds.
pub trait Expiring {
    /// `exp`, Unix seconds.
    fn expires(&self) -> i64;
}

impl Expiring for AccessClaims {
    fn expires(&self) -> i64 {
        self.exp
    }
}

/// Checks an access token we issued for `audience` (`at+jwt`, ES256 by one of our published
/// keys, our issuer, not expired) and gives its claims.
pub fn check_access_token<C: serde::de::DeserializeOwned + Expiring>(
    keys: &Keys,
    issuer: &str,
    audience: &str,
    token: &str,
    now: DateTime<FixedOffset>,
) -> Result<C, BearerError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| BearerError::Invalid("malformed token"))?;
    if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some("at+jwt") {
        return Err(BearerError::Invalid("not an access token of this service"));
    }
    let key = std::iter::once(&keys.current)
        .chain(&keys.previous)
        .find(|k| header.kid.as_deref() == Some(k.kid()))
        .ok_or(BearerError::Invalid("signed with an unknown key"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims =
        HashSet::from(["exp", "sub", "iss", "aud"].map(str::to_owned));
    let data = jsonwebtoken::decode::<C>(token, key.verifier(), &validation)
        .map_err(|_| BearerError::Invalid("bad token"))?;
    if data.claims.expires() < now.timestamp() {
        return Err(BearerError::Invalid("the token has expired"));
    }
    Ok(data.claims)
}
