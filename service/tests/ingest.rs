//! Ingest through the store: `ingest` reads only the records a feed names, and must agree
//! with applying the feed to the whole register.

#[path = "../../engine/tests/support/feed_fixtures.rs"]
mod feed_fixtures;

use feed_fixtures::*;
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::feed::{apply, apply_lenient, parse_feed};
use oshirase_engine::parse_snapshot;
use oshirase_engine::resident::Resident;
use oshirase_service::ingest::{ingest, IngestError};
use oshirase_store::Store;

/// A fresh SQLite store holding `records` as one snapshot batch.
async fn stored(records: &[Resident]) -> (tempfile::TempDir, String, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("feed.sqlite").display());
    let store = Store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let now = FixedClock::at_noon(d("2026-10-01")).now();
    store
        .apply_ingest(oshirase_store::IngestBatch {
            source: "town",
            kind: oshirase_store::IngestKind::Snapshot,
            content: b"town",
            as_of: Some(d("2026-10-01")),
            rows_in: records.len(),
            state: records,
            events: &[],
            feed_position: None,
            read_at: None,
            now,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, url, store)
}

/// Ingests `text` into a store holding `register` and checks the outcome against `apply`
/// over the whole register: the same records and events, or the same errors.
async fn same_through_the_store(register: &[Resident], text: &str, lenient: bool) {
    let (_dir, _url, store) = stored(register).await;
    let f = parse_feed(text, "f.jsonl").unwrap_or_else(|e| panic!("{e}"));
    let now = FixedClock::at_noon(d("2026-10-25")).now();
    let got = ingest(&store, "f.jsonl", text, lenient, now).await;
    let want = if lenient {
        apply_lenient(register, &f, "f.jsonl")
    } else {
        apply(register, &f, "f.jsonl").map(|a| (a, Vec::new()))
    };
    match (want, got) {
        (Ok((a, rejected)), Ok(report)) => {
            let mut records = a.residents;
            records.sort_by(|x, y| x.id.cmp(&y.id));
            assert_eq!(store.residents().await.unwrap(), records, "{text}");
            let mut want_events = a.events;
            want_events.sort_by(|x, y| x.id.cmp(&y.id));
            let mut got_events = store.events().await.unwrap();
            got_events.sort_by(|x, y| x.id.cmp(&y.id));
            assert_eq!(got_events, want_events, "{text}");
            assert_eq!(report.rejected, rejected, "{text}");
        }
        (Err(want), Err(IngestError::Invalid(got))) => {
            assert_eq!(got.0, want.0, "{text}");
            assert_eq!(
                store.counts().await.unwrap()["ingest_batches"],
                1,
                "nothing applied"
            );
        }
        (want, got) => panic!("{text}\n  whole register: {want:?}\n  through the store: {got:?}"),
    }
    store.close().await;
}

#[tokio::test]
async fn ingesting_through_the_store_agrees_with_the_whole_register() {
    same_through_the_store(&town(), &feed(&every_kind()), false).await;
    let (harmless, cases) = rejection_cases();
    for (line, _, _) in cases {
        let mut lines = harmless.clone();
        lines.push(line);
        same_through_the_store(&town(), &feed(&lines), false).await;
        same_through_the_store(&town(), &feed(&lines), true).await;
    }
    let no_trace = [
        r#"{"seq":1,"kind":"move_out","date":"2026-10-06","resident":"R4"}"#.to_string(),
        r#"{"seq":2,"kind":"householder_change","date":"2026-10-07","household":"H1","new_householder":"R2","relationships":{"R1":"夫","R9":"子"}}"#.into(),
        r#"{"seq":3,"kind":"death","date":"2026-10-08","resident":"R99"}"#.into(),
        r#"{"seq":4,"kind":"address_change","date":"2026-10-09","resident":"R3","address":{"local_gov_code":"133621","text":"利島村3番地"}}"#.into(),
    ];
    same_through_the_store(&town(), &feed(&no_trace), false).await;
    same_through_the_store(&town(), &feed(&no_trace), true).await;
    for lines in [
        vec![
            r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R2","fields":{"household":{"id":"H1","relationship":"世帯主"}}}"#.to_string(),
            r#"{"seq":2,"kind":"correction","date":"2026-10-06","resident":"R1","fields":{"household":{"id":"H1","relationship":"夫"}}}"#.into(),
        ],
        vec![r#"{"seq":1,"kind":"household_merge","date":"2026-10-05","recorded":"2026-10-07","residents":["R4"],"household":"H1","relationships":{"R4":"世帯主","R1":"父"}}"#.into()],
        // A correction moving R3 into R4's household (read only because the line names it).
        vec![r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R3","fields":{"household":{"id":"H2","relationship":"世帯主"}}}"#.into()],
        // A correction naming R9, who is not in any household the line touches.
        vec![r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R3","fields":{"proxies":[{"id":"R9","scopes":["all"]}]}}"#.into()],
        vec![format!(
            r#"{{"seq":1,"kind":"move_in","date":"2026-10-05","record":{}}}"#,
            person("R7", "1970-01-01", "H3", "世帯主")
        )],
    ] {
        same_through_the_store(&town(), &feed(&lines), false).await;
    }
    let fixture = parse_snapshot(include_str!("../../fixtures/town.jsonl"), "town.jsonl")
        .unwrap_or_else(|e| panic!("{e}"));
    same_through_the_store(
        fixture.population.residents(),
        include_str!("../../fixtures/town-changes.jsonl"),
        false,
    )
    .await;
}

/// A feed line reads the records it names, not the register: a record it does not name may
/// even be unreadable.
#[tokio::test]
async fn a_feed_line_reads_only_what_it_names() {
    let (_dir, url, store) = stored(&town()).await;
    oshirase_testkit::sql::execute(
        &url,
        "UPDATE residents SET record = 'not a record' WHERE id = 'R8'",
    )
    .await;
    assert!(store.residents().await.is_err(), "R8 is unreadable now");
    let text = feed(&[
        r#"{"seq":1,"kind":"address_change","date":"2026-10-05","resident":"R2","address":{"local_gov_code":"133621","text":"利島村9番地"}}"#.into(),
    ]);
    let now = FixedClock::at_noon(d("2026-10-05")).now();
    let report = ingest(&store, "f.jsonl", &text, false, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.outcome.rows_changed, 1);
    let r2 = store
        .residents_named(&["R2".to_owned()], &[])
        .await
        .unwrap();
    assert_eq!(r2[0].address.text, "利島村9番地");
    store.close().await;
}

/// Two feed lines joined by a lost line break are refused whole: nothing is applied and the
/// feed position stays, so the feed sent again with the break restored applies both.
#[tokio::test]
async fn a_lost_line_break_refuses_the_feed_and_keeps_its_position() {
    let (_dir, _url, store) = stored(&town()).await;
    let birth = format!(
        r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{}}}"#,
        person("R5", "2026-10-06", "H1", "子")
    );
    let death = r#"{"seq":2,"kind":"death","date":"2026-10-08","resident":"R4"}"#;
    let now = FixedClock::at_noon(d("2026-10-10")).now();
    let joined = format!("{HEADER}\n{birth}{death}\n");
    match ingest(&store, "f.jsonl", &joined, false, now).await {
        Err(IngestError::Invalid(e)) => {
            assert_eq!(e.0.len(), 1, "{e}");
            assert_eq!(e.0[0].line, 2, "{e}");
            assert!(e.to_string().contains("column"), "{e}");
        }
        other => panic!("a joined line must be refused: {other:?}"),
    }
    // Refused with --skip-invalid too, as a rejected line rather than a dropped death.
    let report = ingest(&store, "f.jsonl", &joined, true, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    assert_eq!(report.rejected[0].line, 2);
    assert_eq!(store.feed_position("f.jsonl").await.unwrap(), Some(0));
    let fixed = format!("{HEADER}\n{birth}\n{death}\n");
    ingest(&store, "f.jsonl", &fixed, false, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.feed_position("f.jsonl").await.unwrap(), Some(2));
    let r4 = store
        .residents_named(&["R4".to_owned()], &[])
        .await
        .unwrap();
    assert_eq!(r4[0].status.name(), "deceased");
    store.close().await;
}

/// Snapshot text with `records` under a header of `as_of`.
fn snapshot(as_of: &str, records: &[Resident]) -> String {
    let mut t = format!(r#"{{"format":"oshirase-snapshot","schema_version":1,"as_of":"{as_of}"}}"#);
    for r in records {
        t.push('\n');
        t.push_str(&serde_json::to_string(r).unwrap());
    }
    t
}

/// A record of `town()` by id.
fn of(records: &[Resident], id: &str) -> Resident {
    records
        .iter()
        .find(|r| r.id.as_str() == id)
        .unwrap_or_else(|| panic!("no {id}"))
        .clone()
}

/// A snapshot leaves the records it does not hold as they are stored. One that leaves out
/// H1's 世帯主 R1 and names a new one, R5, would store a household with two: it is refused,
/// naming both, before anything is written, and the service can still read the register.
async fn a_snapshot_that_would_leave_the_register_invalid_is_refused(backend: &str) {
    let db = oshirase_testkit::fresh(backend, "oshirase_ingest_").await;
    let store = Store::open(&db.url).await.unwrap_or_else(|e| panic!("{e}"));
    let now = FixedClock::at_noon(d("2026-10-01")).now();
    let town = town();
    ingest(
        &store,
        "town.jsonl",
        &snapshot("2026-10-01", &town),
        false,
        now,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let before = store.residents().await.unwrap();
    let newcomer: Resident =
        serde_json::from_str(&person("R5", "1980-01-01", "H1", "世帯主")).unwrap();
    let mut next: Vec<Resident> = town
        .iter()
        .filter(|r| r.id.as_str() != "R1")
        .cloned()
        .collect();
    next.push(newcomer.clone());
    let text = snapshot("2026-11-01", &next);
    let later = FixedClock::at_noon(d("2026-11-01")).now();
    match ingest(&store, "town-2.jsonl", &text, false, later).await {
        Err(IngestError::Invalid(e)) => {
            assert_eq!(e.0.len(), 1, "{e}");
            // R5 is the last line of the snapshot.
            assert_eq!(e.0[0].line, next.len() + 1, "{e}");
            assert_eq!(
                e.0[0].field.as_deref(),
                Some("household.relationship"),
                "{e}"
            );
            let m = &e.0[0].message;
            for part in ["\"H1\"", "R1", "R5", "not in this snapshot"] {
                assert!(m.contains(part), "{part:?} missing from: {e}");
            }
        }
        other => panic!("a second 世帯主 must be refused: {other:?}"),
    }
    assert_eq!(
        store.counts().await.unwrap()["ingest_batches"],
        1,
        "nothing written"
    );
    assert_eq!(store.residents().await.unwrap(), before);
    let stored = store.residents().await.unwrap();
    let lines = vec![0; stored.len()];
    oshirase_engine::Population::build(stored, &lines, "store", store.events().await.unwrap())
        .unwrap_or_else(|e| panic!("the stored register must stay valid: {e}"));
    // Giving R1 a new 続柄 in the same snapshot makes it a valid change of 世帯主.
    let mut r1 = of(&town, "R1");
    r1.household.as_mut().unwrap().relationship =
        oshirase_engine::resident::Relationship::parse("同居人").unwrap();
    next.push(r1);
    let report = ingest(
        &store,
        "town-2.jsonl",
        &snapshot("2026-11-01", &next),
        false,
        later,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.outcome.rows_changed, 2);
    store.close().await;
}

oshirase_testkit::on_both!(
    snapshot_register,
    a_snapshot_that_would_leave_the_register_invalid_is_refused
);

/// A UTF-8 byte order mark before the header, as some exports write it, is not part of the
/// header: a feed or a snapshot with one ingests as without.
#[tokio::test]
async fn a_byte_order_mark_before_the_header_is_ignored() {
    let (_dir, _url, store) = stored(&town()).await;
    let now = FixedClock::at_noon(d("2026-10-10")).now();
    let text = format!(
        "\u{feff}{}",
        feed(&[r#"{"seq":1,"kind":"death","date":"2026-10-08","resident":"R4"}"#.into()])
    );
    let report = ingest(&store, "f.jsonl", &text, false, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.outcome.rows_changed, 1);
    let text = format!(
        "\u{feff}{}",
        snapshot("2026-10-10", &store.residents().await.unwrap())
    );
    ingest(&store, "town.jsonl", &text, false, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.close().await;
}
