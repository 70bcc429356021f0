//! Bearer tokens: JWTs from the portal's identity provider. `sub` names the reader (a
//! resident id); `iss` must match, `aud` too when configured; `exp` is required and checked
//! against the injected clock (not the wall clock), with a small leeway.

use chrono::{DateTime, FixedOffset};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use oshirase_engine::ids::ResidentId;
use serde::{Deserialize, Serialize};

use crate::config::{JwtConfig, JwtKey, PortalConfig};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: not yet valid")]
    NotYetValid,
    #[error("cannot use the JWT key: {0}")]
    Key(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    iss: String,
    /// A string or an array of them (RFC 7519 4.1.3); jsonwebtoken checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    /// Staff tokens only: the console's roles (窓口, 担当課, 管理者), the department of a
    /// 担当課 member, and the municipality (local government code) they work for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lg_code: Option<String>,
    #[serde(skip)]
    pub(crate) expires: i64,
}

/// The resident a verified token names, or a live session a verified token opened: only
/// these make one, so a service call that takes a `Reader` cannot be reached with an
/// unchecked id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader(ResidentId);

impl Reader {
    pub(crate) fn from_session(id: ResidentId) -> Self {
        Self(id)
    }

    pub fn id(&self) -> &ResidentId {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A verified token: who is reading, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub reader: Reader,
    /// `exp` as Unix seconds.
    pub expires: i64,
}

pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway: i64,
}

impl Verifier {
    pub(crate) fn new(jwt: &JwtConfig) -> Result<Self, TokenError> {
        let key_err = |e: jsonwebtoken::errors::Error| TokenError::Key(e.to_string());
        let (alg, key) = match &jwt.key {
            JwtKey::Hs256(s) => (
                Algorithm::HS256,
                DecodingKey::from_secret(s.expose().as_bytes()).map_err(key_err)?,
            ),
            JwtKey::Rs256PublicPem(pem) => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(key_err)?,
            ),
            JwtKey::Es256PublicPem(pem) => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(pem.as_bytes()).map_err(key_err)?,
            ),
        };
        // Only the one configured algorithm: a token cannot pick HS256 with a public key.
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[jwt.issuer.as_str()]);
        match &jwt.audience {
            Some(aud) => validation.set_audience(&[aud.as_str()]),
            None => validation.validate_aud = false,
        }
        // Time claims are checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // A configured audience must be named: a token for any other service, or for none,
        // is not for the portal.
        if jwt.audience.is_some() {
            validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        } else {
            validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        }
        Ok(Self {
            key,
            validation,
            leeway: i64::try_from(jwt.leeway_seconds).unwrap_or(i64::MAX / 2),
        })
    }

    /// A resident's token: `sub` must be a resident id.
    pub(crate) fn verify(
        &self,
        token: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Verified, TokenError> {
        let c = self.claims(token, now)?;
        let reader = ResidentId::parse(&c.sub)
            .map_err(|_| TokenError::Invalid("sub is not a resident id"))?;
        Ok(Verified {
            reader: Reader(reader),
            expires: c.expires,
        })
    }

    /// The claims of a token whose signature, issuer, audience and times check out.
    pub(crate) fn claims(
        &self,
        token: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                TokenError::Invalid(match e.kind() {
                    K::InvalidSignature => "bad signature",
                    K::InvalidIssuer => "wrong issuer",
                    K::InvalidAudience => "wrong audience",
                    K::InvalidAlgorithm => "wrong algorithm",
                    K::MissingRequiredClaim(_) => {
                        "a required claim (sub, iss, exp, aud) is missing"
                    }
                    _ => "malformed token",
                })
            })?;
        let now = now.timestamp();
        let mut c = data.claims;
        if c.exp + self.leeway < now {
            return Err(TokenError::Expired);
        }
        if c.nbf.is_some_and(|nbf| nbf - self.leeway > now) {
            return Err(TokenError::NotYetValid);
        }
        c.expires = c.exp;
        Ok(c)
    }
}

/// Mints an HS256 token for `subject` valid for `ttl` from `now`, as the identity provider
/// would (for the demo and tests). Fails for a configuration with a public key.
pub fn mint_token(
    config: &PortalConfig,
    subject: &str,
    now: DateTime<FixedOffset>,
    ttl: std::time::Duration,
) -> Result<String, TokenError> {
    let JwtKey::Hs256(secret) = &config.jwt.key else {
        return Err(TokenError::Key(
            "tokens can only be minted with an HS256 shared secret".into(),
        ));
    };
    ResidentId::parse(subject).map_err(|e| TokenError::Key(format!("subject: {e}")))?;
    let claims = Claims::new(&config.jwt, subject, now, ttl);
    claims.sign(secret)
}

impl Claims {
    pub(crate) fn new(
        jwt: &JwtConfig,
        subject: &str,
        now: DateTime<FixedOffset>,
        ttl: std::time::Duration,
    ) -> Self {
        let iat = now.timestamp();
        Self {
            sub: subject.to_owned(),
            iss: jwt.issuer.clone(),
            aud: jwt.audience.clone().map(serde_json::Value::String),
            exp: iat + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            nbf: None,
            iat: Some(iat),
            roles: None,
            department: None,
            lg_code: None,
            expires: 0,
        }
    }

    /// HS256 with `secret`, as the demo's and tests' identity provider signs.
    pub(crate) fn sign(&self, secret: &crate::config::Secret) -> Result<String, TokenError> {
        let key = EncodingKey::from_secret(secret.expose().as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), self, &key)
            .map_err(|e| TokenError::Key(e.to_string()))
    }
}
