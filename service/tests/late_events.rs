//! An event that reaches the store after the run of its day (an ingest after the morning
//! run, while the service was down, several days late) is notified on the next run, with
//! its deadline still counted from the event. On SQLite and PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveTime;
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::load_dir;
use oshirase_service::scheduler::Scheduler;
use oshirase_store::Store;
use oshirase_testkit::{d, on_both};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

const BIRTH_KEY: &str = "jidou-teate-nintei/R09001/birth-R09001-2026-05-10";

/// A birth on May 10 that the register recorded on May 13 (the 出生届 day).
fn birth_feed() -> String {
    concat!(
        r#"{"format":"oshirase-changes","schema_version":1}"#,
        "\n",
        r#"{"seq":1,"kind":"birth","date":"2026-05-10","recorded":"2026-05-13","record":{"id":"R09001","name":{"kanji":"植松 蓮","kana":"ウエマツ レン"},"birth_date":"2026-05-10","sex":1,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"東京都利島村54番地"},"household":{"id":"H0034","relationship":"子"},"guardians":[{"id":"R00079"},{"id":"R00080"}]}}"#,
        "\n"
    )
    .to_owned()
}

async fn town(backend: &str) -> (oshirase_testkit::TestDb, Store, Arc<FixedClock>) {
    let db = oshirase_testkit::fresh(backend, "oshirase_late").await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-05-01")));
    let text = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    oshirase_service::ingest::ingest(&store, "town.jsonl", &text, false, clock.now())
        .await
        .unwrap();
    (db, store, clock)
}

/// A scheduler as a new process would make it: nothing kept from an earlier one.
fn scheduler(store: &Store, clock: &Arc<FixedClock>) -> Scheduler {
    let rules = load_dir(&root().join("rules")).unwrap_or_else(|e| panic!("{e}"));
    let mut s = Scheduler::new(store.clone(), Arc::new(rules), clock.clone());
    s.start = Some(d("2026-05-01"));
    s.poll = Duration::from_millis(50);
    s
}

/// 07:00 Tokyo time on `day`: after that day's 06:00 run.
fn after_the_run(clock: &FixedClock, day: &str) {
    clock.set(oshirase_engine::clock::in_tokyo(
        d(day),
        NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
    ));
}

async fn ingest_birth(store: &Store, clock: &FixedClock) {
    oshirase_service::ingest::ingest(store, "changes.jsonl", &birth_feed(), false, clock.now())
        .await
        .unwrap();
}

/// The stored decision of the birth's child allowance notice: (notify_on, body).
async fn birth_notice(db: &oshirase_testkit::TestDb) -> Option<(String, serde_json::Value)> {
    let sql = format!("SELECT notify_on, body FROM decisions WHERE key = '{BIRTH_KEY}'");
    let rows = oshirase_testkit::sql::rows(&db.url, &sql).await;
    let row = rows.first()?;
    Some((
        row[0].text().to_owned(),
        serde_json::from_str(row[1].text()).expect("a decision body"),
    ))
}

/// Ingested on May 14 after that morning's run, a scheduler started anew runs May 15: the
/// notice goes out then, with the deadline of May 25 (15 days counted from May 11).
async fn an_ingest_after_the_days_run_is_notified_on_the_next(backend: &str) {
    let (db, store, clock) = town(backend).await;
    after_the_run(&clock, "2026-05-14");
    scheduler(&store, &clock)
        .catch_up(d("2026-05-14"), |_| {})
        .await
        .unwrap();
    ingest_birth(&store, &clock).await;
    after_the_run(&clock, "2026-05-15");
    scheduler(&store, &clock)
        .catch_up(d("2026-05-15"), |_| {})
        .await
        .unwrap();
    let (notify_on, body) = birth_notice(&db).await.expect("the late birth is notified");
    assert_eq!(notify_on, "2026-05-15");
    assert_eq!(body["occurrence"], "2026-05-10");
    assert_eq!(body["deadline"], "2026-05-25");
    // Once: the next days decide it no more.
    let s = scheduler(&store, &clock);
    after_the_run(&clock, "2026-05-20");
    let later = s.catch_up(d("2026-05-20"), |_| {}).await.unwrap();
    assert_eq!(later.len(), 5);
    assert!(later
        .iter()
        .all(|r| r.inserted == 0 || r.day > d("2026-05-15")));
    let n = store
        .decisions()
        .await
        .unwrap()
        .iter()
        .filter(|x| x.key == BIRTH_KEY)
        .count();
    assert_eq!(n, 1, "decided once");
}
on_both!(
    after_the_run,
    an_ingest_after_the_days_run_is_notified_on_the_next
);

/// The service stopped after May 14's run; the birth was ingested while it was down; it
/// starts again the same day, when the day due (May 14) is already done: it runs that day
/// again for what no run has seen.
async fn a_restart_on_the_same_day_runs_what_came_in_while_down(backend: &str) {
    let (db, store, clock) = town(backend).await;
    after_the_run(&clock, "2026-05-14");
    scheduler(&store, &clock)
        .catch_up(d("2026-05-14"), |_| {})
        .await
        .unwrap();
    ingest_birth(&store, &clock).await;
    let s = Arc::new(scheduler(&store, &clock));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let service = {
        let s = s.clone();
        tokio::spawn(async move { s.run(rx).await })
    };
    let mut found = None;
    for _ in 0..200 {
        found = birth_notice(&db).await;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).unwrap();
    service.await.unwrap().unwrap();
    let (notify_on, body) = found.expect("the birth ingested while down is notified");
    assert_eq!(notify_on, "2026-05-14");
    assert_eq!(body["deadline"], "2026-05-25");
}
on_both!(
    restart,
    a_restart_on_the_same_day_runs_what_came_in_while_down
);

/// Ingested on May 30, when every day up to May 30 was run: notified on May 31 although
/// its deadline (May 25) has passed, with that deadline, not a new one.
async fn several_days_late_keeps_the_deadline(backend: &str) {
    let (db, store, clock) = town(backend).await;
    after_the_run(&clock, "2026-05-30");
    let s = scheduler(&store, &clock);
    s.catch_up(d("2026-05-30"), |_| {}).await.unwrap();
    ingest_birth(&store, &clock).await;
    after_the_run(&clock, "2026-05-31");
    s.catch_up(d("2026-05-31"), |_| {}).await.unwrap();
    let (notify_on, body) = birth_notice(&db)
        .await
        .expect("the birth is notified however late");
    assert_eq!(notify_on, "2026-05-31");
    assert_eq!(body["occurrence"], "2026-05-10");
    assert_eq!(body["deadline"], "2026-05-25");
}
on_both!(days_late, several_days_late_keeps_the_deadline);
