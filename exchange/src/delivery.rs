//! Delivery of the change events: each (agency, purpose) stream is sent in sequence order by
//! one worker at a time (a lease on the stream), as Standard Webhooks signed CloudEvents.
//! The events table is the outbox: the ingest wrote them in its own transaction, and the
//! stream's cursor (`delivered_seq`) is the delivery state. A failed event is retried with
//! backoff; the events after it wait, so a receiver always sees the order of the register.
//! An event the receiver refuses (a 4xx), or still undelivered after `dead_after`, is a dead
//! letter: the stream goes on, the dead count raises the alert metric, and the agency fetches
//! what it missed by sequence (`GET /agency/v1/events`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use tokio::sync::watch;

use oshirase_adapters::webhook::{WebhookOutcome, WebhookSender};
use oshirase_engine::clock::{self, Clock};
use oshirase_store::{Store, StoreError, Stream, StreamProgress};

use crate::cloudevent;
use crate::metrics::ExchangeMetrics;

/// How streams are delivered.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// First retry delay, doubled for each failed attempt, up to `max_backoff`.
    pub base: Duration,
    pub max_backoff: Duration,
    /// An event still undelivered this long after it was made is a dead letter.
    pub dead_after: Duration,
    /// A stream silent this long gets a heartbeat.
    pub heartbeat: Duration,
    /// How long a claimed stream belongs to its worker.
    pub lease: Duration,
    /// Events sent per stream in one run before its cursor is saved.
    pub batch: i64,
    /// Streams claimed at once (each sent on its own, in order).
    pub streams: i64,
    /// How often `work` looks for due streams.
    pub poll: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            base: Duration::from_secs(10),
            max_backoff: Duration::from_secs(600),
            dead_after: Duration::from_secs(3 * 24 * 3600),
            heartbeat: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
            batch: 200,
            streams: 32,
            poll: Duration::from_millis(500),
        }
    }
}

impl DeliveryPolicy {
    /// The wait before attempt `attempts + 1`, with jitter keyed on the stream so that
    /// streams failing together do not retry together.
    fn backoff(&self, attempts: i64, key: &str) -> Duration {
        let seed = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        oshirase_service::outbox::backoff_delay(self.base, self.max_backoff, attempts, seed)
    }
}

/// Everything a delivery worker needs.
#[derive(Clone)]
pub struct Deliverer {
    pub name: String,
    pub store: Store,
    pub sender: Arc<WebhookSender>,
    pub clock: Arc<dyn Clock>,
    pub policy: DeliveryPolicy,
    pub metrics: Arc<ExchangeMetrics>,
    /// The municipality's local government code (the heartbeats' source).
    pub local_gov_code: String,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
    pub heartbeats: usize,
}

impl Deliverer {
    /// Claims the due streams and sends each (events, or a heartbeat) once.
    pub async fn pass(&self) -> Result<PassReport, StoreError> {
        let now = self.clock.now();
        let lease_until = clock::after(now, self.policy.lease);
        let heartbeat_before = clock::before(now, self.policy.heartbeat);
        let streams = self
            .store
            .claim_streams(
                &self.name,
                self.policy.streams,
                now,
                lease_until,
                heartbeat_before,
            )
            .await?;
        let runs = streams.into_iter().map(|s| self.run(s, now));
        let mut report = PassReport::default();
        // Polled together: a slow receiver does not hold up the others' streams.
        for r in futures_util::future::join_all(runs).await {
            let r = r?;
            report.delivered += r.delivered;
            report.retried += r.retried;
            report.dead += r.dead;
            report.heartbeats += r.heartbeats;
        }
        Ok(report)
    }

    /// Passes until nothing is due (tests, `oshirase agency replay`).
    pub async fn drain(&self) -> Result<PassReport, StoreError> {
        let mut total = PassReport::default();
        loop {
            let r = self.pass().await?;
            if r == PassReport::default() {
                return Ok(total);
            }
            total.delivered += r.delivered;
            total.retried += r.retried;
            total.dead += r.dead;
            total.heartbeats += r.heartbeats;
            if r.delivered == 0 && r.dead == 0 {
                // Only retries are left, each waiting for its time.
                return Ok(total);
            }
        }
    }

    /// Works until `shutdown` turns true. A store error is logged and retried after a pause:
    /// events are safe in the store, only their delivery waits.
    pub async fn work(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let idle = match self.pass().await {
                Ok(r) => r.delivered == 0 && r.dead == 0,
                Err(e) => {
                    let worker = self.name.as_str();
                    tracing::warn!(worker, error = %e, "agency delivery: store error; retrying");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(self.policy.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    async fn run(&self, s: Stream, now: DateTime<FixedOffset>) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        let Some(endpoint) = s.endpoint.as_deref().and_then(|e| url::Url::parse(e).ok()) else {
            // Claimed only with an endpoint; one that no longer parses is the operator's to fix.
            let progress = StreamProgress {
                settled_upto: s.delivered_seq,
                dead: Vec::new(),
                retry: Some((
                    clock::after(now, self.policy.max_backoff),
                    "the endpoint is not a URL".into(),
                )),
                delivered: 0,
                sent_at: None,
                heartbeat_error: None,
            };
            self.store
                .settle_stream(&self.name, &s.agency_id, &s.purpose_id, &progress, now)
                .await?;
            return Ok(report);
        };
        let key = format!("{}.{}", s.agency_id, s.purpose_id);
        let mut progress = StreamProgress {
            settled_upto: s.delivered_seq,
            dead: Vec::new(),
            retry: None,
            delivered: 0,
            sent_at: None,
            heartbeat_error: None,
        };
        if s.last_seq > s.delivered_seq && s.next_attempt_at <= now {
            let events = self
                .store
                .agency_events_after(
                    &s.agency_id,
                    &s.purpose_id,
                    s.delivered_seq,
                    self.policy.batch,
                )
                .await?;
            let mut attempts = s.attempts;
            for e in events {
                let body = serde_json::to_vec(&cloudevent::event(&e)).expect("JSON serializes");
                let started = std::time::Instant::now();
                let outcome = self
                    .sender
                    .send(
                        &endpoint,
                        &cloudevent::event_id(&e),
                        &body,
                        self.clock.now(),
                    )
                    .await;
                self.metrics
                    .observe_send(&s.agency_id, started.elapsed(), &outcome);
                match outcome {
                    WebhookOutcome::Delivered => {
                        progress.settled_upto = e.seq;
                        progress.sent_at = Some(self.clock.now());
                        progress.delivered += 1;
                        report.delivered += 1;
                        attempts = 0;
                    }
                    WebhookOutcome::Refused { reason } => {
                        tracing::warn!(agency = %s.agency_id, purpose = %s.purpose_id, seq = e.seq, %reason, "agency event refused: dead letter");
                        progress.settled_upto = e.seq;
                        progress.dead.push((e.seq, reason));
                        report.dead += 1;
                        attempts = 0;
                    }
                    WebhookOutcome::Retry { after, reason } => {
                        let age = clock::until(e.time, now).unwrap_or_default();
                        if age >= self.policy.dead_after {
                            tracing::warn!(agency = %s.agency_id, purpose = %s.purpose_id, seq = e.seq, %reason, "agency event undelivered too long: dead letter");
                            progress.settled_upto = e.seq;
                            progress
                                .dead
                                .push((e.seq, format!("undelivered: {reason}")));
                            report.dead += 1;
                            attempts = 0;
                            continue;
                        }
                        let wait = after
                            .unwrap_or_else(|| self.policy.backoff(attempts, &key))
                            .min(self.policy.max_backoff.max(Duration::from_secs(1)));
                        progress.retry = Some((clock::after(now, wait), reason));
                        report.retried += 1;
                        break;
                    }
                }
            }
        } else if s.last_seq == s.delivered_seq
            && s.last_sent_at
                .is_none_or(|t| clock::until(t, now).unwrap_or_default() >= self.policy.heartbeat)
        {
            // Only an idle stream gets a heartbeat: one waiting out a retry is not idle.
            let (id, body) = cloudevent::heartbeat(
                &s.agency_id,
                &s.purpose_id,
                s.last_seq,
                &self.local_gov_code,
                now,
            );
            let body = serde_json::to_vec(&body).expect("JSON serializes");
            let started = std::time::Instant::now();
            let outcome = self.sender.send(&endpoint, &id, &body, now).await;
            self.metrics
                .observe_send(&s.agency_id, started.elapsed(), &outcome);
            match outcome {
                WebhookOutcome::Delivered => {
                    progress.sent_at = Some(now);
                    report.heartbeats += 1;
                }
                // A missed heartbeat is not retried: the next one comes after the interval.
                WebhookOutcome::Refused { reason } | WebhookOutcome::Retry { reason, .. } => {
                    progress.sent_at = Some(now);
                    progress.heartbeat_error = Some(format!("heartbeat: {reason}"));
                }
            }
        }
        self.store
            .settle_stream(&self.name, &s.agency_id, &s.purpose_id, &progress, now)
            .await?;
        Ok(report)
    }
}
