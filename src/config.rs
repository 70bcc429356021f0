//! The service's configuration file (`oshirase run --config FILE`): the portal, e-mail, web
//! push and the delivery workers. YAML; unknown keys are errors, and every error names the
//! file, line and field. Secrets are never in the file: it names the environment variables
//! that hold them. `config/oshirase.example.yaml` documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use oshirase_adapters::email::{EmailConfig, SmtpConfig};
use oshirase_adapters::webpush::{VapidKeys, WebPushConfig};
use oshirase_engine::resident::Channel;
use oshirase_portal::{JwtKey, PortalConfig, RateLimit, Secret};
use oshirase_service::outbox::{Gate, Policy, QuietHours, StoreRetry};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The resident portal (API and pages); not served when absent.
    #[serde(default)]
    pub portal: Option<PortalSection>,
    #[serde(default)]
    pub email: Option<EmailSection>,
    #[serde(default)]
    pub webpush: Option<WebPushSection>,
    #[serde(default)]
    pub delivery: DeliverySection,
    /// Agencies told of updates (①): their API and event delivery; off when absent.
    #[serde(default)]
    pub exchange: Option<ExchangeSection>,
    /// The staff console (docs/office.md); not served when absent.
    #[serde(default)]
    pub console: Option<ConsoleSection>,
}

/// The staff console: its own listener on the municipality's internal network, its own
/// identity provider (the staff directory), the municipality it serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
    pub public_url: String,
    /// Staff tokens must carry it as `lg_code`.
    pub local_gov_code: String,
    pub jwt: JwtSection,
    #[serde(default)]
    pub session: Option<SessionSection>,
}

fn default_console_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8070))
}

/// The agencies' side: docs/agencies.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSection {
    /// The agencies' API listens here, apart from the portal (agencies come over the
    /// government network).
    #[serde(default = "default_exchange_listen")]
    pub listen: SocketAddr,
    /// Where agencies reach the API (default `http://{listen}`): the issuer of its tokens and
    /// the audience of their client assertions.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The municipality's local government code (the events' `source`).
    pub local_gov_code: String,
    /// The ES256 key (PKCS#8 PEM) that signs tokens and pulled data (`oshirase agency keys`).
    pub signing_key_pem: PathBuf,
    /// Keys signed with before a rotation: still published in the JWKS.
    #[serde(default)]
    pub previous_keys_pem: Vec<PathBuf>,
    /// The environment variable holding the webhook signing key (`whsk_…`).
    pub webhook_key_env: String,
    /// The environment variable holding the shared HMAC secret (`whsec_…`) for agencies that
    /// verify `v1` signatures; without it only `v1a` (Ed25519) is sent.
    #[serde(default)]
    pub webhook_hmac_env: Option<String>,
    /// Days the events stay readable by the pull API; after them they move to the residents'
    /// record of what was provided.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The longest interest an agency may register, in days.
    #[serde(default = "default_max_interest_days")]
    pub max_interest_days: u32,
    #[serde(default = "default_token_ttl")]
    pub token_ttl_seconds: u32,
    /// A stream silent this long gets a heartbeat.
    #[serde(default = "default_heartbeat_minutes")]
    pub heartbeat_minutes: u64,
    /// An event undelivered this long is a dead letter (the agency can still pull it).
    #[serde(default = "default_dead_after_hours")]
    pub dead_after_hours: u64,
    /// The agencies, registered (or updated) at start.
    #[serde(default)]
    pub agencies: Vec<AgencySection>,
    /// Private parties residents may share their own data with (docs/sharing.md),
    /// registered (or updated) at start.
    #[serde(default)]
    pub parties: Vec<PartySection>,
}

/// A private party (an employer's payroll software, an insurer): docs/sharing.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartySection {
    pub id: String,
    pub name: String,
    /// Why it asks, as the consent page shows it.
    pub purpose: String,
    /// Where the resident's browser is sent back to (https; http only on loopback).
    pub redirect_uris: Vec<String>,
    /// A file with the JSON Web Key Set of its client's public keys (private_key_jwt).
    pub client_jwks: PathBuf,
    /// The data-item codes it may ask for.
    pub items: Vec<String>,
    /// The longest grant it may hold, in days.
    pub max_grant_days: u32,
    /// Where revocations are pushed as signed Security Event Tokens.
    #[serde(default)]
    pub revocation_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencySection {
    pub id: String,
    pub name: String,
    /// Purpose ids of `rules/purposes`.
    pub purposes: Vec<String>,
    /// Where its events are posted (https; http only to loopback); without it, pull only.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A file with the JSON Web Key Set of its client's public keys (private_key_jwt).
    pub client_jwks: PathBuf,
    /// The data-item dictionary version its systems read.
    pub dictionary_version: u32,
    /// For a core system (基幹業務システム): the procedures (rule ids) whose submitted
    /// applications it reads and answers with a status (docs/office.md).
    #[serde(default)]
    pub office_rules: Vec<String>,
}

fn default_exchange_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

fn default_retention_days() -> u32 {
    30
}

fn default_max_interest_days() -> u32 {
    // Five years: a pension or insurance case is reviewed well within it.
    1830
}

fn default_token_ttl() -> u32 {
    300
}

fn default_heartbeat_minutes() -> u64 {
    60
}

fn default_dead_after_hours() -> u64 {
    72
}

/// The exchange's settings, read and checked.
pub struct ExchangeSettings {
    pub listen: SocketAddr,
    pub local_gov_code: String,
    pub keys: oshirase_exchange::Keys,
    pub webhook_keys: oshirase_adapters::webhook::SigningKeys,
    pub api: oshirase_exchange::ApiConfig,
    pub delivery: oshirase_exchange::DeliveryPolicy,
    pub retention: Duration,
    pub agencies: Vec<oshirase_store::AgencySpec>,
    /// The core systems among them and their procedures.
    pub office_clients: BTreeMap<String, Vec<oshirase_engine::ids::RuleId>>,
    pub parties: Vec<oshirase_store::PartySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where residents reach the portal; notices link to `{public_url}/notices/{key}`.
    pub public_url: String,
    pub jwt: JwtSection,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
    #[serde(default)]
    pub session: Option<SessionSection>,
    /// Accept push endpoints on loopback addresses (local test push services only).
    #[serde(default)]
    pub allow_loopback_push: bool,
    /// The environment variable holding the bearer token `/metrics` requires; without it,
    /// `/metrics` answers clients on this machine only.
    #[serde(default)]
    pub metrics_token_env: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    pub issuer: String,
    #[serde(default)]
    pub audience: Option<String>,
    /// `HS256` (secret from `secret_env`), `RS256` or `ES256` (public key from `public_key_pem`).
    pub algorithm: String,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub public_key_pem: Option<PathBuf>,
}

/// The portal's sessions: they end after `idle_minutes` without a request, or
/// `lifetime_hours` after the login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    pub idle_minutes: u64,
    pub lifetime_hours: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// `名前 <address>` or a bare address.
    pub from: String,
    pub message_id_domain: String,
    /// Send over SMTP; without it, notices are written as .eml files to `dir`.
    #[serde(default)]
    pub smtp: Option<SmtpSection>,
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// `smtp://host:port` (plain, local relays), `smtp://host:port?tls=required` (STARTTLS),
    /// `smtps://host:port` (implicit TLS).
    pub url: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// SMTP connections kept open; at least `delivery.concurrency.email` to use them all.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_pool() -> u32 {
    48
}

fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushSection {
    /// The variable holding the VAPID private key (base64url; `oshirase vapid keygen`).
    pub vapid_private_key_env: String,
    /// `mailto:` or `https:` contact for push services.
    pub subject: String,
    #[serde(default)]
    pub allow_loopback: bool,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// Workers per channel (`portal`, `email`, `webpush`).
    #[serde(default = "default_workers")]
    pub workers: BTreeMap<String, usize>,
    /// Sends in flight at once per worker, by channel. E-mail needs many: each SMTP connection
    /// carries only about 20 messages a second (lettre 0.11 waits for delayed ACKs), so its
    /// default matches a pool just under Postfix's 50 connections per client.
    #[serde(default = "default_concurrency")]
    pub concurrency: BTreeMap<String, usize>,
    /// Non-critical notices per person per channel per day; 0: no cap.
    #[serde(default = "default_cap")]
    pub daily_cap: i64,
    /// Channel → `HH:MM-HH:MM` in Asia/Tokyo.
    #[serde(default = "default_quiet")]
    pub quiet_hours: BTreeMap<String, String>,
    /// Re-send by e-mail when push is gone or refused for good.
    #[serde(default = "yes")]
    pub push_falls_back_to_email: bool,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    /// Rows a worker claims at once.
    #[serde(default = "default_batch")]
    pub batch: i64,
    /// How long claimed rows belong to their worker; a worker without progress for longer is
    /// reported stuck on `/health`.
    #[serde(default = "default_lease")]
    pub lease_seconds: f64,
    /// The first retry of a failed send; doubled for each attempt (at most 6 hours), ±20%.
    #[serde(default = "default_retry_base")]
    pub retry_base_seconds: f64,
    /// What a worker does when the database fails it.
    #[serde(default)]
    pub store_errors: StoreErrorsSection,
    /// Days after a procedure's deadline during which its notice is still sent and retried;
    /// after them it is a dead letter (docs/channels.md, "Late notices").
    #[serde(default = "default_late_grace_days")]
    pub late_grace_days: u32,
}

fn default_workers() -> BTreeMap<String, usize> {
    [("portal", 1), ("email", 2), ("webpush", 2)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn default_concurrency() -> BTreeMap<String, usize> {
    [("portal", 8), ("email", 48), ("webpush", 64)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn default_cap() -> i64 {
    Gate::default().daily_cap
}

fn default_quiet() -> BTreeMap<String, String> {
    Gate::default()
        .quiet_hours
        .into_iter()
        .map(|(channel, q)| {
            let span = format!("{}-{}", q.start.format("%H:%M"), q.end.format("%H:%M"));
            (channel, span)
        })
        .collect()
}

fn yes() -> bool {
    true
}

fn default_max_attempts() -> i64 {
    Policy::default().max_attempts
}

fn default_late_grace_days() -> u32 {
    Policy::default().late_grace_days
}

fn default_batch() -> i64 {
    Policy::default().batch
}

fn default_lease() -> f64 {
    Policy::default().lease.as_secs_f64()
}

fn default_retry_base() -> f64 {
    Policy::default().base.as_secs_f64()
}

/// A worker whose store fails (a full disk, a lock held past the busy timeout) waits
/// `retry_seconds`, doubled after each failure in a row up to a minute, and tries again; after
/// `give_up_after` failures in a row the service stops with exit code 5.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreErrorsSection {
    #[serde(default = "default_store_retry")]
    pub retry_seconds: f64,
    #[serde(default = "default_give_up_after")]
    pub give_up_after: u32,
}

fn default_store_retry() -> f64 {
    StoreRetry::default().first.as_secs_f64()
}

fn default_give_up_after() -> u32 {
    StoreRetry::default().give_up_after
}

impl Default for StoreErrorsSection {
    fn default() -> Self {
        Self {
            retry_seconds: default_store_retry(),
            give_up_after: default_give_up_after(),
        }
    }
}

/// A positive, finite number of seconds as a duration; `key` names it in the error.
fn seconds(key: &str, value: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && value > 0.0 && value < 1e9,
        "{key}: {value} is not a positive number of seconds"
    );
    Ok(Duration::from_secs_f64(value))
}

impl Default for DeliverySection {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            concurrency: default_concurrency(),
            daily_cap: default_cap(),
            quiet_hours: default_quiet(),
            push_falls_back_to_email: true,
            max_attempts: default_max_attempts(),
            late_grace_days: default_late_grace_days(),
            batch: default_batch(),
            lease_seconds: default_lease(),
            retry_base_seconds: default_retry_base(),
            store_errors: StoreErrorsSection::default(),
        }
    }
}

/// Reads and parses a configuration file; errors name the file, line, column and field.
pub fn load(path: &Path) -> anyhow::Result<ServiceConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

pub fn parse(text: &str, name: &str) -> anyhow::Result<ServiceConfig> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{name}{at}: {field}: {inner}")
    })
}

/// The key an identity provider's tokens are verified with, its secret from the environment
/// or its public key from a file; errors name `{section}.jwt.…`.
fn jwt_key(jwt: &JwtSection, section: &str) -> anyhow::Result<JwtKey> {
    let p = jwt;
    let key = match p.algorithm.as_str() {
        "HS256" => {
            let var = p
                .secret_env
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("{section}.jwt.secret_env: needed for HS256"))?;
            JwtKey::Hs256(Secret::new(env_secret(
                var,
                &format!("{section}.jwt.secret_env"),
            )?))
        }
        alg @ ("RS256" | "ES256") => {
            let path = p
                .public_key_pem
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("{section}.jwt.public_key_pem: needed for {alg}"))?;
            let pem = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "{section}.jwt.public_key_pem: cannot read {}: {e}",
                    path.display()
                )
            })?;
            if alg == "RS256" {
                JwtKey::Rs256PublicPem(pem)
            } else {
                JwtKey::Es256PublicPem(pem)
            }
        }
        other => anyhow::bail!("{section}.jwt.algorithm: {other:?} is not HS256, RS256 or ES256"),
    };
    Ok(key)
}

/// The catalogue's departments on `day`, id → name (whom the console scopes staff by).
pub fn departments(
    rules: &oshirase_engine::catalogue::RuleSet,
    day: chrono::NaiveDate,
) -> BTreeMap<String, String> {
    rules
        .departments(day)
        .into_iter()
        .map(|(id, contact)| (id, contact.name))
        .collect()
}

/// Each procedure's department, as its rule names it.
pub fn rule_departments(
    rules: &oshirase_engine::catalogue::RuleSet,
) -> BTreeMap<oshirase_engine::ids::RuleId, String> {
    rules
        .rules()
        .iter()
        .filter_map(|r| Some((r.id.clone(), r.department.clone()?)))
        .collect()
}

fn session_config(
    section: Option<&SessionSection>,
    defaults: oshirase_portal::SessionConfig,
) -> oshirase_portal::SessionConfig {
    section
        .map(|s| oshirase_portal::SessionConfig {
            idle: Duration::from_secs(s.idle_minutes.saturating_mul(60)),
            lifetime: Duration::from_secs(s.lifetime_hours.saturating_mul(3600)),
            ..defaults
        })
        .unwrap_or(defaults)
}

fn env_secret(var: &str, what: &str) -> anyhow::Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => anyhow::bail!("{what}: the environment variable {var} is not set"),
    }
}

impl ServiceConfig {
    /// The portal's settings, reading secrets from the environment.
    pub fn portal(&self, vapid_public_key: Option<String>) -> anyhow::Result<Option<PortalConfig>> {
        let Some(p) = &self.portal else {
            return Ok(None);
        };
        let key = jwt_key(&p.jwt, "portal")?;
        let defaults = PortalConfig::default();
        let c = PortalConfig {
            listen: p.listen,
            public_url: p.public_url.clone(),
            jwt: oshirase_portal::JwtConfig {
                issuer: p.jwt.issuer.clone(),
                audience: p.jwt.audience.clone(),
                key,
                ..defaults.jwt
            },
            cors_origins: p.cors_origins.clone(),
            rate_limit: p
                .rate_limit
                .as_ref()
                .map(|r| RateLimit {
                    per_second: r.per_second,
                    burst: r.burst,
                })
                .unwrap_or(defaults.rate_limit),
            session: session_config(p.session.as_ref(), defaults.session),
            allow_loopback_push: p.allow_loopback_push,
            vapid_public_key,
            metrics_token: p
                .metrics_token_env
                .as_deref()
                .map(|var| env_secret(var, "portal.metrics_token_env").map(Secret::new))
                .transpose()?,
            share_issuer: self.exchange_url(),
        };
        c.check()
            .map_err(|e| anyhow::anyhow!("portal: {}", e.0.join("; ")))?;
        Ok(Some(c))
    }

    /// The staff console's settings, with the catalogue's departments and each procedure's
    /// department on `today`.
    pub fn console(
        &self,
        rules: &oshirase_engine::catalogue::RuleSet,
        today: chrono::NaiveDate,
    ) -> anyhow::Result<Option<oshirase_portal::ConsoleConfig>> {
        let Some(c) = &self.console else {
            return Ok(None);
        };
        oshirase_engine::ids::LocalGovCode::parse(&c.local_gov_code)
            .map_err(|e| anyhow::anyhow!("console.local_gov_code: {e}"))?;
        let defaults = PortalConfig::default();
        let config = oshirase_portal::ConsoleConfig {
            listen: c.listen,
            public_url: c.public_url.clone(),
            jwt: oshirase_portal::JwtConfig {
                issuer: c.jwt.issuer.clone(),
                audience: c.jwt.audience.clone(),
                key: jwt_key(&c.jwt, "console")?,
                ..defaults.jwt
            },
            session: session_config(c.session.as_ref(), defaults.session),
            local_gov_code: c.local_gov_code.clone(),
            departments: departments(rules, today),
            rule_departments: rule_departments(rules),
        };
        config
            .check()
            .map_err(|e| anyhow::anyhow!("{}", e.0.join("; ")))?;
        Ok(Some(config))
    }

    /// Where agencies and parties reach the agencies' API (default `http://{listen}`): the
    /// issuer of its tokens and of the consent redirects; `None` without an exchange.
    pub fn exchange_url(&self) -> Option<String> {
        self.exchange.as_ref().map(|x| {
            x.public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", x.listen))
                .trim_end_matches('/')
                .to_owned()
        })
    }

    /// The municipality each section serves, by its field (`exchange.local_gov_code`).
    pub fn municipalities(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(x) = &self.exchange {
            out.push(("exchange.local_gov_code", x.local_gov_code.as_str()));
        }
        if let Some(c) = &self.console {
            out.push(("console.local_gov_code", c.local_gov_code.as_str()));
        }
        out
    }

    /// Where notices link to.
    pub fn portal_url(&self) -> String {
        self.portal
            .as_ref()
            .map(|p| p.public_url.clone())
            .unwrap_or_else(|| format!("http://{}", default_listen()))
    }

    /// E-mail settings: the message, and SMTP or a directory of .eml files.
    pub fn email(&self) -> anyhow::Result<Option<(EmailConfig, EmailTransport)>> {
        let Some(e) = &self.email else {
            return Ok(None);
        };
        let from = e
            .from
            .parse()
            .map_err(|err| anyhow::anyhow!("email.from: {err}"))?;
        let config = EmailConfig {
            from,
            portal_url: self.portal_url(),
            message_id_domain: e.message_id_domain.clone(),
        };
        let transport = match (&e.smtp, &e.dir) {
            (Some(s), None) => {
                let mut smtp = SmtpConfig::new(s.url.clone());
                smtp.user = s.user.clone();
                smtp.password = s
                    .password_env
                    .as_deref()
                    .map(|v| env_secret(v, "email.smtp.password_env"))
                    .transpose()?;
                smtp.pool_size = s.pool_size;
                smtp.timeout = Duration::from_secs(s.timeout_seconds);
                EmailTransport::Smtp(Box::new(smtp))
            }
            (None, Some(dir)) => EmailTransport::Dir(dir.clone()),
            _ => anyhow::bail!("email: set exactly one of smtp and dir"),
        };
        Ok(Some((config, transport)))
    }

    pub fn webpush(&self) -> anyhow::Result<Option<WebPushConfig>> {
        let Some(w) = &self.webpush else {
            return Ok(None);
        };
        let private = env_secret(&w.vapid_private_key_env, "webpush.vapid_private_key_env")?;
        let vapid = VapidKeys::from_private_key(&private)
            .map_err(|e| anyhow::anyhow!("webpush.vapid_private_key_env: {e}"))?;
        Ok(Some(WebPushConfig {
            vapid,
            subject: w.subject.clone(),
            portal_url: self.portal_url(),
            allow_loopback: w.allow_loopback,
            timeout: Duration::from_secs(w.timeout_seconds),
        }))
    }

    /// The exchange's settings, reading keys from their files and secrets from the
    /// environment; every problem of the agencies at once.
    pub fn exchange(&self) -> anyhow::Result<Option<ExchangeSettings>> {
        let Some(x) = &self.exchange else {
            return Ok(None);
        };
        oshirase_engine::ids::LocalGovCode::parse(&x.local_gov_code)
            .map_err(|e| anyhow::anyhow!("exchange.local_gov_code: {e}"))?;
        let read_key =
            |field: String, path: &Path| -> anyhow::Result<oshirase_exchange::SigningKey> {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{field}: cannot read {}: {e}", path.display()))?;
                oshirase_exchange::SigningKey::from_pem(&path.display().to_string(), &pem)
                    .map_err(|e| anyhow::anyhow!("{field}: {e}"))
            };
        let current = read_key("exchange.signing_key_pem".into(), &x.signing_key_pem)?;
        let previous = x
            .previous_keys_pem
            .iter()
            .enumerate()
            .map(|(i, p)| read_key(format!("exchange.previous_keys_pem[{i}]"), p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let whsk = env_secret(&x.webhook_key_env, "exchange.webhook_key_env")?;
        let whsec = x
            .webhook_hmac_env
            .as_deref()
            .map(|v| env_secret(v, "exchange.webhook_hmac_env"))
            .transpose()?;
        let webhook_keys =
            oshirase_adapters::webhook::SigningKeys::from_secret(&whsk, whsec.as_deref())
                .map_err(|e| anyhow::anyhow!("exchange.webhook_key_env: {e}"))?;
        let public_url = self.exchange_url().unwrap_or_default();
        let mut agencies = Vec::new();
        let mut office_clients = BTreeMap::new();
        for (i, a) in x.agencies.iter().enumerate() {
            if !a.office_rules.is_empty() {
                let rules = a
                    .office_rules
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        oshirase_engine::ids::RuleId::parse(r).map_err(|e| {
                            anyhow::anyhow!("exchange.agencies[{i}].office_rules[{j}]: {e}")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                office_clients.insert(a.id.clone(), rules);
            }
            let jwks = std::fs::read_to_string(&a.client_jwks).map_err(|e| {
                anyhow::anyhow!(
                    "exchange.agencies[{i}].client_jwks: cannot read {}: {e}",
                    a.client_jwks.display()
                )
            })?;
            agencies.push(oshirase_store::AgencySpec {
                id: a.id.clone(),
                name: a.name.clone(),
                endpoint: a.endpoint.clone(),
                client_jwks: jwks,
                dictionary_version: a.dictionary_version,
                purposes: a.purposes.clone(),
            });
        }
        let mut parties = Vec::new();
        for (i, p) in x.parties.iter().enumerate() {
            let jwks = std::fs::read_to_string(&p.client_jwks).map_err(|e| {
                anyhow::anyhow!(
                    "exchange.parties[{i}].client_jwks: cannot read {}: {e}",
                    p.client_jwks.display()
                )
            })?;
            parties.push(oshirase_store::PartySpec {
                id: p.id.clone(),
                name: p.name.clone(),
                purpose: p.purpose.clone(),
                redirect_uris: p.redirect_uris.clone(),
                client_jwks: jwks,
                items: p.items.clone(),
                max_grant_days: p.max_grant_days,
                revocation_uri: p.revocation_uri.clone(),
            });
        }
        anyhow::ensure!(
            x.retention_days >= 1,
            "exchange.retention_days: at least 1 day"
        );
        Ok(Some(ExchangeSettings {
            listen: x.listen,
            local_gov_code: x.local_gov_code.clone(),
            keys: oshirase_exchange::Keys { current, previous },
            webhook_keys,
            api: oshirase_exchange::ApiConfig {
                public_url,
                max_interest_days: x.max_interest_days,
                token_ttl_seconds: i64::from(x.token_ttl_seconds),
                authorization_endpoint: self
                    .portal
                    .as_ref()
                    .map(|p| format!("{}/oauth/authorize", p.public_url.trim_end_matches('/'))),
            },
            delivery: oshirase_exchange::DeliveryPolicy {
                heartbeat: Duration::from_secs(x.heartbeat_minutes.max(1) * 60),
                dead_after: Duration::from_secs(x.dead_after_hours.max(1) * 3600),
                ..oshirase_exchange::DeliveryPolicy::default()
            },
            retention: Duration::from_secs(u64::from(x.retention_days) * 24 * 3600),
            agencies,
            office_clients,
            parties,
        }))
    }

    /// Retry, concurrency and gate settings for the workers of `channel`.
    pub fn policy(&self, channel: &str) -> anyhow::Result<Policy> {
        let d = &self.delivery;
        let mut quiet_hours = Vec::new();
        for (name, span) in &d.quiet_hours {
            let q = quiet(span).map_err(|e| anyhow::anyhow!("delivery.quiet_hours.{name}: {e}"))?;
            quiet_hours.push((name.clone(), q));
        }
        for (what, names) in [
            ("workers", d.workers.keys().collect::<Vec<_>>()),
            ("concurrency", d.concurrency.keys().collect()),
            ("quiet_hours", d.quiet_hours.keys().collect()),
        ] {
            if let Some(bad) = names.into_iter().find(|n| Channel::from_name(n).is_none()) {
                anyhow::bail!("delivery.{what}.{bad}: not a channel (portal, email, webpush)");
            }
        }
        anyhow::ensure!(
            d.batch >= 1,
            "delivery.batch: {} is not a number of rows (at least 1)",
            d.batch
        );
        anyhow::ensure!(
            d.store_errors.give_up_after >= 1,
            "delivery.store_errors.give_up_after: 0 is not a number of failures (at least 1)"
        );
        let defaults = StoreRetry::default();
        Ok(Policy {
            max_attempts: d.max_attempts,
            late_grace_days: d.late_grace_days,
            batch: d.batch,
            lease: seconds("delivery.lease_seconds", d.lease_seconds)?,
            base: seconds("delivery.retry_base_seconds", d.retry_base_seconds)?,
            store_retry: StoreRetry {
                first: seconds(
                    "delivery.store_errors.retry_seconds",
                    d.store_errors.retry_seconds,
                )?,
                max: defaults.max,
                give_up_after: d.store_errors.give_up_after,
            },
            concurrency: d
                .concurrency
                .get(channel)
                .copied()
                .unwrap_or(Policy::default().concurrency)
                .max(1),
            gate: Gate {
                quiet_hours,
                daily_cap: d.daily_cap,
                fallback: d
                    .push_falls_back_to_email
                    .then(|| ("webpush".to_owned(), "email".to_owned())),
            },
            ..Policy::default()
        })
    }

    pub fn workers(&self, channel: &str) -> usize {
        self.delivery.workers.get(channel).copied().unwrap_or(0)
    }
}

/// How e-mail leaves.
pub enum EmailTransport {
    Smtp(Box<SmtpConfig>),
    Dir(PathBuf),
}

fn quiet(span: &str) -> Result<QuietHours, String> {
    let (a, b) = span
        .split_once('-')
        .ok_or_else(|| format!("{span:?} is not HH:MM-HH:MM"))?;
    let t =
        |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|e| format!("{s:?}: {e}"));
    Ok(QuietHours {
        start: t(a)?,
        end: t(b)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid() {
        let c = parse(
            include_str!("../config/oshirase.example.yaml"),
            "config/oshirase.example.yaml",
        )
        .unwrap();
        let p = c.policy("email").unwrap();
        assert_eq!(p.concurrency, 48);
        assert_eq!(c.workers("email"), 2);
        assert!(c.portal.is_some() && c.email.is_some() && c.webpush.is_some());
        let x = c.exchange.as_ref().unwrap();
        assert_eq!(x.agencies.len(), 3);
        assert_eq!(x.parties.len(), 1);
        let catalogue = oshirase_engine::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules"
        )))
        .unwrap();
        // The core system's procedures and the console's departments are the catalogue's.
        for a in &x.agencies {
            for r in &a.office_rules {
                let id = oshirase_engine::ids::RuleId::parse(r).unwrap();
                assert!(catalogue.get(&id).is_some(), "{r}");
            }
        }
        let console = c.console.as_ref().unwrap();
        assert_eq!(console.jwt.algorithm, "RS256");
        assert_eq!(console.local_gov_code, x.local_gov_code);
        // Every purpose the example names is in the bundled table.
        let table = oshirase_engine::purposes::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules"
        )))
        .unwrap();
        for a in &x.agencies {
            for p in &a.purposes {
                assert!(table.purpose(p).is_some(), "{p}");
            }
        }
    }

    #[test]
    fn console_settings_name_their_field() {
        let catalogue = oshirase_engine::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules"
        )))
        .unwrap();
        let text = |code: &str| {
            format!(
                "console:\n  public_url: https://office.example.lg.jp\n  local_gov_code: \"{code}\"\n  jwt: {{issuer: sso, algorithm: HS256, secret_env: OSHIRASE_TEST_UNSET_STAFF_SECRET}}\n"
            )
        };
        let day = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let c = parse(&text("133622"), "x").unwrap();
        let e = c.console(&catalogue, day).unwrap_err().to_string();
        assert!(e.starts_with("console.local_gov_code"), "{e}");
        let c = parse(&text("133621"), "x").unwrap();
        let e = c.console(&catalogue, day).unwrap_err().to_string();
        assert!(
            e.contains("console.jwt.secret_env") && e.contains("OSHIRASE_TEST_UNSET_STAFF_SECRET"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_names_the_line_and_field() {
        let text = "delivery:\n  daily_cap: 2\n  quiet_hour: {}\n";
        let e = parse(text, "oshirase.yaml").unwrap_err().to_string();
        assert!(e.starts_with("oshirase.yaml:3:"), "{e}");
        assert!(e.contains("quiet_hour"), "{e}");
    }

    #[test]
    fn quiet_hours_and_defaults() {
        let c = parse("delivery:\n  quiet_hours: {email: '22:30-07:00'}\n", "x").unwrap();
        let p = c.policy("webpush").unwrap();
        assert_eq!(p.gate.daily_cap, 3);
        assert_eq!(p.concurrency, 64);
        assert_eq!(p.gate.quiet_hours.len(), 1);
        assert_eq!(p.gate.quiet_hours[0].0, "email");
        assert_eq!(
            p.gate.quiet_hours[0].1.start,
            NaiveTime::from_hms_opt(22, 30, 0).unwrap()
        );
        let bad = parse("delivery:\n  quiet_hours: {webpush: '9pm-8am'}\n", "x").unwrap();
        let e = bad.policy("email").unwrap_err().to_string();
        assert!(e.starts_with("delivery.quiet_hours.webpush:"), "{e}");
    }

    #[test]
    fn batch_lease_and_backoff_are_configurable() {
        let p = parse("delivery: {}\n", "x")
            .unwrap()
            .policy("email")
            .unwrap();
        let secs = Duration::from_secs;
        assert_eq!((p.batch, p.lease, p.base), (100, secs(300), secs(60)));
        let c = parse(
            "delivery:\n  batch: 20\n  lease_seconds: 60\n  retry_base_seconds: 0.5\n",
            "x",
        )
        .unwrap();
        let p = c.policy("email").unwrap();
        assert_eq!(
            (p.batch, p.lease, p.base),
            (20, secs(60), Duration::from_millis(500))
        );
        for (text, key) in [
            ("delivery:\n  batch: 0\n", "delivery.batch:"),
            ("delivery:\n  lease_seconds: 0\n", "delivery.lease_seconds:"),
            (
                "delivery:\n  retry_base_seconds: -1\n",
                "delivery.retry_base_seconds:",
            ),
            (
                "delivery:\n  retry_base_seconds: .nan\n",
                "delivery.retry_base_seconds:",
            ),
            (
                "delivery:\n  store_errors: {retry_seconds: 0}\n",
                "delivery.store_errors.retry_seconds:",
            ),
            (
                "delivery:\n  store_errors: {give_up_after: 0}\n",
                "delivery.store_errors.give_up_after:",
            ),
        ] {
            let e = parse(text, "x")
                .unwrap()
                .policy("email")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn store_errors_are_retried_then_given_up() {
        let p = parse("delivery: {}\n", "x")
            .unwrap()
            .policy("email")
            .unwrap();
        assert_eq!(p.store_retry, StoreRetry::default());
        let c = parse(
            "delivery:\n  store_errors: {retry_seconds: 0.25, give_up_after: 4}\n",
            "x",
        )
        .unwrap();
        let r = c.policy("portal").unwrap().store_retry;
        assert_eq!((r.first, r.give_up_after), (Duration::from_millis(250), 4));
        let e = parse("delivery:\n  store_errors: {retries: 4}\n", "x")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x:2:") && e.contains("retries"), "{e}");
    }

    #[test]
    fn the_grace_period_after_a_deadline() {
        let c = parse("delivery: {}\n", "x").unwrap();
        assert_eq!(c.policy("email").unwrap().late_grace_days, 14);
        let c = parse("delivery:\n  late_grace_days: 30\n", "x").unwrap();
        assert_eq!(c.policy("webpush").unwrap().late_grace_days, 30);
        let e = parse("delivery:\n  late_grace_days: -1\n", "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x:2:") && e.contains("late_grace_days"),
            "{e}"
        );
    }

    #[test]
    fn a_misspelt_channel_is_named() {
        let c = parse("delivery:\n  concurrency: {e-mail: 4}\n", "x").unwrap();
        let e = c.policy("email").unwrap_err().to_string();
        assert_eq!(
            e,
            "delivery.concurrency.e-mail: not a channel (portal, email, webpush)"
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_named_when_missing() {
        let c = parse(
            "portal:\n  public_url: https://portal.example.lg.jp\n  jwt: {issuer: idp, algorithm: HS256, secret_env: OSHIRASE_TEST_UNSET_SECRET}\n",
            "x",
        )
        .unwrap();
        let e = c.portal(None).unwrap_err().to_string();
        assert!(e.contains("OSHIRASE_TEST_UNSET_SECRET"), "{e}");
    }
}
