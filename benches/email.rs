//! E-mail throughput over SMTP with connection pooling, against Postfix's smtp-sink (a real
//! SMTP server that accepts and discards mail) started here on a free loopback port.
//!
//! email:    `EmailChannel::send` for N claimed outbox rows, C sends in flight: the register
//!           record read with the claim, the message built (Japanese subject and parts, the
//!           Message-ID), sent through the channel's pool of C connections.
//! baseline: raw lettre, `send_raw` of one prebuilt message over the same pooled transport
//!           with the same concurrency: the floor of lettre and the server.
//! drain:    `outbox::drain` over the same rows queued again (claims, the gate, settling and
//!           the attempt log on SQLite around the same channel), for the whole worker's rate.
//!
//! Each is also given in CPU time of this process per message, which shows the channel's own
//! cost while the wall-clock rate is bound by latency: lettre 0.11.23 leaves Nagle's algorithm
//! on, so the end-of-data line waits for the server's delayed ACK (about 40 ms a message on
//! Linux) and the rate grows with the sends in flight (docs/email.md).
//!
//! `cargo bench --bench email` sends 2,000 messages with 8 and with 64 in flight
//! (OSHIRASE_BENCH_EMAILS and OSHIRASE_BENCH_EMAIL_CONCURRENCY to change);
//! `cargo test --benches` sends 200 with 8 so it never rots.
//! Needs smtp-sink: scripts/services/mail.sh installs it.

#[path = "../adapters/tests/support/smtp_servers.rs"]
mod smtp_servers;
#[path = "../adapters/tests/support/smtp_store.rs"]
mod smtp_store;

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oshirase_adapters::email::lettre::AsyncTransport;
use oshirase_adapters::email::SmtpConfig;
use oshirase_adapters::{EmailChannel, EmailConfig};
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_service::outbox::{Channel, Delivery, Gate, Policy, Worker};
use oshirase_store::OutboxItem;
use smtp_servers::SmtpSink;

/// Residents the notices go to (many rows per person, as on a busy day).
const PEOPLE: usize = 100;

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn from_env(var: &str) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// CPU time of this process (all threads) so far, from /proc (USER_HZ is 100 on Linux).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Runs `send(i)` for i in 0..n with `c` tasks; returns the elapsed and the CPU time.
async fn run<F, Fut>(n: usize, c: usize, send: F) -> (Duration, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let (started, cpu_before) = (Instant::now(), cpu());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (send, next) = (send.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                send(i).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a sender task");
    }
    (started.elapsed(), cpu() - cpu_before)
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn ms_each(n: usize, cpu: Duration) -> f64 {
    cpu.as_secs_f64() * 1000.0 / n as f64
}

async fn bench(n: usize, c: usize) {
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let clock = Arc::new(FixedClock::at_noon("2026-10-10".parse().expect("a date")));
    let store = smtp_store::register(dir.path(), PEOPLE, 0, clock.now()).await;
    let notices: Vec<_> = (0..n)
        .map(|i| smtp_store::notice(i, &format!("R{}", 10001 + i % PEOPLE), i % 10 == 0))
        .collect();
    smtp_store::queue(&store, &notices, clock.now()).await;
    let items: Arc<Vec<OutboxItem>> = Arc::new(smtp_store::claim(&store, clock.now()).await);
    assert_eq!(items.len(), n);

    let config = EmailConfig {
        from: "利島村役場 <noreply@example.lg.jp>"
            .parse()
            .expect("a sender"),
        portal_url: "https://portal.example.lg.jp".into(),
        message_id_domain: "oshirase.example.lg.jp".into(),
    };
    let smtp = SmtpConfig {
        pool_size: c as u32,
        ..SmtpConfig::new(sink.url())
    };
    let ch = Arc::new(
        EmailChannel::smtp(config, &smtp, store.clone(), clock.clone()).expect("the channel"),
    );
    ch.health().await.expect("smtp-sink answers");
    let mailer = ch.smtp_transport().expect("an SMTP channel");
    let prebuilt = ch.build(&items[0]).await.expect("a message");
    let (envelope, raw) = (prebuilt.envelope().clone(), Arc::new(prebuilt.formatted()));

    let failures = Arc::new(AtomicUsize::new(0));
    // Warm-up: open the pool's connections.
    {
        let ch = ch.clone();
        let items = items.clone();
        run(c * 4, c, move |i| {
            let (ch, items) = (ch.clone(), items.clone());
            async move {
                ch.send(&items[i]).await;
            }
        })
        .await;
    }

    let baseline = {
        let (mailer, envelope, raw, failures) = (
            mailer.clone(),
            envelope.clone(),
            raw.clone(),
            failures.clone(),
        );
        run(n, c, move |_| {
            let (mailer, envelope, raw, failures) = (
                mailer.clone(),
                envelope.clone(),
                raw.clone(),
                failures.clone(),
            );
            async move {
                if mailer.send_raw(&envelope, &raw).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await
    };
    let ours = {
        let (ch, items, failures) = (ch.clone(), items.clone(), failures.clone());
        run(n, c, move |i| {
            let (ch, items, failures) = (ch.clone(), items.clone(), failures.clone());
            async move {
                if ch.send(&items[i]).await != Delivery::Delivered {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await
    };
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "every send is accepted"
    );

    // The whole worker: the same notices queued again as new rows.
    let again: Vec<_> = (0..n)
        .map(|i| smtp_store::notice(n + i, &format!("R{}", 10001 + i % PEOPLE), i % 10 == 0))
        .collect();
    smtp_store::queue(&store, &again, clock.now()).await;
    let policy = Policy {
        gate: Gate::open(),
        concurrency: c,
        batch: (4 * c).max(100) as i64,
        ..Policy::default()
    };
    let (started, cpu_before) = (Instant::now(), cpu());
    let report = Worker::new("bench", store.clone(), clock.clone(), policy.clone())
        .drain(ch.as_ref())
        .await
        .expect("drain");
    let drained = (started.elapsed(), cpu() - cpu_before);
    assert_eq!(report.delivered, n, "{report:?}");
    ch.close().await;

    let (r, b) = (rate(n, ours.0), rate(n, baseline.0));
    println!(
        "email: {r:.0} msgs/s (baseline raw lettre {b:.0}/s, ratio {:.2}) — {n} messages, {c} in flight, pool of {c}; \
         CPU {:.3} ms/msg (baseline {:.3})",
        r / b,
        ms_each(n, ours.1),
        ms_each(n, baseline.1),
    );
    println!(
        "email via outbox::drain (SQLite): {:.0} msgs/s, CPU {:.3} ms/msg — claims, gate, settling and attempt log included",
        rate(n, drained.0),
        ms_each(n, drained.1),
    );
}

fn main() {
    let n = from_env("OSHIRASE_BENCH_EMAILS").unwrap_or(if bench_mode() { 2_000 } else { 200 });
    let levels = match from_env("OSHIRASE_BENCH_EMAIL_CONCURRENCY") {
        Some(c) => vec![c.max(1)],
        None if bench_mode() => vec![8, 64],
        None => vec![8],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    for c in levels {
        rt.block_on(bench(n, c));
    }
}
