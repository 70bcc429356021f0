//! Agency webhooks against real receivers on 127.0.0.1: the signed request as a receiver sees
//! it, checked by our `verify` and by independent Python libraries (verify_webhook.py), how
//! each answer is classified, and the endpoint verification handshake.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, FixedOffset};
use oshirase_adapters::webhook::{
    self, check_endpoint, verify, KeyError, SigningKeys, WebhookOutcome, WebhookSender,
    CONTENT_TYPE_CLOUDEVENTS, VERIFICATION_EVENT,
};
use oshirase_engine::clock::{self, Clock, SystemClock};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// RFC 8032 test vector 1: the seed, and its public key as the spec's `whpk_` text.
const RFC8032_WHSK: &str = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const RFC8032_WHPK: &str = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
/// The reference libraries' HMAC example (its signature computed with PyPI standardwebhooks).
const EXAMPLE_WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EXAMPLE_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const EXAMPLE_TS: i64 = 1614265330;
const EXAMPLE_BODY: &[u8] = br#"{"test": 2432232314}"#;

fn at(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap()
}

fn event(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://oshirase.example.lg.jp/012345",
        "type": "jp.lg.oshirase.resident.changed",
        "time": "2026-10-01T06:00:00Z",
        "datacontenttype": "application/json",
        "data": { "subscription": "sub-1", "sequence": 42 },
    }))
    .unwrap()
}

/// A request as the receiver read it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

type Headers = Vec<(&'static str, String)>;

struct Reply {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A minimal HTTP/1.1 receiver: one request per connection, answered by `handler`.
struct Receiver {
    url: Url,
    seen: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "http://{}/hooks/oshirase?token=t0ken",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (seen, handler) = (seen.clone(), handler.clone());
                    tokio::spawn(async move { serve(stream, seen, handler).await });
                }
            }
        });
        Self { url, seen, task }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn only_request(&self) -> Request {
        let seen = self.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen[0].clone()
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Request>>>, handler: Handler) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let method = lines.next().unwrap().split(' ').next().unwrap().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .map(|l| l.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request body ended early");
        body.extend_from_slice(&chunk[..n]);
    }
    let request = Request {
        method,
        headers,
        body,
    };
    let answer = handler(&request);
    seen.lock().unwrap().push(request);
    let mut out = format!(
        "HTTP/1.1 {} Test\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.write_all(&answer.body).await;
    let _ = stream.shutdown().await;
}

fn sender(keys: SigningKeys) -> WebhookSender {
    WebhookSender::new(keys, Duration::from_secs(10))
}

// ---------------------------------------------------------------------------------------------
// Keys and signatures
// ---------------------------------------------------------------------------------------------

#[test]
fn signatures_match_the_reference_vectors() {
    let keys = SigningKeys::from_secret(RFC8032_WHSK, Some(EXAMPLE_WHSEC)).unwrap();
    assert_eq!(keys.public_key(), RFC8032_WHPK);
    assert_eq!(keys.ed25519_secret(), RFC8032_WHSK);
    assert_eq!(keys.hmac_secret().as_deref(), Some(EXAMPLE_WHSEC));
    // Ed25519 is deterministic: this is what Python's `cryptography` signs with the same seed.
    assert_eq!(
        keys.sign(EXAMPLE_ID, EXAMPLE_TS, EXAMPLE_BODY),
        "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw== \
         v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    // Without an HMAC secret only v1a is sent.
    let keys = SigningKeys::from_secret(RFC8032_WHSK, None).unwrap();
    assert_eq!(keys.hmac_secret(), None);
    let header = keys.sign(EXAMPLE_ID, EXAMPLE_TS, EXAMPLE_BODY);
    assert!(
        header.starts_with("v1a,") && !header.contains(' '),
        "{header}"
    );
}

#[test]
fn keys_round_trip_through_their_text_forms() {
    let keys = SigningKeys::generate();
    assert!(keys.ed25519_secret().starts_with("whsk_"));
    assert!(keys.public_key().starts_with("whpk_"));
    assert_eq!(keys.hmac_secret(), None);
    assert_ne!(
        SigningKeys::generate().public_key(),
        keys.public_key(),
        "two keys from the random source are the same"
    );
    let whsec = SigningKeys::generate_hmac_secret();
    let again = SigningKeys::from_secret(&keys.ed25519_secret(), Some(&whsec)).unwrap();
    assert_eq!(again.public_key(), keys.public_key());
    assert_eq!(again.hmac_secret(), Some(whsec));
    assert_eq!(
        again.sign("msg_1", 1, b"{}").split(' ').next(),
        Some(keys.sign("msg_1", 1, b"{}").as_str())
    );

    // The 64-byte form (seed, then public key) that libsodium-style tools print; unpadded.
    let seed = STANDARD
        .decode(RFC8032_WHSK.trim_start_matches("whsk_"))
        .unwrap();
    let public = STANDARD
        .decode(RFC8032_WHPK.trim_start_matches("whpk_"))
        .unwrap();
    let pair = format!(
        "whsk_{}",
        STANDARD.encode([seed.clone(), public.clone()].concat())
    );
    let from_pair = SigningKeys::from_secret(pair.trim_end_matches('='), None).unwrap();
    assert_eq!(from_pair.public_key(), RFC8032_WHPK);
    let mut wrong = public;
    wrong[0] ^= 1;
    let mismatched = format!("whsk_{}", STANDARD.encode([seed, wrong].concat()));
    assert_eq!(
        SigningKeys::from_secret(&mismatched, None).unwrap_err(),
        KeyError::SecretMismatch
    );
}

#[test]
fn bad_keys_are_clear_errors_that_never_quote_the_key() {
    let secret_ish = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"; // base64 of "secret…"
    for (whsk, whsec, want) in [
        (format!("whpk_{secret_ish}"), None, KeyError::SecretPrefix),
        ("whsk_not*base64!".into(), None, KeyError::SecretEncoding),
        (
            format!("whsk_{secret_ish}"),
            None,
            KeyError::SecretLength(30),
        ),
        (
            RFC8032_WHSK.into(),
            Some(secret_ish.into()),
            KeyError::HmacPrefix,
        ),
        (
            RFC8032_WHSK.into(),
            Some("whsec_%%%".to_string()),
            KeyError::HmacEncoding,
        ),
        (
            RFC8032_WHSK.into(),
            Some(format!("whsec_{}", STANDARD.encode([7u8; 16]))),
            KeyError::HmacLength(16),
        ),
        (
            RFC8032_WHSK.into(),
            Some(format!("whsec_{}", STANDARD.encode([7u8; 65]))),
            KeyError::HmacLength(65),
        ),
    ] {
        let e = SigningKeys::from_secret(&whsk, whsec.as_deref()).unwrap_err();
        assert_eq!(e, want, "{whsk} {whsec:?}");
        let text = e.to_string();
        assert!(
            !text.contains(secret_ish) && !text.contains("%%%"),
            "{text}"
        );
    }
    let debug = format!(
        "{:?}",
        SigningKeys::from_secret(RFC8032_WHSK, Some(EXAMPLE_WHSEC)).unwrap()
    );
    assert!(debug.contains(RFC8032_WHPK), "{debug}");
    for secret in [&RFC8032_WHSK[5..], &EXAMPLE_WHSEC[6..]] {
        assert!(!debug.contains(secret), "Debug shows a secret: {debug}");
    }
}

#[test]
fn verify_refuses_what_was_not_signed_so() {
    let keys = SigningKeys::from_secret(RFC8032_WHSK, Some(EXAMPLE_WHSEC)).unwrap();
    let header = keys.sign(EXAMPLE_ID, EXAMPLE_TS, EXAMPLE_BODY);
    let ok = |h: &str, now: i64| verify(RFC8032_WHPK, EXAMPLE_ID, EXAMPLE_TS, EXAMPLE_BODY, h, now);
    assert_eq!(ok(&header, EXAMPLE_TS), Ok(()));
    // The spec's 5 minutes, either way.
    assert_eq!(ok(&header, EXAMPLE_TS + 300), Ok(()));
    assert_eq!(ok(&header, EXAMPLE_TS - 300), Ok(()));
    assert!(ok(&header, EXAMPLE_TS + 301)
        .unwrap_err()
        .contains("too old"));
    assert!(ok(&header, EXAMPLE_TS - 301)
        .unwrap_err()
        .contains("after now"));
    // A v1 signature alone is not enough for a receiver holding only the public key.
    let v1_only = header.split(' ').nth(1).unwrap();
    assert!(ok(v1_only, EXAMPLE_TS).unwrap_err().contains("no v1a"));
    // Any one valid signature in the list is enough (key rotation); order does not matter.
    let other = SigningKeys::generate().sign(EXAMPLE_ID, EXAMPLE_TS, EXAMPLE_BODY);
    assert_eq!(ok(&format!("{other} v2,xyz {header}"), EXAMPLE_TS), Ok(()));
    assert!(ok(&other, EXAMPLE_TS)
        .unwrap_err()
        .contains("no v1a signature of the 1"));
    // Another key.
    let stranger = SigningKeys::generate().public_key();
    assert!(verify(
        &stranger,
        EXAMPLE_ID,
        EXAMPLE_TS,
        EXAMPLE_BODY,
        &header,
        EXAMPLE_TS
    )
    .is_err());
    assert!(verify(
        "whsec_abc",
        EXAMPLE_ID,
        EXAMPLE_TS,
        EXAMPLE_BODY,
        &header,
        EXAMPLE_TS
    )
    .unwrap_err()
    .contains("whpk_"));
    // An id with a dot could trade characters with the timestamp.
    assert!(verify(RFC8032_WHPK, "a.1", 2, b"x", &header, 2).is_err());
}

// ---------------------------------------------------------------------------------------------
// The request as a receiver sees it
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_receiver_gets_a_request_whose_signature_verifies_and_breaks_with_any_change() {
    let receiver = Receiver::start(|_| reply(204)).await;
    let keys = SigningKeys::generate();
    let public = keys.public_key();
    let now = at("2026-10-01T06:00:00+09:00");
    let id = webhook::new_message_id();
    let body = event(&id);
    let outcome = sender(keys).send(&receiver.url, &id, &body, now).await;
    assert_eq!(outcome, WebhookOutcome::Delivered);

    let r = receiver.only_request();
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), CONTENT_TYPE_CLOUDEVENTS);
    assert_eq!(r.header("webhook-id"), id);
    assert_eq!(r.header("webhook-timestamp"), now.timestamp().to_string());
    assert_eq!(r.body, body);
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    let sig = r.header("webhook-signature");
    assert!(sig.starts_with("v1a,") && !sig.contains(' '), "{sig}");
    let check =
        |id: &str, ts: i64, body: &[u8]| verify(&public, id, ts, body, sig, now.timestamp());
    assert_eq!(check(&id, ts, &r.body), Ok(()));

    for i in [0, r.body.len() / 2, r.body.len() - 1] {
        let mut tampered = r.body.clone();
        tampered[i] ^= 0x20;
        assert!(check(&id, ts, &tampered).is_err(), "byte {i} changed");
    }
    let mut other_id = id.clone().into_bytes();
    *other_id.last_mut().unwrap() ^= 0x01;
    assert!(check(std::str::from_utf8(&other_id).unwrap(), ts, &r.body).is_err());
    assert!(check(&id, ts + 1, &r.body).is_err());
    assert!(check(&id, ts - 1, &r.body).is_err());
}

#[tokio::test]
async fn independent_libraries_verify_both_signatures() {
    // standardwebhooks checks the timestamp against the real clock, so sign with it.
    let now = SystemClock.now();
    let receiver = Receiver::start(|_| reply(200)).await;
    let keys = SigningKeys::from_secret(
        &SigningKeys::generate().ed25519_secret(),
        Some(&SigningKeys::generate_hmac_secret()),
    )
    .unwrap();
    let (whsec, whpk) = (keys.hmac_secret().unwrap(), keys.public_key());
    let id = webhook::new_message_id();
    let body = event(&id);
    assert_eq!(
        sender(keys).send(&receiver.url, &id, &body, now).await,
        WebhookOutcome::Delivered
    );
    let r = receiver.only_request();
    let sig = r.header("webhook-signature");
    assert!(sig.contains("v1a,") && sig.contains(" v1,"), "{sig}");

    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.json");
    std::fs::write(
        &capture,
        serde_json::to_vec(&json!({
            "headers": r.headers,
            "body_b64": STANDARD.encode(&r.body),
            "whsec": whsec,
            "whpk": whpk,
        }))
        .unwrap(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_webhook.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&capture)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 does not run ({e}): install Python 3, then run scripts/services/agency.sh"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "verify_webhook.py needs Python's standardwebhooks and cryptography: run scripts/services/agency.sh\n{stderr}"
        ),
        _ => panic!("the independent check refused our request: {stderr}"),
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("verified:"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// What each answer means
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_answer_is_delivered_retried_or_refused() {
    let now = at("2026-10-01T06:00:00+09:00");
    let in_two_minutes =
        httpdate::fmt_http_date(clock::after(now, Duration::from_secs(120)).into());
    // (status, headers of the answer, the outcome in short)
    let cases: Vec<(u16, Headers, &str)> = vec![
        (200, vec![], "delivered"),
        (204, vec![], "delivered"),
        (202, vec![], "delivered"),
        (500, vec![], "retry"),
        (503, vec![], "retry"),
        (408, vec![], "retry"),
        (429, vec![("retry-after", "7".into())], "retry 7"),
        (503, vec![("retry-after", in_two_minutes)], "retry 120"),
        // A date already past: no wait.
        (
            503,
            vec![("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".into())],
            "retry 0",
        ),
        // RFC 850, an obsolete form receivers must still be understood in.
        (
            429,
            vec![("retry-after", "Wednesday, 30-Sep-26 21:00:09 GMT".into())],
            "retry 9",
        ),
        (400, vec![], "refused"),
        (401, vec![], "refused"),
        (404, vec![], "refused"),
        (410, vec![], "refused"),
        (413, vec![], "refused"),
        (
            302,
            vec![("location", "https://elsewhere.example/hook?token=x".into())],
            "refused",
        ),
        (307, vec![], "refused"),
    ];
    let keys = SigningKeys::generate();
    let sender = sender(keys);
    for (status, headers, want) in cases {
        let h = headers.clone();
        let receiver = Receiver::start(move |_| Reply {
            status,
            headers: h.clone(),
            body: b"{\"error\": \"busy\"}".to_vec(),
        })
        .await;
        let outcome = sender
            .send(&receiver.url, "msg_1", &event("msg_1"), now)
            .await;
        let got = match &outcome {
            WebhookOutcome::Delivered => "delivered".to_string(),
            WebhookOutcome::Retry { after: None, .. } => "retry".into(),
            WebhookOutcome::Retry { after: Some(a), .. } => format!("retry {}", a.as_secs()),
            WebhookOutcome::Refused { .. } => "refused".into(),
        };
        assert_eq!(got, want, "{status} {headers:?}: {outcome:?}");
        // A redirect is never followed: one request only.
        assert_eq!(receiver.requests().len(), 1, "{status}");
        if let WebhookOutcome::Retry { reason, .. } | WebhookOutcome::Refused { reason } = &outcome
        {
            assert!(reason.contains(&status.to_string()), "{reason}");
            // The host is named, never the path or query, which may hold a token.
            assert!(reason.contains("127.0.0.1:"), "{reason}");
            assert!(
                !reason.contains("t0ken") && !reason.contains("token=x"),
                "{reason}"
            );
            if status != 302 && status != 307 {
                assert!(
                    reason.contains("busy"),
                    "the receiver's answer is quoted: {reason}"
                );
            } else {
                assert!(reason.contains("redirect"), "{reason}");
            }
        }
        if status == 302 {
            let WebhookOutcome::Refused { reason } = &outcome else {
                unreachable!()
            };
            assert!(reason.contains("elsewhere.example"), "{reason}");
        }
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_or_silent_is_retried() {
    let now = at("2026-10-01T06:00:00+09:00");
    // A port nobody listens on any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let down = Url::parse(&format!("http://{addr}/hook?token=t0ken")).unwrap();
    let outcome = sender(SigningKeys::generate())
        .send(&down, "msg_1", &event("msg_1"), now)
        .await;
    let WebhookOutcome::Retry {
        after: None,
        reason,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("cannot connect"), "{reason}");
    assert!(!reason.contains("t0ken"), "{reason}");

    // One that accepts the connection and never answers: the timeout ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/hook", silent.local_addr().unwrap())).unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let quick = WebhookSender::new(SigningKeys::generate(), Duration::from_millis(300));
    let outcome = quick.send(&url, "msg_1", &event("msg_1"), now).await;
    hold.abort();
    let WebhookOutcome::Retry {
        after: None,
        reason,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn an_endpoint_or_id_that_cannot_be_used_is_refused_without_a_request() {
    let now = at("2026-10-01T06:00:00+09:00");
    let receiver = Receiver::start(|_| reply(200)).await;
    let sender = sender(SigningKeys::generate());
    for id in ["", "msg.1", "msg 1"] {
        let outcome = sender.send(&receiver.url, id, b"{}", now).await;
        assert!(
            matches!(&outcome, WebhookOutcome::Refused { reason } if reason.contains("webhook id")),
            "{id:?}: {outcome:?}"
        );
    }
    let plain = Url::parse("http://example.jp/hook").unwrap();
    let outcome = sender.send(&plain, "msg_1", b"{}", now).await;
    assert!(
        matches!(&outcome, WebhookOutcome::Refused { reason } if reason.contains("https")),
        "{outcome:?}"
    );
    assert!(receiver.requests().is_empty());
}

#[test]
fn endpoints_are_https_or_loopback_http() {
    for ok in [
        "https://example.jp/hook",
        "https://agency.example.lg.jp:8443/webhooks/oshirase?k=v",
        "http://127.0.0.1:8080/",
        "http://127.9.9.9/hook",
        "http://[::1]:9000/hook",
        "http://localhost:3000/hook",
    ] {
        assert_eq!(check_endpoint(&Url::parse(ok).unwrap()), Ok(()), "{ok}");
    }
    for (bad, why) in [
        ("http://example.jp", "must use https"),
        ("http://example.jp/hook?token=t0ken", "must use https"),
        ("http://10.0.0.1/hook", "must use https"),
        ("http://127.0.0.1.example.jp/hook", "must use https"),
        ("ftp://example.jp/hook", "not https"),
        ("https://user:pw@example.jp/hook", "user name or password"),
    ] {
        let e = check_endpoint(&Url::parse(bad).unwrap()).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
        assert!(
            !e.contains("/hook") && !e.contains("t0ken") && !e.contains("pw"),
            "{bad}: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoint verification handshake
// ---------------------------------------------------------------------------------------------

/// The challenge of a verification request, after checking that it is one and is signed.
fn challenge_of(r: &Request, public: &str) -> String {
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    verify(
        public,
        r.header("webhook-id"),
        ts,
        &r.body,
        r.header("webhook-signature"),
        ts,
    )
    .unwrap();
    let event: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(event["type"], VERIFICATION_EVENT);
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], r.header("webhook-id"));
    assert_eq!(event["source"], "https://oshirase.example.lg.jp/012345");
    assert_eq!(event["time"], "2026-09-30T21:00:00Z");
    event["data"]["challenge"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_handshake_succeeds_only_when_the_endpoint_echoes_the_challenge() {
    let now = at("2026-10-01T06:00:00+09:00");
    let keys = SigningKeys::generate();
    let public = keys.public_key();
    let sender = sender(keys);
    let source = "https://oshirase.example.lg.jp/012345";

    let p = public.clone();
    let echo = Receiver::start(move |r| Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: serde_json::to_vec(&json!({ "challenge": challenge_of(r, &p) })).unwrap(),
    })
    .await;
    assert_eq!(sender.verify_endpoint(&echo.url, source, now).await, Ok(()));
    assert_eq!(
        sender.verify_endpoint(&echo.url, source, now).await,
        Ok(()),
        "a second handshake (a new challenge) succeeds too"
    );
    let challenges: Vec<String> = echo
        .requests()
        .iter()
        .map(|r| challenge_of(r, &public))
        .collect();
    assert_ne!(challenges[0], challenges[1], "the challenge is random");

    let p = public.clone();
    let wrong = Receiver::start(move |r| {
        let c = challenge_of(r, &p);
        Reply {
            status: 200,
            headers: vec![],
            body: serde_json::to_vec(&json!({ "challenge": format!("{c}x") })).unwrap(),
        }
    })
    .await;
    let e = sender
        .verify_endpoint(&wrong.url, source, now)
        .await
        .unwrap_err();
    assert!(e.contains("different challenge"), "{e}");

    for (status, body, why) in [
        (200, &b"OK"[..], "not JSON"),
        (200, &b"{\"ok\": true}"[..], "no string \"challenge\""),
        (204, &b""[..], "204"),
        (401, &b"bad signature"[..], "401"),
        (301, &b""[..], "redirect"),
    ] {
        let r = Receiver::start(move |_| Reply {
            status,
            headers: vec![],
            body: body.to_vec(),
        })
        .await;
        let e = sender
            .verify_endpoint(&r.url, source, now)
            .await
            .unwrap_err();
        assert!(e.contains(why), "{status}: {e}");
        assert!(!e.contains("t0ken"), "{e}");
    }

    let e = sender
        .verify_endpoint(&Url::parse("http://example.jp/hook").unwrap(), source, now)
        .await
        .unwrap_err();
    assert!(e.contains("https"), "{e}");
}
