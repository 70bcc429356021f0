//! The portal's draft endpoint under concurrent load: `GET /api/drafts/{key}` with bearer
//! tokens for the fixture town's real decisions, on SQLite. Each request verifies the JWT,
//! takes a rate-limit token, reads the notice with its draft and the subject's record in one
//! query, re-checks the reader against the register and waits for its audit row to commit.
//!
//! portal:   the endpoint above, N concurrent clients (reqwest, keep-alive).
//! baseline: an axum handler returning a fixed JSON body of the same size, same clients:
//!           the floor of HTTP on this machine.
//!
//! `cargo bench --bench portal` runs 10 s each with 32 clients (OSHIRASE_BENCH_SECONDS,
//! OSHIRASE_BENCH_CLIENTS to change); `cargo test --benches` runs 1 s so it never rots.

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_portal::{mint_token, PortalConfig};
use oshirase_store::Store;
use tokio::sync::watch;

fn setting(name: &str, bench: u64, test: u64) -> u64 {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { bench } else { test })
}

struct Run {
    requests: usize,
    errors: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} req/s p50 {:.2} ms p99 {:.2} ms",
            self.per_second,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )
    }
}

/// `clients` tasks each sending requests back to back for `seconds`; request i goes to
/// `targets[i % len]` with its token.
async fn load(targets: Arc<Vec<(String, String)>>, clients: usize, seconds: u64) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = http.clone();
            let targets = targets.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut i = c;
                while Instant::now() < until {
                    let (url, token) = &targets[i % targets.len()];
                    i += clients;
                    let t = Instant::now();
                    let ok = match http.get(url).bearer_auth(token).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    lat.push(t.elapsed());
                    errors += usize::from(!ok);
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("client task");
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Run {
        requests: all.len(),
        errors,
        per_second: all.len() as f64 / elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn main() {
    let seconds = setting("OSHIRASE_BENCH_SECONDS", 10, 1);
    let clients = setting("OSHIRASE_BENCH_CLIENTS", 32, 8) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("bench.sqlite").display());
        let store = Store::open(&url).await.expect("open");
        let day = NaiveDate::from_ymd_opt(2026, 10, 1).expect("date");
        let clock = Arc::new(FixedClock::at_noon(day));

        // The fixture town with a month of real decisions.
        let rules = oshirase_engine::load_dir(&root.join("rules")).expect("rules");
        let snap = oshirase_engine::load_snapshot(&root.join("fixtures/town.jsonl"))
            .expect("fixture town");
        let residents = snap.population.residents();
        let text = std::fs::read(root.join("fixtures/town.jsonl")).expect("fixture");
        store
            .apply_ingest(oshirase_store::IngestBatch {
            source: "town.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &text,
            as_of: Some(day),
            rows_in: residents.len(),
            state: residents,
            events: &[],
            feed_position: None,
            read_at: None,
            now: clock.now(),
        })
            .await
            .expect("ingest");
        store
            .record_rule_set(&rules.version, rules.rules().len(), "rules", clock.now())
            .await
            .expect("rule set");
        let mut d = day;
        // Notices with a draft: one that needs no application has none to read.
        let mut with_draft = std::collections::HashSet::new();
        for _ in 0..30 {
            let r = oshirase_engine::evaluate_day(&rules, &snap.population, d);
            with_draft.extend(
                r.decisions
                    .iter()
                    .filter(|d| d.application != oshirase_engine::rule::Application::None)
                    .map(|d| d.key.to_string()),
            );
            store
                .commit_day(d, &rules.version, 0, &r.decisions, clock.now())
                .await
                .expect("commit");
            d = oshirase_engine::calendar::day_after(d);
        }

        let config = PortalConfig::with_hs256_secret("bench-secret-bench-secret-bench-secret")
            .issuer("bench")
            .rate_limit(1e9, 1_000_000);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = watch::channel(false);
        let server = tokio::spawn(oshirase_portal::serve(
            listener,
            store.clone(),
            config.clone(),
            clock.clone(),
            Default::default(),
            rx,
        ));

        // Every (reader, draft) the portal shows: readers' own tokens.
        let mut targets = Vec::new();
        for row in store.outbox_rows(None).await.expect("outbox") {
            if row.channel != "portal" || !with_draft.contains(row.decision_key.as_str()) {
                continue;
            }
            let token = mint_token(&config, &row.recipient, clock.now(), Duration::from_secs(3600))
                .expect("token");
            let key = row.decision_key.as_str().replace('/', "%2F");
            targets.push((format!("{base}/api/drafts/{key}"), token));
        }
        assert!(!targets.is_empty(), "no portal notices in the fixture month");
        let http = reqwest::Client::new();
        let sample = http
            .get(&targets[0].0)
            .bearer_auth(&targets[0].1)
            .send()
            .await
            .expect("sample request");
        assert!(sample.status().is_success(), "sample: {}", sample.status());
        let body = sample.bytes().await.expect("sample body");

        // The floor: the same clients against a fixed JSON body of the same size.
        let fixed = axum::Router::new().route(
            "/draft",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let floor = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let floor_url = format!("http://{}/draft", floor.local_addr().expect("addr"));
        let floor_task = tokio::spawn(async move { axum::serve(floor, fixed).await });
        let floor_targets = Arc::new(vec![(floor_url, "x".to_owned())]);

        let n_targets = targets.len();
        let targets = Arc::new(targets);
        let _warm = load(targets.clone(), clients, 1).await;
        let portal = load(targets, clients, seconds).await;
        let baseline = load(floor_targets, clients, seconds).await;
        let audited = store.audit_entries(None).await.expect("audit").len();
        println!(
            "portal drafts: {portal} (baseline {baseline}); {clients} clients, {n_targets} drafts, {} requests, {} errors, {audited} audit rows",
            portal.requests, portal.errors
        );
        assert_eq!(portal.errors, 0, "failed requests");
        stop.send(true).expect("stop");
        server.await.expect("server").expect("serve");
        floor_task.abort();
    });
}
