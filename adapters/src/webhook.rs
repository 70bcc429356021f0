//! Agency webhooks, signed per Standard Webhooks 1.0 (docs/webhooks.md).
//!
//! Each request carries `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature`, a space-separated list of `version,base64` signatures over
//! `{id}.{timestamp}.{body}`: always `v1a` (Ed25519, the primary: an agency needs only our
//! public key and cannot forge a message), and `v1` (HMAC-SHA256) as well when the agency was
//! given a shared secret, for receivers whose library knows only `v1`.
//!
//! Keys travel in the spec's text forms: `whsk_` (the Ed25519 secret key), `whpk_` (its public
//! key), `whsec_` (the HMAC secret), each base64 after the prefix. Secrets never appear in
//! `Debug` output or in error messages.

use std::fmt;
use std::time::Duration;

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};

use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use sha2::Sha256;
use url::Url;
use zeroize::Zeroizing;

/// The content type of every request: a CloudEvent in structured mode.
pub const CONTENT_TYPE_CLOUDEVENTS: &str = "application/cloudevents+json; charset=utf-8";
/// The CloudEvent type of the endpoint verification handshake.
pub const VERIFICATION_EVENT: &str = "jp.lg.oshirase.endpoint.verification";
/// How far a timestamp may be from the receiver's clock, either way (the spec's 5 minutes).
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The most of a response body read: enough for any error text or challenge answer, and a
/// receiver cannot make us buffer more.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The request timeout used when none (zero) is given: the spec recommends 15 to 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest `webhook-id` sent or accepted.
pub const MAX_MESSAGE_ID: usize = 256;

/// HMAC secrets the spec allows: 24 to 64 bytes.
const HMAC_MIN: usize = 24;
const HMAC_MAX: usize = 64;
/// Generated HMAC secrets: 256 bits.
const HMAC_GENERATED: usize = 32;
/// How much of a receiver's answer a failure reason quotes.
const QUOTE_CHARS: usize = 200;

const SK_PREFIX: &str = "whsk_";
const PK_PREFIX: &str = "whpk_";
const HMAC_PREFIX: &str = "whsec_";

/// Standard base64, with or without padding: the spec's examples pad, some libraries do not.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What is wrong with a key in its text form. Never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the webhook signing key must start with `whsk_` (an Ed25519 secret key)")]
    SecretPrefix,
    #[error("the webhook signing key is not base64 after `whsk_`")]
    SecretEncoding,
    #[error("the webhook signing key must be 32 bytes (the Ed25519 seed) or 64 (seed and public key) after `whsk_`, got {0} bytes")]
    SecretLength(usize),
    #[error("the webhook signing key's public half does not belong to its seed")]
    SecretMismatch,
    #[error("the webhook public key must start with `whpk_` (an Ed25519 public key)")]
    PublicPrefix,
    #[error("the webhook public key is not base64 after `whpk_`")]
    PublicEncoding,
    #[error("the webhook public key must be 32 bytes after `whpk_`, got {0} bytes")]
    PublicLength(usize),
    #[error("the webhook public key is not a valid Ed25519 point")]
    PublicPoint,
    #[error("the webhook HMAC secret must start with `whsec_`")]
    HmacPrefix,
    #[error("the webhook HMAC secret is not base64 after `whsec_`")]
    HmacEncoding,
    #[error("the webhook HMAC secret must be {HMAC_MIN} to {HMAC_MAX} bytes after `whsec_`, got {0} bytes")]
    HmacLength(usize),
}

/// The municipality's webhook signing keys: an Ed25519 key (`v1a`) and, for agencies that
/// were given one, an HMAC secret (`v1`).
#[derive(Clone)]
pub struct SigningKeys {
    ed25519: SigningKey,
    hmac: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("public_key", &self.public_key())
            .field("ed25519_secret", &"***")
            .field("hmac_secret", &self.hmac.as_ref().map(|_| "***"))
            .finish()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut raw = [0u8; N];
    getrandom::fill(&mut raw).expect("the operating system's random source is readable");
    raw
}

impl SigningKeys {
    /// A new Ed25519 key from the operating system's random source, without an HMAC secret
    /// (the spec asks for a symmetric secret per endpoint: see `generate_hmac_secret`).
    ///
    /// # Panics
    /// If the operating system has no random source to read.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(random::<32>());
        Self {
            ed25519: SigningKey::from_bytes(&seed),
            hmac: None,
        }
    }

    /// A new HMAC secret (`whsec_`, 32 random bytes), for `from_secret`.
    ///
    /// # Panics
    /// If the operating system has no random source to read.
    pub fn generate_hmac_secret() -> String {
        let raw = Zeroizing::new(random::<HMAC_GENERATED>());
        format!("{HMAC_PREFIX}{}", STANDARD.encode(*raw))
    }

    /// Keys from their text forms: `whsk_` + base64 of the 32-byte Ed25519 seed (or of the
    /// 64-byte seed and public key that libsodium-style tools print), and optionally
    /// `whsec_` + base64 of a 24 to 64-byte HMAC secret.
    pub fn from_secret(ed25519_whsk: &str, hmac_whsec: Option<&str>) -> Result<Self, KeyError> {
        let raw = ed25519_whsk
            .trim()
            .strip_prefix(SK_PREFIX)
            .ok_or(KeyError::SecretPrefix)?;
        // The decoder's error would quote a character of the secret.
        let raw = Zeroizing::new(LENIENT.decode(raw).map_err(|_| KeyError::SecretEncoding)?);
        let ed25519 = match raw.len() {
            32 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                seed.copy_from_slice(&raw);
                SigningKey::from_bytes(&seed)
            }
            64 => {
                let mut pair = Zeroizing::new([0u8; 64]);
                pair.copy_from_slice(&raw);
                SigningKey::from_keypair_bytes(&pair).map_err(|_| KeyError::SecretMismatch)?
            }
            n => return Err(KeyError::SecretLength(n)),
        };
        let hmac = hmac_whsec.map(decode_hmac).transpose()?;
        Ok(Self { ed25519, hmac })
    }

    /// The Ed25519 secret key: `whsk_` + base64 of its 32-byte seed. A secret: store it like a
    /// password.
    pub fn ed25519_secret(&self) -> String {
        format!("{SK_PREFIX}{}", STANDARD.encode(self.ed25519.as_bytes()))
    }

    /// The public key, what an agency is given: `whpk_` + base64 of the 32 bytes.
    pub fn public_key(&self) -> String {
        format!(
            "{PK_PREFIX}{}",
            STANDARD.encode(self.ed25519.verifying_key().as_bytes())
        )
    }

    /// The HMAC secret, if there is one: `whsec_` + base64.
    pub fn hmac_secret(&self) -> Option<String> {
        self.hmac
            .as_ref()
            .map(|k| format!("{HMAC_PREFIX}{}", STANDARD.encode(k.as_slice())))
    }

    /// The `webhook-signature` header value for one message: `v1a,…`, then ` v1,…` when there
    /// is an HMAC secret. `msg_id` must not contain `.` (see `send`, which checks it).
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let content = signed_content(msg_id, timestamp, body);
        let v1a = self.ed25519.sign(&content);
        let mut header = format!("v1a,{}", STANDARD.encode(v1a.to_bytes()));
        if let Some(key) = &self.hmac {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
            mac.update(&content);
            header.push_str(" v1,");
            header.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        header
    }
}

fn decode_hmac(whsec: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let raw = whsec
        .trim()
        .strip_prefix(HMAC_PREFIX)
        .ok_or(KeyError::HmacPrefix)?;
    let raw = Zeroizing::new(LENIENT.decode(raw).map_err(|_| KeyError::HmacEncoding)?);
    if !(HMAC_MIN..=HMAC_MAX).contains(&raw.len()) {
        return Err(KeyError::HmacLength(raw.len()));
    }
    Ok(raw)
}

/// `{id}.{timestamp}.{body}`, the bytes both signatures cover.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{msg_id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// Parses a `whpk_` public key.
fn parse_public_key(whpk: &str) -> Result<VerifyingKey, KeyError> {
    let raw = whpk
        .trim()
        .strip_prefix(PK_PREFIX)
        .ok_or(KeyError::PublicPrefix)?;
    let raw = LENIENT.decode(raw).map_err(|_| KeyError::PublicEncoding)?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::PublicLength(raw.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::PublicPoint)
}

/// Whether `id` may be a `webhook-id`: 1 to 256 visible ASCII characters without `.`. A dot
/// would let the id and the timestamp trade places in the signed content.
fn check_message_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_MESSAGE_ID {
        return Err(format!(
            "the webhook id must be 1 to {MAX_MESSAGE_ID} characters, got {}",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| *c == '.' || !c.is_ascii_graphic()) {
        return Err(format!(
            "the webhook id may not contain {c:?} (visible ASCII without `.` only)"
        ));
    }
    Ok(())
}

/// A new message id: `msg_` + 16 random bytes in base64url.
///
/// # Panics
/// If the operating system has no random source to read.
pub fn new_message_id() -> String {
    format!("msg_{}", URL_SAFE_NO_PAD.encode(random::<16>()))
}

/// The receiver's side (for our own tests and the docs' example): checks `header` (a
/// `webhook-signature` value) against an Ed25519 public key (`whpk_`), with the spec's
/// 5-minute tolerance of `timestamp` around `now` (both unix seconds). Accepts when any `v1a`
/// signature in the list verifies; other versions are skipped.
pub fn verify(
    public_key_whpk: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<(), String> {
    let key = parse_public_key(public_key_whpk).map_err(|e| e.to_string())?;
    check_message_id(msg_id)?;
    let tolerance = TOLERANCE.as_secs() as i64;
    if timestamp < now.saturating_sub(tolerance) {
        return Err(format!(
            "the webhook timestamp {timestamp} is more than {tolerance} s before now ({now}): too old, or a replay"
        ));
    }
    if timestamp > now.saturating_add(tolerance) {
        return Err(format!(
            "the webhook timestamp {timestamp} is more than {tolerance} s after now ({now})"
        ));
    }
    let content = signed_content(msg_id, timestamp, body);
    let mut seen = 0;
    for entry in header.split(' ').filter(|e| !e.is_empty()) {
        let Some(sig) = entry.strip_prefix("v1a,") else {
            continue;
        };
        seen += 1;
        let Ok(sig) = LENIENT.decode(sig) else {
            continue;
        };
        let Ok(sig) = Signature::from_slice(&sig) else {
            continue;
        };
        // Strict: no small-order keys or non-canonical signatures, so one message has one
        // valid signature per key.
        if key.verify_strict(&content, &sig).is_ok() {
            return Ok(());
        }
    }
    if seen == 0 {
        Err("the webhook-signature header has no v1a (Ed25519) signature".into())
    } else {
        Err(format!(
            "no v1a signature of the {seen} in the header matches this public key, id, timestamp and body"
        ))
    }
}

/// Whether webhooks may be posted to `endpoint`: https, or http to a loopback address
/// (127.0.0.0/8, ::1, localhost: tests and receivers on the same machine). An endpoint may be
/// a capability URL: errors name its host only.
pub fn check_endpoint(endpoint: &Url) -> Result<(), String> {
    let Some(host) = endpoint.host() else {
        return Err("the webhook endpoint has no host".into());
    };
    if !endpoint.username().is_empty() || endpoint.password().is_some() {
        return Err(format!(
            "the webhook endpoint on {host} carries a user name or password; agencies authenticate us by our signature"
        ));
    }
    match endpoint.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match &host {
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
                url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "the webhook endpoint on {host} must use https (http is allowed only to loopback addresses)"
                ))
            }
        }
        s => Err(format!(
            "the webhook endpoint on {host} uses {s}:, not https"
        )),
    }
}

/// The endpoint's host and port, for messages: the path and query may hold a token.
fn authority(endpoint: &Url) -> String {
    let host = endpoint.host_str().unwrap_or("?");
    match endpoint.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// What became of one webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    Delivered,
    /// Try again later: network error, timeout, 408, 429 (with Retry-After honoured, seconds or
    /// HTTP date), 5xx.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The receiver refused this message for good (other 4xx, e.g. 400/401/403/404/410/413),
    /// a redirect, or the endpoint or id cannot be used: dead letter.
    Refused {
        reason: String,
    },
}

/// A receiver's answer: its status, headers and up to `MAX_RESPONSE_BYTES` of its body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The body went on past `MAX_RESPONSE_BYTES`.
    cut: bool,
}

/// Posts signed CloudEvents to agencies' endpoints.
pub struct WebhookSender {
    keys: SigningKeys,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender with `timeout` for each request, connection included (zero means
    /// `DEFAULT_TIMEOUT`). Redirects are never followed.
    ///
    /// # Panics
    /// If the TLS backend cannot be set up (no usable crypto provider in the build).
    pub fn new(keys: SigningKeys, timeout: Duration) -> Self {
        let timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The endpoint registered (and verified) is the one signed messages go to; a
            // redirect would carry them elsewhere, and the spec says not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oshirase/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client for webhooks builds (rustls with its default provider)");
        Self { keys, client }
    }

    /// The public key receivers verify with (`whpk_`).
    pub fn public_key(&self) -> String {
        self.keys.public_key()
    }

    /// POSTs `body` (a CloudEvents JSON document, content-type
    /// `application/cloudevents+json; charset=utf-8`) signed with the three headers,
    /// `webhook-id` = msg_id, `webhook-timestamp` = `now`.
    pub async fn send(
        &self,
        endpoint: &Url,
        msg_id: &str,
        body: &[u8],
        now: DateTime<FixedOffset>,
    ) -> WebhookOutcome {
        if let Err(reason) = check_endpoint(endpoint).and(check_message_id(msg_id)) {
            return WebhookOutcome::Refused { reason };
        }
        let at = authority(endpoint);
        let answer = match self.post(endpoint, msg_id, body, now).await {
            Ok(a) => a,
            Err(e) => {
                return WebhookOutcome::Retry {
                    after: None,
                    reason: format!("{at}: {}", crate::http::transport_error(&e)),
                }
            }
        };
        classify(&at, &answer, now)
    }

    /// The endpoint verification handshake on registration: POSTs a signed CloudEvent of type
    /// `jp.lg.oshirase.endpoint.verification` whose `data` is `{"challenge": "<random>"}`; the
    /// endpoint proves it is the agency's by answering 200 with JSON `{"challenge": "<the
    /// same>"}`. Err says what went wrong (no secrets).
    pub async fn verify_endpoint(
        &self,
        endpoint: &Url,
        source: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<(), String> {
        check_endpoint(endpoint)?;
        let at = authority(endpoint);
        let challenge = URL_SAFE_NO_PAD.encode(random::<32>());
        let id = new_message_id();
        let event = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": VERIFICATION_EVENT,
            "time": now.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true),
            "datacontenttype": "application/json",
            "data": { "challenge": challenge },
        });
        let body = serde_json::to_vec(&event).expect("a JSON value serialises");
        let answer = self
            .post(endpoint, &id, &body, now)
            .await
            .map_err(|e| format!("verifying {at}: {}", crate::http::transport_error(&e)))?;
        if answer.status != StatusCode::OK {
            let redirect = if answer.status.is_redirection() {
                " (a redirect, which is not followed: register the final URL)"
            } else {
                ""
            };
            return Err(format!(
                "verifying {at}: it answered {}{redirect}, not 200 with the challenge{}",
                answer.status,
                quote(&answer.body)
            ));
        }
        if answer.cut {
            return Err(format!(
                "verifying {at}: its answer is longer than {MAX_RESPONSE_BYTES} bytes, not {{\"challenge\": …}}"
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "verifying {at}: its answer is not JSON ({e}){}",
                quote(&answer.body)
            )
        })?;
        match value.get("challenge").and_then(|c| c.as_str()) {
            Some(c) if c == challenge => Ok(()),
            Some(_) => Err(format!(
                "verifying {at}: it answered a different challenge: the endpoint did not read this request"
            )),
            None => Err(format!(
                "verifying {at}: its JSON answer has no string \"challenge\"{}",
                quote(&answer.body)
            )),
        }
    }

    /// POSTs a Security Event Token (RFC 8935 push delivery, `application/secevent+jwt`):
    /// the token is signed itself, so no webhook signature; the answer is read as a webhook's.
    pub async fn send_set(
        &self,
        endpoint: &Url,
        set: &str,
        now: DateTime<FixedOffset>,
    ) -> WebhookOutcome {
        if let Err(reason) = check_endpoint(endpoint) {
            return WebhookOutcome::Refused { reason };
        }
        let at = authority(endpoint);
        let request = self
            .client
            .post(endpoint.clone())
            .header(CONTENT_TYPE, "application/secevent+jwt")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(set.as_bytes().to_vec());
        match read_answer(request).await {
            Ok(answer) => classify(&at, &answer, now),
            Err(e) => WebhookOutcome::Retry {
                after: None,
                reason: format!("{at}: {}", crate::http::transport_error(&e)),
            },
        }
    }

    async fn post(
        &self,
        endpoint: &Url,
        msg_id: &str,
        body: &[u8],
        now: DateTime<FixedOffset>,
    ) -> Result<Answer, reqwest::Error> {
        let timestamp = now.timestamp();
        let signature = self.keys.sign(msg_id, timestamp, body);
        let request = self
            .client
            .post(endpoint.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_CLOUDEVENTS)
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec());
        read_answer(request).await
    }
}

/// Sends a request and reads its answer, the body cut at `MAX_RESPONSE_BYTES`.
async fn read_answer(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let mut response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let (mut buf, mut cut) = (Vec::new(), false);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - buf.len();
                if chunk.len() > room {
                    buf.extend_from_slice(&chunk[..room]);
                    cut = true;
                    break;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            // The status has arrived; a body cut short changes nothing it says.
            Err(_) => break,
        }
    }
    Ok(Answer {
        status,
        headers,
        body: buf,
        cut,
    })
}

/// The outcome a receiver's status means (Standard Webhooks "Delivery success and failure").
fn classify(at: &str, answer: &Answer, now: DateTime<FixedOffset>) -> WebhookOutcome {
    let status = answer.status;
    let what = format!("{at} answered {status}{}", quote(&answer.body));
    match status.as_u16() {
        200..=299 => WebhookOutcome::Delivered,
        300..=399 => {
            let to = answer
                .headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| Url::parse(l).ok())
                .map(|u| format!(" to {}", authority(&u)))
                .unwrap_or_default();
            WebhookOutcome::Refused {
                reason: format!(
                    "{at} answered {status}, a redirect{to}, which is not followed: register the new URL"
                ),
            }
        }
        408 | 429 | 500..=599 => WebhookOutcome::Retry {
            after: crate::http::retry_after(&answer.headers, now),
            reason: what,
        },
        410 => WebhookOutcome::Refused {
            reason: format!(
                "{what}: the agency no longer takes webhooks here; disable the endpoint"
            ),
        },
        400..=499 => WebhookOutcome::Refused { reason: what },
        // Not a status HTTP defines: a broken receiver or proxy, perhaps fixed later.
        _ => WebhookOutcome::Retry {
            after: None,
            reason: what,
        },
    }
}

/// `: "…"` with the start of a receiver's answer, control characters dropped, or nothing.
fn quote(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTE_CHARS)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_without_dots_or_spaces() {
        for ok in [
            "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            "sub-1:42",
            &new_message_id(),
        ] {
            assert_eq!(check_message_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a.b", "a b", "ä", &"x".repeat(MAX_MESSAGE_ID + 1)] {
            assert!(check_message_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotes_are_short_and_on_one_line() {
        assert_eq!(quote(b""), "");
        assert_eq!(quote(b"bad\r\nsignature"), ": \"bad  signature\"");
        assert_eq!(quote(&[b'x'; 1000]).len(), QUOTE_CHARS + 4);
    }
}
