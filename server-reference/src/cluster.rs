//! Several relay nodes, one mailbox: NATS carries wake-ups between nodes. When a node stores
//! an envelope or receipt for a device connected to another node, it publishes a wake-up
//! there; the other node drains that device's mailbox from the shared database. NATS is a
//! hint, never the record: a lost wake-up only delays delivery until the next poll
//! ([`Config::poll_interval`](crate::Config::poll_interval)), and after a NATS restart the
//! client reconnects and resubscribes by itself.
//!
//! Signals are coalesced: what the node's connections signal while its last message is being
//! handed to NATS goes out in one message per kind, each device once, so a busy node sends a
//! few NATS messages per batch of commits rather than one per envelope.
//!
//! Subjects: `{prefix}.v2.wake`, `{prefix}.v2.prekeys` and `{prefix}.v2.connected`, each
//! carrying `u64be(node id) ‖ (u32be(device) ‖ u8(len(user id)) ‖ user id)*`, at most
//! [`MAX_SIGNAL_PAYLOAD`] bytes. (Nodes of the version before, which sent one device per
//! message on `{prefix}.wake`…, do not hear these, nor these them: during a rolling upgrade
//! mail between old and new nodes waits for the poll.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Addr;

/// Largest payload of one NATS message of signals; more devices go in further messages.
pub(crate) const MAX_SIGNAL_PAYLOAD: usize = 32 * 1024;
/// Most devices waiting to be signalled, per kind: past it a signal is dropped (a wake-up's
/// mail waits for the next poll, a "connected" kick for the next one), so a stalled NATS
/// link cannot grow memory without bound. (While NATS is away, the NATS client also holds up
/// to 2,048 messages it was handed, at most [`MAX_SIGNAL_PAYLOAD`] each.)
pub(crate) const MAX_PENDING_SIGNALS: usize = 65_536;
/// Most messages from other nodes waiting to be applied (the NATS client drops more, as a
/// slow consumer's): at most 32 MiB of signals.
const SUBSCRIPTION_CAPACITY: usize = 1024;

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
    const ALL: [Self; 3] = [Self::Wake, Self::Prekeys, Self::Connected];

    const fn name(self) -> &'static str {
        match self {
            Self::Wake => "wake",
            Self::Prekeys => "prekeys",
            Self::Connected => "connected",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Wake => 0,
            Self::Prekeys => 1,
            Self::Connected => 2,
        }
    }
}

/// This node's link to the others.
pub(crate) struct Cluster {
    client: async_nats::Client,
    prefix: String,
    node: u64,
    /// Devices to signal, by [`Signal::index`], until the publisher takes them.
    pending: Mutex<[HashSet<Addr>; 3]>,
    /// Tells the publisher there is something to send, or that the cluster is gone.
    ready: Arc<tokio::sync::Notify>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.ready.notify_one();
    }
}

/// `node`'s messages carrying `addrs`, each at most [`MAX_SIGNAL_PAYLOAD`] bytes.
fn encode<'a>(node: u64, addrs: impl IntoIterator<Item = &'a Addr>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = Vec::new();
    for a in addrs {
        // A user id is at most 64 bytes (checked where it enters the relay).
        let Ok(len) = u8::try_from(a.user.len()) else {
            continue;
        };
        if !b.is_empty() && b.len() + 5 + a.user.len() > MAX_SIGNAL_PAYLOAD {
            out.push(std::mem::take(&mut b));
        }
        if b.is_empty() {
            b.extend_from_slice(&node.to_be_bytes());
        }
        b.extend_from_slice(&a.device.to_be_bytes());
        b.push(len);
        b.extend_from_slice(a.user.as_bytes());
    }
    if !b.is_empty() {
        out.push(b);
    }
    out
}

/// The sending node and the devices of a message; `None` if it is malformed anywhere.
fn decode(b: &[u8]) -> Option<(u64, Vec<Addr>)> {
    let node = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let mut rest = &b[8..];
    let mut addrs = Vec::new();
    while !rest.is_empty() {
        let device = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let len = usize::from(*rest.get(4)?);
        let user = std::str::from_utf8(rest.get(5..5 + len)?).ok()?.to_string();
        addrs.push(Addr { user, device });
        rest = &rest[5 + len..];
    }
    Some((node, addrs))
}

impl Cluster {
    /// Connects to NATS at `url`. Keeps retrying in the background if NATS is not up yet.
    pub(crate) async fn connect(url: &str, prefix: &str) -> Result<Arc<Self>, String> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .connection_timeout(std::time::Duration::from_secs(5))
            .event_callback(|e| async move {
                tracing::info!(event = %e, "nats");
            })
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let mut node = [0u8; 8];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut node);
        let cluster = Arc::new(Self {
            client,
            prefix: prefix.to_string(),
            node: u64::from_be_bytes(node),
            pending: Mutex::default(),
            ready: Arc::default(),
        });
        tokio::spawn(Self::publisher(
            Arc::downgrade(&cluster),
            cluster.ready.clone(),
        ));
        Ok(cluster)
    }

    /// Tells the other nodes, soon (fire and forget: NATS buffers while reconnecting).
    pub(crate) fn publish(&self, signal: Signal, addr: &Addr) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let set = &mut pending[signal.index()];
            if set.len() >= MAX_PENDING_SIGNALS {
                return;
            }
            if !set.contains(addr) {
                set.insert(addr.clone());
            }
        }
        self.ready.notify_one();
    }

    /// Sends what has been signalled since its last message, one kind at a time; ends when
    /// the cluster is dropped.
    async fn publisher(cluster: std::sync::Weak<Self>, ready: Arc<tokio::sync::Notify>) {
        loop {
            ready.notified().await;
            let Some(this) = cluster.upgrade() else {
                return;
            };
            let taken =
                std::mem::take(&mut *this.pending.lock().unwrap_or_else(|e| e.into_inner()));
            let (client, prefix, node) = (this.client.clone(), this.prefix.clone(), this.node);
            // Not held while publishing (which waits while NATS is away), so a relay that
            // stops then still drops its cluster and this task ends.
            drop(this);
            for (signal, addrs) in Signal::ALL.into_iter().zip(taken) {
                if addrs.is_empty() {
                    continue;
                }
                let subject = format!("{prefix}.v2.{}", signal.name());
                for payload in encode(node, &addrs) {
                    if let Err(e) = client.publish(subject.clone(), payload.into()).await {
                        tracing::warn!(error = %e, "nats publish failed; delivery falls back to polling");
                    }
                }
            }
        }
    }

    /// Listens for the other nodes' signals and applies them to this node's connections.
    pub(crate) async fn listen(self: Arc<Self>, hub: Arc<Hub>, metrics: Arc<Metrics>) {
        loop {
            let mut sub = match self.client.subscribe(format!("{}.v2.*", self.prefix)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "nats subscribe failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(m) = sub.next().await {
                let Some((node, addrs)) = decode(&m.payload) else {
                    continue;
                };
                if node == self.node {
                    continue;
                }
                let signal = m.subject.as_str().rsplit('.').next();
                for addr in &addrs {
                    metrics.cluster_received();
                    match signal {
                        Some("wake") => hub.wake(addr),
                        Some("prekeys") => hub.prekeys_taken(addr),
                        Some("connected") => hub.kick(addr),
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(user: &str, device: u32) -> Addr {
        Addr {
            user: user.into(),
            device,
        }
    }

    #[test]
    fn signals_round_trip_and_split_at_the_payload_limit() {
        let one = vec![addr("alice", 7)];
        let out = encode(0x0102_0304_0506_0708, &one);
        assert_eq!(
            out,
            vec![[&[1, 2, 3, 4, 5, 6, 7, 8][..], &[0, 0, 0, 7, 5], b"alice"].concat()]
        );
        assert_eq!(decode(&out[0]), Some((0x0102_0304_0506_0708, one)));

        // 64-byte user ids: 69 bytes each after the 8-byte node id.
        let many: Vec<Addr> = (0..1000).map(|i| addr(&format!("{i:064}"), i)).collect();
        let out = encode(9, &many);
        let per = (MAX_SIGNAL_PAYLOAD - 8) / 69;
        assert_eq!(out.len(), 1000_usize.div_ceil(per));
        assert!(out.iter().all(|p| p.len() <= MAX_SIGNAL_PAYLOAD));
        assert_eq!(out[0].len(), 8 + per * 69);
        let back: Vec<Addr> = out.iter().flat_map(|p| decode(p).unwrap().1).collect();
        assert_eq!(back, many);
    }

    /// Through the real NATS server: signals raised while the publisher cannot run wait,
    /// each device once, up to [`MAX_PENDING_SIGNALS`]; past that they are dropped; then they
    /// arrive at another node, exactly those devices.
    #[tokio::test]
    async fn pending_signals_are_capped_and_arrive_coalesced() {
        let prefix = format!("hush-test-{}", std::process::id());
        let cluster = Cluster::connect("nats://127.0.0.1:4222", &prefix)
            .await
            .unwrap();
        let listener = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
        let mut sub = listener
            .subscribe(format!("{prefix}.v2.wake"))
            .await
            .unwrap();
        listener.flush().await.unwrap();
        // This runtime has one thread: the publisher runs only once this loop yields.
        for i in 0..=MAX_PENDING_SIGNALS {
            let a = addr(&format!("u{i}"), 1);
            cluster.publish(Signal::Wake, &a);
            cluster.publish(Signal::Wake, &a);
        }
        assert_eq!(
            cluster.pending.lock().unwrap()[Signal::Wake.index()].len(),
            MAX_PENDING_SIGNALS
        );
        let mut got = HashSet::new();
        let mut messages = 0;
        while got.len() < MAX_PENDING_SIGNALS {
            let m = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
                .await
                .expect("signals arrive")
                .unwrap();
            assert!(m.payload.len() <= MAX_SIGNAL_PAYLOAD);
            let (node, addrs) = decode(&m.payload).unwrap();
            assert_eq!(node, cluster.node);
            messages += 1;
            for a in addrs {
                assert!(got.insert(a), "a device signalled twice");
            }
        }
        assert!(!got.contains(&addr(&format!("u{MAX_PENDING_SIGNALS}"), 1)));
        // 65,536 devices of 7-11 bytes each: a few dozen messages, not one per signal.
        assert!(messages < 100, "{messages} messages");
    }

    #[test]
    fn malformed_signals_are_ignored() {
        let good = encode(1, &[addr("bob", 1), addr("carol", 2)]).remove(0);
        for cut in 0..good.len() {
            // Every prefix that ends inside an address is refused whole.
            let ends_between = cut == 8 || cut == 8 + 5 + 3;
            assert_eq!(decode(&good[..cut]).is_some(), ends_between, "cut at {cut}");
        }
        let mut bad_utf8 = good.clone();
        bad_utf8[13] = 0xff;
        assert_eq!(decode(&bad_utf8), None);
    }
}
