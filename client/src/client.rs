//! The client's public API: [`Client`] and its configuration. Each call is a store
//! transaction through the core, or a request through the driver ([`crate::driver`]),
//! whose worker keeps the relay connection, passes over the outbox and handles what
//! arrives.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_crypto::{IdentityPublicKey, Signature, StorageKey};
use hush_groups::GroupConfig;
use prost::Message as _;
use rand::SeedableRng as _;
use tokio::sync::{Notify, mpsc, watch};

use crate::core::account::{self, record_devices};
use crate::core::groups::{self, load_group};
use crate::core::prepare::DeviceLists;
use crate::core::{
    Device, ForwardLimits, PostQuantum, identity_of, member_address, outbound, stored_to_message,
};
use crate::driver::{list_devices, presence, remember_devices, worker};
use crate::error::ClientError;
use crate::event::{
    Address, Body, Conversation, DeviceSafety, Event, GroupId, Message, MessageId, Presence,
    ReceiptKind,
};
use crate::net::{Conn, RelayUrl};
use crate::proto::client as pc;
#[cfg(native_io)]
use crate::store::SqliteStore;
use crate::store::{Sealed, Store, Tick};
use hush_relay_protocol::proto::{self as pr, client_frame::Body as In};

/// Client settings. [`ClientConfig::new`] fills in the documented defaults.
pub struct ClientConfig {
    /// `ws://host:port` or `wss://host:port`.
    pub relay_url: String,
    /// The on-device database file (created if absent).
    pub db_path: PathBuf,
    /// Seals secrets and protocol state at rest. The app keeps it (for example in the
    /// platform keystore).
    pub storage_key: StorageKey,
    /// This device's user id.
    pub user: String,
    /// This device's number.
    pub device: u32,
    /// For relays that require a token to register.
    pub registration_token: Option<Vec<u8>>,
    /// Extra trusted CA certificates (PEM) for `wss://`.
    pub ca_file: Option<PathBuf>,
    /// One-time prekeys uploaded per batch. Default 100.
    pub prekey_batch: u32,
    /// How long a one-time prekey the relay handed out is kept, for a prekey message still
    /// on its way (then deleted). Default 30 days, the relay's mailbox lifetime.
    pub prekey_grace: Duration,
    /// Most one-time prekeys generated in any 24 hours, however fast others take them.
    /// Default 1,000.
    pub prekey_daily_budget: u32,
    /// The relay's identity (its `relay_id`, `hush relay --relay-id`). When set, the client
    /// refuses to authenticate to a relay announcing another, so a relay in the middle
    /// cannot use this device's signature to log in as it elsewhere. Default: none (any).
    pub relay_id: Option<Vec<u8>>,
    /// How often the signed prekey is replaced. Default 7 days.
    pub signed_prekey_rotation: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`. Default 200 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 30 s.
    pub reconnect_max: Duration,
    /// How often watched users' presence is polled, and the connection pinged. Default 5 s.
    pub poll_interval: Duration,
    /// Limits of every group this device is in.
    pub group_config: GroupConfig,
    /// How many chats one forward may go to.
    pub forward_limits: ForwardLimits,
    /// Post-quantum session setup. Default [`PostQuantum::WhenOffered`].
    pub post_quantum: PostQuantum,
    /// One-time KEM prekeys uploaded per batch (each about 1.25 KB at the relay, whose
    /// default cap is 200 per device). Default 50.
    pub kem_prekey_batch: u32,
    /// In a browser: the store's durability (for example IndexedDB behind a journaled
    /// [`crate::MemoryStore`]), awaited before any frame leaves. Default none: the store's
    /// commits are durable when they return.
    #[cfg(web_io)]
    pub durability: Option<std::rc::Rc<dyn crate::Durability>>,
}

impl ClientConfig {
    /// Settings with the defaults.
    pub fn new(
        relay_url: impl Into<String>,
        db_path: impl Into<PathBuf>,
        storage_key: StorageKey,
        user: impl Into<String>,
        device: u32,
    ) -> Self {
        Self {
            relay_url: relay_url.into(),
            db_path: db_path.into(),
            storage_key,
            user: user.into(),
            device,
            registration_token: None,
            ca_file: None,
            prekey_batch: 100,
            prekey_grace: Duration::from_secs(30 * 24 * 3600),
            prekey_daily_budget: 1000,
            relay_id: None,
            signed_prekey_rotation: Duration::from_secs(7 * 24 * 3600),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            group_config: GroupConfig::default(),
            forward_limits: ForwardLimits::default(),
            post_quantum: PostQuantum::default(),
            kem_prekey_batch: 50,
            #[cfg(web_io)]
            durability: None,
        }
    }
}

/// An existing device's permission for a new device (or a reinstall) to join its user:
/// made by [`Client::link_device`] on the existing device, given to the new one with
/// [`Client::set_link`] before it first connects.
#[derive(Clone, Debug)]
pub struct DeviceLink {
    pub(crate) linking_device: u32,
    pub(crate) signature: Signature,
}

impl DeviceLink {
    /// `u32be(linking device) ‖ signature`, 68 bytes, to carry to the new device.
    pub fn to_bytes(&self) -> Vec<u8> {
        [
            &self.linking_device.to_be_bytes()[..],
            self.signature.as_bytes(),
        ]
        .concat()
    }

    /// Reads [`DeviceLink::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (d, s) = bytes.split_at_checked(4)?;
        Some(Self {
            linking_device: u32::from_be_bytes(d.try_into().ok()?),
            signature: Signature::from_slice(s)?,
        })
    }
}

/// Upload or download progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

pub(crate) struct Inner {
    pub(crate) dev: Device,
    pub(crate) url: RelayUrl,
    pub(crate) ca_file: Option<PathBuf>,
    #[cfg(native_io)]
    pub(crate) blob_dir: PathBuf,
    pub(crate) registration_token: Option<Vec<u8>>,
    pub(crate) relay_id: Option<Vec<u8>>,
    pub(crate) spk_rotation: Duration,
    pub(crate) forward_limits: ForwardLimits,
    pub(crate) reconnect: (Duration, Duration),
    pub(crate) poll: Duration,
    pub(crate) store: Mutex<Sealed>,
    pub(crate) conn: Mutex<Option<Conn>>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) kick: Notify,
    pub(crate) connected: watch::Sender<bool>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) watched: Mutex<crate::core::presence::Watched>,
    /// Device lists as the relay last gave them, used for one-to-one sends until the relay
    /// refuses one as stale (SPEC §16.4).
    pub(crate) device_lists: Mutex<DeviceLists>,
    pub(crate) link: Mutex<Option<DeviceLink>>,
    pub(crate) worker: Mutex<Option<crate::rt::Task>>,
    pub(crate) flush: crate::rt::Flush,
    /// Messages the app was told wait, and why (`Event::SendDelayed` once each).
    pub(crate) delayed: Mutex<std::collections::HashSet<(MessageId, crate::event::DelayReason)>>,
}

/// A hush client: one device of one user. Cheap to clone; every clone is the same client.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.dev.me)
            .finish_non_exhaustive()
    }
}

pub(crate) use crate::rt::now_ms;

impl Client {
    /// Opens (or creates) the device's store. On first use this generates the identity key,
    /// a signed prekey and a batch of one-time prekeys. Nothing touches the network until
    /// [`Client::start`]. Events arrive on the returned receiver.
    #[cfg(native_io)]
    pub fn open(
        config: ClientConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), ClientError> {
        let store = SqliteStore::open(&config.db_path)?;
        Self::open_with_store(config, store)
    }

    /// Like [`open`](Self::open), with another store backend (`config.db_path` is not
    /// used): for example [`crate::MemoryStore`] in tests, or an app's own backend.
    pub fn open_with_store(
        config: ClientConfig,
        store: impl Store + 'static,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), ClientError> {
        if !hush_relay_protocol::valid_user_id(&config.user) {
            return Err(ClientError::Invalid(
                "user id must be 1 to 64 bytes of a-z, 0-9, '.', '_' and '-'",
            ));
        }
        let url = RelayUrl::parse(&config.relay_url)?;
        let rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let mut store = Sealed::new(Box::new(store), config.storage_key, Box::new(rng));
        let me = Address::new(config.user.clone(), config.device);
        let policy = account::PrekeyPolicy {
            batch: config.prekey_batch,
            grace_ms: u64::try_from(config.prekey_grace.as_millis()).unwrap_or(u64::MAX),
            daily_budget: config.prekey_daily_budget,
            post_quantum: config.post_quantum != PostQuantum::Off,
            kem_batch: config.kem_prekey_batch,
        };
        let identity =
            store.transaction(|tx| account::open(tx, &me, &policy, now_ms(), &mut rand::rng()))?;
        #[cfg(native_io)]
        let blob_dir = config.db_path.with_extension("blobs");
        let (events, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            dev: Device {
                me,
                identity,
                group_config: config.group_config,
                prekeys: policy,
                post_quantum: config.post_quantum,
            },
            url,
            ca_file: config.ca_file,
            #[cfg(native_io)]
            blob_dir,
            registration_token: config.registration_token,
            relay_id: config.relay_id,
            spk_rotation: config.signed_prekey_rotation,
            forward_limits: config.forward_limits,
            reconnect: (config.reconnect_min, config.reconnect_max),
            poll: config.poll_interval,
            store: Mutex::new(store),
            conn: Mutex::new(None),
            events,
            kick: Notify::new(),
            connected: watch::channel(false).0,
            stop: watch::channel(false).0,
            watched: Mutex::default(),
            device_lists: Mutex::default(),
            link: Mutex::new(None),
            worker: Mutex::new(None),
            delayed: Mutex::default(),
            flush: crate::rt::Flush {
                #[cfg(web_io)]
                durability: config.durability,
            },
        };
        // In a browser `Inner` holds the page's IndexedDB handle (not `Send`): everything
        // runs on the page's one thread there, and `Arc` keeps one type for both builds.
        #[cfg_attr(web_io, allow(clippy::arc_with_non_send_sync))]
        let inner = Arc::new(inner);
        Ok((Self { inner }, rx))
    }

    /// Starts the background worker: connects (registering on first use), reconnects with
    /// backoff, flushes the outbox and processes incoming mail. Needs a tokio runtime
    /// (natively) or runs on the page's event loop (in a browser).
    /// After [`Client::stop`], `start` runs it again once the old worker has finished.
    pub fn start(&self) {
        let Ok(mut slot) = self.inner.worker.lock() else {
            return;
        };
        let previous = slot.take();
        if let Some(p) = &previous
            && !p.is_finished()
            && !*self.inner.stop.borrow()
        {
            *slot = previous;
            return; // already running
        }
        let inner = self.inner.clone();
        *slot = Some(crate::rt::spawn(async move {
            if let Some(p) = previous {
                p.join().await;
            }
            inner.stop.send_replace(false);
            worker(inner).await;
        }));
    }

    /// Stops the worker and closes the connection. Everything already accepted is on disk.
    pub fn stop(&self) {
        let _ = self.inner.stop.send_replace(true);
        self.inner.kick.notify_one();
    }

    /// Waits until connected and authenticated, up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.inner.connected.subscribe();
        crate::rt::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .map_err(|_| ClientError::Offline)?
            .map_err(|_| ClientError::Offline)?;
        Ok(())
    }

    /// Whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// This device's address.
    pub fn address(&self) -> &Address {
        &self.inner.dev.me
    }

    /// This device's identity key.
    pub fn identity_key(&self) -> &IdentityPublicKey {
        self.inner.dev.identity.public()
    }

    /// Signs a link letting a device with `identity_key` register as `device` of this user
    /// (a new device, or this user's reinstalled device).
    pub fn link_device(&self, device: u32, identity_key: &IdentityPublicKey) -> DeviceLink {
        // This user's list is about to change.
        if let Ok(mut lists) = self.inner.device_lists.lock() {
            lists.forget([self.inner.dev.me.user.as_str()]);
        }
        DeviceLink {
            linking_device: self.inner.dev.me.device,
            signature: self
                .inner
                .dev
                .identity
                .sign(&hush_relay_protocol::signed::link_message(
                    &self.inner.dev.me.user,
                    device,
                    identity_key.as_bytes(),
                )),
        }
    }

    /// Presents `link` when registering (call before [`Client::start`]).
    pub fn set_link(&self, link: DeviceLink) {
        if let Ok(mut l) = self.inner.link.lock() {
            *l = Some(link);
        }
    }

    fn conn(&self) -> Result<Conn, ClientError> {
        self.inner.conn()
    }

    /// Queues a text message to every device of `user` (and this user's other devices). It
    /// is on disk when this returns, and goes out as soon as the client is connected.
    pub fn send_text(&self, user: &str, text: &str) -> Result<MessageId, ClientError> {
        self.send(
            Conversation::Direct(user.to_string()),
            Body::Text(text.to_string()),
        )
    }

    /// Queues a text message to a group.
    pub fn send_group_text(&self, group: &GroupId, text: &str) -> Result<MessageId, ClientError> {
        self.send(Conversation::Group(*group), Body::Text(text.to_string()))
    }

    /// Queues a message (text or an uploaded attachment) to a conversation.
    pub fn send(&self, to: Conversation, body: Body) -> Result<MessageId, ClientError> {
        let now = now_ms();
        let id = self.inner.with_store(|tx| {
            outbound::queue(&self.inner.dev, tx, &to, &body, now, &mut rand::rng())
        })?;
        self.inner.kick.notify_one();
        Ok(id)
    }

    /// Replies to a received message, in its conversation (the group, or the sender's
    /// user), **once**: the reply's id is derived from the message's sender and id (SPEC
    /// §16.2, "Replies"), so `None` if this device queued that reply already. A bot that
    /// replies to each message it sees, and on start to each message in its history, never
    /// answers twice, even when it stopped between a message and its answer.
    pub fn reply(&self, to: &Message, body: Body) -> Result<Option<MessageId>, ClientError> {
        let now = now_ms();
        let id = self
            .inner
            .with_store(|tx| outbound::queue_reply(&self.inner.dev, tx, to, &body, now))?;
        if id.is_some() {
            self.inner.kick.notify_one();
        }
        Ok(id)
    }

    /// Reports a received message as abuse to the relay's operator (SPEC §17), with the
    /// reporter's `reason` and the `consent` text the app showed the user and the user
    /// accepted (each at most 1,024 bytes; the consent not empty), which the operator keeps
    /// with the report. This reveals the message, and who sent it to this device and when,
    /// to the operator; the relay keeps the report only if the
    /// message is one it delivered to this device from that sender, unchanged. Reporting
    /// the same message again changes nothing. `ClientError::Unknown` for a message this
    /// device did not receive from another user's device (its user's own, synced from its
    /// other devices, included) or that is not in its history.
    pub async fn report(
        &self,
        message: &Message,
        reason: &str,
        consent: &str,
    ) -> Result<(), ClientError> {
        let stored = self
            .inner
            .read_store(|tx| tx.messages())?
            .into_iter()
            .find(|m| {
                m.from_user == message.from.user
                    && m.from_device == message.from.device
                    && m.content
                        .as_ref()
                        .is_some_and(|c| c.message_id == message.id)
                    && m.franking.is_some()
                    && !m.outgoing
            })
            .ok_or(ClientError::Unknown("reportable message"))?;
        let Some(f) = stored.franking else {
            return Err(ClientError::Unknown("reportable message"));
        };
        match self
            .conn()?
            .request(In::Report(pr::Report {
                sender: Some(crate::core::to_relay(&message.from)),
                server_timestamp_ms: stored.server_ms,
                content: f.content,
                franking_key: f.key,
                franking_commitment: f.commitment,
                franking_tag: f.tag,
                reason: reason.to_string(),
                consent: consent.to_string(),
            }))
            .await?
        {
            pr::server_frame::Body::Done(_) => Ok(()),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Whether [`Client::reply`] queued a reply to `to` on this device already.
    pub fn replied(&self, to: &Message) -> Result<bool, ClientError> {
        let id = outbound::reply_id(&to.from, &to.id);
        self.inner.read_store(|tx| tx.queued_here(&id))
    }

    /// Forwards a message (one received or sent, as the app holds it) to each chat in `to`,
    /// as a new message in each, marked as forwarded once more than `message` (SPEC §16.2):
    /// to at most [`ForwardLimits::max_chats`] chats at once, or
    /// [`ForwardLimits::max_chats_many_times`] once the message was forwarded many times
    /// (`ClientError::ForwardLimit` otherwise, and nothing is queued). All copies are queued
    /// in one transaction; returns their ids, in the order of `to`.
    pub fn forward(
        &self,
        message: &Message,
        to: &[Conversation],
    ) -> Result<Vec<MessageId>, ClientError> {
        outbound::forward_allowed(&self.inner.forward_limits, message.forwarded, to.len())?;
        let forwarded = message.forwarded.saturating_add(1);
        let now = now_ms();
        let ids = self.inner.with_store(|tx| {
            let mut rng = rand::rng();
            to.iter()
                .map(|c| {
                    outbound::queue_forwarded(
                        &self.inner.dev,
                        tx,
                        c,
                        &message.body,
                        forwarded,
                        now,
                        &mut rng,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        self.inner.kick.notify_one();
        Ok(ids)
    }

    /// Tells the senders of these messages that they were read (queued if offline).
    pub fn mark_read(&self, from: &Address, ids: &[MessageId]) -> Result<(), ClientError> {
        self.inner.with_store(|tx| {
            for id in ids {
                tx.push_read(from, id)?;
            }
            Ok(())
        })?;
        self.inner.kick.notify_one();
        Ok(())
    }

    /// Messages sent and received, oldest first.
    pub fn messages(&self) -> Result<Vec<Message>, ClientError> {
        let stored = self.inner.read_store(|tx| tx.messages())?;
        Ok(stored.iter().filter_map(stored_to_message).collect())
    }

    /// Ticks recorded for a message this device sent: (device, kind, time).
    pub fn receipts(
        &self,
        id: &MessageId,
    ) -> Result<Vec<(Address, ReceiptKind, u64)>, ClientError> {
        let rows = self.inner.read_store(|tx| tx.ticks(id))?;
        Ok(rows
            .into_iter()
            .filter_map(|(a, k, t)| match k {
                Tick::Receipt(kind) => Some((a, kind, t)),
                Tick::Queued | Tick::Addressed => None,
            })
            .collect())
    }

    /// Entries waiting in the outbox.
    pub fn outbox_len(&self) -> Result<u64, ClientError> {
        self.inner.read_store(|tx| tx.outbox_len())
    }

    /// Asks the relay for a user's presence.
    pub async fn presence(&self, user: &str) -> Result<Presence, ClientError> {
        presence(&self.conn()?, user).await
    }

    /// Polls `user`'s presence in the background and emits [`Event::Presence`] on change.
    pub fn watch_presence(&self, user: &str) {
        if let Ok(mut w) = self.inner.watched.lock() {
            w.watch(user);
        }
    }

    /// Hides (or shows) this user's last-seen time from others.
    pub async fn set_hide_last_seen(&self, hide: bool) -> Result<(), ClientError> {
        self.conn()?
            .request(In::PresenceSettings(pr::PresenceSettings {
                hide_last_seen: hide,
            }))
            .await?;
        Ok(())
    }

    /// Removes another device of this user at the relay (a lost or stolen phone, an old
    /// browser): its mailbox goes, it is disconnected, and its identity key can never
    /// register for this user again, whatever device link it holds. Senders stop
    /// encrypting to it at their next send.
    pub async fn remove_device(&self, device: u32) -> Result<(), ClientError> {
        self.conn()?
            .request(In::RemoveDevice(pr::RemoveDevice { device_id: device }))
            .await?;
        Ok(())
    }

    /// Safety numbers between this device and each known device of `user` (refreshing the
    /// device list from the relay when connected), with whether the session with each is
    /// post-quantum and where its post-quantum ratchet stands.
    pub async fn safety_numbers(&self, user: &str) -> Result<Vec<DeviceSafety>, ClientError> {
        if let Ok(conn) = self.conn() {
            let listed = list_devices(&conn, user).await?;
            remember_devices(&self.inner, user, listed.clone());
            let events = self
                .inner
                .with_store(|tx| record_devices(tx, &self.inner.dev, &listed))?;
            self.inner.emit_all(events);
        }
        self.inner.read_store(|tx| {
            tx.devices_of(user)?
                .into_iter()
                .map(|(d, k)| {
                    let key = identity_of(&k)?;
                    let address = Address::new(user, d);
                    let session = tx
                        .session(&address)?
                        .filter(|s| *s.remote_identity() == key);
                    Ok(DeviceSafety {
                        safety_number: self.inner.dev.safety_number(user, &key),
                        address,
                        post_quantum: session.as_ref().map(|s| s.is_post_quantum()),
                        pq_ratchet: session.as_ref().and_then(|s| s.pq_ratchet()),
                    })
                })
                .collect()
        })
    }

    /// Creates a group of this device, every device of `users`, and this user's other
    /// devices. Needs the relay (to list devices).
    pub async fn create_group(&self, name: &str, users: &[&str]) -> Result<GroupId, ClientError> {
        let conn = self.conn()?;
        let mut listed = Vec::new();
        let mut all_users: Vec<&str> = users.to_vec();
        all_users.push(&self.inner.dev.me.user);
        all_users.sort_unstable();
        all_users.dedup();
        for u in all_users {
            let devices = list_devices(&conn, u).await?;
            remember_devices(&self.inner, u, devices.clone());
            listed.extend(devices);
        }
        listed.retain(|(a, _)| a != &self.inner.dev.me);
        let inner = &self.inner;
        let (gid, events) = inner.with_store(|tx| {
            groups::create(&inner.dev, tx, name, &listed, now_ms(), &mut rand::rng())
        })?;
        self.inner.emit_all(events);
        self.inner.kick.notify_one();
        Ok(gid)
    }

    /// Adds every device of `user` to a group (this device must be an admin).
    pub async fn add_to_group(&self, group: &GroupId, user: &str) -> Result<(), ClientError> {
        let conn = self.conn()?;
        let listed = list_devices(&conn, user).await?;
        remember_devices(&self.inner, user, listed.clone());
        let inner = &self.inner;
        let events = inner.with_store(|tx| {
            groups::add(&inner.dev, tx, group, &listed, now_ms(), &mut rand::rng())
        })?;
        self.inner.emit_all(events);
        self.inner.kick.notify_one();
        Ok(())
    }

    /// Removes every device of `user` from a group (this device must be an admin). The next
    /// message of every remaining member uses a fresh sender key.
    pub fn remove_from_group(&self, group: &GroupId, user: &str) -> Result<(), ClientError> {
        let inner = &self.inner;
        let events = inner.with_store(|tx| {
            groups::remove(&inner.dev, tx, group, user, now_ms(), &mut rand::rng())
        })?;
        self.inner.emit_all(events);
        self.inner.kick.notify_one();
        Ok(())
    }

    /// Leaves a group.
    pub fn leave_group(&self, group: &GroupId) -> Result<(), ClientError> {
        let inner = &self.inner;
        inner.with_store(|tx| groups::leave(&inner.dev, tx, group, now_ms(), &mut rand::rng()))?;
        self.inner.kick.notify_one();
        Ok(())
    }

    /// The groups this device is in: (id, name, member devices other than this one).
    pub fn groups(&self) -> Result<Vec<(GroupId, String, Vec<Address>)>, ClientError> {
        let me = self.inner.dev.me.clone();
        self.inner.read_store(|tx| {
            let mut out = Vec::new();
            for id in tx.group_ids()? {
                let Some(rec) = tx.group(&id)? else { continue };
                let Ok(gid) = GroupId::try_from(id.as_slice()) else {
                    continue;
                };
                if !load_group(&rec)?.is_member() {
                    continue;
                }
                let members = rec
                    .directory
                    .iter()
                    .map(member_address)
                    .filter(|a| a != &me)
                    .collect();
                out.push((gid, rec.name.clone(), members));
            }
            Ok(out)
        })
    }

    /// Tries to decrypt a group payload (as stored by the relay) with this device's group
    /// state, without changing anything. For showing that a removed member cannot read.
    pub fn try_decrypt_group_payload(&self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        let p = pc::Payload::decode(payload).map_err(|_| ClientError::Invalid("not a payload"))?;
        let Some(pc::payload::Kind::Group(gp)) = p.kind else {
            return Err(ClientError::Invalid("not a group payload"));
        };
        self.inner.read_store(|tx| {
            let rec = tx
                .group(&gp.group_id)?
                .ok_or(ClientError::Unknown("group"))?;
            let mut g = load_group(&rec)?;
            g.decrypt(&gp.message)
                .map(|p| p.plaintext)
                .map_err(ClientError::Decrypt)
        })
    }
}
