//! `oshirase run`: the service. The scheduler, the outbox workers of each configured channel
//! and the portal in one process, stopped together by SIGINT/SIGTERM, or when a worker gives
//! up on the store (exit code 5).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime};
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_service::metrics::DeliveryMetrics;
use oshirase_service::outbox::{Channel, Policy, Worker};
use oshirase_service::scheduler::Scheduler;
use oshirase_store::Store;

use crate::common::{exit, runtime, shutdown_signal, CatalogueArgs, DbArg};
use crate::config::{EmailTransport, ServiceConfig};

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub catalogue: CatalogueArgs,
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

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let rules = match args.catalogue.load() {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let config = match &args.config {
        Some(path) => crate::config::load(path)?,
        None => ServiceConfig::default(),
    };
    // One process serves one municipality: the catalogue's and the configuration's agree.
    if let Some(code) = &args.catalogue.municipality {
        for (field, configured) in config.municipalities() {
            anyhow::ensure!(
                configured == code,
                "{field} is {configured}, but --municipality is {code}: one process serves one municipality"
            );
        }
    }
    // Checked before anything starts.
    let portal_policy = config.policy("portal")?;
    let email_policy = config.policy("email")?;
    let webpush_policy = config.policy("webpush")?;
    let exchange = match crate::common::load_exchange(args.catalogue.rules.as_deref()) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let agencies = config.exchange()?;
    // A core system's procedures must be the catalogue's.
    for (id, procedures) in agencies.iter().flat_map(|a| &a.office_clients) {
        if let Some(missing) = procedures.iter().find(|r| rules.get(r).is_none()) {
            anyhow::bail!(
                "exchange.agencies ({id}).office_rules: {missing} is not a rule of the catalogue"
            );
        }
    }
    let console = config.console(&rules, SystemClock.today())?;
    runtime()?.block_on(async {
        let store = Store::open(&args.db.db).await?.with_exchange(exchange.clone());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut scheduler = Scheduler::new(store.clone(), Arc::new(rules), clock.clone());
        scheduler.tick = args.at;
        // A day rides out store errors as the workers do (`delivery.store_errors`).
        scheduler.store_retry = portal_policy.store_retry;
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
        let stop = Arc::new(tx);
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                stop.send_replace(true);
            }
        });
        // A worker that gives up on the store says so here: the service stops.
        let (gave_up, mut gave_up_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut tasks: Vec<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();
        // One set of delivery counters: every worker counts into it, the portal shows it.
        let metrics = Arc::new(DeliveryMetrics::default());
        let ctx = Workers {
            store: store.clone(),
            clock: clock.clone(),
            config: &config,
            metrics: metrics.clone(),
            shutdown: rx.clone(),
            gave_up,
        };
        let portal_inbox = Arc::new(oshirase_adapters::PortalInbox);
        tasks.extend(ctx.spawn(portal_inbox, portal_policy).await);
        match email {
            Some((email_config, transport)) => {
                let channel = match transport {
                    EmailTransport::Smtp(smtp) => oshirase_adapters::EmailChannel::smtp(
                        email_config,
                        &smtp,
                        store.clone(),
                        clock.clone(),
                    ),
                    EmailTransport::Dir(dir) => oshirase_adapters::EmailChannel::to_dir(
                        email_config,
                        dir,
                        store.clone(),
                        clock.clone(),
                    ),
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
                    oshirase_portal::serve(listener, store, portal, clock, metrics, rx)
                        .await
                        .context("portal")
                }),
            ));
        }
        if let Some(console) = console {
            let listener = tokio::net::TcpListener::bind(console.listen)
                .await
                .with_context(|| format!("console: cannot listen on {}", console.listen))?;
            println!("staff console: {}/office/", console.public_url);
            let state = oshirase_portal::ConsoleState::new(store.clone(), console, clock.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let rx = rx.clone();
            tasks.push((
                "console".into(),
                tokio::spawn(async move {
                    oshirase_portal::serve_console(listener, state, rx)
                        .await
                        .context("console")
                }),
            ));
        }
        if let Some(settings) = agencies {
            tasks.extend(start_exchange(settings, &store, &exchange, &clock, &rx).await?);
        }
        drop(ctx);
        let scheduled = scheduler.run(rx);
        tokio::pin!(scheduled);
        let scheduled = tokio::select! {
            r = &mut scheduled => r,
            Some(worker) = gave_up_rx.recv() => {
                tracing::error!(worker, "a delivery worker gave up on the database: the service stops");
                stop.send_replace(true);
                scheduled.await
            }
        };
        scheduled?;
        // Everything stops now (after SIGTERM the signal is already sent); the first failure
        // is the service's.
        stop.send_replace(true);
        let mut failure = None;
        for (name, task) in tasks {
            let result = match task.await {
                Ok(r) => r.with_context(|| format!("{name} stopped")),
                Err(e) => Err(anyhow::Error::new(e).context(format!("{name} stopped"))),
            };
            if let Err(e) = result {
                failure.get_or_insert(e);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(exit::OK),
        }
    })
}

type Task = (String, tokio::task::JoinHandle<anyhow::Result<()>>);

/// Registers the configured agencies (verifying their endpoints), then starts the agencies'
/// API, the delivery of their events and the archiving of events past their retention.
async fn start_exchange(
    settings: crate::config::ExchangeSettings,
    store: &Store,
    exchange: &Arc<oshirase_engine::purposes::Exchange>,
    clock: &Arc<dyn Clock>,
    rx: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Task>> {
    use oshirase_exchange::register::{register, register_office_client, Verification};
    let sender = Arc::new(oshirase_adapters::webhook::WebhookSender::new(
        settings.webhook_keys,
        Duration::from_secs(10),
    ));
    let source = oshirase_exchange::cloudevent::source(&settings.local_gov_code);
    for spec in &settings.agencies {
        if let Some(rules) = settings.office_clients.get(&spec.id) {
            register_office_client(store, exchange, spec, rules, clock.now()).await?;
            continue;
        }
        match register(store, exchange, &sender, spec, &source, clock.now()).await? {
            Verification::Verified | Verification::NoEndpoint => {}
            Verification::Failed(why) => {
                tracing::warn!(agency = %spec.id, %why, "the agency's endpoint did not answer the handshake: its events wait");
                eprintln!(
                    "warning: agency {}: {why}; its events wait until `oshirase agency verify {}`",
                    spec.id, spec.id
                );
            }
        }
    }
    for (i, party) in settings.parties.iter().enumerate() {
        let problems = oshirase_exchange::share::check_party(party, exchange);
        anyhow::ensure!(
            problems.is_empty(),
            "exchange.parties[{i}] ({}): {}",
            party.id,
            problems.join("; ")
        );
        store.upsert_party(party, clock.now()).await?;
    }
    let metrics = Arc::new(oshirase_exchange::ExchangeMetrics::default());
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("exchange: cannot listen on {}", settings.listen))?;
    println!("agency API: {}", settings.api.public_url);
    let keys = Arc::new(settings.keys);
    let pusher = oshirase_exchange::share::RevocationPusher {
        store: store.clone(),
        keys: keys.clone(),
        issuer: settings.api.public_url.clone(),
        sender: sender.clone(),
        clock: clock.clone(),
    };
    let pusher_rx = rx.clone();
    let state = oshirase_exchange::ApiState {
        store: store.clone(),
        exchange: exchange.clone(),
        keys,
        clock: clock.clone(),
        metrics: metrics.clone(),
        config: settings.api,
    };
    let mut tasks: Vec<Task> = Vec::new();
    let api_rx = rx.clone();
    tasks.push((
        "agency API".into(),
        tokio::spawn(async move {
            oshirase_exchange::serve(listener, state, api_rx)
                .await
                .context("agency API")
        }),
    ));
    tasks.push((
        "revocation pushes".into(),
        tokio::spawn(async move {
            pusher.run(pusher_rx).await;
            Ok(())
        }),
    ));
    let deliverer = oshirase_exchange::Deliverer {
        name: format!("agency-{}", std::process::id()),
        store: store.clone(),
        sender,
        clock: clock.clone(),
        policy: settings.delivery,
        metrics,
        local_gov_code: settings.local_gov_code,
    };
    let delivery_rx = rx.clone();
    tasks.push((
        "agency delivery".into(),
        tokio::spawn(async move {
            deliverer.work(delivery_rx).await;
            Ok(())
        }),
    ));
    let (archive_store, archive_clock, mut archive_rx) = (store.clone(), clock.clone(), rx.clone());
    let retention = settings.retention;
    tasks.push((
        "agency event archive".into(),
        tokio::spawn(async move {
            loop {
                let cutoff = oshirase_engine::clock::before(archive_clock.now(), retention);
                if let Err(e) = archive_store.archive_agency_events(cutoff).await {
                    tracing::warn!(error = %e, "archiving agency events failed; retried in an hour");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = archive_rx.changed() => return Ok(()),
                }
            }
        }),
    ));
    Ok(tasks)
}

/// What every outbox worker of the service shares.
struct Workers<'a> {
    store: Store,
    clock: Arc<dyn Clock>,
    config: &'a ServiceConfig,
    metrics: Arc<DeliveryMetrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Where a worker that gave up on the store sends its name.
    gave_up: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Workers<'_> {
    /// Starts the configured number of workers for `channel`; each drains once more after
    /// the shutdown signal, so work claimed before it is settled. A transport that cannot be
    /// reached now is reported, not fatal: its rows wait and are retried. Store errors are
    /// retried by the worker; one that gives up stops the service.
    async fn spawn<C: Channel + 'static>(
        &self,
        channel: Arc<C>,
        policy: Policy,
    ) -> Vec<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
        if let Err(e) = channel.health().await {
            tracing::warn!(channel = channel.name(), error = %e, "the channel is not healthy");
            eprintln!("warning: {}: {e}", channel.name());
        }
        (0..self.config.workers(channel.name()))
            .map(|i| {
                let name = format!("{}-{}-{i}", channel.name(), std::process::id());
                let worker = Worker::new(
                    &name,
                    self.store.clone(),
                    self.clock.clone(),
                    policy.clone(),
                )
                .with_metrics(self.metrics.clone());
                let (channel, rx) = (channel.clone(), self.shutdown.clone());
                let gave_up = self.gave_up.clone();
                let task = tokio::spawn(async move {
                    let result = worker
                        .work(channel.as_ref(), Duration::from_secs(5), rx)
                        .await;
                    if result.is_err() {
                        let _ = gave_up.send(worker.name.clone());
                    }
                    result?;
                    Ok(())
                });
                (name, task)
            })
            .collect()
    }
}
