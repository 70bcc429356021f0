//! Status news (docs/office.md), on SQLite and PostgreSQL: a status change set by a core
//! system queues outbox rows with the topic `application/{seq}/{status}` for the applicant's
//! e-mail and push channels only, in the change's transaction; the notice's own rows and the
//! portal inbox are left as they were; and the e-mail worker delivers the news through a real
//! SMTP server (MailDev, from `scripts/services/mail.sh`) saying only that the application
//! was updated.

#[path = "../../adapters/tests/support/smtp_servers.rs"]
mod smtp_servers;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use oshirase_adapters::email::SmtpConfig;
use oshirase_adapters::{EmailChannel, EmailConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::eval::{Decision, DecisionKey, Recipient, RenderedMessages, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::resident::{Channel, Resident};
use oshirase_engine::rule::{Application, Category, Titles};
use oshirase_service::outbox::{Gate, Policy, Worker};
use oshirase_store::{
    ApplicationNews, ApplicationStatus, DraftChoice, DraftDecision, OutboxItem, OutboxState,
    PortalPreferences, StatusChange, StatusOutcome, Store,
};
use oshirase_testkit::{d, on_both, sql, TestDb};
use serde_json::{json, Value};
use smtp_servers::MailDev;

const PENSION: &str = "kokumin-nenkin-shutoku/R10001/2026-10-01";
const CHILD: &str = "jidou-teate-nintei/R10002/2026-10-01";
const OTHER: &str = "kokumin-nenkin-shutoku/R10004/2026-10-01";
const PENSION_TITLE: &str = "国民年金の加入のお知らせ";
const CHILD_TITLE: &str = "児童手当の認定請求";
const PORTAL: &str = "https://portal.example.lg.jp";
/// What the office tells the resident on 差戻し: never in an e-mail.
const OFFICE_MESSAGE: &str = "続柄を確認できる書類を添付してください。";

fn address(id: &str) -> String {
    format!("{}@example.net", id.to_lowercase())
}

/// R10001 (e-mail) and her pension proxy R10005 (e-mail); the child R10002 and its guardian
/// R10003 (e-mail and one push subscription); R10004 (the portal only).
fn register() -> Vec<Resident> {
    let addr = json!({"local_gov_code": "133621", "text": "東京都利島村1番地"});
    let both = json!({"email": true, "webpush": true});
    [
        json!({"id": "R10001", "name": {"kanji": "山田 花子", "kana": "ヤマダ ハナコ"}, "birth_date": "1960-05-01", "sex": 2,
               "status": {"kind": "resident"}, "address": addr,
               "contact": {"portal": true, "email": address("R10001")}, "consents": {"email": true},
               "proxies": [{"id": "R10005", "scopes": ["pension"]}]}),
        json!({"id": "R10002", "name": {"kanji": "佐藤 陽", "kana": "サトウ ヒナタ"}, "birth_date": "2021-04-10", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "guardians": [{"id": "R10003"}]}),
        json!({"id": "R10003", "name": {"kanji": "佐藤 一郎", "kana": "サトウ イチロウ"}, "birth_date": "1990-01-01", "sex": 1,
               "status": {"kind": "resident"}, "address": addr,
               "contact": {"portal": true, "email": address("R10003"), "push": 1}, "consents": both}),
        json!({"id": "R10004", "name": {"kanji": "鈴木 次郎", "kana": "スズキ ジロウ"}, "birth_date": "1985-03-03", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true}}),
        json!({"id": "R10005", "name": {"kanji": "田中 三郎", "kana": "タナカ サブロウ"}, "birth_date": "1970-01-01", "sex": 1,
               "status": {"kind": "resident"}, "address": addr,
               "contact": {"portal": true, "email": address("R10005")}, "consents": {"email": true}}),
    ]
    .into_iter()
    .map(|r| serde_json::from_value(r).unwrap())
    .collect()
}

fn decision(
    rule: &str,
    subject: &str,
    title: &str,
    recipients: &[(&str, Role, &[Channel])],
    prefill: Value,
) -> Decision {
    let rule = RuleId::parse(rule).unwrap();
    let subject = ResidentId::parse(subject).unwrap();
    Decision {
        key: DecisionKey::new(&rule, &subject, "2026-10-01"),
        rule,
        rule_version: 2,
        category: Category::Pension,
        subject,
        occurrence: d("2026-10-01"),
        event_id: None,
        notify_on: d("2026-10-01"),
        // Long past when the office answers: news must go out all the same.
        deadline: Some(d("2026-10-15")),
        deadline_moved_from: None,
        recipients: recipients
            .iter()
            .map(|(id, role, channels)| Recipient {
                id: ResidentId::parse(id).unwrap(),
                role: *role,
                channels: channels.to_vec(),
            })
            .collect(),
        staff_review: None,
        prefill: serde_json::from_value(prefill).unwrap(),
        form: Default::default(),
        application: Application::Form,
        contact: None,
        recommend: Vec::new(),
        legal_basis: "国民年金法第12条第1項".to_owned(),
        title: Titles {
            ja: title.to_owned(),
            en: None,
        },
        message: RenderedMessages {
            ja: format!("{title}です。"),
            en: None,
        },
        channels: vec![Channel::Portal, Channel::Email, Channel::Webpush],
        critical: false,
        urgent: false,
    }
}

fn decisions() -> Vec<Decision> {
    use Channel::*;
    vec![
        decision(
            "kokumin-nenkin-shutoku",
            "R10001",
            PENSION_TITLE,
            &[
                ("R10001", Role::Subject, &[Portal, Email]),
                ("R10005", Role::Proxy, &[Portal, Email]),
            ],
            json!({"name": "山田 花子", "annual_income": 1234567}),
        ),
        decision(
            "jidou-teate-nintei",
            "R10002",
            CHILD_TITLE,
            &[("R10003", Role::Guardian, &[Portal, Email, Webpush])],
            json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        ),
        decision(
            "kokumin-nenkin-shutoku",
            "R10004",
            PENSION_TITLE,
            &[("R10004", Role::Subject, &[Portal])],
            json!({"name": "鈴木 次郎"}),
        ),
    ]
}

/// A fresh store with the register and the day's decisions, their drafts and outbox rows.
async fn town(backend: &str) -> (TestDb, Store, Arc<FixedClock>) {
    let db = oshirase_testkit::fresh(backend, "oshirase_news").await;
    let store = Store::open(&db.url).await.unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    let residents = register();
    let content = serde_json::to_vec(&residents).unwrap();
    store
        .apply_ingest(oshirase_store::IngestBatch {
            source: "register.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &content,
            as_of: Some(d("2026-10-01")),
            rows_in: residents.len(),
            state: &residents,
            events: &[],
            feed_position: None,
            read_at: None,
            now: clock.now(),
        })
        .await
        .unwrap();
    store
        .record_rule_set("test-rules", 3, "tests", clock.now())
        .await
        .unwrap();
    store
        .commit_day(d("2026-10-01"), "test-rules", 0, &decisions(), clock.now())
        .await
        .unwrap();
    (db, store, clock)
}

async fn submit(store: &Store, k: &str, reader: &str, fields: Value, now: DateTime<FixedOffset>) {
    let fields = serde_json::from_value(fields).unwrap();
    let entry = oshirase_store::AuditEntry::new(now, reader, "draft.submit", k, None);
    let done = store
        .decide_draft(
            &DecisionKey::parse(k).unwrap(),
            &ResidentId::parse(reader).unwrap(),
            DraftChoice::Submit(&fields),
            &entry,
        )
        .await
        .unwrap();
    assert_eq!(done, DraftDecision::Done, "{k}");
}

fn scope() -> Vec<RuleId> {
    ["kokumin-nenkin-shutoku", "jidou-teate-nintei"]
        .iter()
        .map(|r| RuleId::parse(r).unwrap())
        .collect()
}

/// Sets application `seq` to `to` as the core system `kikan`.
async fn set(
    store: &Store,
    seq: i64,
    to: ApplicationStatus,
    message: Option<&str>,
    now: DateTime<FixedOffset>,
) -> StatusOutcome {
    let rules = scope();
    store
        .change_application_status(StatusChange {
            seq,
            to,
            message,
            actor: "office:kikan",
            rules: &rules,
            now,
        })
        .await
        .unwrap()
}

/// Every outbox row as (decision key, recipient, channel, topic), in id order.
async fn outbox(db: &TestDb) -> Vec<(String, String, String, String)> {
    sql::rows(
        &db.url,
        "SELECT decision_key, recipient, channel, topic FROM outbox ORDER BY id",
    )
    .await
    .iter()
    .map(|r| {
        (
            r[0].text().to_owned(),
            r[1].text().to_owned(),
            r[2].text().to_owned(),
            r[3].text().to_owned(),
        )
    })
    .collect()
}

fn row(key: &str, recipient: &str, channel: &str, topic: &str) -> (String, String, String, String) {
    (key.into(), recipient.into(), channel.into(), topic.into())
}

async fn claim(store: &Store, channel: &str, now: DateTime<FixedOffset>) -> Vec<OutboxItem> {
    store
        .claim_outbox(
            channel,
            "test",
            100,
            now,
            oshirase_engine::clock::after(now, Duration::from_secs(60)),
        )
        .await
        .unwrap()
}

async fn news_goes_to_the_applicant_by_email_and_push_only(backend: &str) {
    use ApplicationStatus::*;
    let (db, store, clock) = town(backend).await;
    let notice_rows = outbox(&db).await;
    assert!(
        notice_rows.iter().all(|r| r.3.is_empty()),
        "{notice_rows:?}"
    );
    assert_eq!(notice_rows.len(), 8, "{notice_rows:?}");

    // R10001 submits her pension application (seq 1); 受付: one e-mail row, for her only
    // (not for her proxy, who also has the notice by e-mail), none for the portal.
    submit(
        &store,
        PENSION,
        "R10001",
        json!({"name": "山田 花子", "annual_income": 1234567}),
        clock.now(),
    )
    .await;
    // Two weeks after the procedure's deadline.
    clock.set(oshirase_engine::clock::in_tokyo(
        d("2026-10-30"),
        chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
    ));
    let out = set(&store, 1, Received, None, clock.now()).await;
    assert!(
        matches!(&out, StatusOutcome::Changed(a) if a.status == Received),
        "{out:?}"
    );
    let rows = outbox(&db).await;
    assert_eq!(
        rows[..8],
        notice_rows[..],
        "the notice's own rows are untouched"
    );
    assert_eq!(
        rows[8..],
        [row(PENSION, "R10001", "email", "application/1/received")]
    );

    // Claimed, it says what it is about, is due now and has no deadline to die by.
    let items = claim(&store, "email", clock.now()).await;
    let news: Vec<&OutboxItem> = items.iter().filter(|i| i.news.is_some()).collect();
    assert_eq!(news.len(), 1, "{items:#?}");
    assert_eq!(news[0].recipient, "R10001");
    assert_eq!(news[0].decision_key.as_str(), PENSION);
    assert_eq!(
        news[0].news,
        Some(ApplicationNews {
            seq: 1,
            status: Received
        })
    );
    assert_eq!(news[0].deadline, None);
    assert_eq!(news[0].notice.title.ja, PENSION_TITLE);
    assert!(items
        .iter()
        .filter(|i| i.news.is_none())
        .all(|i| i.deadline == Some(d("2026-10-15"))));

    // The inbox lists the notice once, for the applicant and the proxy alike.
    for reader in ["R10001", "R10005"] {
        let notices = store
            .portal_notices(&ResidentId::parse(reader).unwrap())
            .await
            .unwrap();
        let keys: Vec<&str> = notices.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, vec![PENSION], "{reader}");
    }

    // A refused change (受付 again) writes no row.
    let out = set(&store, 1, Received, None, clock.now()).await;
    assert!(matches!(out, StatusOutcome::Refused(_)), "{out:?}");
    assert_eq!(outbox(&db).await.len(), 9);

    // The guardian: 差戻し, resubmission (seq 3), 受付: e-mail and push each time, rows of
    // their own.
    submit(
        &store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        clock.now(),
    )
    .await;
    let out = set(&store, 2, Returned, Some(OFFICE_MESSAGE), clock.now()).await;
    assert!(matches!(out, StatusOutcome::Changed(_)), "{out:?}");
    submit(
        &store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 ひなた"}),
        clock.now(),
    )
    .await;
    let out = set(&store, 3, Received, None, clock.now()).await;
    assert!(
        matches!(&out, StatusOutcome::Changed(a) if a.version == 2),
        "{out:?}"
    );
    let rows = outbox(&db).await;
    assert_eq!(
        rows[9..],
        [
            row(CHILD, "R10003", "email", "application/2/returned"),
            row(CHILD, "R10003", "webpush", "application/2/returned"),
            row(CHILD, "R10003", "email", "application/3/received"),
            row(CHILD, "R10003", "webpush", "application/3/received"),
        ]
    );
    let notices = store
        .portal_notices(&ResidentId::parse("R10003").unwrap())
        .await
        .unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(
        notices[0].application.as_ref().map(|a| (a.seq, a.status)),
        Some((3, Received))
    );

    // Somebody reached by the portal only gets no news row (the portal shows the status).
    submit(
        &store,
        OTHER,
        "R10004",
        json!({"name": "鈴木 次郎"}),
        clock.now(),
    )
    .await;
    let out = set(&store, 4, Rejected, Some(OFFICE_MESSAGE), clock.now()).await;
    assert!(matches!(out, StatusOutcome::Changed(_)), "{out:?}");
    assert_eq!(outbox(&db).await.len(), 13);
    assert!(outbox(&db)
        .await
        .iter()
        .all(|r| r.2 != "portal" || r.3.is_empty()));
}
on_both!(
    for_the_applicant,
    news_goes_to_the_applicant_by_email_and_push_only
);

fn email(server: &MailDev, store: &Store, clock: Arc<FixedClock>) -> EmailChannel {
    let config = EmailConfig {
        from: "利島村役場 <noreply@example.lg.jp>".parse().unwrap(),
        portal_url: format!("{PORTAL}/"),
        message_id_domain: "oshirase.example.lg.jp".into(),
    };
    let smtp = SmtpConfig {
        pool_size: 2,
        timeout: Duration::from_secs(5),
        ..SmtpConfig::new(server.smtp_url())
    };
    EmailChannel::smtp(config, &smtp, store.clone(), clock).unwrap()
}

async fn the_news_mail_says_only_that_the_application_was_updated(backend: &str) {
    let server = MailDev::start();
    let (db, store, clock) = town(backend).await;
    let ch = email(&server, &store, clock.clone());
    let policy = Policy {
        gate: Gate::open(),
        ..Policy::default()
    };
    let worker = Worker::new("mail", store.clone(), clock.clone(), policy);
    // The notices first: R10001, her proxy, the guardian.
    let r = worker.drain(&ch).await.unwrap();
    assert_eq!(r.delivered, 3, "{r:?}");
    assert_eq!(server.messages(3).await.len(), 3);

    submit(
        &store,
        PENSION,
        "R10001",
        json!({"name": "山田 花子", "annual_income": 1234567}),
        clock.now(),
    )
    .await;
    submit(
        &store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        clock.now(),
    )
    .await;
    // The guardian stopped e-mail in the portal after the decision: the gate holds for news
    // as for any notice.
    store
        .set_portal_preferences(
            "R10003",
            &PortalPreferences {
                channels: vec![Channel::Portal],
                email_consent: false,
                webpush_consent: false,
            },
            clock.now(),
        )
        .await
        .unwrap();
    // A month after the deadline.
    clock.advance(Duration::from_secs(30 * 86_400));
    for (seq, to, message) in [
        (1, ApplicationStatus::Returned, Some(OFFICE_MESSAGE)),
        (2, ApplicationStatus::Received, None),
    ] {
        let out = set(&store, seq, to, message, clock.now()).await;
        assert!(matches!(out, StatusOutcome::Changed(_)), "{out:?}");
    }
    let r = worker.drain(&ch).await.unwrap();
    assert_eq!((r.delivered, r.muted, r.dead), (1, 1, 0), "{r:?}");
    let muted = store.outbox_rows(Some(OutboxState::Muted)).await.unwrap();
    assert_eq!(muted.len(), 1);
    assert_eq!(muted[0].recipient, "R10003");
    let rows = sql::rows(
        &db.url,
        "SELECT recipient, channel, topic, state FROM outbox WHERE topic <> '' ORDER BY id",
    )
    .await;
    let rows: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].text(), r[1].text(), r[2].text(), r[3].text()))
        .collect();
    // (The guardian's push row waits for the push worker, which this test does not run.)
    assert_eq!(
        rows,
        vec![
            ("R10001", "email", "application/1/returned", "delivered"),
            ("R10003", "email", "application/2/received", "muted"),
            ("R10003", "webpush", "application/2/received", "pending"),
        ]
    );

    let all = server.messages(4).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let to_her: Vec<&Value> = all
        .iter()
        .filter(|m| m["to"][0]["address"] == address("R10001").as_str())
        .collect();
    assert_eq!(to_her.len(), 2);
    let news_subject = format!("申請の状況が更新されました：{PENSION_TITLE}");
    let notice = *to_her
        .iter()
        .find(|m| m["subject"] == PENSION_TITLE)
        .expect("the notice");
    let news = *to_her
        .iter()
        .find(|m| m["subject"] == news_subject.as_str())
        .unwrap_or_else(|| panic!("no news mail among {to_her:#?}"));
    assert_ne!(
        notice["headers"]["message-id"], news["headers"]["message-id"],
        "news is a message of its own"
    );
    let (text, html) = (
        news["text"].as_str().unwrap(),
        news["html"].as_str().unwrap(),
    );
    let link = format!("{PORTAL}/notices/{PENSION}");
    assert!(
        text.contains(&format!(
            "「{PENSION_TITLE}」の申請（受付番号 1）の状況が更新されました。"
        )),
        "{text}"
    );
    assert!(text.contains(&link), "{text}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    for secret in [
        "山田",
        "花子",
        OFFICE_MESSAGE,
        "差戻し",
        "returned",
        "1234567",
        "1,234,567",
    ] {
        assert!(
            !text.contains(secret) && !html.contains(secret),
            "{secret} in the news: {text}"
        );
    }
    assert!(!text.contains("期限"), "{text}");
    ch.close().await;
}
on_both!(
    mailed,
    the_news_mail_says_only_that_the_application_was_updated
);

/// A database as the migrations before 0008 left it: each file run statement by statement and
/// recorded the way sqlx records it, so that `Store::open` runs only 0008 and later.
async fn migrated_to_0007(db: &TestDb, backend: &str) {
    use sha2::{Digest, Sha384};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../store/migrations")
        .join(backend);
    let url = if backend == "sqlite" {
        format!("{}?mode=rwc", db.url)
    } else {
        db.url.clone()
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap() < "0008")
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    sql::execute(
        &url,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
           installed_on TEXT, success BOOLEAN NOT NULL, checksum BLOB NOT NULL,
           execution_time BIGINT NOT NULL)"
            .replace("BLOB", if backend == "sqlite" { "BLOB" } else { "BYTEA" })
            .as_str(),
    )
    .await;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // The files of 0001 to 0007 have no semicolon but between statements and in comments.
        let code: String = text
            .lines()
            .map(|l| l.split("--").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        for statement in code.split(';').filter(|s| !s.trim().is_empty()) {
            sql::execute(&url, statement).await;
        }
        let name = file.file_stem().unwrap().to_str().unwrap();
        let (version, description) = name.split_once('_').unwrap();
        let hex: String = Sha384::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let checksum = if backend == "sqlite" {
            format!("X'{hex}'")
        } else {
            format!("decode('{hex}', 'hex')")
        };
        sql::execute(
            &url,
            &format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ({}, '{}', TRUE, {checksum}, 0)",
                version.parse::<i64>().unwrap(),
                description.replace('_', " "),
            ),
        )
        .await;
    }
}

async fn a_stored_outbox_survives_migration_0008(backend: &str) {
    let db = oshirase_testkit::fresh(backend, "oshirase_news_migration").await;
    migrated_to_0007(&db, backend).await;
    // A day as 0007 stored it: a decision, its draft, outbox rows in every state with an
    // attempt, and the application of the draft.
    let pension = decisions()
        .into_iter()
        .find(|x| x.key.as_str() == PENSION)
        .unwrap();
    let body = serde_json::to_string(&pension).unwrap().replace('\'', "''");
    let at = "2026-10-01T03:00:00.000Z";
    for statement in [
        format!("INSERT INTO rule_sets (version, rules, source, loaded_at) VALUES ('test-rules', 3, 'tests', '{at}')"),
        format!(
            "INSERT INTO decisions (key, rule, rule_version, rule_set, subject, occurrence, notify_on, deadline,
               staff_review, critical, body, created_at)
             VALUES ('{PENSION}', 'kokumin-nenkin-shutoku', 2, 'test-rules', 'R10001', '2026-10-01', '2026-10-01',
               '2026-10-15', NULL, 0, '{body}', '{at}')"
        ),
        format!(
            "INSERT INTO drafts (decision_key, fields, state, updated_at, submitted_fields, decided_by)
             VALUES ('{PENSION}', '{{\"name\": \"x\"}}', 'submitted', '{at}', '{{\"name\": \"x\"}}', 'R10001')"
        ),
        format!(
            "INSERT INTO outbox (id, decision_key, recipient, channel, state, attempts, next_attempt_at)
             VALUES (1, '{PENSION}', 'R10001', 'portal', 'delivered', 1, '{at}'),
                    (2, '{PENSION}', 'R10001', 'email', 'delivered', 1, '{at}'),
                    (3, '{PENSION}', 'R10005', 'email', 'pending', 2, '{at}')"
        ),
        format!(
            "INSERT INTO delivery_attempts (outbox_id, attempted_at, outcome, detail)
             VALUES (1, '{at}', 'delivered', NULL), (2, '{at}', 'delivered', NULL),
                    (3, '{at}', 'retry', 'SMTP 451'), (3, '{at}', 'retry', 'SMTP 451')"
        ),
        "UPDATE office_counters SET value = 1 WHERE name = 'applications'".to_owned(),
        format!(
            "INSERT INTO applications (seq, decision_key, version, rule, rule_version, title, subject, applicant,
               role, proxy_scopes, prefilled, corrections, submitted_at, status, message, status_at)
             VALUES (1, '{PENSION}', 1, 'kokumin-nenkin-shutoku', 2, '{PENSION_TITLE}', 'R10001', 'R10001',
               'subject', NULL, '{{}}', '{{}}', '{at}', 'submitted', NULL, '{at}')"
        ),
    ] {
        sql::execute(&db.url, &statement).await;
    }
    if backend == "postgres" {
        // The ids were given: move the sequence past them, as rows written by the store would.
        sql::execute(&db.url, "SELECT setval('outbox_id_seq', 3)").await;
    }

    let store = Store::open(&db.url).await.unwrap_or_else(|e| panic!("{e}"));
    let rows = sql::rows(
        &db.url,
        "SELECT o.id, o.recipient, o.channel, o.state, o.attempts, o.topic,
           (SELECT COUNT(*) FROM delivery_attempts a WHERE a.outbox_id = o.id) AS tried
         FROM outbox o ORDER BY o.id",
    )
    .await;
    let rows: Vec<(i64, &str, &str, &str, i64, &str, i64)> = rows
        .iter()
        .map(|r| {
            (
                r[0].int(),
                r[1].text(),
                r[2].text(),
                r[3].text(),
                r[4].int(),
                r[5].text(),
                r[6].int(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, "R10001", "portal", "delivered", 1, "", 1),
            (2, "R10001", "email", "delivered", 1, "", 1),
            (3, "R10005", "email", "pending", 2, "", 2),
        ]
    );
    if backend == "sqlite" {
        assert!(sql::rows(&db.url, "PRAGMA foreign_key_check")
            .await
            .is_empty());
    }
    // Older applications have no legal basis.
    assert_eq!(
        store.application(1).await.unwrap().unwrap().legal_basis,
        None
    );
    // The pending row still claims, as the notice; a status change adds news after it.
    let now = oshirase_engine::clock::in_tokyo(
        d("2026-10-02"),
        chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
    );
    let out = set(&store, 1, ApplicationStatus::Received, None, now).await;
    assert!(matches!(out, StatusOutcome::Changed(_)), "{out:?}");
    let items = claim(&store, "email", now).await;
    let claimed: Vec<(i64, &str, Option<ApplicationNews>)> = items
        .iter()
        .map(|i| (i.id, i.recipient.as_str(), i.news))
        .collect();
    assert_eq!(
        claimed,
        vec![
            (3, "R10005", None),
            (
                4,
                "R10001",
                Some(ApplicationNews {
                    seq: 1,
                    status: ApplicationStatus::Received
                })
            ),
        ]
    );
    // Settling writes attempts against the rebuilt table.
    let settled = store
        .settle_outbox_batch(
            "test",
            &[
                (3, oshirase_store::Settle::Delivered),
                (4, oshirase_store::Settle::Delivered),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(settled.len(), 2);
    assert_eq!(store.counts().await.unwrap()["delivery_attempts"], 6);
}
on_both!(migrated, a_stored_outbox_survives_migration_0008);
