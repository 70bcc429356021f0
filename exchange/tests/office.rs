//! Submitted applications for the back office (docs/office.md), on SQLite and PostgreSQL: the
//! store (an application written with the submission, a contiguous sequence across
//! concurrent submissions, the status machine, nothing changed on a refusal) and the core
//! systems' API on the agencies' listener (tokens from client assertions, polling with
//! `after`, scopes, forged assertions, refused transitions, huge messages), and an
//! independent core system in Python (`office_client.py`: `authlib`, `requests`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::eval::{Decision, DecisionKey, Recipient, RenderedMessages, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::resident::{Channel, Resident};
use oshirase_engine::rule::{Application, Category, Titles};
use oshirase_exchange::{ExchangeMetrics, SigningKey};
use oshirase_store::{
    AgencySpec, ApplicationStatus, DraftChoice, DraftDecision, StatusChange, StatusOutcome, Store,
    TransitionError,
};
use oshirase_testkit::{d, on_both, TestDb};
use serde_json::{json, Value};

use common::Client;

const PENSION: &str = "kokumin-nenkin-shutoku/R10001/2026-10-01";
const HEALTH: &str = "kokuho-kanyu/R10001/2026-10-01";
const CHILD: &str = "jidou-teate-nintei/R10002/2026-10-01";
const OTHER: &str = "kokumin-nenkin-shutoku/R10004/2026-10-01";

fn register() -> Vec<Resident> {
    let addr = json!({"local_gov_code": "133621", "text": "東京都利島村1番地"});
    [
        json!({"id": "R10001", "name": {"kanji": "山田 花子", "kana": "ヤマダ ハナコ"}, "birth_date": "1960-05-01", "sex": 2,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true},
               "proxies": [{"id": "R10005", "scopes": ["pension"]}]}),
        json!({"id": "R10002", "name": {"kanji": "佐藤 陽", "kana": "サトウ ヒナタ"}, "birth_date": "2021-04-10", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "guardians": [{"id": "R10003"}]}),
        json!({"id": "R10003", "name": {"kanji": "佐藤 一郎", "kana": "サトウ イチロウ"}, "birth_date": "1990-01-01", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true}}),
        json!({"id": "R10004", "name": {"kanji": "鈴木 次郎", "kana": "スズキ ジロウ"}, "birth_date": "1985-03-03", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true}}),
        json!({"id": "R10005", "name": {"kanji": "田中 三郎", "kana": "タナカ サブロウ"}, "birth_date": "1970-01-01", "sex": 1,
               "status": {"kind": "external"}, "address": addr, "contact": {"portal": true}}),
    ]
    .into_iter()
    .map(|r| serde_json::from_value(r).unwrap())
    .collect()
}

/// The law each test procedure rests on, as its rule would say.
fn legal_basis(rule: &str) -> &'static str {
    match rule {
        "kokumin-nenkin-shutoku" => "国民年金法第12条第1項",
        "kokuho-kanyu" => "国民健康保険法第9条第1項",
        _ => "児童手当法第7条（認定請求）",
    }
}

fn decision(
    rule: &str,
    category: Category,
    subject: &str,
    recipients: &[(&str, Role)],
    prefill: Value,
) -> Decision {
    let legal_basis = legal_basis(rule).to_owned();
    let rule = RuleId::parse(rule).unwrap();
    let subject = ResidentId::parse(subject).unwrap();
    Decision {
        key: DecisionKey::new(&rule, &subject, "2026-10-01"),
        rule,
        rule_version: 3,
        category,
        subject,
        occurrence: d("2026-10-01"),
        event_id: None,
        notify_on: d("2026-10-01"),
        deadline: Some(d("2026-10-15")),
        deadline_moved_from: None,
        recipients: recipients
            .iter()
            .map(|(id, role)| Recipient {
                id: ResidentId::parse(id).unwrap(),
                role: *role,
                channels: vec![Channel::Portal],
            })
            .collect(),
        staff_review: None,
        prefill: serde_json::from_value(prefill).unwrap(),
        form: Default::default(),
        application: Application::Form,
        contact: None,
        recommend: Vec::new(),
        legal_basis,
        title: Titles {
            ja: "手続のお知らせ".to_owned(),
            en: None,
        },
        message: RenderedMessages {
            ja: "手続のお知らせです。".to_owned(),
            en: None,
        },
        channels: vec![Channel::Portal],
        critical: false,
        urgent: false,
    }
}

fn decisions() -> Vec<Decision> {
    vec![
        decision(
            "kokumin-nenkin-shutoku",
            Category::Pension,
            "R10001",
            &[("R10001", Role::Subject), ("R10005", Role::Proxy)],
            json!({"name": "山田 花子", "annual_income": 1200000}),
        ),
        decision(
            "kokuho-kanyu",
            Category::HealthInsurance,
            "R10001",
            &[("R10001", Role::Subject)],
            json!({"name": "山田 花子", "insured_from": "2026-10-01"}),
        ),
        decision(
            "jidou-teate-nintei",
            Category::Childcare,
            "R10002",
            &[("R10003", Role::Guardian)],
            json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        ),
        decision(
            "kokumin-nenkin-shutoku",
            Category::Pension,
            "R10004",
            &[("R10004", Role::Subject)],
            json!({"name": "鈴木 次郎"}),
        ),
    ]
}

/// A fresh store with the register and the day's decisions (and their drafts).
async fn town(backend: &str) -> (TestDb, Store, Arc<FixedClock>) {
    let db = oshirase_testkit::fresh(backend, "oshirase_office").await;
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
        .record_rule_set("test-rules", 4, "tests", clock.now())
        .await
        .unwrap();
    store
        .commit_day(d("2026-10-01"), "test-rules", 0, &decisions(), clock.now())
        .await
        .unwrap();
    (db, store, clock)
}

fn key(k: &str) -> DecisionKey {
    DecisionKey::parse(k).unwrap()
}

fn rid(id: &str) -> ResidentId {
    ResidentId::parse(id).unwrap()
}

fn rules(names: &[&str]) -> Vec<RuleId> {
    names.iter().map(|r| RuleId::parse(r).unwrap()).collect()
}

/// Submits `k` as `reader` with `fields` (the prefill with corrections).
async fn submit(store: &Store, k: &str, reader: &str, fields: Value, now: DateTime<FixedOffset>) {
    let fields = serde_json::from_value(fields).unwrap();
    let entry = oshirase_store::AuditEntry::new(now, reader, "draft.submit", k, None);
    let done = store
        .decide_draft(&key(k), &rid(reader), DraftChoice::Submit(&fields), &entry)
        .await
        .unwrap();
    assert_eq!(done, DraftDecision::Done, "{k}");
}

const ALL: [&str; 3] = [
    "kokumin-nenkin-shutoku",
    "kokuho-kanyu",
    "jidou-teate-nintei",
];

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

async fn a_submission_writes_its_application(backend: &str) {
    let (_db, store, clock) = town(backend).await;
    // The pension proxy submits, correcting the income.
    submit(
        &store,
        PENSION,
        "R10005",
        json!({"name": "山田 花子", "annual_income": 1000000}),
        clock.now(),
    )
    .await;
    let a = store.application(1).await.unwrap().expect("application 1");
    assert_eq!(a.decision_key.as_str(), PENSION);
    assert_eq!(a.version, 1);
    assert_eq!(a.rule.as_str(), "kokumin-nenkin-shutoku");
    assert_eq!(a.rule_version, 3);
    // The rule's legal basis, carried from the decision into the application.
    assert_eq!(
        a.legal_basis.as_deref(),
        Some(legal_basis("kokumin-nenkin-shutoku"))
    );
    assert_eq!(a.subject.as_str(), "R10001");
    assert_eq!(a.applicant.as_str(), "R10005");
    assert_eq!(a.role, Role::Proxy);
    assert_eq!(a.proxy_scopes, Some(vec!["pension".to_owned()]));
    assert_eq!(
        oshirase_store::role_ja(a.role, a.proxy_scopes.as_deref()),
        "代理人（pension）"
    );
    assert_eq!(a.prefilled["annual_income"], json!(1200000));
    assert_eq!(a.corrections.len(), 1);
    assert_eq!(a.corrections["annual_income"].before, json!(1200000));
    assert_eq!(a.corrections["annual_income"].after, json!(1000000));
    assert_eq!(a.submitted_fields()["annual_income"], json!(1000000));
    assert_eq!(a.status, ApplicationStatus::Submitted);
    assert_eq!(a.submitted_at, oshirase_store::utc_text(clock.now()));
    let h = store.application_history(1).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].status, ApplicationStatus::Submitted);
    assert_eq!(h[0].actor, "resident:R10005");
    // A declined draft writes none, and a draft decided twice writes one.
    let entry =
        oshirase_store::AuditEntry::new(clock.now(), "R10001", "draft.decline", HEALTH, None);
    store
        .decide_draft(&key(HEALTH), &rid("R10001"), DraftChoice::Decline, &entry)
        .await
        .unwrap();
    let fields = serde_json::from_value(json!({"name": "x"})).unwrap();
    let again = store
        .decide_draft(
            &key(PENSION),
            &rid("R10001"),
            DraftChoice::Submit(&fields),
            &entry,
        )
        .await
        .unwrap();
    assert_eq!(again, DraftDecision::AlreadyDecided);
    assert!(store.application(2).await.unwrap().is_none());
    // The guardian's submission is the next number.
    submit(
        &store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        clock.now(),
    )
    .await;
    let c = store.application(2).await.unwrap().unwrap();
    assert_eq!(c.role, Role::Guardian);
    assert!(c.corrections.is_empty());
}
on_both!(
    written_with_the_submission,
    a_submission_writes_its_application
);

async fn concurrent_submissions_are_numbered_without_gaps(backend: &str) {
    let (_db, store, clock) = town(backend).await;
    let jobs = [
        (
            PENSION,
            "R10001",
            json!({"name": "山田 花子", "annual_income": 1200000}),
        ),
        (
            HEALTH,
            "R10001",
            json!({"name": "山田 花子", "insured_from": "2026-10-01"}),
        ),
        (
            CHILD,
            "R10003",
            json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        ),
        (OTHER, "R10004", json!({"name": "鈴木 次郎"})),
    ];
    let mut tasks = Vec::new();
    for (k, reader, fields) in jobs {
        let store = store.clone();
        let now = clock.now();
        tasks.push(tokio::spawn(async move {
            submit(&store, k, reader, fields, now).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let apps = store
        .applications_after(0, 100, &rules(&ALL), "office:test", clock.now())
        .await
        .unwrap();
    assert_eq!(
        apps.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let mut keys: Vec<&str> = apps.iter().map(|a| a.decision_key.as_str()).collect();
    keys.sort();
    let mut want = vec![PENSION, HEALTH, CHILD, OTHER];
    want.sort();
    assert_eq!(keys, want);
    // Polling after the last number seen: the rest, nothing twice.
    let rest = store
        .applications_after(2, 100, &rules(&ALL), "office:test", clock.now())
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![3, 4]);
    // Each read is audited.
    let reads = store.audit_entries(Some("applications")).await.unwrap();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[1].actor, "office:test");
    assert_eq!(reads[1].action, "application.read");
    assert!(reads[1].detail.as_deref().unwrap().contains("[3,4]"));
}
on_both!(contiguous, concurrent_submissions_are_numbered_without_gaps);

fn change<'a>(
    seq: i64,
    to: ApplicationStatus,
    message: Option<&'a str>,
    rules: &'a [RuleId],
    now: DateTime<FixedOffset>,
) -> StatusChange<'a> {
    StatusChange {
        seq,
        to,
        message,
        actor: "office:kikan",
        rules,
        now,
    }
}

async fn the_status_machine_holds(backend: &str) {
    use ApplicationStatus::*;
    let (_db, store, clock) = town(backend).await;
    let scope = rules(&ALL);
    submit(
        &store,
        PENSION,
        "R10001",
        json!({"name": "山田 花子", "annual_income": 1200000}),
        clock.now(),
    )
    .await;
    for to in [Received, InReview, Completed] {
        clock.advance(std::time::Duration::from_secs(60));
        let out = store
            .change_application_status(change(1, to, None, &scope, clock.now()))
            .await
            .unwrap();
        assert!(
            matches!(&out, StatusOutcome::Changed(a) if a.status == to),
            "{out:?}"
        );
    }
    let before = store.application(1).await.unwrap().unwrap();
    let history = store.application_history(1).await.unwrap();
    assert_eq!(
        history.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![Submitted, Received, InReview, Completed]
    );
    // 完了 → 受付: refused, nothing changed, the attempt audited.
    let out = store
        .change_application_status(change(1, Received, None, &scope, clock.now()))
        .await
        .unwrap();
    let StatusOutcome::Refused(e) = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        e,
        TransitionError::NotAllowed {
            from: Completed,
            to: Received
        }
    );
    assert!(e.to_string().contains("完了"), "{e}");
    assert_eq!(store.application(1).await.unwrap().unwrap(), before);
    assert_eq!(store.application_history(1).await.unwrap(), history);
    let audit = store.audit_entries(Some("application/1")).await.unwrap();
    assert_eq!(
        audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        vec![
            "application.status",
            "application.status",
            "application.status",
            "application.status.refused"
        ]
    );
    assert!(audit.iter().all(|a| a.actor == "office:kikan"));
    // Outside the client's procedures: missing.
    let narrow = rules(&["kokuho-kanyu"]);
    let out = store
        .change_application_status(change(1, Received, None, &narrow, clock.now()))
        .await
        .unwrap();
    assert_eq!(out, StatusOutcome::Missing);
    // No such number: missing.
    let out = store
        .change_application_status(change(99, Received, None, &scope, clock.now()))
        .await
        .unwrap();
    assert_eq!(out, StatusOutcome::Missing);

    // 差戻し needs a message; with one, the draft opens again and a resubmission is
    // version 2 of the same decision, with the next number.
    submit(
        &store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        clock.now(),
    )
    .await;
    let out = store
        .change_application_status(change(2, Returned, None, &scope, clock.now()))
        .await
        .unwrap();
    assert_eq!(
        out,
        StatusOutcome::Refused(TransitionError::MessageRequired { status: Returned })
    );
    let long = "あ".repeat(2001);
    let out = store
        .change_application_status(change(2, Returned, Some(&long), &scope, clock.now()))
        .await
        .unwrap();
    assert_eq!(
        out,
        StatusOutcome::Refused(TransitionError::MessageTooLong { len: 2001 })
    );
    assert_eq!(
        store.application(2).await.unwrap().unwrap().status,
        Submitted
    );
    let msg = "児童の生年月日の確認書類を添付してください。";
    let out = store
        .change_application_status(change(2, Returned, Some(msg), &scope, clock.now()))
        .await
        .unwrap();
    assert!(matches!(&out, StatusOutcome::Changed(a) if a.message.as_deref() == Some(msg)));
    // Final: nothing after 差戻し.
    let out = store
        .change_application_status(change(2, Received, None, &scope, clock.now()))
        .await
        .unwrap();
    assert!(matches!(
        out,
        StatusOutcome::Refused(TransitionError::NotAllowed { .. })
    ));
    submit(
        &store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 ひなた"}),
        clock.now(),
    )
    .await;
    let v2 = store.application(3).await.unwrap().unwrap();
    assert_eq!(v2.decision_key.as_str(), CHILD);
    assert_eq!(v2.version, 2);
    assert_eq!(v2.status, Submitted);
    assert_eq!(v2.corrections["child_name"].after, json!("佐藤 ひなた"));
    let of = store.applications_of(&key(CHILD)).await.unwrap();
    assert_eq!(of.iter().map(|a| a.version).collect::<Vec<_>>(), vec![2, 1]);
    // 却下 with a message, straight from 申請済み.
    let out = store
        .change_application_status(change(
            3,
            Rejected,
            Some("対象外です。"),
            &scope,
            clock.now(),
        ))
        .await
        .unwrap();
    assert!(matches!(&out, StatusOutcome::Changed(a) if a.status == Rejected));
}
on_both!(status_machine, the_status_machine_holds);

#[test]
fn every_transition_is_decided_by_the_table() {
    use ApplicationStatus::*;
    let allowed = [
        (Submitted, Received),
        (Submitted, Returned),
        (Submitted, Rejected),
        (Received, InReview),
        (Received, Completed),
        (Received, Returned),
        (Received, Rejected),
        (InReview, Completed),
        (InReview, Returned),
        (InReview, Rejected),
    ];
    for from in ApplicationStatus::ALL {
        for to in ApplicationStatus::ALL {
            let ok = oshirase_store::check_transition(from, to, Some("理由")).is_ok();
            assert_eq!(ok, allowed.contains(&(from, to)), "{from} -> {to}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

struct Api {
    _db: TestDb,
    store: Store,
    clock: Arc<FixedClock>,
    url: String,
    jti: AtomicU64,
    http: reqwest::Client,
    _api: common::Api,
}

impl Api {
    async fn new(backend: &str) -> Api {
        let (db, store, clock) = town(backend).await;
        let (listener, url) = common::listen().await;
        let state = common::api_state(
            &store,
            Arc::new(common::bundled()),
            common::api_keys(),
            clock.clone(),
            Arc::new(ExchangeMetrics::default()),
            &url,
        );
        let api = common::start_api(listener, state).await;
        Api {
            _db: db,
            store,
            clock,
            url,
            jti: AtomicU64::new(0),
            http: reqwest::Client::new(),
            _api: api,
        }
    }

    /// Registers a core system allowed the applications of `scope` (or none: a plain agency).
    async fn client(&self, id: &str, scope: Option<&[&str]>) -> Client {
        let key = SigningKey::generate().unwrap();
        let spec = AgencySpec {
            id: id.to_owned(),
            name: format!("{id} system"),
            endpoint: None,
            client_jwks: json!({ "keys": [key.public_jwk()] }).to_string(),
            dictionary_version: 1,
            purposes: Vec::new(),
        };
        self.store
            .upsert_agency(&spec, self.clock.now())
            .await
            .unwrap();
        if let Some(scope) = scope {
            self.store
                .set_office_client(id, &rules(scope), self.clock.now())
                .await
                .unwrap();
        }
        Client {
            id: id.to_owned(),
            key,
        }
    }

    fn assertion(&self, c: &Client, key: &SigningKey) -> String {
        let n = self.jti.fetch_add(1, Ordering::SeqCst);
        let aud = format!("{}/agency/v1/token", self.url);
        let now = self.clock.now().timestamp();
        common::client_assertion(&c.id, key, &aud, now, &format!("office-{n}"))
    }

    async fn token_with(&self, assertion: &str) -> (u16, Value) {
        let token_url = format!("{}/agency/v1/token", self.url);
        common::token_request(&self.http, &token_url, assertion).await
    }

    async fn token(&self, c: &Client) -> String {
        let (status, body) = self.token_with(&self.assertion(c, &c.key)).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, c: &Client, path: &str) -> (u16, Value) {
        let token = self.token(c).await;
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, c: &Client, path: &str, body: String) -> (u16, String, Value) {
        let token = self.token(c).await;
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ct, r.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self, c: &Client, seq: i64, body: Value) -> (u16, Value) {
        let (s, _, v) = self
            .post_raw(
                c,
                &format!("/office/v1/applications/{seq}/status"),
                body.to_string(),
            )
            .await;
        (s, v)
    }
}

fn seqs(v: &Value) -> Vec<i64> {
    v["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_i64().unwrap())
        .collect()
}

/// The three applications the API's tests poll: the pension one (its annual income `income`),
/// the child allowance one and another resident's pension one.
async fn submit_three(api: &Api, income: i64, now: DateTime<FixedOffset>) {
    submit(
        &api.store,
        PENSION,
        "R10001",
        json!({"name": "山田 花子", "annual_income": income}),
        now,
    )
    .await;
    submit(
        &api.store,
        CHILD,
        "R10003",
        json!({"claimant": "佐藤 一郎", "child_name": "佐藤 陽"}),
        now,
    )
    .await;
    submit(
        &api.store,
        OTHER,
        "R10004",
        json!({"name": "鈴木 次郎"}),
        now,
    )
    .await;
}

async fn a_core_system_polls_and_sets_statuses(backend: &str) {
    let api = Api::new(backend).await;
    let now = api.clock.now();
    submit_three(&api, 1000000, now).await;
    let kikan = api.client("kikan", Some(&ALL)).await;
    // Only childcare: it sees nothing of the pension applications.
    let kodomo = api.client("kodomo", Some(&["jidou-teate-nintei"])).await;
    let agency = api.client("nenkin-kikou", None).await;

    let (s, page) = api
        .get(&kikan, "/office/v1/applications?after=0&limit=2")
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(seqs(&page), vec![1, 2]);
    assert_eq!(page["next_after"], 2);
    let first = &page["applications"][0];
    assert_eq!(first["decision_key"], PENSION);
    assert_eq!(first["rule"], "kokumin-nenkin-shutoku");
    assert_eq!(first["rule_version"], 3);
    assert_eq!(first["title"], "手続のお知らせ");
    assert_eq!(
        first["legal_basis"],
        legal_basis(first["rule"].as_str().unwrap())
    );
    assert_eq!(first["applicant"], "R10001");
    assert_eq!(first["role"], "subject");
    assert_eq!(first["role_ja"], "本人");
    assert_eq!(first["status"], "submitted");
    assert_eq!(first["status_ja"], "申請済み");
    assert_eq!(
        first["corrections"],
        json!({"annual_income": {"before": 1200000, "after": 1000000}})
    );
    let (_, rest) = api.get(&kikan, "/office/v1/applications?after=2").await;
    assert_eq!(seqs(&rest), vec![3]);
    let (_, none) = api.get(&kikan, "/office/v1/applications?after=3").await;
    assert_eq!(seqs(&none), Vec::<i64>::new());
    assert_eq!(none["next_after"], 3);

    let (s, child) = api.get(&kodomo, "/office/v1/applications").await;
    assert_eq!(s, 200);
    assert_eq!(seqs(&child), vec![2]);
    let (s, p) = api.status(&kodomo, 1, json!({"status": "received"})).await;
    assert_eq!(s, 404, "{p}");
    assert_eq!(
        api.store.application(1).await.unwrap().unwrap().status,
        ApplicationStatus::Submitted
    );
    // A plain agency is not a core system.
    let (s, p) = api.get(&agency, "/office/v1/applications").await;
    assert_eq!(s, 403, "{p}");

    // Bad queries name their field.
    let (s, p) = api
        .get(&kikan, "/office/v1/applications?after=-1&limit=5000")
        .await;
    assert_eq!(s, 422);
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["after", "limit"]);

    // 受付, then 差戻し with a message: the draft opens again for the resident.
    let (s, a) = api.status(&kikan, 2, json!({"status": "received"})).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["status_ja"], "受付");
    let (s, p) = api.status(&kikan, 2, json!({"status": "returned"})).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["errors"][0]["field"], "message");
    let msg = "続柄を確認できる書類を添付してください。";
    let (s, a) = api
        .status(&kikan, 2, json!({"status": "returned", "message": msg}))
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["message"], msg);
    let history = api.store.application_history(2).await.unwrap();
    assert_eq!(history.last().unwrap().actor, "office:kikan");
    assert_eq!(history.last().unwrap().message.as_deref(), Some(msg));

    // 完了 → 受付: 409 naming the field, nothing changed.
    api.status(&kikan, 1, json!({"status": "received"})).await;
    let (s, _) = api.status(&kikan, 1, json!({"status": "completed"})).await;
    assert_eq!(s, 200);
    let before = api.store.application(1).await.unwrap().unwrap();
    let (s, p) = api.status(&kikan, 1, json!({"status": "received"})).await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["errors"][0]["field"], "status");
    assert_eq!(api.store.application(1).await.unwrap().unwrap(), before);
    // Not a status; a message too long; a body too large.
    let (s, p) = api.status(&kikan, 3, json!({"status": "approved"})).await;
    assert_eq!((s, p["errors"][0]["field"].as_str()), (422, Some("status")));
    let (s, p) = api
        .status(
            &kikan,
            3,
            json!({"status": "rejected", "message": "あ".repeat(2001)}),
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["field"].as_str()),
        (422, Some("message"))
    );
    let (s, ct, _) = api
        .post_raw(
            &kikan,
            "/office/v1/applications/3/status",
            json!({"status": "rejected", "message": "x".repeat(100_000)}).to_string(),
        )
        .await;
    assert_eq!(s, 413);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(
        api.store.application(3).await.unwrap().unwrap().status,
        ApplicationStatus::Submitted
    );
    let refused = api
        .store
        .audit_entries(Some("application/1"))
        .await
        .unwrap();
    assert_eq!(refused.last().unwrap().action, "application.status.refused");
}
on_both!(api, a_core_system_polls_and_sets_statuses);

async fn a_forged_assertion_gets_no_token(backend: &str) {
    let api = Api::new(backend).await;
    let kikan = api.client("kikan", Some(&ALL)).await;
    let forger = SigningKey::generate().unwrap();
    let (s, body) = api.token_with(&api.assertion(&kikan, &forger)).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    // Without a token, nothing.
    let r = api
        .http
        .get(format!("{}/office/v1/applications", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = api
        .http
        .post(format!("{}/office/v1/applications/1/status", api.url))
        .bearer_auth("forged.token.value")
        .json(&json!({"status": "received"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
on_both!(forged, a_forged_assertion_gets_no_token);

/// An independent core system (Python: `authlib`, `requests`) polls every application with
/// small pages and sets statuses; a 差戻し reaches what the resident's portal reads.
async fn an_independent_core_system_polls_and_returns(backend: &str) {
    let api = Api::new(backend).await;
    let now = api.clock.now();
    submit_three(&api, 1200000, now).await;
    let kikan = api.client("kikan", Some(&ALL)).await;
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), kikan.key.to_pem()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/office_client.py");
    let msg = "続柄を確認できる書類を添付してください。";
    let plan = json!({"2": [["received"], ["returned", msg]], "1": [["completed"]]});
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(format!("--client={}", kikan.id))
        .arg(format!("--api={}", api.url))
        .arg(format!("--key={}", key_file.path().display()))
        .arg(format!("--kid={}", kikan.key.kid()))
        .arg(format!("--now={}", now.timestamp()))
        .arg("--after=0")
        .arg(format!("--plan={plan}"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): run scripts/services/agency.sh"));
    assert!(
        out.status.success(),
        "office_client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Three pages of at most two: every number once, in order, no gap.
    assert_eq!(report["seqs"], json!([1, 2, 3]));
    assert_eq!(report["next_after"], 3);
    let answers: Vec<(i64, &str, i64)> = report["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["seq"].as_i64().unwrap(),
                a["status"].as_str().unwrap(),
                a["http"].as_i64().unwrap(),
            )
        })
        .collect();
    // The plan in number order (a JSON object's keys); 申請済み → 完了 is refused (409).
    assert_eq!(
        answers,
        vec![
            (1, "completed", 409),
            (2, "received", 200),
            (2, "returned", 200)
        ]
    );
    // What the resident's portal reads: the returned application with its message.
    let seen = api
        .store
        .portal_notice(&rid("R10003"), &key(CHILD))
        .await
        .unwrap()
        .unwrap();
    let app = seen.application.unwrap();
    assert_eq!((app.seq, app.status), (2, ApplicationStatus::Returned));
    assert_eq!(app.message.as_deref(), Some(msg));
    assert_eq!(seen.draft.unwrap().state, oshirase_store::DraftState::Open);
    assert_eq!(
        api.store.application(1).await.unwrap().unwrap().status,
        ApplicationStatus::Submitted
    );
}
on_both!(
    independent_client,
    an_independent_core_system_polls_and_returns
);
