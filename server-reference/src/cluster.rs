//! Several relay nodes, one mailbox: NATS carries wake-ups between nodes. When a node stores
//! an envelope or receipt for a device connected to another node, it publishes a wake-up
//! there; the other node drains that device's mailbox from the shared database. NATS is a
//! hint, never the record: a lost wake-up only delays delivery until the next poll
//! ([`Config::poll_interval`](crate::Config::poll_interval)), and after a NATS restart the
//! client reconnects and resubscribes by itself.
//!
//! Subjects: `{prefix}.wake`, `{prefix}.prekeys` and `{prefix}.connected`, each carrying
//! `u64be(node id) ‖ u32be(device) ‖ user id`.

use std::sync::Arc;

use futures_util::StreamExt;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// New mail or receipts for the device.
    Wake,
    /// The device's one-time prekey stock changed.
    Prekeys,
    /// The device connected to the sending node (older connections elsewhere close).
    Connected,
}

impl Signal {
    const fn name(self) -> &'static str {
        match self {
            Self::Wake => "wake",
            Self::Prekeys => "prekeys",
            Self::Connected => "connected",
        }
    }
}

/// This node's link to the others.
pub(crate) struct Cluster {
    client: async_nats::Client,
    prefix: String,
    node: u64,
}

fn encode(node: u64, addr: &Addr) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + addr.user.len());
    b.extend_from_slice(&node.to_be_bytes());
    b.extend_from_slice(&addr.device.to_be_bytes());
    b.extend_from_slice(addr.user.as_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u64, Addr)> {
    let node = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let device = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
    let user = std::str::from_utf8(b.get(12..)?).ok()?.to_string();
    Some((node, Addr { user, device }))
}

impl Cluster {
    /// Connects to NATS at `url`. Keeps retrying in the background if NATS is not up yet.
    pub(crate) async fn connect(url: &str, prefix: &str) -> Result<Self, String> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(std::time::Duration::from_secs(5))
            .event_callback(|e| async move {
                tracing::info!(event = %e, "nats");
            })
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let mut node = [0u8; 8];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut node);
        Ok(Self {
            client,
            prefix: prefix.to_string(),
            node: u64::from_be_bytes(node),
        })
    }

    /// Tells the other nodes (fire and forget: NATS buffers while reconnecting).
    pub(crate) fn publish(&self, signal: Signal, addr: &Addr) {
        let client = self.client.clone();
        let subject = format!("{}.{}", self.prefix, signal.name());
        let payload = encode(self.node, addr);
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, payload.into()).await {
                tracing::warn!(error = %e, "nats publish failed; delivery falls back to polling");
            }
        });
    }

    /// Listens for the other nodes' signals and applies them to this node's connections.
    pub(crate) async fn listen(self: Arc<Self>, hub: Arc<Hub>, metrics: Arc<Metrics>) {
        loop {
            let mut sub = match self.client.subscribe(format!("{}.*", self.prefix)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "nats subscribe failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(m) = sub.next().await {
                let Some((node, addr)) = decode(&m.payload) else {
                    continue;
                };
                if node == self.node {
                    continue;
                }
                metrics.cluster_received();
                match m.subject.as_str().rsplit('.').next() {
                    Some("wake") => hub.wake(&addr),
                    Some("prekeys") => hub.prekeys_taken(&addr),
                    Some("connected") => hub.kick(&addr),
                    _ => {}
                }
            }
        }
    }
}
