//! A party exchanging its codes for tokens (`POST /share/v1/token`, docs/sharing.md) under 32
//! concurrent clients, beside a floor measured in the same run, on SQLite and PostgreSQL
//! (OSHIRASE_BENCH_BACKENDS=sqlite or postgres for one; PostgreSQL: OSHIRASE_TEST_PG or
//! postgres://postgres@127.0.0.1:5432/test, in a fresh database).
//!
//! token:  32 clients (tokio tasks, one shared reqwest client, loopback TCP), each sending its
//!         requests one after another to the agencies' API served in process: grant_type
//!         authorization_code with a fresh code of its own grant for R00002, its PKCE
//!         code_verifier, a private_key_jwt client assertion (ES256, unique jti) and a DPoP
//!         proof (ES256, unique jti, one DPoP key a client). Every request checks the
//!         assertion's and the proof's signatures, then in one write transaction spends both
//!         jtis, redeems the code, reads the grant and keeps a refresh token (on SQLite the
//!         token writer commits the requests waiting together), and signs the token. Every
//!         answer must be 200 with a DPoP token.
//! floor:  the same 32 clients, the same number of requests, `GET /agency/v1/jwks.json` on the
//!         same server: HTTP, routing and the runtime, without the database or a signature.
//!
//! The codes, verifiers, assertions and proofs are made before the clock starts (iat = now:
//! the server reads the real clock, and a proof is accepted within 60 s of its iat).
//!
//! `cargo bench --bench share_token` sends 150 requests a client (4,800 in all;
//! OSHIRASE_BENCH_CLIENTS, OSHIRASE_BENCH_REQUESTS for the requests a client) and prints the
//! throughput, the latencies (p50/p90/p99/max) and the ratio of the p99s; the target is a
//! token p99 ≤ 20 ms (said, not enforced: the machine is shared). `cargo test --benches` sends
//! 3 a client, checking every answer, never timing.

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use oshirase_engine::clock::{after, Clock, SystemClock};
use oshirase_exchange::dpop::access_token_hash;
use oshirase_exchange::{ApiConfig, ApiState, ExchangeMetrics, Keys, SigningKey};
use oshirase_store::{NewGrant, PartySpec, Store};
use serde_json::{json, Value};
use tokio::sync::watch;

const PARTY: &str = "kyuyo-soft";
const REDIRECT: &str = "https://payroll.example.com/oauth/callback";
const RESIDENT: &str = "R00002";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The target of the token endpoint under 32 clients.
const TARGET_P99_MS: f64 = 20.0;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `OSHIRASE_BENCH_{name}`, or the size of the mode this runs in.
fn size(name: &str, bench: usize, test: usize) -> usize {
    std::env::var(format!("OSHIRASE_BENCH_{name}"))
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(if bench_mode() { bench } else { test })
        .max(1)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the random source");
    URL_SAFE_NO_PAD.encode(b)
}

/// application/x-www-form-urlencoded of a value.
fn form_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", form_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One token request, ready to send.
struct Request {
    body: Bytes,
    dpop: String,
}

#[derive(Debug)]
struct Figures {
    wall: Duration,
    /// Milliseconds, sorted.
    latencies: Vec<f64>,
}

impl Figures {
    fn line(&self, what: &str) -> String {
        let l = &self.latencies;
        format!(
            "{what}: {} requests in {:.2} s, {:.0}/s; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.len(),
            self.wall.as_secs_f64(),
            l.len() as f64 / self.wall.as_secs_f64(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            l[l.len() - 1],
        )
    }
}

/// Runs one task a client, each sending its requests in turn; every answer must be 200 and
/// pass `check`.
async fn run<R: Send + Sync + 'static>(
    per_client: Vec<Vec<R>>,
    send: impl Fn(&reqwest::Client, &R) -> reqwest::RequestBuilder + Send + Sync + 'static,
    check: fn(&str) -> Result<(), String>,
    http: &reqwest::Client,
) -> Figures {
    let send = Arc::new(send);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for requests in per_client {
        let http = http.clone();
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests.len());
            for r in &requests {
                let t = Instant::now();
                let answer = send(&http, r).send().await.expect("the API answers");
                let status = answer.status();
                let body = answer.text().await.expect("an answer's body");
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, 200, "{body}");
                if let Err(why) = check(&body) {
                    panic!("{why}: {body}");
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("a client finished"));
    }
    let wall = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    Figures { wall, latencies }
}

fn a_dpop_token(body: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    if v["token_type"] != "DPoP" || !v["access_token"].is_string() {
        return Err("not a DPoP token".into());
    }
    Ok(())
}

fn a_jwks(body: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    match v["keys"].as_array() {
        Some(keys) if !keys.is_empty() => Ok(()),
        _ => Err("not a JWKS".into()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // As the binary does first thing (src/main.rs).
    oshirase_exchange::jose::install();
    let clients = size("CLIENTS", 32, 32);
    let per_client = size("REQUESTS", 150, 3);
    for backend in oshirase_testkit::listed("OSHIRASE_BENCH_BACKENDS", &["sqlite", "postgres"]) {
        measure(backend, clients, per_client).await;
    }
}

async fn measure(backend: &str, clients: usize, per_client: usize) {
    let total = clients * per_client;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // The store: a fresh database with the fixture town and one party.
    let db = oshirase_testkit::fresh(backend, "oshirase_bench_share_token_").await;
    let exchange = Arc::new(
        oshirase_engine::purposes::load_dir(&root().join("rules")).expect("the rules load"),
    );
    let store = Store::open(&db.url)
        .await
        .expect("the store opens")
        .with_exchange(exchange.clone());
    let town = std::fs::read_to_string(root().join("fixtures/town.jsonl")).expect("the town");
    oshirase_service::ingest::ingest(&store, "town.jsonl", &town, false, clock.now())
        .await
        .expect("the town ingests");
    let client = SigningKey::generate().expect("a key");
    let items: Vec<String> = ["name", "address"].map(str::to_owned).to_vec();
    store
        .upsert_party(
            &PartySpec {
                id: PARTY.into(),
                name: "株式会社サンプル給与".into(),
                purpose: "年末調整の申告書に住所と氏名を記入するため".into(),
                redirect_uris: vec![REDIRECT.into()],
                client_jwks: json!({ "keys": [client.public_jwk()] }).to_string(),
                items: items.clone(),
                max_grant_days: 365,
                revocation_uri: None,
            },
            clock.now(),
        )
        .await
        .expect("the party registers");

    // The grants, each with its one-use code and PKCE verifier.
    let started = Instant::now();
    let mut codes = Vec::with_capacity(total);
    for i in 0..total {
        let (code, verifier) = (random(32), random(32));
        let now = clock.now();
        let id = format!("g_bench_{i:05}");
        store
            .create_grant(&NewGrant {
                id: &id,
                resident_id: RESIDENT,
                granted_by: RESIDENT,
                party_id: PARTY,
                items: &items,
                purpose: "年末調整の申告書に住所と氏名を記入するため",
                expires_at: after(now, Duration::from_secs(30 * 86_400)),
                code_hash: &oshirase_store::secret_digest(&code),
                redirect_uri: REDIRECT,
                code_challenge: &access_token_hash(&verifier),
                code_expires_at: after(now, Duration::from_secs(600)),
                now,
            })
            .await
            .expect("a grant");
        codes.push((code, verifier));
    }
    eprintln!("{total} grants in {:.1} s", started.elapsed().as_secs_f64());

    // The agencies' API over the store, on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let api = format!("http://{}", listener.local_addr().expect("an address"));
    let state = ApiState {
        store: store.clone(),
        exchange,
        keys: Arc::new(Keys {
            current: SigningKey::generate().expect("a key"),
            previous: Vec::new(),
        }),
        clock: clock.clone(),
        metrics: Arc::new(ExchangeMetrics::default()),
        config: ApiConfig {
            public_url: api.clone(),
            max_interest_days: 400,
            token_ttl_seconds: 300,
            authorization_endpoint: None,
        },
    };
    let (stop, rx) = watch::channel(false);
    let server = tokio::spawn(oshirase_exchange::serve(listener, state, rx));
    let token_url = format!("{api}/share/v1/token");
    let jwks_url = format!("{api}/agency/v1/jwks.json");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(clients)
        .build()
        .expect("a client");

    // The floor first: it also opens the clients' connections.
    let floor = run(
        (0..clients).map(|_| vec![(); per_client]).collect(),
        {
            let url = jwks_url.clone();
            move |http, _: &()| http.get(url.as_str())
        },
        a_jwks,
        &http,
    )
    .await;

    // Every request made before the clock starts: one DPoP key a client.
    let started = Instant::now();
    let now = clock.now().timestamp();
    let mut codes = codes.into_iter();
    let mut requests: Vec<Vec<Request>> = Vec::with_capacity(clients);
    for _ in 0..clients {
        let dpop_key = SigningKey::generate().expect("a key");
        let mut mine = Vec::with_capacity(per_client);
        for _ in 0..per_client {
            let (code, verifier) = codes.next().expect("a code a request");
            let assertion = oshirase_exchange::auth::client_assertion(
                &client,
                PARTY,
                &token_url,
                now,
                &random(16),
            );
            let body = form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ]);
            let dpop = oshirase_exchange::dpop::proof(
                &dpop_key,
                "POST",
                &token_url,
                now,
                &random(16),
                None,
            );
            mine.push(Request {
                body: Bytes::from(body),
                dpop,
            });
        }
        requests.push(mine);
    }
    eprintln!(
        "{total} requests made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let token = run(
        requests,
        {
            let url = token_url.clone();
            move |http, r: &Request| {
                http.post(url.as_str())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("DPoP", r.dpop.as_str())
                    .body(r.body.clone())
            }
        },
        a_dpop_token,
        &http,
    )
    .await;

    let _ = stop.send(true);
    let _ = server.await;

    if !bench_mode() {
        println!("share_token on {backend}: {total} requests from {clients} clients, every one 200 with a DPoP token (quick mode, not timed)");
        return;
    }
    let p99 = percentile(&token.latencies, 0.99);
    let floor_p99 = percentile(&floor.latencies, 0.99);
    println!("share_token on {backend}, {clients} concurrent clients, {per_client} requests each:");
    println!("  {}", token.line("POST /share/v1/token"));
    println!("  {}", floor.line("floor GET /agency/v1/jwks.json"));
    println!(
        "  p99 ratio token/floor {:.1}; target token p99 ≤ {TARGET_P99_MS:.0} ms: {}",
        p99 / floor_p99,
        if p99 <= TARGET_P99_MS {
            "MET"
        } else {
            "MISSED"
        }
    );
}
