//! Prometheus metrics on `/metrics`: requests by route and status, a latency histogram by route,
//! bytes in and out, refused connections; and, read at each scrape, uploads in progress, blobs and
//! bytes stored, workload exchanges by outcome and (for a server admin's scrape) when each
//! credential expires.
//!
//! The metric types and the text format are `prometheus-client`'s (the Prometheus project's own
//! Rust client), rendered in the Prometheus text format 0.0.4 that every scraper reads.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    org: String,
    kind: String,
    owner: String,
    name: String,
}

/// The server's own counters, kept for its lifetime.
pub struct Metrics {
    requests: Family<RouteStatus, Counter>,
    durations: Family<RouteLabel, Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    connections_refused: Counter,
    connections_evicted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            connections_refused: Counter::default(),
            connections_evicted: Counter::default(),
        }
    }
}

/// One credential's expiry, for a server admin's scrape.
pub struct CredentialExpiry {
    pub org: String,
    pub kind: String,
    pub owner: String,
    pub name: String,
    /// Unix time.
    pub expires_at: i64,
}

/// What a scrape reads from the stores and services at that moment.
#[derive(Default)]
pub struct Readings {
    pub uploads_active: i64,
    /// Upload memory not reserved (`--upload-memory`), bytes.
    pub upload_memory_free: u64,
    /// Download memory not taken (`--download-memory`), bytes.
    pub download_memory_free: u64,
    /// Connections closed to take back download memory they held unused while others waited.
    pub download_memory_reclaimed: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Workload token exchanges by outcome since the server started.
    pub exchanges: Vec<(&'static str, u64)>,
    /// Empty unless the scrape is a server admin's.
    pub expiries: Vec<CredentialExpiry>,
}

impl Metrics {
    /// A waiting connection closed to make room for a new one at the connection limit.
    pub fn connection_evicted(&self) {
        self.connections_evicted.inc();
    }

    /// A connection closed at once because the server was at its connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Request body bytes received (counted as the body streams in).
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    pub fn record(&self, route: &'static str, status: u16, elapsed: Duration, bytes_out: u64) {
        self.bytes_out.inc_by(bytes_out);
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        self.durations
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    /// The text of one scrape: the server's counters and `now`'s readings.
    pub fn render(&self, now: Readings) -> String {
        let mut reg = Registry::default();
        reg.register(
            "berth_connections_refused",
            "Connections closed at once at the connection limit or their address's",
            self.connections_refused.clone(),
        );
        reg.register(
            "berth_connections_evicted",
            "Connections waiting for a request closed to make room for a new one",
            self.connections_evicted.clone(),
        );
        reg.register(
            "berth_http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        reg.register(
            "berth_http_request_duration_seconds",
            "Time to produce response headers, by route",
            self.durations.clone(),
        );
        reg.register(
            "berth_http_request_bytes",
            "Request body bytes received",
            self.bytes_in.clone(),
        );
        reg.register(
            "berth_http_response_bytes",
            "Response body bytes announced by Content-Length",
            self.bytes_out.clone(),
        );
        let gauge = |v: i64| {
            let g: Gauge = Gauge::default();
            g.set(v);
            g
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        reg.register(
            "berth_uploads_in_progress",
            "Requests streaming upload bytes now",
            gauge(now.uploads_active),
        );
        reg.register(
            "berth_upload_memory_free_bytes",
            "Upload memory (--upload-memory) not reserved by upload requests now",
            gauge(count(now.upload_memory_free)),
        );
        reg.register(
            "berth_download_memory_free_bytes",
            "Download memory (--download-memory) not taken by answers' chunks now",
            gauge(count(now.download_memory_free)),
        );
        let reclaimed: Counter = Counter::default();
        reclaimed.inc_by(now.download_memory_reclaimed);
        reg.register(
            "berth_download_memory_reclaimed",
            "Connections closed to take back download memory they held unread while others waited",
            reclaimed,
        );
        reg.register(
            "berth_blobs_stored",
            "Blobs in the blob store",
            gauge(count(now.blobs)),
        );
        reg.register(
            "berth_blob_bytes_stored",
            "Total size of the stored blobs",
            gauge(count(now.blob_bytes)),
        );
        let exchanges = Family::<OutcomeLabel, Counter>::default();
        for (outcome, n) in now.exchanges {
            exchanges.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
        }
        reg.register(
            "berth_workload_exchanges",
            "Workload tokens presented for a registry token, by outcome",
            exchanges,
        );
        let expiries = Family::<CredentialLabels, Gauge>::default();
        for e in now.expiries {
            let labels = CredentialLabels {
                org: e.org,
                kind: e.kind,
                owner: e.owner,
                name: e.name,
            };
            expiries.get_or_create(&labels).set(e.expires_at);
        }
        reg.register(
            "berth_credential_expiry_timestamp_seconds",
            "When a credential expires (Unix time), by organization, kind, owner and name (in a server admin's scrape only)",
            expiries,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &reg);
        out
    }
}
