//! Outbox throughput with a channel that does nothing: what the worker itself costs (claim
//! with a lease, the gate, settling, the attempt log), on SQLite and PostgreSQL.
//!
//! engine:   `outbox::drain` with the default policy (batches of 100 or OSHIRASE_BENCH_BATCH,
//!           eight sends in flight or OSHIRASE_BENCH_CONCURRENCY) and an open gate, over N
//!           queued rows.
//! baseline: the same rows marked delivered by bare SQL, one claim-and-settle statement per
//!           batch of the same size (no lease, no attempt log): the floor of the database.
//!
//! `cargo bench --bench outbox` queues 20,000 rows (OSHIRASE_BENCH_ROWS to change);
//! `cargo test --benches` runs it on 300 so it never rots. PostgreSQL: OSHIRASE_TEST_PG or
//! postgres://postgres@127.0.0.1:5432/test, in fresh databases (the next run drops them).

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use oshirase_engine::clock::FixedClock;
use oshirase_service::outbox::{Channel, Delivery, Gate, Policy, Worker};
use oshirase_store::{OutboxItem, Store};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

struct NoOp;

impl Channel for NoOp {
    fn name(&self) -> &'static str {
        "noop"
    }

    async fn send(&self, _item: &OutboxItem) -> Delivery {
        Delivery::Delivered
    }
}

fn rows_wanted() -> usize {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    std::env::var("OSHIRASE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 20_000 } else { 300 })
}

/// Rows a worker claims at once: the default policy's, or OSHIRASE_BENCH_BATCH.
fn batch_size() -> i64 {
    std::env::var("OSHIRASE_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Policy::default().batch)
}

/// Sends in flight: the default policy's, or OSHIRASE_BENCH_CONCURRENCY. Attempts are settled
/// as they end, never more than this many waiting, so it is also the most rows one settling
/// transaction carries.
fn concurrency() -> usize {
    std::env::var("OSHIRASE_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Policy::default().concurrency)
}

/// Queues `n` decisions with one `noop` outbox row each, directly in SQL (the scheduler's
/// cost is not what this measures).
async fn queue(url: &str, n: usize) {
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    let now = "2026-10-01T03:00:00.000Z";
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO rule_sets (version, rules, source, loaded_at) VALUES ('bench', 1, 'bench', '{now}')"
    )))
    .execute(&mut conn)
    .await
    .expect("rule set");
    let body = r#"{"critical":false,"title":{"ja":"お知らせ"},"message":{"ja":"お知らせです。"},"category":"pension","recipients":[]}"#;
    let mut tx = conn.begin().await.expect("begin");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "('bench/R{i}/2026-10-01', 'bench', 1, 'bench', 'R{i}', '2026-10-01', '2026-10-01', NULL, NULL, 0, '{body}', '{now}')"
                )
            })
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO decisions (key, rule, rule_version, rule_set, subject, occurrence, notify_on,
               deadline, staff_review, critical, body, created_at) VALUES {}",
            values.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .expect("decisions");
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('bench/R{i}/2026-10-01', 'R{i}', 'noop', '{now}')"))
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO outbox (decision_key, recipient, channel, next_attempt_at) VALUES {}",
            values.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .expect("outbox");
    }
    tx.commit().await.expect("commit");
}

/// Rows per second through the worker.
async fn engine(url: &str, n: usize) -> f64 {
    let store = Store::open(url).await.expect("open");
    queue(url, n).await;
    let clock = std::sync::Arc::new(FixedClock::at_noon("2026-10-01".parse().unwrap()));
    let policy = Policy {
        gate: Gate::open(),
        batch: batch_size(),
        concurrency: concurrency(),
        ..Policy::default()
    };
    let started = Instant::now();
    let report = Worker::new("bench", store.clone(), clock, policy)
        .drain(&NoOp)
        .await
        .expect("drain");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(report.delivered, n, "{report:?}");
    store.close().await;
    n as f64 / took
}

/// Rows per second marked delivered by one bare statement per batch.
async fn baseline(url: &str, n: usize, batch: usize) -> f64 {
    let store = Store::open(url).await.expect("open");
    store.close().await;
    queue(url, n).await;
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    let started = Instant::now();
    let mut done = 0;
    loop {
        let changed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1 WHERE id IN (
               SELECT id FROM outbox WHERE channel = 'noop' AND state = 'pending' ORDER BY id LIMIT {batch})"
        )))
        .execute(&mut conn)
        .await
        .expect("update")
        .rows_affected();
        if changed == 0 {
            break;
        }
        done += changed as usize;
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(done, n);
    n as f64 / took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    sqlx::any::install_default_drivers();
    let n = rows_wanted();
    let batch = batch_size() as usize;
    for backend in ["sqlite", "postgres"] {
        // Databases this bench left are dropped by its next run.
        let a = oshirase_testkit::fresh(backend, "oshirase_bench_outbox_").await;
        let b = oshirase_testkit::fresh(backend, "oshirase_bench_outbox_").await;
        let worker = engine(&a.url, n).await;
        let floor = baseline(&b.url, n, batch).await;
        println!(
            "outbox {backend}: {worker:.0} deliveries/s with a no-op channel, {n} rows \
             (baseline bare SQL {floor:.0}/s, ratio {:.2})",
            worker / floor
        );
    }
}
