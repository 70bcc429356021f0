//! The persistent commands: `ingest`, `run` and `demo`. Wiring only: the work is in the
//! engine's store, ingest and scheduler modules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime};
use oshirase_adapters::{EmailChannel, EmailConfig, PortalInbox};
use oshirase_engine::calendar;
use oshirase_engine::clock::{in_tokyo, Clock, FixedClock, SystemClock};
use oshirase_portal::PortalConfig;
use oshirase_service::ingest::{ingest, IngestError};
use oshirase_service::outbox::{drain, Policy};
use oshirase_service::scheduler::Scheduler;
use oshirase_store::Store;

use crate::{exit, load_rules};

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DB: &str = "oshirase.sqlite";

#[derive(clap::Args)]
pub struct DbArg {
    /// Database: a SQLite file path or sqlite:// URL (default), or a postgres:// URL.
    #[arg(long, env = "OSHIRASE_DATABASE_URL", default_value = DEFAULT_DB, hide_env_values = true)]
    pub db: String,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// A snapshot or a change feed (JSON Lines; the header line says which).
    pub file: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Apply the valid lines of a change feed and write the invalid ones to --rejects.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Where --skip-invalid writes rejected lines (default FILE.rejected.jsonl).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[arg(long, default_value = "rules", env = "OSHIRASE_RULES")]
    pub rules: PathBuf,
    /// Local time (Asia/Tokyo) of the daily run.
    #[arg(long, default_value = "06:00")]
    pub at: NaiveTime,
    /// First day to evaluate when the database has none yet (default: today).
    #[arg(long)]
    pub start: Option<NaiveDate>,
    /// Evaluate every day up to this one, then exit (instead of running as a service).
    #[arg(long)]
    pub until: Option<NaiveDate>,
    /// The service's configuration (portal, e-mail, web push, workers): see
    /// config/oshirase.example.yaml. Without it only the portal inbox is delivered.
    #[arg(long, env = "OSHIRASE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The demo database (recreated on each run).
    #[arg(long, default_value = "oshirase-demo.sqlite")]
    pub db: PathBuf,
    #[arg(long, default_value = "rules", env = "OSHIRASE_RULES")]
    pub rules: PathBuf,
    /// The town snapshot and its change feed.
    #[arg(long, default_value = "fixtures/town.jsonl")]
    pub snapshot: PathBuf,
    #[arg(long, default_value = "fixtures/town-changes.jsonl")]
    pub changes: PathBuf,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_ingest(file: &Path, r: &oshirase_service::ingest::IngestReport) {
    match r.outcome.batch_id {
        None => println!("{}: already ingested; nothing changed", file.display()),
        Some(id) => println!(
            "{}: {} {} rows, {} residents changed, {} new life events (batch {id}){}",
            file.display(),
            r.kind,
            r.rows_in,
            r.outcome.rows_changed,
            r.outcome.events,
            if r.already_applied > 0 {
                format!(", {} lines applied before", r.already_applied)
            } else {
                String::new()
            }
        ),
    }
}

pub fn ingest_cmd(args: IngestArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let source = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    runtime()?.block_on(async {
        let store = Store::open(&args.db.db).await?;
        match ingest(&store, &source, &text, args.skip_invalid, SystemClock.now()).await {
            Ok(report) => {
                print_ingest(&args.file, &report);
                if report.rejected.is_empty() {
                    return Ok(exit::OK);
                }
                let path = args
                    .rejects
                    .clone()
                    .unwrap_or_else(|| args.file.with_extension("rejected.jsonl"));
                let lines: Vec<&str> = text.lines().collect();
                // The header first, so the file can be corrected and ingested as a feed of its
                // own (its own name is its own feed position).
                let mut out = lines.first().map(|h| format!("{h}\n")).unwrap_or_default();
                for e in &report.rejected {
                    eprintln!("rejected {e}");
                    if let Some(l) = e.line.checked_sub(1).and_then(|i| lines.get(i)) {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
                std::fs::write(&path, out)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "{} rejected line(s) written to {}",
                    report.rejected.len(),
                    path.display()
                );
                Ok(exit::INPUT)
            }
            Err(IngestError::Invalid(e)) => {
                eprintln!("{e}");
                eprintln!("nothing was applied");
                Ok(exit::INPUT)
            }
            Err(IngestError::Store(e)) => Err(e.into()),
        }
    })
}

pub fn run_cmd(args: RunArgs) -> anyhow::Result<u8> {
    let rules = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let config = match &args.config {
        Some(path) => crate::config::load(path)?,
        None => crate::config::ServiceConfig::default(),
    };
    // Checked before anything starts.
    let portal_policy = config.policy("portal")?;
    let email_policy = config.policy("email")?;
    let webpush_policy = config.policy("webpush")?;
    runtime()?.block_on(async {
        let store = Store::open(&args.db.db).await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut scheduler = Scheduler::new(store.clone(), Arc::new(rules), clock.clone());
        scheduler.tick = args.at;
        scheduler.start = args.start;
        if let Some(until) = args.until {
            let mut failures = 0;
            scheduler
                .catch_up(until, |r| {
                    failures += r.failures.len();
                    println!("{}: {} decisions ({} new)", r.day, r.decisions, r.inserted);
                })
                .await?;
            return Ok(if failures == 0 {
                exit::OK
            } else {
                exit::RULE_RUNTIME
            });
        }
        // Everything is checked before anything starts: a bad setting stops the service
        // with its name, not a worker later.
        let webpush = config.webpush()?;
        let portal = config.portal(webpush.as_ref().map(|w| w.vapid.public_key.clone()))?;
        let email = config.email()?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        let mut tasks: Vec<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();
        let ctx = Workers {
            store: store.clone(),
            clock: clock.clone(),
            config: &config,
            shutdown: rx.clone(),
        };
        let portal_inbox = Arc::new(oshirase_adapters::PortalInbox);
        tasks.extend(ctx.spawn(portal_inbox, portal_policy).await);
        match email {
            Some((email_config, transport)) => {
                let channel = match transport {
                    crate::config::EmailTransport::Smtp(smtp) => {
                        oshirase_adapters::EmailChannel::smtp(
                            email_config,
                            &smtp,
                            store.clone(),
                            clock.clone(),
                        )
                    }
                    crate::config::EmailTransport::Dir(dir) => {
                        oshirase_adapters::EmailChannel::to_dir(
                            email_config,
                            dir,
                            store.clone(),
                            clock.clone(),
                        )
                    }
                }
                .map_err(|e| anyhow::anyhow!("email: {e}"))?;
                tasks.extend(ctx.spawn(Arc::new(channel), email_policy).await);
            }
            None => tracing::warn!(
                "no email section in the configuration: e-mail notices wait in the outbox"
            ),
        }
        match webpush {
            Some(w) => {
                let channel = oshirase_adapters::WebPushChannel::new(store.clone(), w)
                    .map_err(|e| anyhow::anyhow!("webpush: {e}"))?
                    .with_clock(clock.clone());
                tasks.extend(ctx.spawn(Arc::new(channel), webpush_policy).await);
            }
            None => tracing::warn!(
                "no webpush section in the configuration: push notices wait in the outbox"
            ),
        }
        if let Some(portal) = portal {
            let listener = tokio::net::TcpListener::bind(portal.listen)
                .await
                .with_context(|| format!("portal: cannot listen on {}", portal.listen))?;
            println!("portal: {}", portal.public_url);
            let (store, clock, rx) = (store.clone(), clock.clone(), rx.clone());
            tasks.push((
                "portal".into(),
                tokio::spawn(async move {
                    oshirase_portal::serve(listener, store, portal, clock, rx)
                        .await
                        .context("portal")
                }),
            ));
        }
        scheduler.run(rx).await?;
        for (name, task) in tasks {
            task.await
                .with_context(|| format!("{name} stopped"))?
                .with_context(|| format!("{name} stopped"))?;
        }
        Ok(exit::OK)
    })
}

/// What every outbox worker of the service shares.
struct Workers<'a> {
    store: Store,
    clock: Arc<dyn Clock>,
    config: &'a crate::config::ServiceConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Workers<'_> {
    /// Starts the configured number of workers for `channel`; each drains once more after
    /// the shutdown signal, so work claimed before it is settled. A transport that cannot be
    /// reached now is reported, not fatal: its rows wait and are retried.
    async fn spawn<C: oshirase_service::outbox::Channel + 'static>(
        &self,
        channel: Arc<C>,
        policy: oshirase_service::outbox::Policy,
    ) -> Vec<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
        if let Err(e) = channel.health().await {
            tracing::warn!(channel = channel.name(), error = %e, "the channel is not healthy");
            eprintln!("warning: {}: {e}", channel.name());
        }
        (0..self.config.workers(channel.name()))
            .map(|i| {
                let name = format!("{}-{}-{i}", channel.name(), std::process::id());
                let (store, clock, rx) = (
                    self.store.clone(),
                    self.clock.clone(),
                    self.shutdown.clone(),
                );
                let policy = policy.clone();
                let channel = channel.clone();
                let worker = name.clone();
                let task = tokio::spawn(async move {
                    oshirase_service::outbox::work(
                        &store,
                        channel.as_ref(),
                        &worker,
                        clock.as_ref(),
                        &policy,
                        Duration::from_secs(5),
                        rx,
                    )
                    .await?;
                    Ok(())
                });
                (name, task)
            })
            .collect()
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
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

pub fn demo_cmd(args: DemoArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let rules = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let snapshot = std::fs::read_to_string(&args.snapshot)
        .with_context(|| format!("cannot read {}", args.snapshot.display()))?;
    let changes = std::fs::read_to_string(&args.changes)
        .with_context(|| format!("cannot read {}", args.changes.display()))?;
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
        let store = Store::open(&args.db.display().to_string()).await?;
        let clock = Arc::new(FixedClock::at_noon(args.from));
        let r = ingest(&store, "town.jsonl", &snapshot, false, clock.now())
            .await
            .with_context(|| format!("the demo snapshot {}", args.snapshot.display()))?;
        println!(
            "ingested {}: {} residents",
            args.snapshot.display(),
            r.rows_in
        );
        let mut scheduler = Scheduler::new(store.clone(), Arc::new(rules), clock.clone());
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
            }
            let pop = scheduler.register().await?;
            failures += scheduler.run_day(pop, day).await?.failures.len();
            deliver_demo_day(&store, &email, clock.as_ref(), &mut delivered).await?;
            day = calendar::add_days(day, 1);
        }
        summary(&store, &args, changes_applied, failures, started).await?;
        println!(
            "\ndelivered: {} to portal inboxes, {} e-mails written as .eml files to {} (their links point at {portal_url})",
            delivered.0,
            delivered.1,
            mail_dir.display()
        );
        match args.serve {
            Some(port) => serve_demo_portal(&store, port).await?,
            None => println!(
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

/// The demo's delivery: the outbox workers drain the portal inbox and e-mail (as .eml files).
/// Quiet hours and the daily cap apply as in the service (the demo day's clock is 06:00).
async fn deliver_demo_day(
    store: &Store,
    email: &EmailChannel,
    clock: &dyn Clock,
    delivered: &mut (usize, usize),
) -> anyhow::Result<()> {
    let policy = Policy::default();
    delivered.0 += drain(store, &PortalInbox, "demo", clock, &policy)
        .await?
        .delivered;
    delivered.1 += drain(store, email, "demo", clock, &policy).await?.delivered;
    Ok(())
}

/// Serves the portal over the demo database until Ctrl-C, printing sign-in links for a few
/// residents who have notices.
async fn serve_demo_portal(store: &Store, port: u16) -> anyhow::Result<()> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness for the demo's signing secret: {e}"))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let url = format!("http://127.0.0.1:{port}");
    let config = PortalConfig::with_hs256_secret(secret)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .public_url(url.clone())
        .issuer("oshirase-demo");
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
    println!(
        "
portal: {url}  (Ctrl-C stops it)
sign in as:"
    );
    for reader in readers.iter().take(5) {
        let token = oshirase_portal::mint_token(
            &config,
            reader,
            clock.now(),
            Duration::from_secs(8 * 3600),
        )
        .context("signing a demo token")?;
        println!("  {reader:<8} {url}/login?token={token}");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    oshirase_portal::serve(listener, store.clone(), config, clock, rx)
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
    println!(
        "replayed {} days ({} to {last}): {changes} register changes, {} notices decided, {failures} rule errors, in {:.1} s\n",
        args.days,
        args.from,
        decisions.len(),
        started.elapsed().as_secs_f64()
    );
    println!("notices per rule:");
    for (rule, n) in &per_rule {
        println!("  {n:>5}  {rule}");
    }
    println!("\noutbox rows per channel:");
    for (channel, n) in store.outbox_by_channel().await? {
        println!("  {n:>5}  {channel}");
    }
    println!("\nexamples:");
    for body in store.sample_bodies(3).await? {
        println!(
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
    println!(
        "\nwhere to look next:\n  the database:      {db} (sqlite3 {db} 'SELECT rule, count(*) FROM decisions GROUP BY rule')\n  one decision:      oshirase explain --snapshot {snap} --resident <ID> --rule <RULE> --date <DAY>\n  a dry run:         oshirase simulate --snapshot {snap} --from {from} --to {last}\n  the rules:         rules/README.md",
        db = args.db.display(),
        snap = args.snapshot.display(),
        from = args.from,
    );
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// List outbox rows (all, or one state: pending, delivered, dead, gone).
    List {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        state: Option<String>,
    },
    /// Put dead letters back in the queue: the given ids, or every dead letter.
    Retry {
        #[command(flatten)]
        db: DbArg,
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

pub fn outbox_cmd(cmd: OutboxCommand) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        match cmd {
            OutboxCommand::List { db, state } => {
                let store = Store::open(&db.db).await?;
                let rows = store.outbox_rows(state.as_deref()).await?;
                println!(
                    "{:>8}  {:<9}  {:<8}  {:<10}  {:>8}  {:<24}  key / last error",
                    "id", "state", "channel", "recipient", "attempts", "next attempt (UTC)"
                );
                for r in &rows {
                    println!(
                        "{:>8}  {:<9}  {:<8}  {:<10}  {:>8}  {:<24}  {}{}",
                        r.id,
                        r.state,
                        r.channel,
                        r.recipient,
                        r.attempts,
                        r.next_attempt_at,
                        r.decision_key,
                        r.last_error
                            .as_deref()
                            .map(|e| format!(" / {e}"))
                            .unwrap_or_default()
                    );
                }
                eprintln!("{} row(s)", rows.len());
                Ok(exit::OK)
            }
            OutboxCommand::Retry { db, ids } => {
                let store = Store::open(&db.db).await?;
                let n = store.retry_outbox(&ids, SystemClock.now()).await?;
                println!("{n} row(s) queued again");
                Ok(if n == 0 && !ids.is_empty() {
                    exit::INPUT
                } else {
                    exit::OK
                })
            }
        }
    })
}
