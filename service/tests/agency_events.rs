//! Agencies' change events are written by the ingest itself, in its transaction: who is told
//! (interest and purpose), of which items (purpose, dictionary version, interest), with a
//! contiguous sequence per stream, and nothing when the ingest rolls back. On SQLite and
//! PostgreSQL.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::ids::ResidentId;
use oshirase_engine::items::ItemCode;
use oshirase_engine::purposes::Exchange;
use oshirase_service::ingest::ingest;
use oshirase_store::{AgencyEvent, AgencySpec, InterestSpec, Store};
use oshirase_testkit::{d, on_both};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn exchange() -> Arc<Exchange> {
    Arc::new(
        oshirase_engine::purposes::load_dir(&root().join("rules"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

const HEADER: &str = r#"{"format":"oshirase-changes","schema_version":1}"#;

fn feed(lines: &[String]) -> String {
    let mut out = format!("{HEADER}\n");
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn death(seq: u32, resident: &str, day: &str) -> String {
    format!(
        r#"{{"seq":{seq},"kind":"death","date":"{day}","recorded":"{day}","resident":"{resident}"}}"#
    )
}

fn moved_within(seq: u32, resident: &str, text: &str) -> String {
    format!(
        r#"{{"seq":{seq},"kind":"address_change","date":"2026-10-02","resident":"{resident}","address":{{"local_gov_code":"133621","postal_code":"100-0301","text":"{text}"}}}}"#
    )
}

fn agency(id: &str, purpose: &str, version: u32) -> AgencySpec {
    AgencySpec {
        id: id.into(),
        name: format!("{id} office"),
        endpoint: None,
        client_jwks: r#"{"keys":[]}"#.into(),
        dictionary_version: version,
        purposes: vec![purpose.into()],
    }
}

fn rid(s: &str) -> ResidentId {
    ResidentId::parse(s).unwrap()
}

fn codes(e: &AgencyEvent) -> BTreeSet<&str> {
    e.items.iter().map(ItemCode::as_str).collect()
}

/// The fixture town as the baseline, and three agencies: the pension office following two
/// pension recipients, the 広域連合 following everybody, the school board following a child.
async fn town(backend: &str) -> (oshirase_testkit::TestDb, Store, Arc<FixedClock>) {
    let db = oshirase_testkit::fresh(backend, "oshirase_agency").await;
    let store = Store::open(&db.url)
        .await
        .unwrap()
        .with_exchange(exchange());
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    let text = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    let r = ingest(&store, "town.jsonl", &text, false, clock.now())
        .await
        .unwrap();
    assert_eq!(
        r.outcome.agency_events, 0,
        "the baseline tells nobody anything"
    );
    for (id, purpose) in [
        ("nenkin", "nenkin-kyufu"),
        ("kouki", "kouki-shikaku"),
        ("gakurei", "gakureibo"),
    ] {
        store
            .upsert_agency(&agency(id, purpose, 2), clock.now())
            .await
            .unwrap();
    }
    let interest = |a: &str, p: &str, r: Option<&str>| InterestSpec {
        agency_id: a.into(),
        purpose_id: p.into(),
        resident: r.map(rid),
        items: None,
        valid_to: d("2027-03-31"),
    };
    for r in ["R00008", "R00015"] {
        store
            .register_interest(&interest("nenkin", "nenkin-kyufu", Some(r)), clock.now())
            .await
            .unwrap();
    }
    store
        .register_interest(&interest("kouki", "kouki-shikaku", None), clock.now())
        .await
        .unwrap();
    store
        .register_interest(
            &interest("gakurei", "gakureibo", Some("R00003")),
            clock.now(),
        )
        .await
        .unwrap();
    (db, store, clock)
}

async fn events(store: &Store, agency: &str, purpose: &str) -> Vec<AgencyEvent> {
    store
        .agency_events_after(agency, purpose, 0, 1000)
        .await
        .unwrap()
}

async fn a_death_reaches_the_agencies_that_follow_the_person(backend: &str) {
    let (_db, store, clock) = town(backend).await;
    let r = ingest(
        &store,
        "f1",
        &feed(&[death(1, "R00008", "2026-10-01")]),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome.agency_events, 2);
    for (agency, purpose) in [("nenkin", "nenkin-kyufu"), ("kouki", "kouki-shikaku")] {
        let e = events(&store, agency, purpose).await;
        assert_eq!(e.len(), 1, "{agency}");
        assert_eq!(e[0].seq, 1);
        assert_eq!(e[0].kind, "jp.lg.oshirase.resident.died");
        assert_eq!(codes(&e[0]), BTreeSet::from(["status", "status_date"]));
        // The subject is the agency's pseudonym: never the register id, and not another's.
        assert_ne!(e[0].subject, "R00008");
        assert_eq!(
            store
                .resolve_pseudonym(agency, &e[0].subject)
                .await
                .unwrap(),
            Some(rid("R00008"))
        );
    }
    let nenkin = &events(&store, "nenkin", "nenkin-kyufu").await[0];
    let kouki = &events(&store, "kouki", "kouki-shikaku").await[0];
    assert_ne!(
        nenkin.subject, kouki.subject,
        "two agencies cannot link their pseudonyms"
    );
    assert!(
        events(&store, "gakurei", "gakureibo").await.is_empty(),
        "the school board follows a child"
    );
    // Nothing is in the resident's record of what was provided until it is delivered.
    assert!(store.provisions(&rid("R00008")).await.unwrap().is_empty());

    // A person nobody but the whole-municipality follower follows: only it hears.
    ingest(
        &store,
        "f2",
        &feed(&[moved_within(1, "R00001", "東京都利島村99番地")]),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    let kouki = events(&store, "kouki", "kouki-shikaku").await;
    assert_eq!(
        kouki.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2],
        "contiguous"
    );
    assert_eq!(codes(&kouki[1]), BTreeSet::from(["address"]));
    assert_eq!(kouki[1].kind, "jp.lg.oshirase.resident.changed");
    assert_eq!(events(&store, "nenkin", "nenkin-kyufu").await.len(), 1);
}
on_both!(a_death, a_death_reaches_the_agencies_that_follow_the_person);

async fn expired_interest_and_items_outside_the_interest_tell_nothing(backend: &str) {
    let (_db, store, clock) = town(backend).await;
    // The pension office's interest in R00015 now covers only status items, and ended.
    store
        .register_interest(
            &InterestSpec {
                agency_id: "nenkin".into(),
                purpose_id: "nenkin-kyufu".into(),
                resident: Some(rid("R00015")),
                items: Some(BTreeSet::from([ItemCode::parse("status").unwrap()])),
                valid_to: d("2026-12-31"),
            },
            clock.now(),
        )
        .await
        .unwrap();
    // A move is not an item it asked for.
    ingest(
        &store,
        "f1",
        &feed(&[moved_within(1, "R00015", "東京都利島村98番地")]),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    assert!(events(&store, "nenkin", "nenkin-kyufu").await.is_empty());
    // After the interest's last day, a death is not told either.
    clock.set(oshirase_engine::clock::in_tokyo(
        d("2027-01-01"),
        chrono::NaiveTime::MIN,
    ));
    ingest(
        &store,
        "f2",
        &feed(&[death(1, "R00015", "2026-12-31")]),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    assert!(events(&store, "nenkin", "nenkin-kyufu").await.is_empty());
}
on_both!(
    expired,
    expired_interest_and_items_outside_the_interest_tell_nothing
);

async fn a_reader_of_version_1_never_hears_of_a_version_2_item(backend: &str) {
    let (_db, store, clock) = town(backend).await;
    let x = exchange();
    let newer: Vec<&str> = x
        .dictionary
        .items()
        .iter()
        .filter(|i| i.since > 1)
        .map(|i| i.code.as_str())
        .collect();
    assert!(
        newer.contains(&"kouki"),
        "the test changes the `kouki` attribute item"
    );
    store
        .upsert_agency(&agency("kouki-v1", "kouki-shikaku", 1), clock.now())
        .await
        .unwrap();
    store
        .register_interest(
            &InterestSpec {
                agency_id: "kouki-v1".into(),
                purpose_id: "kouki-shikaku".into(),
                resident: None,
                items: None,
                valid_to: d("2027-03-31"),
            },
            clock.now(),
        )
        .await
        .unwrap();
    let correction = r#"{"seq":1,"kind":"correction","date":"2026-10-02","resident":"R00008","fields":{"attributes":{"employees_pension":true,"pension_recipient":true,"kaigo_certified":true}}}"#;
    ingest(
        &store,
        "f1",
        &feed(&[correction.to_owned()]),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    let v2 = events(&store, "kouki", "kouki-shikaku").await;
    assert_eq!(v2.len(), 1);
    assert_eq!(codes(&v2[0]), BTreeSet::from(["kouki"]));
    assert!(
        events(&store, "kouki-v1", "kouki-shikaku").await.is_empty(),
        "v1 does not know `kouki`"
    );
    // Both hear of a change they both know.
    ingest(
        &store,
        "f2",
        &feed(&[death(1, "R00008", "2026-10-03")]),
        false,
        clock.now(),
    )
    .await
    .unwrap();
    let v1 = events(&store, "kouki-v1", "kouki-shikaku").await;
    assert_eq!(v1.len(), 1);
    assert_eq!(v1[0].seq, 1, "its own sequence starts at 1");
    assert_eq!(v1[0].dictionary_version, 1);
    assert!(v1[0].items.iter().all(|c| !newer.contains(&c.as_str())));
}
on_both!(
    versions,
    a_reader_of_version_1_never_hears_of_a_version_2_item
);

async fn an_ingest_that_rolls_back_leaves_no_event(backend: &str) {
    let (db, store, clock) = town(backend).await;
    // Break the events table on purpose: the ingest's last writes fail.
    match backend {
        "sqlite" => {
            oshirase_testkit::sql::execute(
                &db.url,
                "CREATE TRIGGER no_events BEFORE INSERT ON agency_events BEGIN SELECT RAISE(ABORT, 'broken on purpose'); END",
            )
            .await;
        }
        _ => {
            oshirase_testkit::sql::execute(
                &db.url,
                "CREATE FUNCTION no_events() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'broken on purpose'; END $$ LANGUAGE plpgsql",
            )
            .await;
            oshirase_testkit::sql::execute(
                &db.url,
                "CREATE TRIGGER no_events BEFORE INSERT ON agency_events FOR EACH ROW EXECUTE FUNCTION no_events()",
            )
            .await;
        }
    }
    let text = feed(&[death(1, "R00008", "2026-10-01")]);
    assert!(ingest(&store, "f1", &text, false, clock.now())
        .await
        .is_err());
    let record = store
        .residents_named(&["R00008".into()], &[])
        .await
        .unwrap();
    assert_eq!(
        record[0].status.name(),
        "resident",
        "nothing of the ingest stayed"
    );
    assert!(store
        .streams(None)
        .await
        .unwrap()
        .iter()
        .all(|s| s.last_seq == 0));
    let drop = match backend {
        "sqlite" => "DROP TRIGGER no_events",
        _ => "DROP TRIGGER no_events ON agency_events",
    };
    oshirase_testkit::sql::execute(&db.url, drop).await;
    let r = ingest(&store, "f1", &text, false, clock.now())
        .await
        .unwrap();
    assert_eq!(
        r.outcome.agency_events, 2,
        "the same feed again tells them now"
    );
    assert_eq!(events(&store, "nenkin", "nenkin-kyufu").await[0].seq, 1);
}
on_both!(rollback, an_ingest_that_rolls_back_leaves_no_event);

async fn concurrent_ingests_keep_each_stream_contiguous(backend: &str) {
    let (_db, store, clock) = town(backend).await;
    let ids: Vec<String> = store
        .residents()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.is_current())
        .map(|r| r.id.as_str().to_owned())
        .take(40)
        .collect();
    let mut runs = Vec::new();
    for (n, chunk) in ids.chunks(10).enumerate() {
        let lines: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                moved_within(
                    i as u32 + 1,
                    r,
                    &format!("東京都利島村{}番地", 500 + n * 10 + i),
                )
            })
            .collect();
        let (store, text, now) = (store.clone(), feed(&lines), clock.now());
        runs.push(tokio::spawn(async move {
            ingest(&store, &format!("feed-{n}"), &text, false, now)
                .await
                .unwrap()
        }));
    }
    for r in runs {
        r.await.unwrap();
    }
    let seqs: Vec<i64> = events(&store, "kouki", "kouki-shikaku")
        .await
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "no gap, no duplicate");
    // And no ingest wrote back a record another had changed meanwhile (a lost update).
    let now = store.residents_named(&ids, &[]).await.unwrap();
    for r in &now {
        assert!(
            r.address.text.starts_with("東京都利島村5"),
            "{}: {}",
            r.id,
            r.address.text
        );
    }
}
on_both!(concurrent, concurrent_ingests_keep_each_stream_contiguous);
