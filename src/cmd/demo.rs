//! `oshirase demo`: the fixture town end to end on a fresh SQLite file, and the portal to look
//! at it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime};
use oshirase_adapters::{EmailChannel, EmailConfig, PortalInbox};
use oshirase_engine::calendar;
use oshirase_engine::clock::{in_tokyo, Clock, FixedClock, SystemClock};
use oshirase_portal::PortalConfig;
use oshirase_service::ingest::ingest;
use oshirase_service::metrics::DeliveryMetrics;
use oshirase_service::outbox::{Policy, Worker};
use oshirase_service::scheduler::Scheduler;
use oshirase_store::Store;

use crate::common::{exit, load_exchange, load_rules, runtime, shutdown_signal};

mod agencies;
mod office;
mod party;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The demo database (recreated on each run).
    #[arg(long, default_value = "oshirase-demo.sqlite")]
    pub db: PathBuf,
    /// The rule catalogue folder; without it, the catalogue built into this binary.
    #[arg(long, env = "OSHIRASE_RULES")]
    pub rules: Option<PathBuf>,
    /// The town snapshot; without it, the fixture town built into this binary.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// The town's change feed; without it, the built-in town's.
    #[arg(long)]
    pub changes: Option<PathBuf>,
    /// First day replayed.
    #[arg(long, default_value = "2026-10-01")]
    pub from: NaiveDate,
    /// Number of days replayed.
    #[arg(long, default_value_t = 120)]
    pub days: u32,
    /// After the replay, serve the portal on this loopback port until Ctrl-C, with sign-in
    /// links for a few residents (a secret made for this run signs them).
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "8080")]
    pub serve: Option<u16>,
}

/// Feed lines grouped by the day they reach the register, each group a feed of its own.
fn feed_by_day(text: &str) -> anyhow::Result<(String, BTreeMap<NaiveDate, String>)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("the change feed is empty")?.to_owned();
    let mut by_day: BTreeMap<NaiveDate, String> = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("change feed line {}", n + 2))?;
        let day = v
            .get("recorded")
            .or_else(|| v.get("date"))
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse().ok())
            .with_context(|| format!("change feed line {}: no date", n + 2))?;
        let e = by_day.entry(day).or_insert_with(|| format!("{header}\n"));
        e.push_str(line);
        e.push('\n');
    }
    Ok((header, by_day))
}

pub fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let rules = match load_rules(args.rules.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let exchange = match load_exchange(args.rules.as_deref()) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let read = |file: &Option<PathBuf>, builtin: &str| -> anyhow::Result<(String, String)> {
        match file {
            Some(f) => Ok((
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                f.display().to_string(),
            )),
            None => Ok((builtin.to_owned(), "the built-in fixture town".to_owned())),
        }
    };
    let (snapshot, snapshot_name) = read(&args.snapshot, crate::builtin::TOWN)?;
    let (changes, _) = read(&args.changes, crate::builtin::TOWN_CHANGES)?;
    let (_, by_day) = feed_by_day(&changes)?;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", args.db.display()));
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("cannot remove the old demo database {}", p.display()))?;
        }
    }
    let rt = runtime()?;
    rt.block_on(async {
        let store = Store::open(&args.db.display().to_string())
            .await?
            .with_exchange(exchange.clone());
        let clock = Arc::new(FixedClock::at_noon(args.from));
        let r = ingest(&store, "town.jsonl", &snapshot, false, clock.now())
            .await
            .with_context(|| format!("the demo snapshot {snapshot_name}"))?;
        out!(
            "ingested {snapshot_name}: {} residents",
            r.rows_in
        );
        let town_code = snapshot
            .lines()
            .next()
            .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
            .and_then(|h| h["local_gov_code"].as_str().map(str::to_owned))
            .context("the demo snapshot's header has no local_gov_code")?;
        let agencies =
            agencies::DemoAgencies::start(&store, &exchange, clock.clone(), args.from, &town_code)
                .await?;
        let rules = Arc::new(rules);
        let mut scheduler = Scheduler::new(store.clone(), rules.clone(), clock.clone());
        scheduler.start = Some(args.from);
        let last = calendar::add_days(args.from, i64::from(args.days) - 1);
        let mail_dir = PathBuf::from(format!("{}-mail", args.db.display()));
        if mail_dir.exists() {
            std::fs::remove_dir_all(&mail_dir)
                .with_context(|| format!("cannot remove {}", mail_dir.display()))?;
        }
        let portal_url = format!("http://127.0.0.1:{}", args.serve.unwrap_or(8080));
        let email_config = EmailConfig {
            from: "利島村役場 <noreply@example.lg.jp>"
                .parse()
                .context("demo sender")?,
            portal_url: portal_url.clone(),
            message_id_domain: "oshirase.example.lg.jp".into(),
        };
        // Addresses come from the store; the Date header is the demo day's time.
        let email = EmailChannel::to_dir(email_config, mail_dir.clone(), store.clone(), clock.clone())
            .context("demo e-mail settings")?;
        let worker = Worker::new("demo", store.clone(), clock.clone(), Policy::default());
        let mut delivered = (0, 0);
        let mut day = args.from;
        let mut changes_applied = 0;
        let mut failures = 0;
        while day <= last {
            clock.set(in_tokyo(day, NaiveTime::from_hms_opt(6, 0, 0).expect("06:00")));
            if let Some(feed) = by_day.get(&day) {
                let r = ingest(&store, "town-changes.jsonl", feed, false, clock.now())
                    .await
                    .context("the demo change feed")?;
                changes_applied += r.rows_in - r.already_applied;
                agencies.deliver().await?;
            }
            failures += scheduler.run_day(day).await?.failures.len();
            // Quiet hours and the daily cap apply as in the service (the clock is 06:00).
            delivered.0 += worker.drain(&PortalInbox).await?.delivered;
            delivered.1 += worker.drain(&email).await?.delivered;
            day = calendar::add_days(day, 1);
        }
        summary(&store, &args, changes_applied, failures, started).await?;
        let deaths: Vec<oshirase_engine::ids::ResidentId> = by_day
            .range(args.from..=last)
            .flat_map(|(_, feed)| feed.lines().skip(1))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "death")
            .filter_map(|v| v["resident"].as_str().and_then(|r| oshirase_engine::ids::ResidentId::parse(r).ok()))
            .collect();
        agencies.report(&store, &deaths).await?;
        delivered.1 += office::round_trip(
            &store, &exchange, &clock, last, &worker, &email, &mail_dir,
        )
        .await
        .context("the demo's round trip to the core system")?;
        out!(
            "\ndelivered: {} to portal inboxes, {} e-mails written as .eml files to {} (their links point at {portal_url})",
            delivered.0,
            delivered.1,
            mail_dir.display()
        );
        match args.serve {
            Some(port) => {
                let console = Console {
                    rules: &rules,
                    local_gov_code: &town_code,
                    day: last,
                };
                serve_demo_portal(&store, port, worker.metrics.clone(), console).await?
            }
            None => out!(
                "the portal:        oshirase demo --serve  (replays again, then serves {portal_url} with sign-in links)"
            ),
        }
        Ok(if failures == 0 {
            exit::OK
        } else {
            exit::RULE_RUNTIME
        })
    })
}

/// What the demo's staff console is made of.
struct Console<'a> {
    rules: &'a oshirase_engine::RuleSet,
    local_gov_code: &'a str,
    day: NaiveDate,
}

/// A random secret for the demo's own identity providers.
fn demo_secret() -> anyhow::Result<String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness for the demo's signing secret: {e}"))?;
    Ok(secret.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serves the staff console beside the demo portal (on the port ten below it), printing
/// sign-in links for three staff members: the counter, a department, an administrator.
async fn serve_demo_console(
    store: &Store,
    port: u16,
    console: Console<'_>,
    rx: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let port = port.checked_sub(10).unwrap_or(port.saturating_add(10));
    let url = format!("http://127.0.0.1:{port}");
    let defaults = PortalConfig::default();
    let config = oshirase_portal::ConsoleConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        public_url: url.clone(),
        jwt: oshirase_portal::JwtConfig {
            issuer: "oshirase-demo-staff".into(),
            audience: None,
            key: oshirase_portal::JwtKey::Hs256(oshirase_portal::Secret::new(demo_secret()?)),
            ..defaults.jwt
        },
        session: defaults.session,
        local_gov_code: console.local_gov_code.to_owned(),
        departments: crate::config::departments(console.rules, console.day),
        rule_departments: crate::config::rule_departments(console.rules),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    out!(
        "
staff console: {url}/office/  (the work queue; sign in as:)"
    );
    for (who, roles, dept) in [
        ("madoguchi-demo", "窓口", None),
        ("kosodate-demo", "担当課", Some("kosodate")),
        ("kanri-demo", "管理者", None),
    ] {
        let token = oshirase_portal::mint_staff_token(
            &config,
            who,
            &[roles],
            dept,
            clock.now(),
            Duration::from_secs(8 * 3600),
        )
        .context("signing a demo staff token")?;
        let what = dept.map_or_else(|| roles.to_owned(), |d| format!("{roles} {d}"));
        out!("  {what:<14} {url}/office/login#token={token}");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let state = oshirase_portal::ConsoleState::new(store.clone(), config, clock)
        .map_err(|e| anyhow::anyhow!("the demo console: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = oshirase_portal::serve_console(listener, state, rx).await {
            tracing::error!(error = %e, "the demo console stopped");
        }
    });
    Ok(())
}

/// Serves the portal over the demo database until Ctrl-C, printing sign-in links for a few
/// residents who have notices, and the staff console beside it.
async fn serve_demo_portal(
    store: &Store,
    port: u16,
    metrics: Arc<DeliveryMetrics>,
    console: Console<'_>,
) -> anyhow::Result<()> {
    let secret = demo_secret()?;
    let url = format!("http://127.0.0.1:{port}");
    // The agencies' API twenty above the portal, and the example party thirty above.
    let [api_addr, party_addr] =
        [20, 30].map(|d| std::net::SocketAddr::from(([127, 0, 0, 1], port.saturating_add(d))));
    let config = PortalConfig::with_hs256_secret(secret)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .public_url(url.clone())
        .issuer("oshirase-demo")
        .share_issuer(format!("http://{api_addr}"));
    let mut readers: Vec<String> = store
        .outbox_rows(None)
        .await?
        .into_iter()
        .filter(|r| r.channel == "portal")
        .map(|r| r.recipient)
        .collect();
    readers.sort();
    readers.dedup();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    out!(
        "
portal: {url}  (Ctrl-C stops it)
sign in as:"
    );
    out!("  (each resident's 情報の提供記録, what agencies were told or pulled: {url}/records)");
    for reader in readers.iter().take(5) {
        let token = oshirase_portal::mint_token(
            &config,
            reader,
            clock.now(),
            Duration::from_secs(8 * 3600),
        )
        .context("signing a demo token")?;
        out!("  {reader:<8} {url}/login#token={token}");
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))
    };
    let (api, app) = (bind(api_addr).await?, bind(party_addr).await?);
    let party_url = party::start(store, &url, api, app, rx.clone()).await?;
    out!("\nexample party (年末調整): {party_url}/  (sign in as a resident above first, then open it)");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    serve_demo_console(store, port, console, rx.clone()).await?;
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    oshirase_portal::serve(listener, store.clone(), config, clock, metrics, rx)
        .await
        .context("the demo portal")
}

async fn summary(
    store: &Store,
    args: &DemoArgs,
    changes: usize,
    failures: usize,
    started: Instant,
) -> anyhow::Result<()> {
    let last = calendar::add_days(args.from, i64::from(args.days) - 1);
    let decisions = store.decisions().await?;
    let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &decisions {
        *per_rule.entry(d.rule.as_str()).or_default() += 1;
    }
    out!(
        "replayed {} days ({} to {last}): {changes} register changes, {} notices decided, {failures} rule errors, in {:.1} s\n",
        args.days,
        args.from,
        decisions.len(),
        started.elapsed().as_secs_f64()
    );
    out!("notices per rule:");
    for (rule, n) in &per_rule {
        out!("  {n:>5}  {rule}");
    }
    out!("\noutbox rows per channel:");
    for (channel, n) in store.outbox_by_channel().await? {
        out!("  {n:>5}  {channel}");
    }
    out!("\nexamples:");
    for body in store.sample_bodies(3).await? {
        out!(
            "  [{}] {} → {}\n    {}",
            body["notify_on"].as_str().unwrap_or_default(),
            body["rule"].as_str().unwrap_or_default(),
            body["recipients"]
                .as_array()
                .map(|r| r
                    .iter()
                    .filter_map(|x| x["id"].as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            body["message"]["ja"].as_str().unwrap_or_default()
        );
    }
    out!(
        "\nwhere to look next:\n  the database:      {db} (sqlite3 {db} 'SELECT rule, count(*) FROM decisions GROUP BY rule')\n  one decision:      oshirase explain{snap} --resident <ID> --rule <RULE> --date <DAY>\n  a dry run:         oshirase simulate{snap} --from {from} --to {last}\n  the rules:         rules/README.md",
        db = args.db.display(),
        snap = args
            .snapshot
            .as_ref()
            .map_or_else(String::new, |f| format!(" --snapshot {}", f.display())),
        from = args.from,
    );
    Ok(())
}
