//! A real SQLite store holding a small register and e-mail notices for it, built through the
//! engine's own ingest and day commit.

#![allow(dead_code)] // each test binary uses part of this

use chrono::{DateTime, FixedOffset, NaiveDate};
use oshirase_engine::eval::{Recipient, RenderedMessages, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::resident::Channel;
use oshirase_engine::rule::{Category, Titles};
use oshirase_engine::{Decision, DecisionKey};
use oshirase_store::{OutboxItem, Store};

/// The subject of every test notice, a newborn; the draft carries the child's name and address.
pub const SUBJECT: &str = "R00701";
/// Draft values that must never leave the portal.
pub const SECRETS: [&str; 2] = ["植松 蓮", "東京都利島村54番地"];
pub const RULE_SET: &str = "test-rules";

/// The e-mail address the register gives `id` (`R1xxxx` residents from `register`).
pub fn address_of(id: &str) -> String {
    format!("{}@example.net", id.to_lowercase())
}

/// A register line for `id`, with an address if `email`.
fn resident(id: &str, n: usize, email: bool) -> String {
    let contact = if email {
        format!(r#"{{"email":"{}","portal":true}}"#, address_of(id))
    } else {
        r#"{"portal":true}"#.to_owned()
    };
    format!(
        r#"{{"id":"{id}","name":{{"kanji":"植松 涼","kana":"ウエマツ リョウ"}},"birth_date":"1994-09-01","sex":1,"status":{{"kind":"resident","since":"1994-09-01","reason":"birth"}},"address":{{"local_gov_code":"133621","postal_code":"100-0301","text":"東京都利島村{n}番地"}},"household":{{"id":"H{n:05}","relationship":"世帯主"}},"contact":{contact},"consents":{{"email":true,"webpush":false}}}}"#
    )
}

/// A fresh SQLite store in `dir` with `with_email` residents `R10001…` who have an address
/// and `without_email` residents after them who have none.
pub async fn register(
    dir: &std::path::Path,
    with_email: usize,
    without_email: usize,
    now: DateTime<FixedOffset>,
) -> Store {
    let url = format!("sqlite://{}", dir.join("oshirase.sqlite").display());
    let store = Store::open(&url).await.expect("a SQLite store");
    let mut text = String::from(
        r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01","local_gov_code":"133621"}"#,
    );
    for i in 0..with_email + without_email {
        let n = 10001 + i;
        text.push('\n');
        text.push_str(&resident(&format!("R{n}"), n, i < with_email));
    }
    oshirase_service::ingest::ingest(&store, "register.jsonl", &text, false, now)
        .await
        .unwrap_or_else(|e| panic!("the test register does not ingest: {e}"));
    store
        .record_rule_set(RULE_SET, 1, "tests", now)
        .await
        .expect("a rule set row");
    store
}

/// The `n`th test notice, about the newborn `SUBJECT`, to `recipient` by e-mail.
pub fn notice(n: usize, recipient: &str, critical: bool) -> Decision {
    let rule = RuleId::parse("jidou-teate-nintei").expect("a rule id");
    let subject = ResidentId::parse(SUBJECT).expect("a resident id");
    let day: NaiveDate = "2026-10-06".parse().expect("a date");
    let mut d = Decision {
        key: DecisionKey::new(&rule, &subject, &format!("birth-{SUBJECT}-{n}")),
        rule,
        rule_version: 1,
        category: Category::Childcare,
        subject,
        occurrence: day,
        event_id: None,
        notify_on: day,
        deadline: Some("2026-10-21".parse().expect("a date")),
        deadline_moved_from: None,
        recipients: vec![Recipient {
            id: ResidentId::parse(recipient).expect("a resident id"),
            role: Role::Guardian,
            channels: vec![Channel::Email],
        }],
        staff_review: None,
        prefill: Default::default(),
        form: Default::default(),
        application: Default::default(),
        contact: None,
        recommend: Vec::new(),
        legal_basis: String::new(),
        title: Titles {
            ja: "児童手当 認定請求・額改定請求（出生）".into(),
            en: None,
        },
        message: RenderedMessages {
            ja: format!("{} さんのご出生おめでとうございます。", SECRETS[0]),
            en: None,
        },
        channels: vec![Channel::Email],
        critical,
        urgent: false,
    };
    d.prefill.insert("child_name".into(), SECRETS[0].into());
    d.prefill.insert("address".into(), SECRETS[1].into());
    d
}

/// Commits `decisions` as one scheduler day: decisions, drafts and e-mail outbox rows.
pub async fn queue(store: &Store, decisions: &[Decision], now: DateTime<FixedOffset>) {
    store
        .commit_day(
            "2026-10-06".parse().expect("a date"),
            RULE_SET,
            0,
            decisions,
            now,
        )
        .await
        .expect("the day commits");
}

/// Claims every due e-mail row, as a worker would (leased for an hour).
pub async fn claim(store: &Store, now: DateTime<FixedOffset>) -> Vec<OutboxItem> {
    store
        .claim_outbox(
            "email",
            "test",
            10_000,
            now,
            oshirase_engine::clock::after(now, std::time::Duration::from_secs(3600)),
        )
        .await
        .expect("claimed rows")
}
