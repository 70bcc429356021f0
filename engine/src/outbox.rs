//! Outbox workers: claim due rows with a lease, hand each to its channel, record the attempt,
//! and settle it: delivered, retried later with exponential backoff and jitter (within the
//! procedure's deadline), or dead-lettered with the reason. `drain` works until nothing is
//! due, so tests run it without sleeping. Channels live in the adapters; the contract is
//! `Channel` (docs/channels.md).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use crate::clock::Clock;
use crate::store::{utc_text, OutboxItem, Settle, Store, StoreError};

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

/// A delivery channel.
pub trait Channel: Send + Sync {
    /// The outbox `channel` value this channel serves (`email`, `webpush`, `portal`, …).
    fn name(&self) -> &'static str;
    fn send(&self, item: &OutboxItem) -> impl Future<Output = Delivery> + Send;
}

/// Retry and lease settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// First retry delay; doubled for each attempt.
    pub base: Duration,
    pub max_backoff: Duration,
    /// Attempts after which a row is a dead letter.
    pub max_attempts: i64,
    /// How long a claimed row belongs to its worker.
    pub lease: Duration,
    pub batch: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            max_backoff: Duration::from_secs(6 * 3600),
            max_attempts: 10,
            lease: Duration::from_secs(300),
            batch: 100,
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
    /// Rows whose lease another worker took over before this one settled them.
    pub lost: usize,
}

fn add(t: DateTime<FixedOffset>, d: Duration) -> DateTime<FixedOffset> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
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
            let at = add(now, wait);
            // A notice is no use after its procedure's deadline: stop there.
            if let Some(deadline) = item.deadline {
                if at.date_naive() > deadline {
                    return Settle::Dead {
                        reason: format!(
                            "the deadline {deadline} passes before the next attempt: {reason}"
                        ),
                    };
                }
            }
            Settle::RetryAt {
                at: utc_text(at),
                reason,
            }
        }
    }
}

/// Delivers every due row of `channel` until none is left due now.
pub async fn drain<C: Channel>(
    store: &Store,
    channel: &C,
    worker: &str,
    clock: &dyn Clock,
    policy: &Policy,
) -> Result<DrainReport, StoreError> {
    let mut report = DrainReport::default();
    loop {
        let now = clock.now();
        let items = store
            .claim_outbox(
                channel.name(),
                worker,
                policy.batch,
                now,
                add(now, policy.lease),
            )
            .await?;
        if items.is_empty() {
            return Ok(report);
        }
        for item in items {
            let delivery = channel.send(&item).await;
            let now = clock.now();
            let s = settle(policy, &item, delivery, now);
            match &s {
                Settle::Delivered => report.delivered += 1,
                Settle::RetryAt { .. } => report.retried += 1,
                Settle::Dead { .. } => report.dead += 1,
                Settle::Gone { .. } => report.gone += 1,
            }
            if !store.settle_outbox(item.id, worker, &s, now).await? {
                report.lost += 1;
            }
            tracing::info!(outbox = item.id, key = %item.decision_key, channel = channel.name(), outcome = ?s, "delivery attempt");
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
}
