//! The client: its public API, and the worker that keeps the relay connection, flushes the
//! outbox, and processes what arrives.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush_crypto::kem::KemPublicKey;
use hush_crypto::{IdentityPublicKey, SecretBytes, Signature, StorageKey, X25519PublicKey};
use hush_groups::GroupConfig;
use hush_sessions::{BundleKemPrekey, KemPrekey, OneTimePrekey, PrekeyBundle, SignedPrekey, Suite};
use prost::Message as _;
use rand::SeedableRng as _;
use tokio::sync::{Notify, mpsc, watch};

use crate::core::account::{self, load_signed_prekey, record_devices, store_signed_prekey};
use crate::core::groups::{self, load_group};
use crate::core::outbox::{Pass, Step};
use crate::core::prepare::{DeviceLists, Listed, Need, Preparation};
use crate::core::pushes::{PushStep, Pushes};
use crate::core::{
    Device, ForwardLimits, PostQuantum, identity_of, member_address, outbound, stored_to_message,
    to_relay,
};
use crate::error::ClientError;
use crate::error::RelayErrorCode;
use crate::event::{
    Address, Body, Conversation, DeviceSafety, Event, GroupId, Message, MessageId, Presence,
    ReceiptKind,
};
use crate::net::{self, Conn, Credentials, RelayUrl};
use crate::proto::client as pc;
use crate::store::{Sealed, SqliteStore, Store, StoreError, Tick, Tx};
use hush_relay_protocol::proto::{self as pr, client_frame::Body as In, server_frame::Body as Out};

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
        }
    }
}

/// An existing device's permission for a new device (or a reinstall) to join its user:
/// made by [`Client::link_device`] on the existing device, given to the new one with
/// [`Client::set_link`] before it first connects.
#[derive(Clone, Debug)]
pub struct DeviceLink {
    linking_device: u32,
    signature: Signature,
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
    pub(crate) blob_dir: PathBuf,
    registration_token: Option<Vec<u8>>,
    relay_id: Option<Vec<u8>>,
    spk_rotation: Duration,
    forward_limits: ForwardLimits,
    reconnect: (Duration, Duration),
    poll: Duration,
    store: Mutex<Sealed>,
    conn: Mutex<Option<Conn>>,
    events: mpsc::UnboundedSender<Event>,
    kick: Notify,
    connected: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    watched: Mutex<BTreeMap<String, Option<Presence>>>,
    /// Device lists as the relay last gave them, used for one-to-one sends until the relay
    /// refuses one as stale (SPEC §16.4).
    device_lists: Mutex<DeviceLists>,
    link: Mutex<Option<DeviceLink>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
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

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Client {
    /// Opens (or creates) the device's store. On first use this generates the identity key,
    /// a signed prekey and a batch of one-time prekeys. Nothing touches the network until
    /// [`Client::start`]. Events arrive on the returned receiver.
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
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// Starts the background worker: connects (registering on first use), reconnects with
    /// backoff, flushes the outbox and processes incoming mail. Needs a tokio runtime.
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
        *slot = Some(tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
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
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
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
            w.entry(user.to_string()).or_insert(None);
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
            listed.extend(list_devices(&conn, u).await?);
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

/// The store's lock was poisoned by a panic while it was held.
fn poisoned() -> ClientError {
    ClientError::Store(StoreError::backend(std::io::Error::other(
        "store lock poisoned",
    )))
}

/// Remembers `user`'s devices as the relay has just listed them.
fn remember_devices(inner: &Inner, user: &str, listed: Listed) {
    if let Ok(mut lists) = inner.device_lists.lock() {
        lists.remember(user, listed);
    }
}

async fn list_devices(
    conn: &Conn,
    user: &str,
) -> Result<Vec<(Address, IdentityPublicKey)>, ClientError> {
    match conn
        .request(In::ListDevices(pr::ListDevices {
            user_id: user.to_string(),
        }))
        .await
    {
        Ok(Out::Devices(d)) => d
            .devices
            .iter()
            .map(|k| {
                Ok((
                    Address::new(user, k.device_id),
                    identity_of(&k.identity_key)?,
                ))
            })
            .collect(),
        Ok(_) => Err(ClientError::Protocol),
        Err(ClientError::Relay {
            code: RelayErrorCode::NotFound,
            ..
        }) => Err(ClientError::Unknown("user")),
        Err(e) => Err(e),
    }
}

async fn fetch_bundle(conn: &Conn, a: &Address) -> Result<Option<PrekeyBundle>, ClientError> {
    let b = match conn
        .request(In::FetchBundle(pr::FetchBundle {
            address: Some(to_relay(a)),
        }))
        .await
    {
        Ok(Out::Bundle(b)) => b,
        Ok(_) => return Err(ClientError::Protocol),
        Err(ClientError::Relay {
            code: RelayErrorCode::NotFound,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let identity = identity_of(&b.identity_key)?;
    let spk = X25519PublicKey::from_slice(&b.signed_prekey).ok_or(ClientError::Protocol)?;
    let sig = Signature::from_slice(&b.signed_prekey_signature).ok_or(ClientError::Protocol)?;
    let opk = match b.one_time_prekey {
        Some(k) => Some((
            k.id,
            X25519PublicKey::from_slice(&k.key).ok_or(ClientError::Protocol)?,
        )),
        None => None,
    };
    let bundle = PrekeyBundle::from_public_parts(identity, b.signed_prekey_id, spk, sig, opk);
    let bundle = match b.kem_prekey {
        Some(k) => bundle.with_kem_public(BundleKemPrekey {
            id: k.id,
            key: KemPublicKey::from_slice(&k.key).map_err(|_| ClientError::Protocol)?,
            signature: Signature::from_slice(&k.signature).ok_or(ClientError::Protocol)?,
        }),
        None => bundle,
    };
    // Verified when a session starts from it (`Session::initiate_with`): a bundle that does
    // not verify, or that the policy refuses, fails the message with the reason.
    Ok(Some(bundle))
}

async fn presence(conn: &Conn, user: &str) -> Result<Presence, ClientError> {
    match conn
        .request(In::Presence(pr::PresenceQuery {
            user_id: user.to_string(),
        }))
        .await?
    {
        Out::Presence(p) => Ok(Presence {
            user: p.user_id,
            online: p.online,
            last_seen_ms: (p.last_seen_ms != 0).then_some(p.last_seen_ms),
        }),
        _ => Err(ClientError::Protocol),
    }
}

impl Inner {
    pub(crate) fn conn(&self) -> Result<Conn, ClientError> {
        self.conn
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(Conn::is_open)
            .ok_or(ClientError::Offline)
    }

    pub(crate) fn with_store<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut s = self.store.lock().map_err(|_| poisoned())?;
        s.transaction(f)
    }

    fn read_store<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut s = self.store.lock().map_err(|_| poisoned())?;
        s.read(f)
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn emit_all(&self, events: Vec<Event>) {
        for e in events {
            self.emit(e);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The worker.

async fn worker(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let (min, max) = inner.reconnect;
    let mut backoff = min;
    let mut last_failure: Option<String> = None;
    while !*stop.borrow() {
        let link = inner.link.lock().ok().and_then(|l| l.clone());
        let creds = Credentials {
            identity: &inner.dev.identity,
            user: &inner.dev.me.user,
            device: inner.dev.me.device,
            registration_token: inner.registration_token.as_deref(),
            relay_id: inner.relay_id.as_deref(),
            link: link.map(|l| pr::DeviceLink {
                linking_device_id: l.linking_device,
                signature: l.signature.to_bytes().to_vec(),
            }),
        };
        let reason = match net::connect(&inner.url, inner.ca_file.as_ref(), creds).await {
            Ok((conn, registered, pushes)) => {
                backoff = min;
                if let Ok(mut c) = inner.conn.lock() {
                    *c = Some(conn.clone());
                }
                let _ = inner.connected.send_replace(true);
                inner.emit(Event::Connected { registered });
                tracing::info!(device = %inner.dev.me, registered, "connected");
                let result = connected(&inner, &conn, registered, pushes, &mut stop).await;
                if let Ok(mut c) = inner.conn.lock() {
                    *c = None;
                }
                let _ = inner.connected.send_replace(false);
                let reason = match result {
                    Ok(()) => None,
                    Err(e) => Some(Arc::new(e)),
                };
                inner.emit(Event::Disconnected {
                    reason: reason.clone(),
                });
                reason.map_or_else(|| "stopped".to_string(), |e| e.to_string())
            }
            Err(e) => {
                // The app hears why connecting fails (a wrong relay, a refused
                // registration...), once per kind of failure, not on every retry.
                let reason = e.to_string();
                if last_failure.as_deref() != Some(reason.as_str()) {
                    inner.emit(Event::Disconnected {
                        reason: Some(Arc::new(e)),
                    });
                }
                reason
            }
        };
        last_failure = Some(reason.clone());
        tracing::debug!(device = %inner.dev.me, %reason, "not connected");
        if *stop.borrow() {
            break;
        }
        // Jitter: up to a quarter of the delay, so clients do not reconnect in lockstep.
        let jitter =
            rand::RngExt::random_range(&mut rand::rng(), 0..=backoff.as_millis() as u64 / 4);
        let wait = backoff + Duration::from_millis(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(max);
    }
}

async fn connected(
    inner: &Arc<Inner>,
    conn: &Conn,
    registered: bool,
    mut pushes: mpsc::Receiver<pr::ServerFrame>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ClientError> {
    housekeeping(inner, conn, registered).await?;
    let mut retry = flush(inner, conn).await?;
    let mut tick = tokio::time::interval(inner.poll);
    loop {
        let wait = retry.map(|d| tokio::time::Instant::now() + d);
        tokio::select! {
            () = async {
                match wait {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                retry = flush(inner, conn).await?;
            }
            push = pushes.recv() => {
                let Some(f) = push else { return Err(ClientError::Offline) };
                // What else has already arrived is handled with it and acknowledged in one
                // frame.
                let mut batch = vec![f];
                while batch.len() < ACK_BATCH && let Ok(f) = pushes.try_recv() {
                    batch.push(f);
                }
                handle_pushes(inner, conn, batch).await?;
                // Replies sent while handling (acks) and drafts queued by what arrived.
                retry = flush(inner, conn).await?;
            }
            () = inner.kick.notified() => {
                if *stop.borrow() { return Ok(()); }
                retry = flush(inner, conn).await?;
            }
            _ = tick.tick() => {
                conn.request(In::Ping(pr::Ping {})).await?;
                housekeeping(inner, conn, false).await?;
                poll_presence(inner, conn).await?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Uploads the signed prekey and the last-resort KEM prekey if the relay lacks them, rotates
/// them when due (and the signed prekey at once if it is not of the suite this device
/// uses: an account from before PQXDH), and uploads one-time prekeys and one-time KEM
/// prekeys not uploaded yet.
async fn housekeeping(inner: &Inner, conn: &Conn, registered: bool) -> Result<(), ClientError> {
    let now = now_ms();
    let rotation = inner.spk_rotation.as_millis() as u64;
    let pq = inner.dev.prekeys.post_quantum;
    let identity = &inner.dev.identity;
    let (spk, last_resort, rotated) = inner.with_store(|tx| {
        let rng = &mut rand::rng();
        if pq {
            let current = tx.meta_u64("kem_lr_current")? as u32;
            let created = tx.meta_u64("kem_lr_created")?;
            if current == 0 || now.saturating_sub(created) >= rotation {
                let id = account::new_last_resort(tx, identity, now, rng)?;
                // The key it replaces stays for prekey messages in flight (however long this
                // device was away: the relay handed it out until now); older ones go, with
                // the uses recorded for them.
                tx.prune_last_resort_kem_prekeys(now.saturating_sub(2 * rotation), [id, current])?;
            }
        }
        let wanted = if pq {
            Suite::PostQuantum
        } else {
            Suite::Classical
        };
        let mut current = tx.meta_u64("spk_current")? as u32;
        let created = tx.meta_u64("spk_created")?;
        let suite = load_signed_prekey(tx, current)?.map(|k| k.suite());
        let mut rotated = None;
        if created == 0 && suite == Some(wanted) {
            tx.set_meta_u64("spk_created", now)?;
        } else if now.saturating_sub(created) >= rotation || suite != Some(wanted) {
            let previous = current;
            current = current.wrapping_add(1).max(1);
            let spk = SignedPrekey::generate_for(wanted, current, identity, rng);
            store_signed_prekey(tx, &spk, now)?;
            tx.set_meta_u64("spk_current", u64::from(current))?;
            tx.set_meta_u64("spk_created", now)?;
            // Keep the key it replaces for messages already in flight (however long this
            // device was away); drop older ones.
            tx.prune_signed_prekeys(now.saturating_sub(2 * rotation), [current, previous])?;
            rotated = Some(current);
        }
        let uploaded = tx.meta_u64("spk_uploaded")? as u32;
        let spk = if registered || uploaded != current {
            load_signed_prekey(tx, current)?
        } else {
            None
        };
        let lr = tx.meta_u64("kem_lr_current")? as u32;
        let last_resort = if pq && (registered || tx.meta_u64("kem_lr_uploaded")? as u32 != lr) {
            account::load_kem_prekey(tx, lr)?
        } else {
            None
        };
        Ok((spk, last_resort, rotated))
    })?;
    if spk.is_some() || last_resort.is_some() {
        // One upload: the relay takes a post-quantum signed prekey only with a last-resort
        // KEM prekey, stored or beside it.
        let mut upload = pr::UploadPrekeys {
            last_resort_kem_prekey: last_resort.as_ref().map(kem_to_relay),
            ..Default::default()
        };
        if let Some(spk) = &spk {
            upload.signed_prekey_id = spk.id();
            upload.signed_prekey = spk.public_key().to_bytes().to_vec();
            upload.signed_prekey_signature = spk.signature().to_bytes().to_vec();
        }
        conn.request(In::UploadPrekeys(upload)).await?;
        inner.with_store(|tx| {
            if let Some(spk) = &spk {
                tx.set_meta_u64("spk_uploaded", u64::from(spk.id()))?;
            }
            if let Some(k) = &last_resort {
                tx.set_meta_u64("kem_lr_uploaded", u64::from(k.id()))?;
            }
            Ok(())
        })?;
    }
    if let Some(id) = rotated {
        inner.emit(Event::SignedPrekeyRotated { id });
    }
    upload_one_time_prekeys(inner, conn).await?;
    upload_kem_prekeys(inner, conn).await
}

fn kem_to_relay(k: &KemPrekey) -> pr::KemPrekey {
    pr::KemPrekey {
        id: k.id(),
        key: k.public_key().as_bytes().to_vec(),
        signature: k.signature().to_bytes().to_vec(),
    }
}

/// Most one-time KEM prekeys in one upload (the relay's default limit).
const KEM_UPLOAD_BATCH: usize = 100;

async fn upload_kem_prekeys(inner: &Inner, conn: &Conn) -> Result<(), ClientError> {
    let keys = inner.read_store(|tx| account::unuploaded_kem_prekeys(tx, KEM_UPLOAD_BATCH))?;
    if keys.is_empty() {
        return Ok(());
    }
    let ids: Vec<u32> = keys.iter().map(KemPrekey::id).collect();
    let answer = conn
        .request(In::UploadPrekeys(pr::UploadPrekeys {
            kem_prekeys: keys.iter().map(kem_to_relay).collect(),
            ..Default::default()
        }))
        .await;
    let stock = match answer {
        Ok(Out::PrekeyStatus(s)) => s.kem_prekeys,
        Ok(_) => return Err(ClientError::Protocol),
        // The relay's stock is at its cap: these keys will never be handed out.
        Err(ClientError::Relay {
            code: RelayErrorCode::TooLarge,
            ..
        }) => {
            inner.with_store(|tx| ids.iter().try_for_each(|id| tx.delete_kem_prekey(*id)))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    inner.with_store(|tx| {
        tx.mark_kem_uploaded(&ids)?;
        tx.set_kem_stock(u64::from(stock), now_ms())
    })?;
    inner.emit(Event::KemPrekeysUploaded {
        count: ids.len() as u32,
    });
    Ok(())
}

async fn upload_one_time_prekeys(inner: &Inner, conn: &Conn) -> Result<(), ClientError> {
    let keys = inner.read_store(|tx| tx.unuploaded_prekeys())?;
    if keys.is_empty() {
        return Ok(());
    }
    let one_time_prekeys = keys
        .iter()
        .map(|(id, secret)| {
            let secret = SecretBytes::<32>::from_slice(secret).ok_or(ClientError::Sealed)?;
            Ok(pr::OneTimePrekey {
                id: *id,
                key: OneTimePrekey::from_secret_bytes(*id, &secret)
                    .public_key()
                    .to_bytes()
                    .to_vec(),
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    let ids: Vec<u32> = keys.iter().map(|(id, _)| *id).collect();
    let answer = conn
        .request(In::UploadPrekeys(pr::UploadPrekeys {
            signed_prekey_id: 0,
            signed_prekey: vec![],
            signed_prekey_signature: vec![],
            one_time_prekeys,
            ..Default::default()
        }))
        .await;
    let stock = match answer {
        Ok(Out::PrekeyStatus(s)) => s.one_time_prekeys,
        Ok(_) => return Err(ClientError::Protocol),
        // The relay's stock is at its cap: these keys will never be handed out.
        Err(ClientError::Relay {
            code: RelayErrorCode::TooLarge,
            ..
        }) => {
            inner.with_store(|tx| ids.iter().try_for_each(|id| tx.delete_one_time_prekey(*id)))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    inner.with_store(|tx| {
        tx.mark_uploaded(&ids)?;
        tx.set_prekey_stock(u64::from(stock), now_ms())
    })?;
    inner.emit(Event::PrekeysUploaded {
        count: ids.len() as u32,
    });
    Ok(())
}

async fn poll_presence(inner: &Inner, conn: &Conn) -> Result<(), ClientError> {
    let users: Vec<String> = inner
        .watched
        .lock()
        .map(|w| w.keys().cloned().collect())
        .unwrap_or_default();
    for u in users {
        let p = match presence(conn, &u).await {
            Ok(p) => p,
            Err(ClientError::Offline) => return Err(ClientError::Offline),
            Err(_) => continue,
        };
        let changed = inner.watched.lock().is_ok_and(|mut w| {
            let slot = w.entry(u.clone()).or_insert(None);
            let changed = slot.as_ref().is_none_or(|old| {
                old.online != p.online || (!p.online && old.last_seen_ms != p.last_seen_ms)
            });
            *slot = Some(p.clone());
            changed
        });
        if changed {
            inner.emit(Event::Presence(p));
        }
    }
    Ok(())
}

/// Sends pending read receipts, then every outbox entry in order. An envelope refused for a
/// full mailbox stays queued, and so does everything after it for that device; the rest
/// goes on. Returns when to try those again, if any.
async fn flush(inner: &Inner, conn: &Conn) -> Result<Option<Duration>, ClientError> {
    // The core's pass decides; this does the talking and the waiting.
    let mut pass = Pass::default();
    loop {
        let (step, events) = {
            let mut store = inner.store.lock().map_err(|_| poisoned())?;
            pass.next(&inner.dev, &mut store, now_ms(), &mut rand::rng())?
        };
        inner.emit_all(events);
        let (wait, events) = match step {
            Step::Done { retry_ms } => return Ok(retry_ms.map(Duration::from_millis)),
            Step::Prepare { seq, draft } => {
                let result = prepare(inner, conn, seq, draft).await;
                let mut store = inner.store.lock().map_err(|_| poisoned())?;
                pass.prepared(&mut store, result)?
            }
            Step::Send(pending) => {
                let answer = conn.request(In::Send(pending.frame.clone())).await;
                let mut lists = inner.device_lists.lock().map_err(|_| poisoned())?;
                let mut store = inner.store.lock().map_err(|_| poisoned())?;
                pass.answer(
                    &inner.dev,
                    &mut store,
                    &mut lists,
                    pending,
                    answer,
                    now_ms(),
                )?
            }
        };
        inner.emit_all(events);
        if let Some(ms) = wait {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// Encrypts one draft for every recipient device and replaces it by the envelopes, in one
/// transaction with the session and group state changes: the core's [`Preparation`] says
/// what it needs from the relay (device lists not remembered, missing bundles), and this
/// asks for it.
async fn prepare(
    inner: &Inner,
    conn: &Conn,
    seq: i64,
    draft: pc::Draft,
) -> Result<(), ClientError> {
    let mut p = Preparation::new(seq, draft)?;
    loop {
        let need = {
            let lists = inner.device_lists.lock().map_err(|_| poisoned())?;
            inner.read_store(|tx| p.need(&inner.dev, &lists, tx, now_ms()))?
        };
        match need {
            None => break,
            Some(Need::Devices(user)) => {
                let listed = list_devices(conn, &user).await?;
                remember_devices(inner, &user, listed);
            }
            Some(Need::Bundles(missing)) => {
                // Fetched outside the store lock.
                let mut bundles = HashMap::new();
                for (a, k) in &missing {
                    match fetch_bundle(conn, a).await? {
                        Some(b) if b.identity_key() == k => {
                            bundles.insert(a.clone(), b);
                        }
                        Some(_) => tracing::warn!(
                            device = %a,
                            "bundle identity differs from the listed key; skipped"
                        ),
                        None => tracing::warn!(device = %a, "no prekey bundle; skipped"),
                    }
                }
                p.bundles(bundles);
            }
        }
    }
    let started = {
        let lists = inner.device_lists.lock().map_err(|_| poisoned())?;
        let mut store = inner.store.lock().map_err(|_| poisoned())?;
        p.encrypt(&inner.dev, &lists, &mut store, now_ms(), &mut rand::rng())?
    };
    inner.emit_all(started);
    Ok(())
}

/// Most pushed frames handled together and acknowledged with one `Ack` and one
/// `AckReceipts`.
const ACK_BATCH: usize = 256;

/// Handles pushed frames in order: each envelope and receipt is committed in its own
/// transaction, then all of them are acknowledged at once (a crash before the
/// acknowledgement means the relay sends them again, and the store's record of processed
/// messages drops the repeats), then their events are emitted.
async fn handle_pushes(
    inner: &Arc<Inner>,
    conn: &Conn,
    batch: Vec<pr::ServerFrame>,
) -> Result<(), ClientError> {
    // The core handles the batch; this answers what it asks and sends the acknowledgements.
    let mut pushes = Pushes::new(batch);
    loop {
        let step = {
            let mut store = inner.store.lock().map_err(|_| poisoned())?;
            pushes.next(&inner.dev, &mut store, now_ms(), &mut rand::rng())?
        };
        match step {
            PushStep::Devices(user) => {
                let listed = list_to_check(conn, &user).await?;
                if let Some(l) = &listed {
                    remember_devices(inner, &user, l.clone());
                }
                let mut store = inner.store.lock().map_err(|_| poisoned())?;
                pushes.listed(
                    &inner.dev,
                    &mut store,
                    listed.as_ref(),
                    now_ms(),
                    &mut rand::rng(),
                )?;
            }
            PushStep::Other(body) => handle_push(inner, conn, body).await?,
            PushStep::Fatal(e, events) => {
                inner.emit_all(events);
                return Err(net::relay_error(&e));
            }
            PushStep::Done {
                envelope_ids,
                receipt_ids,
                events,
            } => {
                if !envelope_ids.is_empty() {
                    conn.request(In::Ack(pr::Ack { envelope_ids })).await?;
                }
                if !receipt_ids.is_empty() {
                    conn.request(In::AckReceipts(pr::AckReceipts { receipt_ids }))
                        .await?;
                }
                inner.emit_all(events);
                return Ok(());
            }
        }
    }
}

/// A pushed frame other than an envelope, a receipt or a fatal error.
async fn handle_push(
    inner: &Arc<Inner>,
    conn: &Conn,
    body: Option<Out>,
) -> Result<(), ClientError> {
    match body {
        Some(Out::PrekeyStatus(mut s)) => {
            if s.low {
                // The push may predate an upload of ours: an empty upload asks for the stock
                // now.
                match conn
                    .request(In::UploadPrekeys(pr::UploadPrekeys::default()))
                    .await?
                {
                    Out::PrekeyStatus(now) => s = now,
                    _ => return Err(ClientError::Protocol),
                }
            }
            let (pending, kem_pending) = inner.with_store(|tx| {
                let rng = &mut rand::rng();
                Ok((
                    account::prekey_stock(
                        tx,
                        &inner.dev.prekeys,
                        u64::from(s.one_time_prekeys),
                        s.low,
                        now_ms(),
                        rng,
                    )?,
                    account::kem_stock(
                        tx,
                        &inner.dev.identity,
                        &inner.dev.prekeys,
                        u64::from(s.kem_prekeys),
                        now_ms(),
                        rng,
                    )?,
                ))
            })?;
            if pending {
                upload_one_time_prekeys(inner, conn).await?;
            }
            if kem_pending {
                upload_kem_prekeys(inner, conn).await?;
            }
        }
        Some(Out::Error(e)) if e.fatal => return Err(net::relay_error(&e)),
        _ => {}
    }
    Ok(())
}

/// `user`'s devices, to check the sender of a prekey message ([`PushStep::Devices`]), or
/// `None` if the relay will not list them: the message is then dropped (never let one
/// envelope stall the mailbox behind it). Rate limited: waits and asks again (the envelope
/// stays unacknowledged meanwhile).
async fn list_to_check(conn: &Conn, user: &str) -> Result<Option<Listed>, ClientError> {
    for _ in 0..5 {
        match list_devices(conn, user).await {
            Ok(listed) => return Ok(Some(listed)),
            Err(ClientError::Relay {
                code: RelayErrorCode::RateLimited,
                retry_after_ms,
                ..
            }) => tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(50, 5000))).await,
            Err(
                ClientError::Unknown(_)
                | ClientError::Relay {
                    code:
                        RelayErrorCode::NotFound
                        | RelayErrorCode::Malformed
                        | RelayErrorCode::TooLarge
                        | RelayErrorCode::Forbidden,
                    ..
                },
            ) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Offline)
}
