//! # hush-relay
//!
//! The reference relay: a thin server that stores only public keys, ciphertext, receipts
//! and presence timestamps. Devices connect over WebSocket (binary protobuf frames,
//! `hush-relay-protocol`), prove they hold their identity key by signing a fresh
//! challenge, and then upload prekeys, fetch bundles, send envelopes (one ciphertext for up
//! to 256 recipient devices), receive their mailbox in order, acknowledge, and exchange
//! delivered and read receipts and presence. The same port serves `/healthz`, `/readyz`,
//! Prometheus `/metrics` and attachment blobs (`POST /v1/blobs`, `GET /v1/blobs/{id}`) over
//! plain HTTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hush_relay::{Config, Relay, SqliteStore};
//!
//! let store = SqliteStore::open(std::path::Path::new("relay.db"))?;
//! let config = Config { listen: "127.0.0.1:0".parse()?, ..Config::default() };
//! let relay = Relay::build(config, store).await?;
//! println!("listening on {}", relay.local_addr());
//! relay.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod blobs;
pub mod cli;
mod cluster;
mod connection;
pub mod hook;
mod hub;
pub mod limits;
mod listen;
pub mod metrics;
pub use store::pg;
pub mod redacted;
pub mod store;
mod tls;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use limits::RateLimit;
pub use pg::{PgStore, Routing, ShardedPgStore};
pub use redacted::Redacted;
pub use store::{SqliteStore, Store};

/// The relay protocol's wire types (`hush-relay-protocol`), re-exported for callers of the
/// relay's library API.
pub use hush_relay_protocol::proto;

/// Relay settings. Every field has a documented default (see [`Config::default`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:7800`.
    pub listen: SocketAddr,
    /// The relay's identity, bound into every authentication challenge. Default
    /// `hush-relay`. Give each deployment its own, so a signature for one is useless at another.
    pub relay_id: Vec<u8>,
    /// If set, registering a new user requires this token.
    pub registration_token: Option<redacted::Redacted<Vec<u8>>>,
    /// If set, the relay asks this HTTP endpoint before a new user id is claimed
    /// (`POST` with the user id, device, identity key and registration token as JSON; a
    /// `2xx` answer allows it, anything else or no answer within 5 s refuses it). Default:
    /// none.
    pub registration_hook: Option<hook::HookUrl>,
    /// Largest WebSocket frame accepted (bytes). Default 300 KiB.
    pub max_frame_bytes: usize,
    /// Largest envelope ciphertext (bytes). Default 260 KiB: a session message with the largest
    /// plaintext (`hush_sessions::limits::MAX_MESSAGE_LEN`, 258 KiB) fits, wrapped.
    pub max_envelope_bytes: usize,
    /// Most recipients of one send. Default 256.
    pub max_recipients: usize,
    /// Most envelopes queued per device. Default 10,000.
    pub mailbox_max_count: u64,
    /// Most bytes queued per device. Default 100 MiB.
    pub mailbox_max_bytes: u64,
    /// Most envelopes one sending user may have queued in one device's mailbox, so no
    /// stranger fills it. Default 1,000 (a tenth of the mailbox).
    pub mailbox_sender_max_count: u64,
    /// Most bytes one sending user may have queued in one device's mailbox. Default 10 MiB.
    pub mailbox_sender_max_bytes: u64,
    /// How long an envelope waits before it expires. Default 30 days.
    pub mailbox_ttl: Duration,
    /// Most devices one user may register (a phone and companions). Default 16; at most
    /// [`hush_relay_protocol::limits::MAX_DEVICES_PER_USER`], so a device list always fits
    /// in a frame.
    pub max_devices_per_user: usize,
    /// Most abuse reports (SPEC §17) one user may make in 24 hours; more are refused with
    /// `RATE_LIMITED`. Default 50.
    pub max_reports_per_day: u32,
    /// Most receipts queued for one device; past it new receipts for that device are
    /// dropped until it acknowledges some. Default 100,000.
    pub receipt_max_queued: u64,
    /// How long a queued receipt is kept, and how long after delivery a message can still
    /// be marked read. Default 7 days.
    pub receipt_ttl: Duration,
    /// Most sockets from one IP address that have not sent a complete HTTP request yet.
    /// Default 64.
    pub max_pending_per_ip: usize,
    /// Time allowed for a request's header, from the socket's accept (or the previous
    /// response); a slower client is disconnected. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time allowed for a TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Most simultaneous connections: WebSocket connections and every other open socket
    /// together. Default 19,000.
    pub max_connections: usize,
    /// Time allowed to authenticate after connecting. Default 10 s.
    pub auth_timeout: Duration,
    /// An authenticated connection silent this long is closed. Default 120 s.
    pub idle_timeout: Duration,
    /// Frames per second per device (with a burst of twice that). Default 200.
    pub device_rate: RateLimit,
    /// Frames per second per IP address. Default 1,000.
    pub ip_rate: RateLimit,
    /// How long a user that sent envelopes to another lets it see its presence (renewed by
    /// every send). Default 30 days.
    pub presence_grant_ttl: Duration,
    /// A user is online if active within this window. Default 60 s.
    pub online_window: Duration,
    /// A connection records its user's activity at authentication and then at most this
    /// often, on the first frame after each interval: presence costs a database write per
    /// interval per connected device, never one per frame. More than zero; a value over
    /// `online_window` counts as `online_window` (an active user would otherwise look
    /// offline). Default 10 s; a large deployment trades presence precision for writes here
    /// (DEPLOYMENT §7).
    pub presence_interval: Duration,
    /// Below this many one-time prekeys, or one-time KEM prekeys, a device is told to refill.
    /// Default 20.
    pub prekey_low_watermark: u64,
    /// Bundle fetches per requesting device. Default 10/s with a burst of 1,000 (a new
    /// group of 256 members with several devices each).
    pub bundle_rate: RateLimit,
    /// One-time prekeys handed out per target device; past it, bundles come without one
    /// (the session is still set up, with less forward secrecy for its first message).
    /// Default 1 per 30 s with a burst of 100.
    pub prekey_handout_rate: RateLimit,
    /// Most one-time prekeys the relay keeps for one device. Default 1,000.
    pub max_one_time_prekeys: u64,
    /// Most one-time prekeys in one upload. Default 500.
    pub max_prekeys_per_upload: usize,
    /// Most one-time KEM prekeys the relay keeps for one device (about 1.25 KB each).
    /// Default 200.
    pub max_one_time_kem_prekeys: u64,
    /// Most one-time KEM prekeys in one upload. Default 100 (about 125 KiB, within
    /// `max_frame_bytes`).
    pub max_kem_prekeys_per_upload: usize,
    /// Serve the web client at `/` (`web.rs`). Default true.
    pub web_client: bool,
    /// Directory for attachment blobs. Default `hush-blobs`.
    pub blob_dir: std::path::PathBuf,
    /// Largest blob (bytes). Default 100 MiB.
    pub max_blob_bytes: u64,
    /// How long a blob is kept. Default 30 days.
    pub blob_ttl: Duration,
    /// Upload tokens per device. Default a burst of 20, then one per 5 s.
    pub upload_token_rate: RateLimit,
    /// Blob bytes one device may upload per UTC day. Default 1 GiB.
    pub blob_bytes_per_day: u64,
    /// How long an upload token stays valid. Default 5 minutes.
    pub upload_token_ttl: Duration,
    /// Serve TLS with this certificate chain and private key (PEM files). Default: none
    /// (plain; put a TLS terminator in front).
    pub tls: Option<TlsFiles>,
    /// NATS server for wake-ups between relay nodes sharing one database (PostgreSQL).
    /// Default: none (a single node).
    pub nats_url: Option<String>,
    /// Subject prefix of this deployment's NATS messages. Default `hush`.
    pub nats_prefix: String,
    /// Connections also check their mailbox this often, so a lost wake-up only delays
    /// delivery. Default: none for a single node; `hush relay --postgres` sets 2 s.
    pub poll_interval: Option<Duration>,
}

/// PEM files for built-in TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

impl Config {
    /// The per-request limits that parsing a request checks.
    pub fn request_limits(&self) -> hush_relay_protocol::request::RequestLimits {
        hush_relay_protocol::request::RequestLimits {
            max_recipients: self.max_recipients,
            max_envelope_bytes: self.max_envelope_bytes,
            max_prekeys_per_upload: self.max_prekeys_per_upload,
            max_kem_prekeys_per_upload: self.max_kem_prekeys_per_upload,
        }
    }

    /// The receipt limits the store applies.
    pub fn receipt_limits(&self) -> store::ReceiptLimits {
        store::ReceiptLimits {
            max_queued: self.receipt_max_queued,
            ttl_ms: u64::try_from(self.receipt_ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// How often a connection writes its user's activity: `presence_interval`, at most
    /// `online_window`.
    pub fn presence_every(&self) -> Duration {
        self.presence_interval.min(self.online_window)
    }

    /// Checks the settings that have bounds: a rate of at least one per second, at least
    /// one device per user and at most
    /// [`MAX_DEVICES_PER_USER`](hush_relay_protocol::limits::MAX_DEVICES_PER_USER), and a
    /// presence interval of more than zero.
    pub fn validate(&self) -> Result<(), RelayError> {
        let bad = |what: &str| Err(RelayError::Config(what.to_string()));
        if !(self.device_rate.per_second >= 1.0 && self.device_rate.burst >= 1.0) {
            return bad("device_rate must be at least 1 per second");
        }
        if !(self.ip_rate.per_second >= 1.0 && self.ip_rate.burst >= 1.0) {
            return bad("ip_rate must be at least 1 per second");
        }
        if self.max_devices_per_user == 0
            || self.max_devices_per_user > hush_relay_protocol::limits::MAX_DEVICES_PER_USER
        {
            return bad("max_devices_per_user must be between 1 and 1024");
        }
        if self.receipt_max_queued == 0 {
            return bad("receipt_max_queued must be at least 1");
        }
        if self.presence_interval.is_zero() {
            return bad("presence_interval must be more than 0");
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            relay_id: b"hush-relay".to_vec(),
            registration_token: None,
            registration_hook: None,
            max_frame_bytes: 300 * 1024,
            max_envelope_bytes: 260 * 1024,
            max_recipients: 256,
            mailbox_max_count: 10_000,
            mailbox_max_bytes: 100 * 1024 * 1024,
            mailbox_sender_max_count: 1000,
            mailbox_sender_max_bytes: 10 * 1024 * 1024,
            mailbox_ttl: Duration::from_secs(30 * 24 * 3600),
            max_devices_per_user: 16,
            max_reports_per_day: 50,
            receipt_max_queued: 100_000,
            receipt_ttl: Duration::from_secs(7 * 24 * 3600),
            max_connections: 19_000,
            max_pending_per_ip: 64,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            device_rate: RateLimit::per_second(200),
            ip_rate: RateLimit::per_second(1000),
            online_window: Duration::from_secs(60),
            presence_interval: Duration::from_secs(10),
            presence_grant_ttl: Duration::from_secs(30 * 24 * 3600),
            prekey_low_watermark: 20,
            max_prekeys_per_upload: 500,
            bundle_rate: RateLimit {
                per_second: 10.0,
                burst: 1000.0,
            },
            prekey_handout_rate: RateLimit {
                per_second: 1.0 / 30.0,
                burst: 100.0,
            },
            max_one_time_prekeys: 1000,
            max_one_time_kem_prekeys: 200,
            max_kem_prekeys_per_upload: 100,
            blob_dir: std::path::PathBuf::from("hush-blobs"),
            max_blob_bytes: 100 * 1024 * 1024,
            blob_ttl: Duration::from_secs(30 * 24 * 3600),
            upload_token_ttl: Duration::from_secs(300),
            upload_token_rate: RateLimit {
                per_second: 0.2,
                burst: 20.0,
            },
            blob_bytes_per_day: 1 << 30,
            web_client: true,
            tls: None,
            nats_url: None,
            nats_prefix: "hush".into(),
            poll_interval: None,
        }
    }
}

/// Shared state of a running relay.
pub(crate) struct Shared<S> {
    pub(crate) config: Config,
    /// The relay's franking key (SPEC §17), the same on every node of the store.
    pub(crate) franking: hush_crypto::franking::RelayFrankingKey,
    pub(crate) store: S,
    pub(crate) hub: Arc<hub::Hub>,
    /// The store pushes what it commits into the hub (see [`Store::deliver_on_commit`]).
    pub(crate) direct: bool,
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) ip_limits: limits::Limiter<std::net::IpAddr>,
    pub(crate) device_limits: limits::Limiter<store::Addr>,
    /// Open sockets not (yet) WebSocket connections.
    pub(crate) sockets: Arc<listen::Sockets>,
    /// Presence grants (owner, viewer) this node wrote recently, and when: a grant is
    /// written again only once a day, not with every envelope.
    pub(crate) grants: std::sync::Mutex<std::collections::HashMap<(String, String), u64>>,
    /// Bundle fetches, by requesting device.
    pub(crate) bundle_limits: limits::Limiter<store::Addr>,
    /// One-time prekeys handed out, by target device.
    pub(crate) handout_limits: limits::Limiter<store::Addr>,
    /// Upload tokens, by device.
    pub(crate) token_limits: limits::Limiter<store::Addr>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl<S> Shared<S> {
    /// New mail or receipts for `addr`: wake its connection, here or on another node.
    pub(crate) fn wake(&self, addr: &store::Addr) {
        if self.hub.is_local(addr) {
            self.hub.wake(addr);
        } else if let Some(c) = &self.cluster {
            c.publish(cluster::Signal::Wake, addr);
            self.metrics.cluster_sent();
        }
    }

    /// Something for `addr` was committed: wake it unless the store's hook already pushed it
    /// here.
    pub(crate) fn committed_for(&self, addr: &store::Addr) {
        if !(self.direct && self.hub.is_local(addr)) {
            self.wake(addr);
        }
    }

    /// `addr`'s one-time prekey stock changed.
    pub(crate) fn prekeys_taken(&self, addr: &store::Addr) {
        if self.hub.is_local(addr) {
            self.hub.prekeys_taken(addr);
        } else if let Some(c) = &self.cluster {
            c.publish(cluster::Signal::Prekeys, addr);
            self.metrics.cluster_sent();
        }
    }

    /// `addr` was removed: its connection closes, here or on another node.
    pub(crate) fn evict(&self, addr: &store::Addr) {
        self.hub.kick(addr);
        self.announce(addr);
    }

    /// `addr` connected here: its connections on other nodes close.
    pub(crate) fn announce(&self, addr: &store::Addr) {
        if let Some(c) = &self.cluster {
            c.publish(cluster::Signal::Connected, addr);
            self.metrics.cluster_sent();
        }
    }
}

/// A bound relay, ready to [`run`](Relay::run).
pub struct Relay<S: Store> {
    listener: TcpListener,
    shared: Arc<Shared<S>>,
    shutdown_tx: watch::Sender<bool>,
}

/// The relay could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Binding or serving failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// NATS could not be reached.
    #[error("NATS: {0}")]
    Nats(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// A setting is out of its bounds.
    #[error("configuration: {0}")]
    Config(String),
}

impl<S: Store> Relay<S> {
    /// Binds `config.listen` (use port 0 for any free port).
    pub async fn build(config: Config, store: S) -> Result<Self, RelayError> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen).await?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let cluster = match &config.nats_url {
            Some(url) => Some(
                cluster::Cluster::connect(url, &config.nats_prefix)
                    .await
                    .map_err(RelayError::Nats)?,
            ),
            None => None,
        };
        let hub = Arc::new(hub::Hub::default());
        // What the store commits is pushed into the hub by one task, in the order it arrives,
        // so the database thread only hands it over.
        let (pushes, mut pushed) = tokio::sync::mpsc::unbounded_channel::<Vec<store::Delivery>>();
        let direct = store.deliver_on_commit(Arc::new(move |d| {
            let _ = pushes.send(d);
        }));
        if direct {
            let hub = hub.clone();
            tokio::spawn(async move {
                while let Some(batch) = pushed.recv().await {
                    for d in batch {
                        hub.push(d);
                    }
                }
            });
        }
        let mut fresh = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut fresh);
        let franking =
            hush_crypto::franking::RelayFrankingKey::from_bytes(store.franking_key(fresh).await?);
        hush_crypto::Zeroize::zeroize(&mut fresh);
        let shared = Arc::new(Shared {
            franking,
            cluster,
            direct,
            ip_limits: limits::Limiter::new(config.ip_rate),
            device_limits: limits::Limiter::new(config.device_rate),
            bundle_limits: limits::Limiter::new(config.bundle_rate),
            sockets: Arc::default(),
            grants: Default::default(),
            handout_limits: limits::Limiter::new(config.prekey_handout_rate),
            token_limits: limits::Limiter::new(config.upload_token_rate),
            config,
            store,
            hub,
            metrics: Arc::default(),
            shutdown,
        });
        Ok(Self {
            listener,
            shared,
            shutdown_tx,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.listen)
    }

    /// Serves until `shutdown` completes, then stops accepting, tells connected devices,
    /// and drains in-flight work before returning.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), RelayError> {
        let shared = self.shared.clone();
        let mut app = Router::new()
            .route("/v1/ws", get(ws::<S>))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready::<S>))
            .route("/metrics", get(metrics_text::<S>))
            .route("/v1/blobs", axum::routing::post(blobs::upload::<S>))
            .route("/v1/blobs/{id}", get(blobs::download::<S>));
        if shared.config.web_client {
            app = app
                .route("/", get(|| web::file(None)))
                .route("/{file}", get(|p| web::file(Some(p))));
        }
        let app = app
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let expiry = tokio::spawn(expire_loop(shared.clone()));
        let listener = shared
            .cluster
            .clone()
            .map(|c| tokio::spawn(c.listen(shared.hub.clone(), shared.metrics.clone())));
        let tx = self.shutdown_tx;
        let graceful = async move {
            shutdown.await;
            let _ = tx.send(true);
        };
        let tls = match &shared.config.tls {
            None => None,
            Some(files) => Some(tls::acceptor(files)?),
        };
        let c = &shared.config;
        let limits = listen::ListenLimits {
            max_connections: c.max_connections,
            max_pending_per_ip: c.max_pending_per_ip,
            handshake_timeout: c.handshake_timeout,
            header_read_timeout: c.header_read_timeout,
        };
        let gate = listen::Gate {
            limits,
            sockets: shared.sockets.clone(),
            metrics: shared.metrics.clone(),
        };
        let served = listen::serve(
            self.listener,
            tls,
            app,
            gate,
            graceful,
            shared.shutdown.clone(),
        )
        .await;
        expiry.abort();
        if let Some(l) = listener {
            l.abort();
        }
        served
    }
}

/// Bytes of WebSocket frames a connection buffers before writing them to the socket (the
/// rest is written at its flush, once per pass): one system call per 2 KiB of frames rather
/// than one per frame (docs/BENCHMARKS.md, "Frames buffered").
const WRITE_BUFFER: usize = 2048;

async fn ws<S: Store>(
    upgrade: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(shared): State<Arc<Shared<S>>>,
) -> Response {
    if *shared.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if shared.metrics.connections() >= shared.config.max_connections as u64 {
        shared.metrics.reject("too_many_connections");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "5")],
            "too many connections",
        )
            .into_response();
    }
    if let Err(wait) = shared.ip_limits.check(&peer.ip()) {
        shared.metrics.reject("rate_limited_ip");
        let secs = wait.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs)],
            "rate limited",
        )
            .into_response();
    }
    let max = shared.config.max_frame_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // Small buffers: an idle connection should cost a few KiB, not the defaults. Frames
        // written together go out in one system call per 2 KiB rather than one each (a
        // connection flushes after each pass); the write buffer keeps at most that plus its
        // largest frame once a burst is over.
        .read_buffer_size(512)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| connection::serve(socket, peer, shared))
}

async fn ready<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    if *shared.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match shared.store.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response(),
    }
}

async fn metrics_text<S: Store>(State(shared): State<Arc<Shared<S>>>) -> String {
    shared
        .metrics
        .set_queue_depth(shared.store.queue_depth() as u64);
    shared.metrics.set_sockets(shared.sockets.open());
    shared.metrics.render()
}

async fn expire_loop<S: Store>(shared: Arc<Shared<S>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Ok(n) = shared
            .store
            .expire(now_ms(), shared.config.receipt_limits())
            .await
            && n > 0
        {
            tracing::info!(expired = n, "expired envelopes removed");
        }
        blobs::expire(&shared).await;
        shared.ip_limits.prune();
        shared.device_limits.prune();
        shared.bundle_limits.prune();
        shared.handout_limits.prune();
        shared.token_limits.prune();
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `presence_interval` at its bounds: more than zero; past `online_window` it is valid
    /// and counts as the window ([`Config::presence_every`]).
    #[test]
    fn presence_interval_bounds() {
        let with = |ms: u64| Config {
            presence_interval: Duration::from_millis(ms),
            ..Config::default()
        };
        assert!(Config::default().validate().is_ok());
        assert!(with(0).validate().is_err());
        assert!(with(1).validate().is_ok());
        let window = Config::default().online_window.as_millis() as u64;
        assert_eq!(with(window).presence_every(), Duration::from_millis(window));
        assert_eq!(
            with(window + 1).presence_every(),
            Duration::from_millis(window)
        );
        assert!(with(window + 1).validate().is_ok());
        assert_eq!(
            with(window - 1).presence_every(),
            Duration::from_millis(window - 1)
        );
    }
}
