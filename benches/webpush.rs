//! Web push throughput: what the channel costs per notice on top of the HTTP request itself.
//!
//! webpush:  `WebPushChannel::send` for N notices, 64 in flight, each to a resident with one
//!           subscription in a SQLite store: subscription lookup, aes128gcm encryption
//!           (a fresh ECDH key per message), the VAPID header (signed once per push service
//!           origin and reused), and the POST to an in-process axum push service that
//!           answers 201.
//! baseline: the same number of plain POSTs of an equally sized unencrypted body, 64 in
//!           flight, from a client built like the channel's: the floor of the HTTP stack.
//!
//! Also printed: the cost of one VAPID signature, which caching takes off each request.
//!
//! `cargo bench --bench webpush` sends 20,000 (OSHIRASE_BENCH_PUSHES to change);
//! `cargo test --benches` runs it on 300 so it never rots.

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use oshirase_adapters::{generate_vapid_keys, WebPushChannel, WebPushConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_service::outbox::{Channel, Delivery};
use oshirase_store::{OutboxItem, Store};

const IN_FLIGHT: usize = 64;
const RESIDENTS: usize = 200;

fn pushes_wanted() -> usize {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    std::env::var("OSHIRASE_BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 20_000 } else { 300 })
}

/// Reads the whole body, as a push service would, and accepts it.
async fn created(_body: axum::body::Bytes) -> StatusCode {
    StatusCode::CREATED
}

/// A push service that accepts everything, on 127.0.0.1; returns its base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/push/{id}", post(created))
        .route("/plain", post(created));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn item(i: usize) -> OutboxItem {
    OutboxItem {
        id: i as i64,
        decision_key: oshirase_engine::eval::DecisionKey::parse(&format!(
            "jidou-teate-nintei/R{i:05}/birth-R{i:05}-2026-10-06"
        ))
        .expect("a key"),
        recipient: format!("R{:05}", i % RESIDENTS),
        channel: "webpush".into(),
        attempts: 0,
        deadline: Some("2026-10-21".parse().expect("date")),
        news: None,
        notice: oshirase_store::NoticeBody::titled(
            "児童手当 認定請求・額改定請求（出生）",
            oshirase_engine::rule::Category::Childcare,
            false,
        ),
        resident: None,
        preferences: None,
    }
}

/// Runs `f(i)` for i in 0..n with `IN_FLIGHT` tasks; returns the elapsed time.
async fn run<F, Fut>(n: usize, f: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|t| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    f(i).await;
                    i += IN_FLIGHT;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    started.elapsed()
}

async fn bench(n: usize) {
    let base = serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.sqlite").display()
    ))
    .await
    .expect("store");
    let clock = Arc::new(FixedClock::at_noon("2026-10-10".parse().expect("date")));
    for r in 0..RESIDENTS {
        // Any P-256 point serves as a browser key; the auth secret is any 16 bytes.
        let browser = generate_vapid_keys().public_key;
        store
            .add_push_subscription(
                &format!("R{r:05}"),
                &format!("{base}/push/{r}"),
                &browser,
                "c2VjcmV0LWF1dGgtMTIzNA",
                clock.now(),
            )
            .await
            .expect("subscription");
    }
    let timeout = Duration::from_secs(10);
    let ch = Arc::new(
        WebPushChannel::new(
            store.clone(),
            WebPushConfig {
                vapid: generate_vapid_keys(),
                subject: "mailto:oshirase@example.lg.jp".into(),
                portal_url: "https://portal.example.lg.jp".into(),
                allow_loopback: true,
                timeout,
            },
        )
        .expect("channel")
        .with_clock(clock.clone()),
    );

    // What caching saves: one signature (health() signs a fresh token every time).
    let signs = 200;
    let started = Instant::now();
    for _ in 0..signs {
        ch.health().await.expect("sign");
    }
    let sign_us = started.elapsed().as_secs_f64() * 1e6 / signs as f64;

    // The encrypted body is the payload plus 86 bytes of header, a delimiter and a 16-byte tag.
    let body_len = ch.payload(&item(0)).len() + 86 + 1 + 16;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // Warm both: connections open, the VAPID token signed.
    for i in 0..IN_FLIGHT {
        assert_eq!(ch.send(&item(i)).await, Delivery::Delivered);
    }
    let plain = format!("{base}/plain");
    for _ in 0..IN_FLIGHT {
        client
            .post(&plain)
            .body(vec![b'x'; body_len])
            .send()
            .await
            .expect("plain post");
    }

    let push_ch = ch.clone();
    let pushed = run(n, move |i| {
        let ch = push_ch.clone();
        async move {
            let d = ch.send(&item(i)).await;
            assert_eq!(d, Delivery::Delivered, "push {i}");
        }
    })
    .await;
    let posted = run(n, move |_| {
        let client = client.clone();
        let plain = plain.clone();
        async move {
            let r = client
                .post(&plain)
                .body(vec![b'x'; body_len])
                .send()
                .await
                .expect("plain post");
            assert_eq!(r.status(), 201);
        }
    })
    .await;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (w, b) = (rate(pushed), rate(posted));
    println!(
        "webpush: {w:.0} pushes/s (baseline plain POST {b:.0}/s, ratio {:.2}) — {n} notices, {IN_FLIGHT} in flight, {body_len}-byte bodies; one VAPID signature {sign_us:.0} µs (signed once per origin and hour)",
        w / b
    );
    store.close().await;
}

fn main() {
    let n = pushes_wanted();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench(n));
}
