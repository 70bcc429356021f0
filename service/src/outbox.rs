//! Outbox workers: claim due rows with a lease, hand each to its channel, record the attempt,
//! and settle it as soon as it ends: delivered, retried later with exponential backoff and
//! jitter (until the grace period after the procedure's deadline ends), or dead-lettered with
//! the reason. `drain` works until nothing is due, so tests run it without sleeping; `work`
//! loops over it, riding out store errors with backoff until it gives up. Channels live in the
//! adapters; the contract is `Channel` (docs/channels.md).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};
use futures_util::StreamExt;

use oshirase_engine::calendar;
use oshirase_engine::clock::{self, in_tokyo, jst, Clock};
use oshirase_engine::resident::Channel as ResidentChannel;
use oshirase_store::{OutboxItem, Settle, Store, StoreError};

use crate::metrics::DeliveryMetrics;

/// What one send did. Every channel returns one of these; nothing else escapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// A transient failure; `after` is the channel's own hint (e.g. Retry-After).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The message can never be delivered as it is.
    Permanent {
        reason: String,
    },
    /// The address or subscription no longer exists.
    Gone {
        reason: String,
    },
}

/// Why a channel cannot deliver now: what an operator reads, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

/// A delivery channel.
pub trait Channel: Send + Sync {
    /// The outbox `channel` value this channel serves (`email`, `webpush`, `portal`, …).
    fn name(&self) -> &'static str;
    fn send(&self, item: &OutboxItem) -> impl Future<Output = Delivery> + Send;
    /// Whether the transport can be reached now (for `/health` and start-up checks); the
    /// error says what is wrong, without secrets.
    fn health(&self) -> impl Future<Output = Result<(), Unhealthy>> + Send {
        async { Ok(()) }
    }
}

/// Retry, lease and gate settings.
#[derive(Debug, Clone)]
pub struct Policy {
    /// First retry delay; doubled for each attempt.
    pub base: Duration,
    pub max_backoff: Duration,
    /// Attempts after which a row is a dead letter.
    pub max_attempts: i64,
    /// How long a claimed row belongs to its worker. A worker that makes no progress for
    /// longer is reported stuck (its rows may go to another worker).
    pub lease: Duration,
    /// Rows claimed at once.
    pub batch: i64,
    /// Sends in flight at once per worker.
    pub concurrency: usize,
    /// Days after a procedure's deadline during which its notice is still sent and retried
    /// (a late notice still tells the resident what holds); after them it is a dead letter.
    pub late_grace_days: u32,
    /// How `work` rides out store errors.
    pub store_retry: StoreRetry,
    pub gate: Gate,
}

/// How a worker rides out store errors (a full disk, a lock held past the busy timeout): it
/// waits `first`, doubled after each consecutive failure up to `max`, and tries again; after
/// `give_up_after` consecutive failures `work` returns the error (the service then stops with
/// the database's exit code, 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRetry {
    pub first: Duration,
    pub max: Duration,
    pub give_up_after: u32,
}

impl Default for StoreRetry {
    /// 1 s, 2 s, 4 s … up to a minute; giving up after 10 failures in a row, about four
    /// minutes after the first.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            give_up_after: 10,
        }
    }
}

impl StoreRetry {
    /// The wait after the `failures`th consecutive failure.
    pub fn wait(&self, failures: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.max.max(self.first))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            max_backoff: Duration::from_secs(6 * 3600),
            max_attempts: 10,
            lease: Duration::from_secs(300),
            batch: 100,
            concurrency: 8,
            late_grace_days: 14,
            store_retry: StoreRetry::default(),
            gate: Gate::default(),
        }
    }
}

/// The delay before attempt `attempts + 1`: base × 2^attempts, capped, with ±20% jitter
/// derived from the row id (stable for a row, spread across rows).
pub fn backoff(policy: &Policy, attempts: i64, id: i64) -> Duration {
    backoff_delay(policy.base, policy.max_backoff, attempts, id as u64)
}

/// base × 2^attempts, capped at `max`, with ±20% jitter from `seed`: the same for one retried
/// thing, spread across things that fail together (outbox rows, agency streams).
pub fn backoff_delay(base: Duration, max: Duration, attempts: i64, seed: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.clamp(0, 20));
    let capped = exp.min(max);
    let h = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1023
    let factor = 0.8 + 0.4 * (h as f64 / 1023.0);
    capped.mul_f64(factor)
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
    pub gone: usize,
    /// Held for later (quiet hours, the daily cap); not attempts.
    pub deferred: usize,
    /// Not sent: the recipient no longer accepts the channel.
    pub muted: usize,
    /// Notices re-queued on the fallback channel.
    pub fallbacks: usize,
    /// Rows whose lease another worker took over before this one settled them.
    pub lost: usize,
}

impl DrainReport {
    fn count(&mut self, s: &Settle) {
        match s {
            Settle::Delivered => self.delivered += 1,
            Settle::RetryAt { .. } => self.retried += 1,
            Settle::Dead { .. } => self.dead += 1,
            Settle::Gone { .. } => self.gone += 1,
            Settle::Deferred { .. } => self.deferred += 1,
            Settle::Muted { .. } => self.muted += 1,
        }
    }

    pub fn plus(self, o: Self) -> Self {
        Self {
            delivered: self.delivered + o.delivered,
            retried: self.retried + o.retried,
            dead: self.dead + o.dead,
            gone: self.gone + o.gone,
            deferred: self.deferred + o.deferred,
            muted: self.muted + o.muted,
            fallbacks: self.fallbacks + o.fallbacks,
            lost: self.lost + o.lost,
        }
    }
}

/// The last day (Asia/Tokyo) a notice may go out: its procedure's deadline plus the grace
/// period. A notice without a deadline has none.
pub fn last_day(policy: &Policy, item: &OutboxItem) -> Option<NaiveDate> {
    item.deadline
        .map(|d| calendar::add_days(d, i64::from(policy.late_grace_days)))
}

/// A row due after its last day: a dead letter, not sent, whatever the channel would say.
/// The portal inbox is exempt: it sends nothing, the notice is there for its readers anyway
/// and its row only marks it delivered.
fn expired(policy: &Policy, item: &OutboxItem, now: DateTime<FixedOffset>) -> Option<Settle> {
    if item.channel == "portal" {
        return None;
    }
    let (deadline, last) = (item.deadline?, last_day(policy, item)?);
    (now.with_timezone(&jst()).date_naive() > last).then(|| Settle::Dead {
        reason: format!(
            "not sent: the deadline {deadline} passed more than {} days ago (the last day to send was {last})",
            policy.late_grace_days
        ),
    })
}

/// Decides how to settle an attempt.
pub fn settle(
    policy: &Policy,
    item: &OutboxItem,
    delivery: Delivery,
    now: DateTime<FixedOffset>,
) -> Settle {
    match delivery {
        Delivery::Delivered => Settle::Delivered,
        Delivery::Permanent { reason } => Settle::Dead { reason },
        Delivery::Gone { reason } => Settle::Gone { reason },
        Delivery::Retry { after, reason } => {
            let attempts = item.attempts + 1;
            if attempts >= policy.max_attempts {
                return Settle::Dead {
                    reason: format!("gave up after {attempts} attempts: {reason}"),
                };
            }
            let wait = after.unwrap_or_else(|| backoff(policy, item.attempts, item.id));
            let at = clock::after(now, wait);
            // A late notice still tells the resident what holds, so it is retried past the
            // deadline, but not beyond the grace period.
            if let (Some(deadline), Some(last)) = (item.deadline, last_day(policy, item)) {
                if at.with_timezone(&jst()).date_naive() > last {
                    return Settle::Dead {
                        reason: format!(
                            "gave up: the next attempt would fall after {last}, {} days past the deadline {deadline}: {reason}",
                            policy.late_grace_days
                        ),
                    };
                }
            }
            Settle::RetryAt { at, reason }
        }
    }
}

/// Hours in Asia/Tokyo when a channel holds its messages, e.g. 21:00–08:00 for push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// When a message held at `now` may go: `None` if `now` is outside the quiet hours.
    pub fn release(&self, now: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let local = now.with_timezone(&jst());
        let t = local.time();
        let day = local.date_naive();
        let at = |d: NaiveDate| in_tokyo(d, self.end);
        if self.start <= self.end {
            (t >= self.start && t < self.end).then(|| at(day))
        } else if t >= self.start {
            Some(at(calendar::day_after(day)))
        } else if t < self.end {
            Some(at(day))
        } else {
            None
        }
    }
}

/// What may be sent when, and to whom, beyond the channel itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Channel name → its quiet hours.
    pub quiet_hours: Vec<(String, QuietHours)>,
    /// Non-critical notices a person receives per channel per day (Asia/Tokyo); 0: no cap.
    pub daily_cap: i64,
    /// Where a notice goes when push is gone or refused for good.
    pub fallback: Option<(String, String)>,
}

impl Default for Gate {
    /// Push is held from 21:00 to 08:00, at most 3 notices a channel a day, push falls back
    /// to e-mail.
    fn default() -> Self {
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("a whole hour");
        Self {
            quiet_hours: vec![(
                "webpush".to_owned(),
                QuietHours {
                    start: t(21),
                    end: t(8),
                },
            )],
            daily_cap: 3,
            fallback: Some(("webpush".to_owned(), "email".to_owned())),
        }
    }
}

impl Gate {
    /// No quiet hours, no cap, no fallback: every due row is sent at once.
    pub fn open() -> Self {
        Self {
            quiet_hours: Vec::new(),
            daily_cap: 0,
            fallback: None,
        }
    }

    fn quiet(&self, channel: &str) -> Option<&QuietHours> {
        self.quiet_hours
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, q)| q)
    }
}

/// Whether the recipient takes `channel` now: the preferences they saved in the portal
/// override the register's; critical notices ignore muting but not a missing address or
/// consent. People not on the register (staff) have nothing to honour.
fn accepts(item: &OutboxItem, channel: &str, critical: bool) -> bool {
    let Some(ch) = ResidentChannel::from_name(channel) else {
        return true;
    };
    if ch == ResidentChannel::Portal {
        return true;
    }
    if let Some(prefs) = &item.preferences {
        return prefs.accepts(ch, critical);
    }
    item.resident
        .as_ref()
        .is_none_or(|r| !r.reachable_channels(&[ch], critical).is_empty())
}

/// Whether the register has an address for the recipient on `channel`.
fn has_address(item: &OutboxItem, channel: &str) -> bool {
    match (&item.resident, channel) {
        (Some(r), "email") => r.contact.email.is_some(),
        (Some(_), _) => true,
        (None, _) => false,
    }
}

/// Decides, before sending, whether a row waits (quiet hours, the daily cap), is muted or is
/// too late to send. `sent_today` counts, per recipient, what was delivered today or is about
/// to be in this batch.
async fn hold(
    store: &Store,
    policy: &Policy,
    item: &OutboxItem,
    now: DateTime<FixedOffset>,
    sent_today: &mut HashMap<String, i64>,
) -> Result<Option<Settle>, StoreError> {
    let gate = &policy.gate;
    let critical = item.notice.critical;
    if !accepts(item, &item.channel, critical) {
        return Ok(Some(Settle::Muted {
            reason: format!("{} no longer accepts {}", item.recipient, item.channel),
        }));
    }
    if let Some(dead) = expired(policy, item, now) {
        return Ok(Some(dead));
    }
    if let Some(at) = gate.quiet(&item.channel).and_then(|q| q.release(now)) {
        return Ok(Some(Settle::Deferred {
            at,
            reason: format!("quiet hours for {}", item.channel),
        }));
    }
    if gate.daily_cap > 0 && !critical && item.channel != "portal" {
        let local = now.with_timezone(&jst());
        let midnight = |d: NaiveDate| in_tokyo(d, NaiveTime::MIN);
        let sent = match sent_today.get_mut(&item.recipient) {
            Some(n) => n,
            None => {
                let today = midnight(local.date_naive());
                let n = store
                    .delivered_since(&item.recipient, &item.channel, today)
                    .await?;
                sent_today.entry(item.recipient.clone()).or_insert(n)
            }
        };
        if *sent >= gate.daily_cap {
            let mut at = midnight(calendar::day_after(local.date_naive()));
            if let Some(later) = gate.quiet(&item.channel).and_then(|q| q.release(at)) {
                at = later;
            }
            return Ok(Some(Settle::Deferred {
                at,
                reason: format!("daily cap of {} reached", gate.daily_cap),
            }));
        }
        *sent += 1;
    }
    Ok(None)
}

/// A row's attempt: what it was, how it is to be settled and how long the channel took.
struct Outcome {
    item: OutboxItem,
    settle: Settle,
    took: Option<Duration>,
}

/// Sends one row unless the gate held it, and decides how to settle it.
async fn attempt<C: Channel>(
    channel: &C,
    policy: &Policy,
    clock: &dyn Clock,
    item: OutboxItem,
    held: Option<Settle>,
) -> Outcome {
    match held {
        Some(settle) => Outcome {
            item,
            settle,
            took: None,
        },
        None => {
            let started = Instant::now();
            let delivery = channel.send(&item).await;
            let took = started.elapsed();
            let settle = settle(policy, &item, delivery, clock.now());
            Outcome {
                item,
                settle,
                took: Some(took),
            }
        }
    }
}

/// What a drain that met a store error leaves for the next one: attempts made but not
/// settled (so that a send that succeeded is not repeated), settled rows whose fallback is not
/// queued yet, and rows claimed but never sent (to give back).
#[derive(Default)]
struct Backlog {
    unsettled: Vec<Outcome>,
    fallbacks: Vec<(OutboxItem, String)>,
    unsent: Vec<i64>,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.unsettled.is_empty() && self.fallbacks.is_empty() && self.unsent.is_empty()
    }

    fn extend(&mut self, other: Backlog) {
        self.unsettled.extend(other.unsettled);
        self.fallbacks.extend(other.fallbacks);
        self.unsent.extend(other.unsent);
    }
}

/// A settling transaction in flight: the outcomes it carries and what the store answered.
type Settling<'a> = std::pin::Pin<
    Box<dyn Future<Output = (Vec<Outcome>, Result<BTreeSet<i64>, StoreError>)> + Send + 'a>,
>;

/// One outbox worker: its name (the lease holder), the store, the clock, its policy and
/// the metrics it counts into. Several may run per channel, each with its own name.
#[derive(Clone)]
pub struct Worker {
    pub name: String,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub metrics: Arc<DeliveryMetrics>,
    /// What a drain that failed left for the next (shared by clones).
    backlog: Arc<Mutex<Backlog>>,
}

impl Worker {
    /// A worker with its own metrics.
    pub fn new(name: &str, store: Store, clock: Arc<dyn Clock>, policy: Policy) -> Self {
        Self {
            name: name.to_owned(),
            store,
            clock,
            policy,
            metrics: Arc::default(),
            backlog: Arc::default(),
        }
    }

    /// Counts into `metrics` (shared with the portal's `/metrics` and `/health`, and other
    /// workers).
    pub fn with_metrics(mut self, metrics: Arc<DeliveryMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Progress, for `/health`: a worker that makes none for longer than its lease is stuck.
    fn beat(&self) {
        self.metrics.worker_beat(&self.name);
    }

    /// Delivers every due row of `channel` until none is left due now: claims a batch,
    /// checks each row against the gate, sends the rest (up to `policy.concurrency` at a
    /// time) and settles the attempts as they end, each settling transaction taking every
    /// attempt ended by then (rows are settled one by one when sends are slow, in groups when
    /// they are fast). No more than `concurrency` ended attempts wait to be settled, so a crash
    /// repeats at most about twice `concurrency` sends.
    ///
    /// On a store error it stops sending, and keeps what it could not write (attempts, the
    /// fallbacks they call for, the rows it claimed and did not send) for the next drain, which
    /// writes them first: sends that went out are settled, not repeated, once the store works.
    pub async fn drain<C: Channel>(&self, channel: &C) -> Result<DrainReport, StoreError> {
        let mut report = DrainReport::default();
        self.write_backlog(channel, &mut report).await?;
        let policy = &self.policy;
        loop {
            self.beat();
            let now = self.clock.now();
            let items = self
                .store
                .claim_outbox(
                    channel.name(),
                    &self.name,
                    policy.batch,
                    now,
                    clock::after(now, policy.lease),
                )
                .await?;
            if items.is_empty() {
                return Ok(report);
            }
            self.beat();
            let mut sent_today = HashMap::new();
            let mut batch = Vec::with_capacity(items.len());
            let mut items = items.into_iter();
            while let Some(item) = items.next() {
                match hold(&self.store, policy, &item, now, &mut sent_today).await {
                    Ok(held) => batch.push((item, held)),
                    Err(e) => {
                        // Nothing of this batch was sent: its rows go back to the queue.
                        let unsent = batch
                            .iter()
                            .map(|(i, _): &(OutboxItem, _)| i.id)
                            .chain([item.id])
                            .chain(items.map(|i| i.id))
                            .collect();
                        self.backlog().extend(Backlog {
                            unsent,
                            ..Backlog::default()
                        });
                        return Err(e);
                    }
                }
            }
            self.deliver(channel, batch, &mut report).await?;
        }
    }

    /// Writes what an earlier drain could not: its attempts, then their fallbacks, then gives
    /// back the rows it did not send. What fails again stays for the next drain.
    async fn write_backlog<C: Channel>(
        &self,
        channel: &C,
        report: &mut DrainReport,
    ) -> Result<(), StoreError> {
        let mut backlog = std::mem::take(&mut *self.backlog());
        if backlog.is_empty() {
            return Ok(());
        }
        let written = async {
            if !backlog.unsettled.is_empty() {
                let outcomes = std::mem::take(&mut backlog.unsettled);
                let (outcomes, kept) = self.settle_outcomes(outcomes).await;
                match kept {
                    Ok(kept) => {
                        self.account(channel, outcomes, &kept, report, &mut backlog.fallbacks)
                    }
                    Err(e) => {
                        backlog.unsettled = outcomes;
                        return Err(e);
                    }
                }
            }
            self.queue_fallbacks(&mut backlog.fallbacks, report).await?;
            if !backlog.unsent.is_empty() {
                self.store
                    .release_outbox(&self.name, &backlog.unsent)
                    .await?;
                backlog.unsent.clear();
            }
            Ok(())
        }
        .await;
        self.backlog().extend(backlog);
        written
    }

    /// Sends a claimed batch and settles it as the attempts end (see `drain`).
    async fn deliver<C: Channel>(
        &self,
        channel: &C,
        batch: Vec<(OutboxItem, Option<Settle>)>,
        report: &mut DrainReport,
    ) -> Result<(), StoreError> {
        let limit = self.policy.concurrency.max(1);
        let mut queue = batch.into_iter();
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        // Attempts ended and not settled yet, and those being settled now.
        let mut ended: Vec<Outcome> = Vec::new();
        let mut settling: Option<Settling<'_>> = None;
        let mut settling_len = 0;
        let mut fallbacks = Vec::new();
        let mut failed: Option<StoreError> = None;
        loop {
            while failed.is_none() && in_flight.len() < limit && ended.len() + settling_len < limit
            {
                let Some((item, held)) = queue.next() else {
                    break;
                };
                in_flight.push(attempt(
                    channel,
                    &self.policy,
                    self.clock.as_ref(),
                    item,
                    held,
                ));
            }
            if settling.is_none() && failed.is_none() && !ended.is_empty() {
                let outcomes = std::mem::take(&mut ended);
                settling_len = outcomes.len();
                settling = Some(Box::pin(self.settle_outcomes(outcomes)));
            }
            if in_flight.is_empty() && settling.is_none() {
                break;
            }
            tokio::select! {
                Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                    self.beat();
                    ended.push(outcome);
                }
                (outcomes, kept) = async { settling.as_mut().expect("guarded").await }, if settling.is_some() => {
                    settling = None;
                    settling_len = 0;
                    self.beat();
                    match kept {
                        Ok(kept) => self.account(channel, outcomes, &kept, report, &mut fallbacks),
                        Err(e) => {
                            // Stop sending; what is in flight still ends and is kept.
                            ended.extend(outcomes);
                            failed = Some(e);
                        }
                    }
                }
            }
        }
        if failed.is_none() {
            if let Err(e) = self.queue_fallbacks(&mut fallbacks, report).await {
                failed = Some(e);
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => {
                self.backlog().extend(Backlog {
                    unsettled: ended,
                    fallbacks,
                    unsent: queue.map(|(item, _)| item.id).collect(),
                });
                Err(e)
            }
        }
    }

    /// Records the attempts and settles their rows in one transaction; gives the outcomes
    /// back with the ids this worker still held (the others were taken over).
    async fn settle_outcomes(
        &self,
        outcomes: Vec<Outcome>,
    ) -> (Vec<Outcome>, Result<BTreeSet<i64>, StoreError>) {
        let settles: Vec<(i64, Settle)> = outcomes
            .iter()
            .map(|o| (o.item.id, o.settle.clone()))
            .collect();
        let kept = self
            .store
            .settle_outbox_batch(&self.name, &settles, self.clock.now())
            .await;
        (outcomes, kept)
    }

    /// Counts, measures and logs settled attempts, and notes the fallbacks they call for.
    fn account<C: Channel>(
        &self,
        channel: &C,
        outcomes: Vec<Outcome>,
        kept: &BTreeSet<i64>,
        report: &mut DrainReport,
        fallbacks: &mut Vec<(OutboxItem, String)>,
    ) {
        for Outcome { item, settle, took } in outcomes {
            if !kept.contains(&item.id) {
                report.lost += 1;
                continue;
            }
            report.count(&settle);
            self.metrics.record(channel.name(), settle.outcome(), took);
            tracing::info!(outbox = item.id, key = %item.decision_key, recipient = %item.recipient,
                channel = channel.name(), outcome = settle.outcome(), "delivery attempt");
            if let Some(to) = self.fallback_for(channel, &item, &settle) {
                fallbacks.push((item, to));
            }
        }
    }

    /// The gate's fallback channel for a row `channel` settled as gone or dead, if the
    /// recipient takes it there.
    fn fallback_for<C: Channel>(
        &self,
        channel: &C,
        item: &OutboxItem,
        settled: &Settle,
    ) -> Option<String> {
        let (from, to) = self.policy.gate.fallback.as_ref()?;
        (matches!(settled, Settle::Gone { .. } | Settle::Dead { .. })
            && from == channel.name()
            && accepts(item, to, item.notice.critical)
            && has_address(item, to))
        .then(|| to.clone())
    }

    /// Queues the notices of `fallbacks` on their fallback channel, removing each one queued;
    /// on a store error the rest stay.
    async fn queue_fallbacks(
        &self,
        fallbacks: &mut Vec<(OutboxItem, String)>,
        report: &mut DrainReport,
    ) -> Result<(), StoreError> {
        while let Some((item, to)) = fallbacks.last() {
            let queued = self
                .store
                .queue_fallback(item, to, self.clock.now())
                .await?;
            if queued {
                report.fallbacks += 1;
                tracing::info!(outbox = item.id, key = %item.decision_key, recipient = %item.recipient,
                    channel = to.as_str(), "fallback queued");
            }
            fallbacks.pop();
        }
        Ok(())
    }

    /// Runs `drain` until `shutdown` turns true, waiting `idle` between drains; it drains
    /// once more after the signal, so rows claimed before it are settled.
    ///
    /// A store error does not end it: it logs the error (ids only), waits as
    /// `policy.store_retry` says and drains again, which first writes what the failed drain
    /// could not. After `give_up_after` consecutive failures (or a failure during the last
    /// drain after the signal) it returns the error. Its state (running, failing, stuck,
    /// stopped) is in `metrics` for `/health`.
    pub async fn work<C: Channel>(
        &self,
        channel: &C,
        idle: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<DrainReport, StoreError> {
        let worker = self.name.as_str();
        let retry = self.policy.store_retry;
        self.metrics
            .worker_started(worker, channel.name(), self.policy.lease + idle);
        let mut total = DrainReport::default();
        let mut failures = 0u32;
        loop {
            let stopping = *shutdown.borrow();
            let wait = match self.drain(channel).await {
                Ok(report) => {
                    total = total.plus(report);
                    if failures > 0 {
                        tracing::info!(
                            worker,
                            channel = channel.name(),
                            failures,
                            "the store works again: the worker goes on"
                        );
                    }
                    failures = 0;
                    self.metrics.worker_ok(worker);
                    if stopping {
                        self.metrics
                            .worker_stopped(worker, "stopped with the service");
                        return Ok(total);
                    }
                    idle
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.worker_failed(worker, failures);
                    if stopping {
                        tracing::error!(worker, channel = channel.name(), error = %e,
                            "store error while stopping: the rows it holds go out again after their lease");
                        self.metrics
                            .worker_stopped(worker, "a store error while stopping");
                        return Err(e);
                    }
                    if failures >= retry.give_up_after.max(1) {
                        tracing::error!(worker, channel = channel.name(), failures, error = %e,
                            "the worker gave up after {failures} consecutive store errors");
                        self.metrics.worker_stopped(
                            worker,
                            &format!("gave up after {failures} consecutive store errors"),
                        );
                        return Err(e);
                    }
                    let wait = retry.wait(failures);
                    tracing::warn!(worker, channel = channel.name(), failures,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %e,
                        "store error: the worker is retrying");
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let p = Policy::default();
        for id in [1, 2, 99, 12345] {
            let first = backoff(&p, 0, id);
            assert!(
                first >= Duration::from_secs(48) && first <= Duration::from_secs(72),
                "{first:?}"
            );
            let third = backoff(&p, 2, id);
            assert!(
                third >= Duration::from_secs(192) && third <= Duration::from_secs(288),
                "{third:?}"
            );
            assert!(backoff(&p, 30, id) <= p.max_backoff.mul_f64(1.2));
        }
        assert_ne!(
            backoff(&p, 0, 1),
            backoff(&p, 0, 2),
            "rows do not retry in lockstep"
        );
    }

    #[test]
    fn store_errors_are_retried_after_doubling_waits() {
        let r = StoreRetry::default();
        let waits: Vec<u64> = (1..=9).map(|n| r.wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(r.give_up_after, 10);
        let quick = StoreRetry {
            first: Duration::from_millis(50),
            max: Duration::from_millis(120),
            give_up_after: 3,
        };
        assert_eq!(quick.wait(2), Duration::from_millis(100));
        assert_eq!(quick.wait(40), Duration::from_millis(120));
    }

    /// An e-mail row due at `now` for a procedure whose deadline is `deadline`.
    fn row(deadline: &str) -> OutboxItem {
        OutboxItem {
            id: 7,
            decision_key: oshirase_engine::eval::DecisionKey::parse(
                "kokumin-nenkin-shutoku/R00001/2026-10-01",
            )
            .unwrap(),
            recipient: "R00001".into(),
            channel: "email".into(),
            attempts: 0,
            deadline: Some(deadline.parse().unwrap()),
            news: None,
            notice: oshirase_store::NoticeBody::titled(
                "お知らせ",
                oshirase_engine::rule::Category::Pension,
                false,
            ),
            resident: None,
            preferences: None,
        }
    }

    fn tokyo(day: &str, h: u32, m: u32) -> DateTime<FixedOffset> {
        in_tokyo(
            day.parse().unwrap(),
            NaiveTime::from_hms_opt(h, m, 0).unwrap(),
        )
    }

    fn retry() -> Delivery {
        Delivery::Retry {
            after: Some(Duration::from_secs(600)),
            reason: "451 4.3.0 try later".into(),
        }
    }

    #[test]
    fn a_late_notice_is_retried_within_the_grace_period_after_its_deadline() {
        let p = Policy::default();
        // A week after the deadline (a catch-up after the service was down): retried.
        match settle(&p, &row("2026-10-21"), retry(), tokyo("2026-10-28", 12, 0)) {
            Settle::RetryAt { at, .. } => assert_eq!(at, tokyo("2026-10-28", 12, 10)),
            other => panic!("{other:?}"),
        }
        // The last day of the grace period, 14 days after the deadline: still retried.
        assert!(matches!(
            settle(&p, &row("2026-10-21"), retry(), tokyo("2026-11-04", 23, 0)),
            Settle::RetryAt { .. }
        ));
        // A retry that would fall after it: a dead letter that says why.
        match settle(&p, &row("2026-10-21"), retry(), tokyo("2026-11-04", 23, 55)) {
            Settle::Dead { reason } => {
                assert!(reason.contains("2026-10-21"), "{reason}");
                assert!(reason.contains("2026-11-04"), "{reason}");
                assert!(reason.contains("451 4.3.0 try later"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Tokyo's date counts, not UTC's: 2026-11-04 23:00 JST is still 14:00 UTC.
        let utc = tokyo("2026-11-04", 23, 0)
            .with_timezone(&chrono::Utc)
            .fixed_offset();
        assert!(matches!(
            settle(&p, &row("2026-10-21"), retry(), utc),
            Settle::RetryAt { .. }
        ));
    }

    #[test]
    fn quiet_hours_release_at_their_end_in_tokyo() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let at = |day: &str, h, m| in_tokyo(day.parse().unwrap(), t(h, m));
        let night = QuietHours {
            start: t(21, 0),
            end: t(8, 0),
        };
        assert_eq!(night.release(at("2026-12-31", 20, 59)), None);
        assert_eq!(
            night.release(at("2026-12-31", 21, 0)),
            Some(at("2027-01-01", 8, 0))
        );
        assert_eq!(
            night.release(at("2027-01-01", 7, 59)),
            Some(at("2027-01-01", 8, 0))
        );
        assert_eq!(night.release(at("2027-01-01", 8, 0)), None);
        // A time given in UTC is read in Tokyo: 12:30 UTC is 21:30 JST.
        let utc = at("2026-12-31", 21, 30)
            .with_timezone(&chrono::Utc)
            .fixed_offset();
        assert_eq!(night.release(utc), Some(at("2027-01-01", 8, 0)));
        let lunch = QuietHours {
            start: t(12, 0),
            end: t(13, 0),
        };
        assert_eq!(
            lunch.release(at("2026-06-01", 12, 30)),
            Some(at("2026-06-01", 13, 0))
        );
        assert_eq!(lunch.release(at("2026-06-01", 13, 0)), None);
    }
}
