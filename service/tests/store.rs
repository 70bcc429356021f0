//! One store suite, run against SQLite (a fresh file) and PostgreSQL (a fresh database on
//! the server named by OSHIRASE_TEST_PG, default postgres://postgres@127.0.0.1:5432/test).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use oshirase_engine::calendar;
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::{evaluate_day, load_dir, load_snapshot, RuleSet};
use oshirase_service::scheduler::Scheduler;
use oshirase_store::Store;
use oshirase_testkit::{d, on_both};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

type Db = oshirase_testkit::TestDb;

async fn fresh(backend: &str) -> Db {
    oshirase_testkit::fresh(backend, "oshirase_t").await
}

fn rules() -> RuleSet {
    load_dir(&root().join("rules")).unwrap_or_else(|e| panic!("{e}"))
}

async fn ingest_town(store: &Store, clock: &dyn Clock) {
    let path = root().join("fixtures/town.jsonl");
    let snap = load_snapshot(&path).unwrap();
    let residents = snap.population.residents().to_vec();
    let text = std::fs::read(&path).unwrap();
    let out = store
        .apply_ingest(oshirase_store::IngestBatch {
            source: "town.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &text,
            as_of: Some(snap.header.as_of),
            rows_in: residents.len(),
            state: &residents,
            events: &[],
            feed_position: None,
            read_at: None,
            now: clock.now(),
        })
        .await
        .unwrap();
    assert_eq!(out.rows_changed, residents.len());
}

fn scheduler(store: Store, clock: Arc<FixedClock>, start: &str) -> Scheduler {
    let mut s = Scheduler::new(store, Arc::new(rules()), clock);
    s.start = Some(d(start));
    s.poll = Duration::from_millis(50);
    s
}

async fn ingest_is_idempotent(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    // Opening again runs no migration twice.
    let store2 = Store::open(&db.url).await.unwrap();
    let clock = FixedClock::at_noon(d("2026-10-01"));
    ingest_town(&store, &clock).await;
    let text = std::fs::read(root().join("fixtures/town.jsonl")).unwrap();
    let again = store2
        .apply_ingest(oshirase_store::IngestBatch {
            source: "town.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &text,
            as_of: None,
            rows_in: 0,
            state: &store.residents().await.unwrap(),
            events: &[],
            feed_position: None,
            read_at: None,
            now: clock.now(),
        })
        .await
        .unwrap();
    assert_eq!(again.batch_id, None, "the same file twice changes nothing");
    let snap = load_snapshot(&root().join("fixtures/town.jsonl")).unwrap();
    let mut expected = snap.population.residents().to_vec();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.residents().await.unwrap(), expected);
    assert_eq!(store.counts().await.unwrap()["ingest_batches"], 1);
}
on_both!(ingest, ingest_is_idempotent);

async fn days_are_decided_once(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest_town(&store, clock.as_ref()).await;
    let s = scheduler(store.clone(), clock.clone(), "2026-04-01");
    let reports = s.catch_up(d("2026-09-30"), |_| {}).await.unwrap();
    assert_eq!(reports.len(), 183);
    assert_eq!(store.watermark().await.unwrap(), Some(d("2026-09-30")));
    let first = store.decisions().await.unwrap();
    let counts = store.counts().await.unwrap();

    // The same decisions an in-memory evaluation of each day gives, with a draft for each
    // that has something to apply for.
    let pop = s.register().await.unwrap();
    let mut expected: Vec<String> = Vec::new();
    let mut with_draft = 0;
    let mut day = d("2026-04-01");
    while day <= d("2026-09-30") {
        let decided = evaluate_day(&s.rules, &pop, day).decisions;
        with_draft += decided
            .iter()
            .filter(|x| x.application != oshirase_engine::rule::Application::None)
            .count();
        expected.extend(decided.iter().map(|x| x.key.to_string()));
        day = calendar::day_after(day);
    }
    expected.sort();
    assert_eq!(
        first.iter().map(|x| x.key.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(counts["outbox"] > 0, "{counts:?}");
    assert!(
        counts["drafts"] == with_draft as i64 && with_draft < expected.len(),
        "{counts:?}: {with_draft} of {} decisions have something to apply for",
        expected.len()
    );

    // Re-running every day decides nothing new.
    let mut day = d("2026-04-01");
    while day <= d("2026-09-30") {
        let r = s.run_day(day).await.unwrap();
        assert_eq!(r.inserted, 0, "{day}");
        day = calendar::day_after(day);
    }
    assert_eq!(store.decisions().await.unwrap(), first);
    assert_eq!(store.counts().await.unwrap(), counts);
    // Nothing to catch up.
    assert!(s
        .catch_up(d("2026-09-30"), |_| {})
        .await
        .unwrap()
        .is_empty());
}
on_both!(idempotent_days, days_are_decided_once);

async fn concurrent_instances_never_double(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest_town(&store, clock.as_ref()).await;
    let a = scheduler(
        Store::open(&db.url).await.unwrap(),
        clock.clone(),
        "2026-04-01",
    );
    let b = scheduler(
        Store::open(&db.url).await.unwrap(),
        clock.clone(),
        "2026-04-01",
    );
    let mut total = 0;
    let mut decided = 0;
    let mut day = d("2026-04-01");
    while day <= d("2026-05-31") {
        let (ra, rb) = tokio::join!(a.run_day(day), b.run_day(day));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.decisions, rb.decisions);
        assert_eq!(
            ra.inserted + rb.inserted,
            ra.decisions,
            "{day}: each decision written by exactly one"
        );
        total += ra.decisions;
        decided += ra.inserted + rb.inserted;
        day = calendar::day_after(day);
    }
    assert!(total > 0);
    assert_eq!(decided, total);
    assert_eq!(store.decisions().await.unwrap().len(), total);
}
on_both!(concurrent, concurrent_instances_never_double);

async fn a_fixed_rule_never_renotifies(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest_town(&store, clock.as_ref()).await;
    let s = scheduler(store.clone(), clock.clone(), "2026-04-01");
    s.catch_up(d("2026-06-30"), |_| {}).await.unwrap();
    let before = store.decisions().await.unwrap();
    // A changed catalogue (another version) evaluating the same days again.
    let mut changed = rules();
    changed.version = "0000000000000000".into();
    let mut s2 = scheduler(store.clone(), clock.clone(), "2026-04-01");
    s2.rules = Arc::new(changed);
    let mut day = d("2026-04-01");
    while day <= d("2026-06-30") {
        assert_eq!(s2.run_day(day).await.unwrap().inserted, 0);
        day = calendar::day_after(day);
    }
    s2.catch_up(d("2026-06-30"), |_| {}).await.unwrap();
    let after = store.decisions().await.unwrap();
    assert_eq!(
        before, after,
        "every decision keeps the version that made it"
    );
    assert!(after.iter().all(|x| x.rule_set == s.rules.version));
}
on_both!(rule_set_versions, a_fixed_rule_never_renotifies);

/// An ingest while another connection holds the write lock waits for it, as the busy
/// timeout promises, instead of failing: on SQLite a transaction that reads before it writes
/// must take the write lock when it begins (`BEGIN IMMEDIATE`), or its first write fails at
/// once with "database is locked" (SQLite cannot wait there without risking a deadlock).
async fn an_ingest_waits_for_another_writer(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let now = FixedClock::at_noon(d("2026-10-01")).now();
    let text = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    let lock = oshirase_testkit::sql::WriteLock::hold(&db.url, "residents").await;
    let ingest = tokio::spawn({
        let store = store.clone();
        async move { oshirase_service::ingest::ingest(&store, "town.jsonl", &text, false, now).await }
    });
    // Long enough for the ingest to reach its first write while the lock is held (bounded:
    // a failing ingest ends at once).
    for _ in 0..40 {
        if ingest.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.release().await;
    let report = ingest
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the ingest failed instead of waiting for the lock: {e}"));
    assert!(report.outcome.batch_id.is_some());
    assert_eq!(
        store.residents().await.unwrap().len(),
        report.outcome.rows_changed
    );
    assert!(report.outcome.rows_changed > 500);
}
on_both!(waits_for_a_writer, an_ingest_waits_for_another_writer);

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let err = Store::open("postgres://nobody:secret@127.0.0.1:1/none")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot open the database postgres://nobody:***@127.0.0.1:1/none"),
        "{err}"
    );
    assert!(!err.contains("secret"));
    let err = Store::open("sqlite:///nonexistent-dir/x/y.sqlite")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot open the database"), "{err}");
}

async fn the_service_reevaluates_today_after_an_ingest(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-05")));
    ingest_town(&store, clock.as_ref()).await;
    let s = Arc::new(scheduler(store.clone(), clock.clone(), "2026-10-05"));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let service = {
        let s = s.clone();
        tokio::spawn(async move { s.run(rx).await })
    };
    let wait = |what: &'static str,
                f: Box<
        dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send,
    >| async move {
        for _ in 0..200 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    };
    let st = store.clone();
    wait(
        "today's run",
        Box::new(move || {
            let st = st.clone();
            Box::pin(async move { st.watermark().await.unwrap() == Some(d("2026-10-05")) })
        }),
    )
    .await;

    // A birth on Oct 1 reaches the register today: the service notices the new batch and
    // decides the child allowance notice without waiting for tomorrow.
    let feed = concat!(
        r#"{"format":"oshirase-changes","schema_version":1}"#,
        "\n",
        r#"{"seq":1,"kind":"birth","date":"2026-10-01","recorded":"2026-10-05","record":{"id":"R09001","name":{"kanji":"植松 蓮","kana":"ウエマツ レン"},"birth_date":"2026-10-01","sex":1,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"東京都利島村54番地"},"household":{"id":"H0034","relationship":"子"},"guardians":[{"id":"R00079"},{"id":"R00080"}]}}"#,
        "\n"
    );
    oshirase_service::ingest::ingest(&store, "changes.jsonl", feed, false, clock.now())
        .await
        .unwrap();
    let st = store.clone();
    wait(
        "the birth's notices",
        Box::new(move || {
            let st = st.clone();
            Box::pin(async move {
                st.decisions()
                    .await
                    .unwrap()
                    .iter()
                    .any(|x| x.key == "jidou-teate-nintei/R09001/birth-R09001-2026-10-01")
            })
        }),
    )
    .await;
    tx.send(true).unwrap();
    service.await.unwrap().unwrap();
}
on_both!(service, the_service_reevaluates_today_after_an_ingest);

/// What a register says about every person, by id (positions differ between a register
/// read whole and one patched in place).
fn register_view(pop: &oshirase_engine::Population) -> Vec<String> {
    let mut view: Vec<String> = (0..pop.len())
        .map(|i| {
            let r = pop.get(i);
            let household: Vec<&str> = r
                .household_id()
                .map(|h| {
                    pop.household(h)
                        .iter()
                        .map(|&j| pop.get(j).id.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let mut events: Vec<String> = pop
                .events_of(i)
                .iter()
                .map(|e| format!("{} {} {}", e.id, e.date, e.recorded))
                .collect();
            events.sort();
            format!("{} {:?} {household:?} {events:?}", r.id.as_str(), r.status)
        })
        .collect();
    view.sort();
    view
}

/// The scheduler keeps its register and patches it with each ingest: the result is what a
/// whole read of the store gives, person by person and decision by decision.
async fn the_kept_register_matches_a_whole_read(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest_town(&store, clock.as_ref()).await;
    let kept = scheduler(store.clone(), clock.clone(), "2026-10-01");
    let before = kept.register().await.unwrap();
    let text = std::fs::read_to_string(root().join("fixtures/town-changes.jsonl")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    // One batch per line (births, deaths, moves, a correction, householder changes), and the
    // register brought up to date after each.
    for line in lines.filter(|l| !l.trim().is_empty()) {
        oshirase_service::ingest::ingest(
            &store,
            "town-changes.jsonl",
            &format!("{header}\n{line}\n"),
            false,
            clock.now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{line}: {e}"));
        kept.register().await.unwrap();
    }
    let patched = kept.register().await.unwrap();
    let whole = scheduler(store.clone(), clock.clone(), "2026-10-01")
        .register()
        .await
        .unwrap();
    assert!(patched.len() > before.len(), "the feed adds people");
    assert_ne!(register_view(&before), register_view(&whole));
    let (patched_view, whole_view) = (register_view(&patched), register_view(&whole));
    let differ: Vec<(&String, &String)> = patched_view
        .iter()
        .zip(&whole_view)
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(patched_view.len(), whole_view.len());
    assert!(differ.is_empty(), "kept vs whole: {differ:#?}");
    let mut day = d("2026-10-01");
    while day <= d("2027-03-31") {
        let keys = |pop: &oshirase_engine::Population| {
            let mut k: Vec<String> = evaluate_day(&kept.rules, pop, day)
                .decisions
                .iter()
                .map(|x| x.key.to_string())
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(&patched), keys(&whole), "{day}");
        day = calendar::day_after(day);
    }
}
on_both!(kept_register, the_kept_register_matches_a_whole_read);

/// A channel that answers from a script and remembers every send.
use oshirase_service::outbox::Delivery;
use oshirase_store::OutboxItem;

/// The answer for a row on its nth send.
type Answer = Box<dyn Fn(&OutboxItem, usize) -> Delivery + Send + Sync>;

struct Scripted {
    channel: &'static str,
    sends: std::sync::Mutex<Vec<i64>>,
    answer: Answer,
}

impl Scripted {
    fn new(answer: impl Fn(&OutboxItem, usize) -> Delivery + Send + Sync + 'static) -> Self {
        Self {
            channel: "email",
            sends: Default::default(),
            answer: Box::new(answer),
        }
    }

    fn on(mut self, channel: &'static str) -> Self {
        self.channel = channel;
        self
    }

    /// `flaky` answers `first` once and is delivered after; `broken` always answers `always`.
    fn flaky_and_broken(flaky: i64, first: Delivery, broken: i64, always: Delivery) -> Self {
        Self::new(move |item, nth| {
            if item.id == flaky && nth == 1 {
                first.clone()
            } else if item.id == broken {
                always.clone()
            } else {
                Delivery::Delivered
            }
        })
    }
}

async fn email_rows(store: &Store) -> Vec<i64> {
    store
        .outbox_rows(None)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.channel == "email")
        .map(|r| r.id)
        .collect()
}

impl oshirase_service::outbox::Channel for Scripted {
    fn name(&self) -> &'static str {
        self.channel
    }

    async fn send(&self, item: &oshirase_store::OutboxItem) -> oshirase_service::outbox::Delivery {
        let nth = {
            let mut s = self.sends.lock().unwrap();
            s.push(item.id);
            s.iter().filter(|x| **x == item.id).count()
        };
        // Give the other worker a chance to interleave.
        tokio::task::yield_now().await;
        (self.answer)(item, nth)
    }
}

async fn outbox_with_decisions(backend: &str) -> (Db, Store, Arc<FixedClock>) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest_town(&store, clock.as_ref()).await;
    scheduler(store.clone(), clock.clone(), "2026-04-01")
        .catch_up(d("2026-06-30"), |_| {})
        .await
        .unwrap();
    (db, store, clock)
}

async fn outbox_retries_and_dead_letters(backend: &str) {
    use oshirase_service::outbox::Worker;
    let (_db, store, clock) = outbox_with_decisions(backend).await;
    let emails = email_rows(&store).await;
    assert!(emails.len() >= 3, "{} email rows", emails.len());
    let (flaky, broken) = (emails[0], emails[1]);
    let ch = Scripted::flaky_and_broken(
        flaky,
        Delivery::Retry {
            after: None,
            reason: "421 try later".into(),
        },
        broken,
        Delivery::Permanent {
            reason: "550 no such mailbox".into(),
        },
    );
    let policy = open_policy();
    let r = Worker::new("w1", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!((r.delivered, r.retried, r.dead), (emails.len() - 2, 1, 1));
    // Nothing is due again until the backoff has passed.
    assert_eq!(
        Worker::new("w1", store.clone(), clock.clone(), policy.clone())
            .drain(&ch)
            .await
            .unwrap(),
        Default::default()
    );
    clock.advance(Duration::from_secs(5 * 60));
    let r = Worker::new("w1", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(r.delivered, 1);
    let rows = store
        .outbox_rows(Some(oshirase_store::OutboxState::Dead))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, broken);
    assert_eq!(rows[0].last_error.as_deref(), Some("550 no such mailbox"));
    let sends = ch.sends.lock().unwrap().clone();
    for id in &emails {
        let n = sends.iter().filter(|x| *x == id).count();
        assert_eq!(n, if *id == flaky { 2 } else { 1 }, "row {id}");
    }
    assert_eq!(
        store.counts().await.unwrap()["delivery_attempts"],
        emails.len() as i64 + 1
    );
    // An operator puts the dead letter back; it fails again and is dead again.
    assert_eq!(store.retry_outbox(&[], clock.now()).await.unwrap(), 1);
    let r = Worker::new("w1", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(r.dead, 1);
    assert_eq!(
        store
            .outbox_rows(Some(oshirase_store::OutboxState::Dead))
            .await
            .unwrap()[0]
            .attempts,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_retries_and_dead_letters_on_sqlite() {
    outbox_retries_and_dead_letters("sqlite").await;
}

async fn two_workers_never_send_twice(backend: &str) {
    use oshirase_service::outbox::{Policy, Worker};
    let (_db, store, clock) = outbox_with_decisions(backend).await;
    let ch = Scripted::new(|_, _| Delivery::Delivered);
    let policy = Policy {
        batch: 5,
        ..open_policy()
    };
    let worker_a = Worker::new("worker-a", store.clone(), clock.clone(), policy.clone());
    let worker_b = Worker::new("worker-b", store.clone(), clock.clone(), policy.clone());
    let (a, b) = tokio::join!(worker_a.drain(&ch), worker_b.drain(&ch));
    let (a, b) = (a.unwrap(), b.unwrap());
    let emails = store
        .outbox_rows(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.channel == "email")
        .count();
    assert_eq!(a.delivered + b.delivered, emails);
    let mut sends = ch.sends.lock().unwrap().clone();
    let n = sends.len();
    sends.sort();
    sends.dedup();
    assert_eq!(sends.len(), n, "no row was sent twice");
    assert!(store
        .outbox_rows(Some(oshirase_store::OutboxState::Pending))
        .await
        .unwrap()
        .iter()
        .all(|r| r.channel != "email"));
}
on_both!(two_workers, two_workers_never_send_twice);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_honours_retry_after_and_gone_on_postgres() {
    use oshirase_service::outbox::Worker;
    let (_db, store, clock) = outbox_with_decisions("postgres").await;
    let emails = email_rows(&store).await;
    let ch = Scripted::flaky_and_broken(
        emails[0],
        Delivery::Retry {
            after: Some(Duration::from_secs(30)),
            reason: "429".into(),
        },
        emails[1],
        Delivery::Gone {
            reason: "410".into(),
        },
    );
    let policy = open_policy();
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!((r.delivered, r.retried, r.gone), (emails.len() - 2, 1, 1));
    // The channel's own hint (Retry-After: 30 s) decides the next attempt.
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        Worker::new("w", store.clone(), clock.clone(), policy.clone())
            .drain(&ch)
            .await
            .unwrap()
            .delivered,
        0
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        Worker::new("w", store.clone(), clock.clone(), policy.clone())
            .drain(&ch)
            .await
            .unwrap()
            .delivered,
        1
    );
    assert_eq!(
        store
            .outbox_rows(Some(oshirase_store::OutboxState::Gone))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Retries and leases without quiet hours or a daily cap (those have their own tests).
fn open_policy() -> oshirase_service::outbox::Policy {
    oshirase_service::outbox::Policy {
        gate: oshirase_service::outbox::Gate::open(),
        ..months_late()
    }
}

/// The default policy with a grace period that covers `outbox_with_decisions`: its decisions
/// (April to June) are months old by its clock (1 October), and these tests are not about
/// lateness (adapters/tests/smtp.rs is).
fn months_late() -> oshirase_service::outbox::Policy {
    oshirase_service::outbox::Policy {
        late_grace_days: 365,
        ..Default::default()
    }
}

/// The outbox rows of `channel`, grouped by recipient.
async fn rows_by_recipient(
    store: &Store,
    channel: &str,
) -> std::collections::BTreeMap<String, Vec<i64>> {
    let mut by = std::collections::BTreeMap::<String, Vec<i64>>::new();
    for r in store.outbox_rows(None).await.unwrap() {
        if r.channel == channel {
            by.entry(r.recipient).or_default().push(r.id);
        }
    }
    by
}

fn jst_at(day: &str, hour: u32) -> chrono::DateTime<chrono::FixedOffset> {
    oshirase_engine::clock::in_tokyo(d(day), chrono::NaiveTime::from_hms_opt(hour, 0, 0).unwrap())
}

async fn push_is_held_overnight_and_falls_back_to_email(backend: &str) {
    use oshirase_service::outbox::{Policy, Worker};
    let (_db, store, clock) = outbox_with_decisions(backend).await;
    let pushes = rows_by_recipient(&store, "webpush").await;
    let n: usize = pushes.values().map(Vec::len).sum();
    assert!(n >= 2, "{n} push rows");
    let emails_before = email_rows(&store).await.len();
    // Push-only residents (by the register's preferences) now accept e-mail too, saved in the
    // portal: their notices fall back to e-mail; everyone else already has an e-mail row.
    let rows = store.outbox_rows(None).await.unwrap();
    let has_email_row = |key: &oshirase_engine::eval::DecisionKey, who: &str| {
        rows.iter()
            .any(|r| r.channel == "email" && &r.decision_key == key && r.recipient == who)
    };
    let mut expected = 0;
    for r in rows.iter().filter(|r| r.channel == "webpush") {
        if has_email_row(&r.decision_key, &r.recipient) {
            continue;
        }
        let resident = store.resident(&r.recipient).await.unwrap().unwrap();
        if resident.contact.email.is_some() {
            expected += 1;
            store
                .set_portal_preferences(
                    &r.recipient,
                    &oshirase_store::PortalPreferences {
                        channels: vec![
                            oshirase_engine::resident::Channel::Webpush,
                            oshirase_engine::resident::Channel::Email,
                        ],
                        email_consent: true,
                        webpush_consent: true,
                    },
                    clock.now(),
                )
                .await
                .unwrap();
        }
    }
    assert!(expected >= 1, "the fixture has push-only residents");
    let ch = Scripted::new(|_, _| Delivery::Gone {
        reason: "410 subscription expired".into(),
    })
    .on("webpush");
    let policy = Policy {
        gate: oshirase_service::outbox::Gate {
            daily_cap: 0,
            ..Default::default()
        },
        ..months_late()
    };
    // 22:00 in Tokyo: every push is held until 08:00, and none is sent.
    clock.set(jst_at("2026-10-01", 22));
    assert_eq!(
        oshirase_store::utc_text(jst_at("2026-10-02", 8)),
        "2026-10-01T23:00:00.000Z"
    );
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!((r.deferred, r.gone), (n, 0));
    assert!(ch.sends.lock().unwrap().is_empty());
    let held = store
        .outbox_rows(Some(oshirase_store::OutboxState::Pending))
        .await
        .unwrap();
    assert!(held
        .iter()
        .filter(|r| r.channel == "webpush")
        .all(|r| r.next_attempt_at == jst_at("2026-10-02", 8) && r.attempts == 0));
    // 07:59: still held.
    clock.set(oshirase_engine::clock::before(
        jst_at("2026-10-02", 8),
        Duration::from_secs(60),
    ));
    assert_eq!(
        Worker::new("w", store.clone(), clock.clone(), policy.clone())
            .drain(&ch)
            .await
            .unwrap(),
        Default::default()
    );
    // 08:00: sent; every subscription is gone, so each notice is queued by e-mail for those
    // with an address (and without an e-mail row already).
    clock.set(jst_at("2026-10-02", 8));
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(r.gone, n);
    assert_eq!(r.fallbacks, expected, "{r:?}");
    assert_eq!(email_rows(&store).await.len(), emails_before + r.fallbacks);
    // The queued e-mails are delivered by the e-mail worker like any other.
    let email = Scripted::new(|_, _| Delivery::Delivered);
    let r2 = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&email)
        .await
        .unwrap();
    assert_eq!(r2.delivered, emails_before + r.fallbacks);
}
on_both!(
    quiet_hours_and_fallback,
    push_is_held_overnight_and_falls_back_to_email
);

async fn the_daily_cap_and_muting(backend: &str) {
    use oshirase_service::outbox::{Gate, Policy, Worker};
    let (_db, store, clock) = outbox_with_decisions(backend).await;
    let emails = rows_by_recipient(&store, "email").await;
    let (busy, rows) = emails
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    assert!(rows.len() >= 2, "someone has two e-mails: {emails:?}");
    let policy = Policy {
        gate: Gate {
            daily_cap: 1,
            ..Gate::open()
        },
        ..months_late()
    };
    // Everyone else mutes e-mail in the portal after the decisions were made.
    for who in emails.keys().filter(|k| **k != busy) {
        store
            .set_portal_preferences(
                who,
                &oshirase_store::PortalPreferences {
                    channels: vec![],
                    email_consent: true,
                    webpush_consent: false,
                },
                clock.now(),
            )
            .await
            .unwrap();
    }
    let ch = Scripted::new(|_, _| Delivery::Delivered);
    clock.set(jst_at("2026-10-02", 10));
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    let critical = |id: &i64| {
        let store = store.clone();
        let id = *id;
        async move {
            let rows = store.outbox_rows(None).await.unwrap();
            let key = rows
                .iter()
                .find(|r| r.id == id)
                .unwrap()
                .decision_key
                .clone();
            store
                .decisions()
                .await
                .unwrap()
                .into_iter()
                .any(|d| d.key == key.as_str() && d.critical)
        }
    };
    let mut critical_elsewhere = 0;
    for (who, ids) in &emails {
        if *who != busy {
            for id in ids {
                critical_elsewhere += usize::from(critical(id).await);
            }
        }
    }
    let others: usize = emails
        .iter()
        .filter(|(k, _)| **k != busy)
        .map(|(_, v)| v.len())
        .sum();
    // Muted notices are not sent, unless critical; the busy recipient gets one today (plus any
    // critical ones), the rest wait for tomorrow.
    assert_eq!(r.muted, others - critical_elsewhere, "{r:?}");
    let mut busy_critical = 0;
    for id in &rows {
        busy_critical += usize::from(critical(id).await);
    }
    let sent_to_busy = ch
        .sends
        .lock()
        .unwrap()
        .iter()
        .filter(|id| rows.contains(id))
        .count();
    assert_eq!(sent_to_busy, (1 + busy_critical).min(rows.len()));
    assert_eq!(r.deferred, rows.len() - sent_to_busy);
    // Tomorrow at midnight (Tokyo) the next one goes.
    clock.set(jst_at("2026-10-03", 0));
    let r = Worker::new("w", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(r.delivered, 1.min(rows.len() - sent_to_busy));
}
on_both!(daily_cap_and_muting, the_daily_cap_and_muting);

/// (resident_id, batch_id, record) of every history row, in id order.
async fn history(url: &str) -> Vec<(String, i64, String)> {
    oshirase_testkit::sql::rows(
        url,
        "SELECT resident_id, batch_id, record FROM resident_history ORDER BY id",
    )
    .await
    .iter()
    .map(|r| (r[0].text().to_owned(), r[1].int(), r[2].text().to_owned()))
    .collect()
}

/// (householder_id, members) of a stored household (`id` is a test literal).
async fn household(url: &str, id: &str) -> (Option<String>, i64) {
    let rows = oshirase_testkit::sql::rows(
        url,
        &format!("SELECT householder_id, members FROM households WHERE id = '{id}'"),
    )
    .await;
    let row = rows.first().unwrap_or_else(|| panic!("no household {id}"));
    (row[0].opt_text().map(str::to_owned), row[1].int())
}

/// A first load writes no history; a change moves the version it replaces there, with the
/// batch that wrote it. Households are written for every household of the load, and a feed
/// line rewrites the ones it touches.
async fn history_keeps_replaced_versions(backend: &str) {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let clock = FixedClock::at_noon(d("2026-10-05"));
    let text = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    let first = oshirase_service::ingest::ingest(&store, "town.jsonl", &text, false, clock.now())
        .await
        .unwrap();
    let first_batch = first.outcome.batch_id.unwrap();
    assert!(
        history(&db.url).await.is_empty(),
        "a first load replaces nothing"
    );
    assert_eq!(
        household(&db.url, "H0001").await,
        (Some("R00001".to_owned()), 2)
    );
    let before = store
        .residents()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id.as_str() == "R00001")
        .unwrap();
    let feed = concat!(
        r#"{"format":"oshirase-changes","schema_version":1}"#,
        "\n",
        r#"{"seq":1,"kind":"death","date":"2026-10-03","recorded":"2026-10-05","resident":"R00001"}"#,
        "\n"
    );
    let out = oshirase_service::ingest::ingest(&store, "changes.jsonl", feed, false, clock.now())
        .await
        .unwrap();
    assert_eq!(
        out.outcome.rows_changed, 1,
        "only the record the line names"
    );
    let rows = history(&db.url).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("R00001", first_batch));
    let old: oshirase_engine::resident::Resident = serde_json::from_str(&rows[0].2).unwrap();
    assert_eq!(old, before, "history holds the version replaced");
    // The 世帯主 died: one current member left, no current 世帯主 until a change is filed.
    assert_eq!(household(&db.url, "H0001").await, (None, 1));
}
on_both!(resident_history, history_keeps_replaced_versions);

/// The outbox rows of `channel` that are not delivered yet.
async fn undelivered(store: &Store, channel: &str) -> Vec<i64> {
    store
        .outbox_rows(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.channel == channel && r.state != oshirase_store::OutboxState::Delivered)
        .map(|r| r.id)
        .collect()
}

/// A worker whose store fails (here the database refuses its claims, as a full disk or a
/// lock held past the busy timeout would) keeps running and retries; once the store works
/// again it delivers everything, without a restart.
async fn a_worker_rides_out_store_errors(backend: &str) {
    use oshirase_service::outbox::Worker;
    let (db, store, clock) = outbox_with_decisions(backend).await;
    assert!(!undelivered(&store, "email").await.is_empty());
    oshirase_testkit::sql::refuse_updates(&db.url, "outbox", "NEW.leased_by IS NOT NULL").await;
    let ch = Arc::new(Scripted::new(|_, _| Delivery::Delivered));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = Worker::new("w", store.clone(), clock.clone(), open_policy());
    let task = tokio::spawn({
        let ch = ch.clone();
        async move {
            worker
                .work(ch.as_ref(), Duration::from_millis(20), rx)
                .await
        }
    });
    // Refused for a while: the worker meets the error and must not end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "the worker ended at a store error: {:?}",
        task.await
    );
    assert!(ch.sends.lock().unwrap().is_empty(), "nothing was claimed");
    oshirase_testkit::sql::allow_updates(&db.url, "outbox").await;
    for _ in 0..600 {
        if undelivered(&store, "email").await.is_empty() {
            break;
        }
        assert!(
            !task.is_finished(),
            "the worker ended at a store error: {:?}",
            task.await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(undelivered(&store, "email").await, Vec::<i64>::new());
    stop.send(true).unwrap();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.delivered, email_rows(&store).await.len());
}
on_both!(store_errors, a_worker_rides_out_store_errors);

/// Sends that succeeded are not lost when settling fails: a worker whose settle the
/// database refuses stops there, and after it is gone (a restart: its leases expire) the next
/// worker sends again only what was in flight or waiting to be settled, never the whole batch.
async fn a_failed_settle_does_not_resend_the_batch(backend: &str) {
    use oshirase_service::outbox::{Policy, Worker};
    let (db, store, clock) = outbox_with_decisions(backend).await;
    let emails = email_rows(&store).await;
    assert!(emails.len() > 60, "{} email rows", emails.len());
    let policy = Policy {
        batch: 50,
        concurrency: 2,
        ..open_policy()
    };
    let refused = emails[20];
    oshirase_testkit::sql::refuse_updates(
        &db.url,
        "outbox",
        &format!("NEW.state = 'delivered' AND OLD.id = {refused}"),
    )
    .await;
    let ch = Scripted::new(|_, _| Delivery::Delivered);
    let first = Worker::new("first", store.clone(), clock.clone(), policy.clone());
    assert!(first.drain(&ch).await.is_err(), "the refused settle fails");
    drop(first);
    oshirase_testkit::sql::allow_updates(&db.url, "outbox").await;
    clock.advance(policy.lease + Duration::from_secs(1));
    Worker::new("second", store.clone(), clock.clone(), policy.clone())
        .drain(&ch)
        .await
        .unwrap();
    assert_eq!(undelivered(&store, "email").await, Vec::<i64>::new());
    let sends = ch.sends.lock().unwrap().clone();
    let twice: Vec<i64> = emails
        .iter()
        .copied()
        .filter(|id| sends.iter().filter(|x| *x == id).count() > 1)
        .collect();
    assert!(
        sends
            .iter()
            .all(|id| sends.iter().filter(|x| *x == id).count() <= 2),
        "no row went three times"
    );
    assert!(twice.contains(&refused), "{twice:?}");
    assert!(
        twice.len() <= 2 * policy.concurrency,
        "{} rows were sent twice, not only those in flight or waiting to be settled: {twice:?}",
        twice.len()
    );
}
on_both!(failed_settle, a_failed_settle_does_not_resend_the_batch);
