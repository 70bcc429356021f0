//! 「情報の提供記録」: a resident reads what was provided about them to agencies (the change
//! events an ingest wrote, the pulls and what they held back), by name and in words; their
//! guardian and a proxy with the scope `all` read it for them; nobody else does, and a
//! refusal answers like a missing person. Every read and refusal is audited.

mod common;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, FixedOffset, NaiveTime};
use common::*;
use oshirase_engine::clock::{in_tokyo, Clock, FixedClock};
use oshirase_engine::ids::ResidentId;
use oshirase_engine::items::ItemCode;
use oshirase_engine::purposes::Exchange;
use oshirase_portal::NOT_FOUND_FLOOR;
use oshirase_store::{AgencySpec, InterestSpec, Provision, Store};
use serde_json::{json, Value};

const NENKIN: &str = "nenkin-tokyo";
const NENKIN_NAME: &str = "日本年金機構 東京年金事務所";
const KOUKI: &str = "kouki-tokyo";
const KOUKI_NAME: &str = "東京都後期高齢者医療広域連合";
const SCHOOL: &str = "toshima-kyoiku";
const SCHOOL_NAME: &str = "利島村教育委員会";

/// The bundled data-item dictionary and purposes.
fn exchange() -> Exchange {
    oshirase_engine::purposes::load_dir(&root().join("rules")).unwrap_or_else(|e| panic!("{e}"))
}

fn at(day: &str, h: u32, m: u32) -> DateTime<FixedOffset> {
    in_tokyo(d(day), NaiveTime::from_hms_opt(h, m, 0).unwrap())
}

fn codes(list: &[&str]) -> Vec<ItemCode> {
    list.iter().map(|c| ItemCode::parse(c).unwrap()).collect()
}

/// Settles every event of `agency` as delivered, as the delivery worker does when the
/// endpoint answers 2xx: only what reached the agency is in the resident's record.
async fn delivered(store: &Store, agency: &str, now: DateTime<FixedOffset>) {
    store.mark_agency_verified(agency, now).await.unwrap();
    let lease = oshirase_engine::clock::after(now, std::time::Duration::from_secs(60));
    for s in store
        .claim_streams("test", 100, now, lease, now)
        .await
        .unwrap()
    {
        if s.agency_id != agency {
            continue;
        }
        let progress = oshirase_store::StreamProgress {
            settled_upto: s.last_seq,
            dead: Vec::new(),
            retry: None,
            delivered: usize::try_from(s.last_seq - s.delivered_seq).unwrap(),
            sent_at: Some(now),
            heartbeat_error: None,
        };
        assert!(store
            .settle_stream("test", agency, &s.purpose_id, &progress, now)
            .await
            .unwrap());
    }
}

fn agency(id: &str, name: &str, purpose: &str) -> AgencySpec {
    AgencySpec {
        id: id.into(),
        name: name.into(),
        endpoint: Some(format!("https://{id}.example.go.jp/events")),
        client_jwks: r#"{"keys":[]}"#.into(),
        dictionary_version: 2,
        purposes: vec![purpose.into()],
    }
}

/// An agency and the purpose it pulls under.
struct Office {
    id: &'static str,
    name: &'static str,
    purpose: &'static str,
}

const PENSION_OFFICE: Office = Office {
    id: NENKIN,
    name: NENKIN_NAME,
    purpose: "nenkin-kyufu",
};
const INSURER: Office = Office {
    id: KOUKI,
    name: KOUKI_NAME,
    purpose: "kouki-shikaku",
};
const SCHOOL_BOARD: Office = Office {
    id: SCHOOL,
    name: SCHOOL_NAME,
    purpose: "gakureibo",
};

/// A provision row as the pull API logs it.
fn pull(
    who: &str,
    when: DateTime<FixedOffset>,
    office: &Office,
    items: &[&str],
    outcome: &str,
) -> Provision {
    Provision {
        resident_id: who.into(),
        at: when,
        accessor_kind: "agency".into(),
        accessor_id: office.id.into(),
        accessor_name: office.name.into(),
        basis: office.purpose.into(),
        action: "pull".into(),
        items: codes(items),
        outcome: outcome.into(),
    }
}

/// The test register with its notices, over a store that knows the dictionary and the
/// purposes; the pension office follows 山田 花子 (R10001), whose address then changes in
/// September (an ingest: the change event is the store's own), and pulls her items in
/// October, her address held back; the school board pulls 陽's (R10002, a child), the
/// regional insurer 鈴木 次郎's (R10004) and 伊藤 和子's (R10008).
async fn records_app(backend: &str) -> App {
    let db = fresh(backend).await;
    let store = Store::open(&db.url)
        .await
        .unwrap()
        .with_exchange(Arc::new(exchange()));
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest(&store, &register(&[]), at("2026-08-01", 9, 0)).await;
    store
        .record_rule_set("test-rules", 4, "tests", clock.now())
        .await
        .unwrap();
    store
        .commit_day(d("2026-10-01"), "test-rules", 0, &decisions(), clock.now())
        .await
        .unwrap();
    let now = at("2026-08-01", 10, 0);
    store
        .upsert_agency(&agency(NENKIN, NENKIN_NAME, "nenkin-kyufu"), now)
        .await
        .unwrap();
    store
        .register_interest(
            &InterestSpec {
                agency_id: NENKIN.into(),
                purpose_id: "nenkin-kyufu".into(),
                resident: Some(ResidentId::parse("R10001").unwrap()),
                items: None,
                valid_to: d("2027-03-31"),
            },
            now,
        )
        .await
        .unwrap();
    let moved = register(&[(
        "R10001",
        json!({"address": {"local_gov_code": "133621", "text": "東京都利島村2番地"}}),
    )]);
    ingest(&store, &moved, at("2026-09-15", 10, 30)).await;
    delivered(&store, NENKIN, at("2026-09-15", 10, 31)).await;
    let october = at("2026-10-01", 9, 15);
    for p in [
        pull(
            "R10001",
            october,
            &PENSION_OFFICE,
            &["name", "birth_date"],
            "provided",
        ),
        pull("R10001", october, &PENSION_OFFICE, &["address"], "withheld"),
        pull(
            "R10002",
            at("2026-09-10", 14, 0),
            &SCHOOL_BOARD,
            &["name", "birth_date", "guardians"],
            "provided",
        ),
        pull(
            "R10004",
            at("2026-09-20", 11, 0),
            &INSURER,
            &["name", "kouki"],
            "provided",
        ),
        pull(
            "R10008",
            at("2026-09-05", 16, 45),
            &INSURER,
            &["name", "address"],
            "provided",
        ),
    ] {
        store.log_provision(&p).await.unwrap();
    }
    start(db, store, config(), clock).await
}

async fn records(app: &App, who: &str, query: &str) -> (u16, Value) {
    App::json(app.get(who, &format!("/api/records{query}")).await).await
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect()
}

fn accessors(body: &Value) -> Vec<&str> {
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["accessor"].as_str().unwrap())
        .collect()
}

fn time(r: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(r["at"].as_str().unwrap()).unwrap()
}

async fn a_resident_reads_what_was_provided_about_them(backend: &str) {
    let app = records_app(backend).await;
    let x = exchange();
    let nenkin = x.purpose("nenkin-kyufu").unwrap();
    let (status, body) = records(&app, "R10001", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "subject");
    assert_eq!(body["about"], "ご本人");
    assert_eq!(body["whose"], "あなた");
    let list = body["records"].as_array().unwrap();
    // Newest first.
    for pair in list.windows(2) {
        assert!(time(&pair[0]) >= time(&pair[1]), "{body}");
    }
    // The pull: what was provided and what was held back, one entry, by name.
    let pulls: Vec<&Value> = list.iter().filter(|r| r["action"] == "pull").collect();
    assert_eq!(
        pulls.len(),
        1,
        "the two rows of one pull are one entry: {body}"
    );
    let p = pulls[0];
    assert_eq!(p["accessor"], NENKIN_NAME);
    assert_eq!(p["body"], nenkin.body.as_str());
    assert_eq!(p["duty"], nenkin.duty.as_str());
    assert_eq!(p["legal_basis"], nenkin.legal_basis.as_str());
    assert!(p["duty"].as_str().unwrap().contains("年金給付"), "{p}");
    assert_eq!(p["action_text"], "情報の照会・提供");
    assert_eq!(names(&p["items"]), ["氏名", "生年月日"], "{p}");
    assert_eq!(names(&p["withheld"]), ["住所"], "{p}");
    assert_eq!(time(p), at("2026-10-01", 9, 15));
    assert!(p["at"].as_str().unwrap().ends_with("+09:00"), "{p}");
    // The change event the September ingest wrote, in the store's own transaction.
    let events: Vec<&Value> = list.iter().filter(|r| r["action"] == "event").collect();
    assert_eq!(events.len(), 1, "{body}");
    let e = events[0];
    assert_eq!(e["accessor"], NENKIN_NAME);
    assert_eq!(e["action_text"], "変更の通知");
    assert_eq!(e["duty"], nenkin.duty.as_str());
    assert!(names(&e["items"]).contains(&"住所"), "{e}");
    assert!(
        !names(&e["items"]).contains(&"氏名"),
        "only what changed: {e}"
    );
    assert_eq!(e["withheld"], json!([]));
    assert_eq!(time(e), at("2026-09-15", 10, 30));
    let pull_at = list.iter().position(|r| r["action"] == "pull").unwrap();
    let event_at = list.iter().position(|r| r["action"] == "event").unwrap();
    assert!(
        pull_at < event_at,
        "the October pull before the September event"
    );
    // Nobody else's provisions.
    for other in [SCHOOL_NAME, KOUKI_NAME] {
        assert!(!accessors(&body).contains(&other), "{body}");
    }
    // Never a value: the new address is nowhere in the answer.
    assert!(!body.to_string().contains("2番地"), "{body}");

    // 鈴木 次郎 reads his own, and none of hers.
    let (status, his) = records(&app, "R10004", "").await;
    assert_eq!(status, 200);
    assert_eq!(accessors(&his), [KOUKI_NAME]);
    assert_eq!(
        names(&his["records"][0]["items"]),
        ["氏名", x.dictionary.get("kouki").unwrap().name.as_str()]
    );

    // A reader with nothing provided: an empty record.
    let (status, none) = records(&app, "R10005", "").await;
    assert_eq!(status, 200);
    assert_eq!(none["records"], json!([]));

    // Each read is in the audit log, with the role.
    let audit = app.store.audit_entries(Some("R10001")).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "records.read"
            && a.actor == "R10001"
            && a.detail.as_deref() == Some(r#"{"role":"subject"}"#)),
        "{audit:?}"
    );
    app.shutdown().await;
}
on_both!(own_record, a_resident_reads_what_was_provided_about_them);

async fn only_guardians_and_proxies_in_scope_read_for_someone(backend: &str) {
    let app = records_app(backend).await;
    let missing = json!({ "error": "not_found" });

    // Another resident asking for hers: the answer of a missing person, as slow.
    // (A malformed id reads nothing: it needs no floor.)
    for (query, floored) in [
        ("?for=R10001", true),
        ("?for=R10099", true),
        ("?for=not%20an%20id", false),
        ("?for=", false),
    ] {
        let started = Instant::now();
        let (status, body) = records(&app, "R10004", query).await;
        assert_eq!((status, &body), (404, &missing), "{query}");
        if floored {
            assert!(started.elapsed() >= NOT_FOUND_FLOOR, "{query}");
        }
    }
    let audit = app.store.audit_entries(Some("R10001")).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "records.refused" && a.actor == "R10004"),
        "{audit:?}"
    );
    assert!(
        !audit
            .iter()
            .any(|a| a.action == "records.read" && a.actor == "R10004"),
        "{audit:?}"
    );
    // Nobody whose death is registered reads anything, their own record neither.
    let (status, body) = records(&app, "R10007", "").await;
    assert_eq!((status, &body), (404, &missing));
    // Her pension proxy: its scope does not cover the whole record. The proxy for
    // everything whose authority ended yesterday: nothing either.
    for proxy in ["R10005", "R10006"] {
        let (status, body) = records(&app, proxy, "?for=R10001").await;
        assert_eq!((status, &body), (404, &missing), "{proxy}");
    }

    // The child's guardian reads the child's record, named as the child.
    let (status, child) = records(&app, "R10003", "?for=R10002").await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(child["role"], "guardian");
    assert_eq!(child["about"], "陽さん（お子さま）");
    assert_eq!(child["whose"], "陽さん");
    assert_eq!(accessors(&child), [SCHOOL_NAME]);
    assert_eq!(
        names(&child["records"][0]["items"]),
        [
            "氏名",
            "生年月日",
            exchange()
                .dictionary
                .get("guardians")
                .unwrap()
                .name
                .as_str()
        ]
    );
    assert_eq!(child["others"], json!([]));
    // Their own record lists the child to open, and holds none of the child's entries.
    let (status, own) = records(&app, "R10003", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        own["others"],
        json!([{ "for": "R10002", "about": "陽さん（お子さま）", "role": "guardian" }])
    );
    assert!(!accessors(&own).contains(&SCHOOL_NAME), "{own}");
    // Not their ward.
    let (status, _) = records(&app, "R10003", "?for=R10004").await;
    assert_eq!(status, 404);

    // A proxy for everything reads the principal's record.
    let (status, body) = records(&app, "R10010", "?for=R10008").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "proxy");
    assert_eq!(body["about"], "伊藤 和子さん（代理人として）");
    assert_eq!(accessors(&body), [KOUKI_NAME]);
    assert_eq!(names(&body["records"][0]["items"]), ["氏名", "住所"]);
    let audit = app.store.audit_entries(Some("R10008")).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "records.read"
            && a.actor == "R10010"
            && a.detail.as_deref() == Some(r#"{"role":"proxy"}"#)),
        "{audit:?}"
    );
    app.shutdown().await;
}
on_both!(
    acting_for,
    only_guardians_and_proxies_in_scope_read_for_someone
);

/// Ingests the test register with `changes` at `when`; her September move is kept, so that
/// no change but these is made.
async fn change(app: &App, when: DateTime<FixedOffset>, changes: &[(&str, Value)]) {
    let mut all: Vec<(&str, Value)> = vec![(
        "R10001",
        json!({"address": {"local_gov_code": "133621", "text": "東京都利島村2番地"}}),
    )];
    for (id, v) in changes {
        match all.iter_mut().find(|(i, _)| i == id) {
            Some((_, patch)) => {
                for (k, val) in v.as_object().unwrap() {
                    patch[k] = val.clone();
                }
            }
            None => all.push((id, v.clone())),
        }
    }
    ingest(&app.store, &register(&all), when).await;
}

/// Every role is re-checked against the register at each request.
async fn register_changes_apply_at_once(backend: &str) {
    let app = records_app(backend).await;
    let mut minute = 0;
    let mut next = || {
        minute += 1;
        at("2026-09-20", 8, minute)
    };
    let all_scope = json!({"proxies": [{"id": "R10005", "scopes": ["pension"]}, {"id": "R10006", "scopes": ["all"]}]});

    // The proxy for everything is given its authority again: it reads her record.
    change(&app, next(), &[("R10001", all_scope.clone())]).await;
    let (status, body) = records(&app, "R10006", "?for=R10001").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["about"], "山田 花子さん（代理人として）");
    assert!(accessors(&body).contains(&NENKIN_NAME));

    // She comes under a support measure: no proxy reads her record; she still does, with
    // what was held back.
    let mut protected = all_scope.clone();
    protected["support_measure"] = json!(true);
    change(&app, next(), &[("R10001", protected)]).await;
    let (status, _) = records(&app, "R10006", "?for=R10001").await;
    assert_eq!(status, 404);
    let (status, own) = records(&app, "R10001", "").await;
    assert_eq!(status, 200);
    assert!(own.to_string().contains("住所"), "{own}");

    // The child under a support measure: the guardian, not living with the child, no longer
    // reads it; living with the child, does.
    change(
        &app,
        next(),
        &[("R10002", json!({"support_measure": true}))],
    )
    .await;
    let (status, _) = records(&app, "R10003", "?for=R10002").await;
    assert_eq!(status, 404);
    let (_, own) = records(&app, "R10003", "").await;
    assert_eq!(own["others"], json!([]), "{own}");
    change(
        &app,
        next(),
        &[
            (
                "R10002",
                json!({"support_measure": true, "household": {"id": "H2", "relationship": "子"}}),
            ),
            (
                "R10003",
                json!({"household": {"id": "H2", "relationship": "世帯主"}}),
            ),
        ],
    )
    .await;
    let (status, child) = records(&app, "R10003", "?for=R10002").await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(accessors(&child), [SCHOOL_NAME]);

    // A guardian listed for an adult reads nothing of theirs: the rule is for minors.
    change(
        &app,
        next(),
        &[("R10004", json!({"guardians": [{"id": "R10003"}]}))],
    )
    .await;
    let (status, _) = records(&app, "R10003", "?for=R10004").await;
    assert_eq!(status, 404);

    // The principal's death ends the proxy's authority (民法111条).
    change(
        &app,
        next(),
        &[(
            "R10008",
            json!({"status": {"kind": "deceased", "date": "2026-09-30"}}),
        )],
    )
    .await;
    let (status, _) = records(&app, "R10010", "?for=R10008").await;
    assert_eq!(status, 404);
    app.shutdown().await;
}
on_both!(live_recheck, register_changes_apply_at_once);

/// The first register id (`R` and five digits) in `text`.
fn raw_id(text: &str) -> Option<&str> {
    text.char_indices()
        .find(|(i, c)| {
            *c == 'R'
                && text[i + 1..]
                    .chars()
                    .take(5)
                    .filter(char::is_ascii_digit)
                    .count()
                    == 5
        })
        .map(|(i, _)| &text[i..(i + 6).min(text.len())])
}

/// Where `part` is in `text` (it must be there).
fn place(text: &str, part: &str) -> usize {
    text.find(part)
        .unwrap_or_else(|| panic!("{part:?} missing in {text}"))
}

async fn the_page_reads_as_a_record_by_month(backend: &str) {
    let app = records_app(backend).await;
    let x = exchange();
    let nenkin = x.purpose("nenkin-kyufu").unwrap();

    // Not signed in: the login hint.
    let r = app
        .http
        .get(format!("{}/records", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let c = app.session_cookie("R10001").await;
    let (_, inbox) = app.page(&c, "/inbox").await;
    assert!(
        inbox.contains(r#"<a href="/records">情報の提供記録</a>"#),
        "{inbox}"
    );
    let (status, html) = app.page(&c, "/records").await;
    assert_eq!(status, 200, "{html}");
    let text = visible(&html);
    for part in [
        "<h1>情報の提供記録</h1>",
        "あなたの住民記録の情報を、法律に基づいて提供した記録です。",
        NENKIN_NAME,
        nenkin.duty.as_str(),
        "変更の通知",
        "情報の照会・提供",
        "支援措置のため提供していません",
        "2026年10月1日（木） 9時15分",
        "2026年9月15日（火） 10時30分",
    ] {
        assert!(html.contains(part), "{part} in {html}");
    }
    // Each law of the legal basis on its own line.
    let laws: Vec<&str> = nenkin.legal_basis.split(';').map(str::trim).collect();
    assert!(laws.len() > 1, "{laws:?}");
    assert!(html.contains(&laws.join("<br>")), "{laws:?} in {html}");
    // By month, newest first; in the October pull, what was provided, then what was not.
    let list = &text[place(&text, "2026年10月")..];
    let september = place(list, "2026年9月");
    let pull = place(list, "情報の照会・提供");
    let event = place(list, "変更の通知");
    assert!(pull < september && september < event, "{list}");
    let provided = place(list, "提供した情報");
    let withheld = place(list, "提供していない情報");
    assert!(
        pull < provided && provided < withheld && withheld < september,
        "{list}"
    );
    assert!(list[provided..withheld].contains("生年月日"), "{list}");
    assert!(list[withheld..september].contains("住所"), "{list}");
    // Her own page carries no register id at all, neither in its text nor in its links;
    // items and purposes by name, dates as a notice writes them.
    assert_eq!(raw_id(&html), None, "{html}");
    for code in ["birth_date", "name_kana", "nenkin-kyufu", "address"] {
        assert!(!text.contains(code), "{code} in {text}");
    }
    assert_eq!(
        oshirase_engine::wording::machine_written(&text),
        None,
        "{text}"
    );
    // Headings and lists, no table.
    assert!(
        html.contains("<ol class=\"records\">") && !html.contains("<table"),
        "{html}"
    );

    // Nothing provided: said so.
    let c5 = app.session_cookie("R10005").await;
    let (status, empty) = app.page(&c5, "/records").await;
    assert_eq!(status, 200);
    assert!(empty.contains("提供の記録はありません"), "{empty}");

    // The guardian: a link to the child's record, named; the child's page says whose.
    let c3 = app.session_cookie("R10003").await;
    let (_, own) = app.page(&c3, "/records").await;
    assert!(
        own.contains(r#"<a href="/records?for=R10002">陽さん（お子さま）の提供記録</a>"#),
        "{own}"
    );
    assert_eq!(raw_id(&visible(&own)), None, "{own}");
    let (status, child) = app.page(&c3, "/records?for=R10002").await;
    assert_eq!(status, 200, "{child}");
    for part in [
        "<h1>情報の提供記録：陽さん（お子さま）</h1>",
        "陽さんの住民記録の情報を、法律に基づいて提供した記録です。",
        SCHOOL_NAME,
        "2026年9月10日（木） 14時00分",
        r#"<a href="/records">ご自分の記録へ戻る</a>"#,
    ] {
        assert!(child.contains(part), "{part} in {child}");
    }
    assert_eq!(raw_id(&visible(&child)), None, "{child}");
    let audit = app.store.audit_entries(Some("R10002")).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "records.read" && a.actor == "R10003"),
        "{audit:?}"
    );

    // Someone else's record: the same page as nobody's.
    let c4 = app.session_cookie("R10004").await;
    let (status, refused) = app.page(&c4, "/records?for=R10001").await;
    assert_eq!(status, 404);
    assert!(refused.contains("提供の記録を表示できません"), "{refused}");
    let (status, missing) = app.page(&c4, "/records?for=R10099").await;
    assert_eq!((status, &missing), (404, &refused));
    app.shutdown().await;
}
on_both!(page, the_page_reads_as_a_record_by_month);

/// The fixture town on the real dictionary and purposes: the regional insurer follows the
/// whole municipality; residents whose address changes read the change events as a record
/// in words, with no register id, item code or machine-written date on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_towns_change_events_read_in_words() {
    let mut town = Town::new("2026-10-01").await;
    town.store = town.store.clone().with_exchange(Arc::new(exchange()));
    let x = exchange();
    let kouki = x.purpose("kouki-shikaku").unwrap();
    let now = town.clock.now();
    town.store
        .upsert_agency(&agency(KOUKI, KOUKI_NAME, "kouki-shikaku"), now)
        .await
        .unwrap();
    town.store
        .register_interest(
            &InterestSpec {
                agency_id: KOUKI.into(),
                purpose_id: "kouki-shikaku".into(),
                resident: None,
                items: None,
                valid_to: d("2027-03-31"),
            },
            now,
        )
        .await
        .unwrap();
    let mut residents = town.snap.population.residents().to_vec();
    let mut moved = Vec::new();
    for r in residents.iter_mut().filter(|r| r.is_current()).take(6) {
        r.address.text = format!("{}の2", r.address.text);
        moved.push(r.id.to_string());
    }
    ingest(
        &town.store,
        &residents,
        oshirase_engine::clock::after(now, std::time::Duration::from_secs(3600)),
    )
    .await;
    delivered(
        &town.store,
        KOUKI,
        oshirase_engine::clock::after(now, std::time::Duration::from_secs(3660)),
    )
    .await;
    // Someone unmoved has nothing from this ingest.
    let still = town
        .snap
        .population
        .residents()
        .iter()
        .find(|r| r.is_current() && !moved.contains(&r.id.to_string()))
        .unwrap()
        .id
        .to_string();
    let app = town.serve().await;
    for who in &moved {
        let c = app.session_cookie(who).await;
        let (status, html) = app.page(&c, "/records").await;
        assert_eq!(status, 200, "{who}");
        let text = visible(&html);
        for part in [KOUKI_NAME, kouki.duty.as_str(), "変更の通知", "住所"] {
            assert!(text.contains(part), "{who}: {part} in {text}");
        }
        assert_eq!(raw_id(&html), None, "{who}: {html}");
        for item in x.dictionary.items() {
            if item.code.as_str().contains('_') {
                assert!(
                    !text.contains(item.code.as_str()),
                    "{who}: {} in {text}",
                    item.code
                );
            }
        }
        assert_eq!(
            oshirase_engine::wording::machine_written(&text),
            None,
            "{who}: {text}"
        );
    }
    let (status, body) = App::json(app.get(&still, "/api/records").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["records"], json!([]), "{body}");
    app.shutdown().await;
}
