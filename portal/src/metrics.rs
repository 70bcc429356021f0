//! HTTP metrics by route pattern (never the raw path: it holds decision keys), method and
//! status, and a latency histogram per route, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds, seconds.
const BOUNDS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub(crate) struct HttpMetrics(Mutex<Inner>);

impl HttpMetrics {
    pub(crate) fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        let h = m.latency.entry(route.to_owned()).or_default();
        let s = took.as_secs_f64();
        for (i, b) in BOUNDS.iter().enumerate() {
            if s <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    pub(crate) fn render(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP oshirase_portal_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE oshirase_portal_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "oshirase_portal_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP oshirase_portal_request_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE oshirase_portal_request_seconds histogram\n");
        for (route, h) in &m.latency {
            for (b, n) in BOUNDS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "oshirase_portal_request_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "oshirase_portal_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "oshirase_portal_request_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "oshirase_portal_request_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out
    }
}
