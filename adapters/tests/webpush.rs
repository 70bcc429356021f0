//! The web push channel against an independent push service (tests/support/push_service.py:
//! Python's `http_ece` decrypts, `cryptography` checks the VAPID signature), with
//! subscriptions in a real SQLite store. The service answers each subscription with the
//! statuses a test plans for it.

use oshirase_engine::eval::DecisionKey;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use oshirase_adapters::webpush::{MAX_PAYLOAD, PAD_TO};
use oshirase_adapters::{generate_vapid_keys, VapidKeys, WebPushChannel, WebPushConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_service::outbox::{self, Channel, Delivery};
use oshirase_store::{OutboxItem, PortalPreferences, Store};
use serde_json::{json, Value};

const KEY: &str = "jidou-teate-nintei/R00701/birth-R00701-2026-10-06";
const PORTAL: &str = "https://portal.example.lg.jp";
const SUBJECT: &str = "mailto:oshirase@example.lg.jp";

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// The push service, killed when dropped.
struct PushService {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl PushService {
    fn start() -> Self {
        match Command::new("python3")
            .args(["-c", "import http_ece, cryptography"])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "the push service needs Python's http_ece and cryptography: run scripts/services/push.sh\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("python3 does not run ({e}): install Python 3, then run scripts/services/push.sh"),
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/push_service.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts the push service");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("the push service did not start (run scripts/services/push.sh): {line:?}")
            });
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// A new subscription answering `responses` in turn (then 201): (endpoint, p256dh, auth).
    async fn subscribe(&self, responses: Value) -> (String, String, String) {
        let r = self
            .http
            .post(format!("{}/subscribe", self.base))
            .body(json!({ "responses": responses }).to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let r: Value = serde_json::from_slice(&r).unwrap();
        let s = |v: &Value| v.as_str().unwrap().to_owned();
        (
            s(&r["endpoint"]),
            s(&r["keys"]["p256dh"]),
            s(&r["keys"]["auth"]),
        )
    }

    /// Subscribes for `resident` in the store; returns the subscription id and endpoint.
    async fn register(&self, store: &Store, resident: &str, responses: Value) -> (i64, String) {
        let (endpoint, p256dh, auth) = self.subscribe(responses).await;
        let id = store
            .add_push_subscription(resident, &endpoint, &p256dh, &auth, clock().now())
            .await
            .unwrap()
            .expect("a new endpoint");
        (id, endpoint)
    }

    /// What the service received: (messages, rejections).
    async fn received(&self) -> (Vec<Value>, Vec<Value>) {
        let r = self
            .http
            .get(format!("{}/messages", self.base))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let r: Value = serde_json::from_slice(&r).unwrap();
        let list = |k: &str| r[k].as_array().unwrap().clone();
        (list("messages"), list("rejections"))
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at_noon(d("2026-10-10")))
}

/// A fresh SQLite store in its own directory.
async fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("oshirase.sqlite").display());
    (dir, Store::open(&url).await.unwrap())
}

fn config(keys: &VapidKeys, allow_loopback: bool) -> WebPushConfig {
    WebPushConfig {
        vapid: keys.clone(),
        subject: SUBJECT.into(),
        portal_url: format!("{PORTAL}/"),
        allow_loopback,
        timeout: Duration::from_secs(10),
    }
}

fn channel(store: &Store, keys: &VapidKeys) -> WebPushChannel {
    WebPushChannel::new(store.clone(), config(keys, true))
        .unwrap()
        .with_clock(clock())
}

fn item(recipient: &str, deadline: Option<&str>) -> OutboxItem {
    OutboxItem {
        id: 7,
        decision_key: DecisionKey::parse(KEY).unwrap(),
        recipient: recipient.into(),
        channel: "webpush".into(),
        attempts: 0,
        deadline: deadline.map(d),
        news: None,
        // A name in the message: it must not reach the push service.
        notice: serde_json::from_value(json!({
            "title": {"ja": "児童手当 認定請求・額改定請求（出生）"},
            "message": {"ja": "植松 蓮 さんのご出生おめでとうございます。"},
            "category": "childcare",
            "recipients": [],
        }))
        .unwrap(),
        resident: None,
        preferences: None,
    }
}

#[tokio::test]
async fn a_notice_arrives_encrypted_with_its_title_link_and_headers() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let keys = generate_vapid_keys();
    let ch = channel(&store, &keys);
    assert_eq!(ch.health().await, Ok(()));
    push.register(&store, "R00079", json!([])).await;

    assert_eq!(
        ch.send(&item("R00079", Some("2026-10-21"))).await,
        Delivery::Delivered
    );
    let (messages, rejections) = push.received().await;
    assert_eq!(rejections, Vec::<Value>::new());
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m["status"], 201);
    let p = &m["payload"];
    assert_eq!(p["title"], "児童手当 認定請求・額改定請求（出生）");
    assert_eq!(p["url"], format!("{PORTAL}/notices/{KEY}"));
    let body = p["body"].as_str().unwrap();
    assert!(body.contains("2026年10月21日"), "{body}");
    let text = p.to_string();
    for secret in ["植松", "東京都利島村54番地", "おめでとう"] {
        assert!(
            !text.contains(secret),
            "the payload carries {secret}: {text}"
        );
    }
    // Padded so that its length does not tell which notice it is.
    let size = m["payload_size"].as_u64().unwrap();
    assert!(
        size <= MAX_PAYLOAD as u64 && size % PAD_TO as u64 == 0,
        "{size}"
    );
    // The deadline holds to the end of 21 October (JST); it is noon on the 10th.
    assert_eq!(m["ttl"], 11 * 86400 + 12 * 3600);
    assert_eq!(m["urgency"], "normal");
    let topic = m["topic"].as_str().unwrap();
    assert_eq!(
        topic,
        WebPushChannel::topic(&DecisionKey::parse(KEY).unwrap())
    );
    assert_eq!(topic.len(), 32);
    assert!(topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    // The push service verified the token with our public key.
    assert_eq!(m["vapid"]["k"], keys.public_key.as_str());
    assert_eq!(m["vapid"]["sub"], SUBJECT);
    assert_eq!(m["vapid"]["aud"], push.base.as_str());
    assert_eq!(store.push_subscriptions("R00079").await.unwrap().len(), 1);
}

#[tokio::test]
async fn ttl_and_urgency_follow_the_deadline() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let ch = channel(&store, &generate_vapid_keys());
    push.register(&store, "R00079", json!([])).await;
    // It is noon on 10 October 2026 (JST).
    let cases = [
        (Some("2026-10-12"), 2 * 86400 + 12 * 3600, "high"),
        (Some("2026-10-13"), 3 * 86400 + 12 * 3600, "high"),
        (Some("2026-10-14"), 4 * 86400 + 12 * 3600, "normal"),
        (Some("2026-10-10"), 12 * 3600, "high"),
        (Some("2027-03-01"), 28 * 86400, "normal"),
        (None, 86400, "normal"),
    ];
    for (deadline, ttl, urgency) in cases {
        assert_eq!(
            ch.send(&item("R00079", deadline)).await,
            Delivery::Delivered,
            "{deadline:?}"
        );
        let (messages, _) = push.received().await;
        let m = messages.last().unwrap();
        assert_eq!(m["ttl"], ttl, "{deadline:?}");
        assert_eq!(m["urgency"], urgency, "{deadline:?}");
        assert_eq!(
            m["payload"]["body"].as_str().unwrap().contains("期限"),
            deadline.is_some()
        );
    }
    // A deadline that has passed is not pushed at all.
    match ch.send(&item("R00079", Some("2026-10-09"))).await {
        Delivery::Permanent { reason } => {
            assert!(reason.contains("2026-10-09 has passed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(push.received().await.0.len(), cases.len());
}

#[tokio::test]
async fn a_repeat_carries_the_same_topic() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let ch = channel(&store, &generate_vapid_keys());
    push.register(&store, "R00079", json!([])).await;
    let first = item("R00079", Some("2026-10-21"));
    ch.send(&first).await;
    // The same outbox row again (a crash before it was settled), then another notice.
    ch.send(&first).await;
    let other = OutboxItem {
        decision_key: DecisionKey::parse("kokumin-nenkin-shutoku/R00079/2026-10-20").unwrap(),
        ..first.clone()
    };
    ch.send(&other).await;
    let (messages, _) = push.received().await;
    let topics: Vec<&str> = messages
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics.len(), 3);
    assert_eq!(topics[0], topics[1]);
    assert_ne!(topics[0], topics[2]);
}

#[tokio::test]
async fn expired_subscriptions_are_deleted_and_the_notice_is_gone() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let ch = channel(&store, &generate_vapid_keys());
    for (resident, status) in [("R00001", 404), ("R00002", 410)] {
        let (id, _) = push.register(&store, resident, json!([status])).await;
        match ch.send(&item(resident, Some("2026-10-21"))).await {
            Delivery::Gone { reason } => {
                assert!(reason.contains(&format!("subscription {id}")), "{reason}");
                assert!(reason.contains(&status.to_string()), "{reason}");
                assert!(
                    !reason.contains("/push/"),
                    "the reason shows the endpoint: {reason}"
                );
            }
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(store.push_subscriptions(resident).await.unwrap(), vec![]);
    }
    // One of two devices expired: the notice is delivered, the dead one deleted silently.
    let (expired, _) = push.register(&store, "R00003", json!([410])).await;
    let (alive, _) = push.register(&store, "R00003", json!([])).await;
    assert_eq!(
        ch.send(&item("R00003", Some("2026-10-21"))).await,
        Delivery::Delivered
    );
    let left: Vec<i64> = store
        .push_subscriptions("R00003")
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, vec![alive]);
    assert_ne!(expired, alive);
    // Nobody subscribed: gone too, so the worker can fall back to e-mail.
    assert!(matches!(
        ch.send(&item("R00004", None)).await,
        Delivery::Gone { .. }
    ));
}

#[tokio::test]
async fn a_payload_too_large_is_sent_again_with_the_title_and_link_only() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let ch = channel(&store, &generate_vapid_keys());
    let (id, _) = push.register(&store, "R00079", json!([413, 201])).await;
    assert_eq!(
        ch.send(&item("R00079", Some("2026-10-21"))).await,
        Delivery::Delivered
    );
    let (messages, _) = push.received().await;
    assert_eq!(messages.len(), 2);
    let (big, small) = (&messages[0], &messages[1]);
    assert_eq!(
        (big["status"].as_u64(), small["status"].as_u64()),
        (Some(413), Some(201))
    );
    assert!(big["payload"]["body"].is_string());
    assert_eq!(
        small["payload"],
        json!({"title": "児童手当 認定請求・額改定請求（出生）", "url": format!("{PORTAL}/notices/{KEY}")})
    );
    assert!(small["body_size"].as_u64() < big["body_size"].as_u64());
    assert_eq!(small["topic"], big["topic"]);

    // Still too large: given up, and the subscription is kept.
    store.delete_push_subscription(id, None).await.unwrap();
    let (id, _) = push.register(&store, "R00079", json!([413, 413])).await;
    match ch.send(&item("R00079", Some("2026-10-21"))).await {
        Delivery::Permanent { reason } => {
            assert!(
                reason.contains(&format!("subscription {id}: 413")),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        push.received().await.0.len(),
        4,
        "one shrunk resend, no more"
    );
    assert_eq!(store.push_subscriptions("R00079").await.unwrap().len(), 1);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_other_refusals_are_permanent() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let ch = channel(&store, &generate_vapid_keys());
    // Noon JST on 10 October is 03:00 UTC; the date form names 90 s later.
    let cases = [
        (
            json!({"status": 429, "retry_after": "120"}),
            Some(120),
            "429",
        ),
        (
            json!({"status": 429, "retry_after": "Sat, 10 Oct 2026 03:01:30 GMT"}),
            Some(90),
            "429",
        ),
        (json!(429), None, "429"),
        (json!(500), None, "500"),
        (json!({"status": 503, "retry_after": "30"}), Some(30), "503"),
    ];
    for (n, (answer, after, code)) in cases.into_iter().enumerate() {
        let resident = format!("R0010{n}");
        push.register(&store, &resident, json!([answer])).await;
        match ch.send(&item(&resident, Some("2026-10-21"))).await {
            Delivery::Retry { after: a, reason } => {
                assert_eq!(a, after.map(Duration::from_secs), "{answer}");
                assert!(reason.contains(code), "{reason}");
            }
            other => panic!("{answer}: {other:?}"),
        }
        // The next attempt goes through (the plan is used up).
        assert_eq!(
            ch.send(&item(&resident, Some("2026-10-21"))).await,
            Delivery::Delivered
        );
        assert_eq!(store.push_subscriptions(&resident).await.unwrap().len(), 1);
    }
    for status in [400, 401, 403] {
        let resident = format!("R0020{status}");
        push.register(&store, &resident, json!([status])).await;
        match ch.send(&item(&resident, Some("2026-10-21"))).await {
            Delivery::Permanent { reason } => {
                assert!(reason.contains(&status.to_string()), "{reason}")
            }
            other => panic!("{status}: {other:?}"),
        }
    }
    // A push service that is not there at all is a transient failure.
    let (_dir2, other) = fresh_store().await;
    let (endpoint, p256dh, auth) = push.subscribe(json!([])).await;
    let unreachable = endpoint.replace(&push.base, "http://127.0.0.1:9");
    other
        .add_push_subscription("R00079", &unreachable, &p256dh, &auth, clock().now())
        .await
        .unwrap();
    match channel(&other, &generate_vapid_keys())
        .send(&item("R00079", None))
        .await
    {
        Delivery::Retry {
            after: None,
            reason,
        } => {
            assert!(reason.contains("cannot connect"), "{reason}");
            assert!(!reason.contains("/push/"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn endpoints_outside_the_allow_list_are_never_contacted() {
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let keys = generate_vapid_keys();
    let (id, _) = push.register(&store, "R00079", json!([])).await;
    // Without allow_loopback the service on 127.0.0.1 is not a push service.
    let strict = WebPushChannel::new(store.clone(), config(&keys, false))
        .unwrap()
        .with_clock(clock());
    match strict.send(&item("R00079", Some("2026-10-21"))).await {
        Delivery::Permanent { reason } => {
            assert!(reason.contains(&format!("subscription {id}")), "{reason}");
            assert!(reason.contains("loopback"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    store
        .add_push_subscription(
            "R00080",
            "https://push.example.net/wpush/secret-token",
            "BMPSCPbhzjTilRRTXpLN-6w_DIr-sAVFOMQO3BjPd-3XKY1ULpuqUKMCTK4Rsl2EfhRLCtYBCtKGMZbj8fc0Hh4",
            "WO-JJRhHeyeljp2xkMKJsQ",
            clock().now(),
        )
        .await
        .unwrap();
    match channel(&store, &keys)
        .send(&item("R00080", Some("2026-10-21")))
        .await
    {
        Delivery::Permanent { reason } => {
            assert!(
                reason.contains("push.example.net is not a known push service"),
                "{reason}"
            );
            assert!(!reason.contains("secret-token"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(push.received().await, (vec![], vec![]));
    // Refused endpoints are kept: the portal decides what to do with them.
    assert_eq!(store.push_subscriptions("R00079").await.unwrap().len(), 1);
    assert_eq!(store.push_subscriptions("R00080").await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_push_service_refuses_forged_tokens() {
    // The deliveries above count only because the service checks tokens: show it does.
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let ch = channel(&store, &generate_vapid_keys());
    let (endpoint, _, _) = push.subscribe(json!([])).await;
    let genuine = ch.authorization(&endpoint).unwrap();
    let (t, _) = genuine.split_once(", k=").unwrap();
    let forged = [
        (
            format!("{t}, k={}", generate_vapid_keys().public_key),
            "bad JWT signature",
        ),
        (
            ch.authorization("https://fcm.googleapis.com/fcm/send/x")
                .unwrap(),
            "is not this service's origin",
        ),
        ("Bearer abc".to_owned(), "not vapid"),
    ];
    for (header, _) in &forged {
        let r = reqwest::Client::new()
            .post(&endpoint)
            .header("Authorization", header)
            .header("TTL", "60")
            .header("Content-Encoding", "aes128gcm")
            .body(vec![0u8; 100])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let (messages, rejections) = push.received().await;
    assert!(messages.is_empty());
    assert_eq!(rejections.len(), forged.len());
    for (r, (_, why)) in rejections.iter().zip(&forged) {
        assert!(r["reason"].as_str().unwrap().contains(why), "{r}");
    }
    // The genuine header is reused, not signed again for every message.
    assert_eq!(ch.authorization(&endpoint).unwrap(), genuine);
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let (_dir, store) = fresh_store().await;
    let keys = generate_vapid_keys();
    type Change = fn(&mut WebPushConfig);
    let cases: [(Change, &str); 5] = [
        (
            |c| c.vapid.public_key = generate_vapid_keys().public_key,
            "does not belong to the private key",
        ),
        (|c| c.vapid.private_key = "AAAA".into(), "32-byte"),
        (|c| c.subject = "oshirase@example.lg.jp".into(), "mailto:"),
        (|c| c.portal_url = "portal".into(), "portal URL"),
        (|c| c.timeout = Duration::ZERO, "timeout"),
    ];
    for (change, why) in cases {
        let mut c = config(&keys, false);
        change(&mut c);
        match WebPushChannel::new(store.clone(), c) {
            Err(e) => assert!(e.to_string().contains(why), "{e}"),
            Ok(_) => panic!("{why}: accepted"),
        }
    }
    let mut c = config(&keys, false);
    c.subject = "https://www.example.lg.jp/contact".into();
    assert!(WebPushChannel::new(store, c).is_ok());
}

/// The worker's push → e-mail fallback, with a town's decisions in the store: a resident's
/// only device answers 410, the subscription is deleted and an e-mail row is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_push_falls_back_to_email_through_the_worker() {
    use oshirase_service::scheduler::Scheduler;
    let push = PushService::start();
    let (_dir, store) = fresh_store().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let day = d("2026-10-01");
    let clock = Arc::new(FixedClock::at_noon(day));
    let town = root.join("fixtures/town.jsonl");
    let snap = oshirase_engine::load_snapshot(&town).unwrap();
    let residents = snap.population.residents().to_vec();
    store
        .apply_ingest(oshirase_store::IngestBatch {
            source: "town.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &std::fs::read(&town).unwrap(),
            as_of: Some(snap.header.as_of),
            rows_in: residents.len(),
            state: &residents,
            events: &[],
            feed_position: None,
            read_at: None,
            now: clock.now(),
        })
        .await
        .unwrap();
    let rules = oshirase_engine::load_dir(&root.join("rules")).unwrap_or_else(|e| panic!("{e}"));
    let mut scheduler = Scheduler::new(store.clone(), Arc::new(rules), clock.clone());
    scheduler.start = Some(d("2026-09-15"));
    scheduler.catch_up(day, |_| {}).await.unwrap();

    // A push recipient with an e-mail address but no e-mail row for the notice (they had
    // muted e-mail on the register), who has since accepted e-mail in the portal.
    let rows = store.outbox_rows(None).await.unwrap();
    let has_email_row = |key: &DecisionKey, who: &str| {
        rows.iter()
            .any(|r| r.channel == "email" && &r.decision_key == key && r.recipient == who)
    };
    let mut target = None;
    for r in rows.iter().filter(|r| r.channel == "webpush") {
        let resident = store.resident(&r.recipient).await.unwrap().unwrap();
        if resident.contact.email.is_some() && !has_email_row(&r.decision_key, &r.recipient) {
            target = Some(r.clone());
            break;
        }
    }
    let target = target.expect("the town has a push recipient without an e-mail row");
    let pushes = rows.iter().filter(|r| r.channel == "webpush").count();
    store
        .set_portal_preferences(
            &target.recipient,
            &PortalPreferences {
                channels: vec![
                    oshirase_engine::resident::Channel::Portal,
                    oshirase_engine::resident::Channel::Email,
                    oshirase_engine::resident::Channel::Webpush,
                ],
                email_consent: true,
                webpush_consent: true,
            },
            clock.now(),
        )
        .await
        .unwrap();
    // The worker sends rows side by side: every request for this recipient may find the
    // subscription before it is deleted, so each answers 410.
    let theirs = rows
        .iter()
        .filter(|r| r.channel == "webpush" && r.recipient == target.recipient)
        .count();
    let (sub, _) = push
        .register(&store, &target.recipient, json!(vec![410; theirs]))
        .await;

    let ch = WebPushChannel::new(store.clone(), config(&generate_vapid_keys(), true))
        .unwrap()
        .with_clock(clock.clone());
    let policy = outbox::Policy {
        gate: outbox::Gate {
            quiet_hours: vec![],
            daily_cap: 0,
            fallback: Some(("webpush".into(), "email".into())),
        },
        ..outbox::Policy::default()
    };
    let report = outbox::Worker::new("push-1", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(report.delivered, 0);
    assert_eq!(report.gone + report.dead, pushes, "{report:?}");
    assert!(report.fallbacks >= 1, "{report:?}");

    let (messages, _) = push.received().await;
    assert!(
        (1..=theirs).contains(&messages.len()),
        "only the target has a device: {} messages for {theirs} rows",
        messages.len()
    );
    assert!(messages.iter().all(|m| m["status"] == 410));
    assert!(messages.iter().any(
        |m| m["payload"]["url"] == format!("{PORTAL}/notices/{}", target.decision_key).as_str()
    ));
    assert!(store
        .push_subscriptions(&target.recipient)
        .await
        .unwrap()
        .iter()
        .all(|s| s.id != sub));
    let after = store.outbox_rows(None).await.unwrap();
    let row = after.iter().find(|r| r.id == target.id).unwrap();
    assert_eq!(row.state, oshirase_store::OutboxState::Gone);
    assert!(row
        .last_error
        .as_deref()
        .unwrap()
        .contains(&format!("subscription {sub}")));
    let email = after
        .iter()
        .find(|r| {
            r.channel == "email"
                && r.decision_key == target.decision_key
                && r.recipient == target.recipient
        })
        .expect("an e-mail row was queued as the fallback");
    assert_eq!(email.state, oshirase_store::OutboxState::Pending);
}
