//! Counters, a latency histogram and gauges, rendered in the Prometheus text format at
//! `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (µs) of the request-latency histogram buckets.
const LATENCY_BOUNDS_US: [u64; 10] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// The relay's metrics.
#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    connections_total: AtomicU64,
    envelopes_in: AtomicU64,
    envelopes_out: AtomicU64,
    acks: AtomicU64,
    reports: AtomicU64,
    receipts_out: AtomicU64,
    latency_us_sum: AtomicU64,
    requests: AtomicU64,
    /// Requests at or under each bound of [`LATENCY_BOUNDS_US`].
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
    queue_depth: AtomicU64,
    sockets: AtomicU64,
    cluster_out: AtomicU64,
    cluster_in: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    /// Parsed requests by kind (`Request::kind`).
    kinds: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub(crate) fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn disconnected(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
    /// Open connections now.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    pub(crate) fn envelope_in(&self, recipients: u64) {
        self.envelopes_in.fetch_add(recipients, Ordering::Relaxed);
    }
    pub(crate) fn envelope_out(&self) {
        self.envelopes_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn report_in(&self) {
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn acked(&self, n: u64) {
        self.acks.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn cluster_sent(&self) {
        self.cluster_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn cluster_received(&self) {
        self.cluster_in.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn receipt_out(&self) {
        self.receipts_out.fetch_add(1, Ordering::Relaxed);
    }
    /// Records how long one request took, store included.
    pub(crate) fn store_latency(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        self.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        for (bound, bucket) in LATENCY_BOUNDS_US.iter().zip(&self.latency_buckets) {
            if us <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    /// Records how many store operations are waiting for the database.
    pub(crate) fn set_sockets(&self, n: u64) {
        self.sockets.store(n, Ordering::Relaxed);
    }
    pub(crate) fn set_queue_depth(&self, n: u64) {
        self.queue_depth.store(n, Ordering::Relaxed);
    }
    pub(crate) fn request(&self, kind: &'static str) {
        if let Ok(mut k) = self.kinds.lock() {
            *k.entry(kind).or_default() += 1;
        }
    }
    /// Requests of one kind (`send`, `ack`, `list_devices`...) parsed so far.
    pub fn requests(&self, kind: &str) -> u64 {
        self.kinds
            .lock()
            .ok()
            .and_then(|k| k.get(kind).copied())
            .unwrap_or(0)
    }
    pub(crate) fn reject(&self, reason: &'static str) {
        if let Ok(mut r) = self.rejections.lock() {
            *r.entry(reason).or_default() += 1;
        }
    }
    /// Rejections so far for `reason`.
    pub fn rejections(&self, reason: &str) -> u64 {
        self.rejections
            .lock()
            .ok()
            .and_then(|r| r.get(reason).copied())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        line(
            "hush_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections(),
        );
        line(
            "hush_sockets",
            "gauge",
            "Open sockets that are not WebSocket connections (HTTP requests, and sockets that have not sent a complete request yet).",
            get(&self.sockets),
        );
        line(
            "hush_connections_total",
            "counter",
            "Accepted WebSocket connections.",
            get(&self.connections_total),
        );
        line(
            "hush_cluster_signals_out_total",
            "counter",
            "Wake-ups and other signals raised for other relay nodes (NATS), before coalescing.",
            get(&self.cluster_out),
        );
        line(
            "hush_cluster_signals_in_total",
            "counter",
            "Signals received from other relay nodes (NATS).",
            get(&self.cluster_in),
        );
        line(
            "hush_envelopes_in_total",
            "counter",
            "Envelopes stored (one per recipient device).",
            get(&self.envelopes_in),
        );
        line(
            "hush_envelopes_out_total",
            "counter",
            "Envelopes pushed to devices.",
            get(&self.envelopes_out),
        );
        line(
            "hush_acks_total",
            "counter",
            "Envelopes acknowledged and deleted.",
            get(&self.acks),
        );
        line(
            "hush_reports_total",
            "counter",
            "Abuse reports verified and kept (SPEC §17).",
            get(&self.reports),
        );
        line(
            "hush_receipts_out_total",
            "counter",
            "Receipts pushed to senders.",
            get(&self.receipts_out),
        );
        line(
            "hush_store_queue_depth",
            "gauge",
            "Store operations waiting for the database.",
            get(&self.queue_depth),
        );
        out.push_str(
            "# HELP hush_request_latency_microseconds Time to handle a request, store included.\n",
        );
        out.push_str("# TYPE hush_request_latency_microseconds histogram\n");
        for (bound, bucket) in LATENCY_BOUNDS_US.iter().zip(&self.latency_buckets) {
            out.push_str(&format!(
                "hush_request_latency_microseconds_bucket{{le=\"{bound}\"}} {}\n",
                get(bucket)
            ));
        }
        let n = get(&self.requests);
        out.push_str(&format!(
            "hush_request_latency_microseconds_bucket{{le=\"+Inf\"}} {n}\n"
        ));
        out.push_str(&format!(
            "hush_request_latency_microseconds_sum {}\n",
            get(&self.latency_us_sum)
        ));
        out.push_str(&format!("hush_request_latency_microseconds_count {n}\n"));
        out.push_str("# HELP hush_rejections_total Refused requests by reason.\n# TYPE hush_rejections_total counter\n");
        if let Ok(r) = self.rejections.lock() {
            for (reason, count) in r.iter() {
                out.push_str(&format!(
                    "hush_rejections_total{{reason=\"{reason}\"}} {count}\n"
                ));
            }
        }
        out.push_str("# HELP hush_requests_total Parsed requests by kind, after authentication.\n# TYPE hush_requests_total counter\n");
        if let Ok(k) = self.kinds.lock() {
            for (kind, count) in k.iter() {
                out.push_str(&format!("hush_requests_total{{kind=\"{kind}\"}} {count}\n"));
            }
        }
        out
    }
}
