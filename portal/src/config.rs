//! The portal's configuration. Secrets are wrapped so that `Debug` never prints them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A secret string: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the identity provider signs its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 with a shared secret (at least 32 bytes).
    Hs256(Secret),
    /// RS256, verified with the provider's public key (PEM, `BEGIN PUBLIC KEY`).
    Rs256PublicPem(String),
    /// ES256 (P-256), verified with the provider's public key (PEM).
    Es256PublicPem(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` tokens must name, when set.
    pub audience: Option<String>,
    pub key: JwtKey,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl JwtConfig {
    /// What is wrong with an identity provider's settings (the portal's, the console's).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.issuer.trim().is_empty() {
            problems.push("jwt issuer is empty".to_owned());
        }
        match &self.key {
            JwtKey::Hs256(s) if s.expose().len() < 32 => problems
                .push("the HS256 secret must be at least 32 bytes (use a random value)".into()),
            JwtKey::Rs256PublicPem(pem) | JwtKey::Es256PublicPem(pem)
                if !pem.contains("-----BEGIN") =>
            {
                problems.push("the JWT public key must be PEM (-----BEGIN PUBLIC KEY-----)".into())
            }
            _ => {}
        }
        problems
    }
}

/// Why `url` cannot be a public URL of ours (an http(s) URL), if it cannot.
pub(crate) fn public_url_problem(url: &str) -> Option<String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => None,
        _ => Some(format!("public URL {url:?} must be an http(s) URL")),
    }
}

/// Requests per reader (or per client without a valid token): a token bucket refilled at
/// `per_second`, holding up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The portal's own sessions (ASVS V3): a login opens one; it ends at logout, after `idle`
/// without a request, or `lifetime` after the login, whichever comes first. Its id is
/// replaced every `rotate_after` of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    pub idle: Duration,
    pub lifetime: Duration,
    pub rotate_after: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(12 * 3600),
            rotate_after: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortalConfig {
    pub listen: SocketAddr,
    /// The address residents reach the portal at; e-mails and pushes link to
    /// `{public_url}/notices/{key}`. An `https` URL makes the session cookie `Secure`.
    pub public_url: String,
    pub jwt: JwtConfig,
    /// Origins allowed to call the API from a browser (exact `scheme://host[:port]`).
    pub cors_origins: Vec<String>,
    pub rate_limit: RateLimit,
    pub session: SessionConfig,
    /// Accept push endpoints on loopback addresses (tests and local push services only).
    pub allow_loopback_push: bool,
    /// The VAPID public key (base64url) browsers subscribe with; shown on the preferences page.
    pub vapid_public_key: Option<String>,
    /// The bearer token `/metrics` requires; without one, it answers loopback clients only.
    pub metrics_token: Option<Secret>,
    /// The issuer of the sharing tokens: the agencies' API's public URL, whose token endpoint
    /// redeems the consent page's codes. Every redirect back to a party carries it as `iss`
    /// (RFC 9207). Without it the portal takes no consent (`/oauth/authorize` says so).
    pub share_issuer: Option<String>,
}

impl Default for PortalConfig {
    /// Loopback only, HS256 with an empty secret (refused by `PortalState::new`: set one).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            jwt: JwtConfig {
                issuer: "oshirase".into(),
                audience: None,
                key: JwtKey::Hs256(Secret::new("")),
                leeway_seconds: 30,
            },
            cors_origins: Vec::new(),
            rate_limit: RateLimit {
                per_second: 20.0,
                burst: 40,
            },
            session: SessionConfig::default(),
            allow_loopback_push: false,
            vapid_public_key: None,
            metrics_token: None,
            share_issuer: None,
        }
    }
}

impl PortalConfig {
    /// The defaults with an HS256 shared secret, the usual start of a builder chain.
    pub fn with_hs256_secret(secret: impl Into<String>) -> Self {
        let mut c = Self::default();
        c.jwt.key = JwtKey::Hs256(Secret::new(secret));
        c
    }

    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = url.into();
        self
    }

    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.jwt.issuer = issuer.into();
        self
    }

    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt.audience = Some(audience.into());
        self
    }

    pub fn jwt_key(mut self, key: JwtKey) -> Self {
        self.jwt.key = key;
        self
    }

    pub fn cors_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate_limit = RateLimit { per_second, burst };
        self
    }

    /// Sessions end after `idle` without a request or `lifetime` after the login.
    pub fn session(mut self, idle: Duration, lifetime: Duration) -> Self {
        self.session.idle = idle;
        self.session.lifetime = lifetime;
        self
    }

    pub fn allow_loopback_push(mut self, allow: bool) -> Self {
        self.allow_loopback_push = allow;
        self
    }

    pub fn vapid_public_key(mut self, key: impl Into<String>) -> Self {
        self.vapid_public_key = Some(key.into());
        self
    }

    pub fn metrics_token(mut self, token: Secret) -> Self {
        self.metrics_token = Some(token);
        self
    }

    pub fn share_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.share_issuer = Some(issuer.into());
        self
    }

    /// Every problem with the configuration, at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems = self.jwt.problems();
        problems.extend(public_url_problem(&self.public_url));
        if let Some(issuer) = &self.share_issuer {
            problems.extend(public_url_problem(issuer).map(|p| format!("share_issuer: {p}")));
        }
        for o in &self.cors_origins {
            let ok = url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && !o.ends_with('/')
                    && u.query().is_none()
            });
            if !ok {
                problems.push(format!(
                    "CORS origin {o:?} must be scheme://host[:port] without a path"
                ));
            }
        }
        if !(self.rate_limit.per_second > 0.0 && self.rate_limit.per_second.is_finite()) {
            problems.push("rate limit: requests per second must be positive".into());
        }
        if self.rate_limit.burst == 0 {
            problems.push("rate limit: burst must be at least 1".into());
        }
        let sess = &self.session;
        if sess.idle.is_zero() || sess.rotate_after.is_zero() {
            problems
                .push("session: the idle timeout and the rotation period must be positive".into());
        }
        if sess.lifetime < sess.idle {
            problems.push("session: the lifetime must be at least the idle timeout".into());
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            problems
                .push("the metrics token must be at least 16 bytes (use a random value)".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// What is wrong with a `PortalConfig` (every problem found).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("portal configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);
