//! Counters per agency, handed to the delivery workers and the API (no global registry), and
//! rendered with the streams' state read from the store at scrape time (Prometheus text).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use oshirase_adapters::webhook::WebhookOutcome;
use oshirase_engine::clock;
use oshirase_store::Stream;

#[derive(Debug, Default, Clone)]
struct AgencyCounters {
    delivered: u64,
    retried: u64,
    refused: u64,
    send_seconds: f64,
    pulls: u64,
    pulls_refused: u64,
    tokens: u64,
    tokens_refused: u64,
}

#[derive(Debug, Default)]
pub struct ExchangeMetrics {
    agencies: Mutex<BTreeMap<String, AgencyCounters>>,
}

/// What an API call for an agency came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Pull { provided: bool },
    Token { issued: bool },
}

impl ExchangeMetrics {
    fn with(&self, agency: &str, f: impl FnOnce(&mut AgencyCounters)) {
        let mut map = self.agencies.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(agency.to_owned()).or_default());
    }

    pub fn observe_send(&self, agency: &str, took: Duration, outcome: &WebhookOutcome) {
        self.with(agency, |c| {
            c.send_seconds += took.as_secs_f64();
            match outcome {
                WebhookOutcome::Delivered => c.delivered += 1,
                WebhookOutcome::Retry { .. } => c.retried += 1,
                WebhookOutcome::Refused { .. } => c.refused += 1,
            }
        });
    }

    pub fn observe_call(&self, agency: &str, call: Call) {
        self.with(agency, |c| match call {
            Call::Pull { provided: true } => c.pulls += 1,
            Call::Pull { provided: false } => c.pulls_refused += 1,
            Call::Token { issued: true } => c.tokens += 1,
            Call::Token { issued: false } => c.tokens_refused += 1,
        });
    }

    /// The Prometheus text: the counters, and each stream's sequence, backlog, lag and dead
    /// letters (`oshirase_agency_dead_letters` is the one to alert on).
    pub fn render(&self, streams: &[Stream], now: DateTime<FixedOffset>) -> String {
        let mut out = String::new();
        let map = self
            .agencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let counter =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&AgencyCounters) -> String| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (agency, c) in &map {
                    let _ = writeln!(out, "{name}{{agency=\"{agency}\"}} {}", get(c));
                }
            };
        counter(
            &mut out,
            "oshirase_agency_deliveries_total",
            "Events and heartbeats accepted by the agency's endpoint.",
            &|c| c.delivered.to_string(),
        );
        counter(
            &mut out,
            "oshirase_agency_delivery_retries_total",
            "Sends that failed and will be retried.",
            &|c| c.retried.to_string(),
        );
        counter(
            &mut out,
            "oshirase_agency_delivery_refusals_total",
            "Sends the endpoint refused (4xx): dead letters.",
            &|c| c.refused.to_string(),
        );
        counter(
            &mut out,
            "oshirase_agency_send_seconds_total",
            "Time spent sending to the agency.",
            &|c| format!("{:.6}", c.send_seconds),
        );
        counter(
            &mut out,
            "oshirase_agency_pulls_total",
            "Person data pulls answered.",
            &|c| c.pulls.to_string(),
        );
        counter(
            &mut out,
            "oshirase_agency_pulls_refused_total",
            "Person data pulls refused.",
            &|c| c.pulls_refused.to_string(),
        );
        counter(
            &mut out,
            "oshirase_agency_tokens_total",
            "Access tokens issued.",
            &|c| c.tokens.to_string(),
        );
        counter(
            &mut out,
            "oshirase_agency_tokens_refused_total",
            "Token requests refused.",
            &|c| c.tokens_refused.to_string(),
        );
        let gauge = |out: &mut String, name: &str, help: &str, get: &dyn Fn(&Stream) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for s in streams {
                let _ = writeln!(
                    out,
                    "{name}{{agency=\"{}\",purpose=\"{}\"}} {}",
                    s.agency_id,
                    s.purpose_id,
                    get(s)
                );
            }
        };
        gauge(
            &mut out,
            "oshirase_agency_last_sequence",
            "The stream's last event number.",
            &|s| s.last_seq.to_string(),
        );
        gauge(
            &mut out,
            "oshirase_agency_backlog",
            "Events not yet settled.",
            &|s| (s.last_seq - s.delivered_seq).to_string(),
        );
        gauge(
            &mut out,
            "oshirase_agency_dead_letters",
            "Events given up on (alert when it grows).",
            &|s| s.dead.to_string(),
        );
        gauge(
            &mut out,
            "oshirase_agency_lag_seconds",
            "Since the last delivery, when events wait (0 when none).",
            &|s| {
                if s.last_seq == s.delivered_seq {
                    return "0".into();
                }
                let since = s.last_delivered_at.unwrap_or(s.next_attempt_at);
                clock::until(since, now)
                    .unwrap_or_default()
                    .as_secs()
                    .to_string()
            },
        );
        out
    }
}
