//! The e-mail channel's messages, read back by an independent parser (Python's `email`
//! package): Japanese subjects decode, the Message-ID is stable, no draft content leaks.

use std::collections::HashMap;
use std::process::Command;

use oshirase_adapters::{EmailChannel, EmailConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::outbox::{Channel, Delivery};
use oshirase_engine::store::OutboxItem;

fn item(id: i64, recipient: &str) -> OutboxItem {
    OutboxItem {
        id,
        decision_key: "jidou-teate-nintei/R00701/birth-R00701-2026-10-06".into(),
        recipient: recipient.into(),
        channel: "email".into(),
        attempts: 0,
        deadline: Some("2026-10-21".parse().unwrap()),
        decision: serde_json::json!({
            "title": {"ja": "児童手当 認定請求・額改定請求（出生）"},
            "prefill": {"child_name": "植松 蓮", "address": "東京都利島村54番地"},
            "message": {"ja": "植松 蓮 さんのご出生おめでとうございます。"}
        }),
    }
}

fn channel(dir: &std::path::Path) -> EmailChannel {
    let config = EmailConfig {
        from: "利島村役場 <noreply@example.lg.jp>".parse().unwrap(),
        portal_url: "https://portal.example.lg.jp".into(),
        message_id_domain: "oshirase.example.lg.jp".into(),
    };
    let addresses = HashMap::from([("R00079".to_owned(), "ryo94@example.net".to_owned())]);
    EmailChannel::to_dir(
        config,
        dir.to_path_buf(),
        addresses,
        FixedClock::at_noon("2026-10-10".parse().unwrap()).now(),
    )
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
    let ch = channel(dir.path());
    assert_eq!(ch.send(&item(7, "R00079")).await, Delivery::Delivered);
    let m = parse(&dir.path().join("7.eml"));
    assert_eq!(m["subject"], "児童手当 認定請求・額改定請求（出生）");
    assert_eq!(m["to"], "ryo94@example.net");
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
    assert!(text.contains("2026-10-21"));
    for secret in ["植松 蓮", "東京都利島村54番地"] {
        assert!(
            !text.contains(secret) && !m["html"].as_str().unwrap().contains(secret),
            "the draft's {secret} leaked"
        );
    }
    // The same notice to the same person is the same message; to another person it is not.
    let first = m["message_id"].as_str().unwrap().to_owned();
    ch.send(&item(8, "R00079")).await;
    assert_eq!(
        parse(&dir.path().join("8.eml"))["message_id"],
        first.as_str()
    );
    assert_ne!(ch.message_id(&item(7, "R00080")), first);
}

#[tokio::test]
async fn a_recipient_without_an_address_is_a_permanent_failure() {
    let dir = tempfile::tempdir().unwrap();
    match channel(dir.path()).send(&item(9, "R09999")).await {
        Delivery::Permanent { reason } => {
            assert!(reason.contains("R09999 has no e-mail address"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("9.eml").exists());
}
