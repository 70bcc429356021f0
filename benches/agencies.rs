//! Agencies told of updates (①): the three performance targets of docs/agencies.md, each
//! beside a baseline measured in the same run, on PostgreSQL and SQLite.
//!
//! 1. fan-out at ingest: a change feed of C address changes (10,000) into a register of N
//!    residents (100,000, from `oshirase_popgen`), with A agencies (20) holding
//!    `kouki-shikaku` with a municipality-wide interest: C × A events written in the ingest's
//!    transaction. Baselines: the same feed into a store with the exchange attached but no
//!    agency registered, and into a store without the exchange; and, as the database's floor,
//!    a raw multi-row INSERT of the same number of event rows (and of pseudonym rows) into
//!    tables like `agency_events` and `agency_pseudonyms`. Several rounds (each a new feed of
//!    the same persons moving again), the three stores in turn; round 1 issues every
//!    pseudonym, the later ones find them issued.
//! 2. signed webhook deliveries: E events (20,000) queued on A streams, `Deliverer::drain`
//!    to a local receiver that answers 204, beside the floor: the same bodies POSTed to the
//!    same receiver by a reqwest client with the same settings, A in flight (one per stream,
//!    in order, polled by one task as `Deliverer::pass` polls its streams), without signing
//!    and without the store.
//! 3. latency change ingested -> agency received: `Deliverer::work` (default policy, 500 ms
//!    poll) running, one address change ingested at a time at irregular intervals; from the
//!    ingest's commit to each agency's receipt, per event and per change (its last agency),
//!    beside the floor of one plain POST to the same receiver.
//!
//! `cargo bench --bench agencies` runs them with the sizes above (OSHIRASE_BENCH_RESIDENTS,
//! OSHIRASE_BENCH_CHANGED, OSHIRASE_BENCH_AGENCIES, OSHIRASE_BENCH_ROUNDS,
//! OSHIRASE_BENCH_EVENTS, OSHIRASE_BENCH_SAMPLES to change; OSHIRASE_BENCH_BACKENDS=postgres
//! or sqlite for one backend; OSHIRASE_BENCH_PARTS=fanout,delivery,latency for some parts).
//! To profile one timed section, start `perf record -D -1
//! --control=fifo:FIFO …` and set OSHIRASE_BENCH_PERF_CTL=FIFO and OSHIRASE_BENCH_PERF=agencies
//! (or `bare`, `plain`, `raw-events`, `raw-pseudonyms`, `drain`, `posts`): the benchmark
//! enables the recording for that section only.
//! `cargo test --benches` runs everything once on a tiny register, checking that every event
//! was written and arrived exactly once, signature verified, never timing. PostgreSQL:
//! OSHIRASE_TEST_PG or postgres://postgres@127.0.0.1:5432/test, in fresh databases (the next
//! run drops them).

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::NaiveDate;
use oshirase_adapters::webhook::{verify, SigningKeys, WebhookSender, CONTENT_TYPE_CLOUDEVENTS};
use oshirase_engine::calendar;
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_engine::ids::ResidentId;
use oshirase_engine::purposes::Exchange;
use oshirase_exchange::{cloudevent, Deliverer, DeliveryPolicy, ExchangeMetrics};
use oshirase_service::ingest::ingest;
use oshirase_store::{AgencySpec, InterestSpec, Store};
use serde_json::{json, Value};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

/// The purpose the agencies hold: it may follow the whole municipality, and an address
/// change is one of its items.
const PURPOSE: &str = "kouki-shikaku";
/// The feed source every change feed of this benchmark is ingested as.
const FEED: &str = "changes.jsonl";
/// The service's webhook timeout (src/cmd/run.rs).
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Sizes and small helpers
// ---------------------------------------------------------------------------------------------

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `OSHIRASE_BENCH_{name}`, or the size of the mode this runs in.
fn size(name: &str, bench: usize, test: usize) -> usize {
    std::env::var(format!("OSHIRASE_BENCH_{name}"))
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(if bench_mode() { bench } else { test })
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    residents: usize,
    changed: usize,
    agencies: usize,
    rounds: usize,
    events: usize,
    samples: usize,
}

impl Sizes {
    fn read() -> Self {
        Sizes {
            residents: size("RESIDENTS", 100_000, 400),
            changed: size("CHANGED", 10_000, 40),
            agencies: size("AGENCIES", 20, 20),
            rounds: size("ROUNDS", 4, 1).max(1),
            events: size("EVENTS", 20_000, 200),
            samples: size("SAMPLES", 200, 4).max(1),
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// Thousands separators, as the docs write figures.
fn n(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Polls every future until all are done, on the calling task: what
/// `futures_util::future::join_all` does for a handful of futures, and so how
/// `Deliverer::pass` runs its streams.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, done) in futures.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *done = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future is done"))
        .collect()
}

/// Enables or disables a `perf record --control=fifo:…` around the section named by
/// OSHIRASE_BENCH_PERF (see the top of the file); nothing without OSHIRASE_BENCH_PERF_CTL.
fn perf(section: &str, on: bool) {
    let (Ok(fifo), Ok(wanted)) = (
        std::env::var("OSHIRASE_BENCH_PERF_CTL"),
        std::env::var("OSHIRASE_BENCH_PERF"),
    ) else {
        return;
    };
    if wanted != section {
        return;
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap_or_else(|e| panic!("{fifo}: {e}"));
    f.write_all(if on { b"enable\n" } else { b"disable\n" })
        .expect("perf's control fifo");
}

// ---------------------------------------------------------------------------------------------
// The register and its change feeds
// ---------------------------------------------------------------------------------------------

/// A current resident the feeds move: their id and address object.
struct Person {
    id: String,
    address: Value,
}

struct Register {
    snapshot: String,
    as_of: NaiveDate,
    people: Vec<Person>,
}

/// A synthetic register from `oshirase_popgen` (fixed seed), and its current residents.
fn register(residents: usize) -> Register {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let t = Instant::now();
    oshirase_popgen::generate(&oshirase_popgen::Options {
        municipality: oshirase_popgen::municipality(oshirase_popgen::DEFAULT_MUNICIPALITY).unwrap(),
        residents,
        seed: 1,
        out: dir.path().to_owned(),
        start: NaiveDate::from_ymd_opt(2026, 4, 1).expect("a date"),
    })
    .unwrap_or_else(|e| panic!("generating the register: {e:#}"));
    let snapshot =
        std::fs::read_to_string(dir.path().join("snapshot.jsonl")).expect("snapshot.jsonl");
    let mut lines = snapshot.lines().filter(|l| !l.trim().is_empty());
    let header: Value = serde_json::from_str(lines.next().expect("a header")).expect("JSON");
    let as_of = header["as_of"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("the header's as_of");
    let people: Vec<Person> = lines
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).expect("a record");
            (v["status"]["kind"] == "resident").then(|| Person {
                id: v["id"].as_str().expect("an id").to_owned(),
                address: v["address"].clone(),
            })
        })
        .collect();
    eprintln!(
        "register: {residents} residents ({} current) generated in {:.1} s",
        people.len(),
        t.elapsed().as_secs_f64()
    );
    Register {
        snapshot,
        as_of,
        people,
    }
}

impl Register {
    /// `k` current residents spread over the whole register.
    fn pick(&self, k: usize) -> Vec<&Person> {
        assert!(
            k <= self.people.len(),
            "{k} changed persons wanted, the register has {} current residents",
            self.people.len()
        );
        let step = self.people.len() as f64 / k as f64;
        (0..k)
            .map(|i| &self.people[(i as f64 * step) as usize])
            .collect()
    }

    /// A change feed moving each of `who` within the town (転居) to an address of `round`,
    /// its lines numbered from `first_seq`.
    fn moves(&self, who: &[&Person], first_seq: usize, round: usize) -> String {
        let day = calendar::add_days(self.as_of, round as i64).to_string();
        let mut text = json!({"format": "oshirase-changes", "schema_version": 1}).to_string();
        text.push('\n');
        for (i, p) in who.iter().enumerate() {
            let mut address = p.address.clone();
            let old = address["text"].as_str().unwrap_or_default().to_owned();
            address["text"] = json!(format!("{old}（転居先{round}）"));
            let line = json!({
                "seq": first_seq + i,
                "kind": "address_change",
                "date": day,
                "recorded": day,
                "resident": p.id,
                "address": address,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Stores, agencies, the receiver
// ---------------------------------------------------------------------------------------------

fn exchange() -> Arc<Exchange> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    Arc::new(oshirase_engine::purposes::load_dir(dir).unwrap_or_else(|e| panic!("{e}")))
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite")
}

/// A fresh database with the register's snapshot ingested (the baseline batch: no events).
async fn fresh_store(
    backend: &str,
    exchange: Option<Arc<Exchange>>,
    reg: &Register,
) -> (Store, oshirase_testkit::TestDb) {
    let db = oshirase_testkit::fresh(backend, "oshirase_bench_agencies_").await;
    let mut store = Store::open(&db.url).await.unwrap_or_else(|e| panic!("{e}"));
    if let Some(x) = exchange {
        store = store.with_exchange(x);
    }
    let report = ingest(
        &store,
        "snapshot.jsonl",
        &reg.snapshot,
        false,
        SystemClock.now(),
    )
    .await
    .unwrap_or_else(|e| panic!("ingesting the snapshot: {e}"));
    assert_eq!(report.outcome.agency_events, 0, "the baseline batch");
    (store, db)
}

/// What autovacuum would do some time after the load, done now and alike for every store,
/// so that it does not land inside a timed ingest.
async fn settle_database(url: &str) {
    if is_sqlite(url) {
        return;
    }
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    sqlx::query("VACUUM ANALYZE")
        .execute(&mut conn)
        .await
        .expect("VACUUM ANALYZE");
    conn.close().await.expect("close");
}

/// Registers `count` agencies holding PURPOSE, each following the whole municipality, with
/// an endpoint under `endpoint` (marked verified, as after the handshake) or none.
async fn add_agencies(
    store: &Store,
    exchange: &Exchange,
    count: usize,
    endpoint: Option<SocketAddr>,
) -> Vec<String> {
    let now = SystemClock.now();
    let client = oshirase_exchange::SigningKey::generate().expect("an ES256 key");
    let jwks = json!({ "keys": [client.public_jwk()] }).to_string();
    let valid_to = calendar::add_days(SystemClock.today(), 5 * 365);
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("kouki-{i:02}");
        let spec = AgencySpec {
            id: id.clone(),
            name: format!("後期高齢者医療広域連合 {i}"),
            endpoint: endpoint.map(|a| format!("http://{a}/{id}")),
            client_jwks: jwks.clone(),
            dictionary_version: exchange.dictionary.version(),
            purposes: vec![PURPOSE.to_owned()],
        };
        let problems = oshirase_exchange::register::check(&spec, exchange);
        assert!(problems.is_empty(), "{problems:?}");
        store.upsert_agency(&spec, now).await.expect("an agency");
        if endpoint.is_some() {
            store
                .mark_agency_verified(&id, now)
                .await
                .expect("verified");
        }
        store
            .register_interest(
                &InterestSpec {
                    agency_id: id.clone(),
                    purpose_id: PURPOSE.to_owned(),
                    resident: None,
                    items: None,
                    valid_to,
                },
                now,
            )
            .await
            .expect("interest");
        ids.push(id);
    }
    ids
}

/// The webhook keys: Ed25519 (`v1a`) and an HMAC secret (`v1`), both signatures on every
/// request, as for an agency given a shared secret.
fn webhook_keys() -> SigningKeys {
    let keys = SigningKeys::generate();
    SigningKeys::from_secret(
        &keys.ed25519_secret(),
        Some(&SigningKeys::generate_hmac_secret()),
    )
    .expect("the keys just made")
}

/// A minimal agency endpoint: reads the request, notes its `webhook-id` and when it came,
/// answers 204. With `public_key` (test mode) it also verifies every signed request and
/// answers 401 to a bad one.
struct Receiver {
    public_key: Option<String>,
    arrivals: Mutex<Vec<(String, Instant)>>,
    refused: AtomicUsize,
}

impl Receiver {
    fn take(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *self.arrivals.lock().expect("not poisoned"))
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = h("webhook-id").unwrap_or_default().to_owned();
    if let (Some(key), Some(signature)) = (&r.public_key, h("webhook-signature")) {
        let ts = h("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let now = SystemClock.now().timestamp();
        if verify(key, &id, ts, &body, signature, now).is_err() {
            r.refused.fetch_add(1, Ordering::Relaxed);
            return StatusCode::UNAUTHORIZED;
        }
    }
    r.arrivals.lock().expect("not poisoned").push((id, at));
    StatusCode::NO_CONTENT
}

async fn start_receiver(public_key: Option<String>) -> (SocketAddr, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        public_key,
        arrivals: Mutex::new(Vec::new()),
        refused: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, receiver)
}

fn is_heartbeat(id: &str) -> bool {
    id.contains(":heartbeat:")
}

fn deliverer(store: &Store, keys: SigningKeys, policy: DeliveryPolicy) -> Deliverer {
    Deliverer {
        name: "bench-agencies".into(),
        store: store.clone(),
        sender: Arc::new(WebhookSender::new(keys, TIMEOUT)),
        clock: Arc::new(SystemClock),
        policy,
        metrics: Arc::new(ExchangeMetrics::default()),
        local_gov_code: "133621".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Fan-out at ingest
// ---------------------------------------------------------------------------------------------

/// Times one ingest of `text`, checking what it wrote.
async fn timed_ingest(store: &Store, text: &str, rows: usize, events: usize) -> f64 {
    let t = Instant::now();
    let report = ingest(store, FEED, text, false, SystemClock.now())
        .await
        .unwrap_or_else(|e| panic!("ingesting the changes: {e}"));
    let secs = t.elapsed().as_secs_f64();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.outcome.rows_changed, rows, "records changed");
    assert_eq!(
        report.outcome.agency_events, events,
        "agency events written"
    );
    secs
}

/// The database's floor for the rows the fan-out writes: `rows` prepared rows like the
/// events (or the pseudonyms) written with multi-row INSERTs of a thousand rows, in one
/// transaction, into a table with the same columns, keys and indexes. Returns seconds.
async fn raw_rows(url: &str, table: RawTable, rows: usize, agencies: usize, batch: i64) -> f64 {
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    let (create, insert_head, tail, cols): (&[&str], &str, &str, usize) = match table {
        RawTable::Events => (
            &[
                "DROP TABLE IF EXISTS bench_raw_events",
                "CREATE TABLE bench_raw_events (agency_id TEXT NOT NULL, purpose_id TEXT NOT NULL,
                   seq BIGINT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL, resident_id TEXT NOT NULL,
                   local_gov_code TEXT NOT NULL, items TEXT NOT NULL, dictionary_version BIGINT NOT NULL,
                   batch_id BIGINT NOT NULL REFERENCES ingest_batches(id), time TEXT NOT NULL,
                   state TEXT NOT NULL, delivered_at TEXT, last_error TEXT,
                   PRIMARY KEY (agency_id, purpose_id, seq))",
                "CREATE INDEX bench_raw_events_resident ON bench_raw_events(resident_id)",
                "CREATE INDEX bench_raw_events_time ON bench_raw_events(time)",
            ],
            "INSERT INTO bench_raw_events (agency_id, purpose_id, seq, type, subject, resident_id,
               local_gov_code, items, dictionary_version, batch_id, time, state) VALUES ",
            "",
            12,
        ),
        RawTable::Pseudonyms => (
            &[
                "DROP TABLE IF EXISTS bench_raw_pseudonyms",
                "CREATE TABLE bench_raw_pseudonyms (agency_id TEXT NOT NULL, pseudonym TEXT NOT NULL,
                   resident_id TEXT NOT NULL, issued_at TEXT NOT NULL,
                   PRIMARY KEY (agency_id, pseudonym), UNIQUE (agency_id, resident_id))",
            ],
            "INSERT INTO bench_raw_pseudonyms (agency_id, pseudonym, resident_id, issued_at) VALUES ",
            " ON CONFLICT DO NOTHING",
            4,
        ),
    };
    for sql in create {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect("the floor's table");
    }
    // Prepared before the clock starts: agency-major, as the store writes them.
    let per = rows / agencies;
    let time = "2026-12-04T03:00:00.000Z".to_owned();
    let prepared: Vec<(String, i64, String, String)> = (0..agencies)
        .flat_map(|a| {
            (0..per).map(move |i| {
                (
                    format!("kouki-{a:02}"),
                    i as i64 + 1,
                    format!(
                        "{:032x}",
                        (a * 1_000_003 + i) as u128 * 0x9e37_79b9_7f4a_7c15
                    ),
                    format!("R{i:08}"),
                )
            })
        })
        .collect();
    let sqlite = is_sqlite(url);
    let section = match table {
        RawTable::Events => "raw-events",
        RawTable::Pseudonyms => "raw-pseudonyms",
    };
    perf(section, true);
    let t = Instant::now();
    let mut tx = conn.begin().await.expect("begin");
    for chunk in prepared.chunks(1000) {
        let mut sql = String::from(insert_head);
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for c in 0..cols {
                if c > 0 {
                    sql.push_str(", ");
                }
                if sqlite {
                    sql.push('?');
                } else {
                    sql.push_str(&format!("${}", i * cols + c + 1));
                }
            }
            sql.push(')');
        }
        sql.push_str(tail);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (agency, seq, subject, resident) in chunk {
            q = match table {
                RawTable::Events => q
                    .bind(agency.clone())
                    .bind(PURPOSE.to_owned())
                    .bind(*seq)
                    .bind("jp.lg.oshirase.resident.changed".to_owned())
                    .bind(subject.clone())
                    .bind(resident.clone())
                    .bind("133621".to_owned())
                    .bind("address".to_owned())
                    .bind(2_i64)
                    .bind(batch)
                    .bind(time.clone())
                    .bind("pending".to_owned()),
                RawTable::Pseudonyms => q
                    .bind(agency.clone())
                    .bind(subject.clone())
                    .bind(resident.clone())
                    .bind(time.clone()),
            };
        }
        q.execute(&mut *tx).await.expect("raw insert");
    }
    tx.commit().await.expect("commit");
    let secs = t.elapsed().as_secs_f64();
    perf(section, false);
    conn.close().await.expect("close");
    secs
}

#[derive(Clone, Copy)]
enum RawTable {
    Events,
    Pseudonyms,
}

async fn fanout(backend: &str, reg: &Register, x: &Arc<Exchange>, s: Sizes) {
    let (plain, plain_db) = fresh_store(backend, None, reg).await;
    let (bare, bare_db) = fresh_store(backend, Some(x.clone()), reg).await;
    let (fan, fan_db) = fresh_store(backend, Some(x.clone()), reg).await;
    add_agencies(&fan, x, s.agencies, None).await;
    for db in [&plain_db, &bare_db, &fan_db] {
        settle_database(&db.url).await;
    }
    let who = reg.pick(s.changed);
    let events = s.changed * s.agencies;
    // Seconds per round: [no exchange, exchange without agencies, agencies].
    let mut rounds: Vec<[f64; 3]> = Vec::new();
    for round in 1..=s.rounds {
        let text = reg.moves(&who, (round - 1) * s.changed + 1, round);
        let mut t = [0.0; 3];
        // Each round in another order, so that none always goes first.
        for k in 0..3 {
            let which = (k + round) % 3;
            let (store, expect, section) = match which {
                0 => (&plain, 0, "plain"),
                1 => (&bare, 0, "bare"),
                _ => (&fan, events, "agencies"),
            };
            perf(section, true);
            t[which] = timed_ingest(store, &text, s.changed, expect).await;
            perf(section, false);
        }
        eprintln!(
            "  round {round}: no exchange {:.3} s, exchange without agencies {:.3} s, {} agencies {:.3} s",
            t[0], t[1], s.agencies, t[2]
        );
        rounds.push(t);
    }
    // Every stream got one event per change, numbered without a gap.
    let streams = fan.streams(None).await.expect("streams");
    assert_eq!(streams.len(), s.agencies);
    for st in &streams {
        assert_eq!(
            st.last_seq as usize,
            s.changed * s.rounds,
            "{}",
            st.agency_id
        );
        let last = fan
            .agency_events_after(&st.agency_id, PURPOSE, st.last_seq - 1, 10)
            .await
            .expect("events");
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].items.len(), 1, "only the address changed");
    }
    let batch = last_batch(&bare_db.url).await;
    let raw_events = raw_rows(&bare_db.url, RawTable::Events, events, s.agencies, batch).await;
    let raw_pseudonyms = raw_rows(
        &bare_db.url,
        RawTable::Pseudonyms,
        events,
        s.agencies,
        batch,
    )
    .await;
    for st in [&plain, &bare, &fan] {
        st.close().await;
    }

    println!(
        "fan-out {backend}: {} address changes x {} agencies = {} events a batch ({} residents)",
        n(s.changed as f64),
        s.agencies,
        n(events as f64),
        n(s.residents as f64)
    );
    let report = |label: &str, t: [f64; 3]| {
        let rate = events as f64 / t[2];
        let extra = t[2] - t[1];
        let ratio = t[2] / t[1];
        let target = if backend == "postgres" {
            format!(
                "; >= 50,000 events/s {}, <= 1.20x {}",
                mark(rate >= 50_000.0),
                mark(ratio <= 1.2)
            )
        } else {
            String::new()
        };
        println!(
            "  {label}: with agencies {:.3} s = {} events/s ({} events/s for the added {:.3} s); \
             exchange, no agency {:.3} s; no exchange {:.3} s; ratio {:.2}x (vs no exchange {:.2}x){target}",
            t[2],
            n(rate),
            n(events as f64 / extra.max(1e-9)),
            extra,
            t[1],
            t[0],
            ratio,
            t[2] / t[0],
        );
    };
    report("round 1, pseudonyms issued", rounds[0]);
    if rounds.len() > 1 {
        let rest = &rounds[1..];
        let med = |i: usize| median(&rest.iter().map(|r| r[i]).collect::<Vec<_>>());
        report(
            &format!("rounds 2-{}, median, pseudonyms known", rounds.len()),
            [med(0), med(1), med(2)],
        );
    }
    println!(
        "  floor: raw INSERT of {} event rows {:.3} s ({} rows/s); of {} pseudonym rows {:.3} s ({} rows/s)",
        n(events as f64),
        raw_events,
        n(events as f64 / raw_events),
        n(events as f64),
        raw_pseudonyms,
        n(events as f64 / raw_pseudonyms),
    );
}

/// A batch id of the database (the floor's rows refer to one, as the events do).
async fn last_batch(url: &str) -> i64 {
    use sqlx::Row;
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    let row = sqlx::query("SELECT MAX(id) AS id FROM ingest_batches")
        .fetch_one(&mut conn)
        .await
        .expect("a batch");
    let id: i64 = row.try_get("id").expect("an id");
    conn.close().await.expect("close");
    id
}

// ---------------------------------------------------------------------------------------------
// 2. Signed webhook deliveries
// ---------------------------------------------------------------------------------------------

/// A reqwest client with `WebhookSender::new`'s settings (adapters/src/webhook.rs).
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("oshirase/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client")
}

/// POSTs each stream's bodies in order, the streams together on this task: the floor.
/// A stream's endpoint and its events' ids and bodies, in order.
type StreamBodies = (String, Vec<(String, Vec<u8>)>);

async fn plain_posts(client: &reqwest::Client, streams: &[StreamBodies]) {
    let runs = streams.iter().map(|(url, bodies)| async move {
        for (id, body) in bodies {
            let response = client
                .post(url.as_str())
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_CLOUDEVENTS)
                .header("webhook-id", id.as_str())
                .body(body.to_vec())
                .send()
                .await
                .expect("the receiver answers");
            assert!(response.status().is_success(), "{}", response.status());
            let _ = response.bytes().await;
        }
    });
    join_all(runs.collect()).await;
}

async fn delivery(backend: &str, reg: &Register, x: &Arc<Exchange>, s: Sizes) {
    let keys = webhook_keys();
    let check = (!bench_mode()).then(|| keys.public_key());
    let (addr, receiver) = start_receiver(check).await;
    let (store, _db) = fresh_store(backend, Some(x.clone()), reg).await;
    let agencies = add_agencies(&store, x, s.agencies, Some(addr)).await;
    let changed = s.events.div_ceil(s.agencies);
    let events = changed * s.agencies;
    let who = reg.pick(changed);
    timed_ingest(&store, &reg.moves(&who, 1, 1), changed, events).await;
    settle_database(&_db.url).await;

    // The floor's bodies, read and made before anything is timed.
    let mut streams = Vec::new();
    for a in &agencies {
        let mut bodies = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .agency_events_after(a, PURPOSE, after, 1000)
                .await
                .expect("events");
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                let body = serde_json::to_vec(&cloudevent::event(e)).expect("JSON");
                bodies.push((cloudevent::event_id(e), body));
            }
        }
        streams.push((format!("http://{addr}/{a}"), bodies));
    }
    assert_eq!(streams.iter().map(|(_, b)| b.len()).sum::<usize>(), events);

    let d = deliverer(&store, keys, DeliveryPolicy::default());
    perf("drain", true);
    let t = Instant::now();
    let report = d.drain().await.expect("drain");
    let engine = t.elapsed().as_secs_f64();
    perf("drain", false);
    assert_eq!(report.delivered, events, "{report:?}");
    assert_eq!(report.dead + report.retried, 0, "{report:?}");
    assert_eq!(
        receiver.refused.load(Ordering::Relaxed),
        0,
        "bad signatures"
    );
    let got: Vec<String> = receiver
        .take()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !is_heartbeat(id))
        .collect();
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), events, "every event arrived, none twice");
    assert_eq!(distinct.len(), events, "every event arrived, none twice");
    for st in store.streams(None).await.expect("streams") {
        assert_eq!(st.delivered_seq, st.last_seq, "{}", st.agency_id);
    }
    store.close().await;

    let client = plain_client();
    perf("posts", true);
    let t = Instant::now();
    plain_posts(&client, &streams).await;
    let floor = t.elapsed().as_secs_f64();
    perf("posts", false);
    assert_eq!(receiver.take().len(), events);

    let rate = events as f64 / engine;
    let floor_rate = events as f64 / floor;
    println!(
        "delivery {backend}: {} events on {} streams: Deliverer::drain {:.3} s = {} deliveries/s; \
         floor (plain POSTs of the same bodies, {} in flight) {:.3} s = {}/s; ratio {:.2}; >= 5,000/s {}",
        n(events as f64),
        s.agencies,
        engine,
        n(rate),
        s.agencies,
        floor,
        n(floor_rate),
        rate / floor_rate,
        mark(rate >= 5_000.0)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Latency change ingested -> agency received
// ---------------------------------------------------------------------------------------------

/// The wait before change `i`: irregular, 50 to 550 ms (5 to 55 in test mode), so that the
/// changes fall anywhere in the worker's poll.
fn interval(i: usize) -> Duration {
    let spread = (i * 7919 + 13) % 101; // 0..=100, scattered
    let ms = 50 + spread * 5;
    Duration::from_millis(if bench_mode() {
        ms as u64
    } else {
        ms as u64 / 10
    })
}

async fn latency(backend: &str, reg: &Register, x: &Arc<Exchange>, s: Sizes) {
    let keys = webhook_keys();
    let check = (!bench_mode()).then(|| keys.public_key());
    let (addr, receiver) = start_receiver(check).await;
    let (store, db) = fresh_store(backend, Some(x.clone()), reg).await;
    let agencies = add_agencies(&store, x, s.agencies, Some(addr)).await;
    settle_database(&db.url).await;
    let policy = DeliveryPolicy::default();
    let poll = policy.poll;
    let d = deliverer(&store, keys, policy);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(async move { d.work(shutdown).await });
    // The first pass greets every new stream with a heartbeat; the changes come after.
    let t = Instant::now();
    while receiver.arrivals.lock().expect("not poisoned").len() < s.agencies {
        assert!(t.elapsed() < Duration::from_secs(30), "no heartbeats");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.take();

    let who = reg.pick(s.samples);
    let mut committed: Vec<Instant> = Vec::new();
    for (i, p) in who.iter().enumerate() {
        tokio::time::sleep(interval(i)).await;
        let text = reg.moves(&[*p], i + 1, 1);
        let report = ingest(&store, FEED, &text, false, SystemClock.now())
            .await
            .unwrap_or_else(|e| panic!("ingesting a change: {e}"));
        committed.push(Instant::now());
        assert_eq!(report.outcome.agency_events, s.agencies);
    }
    // Every event, once.
    let expected = s.samples * s.agencies;
    let t = Instant::now();
    let arrivals = loop {
        let now: Vec<(String, Instant)> = receiver
            .arrivals
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(id, _)| !is_heartbeat(id))
            .cloned()
            .collect();
        if now.len() >= expected || t.elapsed() > Duration::from_secs(30) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.send(true).expect("the worker listens");
    worker.await.expect("the worker ends");
    assert_eq!(
        receiver.refused.load(Ordering::Relaxed),
        0,
        "bad signatures"
    );
    let mut by_id: BTreeMap<String, Instant> = BTreeMap::new();
    for (id, at) in &arrivals {
        assert!(
            by_id.insert(id.clone(), *at).is_none(),
            "{id} arrived twice"
        );
    }
    assert_eq!(by_id.len(), expected, "every event arrived");
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let mut per_event = Vec::new();
    let mut per_change = Vec::new();
    for (i, at) in committed.iter().enumerate() {
        let mut last = 0.0_f64;
        for a in &agencies {
            // Each change is the next event of every stream.
            let id = format!("{a}:{PURPOSE}:{}", i + 1);
            let got = by_id
                .get(&id)
                .unwrap_or_else(|| panic!("{id} never arrived"));
            let l = ms(*at, *got);
            per_event.push(l);
            last = last.max(l);
        }
        per_change.push(last);
    }
    store.close().await;
    per_event.sort_by(f64::total_cmp);
    per_change.sort_by(f64::total_cmp);

    // The floor: one plain POST of an event body to the same receiver, as soon as possible.
    let client = plain_client();
    let url = format!("http://{addr}/floor");
    let body = br#"{"specversion":"1.0","id":"floor","type":"jp.lg.oshirase.resident.changed"}"#;
    let mut floor = Vec::new();
    for i in 0..s.samples {
        let t = Instant::now();
        let r = client
            .post(url.as_str())
            .header("webhook-id", format!("floor-{i}"))
            .body(body.to_vec())
            .send()
            .await
            .expect("the receiver answers");
        let _ = r.bytes().await;
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    floor.sort_by(f64::total_cmp);

    let p99 = percentile(&per_change, 0.99);
    println!(
        "latency {backend}: {} changes ingested one at a time, {} agencies each, Deliverer::work polling every {} ms: \
         per event (n={}) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; per change, its last agency \
         (n={}) p50 {:.1} ms, p99 {:.1} ms; floor: one plain POST p50 {:.2} ms, p99 {:.2} ms; \
         p99 <= 1 s {}",
        s.samples,
        s.agencies,
        poll.as_millis(),
        per_event.len(),
        percentile(&per_event, 0.5),
        percentile(&per_event, 0.99),
        per_event[per_event.len() - 1],
        per_change.len(),
        percentile(&per_change, 0.5),
        p99,
        percentile(&floor, 0.5),
        percentile(&floor, 0.99),
        mark(p99 <= 1000.0)
    );
}

// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    sqlx::any::install_default_drivers();
    let s = Sizes::read();
    let parts =
        oshirase_testkit::listed("OSHIRASE_BENCH_PARTS", &["fanout", "delivery", "latency"]);
    let backends = oshirase_testkit::listed("OSHIRASE_BENCH_BACKENDS", &["postgres", "sqlite"]);
    eprintln!("{s:?}, parts {parts:?}, backends {backends:?}");
    let reg = register(s.residents);
    let x = exchange();
    // The persons are the register's own: a resident id the feeds name must parse.
    assert!(reg.people.iter().all(|p| ResidentId::parse(&p.id).is_ok()));
    for backend in backends {
        for part in &parts {
            let t = Instant::now();
            match *part {
                "fanout" => fanout(backend, &reg, &x, s).await,
                "delivery" => delivery(backend, &reg, &x, s).await,
                "latency" => latency(backend, &reg, &x, s).await,
                _ => unreachable!(),
            }
            eprintln!("({part} on {backend}: {:.1} s)", t.elapsed().as_secs_f64());
        }
    }
}
