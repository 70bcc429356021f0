//! The e-mail channel's messages, read back by an independent parser (Python's `email`
//! package): Japanese subjects decode, the Message-ID is stable, no draft content leaks.
//! This is the file transport; tests/smtp.rs sends the same messages over SMTP.

#[path = "support/smtp_store.rs"]
mod smtp_store;

use std::process::Command;
use std::sync::Arc;

use oshirase_adapters::{EmailChannel, EmailConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::eval::DecisionKey;
use oshirase_service::outbox::{Channel, Delivery};
use oshirase_store::{OutboxItem, Store};

fn item(id: i64, recipient: &str) -> OutboxItem {
    OutboxItem {
        id,
        decision_key: DecisionKey::parse("jidou-teate-nintei/R00701/birth-R00701-2026-10-06")
            .unwrap(),
        recipient: recipient.into(),
        channel: "email".into(),
        attempts: 0,
        deadline: Some("2026-10-21".parse().unwrap()),
        news: None,
        // A name in the message: it must not reach the e-mail.
        notice: serde_json::from_value(serde_json::json!({
            "title": {"ja": "児童手当 認定請求・額改定請求（出生）"},
            "message": {"ja": "植松 蓮 さんのご出生おめでとうございます。"},
            "category": "childcare",
            "recipients": [],
            "critical": false
        }))
        .unwrap(),
        // Not read with a claim: the channel looks the recipient up in the store.
        resident: None,
        preferences: None,
    }
}

fn config() -> EmailConfig {
    EmailConfig {
        from: "利島村役場 <noreply@example.lg.jp>".parse().unwrap(),
        portal_url: "https://portal.example.lg.jp".into(),
        message_id_domain: "oshirase.example.lg.jp".into(),
    }
}

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at_noon("2026-10-10".parse().unwrap()))
}

/// A register with R10001 (r10001@example.net) and R10002 (no address).
async fn store(dir: &std::path::Path) -> Store {
    smtp_store::register(dir, 1, 1, clock().now()).await
}

fn channel(dir: &std::path::Path, store: Store) -> EmailChannel {
    EmailChannel::to_dir(config(), dir.join("mail"), store, clock()).unwrap()
}

/// Parses an .eml with Python's standard library and returns what it read, as JSON.
fn parse(path: &std::path::Path) -> serde_json::Value {
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
parts = [p.get_content_type() for p in m.walk() if not p.is_multipart()]
text = m.get_body(preferencelist=('plain',)).get_content()
html = m.get_body(preferencelist=('html',)).get_content()
print(json.dumps({"subject": str(m['subject']), "message_id": str(m['message-id']), "to": str(m['to']),
                  "unsubscribe": m['list-unsubscribe'] and str(m['list-unsubscribe']),
                  "from": str(m['from']), "date": str(m['date']), "parts": parts, "text": text, "html": html}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_notice_is_a_short_japanese_message_with_a_portal_link() {
    let dir = tempfile::tempdir().unwrap();
    let ch = channel(dir.path(), store(dir.path()).await);
    assert_eq!(ch.health().await, Ok(()));
    assert_eq!(ch.send(&item(7, "R10001")).await, Delivery::Delivered);
    let m = parse(&dir.path().join("mail/7.eml"));
    assert_eq!(m["subject"], "児童手当 認定請求・額改定請求（出生）");
    assert_eq!(m["to"], "r10001@example.net");
    assert!(m["from"]
        .as_str()
        .unwrap()
        .contains("noreply@example.lg.jp"));
    assert!(
        m["date"].as_str().unwrap().contains("10 Oct 2026"),
        "{}",
        m["date"]
    );
    assert_eq!(m["parts"], serde_json::json!(["text/plain", "text/html"]));
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("https://portal.example.lg.jp/notices/jidou-teate-nintei/R00701/birth-R00701-2026-10-06"), "{text}");
    assert!(text.contains("期限: 2026年10月21日（水）"), "{text}");
    for secret in ["植松 蓮", "東京都利島村54番地"] {
        assert!(
            !text.contains(secret) && !m["html"].as_str().unwrap().contains(secret),
            "the draft's {secret} leaked"
        );
    }
    // The same notice to the same person is the same message; to another person it is not.
    let first = m["message_id"].as_str().unwrap().to_owned();
    assert_eq!(ch.send(&item(8, "R10001")).await, Delivery::Delivered);
    assert_eq!(
        parse(&dir.path().join("mail/8.eml"))["message_id"],
        first.as_str()
    );
    assert_ne!(ch.message_id(&item(7, "R10002")), first);
    assert_eq!(
        m["unsubscribe"],
        "<https://portal.example.lg.jp/preferences>"
    );

    // A critical notice cannot be muted: no unsubscribe link.
    let mut critical = item(9, "R10001");
    critical.notice.critical = true;
    assert_eq!(ch.send(&critical).await, Delivery::Delivered);
    assert_eq!(
        parse(&dir.path().join("mail/9.eml"))["unsubscribe"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_recipient_without_an_address_is_a_permanent_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ch = channel(dir.path(), store(dir.path()).await);
    for (id, recipient) in [(9, "R09999"), (10, "R10002")] {
        match ch.send(&item(id, recipient)).await {
            Delivery::Permanent { reason } => {
                assert!(
                    reason.contains(&format!("{recipient} has no e-mail address")),
                    "{reason}"
                );
                assert!(!reason.contains('@'), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join(format!("mail/{id}.eml")).exists());
    }
}

#[tokio::test]
async fn an_unwritable_directory_is_unhealthy_and_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    // A directory cannot be made below a regular file.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let ch = EmailChannel::to_dir(config(), file.join("mail"), store, clock()).unwrap();
    let err = ch.health().await.unwrap_err();
    assert!(err.to_string().contains("cannot write e-mails to"), "{err}");
    assert!(matches!(
        ch.send(&item(11, "R10001")).await,
        Delivery::Retry { .. }
    ));
}

#[tokio::test]
async fn bad_settings_are_refused_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    for (portal_url, domain, expected) in [
        (
            "portal.example.lg.jp",
            "oshirase.example.lg.jp",
            "portal URL",
        ),
        (
            "https://portal.example.lg.jp/a b",
            "oshirase.example.lg.jp",
            "portal URL",
        ),
        ("https://portal.example.lg.jp", "", "Message-ID domain"),
        ("https://portal.example.lg.jp", "a>b", "Message-ID domain"),
    ] {
        let config = EmailConfig {
            portal_url: portal_url.into(),
            message_id_domain: domain.into(),
            ..config()
        };
        let err = EmailChannel::to_dir(config, dir.path().into(), store.clone(), clock())
            .err()
            .unwrap_or_else(|| panic!("{portal_url} / {domain} was accepted"));
        assert!(err.to_string().contains(expected), "{err}");
    }
}
