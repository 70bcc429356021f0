//! Web push notices (RFC 8030 with VAPID, RFC 8292, and aes128gcm, RFC 8291). The message
//! carries the notice's title, a short text and a link to the portal; the details stay behind
//! the portal's authentication. Its `Topic` is derived from the decision key, so a repeat after
//! a crash replaces the first message on the push service instead of adding a second one.
//!
//! The web-push crate builds and encrypts the message; requests go out through one pooled
//! reqwest client, so that status codes and `Retry-After` reach the outbox contract intact.
//! A signed VAPID token is kept per push service origin and reused for an hour: signing each
//! request would cost more than the encryption.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use oshirase_engine::calendar;
use oshirase_engine::clock::{self, in_tokyo, jst, Clock, SystemClock};
use oshirase_engine::eval::DecisionKey;
use oshirase_engine::wording::{self, DateStyle};
use oshirase_service::outbox::{Channel, Delivery, Unhealthy};
use oshirase_store::{OutboxItem, PushSubscription, Store};
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use web_push::{
    ContentEncoding, PartialVapidSignatureBuilder, SubscriptionInfo, Urgency, VapidSignature,
    VapidSignatureBuilder, WebPushMessageBuilder,
};

/// The largest payload (JSON, before encryption) a notice may have. Push services take 4 KB
/// of encrypted body; staying at half leaves room for every service's overhead.
pub const MAX_PAYLOAD: usize = 2048;
/// Payloads are padded to a multiple of this many bytes.
pub const PAD_TO: usize = 256;
/// Push services keep a message at most four weeks.
pub const MAX_TTL: u32 = 4 * 7 * 24 * 3600;
/// How long a notice without a deadline waits for an offline device.
pub const DEFAULT_TTL: u32 = 24 * 3600;
/// A notice whose deadline is this many days away or fewer is sent with `Urgency: high`.
pub const URGENT_DAYS: i64 = 3;
/// A VAPID token (valid 12 hours; RFC 8292 allows up to 24) is signed again after this long,
/// so a cached one always has hours left.
const TOKEN_REUSE: Duration = Duration::from_secs(3600);

/// What is wrong with a web push setting, a key or an endpoint. An endpoint is a capability
/// URL: messages name its host only; a private key is a secret: messages never quote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebPushError {
    #[error("the VAPID private key {0}")]
    PrivateKey(String),
    #[error("the VAPID public key {0}")]
    PublicKey(String),
    #[error("the push endpoint {0}")]
    Endpoint(String),
    #[error("the VAPID subject {0:?} must be a mailto: address or an https: URL where the push service can reach the sender")]
    Subject(String),
    #[error("the portal URL {url:?} {problem}")]
    PortalUrl { url: String, problem: String },
    #[error("the web push timeout must be more than zero")]
    Timeout,
    #[error("cannot build the HTTP client for web push: {0}")]
    Client(String),
    #[error("cannot sign a VAPID token: {0}")]
    Sign(String),
    #[error("the deadline {0} has passed")]
    DeadlinePassed(NaiveDate),
}

type Result<T> = std::result::Result<T, WebPushError>;

/// A VAPID key pair, both halves base64url without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct VapidKeys {
    /// The raw 32-byte P-256 private scalar. A secret: never printed.
    pub private_key: String,
    /// The uncompressed 65-byte public point: what browsers take as `applicationServerKey`.
    pub public_key: String,
}

impl fmt::Debug for VapidKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKeys")
            .field("private_key", &"***")
            .field("public_key", &self.public_key)
            .finish()
    }
}

impl VapidKeys {
    /// The key pair of a configured private key (base64url of the raw 32-byte scalar).
    pub fn from_private_key(private_key: &str) -> Result<Self> {
        let signer = signer(private_key)?;
        Ok(Self {
            private_key: URL_SAFE_NO_PAD.encode(decode_private(private_key)?),
            public_key: URL_SAFE_NO_PAD.encode(signer.get_public_key()),
        })
    }

    /// Checks a configured pair: the private key is a P-256 key and the public key is its own.
    pub fn check(&self) -> Result<()> {
        let derived = Self::from_private_key(&self.private_key)?;
        let configured = URL_SAFE_NO_PAD
            .decode(self.public_key.trim().trim_end_matches('='))
            .map_err(|e| WebPushError::PublicKey(format!("is not base64url: {e}")))?;
        if configured.len() != 65 || configured[0] != 4 {
            return Err(WebPushError::PublicKey(format!(
                "must be an uncompressed P-256 point (65 bytes starting with 0x04), got {} bytes",
                configured.len()
            )));
        }
        if derived.public_key != URL_SAFE_NO_PAD.encode(&configured) {
            return Err(WebPushError::PublicKey(
                "does not belong to the private key; configure the pair that `oshirase vapid keygen` printed together"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn decode_private(private_key: &str) -> Result<Vec<u8>> {
    let raw = URL_SAFE_NO_PAD
        .decode(private_key.trim().trim_end_matches('='))
        // The decoder's detail would quote a character of the secret.
        .map_err(|_| WebPushError::PrivateKey("is not base64url".into()))?;
    if raw.len() != 32 {
        return Err(WebPushError::PrivateKey(format!(
            "must be the raw 32-byte P-256 scalar in base64url (43 characters), got {} bytes",
            raw.len()
        )));
    }
    Ok(raw)
}

fn signer(private_key: &str) -> Result<PartialVapidSignatureBuilder> {
    let raw = decode_private(private_key)?;
    VapidSignatureBuilder::from_base64_no_sub(&URL_SAFE_NO_PAD.encode(raw))
        .map_err(|_| WebPushError::PrivateKey("is not a valid P-256 private key".into()))
}

/// A new VAPID key pair from the operating system's random source.
///
/// # Panics
/// If the operating system has no random source to read.
pub fn generate_vapid_keys() -> VapidKeys {
    loop {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the operating system's random source is readable");
        // Zero or a value at or above the group order is no key (odds about 2^-32): draw again.
        if let Ok(keys) = VapidKeys::from_private_key(&URL_SAFE_NO_PAD.encode(raw)) {
            return keys;
        }
    }
}

/// Hosts of the push services browsers use: Chrome/Edge-on-Android (FCM), Firefox (autopush),
/// Edge on Windows (WNS) and Safari (APNs web push). `*.` means any subdomain.
/// `jmt17.google.com` is FCM too: Chromium hands it out on every channel but Google's Stable
/// one (Beta, Dev, Canary, and the Chromium that Linux distributions ship).
pub const PUSH_SERVICES: &[&str] = &[
    "fcm.googleapis.com",
    "jmt17.google.com",
    "updates.push.services.mozilla.com",
    "*.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
    "*.push.apple.com",
];

/// Longest push endpoint accepted.
pub const MAX_ENDPOINT_BYTES: usize = 2048;

/// Whether notices may be posted to `endpoint`: https on a known push service, or, when
/// `allow_loopback` (tests and local push services), http(s) on 127.0.0.1, ::1 or localhost.
/// An endpoint is a capability URL: errors name its host only.
pub fn check_endpoint(endpoint: &str, allow_loopback: bool) -> Result<()> {
    let bad = |why: String| Err(WebPushError::Endpoint(why));
    // Real push services' endpoints are a few hundred bytes; this bounds what is stored.
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return bad(format!("is longer than {MAX_ENDPOINT_BYTES} bytes"));
    }
    let url =
        Url::parse(endpoint).map_err(|e| WebPushError::Endpoint(format!("is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return bad("carries no user name or password".into());
    }
    // The URL parser normalises hosts (`127.1`, `[0::1]`, upper case), so spellings compare.
    let Some(host) = url.host_str() else {
        return bad("has no host".into());
    };
    let loopback = matches!(host, "127.0.0.1" | "[::1]" | "localhost");
    if loopback {
        if !allow_loopback {
            return bad(format!(
                "is on {host}, a loopback address, which only tests allow"
            ));
        }
        return match url.scheme() {
            "http" | "https" => Ok(()),
            s => bad(format!("on {host} uses {s}:, not http(s)")),
        };
    }
    let known = PUSH_SERVICES.iter().any(|p| match p.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => host == *p,
    });
    if !known {
        return bad(format!("host {host} is not a known push service"));
    }
    if url.scheme() != "https" {
        return bad(format!("on {host} uses {}:, not https", url.scheme()));
    }
    if url.port().is_some() {
        return bad(format!("on {host} names a port; push services use 443"));
    }
    Ok(())
}

/// The web push channel's settings.
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    pub vapid: VapidKeys,
    /// Who runs the sender, for push services to reach: `mailto:` or `https:`.
    pub subject: String,
    /// Base URL of the resident portal; notices link to `{portal_url}/notices/{key}`.
    pub portal_url: String,
    /// Allow endpoints on loopback addresses (tests and local push services only).
    pub allow_loopback: bool,
    /// For one request to a push service, connection included.
    pub timeout: Duration,
}

/// What is posted for one notice, the same for each of the recipient's subscriptions.
struct Plan {
    full: Vec<u8>,
    /// Title and link only, for a push service that refuses the full payload (413).
    short: Vec<u8>,
    ttl: u32,
    urgency: Urgency,
    topic: String,
}

/// What one subscription did.
enum Outcome {
    Delivered,
    Gone(String),
    Retry(Option<Duration>, String),
    Permanent(String),
}

/// Posts each notice to every push subscription of its recipient.
pub struct WebPushChannel {
    store: Store,
    signer: PartialVapidSignatureBuilder,
    subject: String,
    portal_url: String,
    allow_loopback: bool,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Push service origin → (signed at, token).
    tokens: Mutex<HashMap<String, (Instant, VapidSignature)>>,
}

impl WebPushChannel {
    /// Checks the configuration (the key pair, the subject, the portal URL) and builds the
    /// HTTP client. Time comes from the system clock; see `with_clock`.
    pub fn new(store: Store, config: WebPushConfig) -> Result<Self> {
        config.vapid.check()?;
        let signer = signer(&config.vapid.private_key)?;
        if !(config.subject.starts_with("mailto:") && config.subject.len() > 7
            || config.subject.starts_with("https://") && Url::parse(&config.subject).is_ok())
        {
            return Err(WebPushError::Subject(config.subject));
        }
        let portal_url = |problem: String| WebPushError::PortalUrl {
            url: config.portal_url.clone(),
            problem,
        };
        let portal =
            Url::parse(&config.portal_url).map_err(|e| portal_url(format!("is not a URL: {e}")))?;
        if !matches!(portal.scheme(), "http" | "https") {
            return Err(portal_url("must be http(s)".into()));
        }
        if config.timeout.is_zero() {
            return Err(WebPushError::Timeout);
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // An endpoint was checked against the allow-list; a redirect would leave it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oshirase/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebPushError::Client(e.to_string()))?;
        Ok(Self {
            store,
            signer,
            subject: config.subject,
            portal_url: config.portal_url.trim_end_matches('/').to_owned(),
            allow_loopback: config.allow_loopback,
            client,
            clock: Arc::new(SystemClock),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The clock that TTLs, urgency and `Retry-After` dates are measured against.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The `Topic` of a notice: base64url of the first 24 bytes of SHA-256 of the decision key
    /// (32 characters, the most RFC 8030 allows). A repeat replaces an undelivered first send.
    pub fn topic(decision_key: &DecisionKey) -> String {
        URL_SAFE_NO_PAD.encode(&Sha256::digest(decision_key.as_str().as_bytes())[..24])
    }

    /// The `Topic` of an outbox row: the decision key's for the notice, and for status news
    /// one derived from the key and the news topic, so that news never replaces the notice.
    pub fn item_topic(item: &OutboxItem) -> String {
        match &item.news {
            None => Self::topic(&item.decision_key),
            Some(news) => URL_SAFE_NO_PAD.encode(
                &Sha256::digest(format!("{}\n{}", item.decision_key, news.topic()).as_bytes())
                    [..24],
            ),
        }
    }

    /// The payload of a notice as JSON bytes: `{"title", "body", "url"}` under `MAX_PAYLOAD`,
    /// the body (then the title) cut short if needed.
    pub fn payload(&self, item: &OutboxItem) -> Vec<u8> {
        let (title, body) = heading(item);
        fit(&title, &body, &self.link(item))
    }

    fn link(&self, item: &OutboxItem) -> String {
        format!("{}/notices/{}", self.portal_url, item.decision_key)
    }

    /// The `Authorization` header for requests to `endpoint`'s push service: a VAPID token
    /// for its origin, reused for an hour.
    pub fn authorization(&self, endpoint: &str) -> Result<String> {
        let sig = self.token(endpoint)?;
        Ok(format!(
            "vapid t={}, k={}",
            sig.auth_t,
            URL_SAFE_NO_PAD.encode(&sig.auth_k)
        ))
    }

    fn token(&self, endpoint: &str) -> Result<VapidSignature> {
        let url = Url::parse(endpoint)
            .map_err(|e| WebPushError::Endpoint(format!("is not a URL: {e}")))?;
        // The audience is the origin with its port (RFC 8292 §2); web-push alone drops the port.
        let origin = url.origin().ascii_serialization();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, sig)) = tokens.get(&origin) {
            if at.elapsed() < TOKEN_REUSE {
                return Ok(sig.clone());
            }
        }
        drop(tokens);
        let sig = self.sign(&origin)?;
        tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(origin, (Instant::now(), sig.clone()));
        Ok(sig)
    }

    fn sign(&self, origin: &str) -> Result<VapidSignature> {
        let info = SubscriptionInfo::new(origin, "", "");
        let mut builder = self.signer.clone().add_sub_info(&info);
        builder.add_claim("aud", origin);
        builder.add_claim("sub", self.subject.as_str());
        // `exp` is the builder's: 12 hours from the real time (a push service checks it
        // against its own clock, so the injected clock has no say here).
        builder
            .build()
            .map_err(|e| WebPushError::Sign(e.to_string()))
    }

    /// TTL, urgency and topic for `item` at `now`; `Err` when its deadline has passed.
    fn plan(&self, item: &OutboxItem, now: DateTime<FixedOffset>) -> Result<Plan> {
        let (ttl, urgency) = match item.deadline {
            None => (DEFAULT_TTL, Urgency::Normal),
            Some(d) => {
                // The deadline holds to the end of its day in Asia/Tokyo.
                let end = in_tokyo(calendar::day_after(d), NaiveTime::MIN);
                let left = clock::until(now, end).ok_or(WebPushError::DeadlinePassed(d))?;
                let today = now.with_timezone(&jst()).date_naive();
                let urgency = if calendar::days_between(today, d) <= URGENT_DAYS {
                    Urgency::High
                } else {
                    Urgency::Normal
                };
                (left.as_secs().min(u64::from(MAX_TTL)) as u32, urgency)
            }
        };
        Ok(Plan {
            full: self.payload(item),
            short: fit(&heading(item).0, "", &self.link(item)),
            ttl,
            urgency,
            topic: Self::item_topic(item),
        })
    }

    /// Posts `payload` to one subscription: the HTTP status and headers, or a transport error.
    async fn post(
        &self,
        sub: &PushSubscription,
        plan: &Plan,
        payload: &[u8],
    ) -> std::result::Result<(StatusCode, HeaderMap), Outcome> {
        let info = SubscriptionInfo::new(
            sub.endpoint.as_str(),
            sub.p256dh.as_str(),
            sub.auth.as_str(),
        );
        let token = self
            .token(&sub.endpoint)
            .map_err(|e| Outcome::Permanent(format!("subscription {}: {e}", sub.id)))?;
        let mut builder = WebPushMessageBuilder::new(&info);
        builder.set_payload(ContentEncoding::Aes128Gcm, payload);
        builder.set_ttl(plan.ttl);
        builder.set_urgency(plan.urgency);
        builder.set_topic(plan.topic.clone());
        builder.set_vapid_signature(token);
        let message = builder.build().map_err(|e| {
            Outcome::Permanent(format!(
                "subscription {}: cannot encrypt for its keys: {e}",
                sub.id
            ))
        })?;
        let Some(body) = message.payload else {
            return Err(Outcome::Permanent(format!(
                "subscription {}: the message has no payload",
                sub.id
            )));
        };
        let mut request = self
            .client
            .post(sub.endpoint.as_str())
            .header("TTL", message.ttl.to_string())
            .header("Urgency", plan.urgency.to_string())
            .header("Topic", plan.topic.as_str())
            .header("Content-Encoding", body.content_encoding.to_str())
            .header("Content-Type", "application/octet-stream");
        for (name, value) in body.crypto_headers {
            request = request.header(name, value);
        }
        match request.body(body.content).send().await {
            Ok(response) => Ok((response.status(), response.headers().clone())),
            // Timeouts, refused and dropped connections: the service may be back later.
            Err(e) => Err(Outcome::Retry(
                None,
                format!(
                    "subscription {}: {}",
                    sub.id,
                    crate::http::transport_error(&e.without_url())
                ),
            )),
        }
    }

    async fn push(&self, sub: &PushSubscription, plan: &Plan, item: &OutboxItem) -> Outcome {
        if let Err(e) = check_endpoint(&sub.endpoint, self.allow_loopback) {
            return Outcome::Permanent(format!("subscription {}: {e}", sub.id));
        }
        let (mut status, mut headers) = match self.post(sub, plan, &plan.full).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            (status, headers) = match self.post(sub, plan, &plan.short).await {
                Ok(r) => r,
                Err(o) => return o,
            };
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                return Outcome::Permanent(format!(
                    "subscription {}: 413 even for the title and link alone ({} bytes)",
                    sub.id,
                    plan.short.len()
                ));
            }
        }
        let code = status.as_u16();
        let what = format!("subscription {}: push service answered {status}", sub.id);
        match code {
            200..=299 => Outcome::Delivered,
            404 | 410 => {
                if let Err(e) = self.store.delete_push_subscription(sub.id, None).await {
                    // It will answer the same next time and be deleted then.
                    tracing::warn!(subscription = sub.id, error = %e, "cannot delete an expired push subscription");
                }
                tracing::info!(subscription = sub.id, recipient = %item.recipient, status = code, "push subscription expired and deleted");
                Outcome::Gone(what)
            }
            429 | 500..=599 => {
                let after = crate::http::retry_after(&headers, self.clock.now());
                Outcome::Retry(after, what)
            }
            _ => Outcome::Permanent(what),
        }
    }
}

/// The title and body a push shows for `item`: the notice's title with a short text and the
/// deadline, or for status news only that an application for that notice was updated (not
/// the status nor the office's message: those stay behind the login).
fn heading(item: &OutboxItem) -> (String, String) {
    let title = item.notice.title.ja.clone();
    if item.news.is_some() {
        return ("申請の状況が更新されました".to_owned(), title);
    }
    let deadline = item
        .deadline
        .map(|d| format!("期限: {}", wording::date(d, DateStyle::Seireki)))
        .unwrap_or_default();
    let body = format!("あなたあてのお知らせがあります。申請書は入力済みです。{deadline}");
    (title, body)
}

/// `{"title", "body", "url"}` (no body when `body` is empty) under `MAX_PAYLOAD` bytes,
/// cutting the body, then the title, on a character boundary; padded with trailing spaces.
fn fit(title: &str, body: &str, url: &str) -> Vec<u8> {
    let render = |title: &str, body: &str| {
        let v = if body.is_empty() {
            serde_json::json!({ "title": title, "url": url })
        } else {
            serde_json::json!({ "title": title, "body": body, "url": url })
        };
        serde_json::to_vec(&v).unwrap_or_default()
    };
    let (mut title, mut body) = (title.to_owned(), body.to_owned());
    loop {
        let mut out = render(&title, &body);
        if out.len() <= MAX_PAYLOAD {
            // Pad with JSON whitespace to a multiple of PAD_TO: the push service sees the
            // ciphertext's length, which would otherwise tell one notice's title from another.
            let padded = out.len().div_ceil(PAD_TO) * PAD_TO;
            out.resize(padded.min(MAX_PAYLOAD), b' ');
            return out;
        }
        let over = out.len() - MAX_PAYLOAD;
        let cut = |s: &mut String| {
            let mut at = s.len().saturating_sub(over);
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.truncate(at);
        };
        if !body.is_empty() {
            cut(&mut body);
        } else if !title.is_empty() {
            cut(&mut title);
        } else {
            // Only a portal URL longer than the limit is left; the push service decides.
            return out;
        }
    }
}

impl Channel for WebPushChannel {
    fn name(&self) -> &'static str {
        "webpush"
    }

    async fn send(&self, item: &OutboxItem) -> Delivery {
        let subs = match self.store.push_subscriptions(&item.recipient).await {
            Ok(s) => s,
            Err(e) => {
                return Delivery::Retry {
                    after: None,
                    reason: format!("cannot read push subscriptions: {e}"),
                }
            }
        };
        if subs.is_empty() {
            return Delivery::Gone {
                reason: format!("{} has no push subscription", item.recipient),
            };
        }
        let plan = match self.plan(item, self.clock.now()) {
            Ok(p) => p,
            Err(e) => {
                return Delivery::Permanent {
                    reason: e.to_string(),
                }
            }
        };
        let mut outcomes = Vec::with_capacity(subs.len());
        for sub in &subs {
            outcomes.push(self.push(sub, &plan, item).await);
        }
        aggregate(outcomes)
    }

    /// The VAPID key signs a token.
    async fn health(&self) -> std::result::Result<(), Unhealthy> {
        self.sign("https://fcm.googleapis.com")
            .map(|_| ())
            .map_err(|e| Unhealthy(e.to_string()))
    }
}

/// One subscription delivered is a delivery; otherwise any transient failure is retried;
/// all gone is gone (the worker falls back to e-mail); anything else is permanent.
fn aggregate(outcomes: Vec<Outcome>) -> Delivery {
    if outcomes.iter().any(|o| matches!(o, Outcome::Delivered)) {
        return Delivery::Delivered;
    }
    let mut reasons = Vec::new();
    let (mut retry, mut after, mut permanent) = (false, None::<Duration>, false);
    for o in outcomes {
        match o {
            Outcome::Delivered => {}
            Outcome::Gone(r) => reasons.push(r),
            Outcome::Retry(a, r) => {
                retry = true;
                // Wait for the slowest hint: by then every service asked to wait has had its time.
                after = after.max(a);
                reasons.push(r);
            }
            Outcome::Permanent(r) => {
                permanent = true;
                reasons.push(r);
            }
        }
    }
    let reason = reasons.join("; ");
    if retry {
        Delivery::Retry { after, reason }
    } else if permanent {
        Delivery::Permanent { reason }
    } else {
        Delivery::Gone { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_outside_the_push_services_are_refused() {
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://jmt17.google.com/fcm/send/abc:def",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
            "https://push.services.mozilla.com.x.push.services.mozilla.com/x",
            "https://db5p.notify.windows.com/w/?token=x",
            "https://web.push.apple.com/QFC",
            "https://api.push.apple.com/3/device/x",
        ] {
            assert_eq!(check_endpoint(ok, false), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://fcm.googleapis.com/fcm/send/x", "not https"),
            ("https://fcm.googleapis.com:8443/fcm/send/x", "port"),
            ("https://evil.example/fcm.googleapis.com", "not a known"),
            ("https://fcm.googleapis.com.evil.example/x", "not a known"),
            ("https://jmt18.google.com/fcm/send/x", "not a known"),
            ("https://google.com/fcm/send/x", "not a known"),
            ("https://push.apple.com/x", "not a known"),
            ("https://evilpush.apple.com/x", "not a known"),
            ("https://user:pw@fcm.googleapis.com/x", "user name"),
            ("https://8.8.8.8/x", "not a known"),
            ("http://127.0.0.1:8080/push/x", "loopback"),
            ("http://[::1]:8080/push/x", "loopback"),
            ("http://localhost/push/x", "loopback"),
            ("ftp://localhost/x", "loopback"),
            ("not a url", "not a URL"),
        ] {
            let e = check_endpoint(bad, false).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("/x"), "{bad}: the error shows the path: {e}");
        }
        for ok in [
            "http://127.0.0.1:8080/push/x",
            "https://[::1]/x",
            "http://localhost:1/x",
        ] {
            assert_eq!(check_endpoint(ok, true), Ok(()), "{ok}");
        }
        assert!(check_endpoint("ftp://localhost/x", true).is_err());
        assert!(check_endpoint("http://127.0.0.2/x", true).is_err());
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_clear_errors() {
        let keys = generate_vapid_keys();
        assert_eq!(keys.private_key.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&keys.public_key).unwrap().len(), 65);
        assert_eq!(
            VapidKeys::from_private_key(&keys.private_key).unwrap(),
            keys
        );
        assert_eq!(keys.check(), Ok(()));
        assert_ne!(generate_vapid_keys().private_key, keys.private_key);
        assert!(!format!("{keys:?}").contains(&keys.private_key));

        let other = generate_vapid_keys();
        let mixed = VapidKeys {
            private_key: keys.private_key.clone(),
            public_key: other.public_key,
        };
        assert!(mixed
            .check()
            .unwrap_err()
            .to_string()
            .contains("does not belong"));
        for (bad, why) in [
            ("", "32-byte"),
            ("AAAA", "32-byte"),
            ("not base64!", "not base64url"),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "not a valid P-256",
            ),
            (
                "__________________________________________8",
                "not a valid P-256",
            ),
        ] {
            let e = VapidKeys::from_private_key(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn payloads_stay_under_the_limit_on_a_character_boundary() {
        let long = "長".repeat(2000);
        let p = fit("児童手当", &long, "https://portal.example/notices/k");
        assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
        let short = fit("児童手当", "", "https://portal.example/notices/k");
        assert_eq!(short.len(), PAD_TO);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&short).unwrap()["title"],
            "児童手当"
        );
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["title"], "児童手当");
        assert!(v["body"].as_str().unwrap().starts_with("長長"));
        let p = fit(&long, "本文", "https://portal.example/notices/k");
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert!(p.len() <= MAX_PAYLOAD);
        assert!(v.get("body").is_none() || v["body"] == "");
        assert_eq!(v["url"], "https://portal.example/notices/k");
        // Escaped characters count too.
        let quotes = "\"".repeat(3000);
        assert!(fit("t", &quotes, "u").len() <= MAX_PAYLOAD);
    }

    #[test]
    fn status_news_has_its_own_title_and_topic() {
        use oshirase_engine::rule::Category;
        use oshirase_store::{ApplicationNews, ApplicationStatus, NoticeBody};
        let notice = OutboxItem {
            id: 1,
            decision_key: DecisionKey::parse("jidou-teate-nintei/R1/2026-10-01").unwrap(),
            recipient: "R2".into(),
            channel: "webpush".into(),
            attempts: 0,
            deadline: Some("2026-10-21".parse().unwrap()),
            news: None,
            notice: NoticeBody::titled("児童手当の認定請求", Category::Childcare, false),
            resident: None,
            preferences: None,
        };
        let news = |seq, status| OutboxItem {
            deadline: None,
            news: Some(ApplicationNews { seq, status }),
            ..notice.clone()
        };
        let returned = news(5, ApplicationStatus::Returned);
        assert_eq!(
            heading(&returned),
            (
                "申請の状況が更新されました".to_owned(),
                "児童手当の認定請求".to_owned()
            )
        );
        assert_eq!(heading(&notice).0, "児童手当の認定請求");
        assert!(heading(&notice).1.contains("期限"));
        // The notice keeps the decision key's topic; each piece of news has its own, the same
        // on a retry.
        assert_eq!(
            WebPushChannel::item_topic(&notice),
            WebPushChannel::topic(&notice.decision_key)
        );
        let topic = WebPushChannel::item_topic(&returned);
        assert_eq!(topic.len(), 32);
        assert_eq!(topic, WebPushChannel::item_topic(&returned.clone()));
        assert_ne!(topic, WebPushChannel::item_topic(&notice));
        assert_ne!(
            topic,
            WebPushChannel::item_topic(&news(6, ApplicationStatus::Received))
        );
    }

    #[test]
    fn outcomes_add_up() {
        let d = |o: Vec<Outcome>| aggregate(o);
        let gone = || Outcome::Gone("g".into());
        let retry = |s| Outcome::Retry(Some(Duration::from_secs(s)), "r".into());
        let perm = || Outcome::Permanent("p".into());
        assert_eq!(d(vec![gone(), Outcome::Delivered]), Delivery::Delivered);
        assert!(matches!(
            d(vec![gone(), retry(5), retry(60), perm()]),
            Delivery::Retry { after: Some(a), .. } if a == Duration::from_secs(60)
        ));
        assert!(matches!(d(vec![gone(), gone()]), Delivery::Gone { .. }));
        assert!(matches!(d(vec![]), Delivery::Gone { .. }));
        assert!(
            matches!(d(vec![gone(), perm()]), Delivery::Permanent { reason } if reason == "g; p")
        );
    }
}
