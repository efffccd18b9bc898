//! Counters and latency figures, rendered in the Prometheus text format at `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The relay's metrics.
#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    connections_total: AtomicU64,
    envelopes_in: AtomicU64,
    envelopes_out: AtomicU64,
    acks: AtomicU64,
    receipts_out: AtomicU64,
    store_latency_us_sum: AtomicU64,
    store_ops: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
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
    pub(crate) fn acked(&self, n: u64) {
        self.acks.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn receipt_out(&self) {
        self.receipts_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn store_latency(&self, d: std::time::Duration) {
        self.store_latency_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.store_ops.fetch_add(1, Ordering::Relaxed);
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
        line(
            "hush_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections(),
        );
        line(
            "hush_connections_total",
            "counter",
            "Accepted WebSocket connections.",
            self.connections_total.load(Ordering::Relaxed),
        );
        line(
            "hush_envelopes_in_total",
            "counter",
            "Envelopes stored (one per recipient device).",
            self.envelopes_in.load(Ordering::Relaxed),
        );
        line(
            "hush_envelopes_out_total",
            "counter",
            "Envelopes pushed to devices.",
            self.envelopes_out.load(Ordering::Relaxed),
        );
        line(
            "hush_acks_total",
            "counter",
            "Envelopes acknowledged and deleted.",
            self.acks.load(Ordering::Relaxed),
        );
        line(
            "hush_receipts_out_total",
            "counter",
            "Receipts pushed to senders.",
            self.receipts_out.load(Ordering::Relaxed),
        );
        line(
            "hush_store_latency_microseconds_sum",
            "counter",
            "Total time in store operations.",
            self.store_latency_us_sum.load(Ordering::Relaxed),
        );
        line(
            "hush_store_operations_total",
            "counter",
            "Store operations.",
            self.store_ops.load(Ordering::Relaxed),
        );
        out.push_str("# HELP hush_rejections_total Refused requests by reason.\n# TYPE hush_rejections_total counter\n");
        if let Ok(r) = self.rejections.lock() {
            for (reason, n) in r.iter() {
                out.push_str(&format!(
                    "hush_rejections_total{{reason=\"{reason}\"}} {n}\n"
                ));
            }
        }
        out
    }
}
