//! Delivery metrics, the same for every channel: attempts by channel and outcome, send
//! latency, and the state of each worker. One `DeliveryMetrics` is made by whoever runs the
//! workers and handed to them and to the portal, whose `/metrics` endpoint renders it in the
//! Prometheus text format and whose `/health` reports the workers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
struct Registry {
    outcomes: BTreeMap<(&'static str, &'static str), u64>,
    latency: BTreeMap<&'static str, Latency>,
    workers: BTreeMap<String, Liveness>,
    store_errors: BTreeMap<&'static str, u64>,
}

/// What a worker last told of itself.
#[derive(Debug, Clone)]
struct Liveness {
    channel: &'static str,
    /// No progress for longer than this is stuck.
    stall: Duration,
    last_progress: Instant,
    /// Consecutive failed drains.
    failures: u32,
    stopped: Option<String>,
}

/// How a worker stands, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Working or waiting for work, and making progress.
    Running,
    /// Its last drain met a store error; it retries.
    Failing { failures: u32 },
    /// No progress for longer than its lease (a lock wait, a send that never ends): other
    /// workers may take its rows.
    Stuck { since: Duration },
    /// Ended: gave up after store errors, or stopped with the service.
    Stopped { reason: String },
}

impl WorkerState {
    /// `running`, `failing`, `stuck` or `stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Failing { .. } => "failing",
            WorkerState::Stuck { .. } => "stuck",
            WorkerState::Stopped { .. } => "stopped",
        }
    }

    pub fn is_healthy(&self) -> bool {
        *self == WorkerState::Running
    }
}

/// One worker's name, channel and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHealth {
    pub name: String,
    pub channel: &'static str,
    pub state: WorkerState,
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

    /// A worker begins (`Worker::work`); without progress for `stall` it is stuck.
    pub fn worker_started(&self, name: &str, channel: &'static str, stall: Duration) {
        self.with(|r| {
            r.workers.insert(
                name.to_owned(),
                Liveness {
                    channel,
                    stall,
                    last_progress: Instant::now(),
                    failures: 0,
                    stopped: None,
                },
            );
        });
    }

    fn worker(&self, name: &str, f: impl FnOnce(&mut Liveness)) {
        self.with(|r| {
            if let Some(w) = r.workers.get_mut(name) {
                f(w);
            }
        });
    }

    /// The worker made progress (claimed, sent, settled).
    pub fn worker_beat(&self, name: &str) {
        self.worker(name, |w| w.last_progress = Instant::now());
    }

    /// A drain ended well: the worker is not failing any more.
    pub fn worker_ok(&self, name: &str) {
        self.worker(name, |w| {
            w.last_progress = Instant::now();
            w.failures = 0;
        });
    }

    /// A drain met a store error, the `failures`th in a row.
    pub fn worker_failed(&self, name: &str, failures: u32) {
        self.with(|r| {
            if let Some(w) = r.workers.get_mut(name) {
                w.last_progress = Instant::now();
                w.failures = failures;
                *r.store_errors.entry(w.channel).or_default() += 1;
            }
        });
    }

    /// The worker ended, for `reason`.
    pub fn worker_stopped(&self, name: &str, reason: &str) {
        self.worker(name, |w| w.stopped = Some(reason.to_owned()));
    }

    /// Every worker that started, by name.
    pub fn workers(&self) -> Vec<WorkerHealth> {
        self.with(|r| {
            r.workers
                .iter()
                .map(|(name, w)| {
                    let quiet = w.last_progress.elapsed();
                    let state = match &w.stopped {
                        Some(reason) => WorkerState::Stopped {
                            reason: reason.clone(),
                        },
                        None if w.failures > 0 => WorkerState::Failing {
                            failures: w.failures,
                        },
                        None if quiet > w.stall => WorkerState::Stuck { since: quiet },
                        None => WorkerState::Running,
                    };
                    WorkerHealth {
                        name: name.clone(),
                        channel: w.channel,
                        state,
                    }
                })
                .collect()
        })
    }

    /// The delivery metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let workers = self.workers();
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
            out.push_str("# HELP oshirase_worker_healthy Whether each delivery worker runs and makes progress.\n");
            out.push_str("# TYPE oshirase_worker_healthy gauge\n");
            for w in &workers {
                let _ = writeln!(
                    out,
                    "oshirase_worker_healthy{{worker=\"{}\",channel=\"{}\"}} {}",
                    w.name,
                    w.channel,
                    u8::from(w.state.is_healthy())
                );
            }
            out.push_str(
                "# HELP oshirase_worker_store_errors_total Store errors met by delivery workers.\n",
            );
            out.push_str("# TYPE oshirase_worker_store_errors_total counter\n");
            for (channel, n) in &r.store_errors {
                let _ = writeln!(
                    out,
                    "oshirase_worker_store_errors_total{{channel=\"{channel}\"}} {n}"
                );
            }
            out
        })
    }
}
