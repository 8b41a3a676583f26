//! Prometheus metrics, rendered as text on `/metrics`: requests by route and status, a latency
//! histogram by route, bytes in and out, uploads in progress, blobs and bytes stored.
//!
//! Hand-written rather than a metrics crate: a handful of counters, one histogram family and a
//! text format that fits on a page do not justify a registry abstraction and its dependencies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    by_route: Mutex<BTreeMap<&'static str, RouteStats>>,
    pub(crate) bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections_refused: AtomicU64,
}

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// A connection closed at once because the server was at its connection limit.
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(
        &self,
        route: &'static str,
        status: u16,
        elapsed: Duration,
        bytes_out: u64,
    ) {
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let mut map = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.entry(route).or_default();
        *s.by_status.entry(status).or_default() += 1;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
        s.count += 1;
        s.sum += secs;
    }

    pub(crate) fn render(&self, uploads_active: i64, blobs: u64, blob_bytes: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP berth_connections_refused_total Connections closed at once at the connection limit.\n");
        out.push_str("# TYPE berth_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "berth_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        let map = self.by_route.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str("# HELP berth_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE berth_http_requests_total counter\n");
        for (route, s) in map.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "berth_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP berth_http_request_duration_seconds Time to produce response headers, by route.\n");
        out.push_str("# TYPE berth_http_request_duration_seconds histogram\n");
        for (route, s) in map.iter() {
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(s.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "berth_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                s.count
            );
        }
        drop(map);
        let gauges = [
            (
                "berth_http_request_bytes_total",
                "counter",
                "Request body bytes received.",
                self.bytes_in.load(Ordering::Relaxed).to_string(),
            ),
            (
                "berth_http_response_bytes_total",
                "counter",
                "Response body bytes announced by Content-Length.",
                self.bytes_out.load(Ordering::Relaxed).to_string(),
            ),
            (
                "berth_uploads_in_progress",
                "gauge",
                "Requests streaming upload bytes now.",
                uploads_active.to_string(),
            ),
            (
                "berth_blobs_stored",
                "gauge",
                "Blobs in the blob store.",
                blobs.to_string(),
            ),
            (
                "berth_blob_bytes_stored",
                "gauge",
                "Total size of the stored blobs.",
                blob_bytes.to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
