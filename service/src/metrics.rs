//! Delivery metrics, the same for every channel: attempts by channel and outcome, and send
//! latency. One `DeliveryMetrics` is made by whoever runs the workers and handed to them and
//! to the portal, whose `/metrics` endpoint renders it in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
struct Registry {
    outcomes: BTreeMap<(&'static str, &'static str), u64>,
    latency: BTreeMap<&'static str, Latency>,
}

/// The delivery counters of one process.
#[derive(Default)]
pub struct DeliveryMetrics(Mutex<Registry>);

impl DeliveryMetrics {
    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counts one settled attempt of `channel` (`delivered`, `retry`, `dead`, `gone`, `deferred`,
    /// `muted`) and, for real sends, how long the channel took.
    /// Channel names are `Channel::name()`'s static strings, so counting allocates nothing.
    pub fn record(&self, channel: &'static str, outcome: &'static str, took: Option<Duration>) {
        self.with(|r| {
            *r.outcomes.entry((channel, outcome)).or_default() += 1;
            if let Some(t) = took {
                let l = r.latency.entry(channel).or_default();
                l.count += 1;
                l.sum_seconds += t.as_secs_f64();
            }
        });
    }

    /// The delivery metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.with(|r| {
            let mut out = String::new();
            out.push_str(
                "# HELP oshirase_outbox_attempts_total Outbox attempts by channel and outcome.\n",
            );
            out.push_str("# TYPE oshirase_outbox_attempts_total counter\n");
            for ((channel, outcome), n) in &r.outcomes {
                let _ = writeln!(
                out,
                "oshirase_outbox_attempts_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} {n}"
            );
            }
            out.push_str("# HELP oshirase_send_seconds Time spent in a channel's send.\n");
            out.push_str("# TYPE oshirase_send_seconds summary\n");
            for (channel, l) in &r.latency {
                let _ = writeln!(
                    out,
                    "oshirase_send_seconds_sum{{channel=\"{channel}\"}} {}",
                    l.sum_seconds
                );
                let _ = writeln!(
                    out,
                    "oshirase_send_seconds_count{{channel=\"{channel}\"}} {}",
                    l.count
                );
            }
            out
        })
    }
}
