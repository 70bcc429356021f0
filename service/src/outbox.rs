//! Outbox workers: claim due rows with a lease, hand each to its channel, record the attempt,
//! and settle it: delivered, retried later with exponential backoff and jitter (until the
//! grace period after the procedure's deadline ends), or dead-lettered with the reason. `drain` works until nothing is
//! due, so tests run it without sleeping. Channels live in the adapters; the contract is
//! `Channel` (docs/channels.md).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime};

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
    /// How long a claimed row belongs to its worker.
    pub lease: Duration,
    pub batch: i64,
    /// Sends in flight at once per worker.
    pub concurrency: usize,
    /// Days after a procedure's deadline during which its notice is still sent and retried
    /// (a late notice still tells the resident what holds); after them it is a dead letter.
    pub late_grace_days: u32,
    pub gate: Gate,
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
            gate: Gate::default(),
        }
    }
}

/// The delay before attempt `attempts + 1`: base × 2^attempts, capped, with ±20% jitter
/// derived from the row id (stable for a row, spread across rows).
pub fn backoff(policy: &Policy, attempts: i64, id: i64) -> Duration {
    let exp = policy.base.saturating_mul(1u32 << attempts.clamp(0, 20));
    let capped = exp.min(policy.max_backoff);
    let h = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1023
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

/// Sends one row unless the gate held it, and decides how to settle it.
async fn attempt<C: Channel>(
    channel: &C,
    policy: &Policy,
    clock: &dyn Clock,
    item: &OutboxItem,
    held: Option<Settle>,
) -> (Settle, Option<Duration>) {
    match held {
        Some(s) => (s, None),
        None => {
            let started = Instant::now();
            let delivery = channel.send(item).await;
            let took = started.elapsed();
            (settle(policy, item, delivery, clock.now()), Some(took))
        }
    }
}

/// One outbox worker: its name (the lease holder), the store, the clock, its policy and
/// the metrics it counts into. Several may run per channel, each with its own name.
#[derive(Clone)]
pub struct Worker {
    pub name: String,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub metrics: Arc<DeliveryMetrics>,
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
        }
    }

    /// Counts into `metrics` (shared with the portal's `/metrics` and other workers).
    pub fn with_metrics(mut self, metrics: Arc<DeliveryMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Delivers every due row of `channel` until none is left due now: claims a batch,
    /// checks each row against the gate, sends the rest (up to `policy.concurrency` at a
    /// time), and settles the batch in one transaction.
    pub async fn drain<C: Channel>(&self, channel: &C) -> Result<DrainReport, StoreError> {
        let (store, policy, clock) = (&self.store, &self.policy, self.clock.as_ref());
        let mut report = DrainReport::default();
        loop {
            let now = clock.now();
            let items = store
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
            let mut sent_today = HashMap::new();
            let mut held = Vec::with_capacity(items.len());
            for item in &items {
                held.push(hold(store, policy, item, now, &mut sent_today).await?);
            }
            // Sends in flight at once, in order; a named fn keeps the futures' lifetimes
            // simple enough for a spawned task.
            let mut outcomes = Vec::with_capacity(items.len());
            let pending: Vec<_> = items.iter().zip(held).collect();
            for group in pending.chunks(policy.concurrency.max(1)) {
                let sends = group
                    .iter()
                    .map(|(item, held)| attempt(channel, policy, clock, item, held.clone()));
                outcomes.extend(futures_util::future::join_all(sends).await);
            }
            let settles: Vec<(i64, Settle)> = items
                .iter()
                .zip(&outcomes)
                .map(|(item, (s, _))| (item.id, s.clone()))
                .collect();
            let kept = store
                .settle_outbox_batch(&self.name, &settles, clock.now())
                .await?;
            for (item, (s, took)) in items.iter().zip(outcomes) {
                if !kept.contains(&item.id) {
                    report.lost += 1;
                    continue;
                }
                report.count(&s);
                self.metrics.record(channel.name(), s.outcome(), took);
                tracing::info!(outbox = item.id, key = %item.decision_key, recipient = %item.recipient,
                    channel = channel.name(), outcome = s.outcome(), "delivery attempt");
                if self.fall_back(channel, item, &s).await? {
                    report.fallbacks += 1;
                }
            }
        }
    }

    /// Queues the notice on the gate's fallback channel when `channel` is gone or refused
    /// for good, if the recipient takes it there.
    async fn fall_back<C: Channel>(
        &self,
        channel: &C,
        item: &OutboxItem,
        settled: &Settle,
    ) -> Result<bool, StoreError> {
        let Some((from, to)) = &self.policy.gate.fallback else {
            return Ok(false);
        };
        if !matches!(settled, Settle::Gone { .. } | Settle::Dead { .. })
            || from != channel.name()
            || !accepts(item, to, item.notice.critical)
            || !has_address(item, to)
        {
            return Ok(false);
        }
        let queued = self
            .store
            .queue_fallback(&item.decision_key, &item.recipient, to, self.clock.now())
            .await?;
        if queued {
            tracing::info!(outbox = item.id, key = %item.decision_key, recipient = %item.recipient,
                channel = to.as_str(), "fallback queued");
        }
        Ok(queued)
    }

    /// Runs `drain` until `shutdown` turns true, waiting `idle` between drains; it drains
    /// once more after the signal, so rows claimed before it are settled.
    pub async fn work<C: Channel>(
        &self,
        channel: &C,
        idle: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<DrainReport, StoreError> {
        let mut total = DrainReport::default();
        loop {
            let stopping = *shutdown.borrow();
            total = total.plus(self.drain(channel).await?);
            if stopping {
                return Ok(total);
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
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
