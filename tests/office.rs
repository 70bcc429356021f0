//! `oshirase office export` and `oshirase office client` end to end: a SQLite file with one
//! submitted, corrected application, exported as CSV (BOM, Japanese header, CRLF) and as
//! JSON Lines, and the export audited (docs/office.md).

use std::process::{Command, Output};

use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::eval::{Decision, DecisionKey, Recipient, RenderedMessages, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::resident::{Channel, Resident};
use oshirase_engine::rule::{Application, Category, Titles};
use oshirase_store::{AuditEntry, DraftChoice, Store};
use oshirase_testkit::d;
use serde_json::{json, Value};

fn oshirase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A register of one, a decision with a draft, submitted with a correction.
async fn seed(url: &str) {
    let store = Store::open(url).await.unwrap();
    let clock = FixedClock::at_noon(d("2026-10-01"));
    let residents: Vec<Resident> = vec![serde_json::from_value(json!({
        "id": "R10001", "name": {"kanji": "山田 花子", "kana": "ヤマダ ハナコ"},
        "birth_date": "1960-05-01", "sex": 2, "status": {"kind": "resident"},
        "address": {"local_gov_code": "133621", "text": "東京都利島村1番地"},
        "contact": {"portal": true}}))
    .unwrap()];
    let content = serde_json::to_vec(&residents).unwrap();
    store
        .apply_ingest(oshirase_store::IngestBatch {
            source: "register.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &content,
            as_of: Some(d("2026-10-01")),
            rows_in: 1,
            state: &residents,
            events: &[],
            feed_position: None,
            read_at: None,
            now: clock.now(),
        })
        .await
        .unwrap();
    store
        .record_rule_set("test-rules", 1, "tests", clock.now())
        .await
        .unwrap();
    let rule = RuleId::parse("test-procedure").unwrap();
    let subject = ResidentId::parse("R10001").unwrap();
    let decision = Decision {
        key: DecisionKey::new(&rule, &subject, "2026-10-01"),
        rule,
        rule_version: 2,
        category: Category::Pension,
        subject: subject.clone(),
        occurrence: d("2026-10-01"),
        event_id: None,
        notify_on: d("2026-10-01"),
        deadline: None,
        deadline_moved_from: None,
        recipients: vec![Recipient {
            id: subject.clone(),
            role: Role::Subject,
            channels: vec![Channel::Portal],
        }],
        staff_review: None,
        prefill: serde_json::from_value(json!({"name": "山田 花子", "income": 100})).unwrap(),
        form: Default::default(),
        application: Application::Form,
        contact: None,
        recommend: Vec::new(),
        legal_basis: "国民年金法第12条第1項".to_owned(),
        title: Titles {
            ja: "手続".to_owned(),
            en: None,
        },
        message: RenderedMessages {
            ja: "手続のお知らせです。".to_owned(),
            en: None,
        },
        channels: vec![Channel::Portal],
        critical: false,
        urgent: false,
    };
    store
        .commit_day(d("2026-10-01"), "test-rules", 0, [&decision], clock.now())
        .await
        .unwrap();
    let fields = serde_json::from_value(json!({"name": "山田 花子", "income": "=1+1"})).unwrap();
    let entry = AuditEntry::new(
        clock.now(),
        "R10001",
        "draft.submit",
        decision.key.as_str(),
        None,
    );
    store
        .decide_draft(
            &decision.key,
            &subject,
            DraftChoice::Submit(&fields),
            &entry,
        )
        .await
        .unwrap();
    let agency = oshirase_store::AgencySpec {
        id: "kikan".to_owned(),
        name: "基幹業務システム".to_owned(),
        endpoint: None,
        client_jwks: r#"{"keys": []}"#.to_owned(),
        dictionary_version: 1,
        purposes: Vec::new(),
    };
    store.upsert_agency(&agency, clock.now()).await.unwrap();
    store.close().await;
}

#[test]
fn the_export_is_excel_csv_with_japanese_columns_or_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.sqlite");
    let db = db.to_str().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(seed(db));

    let csv = dir.path().join("applications.csv");
    let out = oshirase(&[
        "office",
        "export",
        "--since",
        "2026-10-01",
        "--format",
        "csv",
        "--db",
        db,
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&csv).unwrap();
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "a UTF-8 byte-order mark");
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "受付番号,版,手続,手続ID,手続の版,根拠法令,決定キー,対象者,申請者,続柄・資格,申請日時,状態,状態の日時,担当課からのメッセージ,訂正"
    );
    assert_eq!(
        lines[1],
        "1,1,手続,test-procedure,2,国民年金法第12条第1項,test-procedure/R10001/2026-10-01,R10001,R10001,本人,2026-10-01 12:00:00,申請済み,2026-10-01 12:00:00,,\"income: 100 → \"\"=1+1\"\"\""
    );
    assert_eq!(lines.len(), 3, "{text}");

    // The day after: nothing.
    let out = oshirase(&[
        "office",
        "export",
        "--since",
        "2026-10-02",
        "--format",
        "jsonl",
        "--db",
        db,
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = oshirase(&[
        "office",
        "export",
        "--since",
        "2026-10-01",
        "--format",
        "jsonl",
        "--db",
        db,
    ]);
    assert!(out.status.success());
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["seq"], 1);
    assert_eq!(line["role_ja"], "本人");
    assert_eq!(line["title"], "手続");
    assert_eq!(line["legal_basis"], "国民年金法第12条第1項");
    assert_eq!(
        line["corrections"]["income"],
        json!({"before": 100, "after": "=1+1"})
    );

    // Each export is in the audit log.
    let audit = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open(db).await.unwrap();
        store.audit_entries(Some("applications")).await.unwrap()
    });
    assert_eq!(audit.len(), 3);
    assert!(audit.iter().all(|a| a.action == "application.export"));

    // A core-system scope needs a registered agency client.
    let out = oshirase(&[
        "office",
        "client",
        "--agency",
        "nobody",
        "--rule",
        "test-procedure",
        "--db",
        db,
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = oshirase(&[
        "office",
        "client",
        "--agency",
        "kikan",
        "--rule",
        "test-procedure",
        "--db",
        db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scope = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open(db).await.unwrap();
        store.office_scope("kikan").await.unwrap()
    });
    assert_eq!(scope, Some(vec![RuleId::parse("test-procedure").unwrap()]));
}
