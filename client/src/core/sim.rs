//! Deterministic simulation of several devices and a relay, all in memory and driven by one
//! seeded RNG: random interleavings of sends (direct and to groups), outbox flushes,
//! deliveries (in order per sender, and 30% of the time out of order across senders),
//! repeats of unacknowledged envelopes, connections dropped before a frame reaches the relay
//! or before its answer or acknowledgement comes back, crashes between any two store
//! transactions, restarts from what was committed, new devices linked to a user mid-run
//! (senders' remembered device lists go stale and the relay model refuses sends made from
//! them, as SPEC §14.2 says), and groups created, grown and shrunk by their admin, with a
//! curious relay passing every group message to the devices of former members too.
//!
//! After every step: no device shows a message twice, and each shows a sender's messages
//! in a conversation in the order they were sent. At the end, with the network healed:
//! every direct message was shown exactly once to each device it was meant for (the
//! devices its recipient and its sender's user had when it was queued; a device linked
//! later may show it too, once); every group message exactly once to each device it was
//! encrypted for (at most once where the sender or that device was removed from the group
//! meanwhile), and to no other device; nothing is left held for a group change (SPEC
//! §16.9) but what a removal explains; every outbox and mailbox is empty; and every store
//! reopens with the same identity and its history.
//!
//! The relay here is a model of SPEC §14's promises (durable mailboxes, one one-time prekey
//! per fetch, per-sender order, redelivery until acknowledged), not the relay crate.
//! `cargo test` runs `SIM_SEEDS` seeds (default 24); `HUSH_SIM_SEEDS=N` runs more, and
//! `HUSH_SIM_SEED=S` replays one (with `HUSH_SIM_TRACE=1`, printing every delivery). A
//! failure prints its seed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hush_crypto::{IdentityPublicKey, Signature, StorageKey, X25519PublicKey};
use hush_groups::GroupConfig;
use hush_relay_protocol::proto as pr;
use hush_sessions::{BundleKemPrekey, KemPrekey, OneTimePrekey, PrekeyBundle, SessionMessage};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::inbound::{self, Incoming};
use super::outbox::{Pass, Step};
use super::prepare::{DeviceLists, Need, Preparation};
use super::pushes::{PushStep, Pushes};
use super::{Device, account, outbound};
use crate::event::{Address, Body, Conversation, Event, GroupId, MessageId};
use crate::store::{MemoryStore, Sealed};

/// Seeds run by `cargo test`.
const SIM_SEEDS: u64 = 24;
/// Steps per run.
const STEPS: usize = 250;

/// The devices' prekey settings: post-quantum, small batches.
const SIM_PREKEYS: account::PrekeyPolicy = account::PrekeyPolicy {
    batch: 20,
    grace_ms: 30 * 24 * 3600 * 1000,
    daily_budget: 1000,
    post_quantum: true,
    kem_batch: 4,
};

/// What the relay holds for one device.
struct Published {
    identity: IdentityPublicKey,
    signed: (u32, X25519PublicKey, Signature),
    one_time: VecDeque<(u32, X25519PublicKey)>,
    kem_one_time: VecDeque<BundleKemPrekey>,
    last_resort: Option<BundleKemPrekey>,
}

struct Envelope {
    from: Address,
    message_id: Vec<u8>,
    ciphertext: Vec<u8>,
    /// A copy the relay passed to a device it was not sent to (a former member of the
    /// group): it must not be shown.
    leaked: bool,
    /// The sender's franking commitment (SPEC §17), or empty.
    franking: Vec<u8>,
}

/// The relay model's franking key.
const SIM_FRANKING_KEY: [u8; 32] = [0x5f; 32];

impl Envelope {
    /// The envelope frame for `to`, with the relay's franking tag (SPEC §17).
    fn frame(&self, to: &Address, envelope_id: u64, message_id: Vec<u8>, now: u64) -> pr::Envelope {
        let franking_tag = match <[u8; 32]>::try_from(self.franking.as_slice()) {
            Ok(cf) => hush_crypto::franking::relay_tag(
                &hush_crypto::franking::RelayFrankingKey::from_bytes(SIM_FRANKING_KEY),
                &cf,
                &hush_crypto::franking::Stamp {
                    sender: (&self.from.user, self.from.device),
                    recipient: (&to.user, to.device),
                    server_ms: now,
                },
            )
            .to_vec(),
            Err(_) => Vec::new(),
        };
        pr::Envelope {
            envelope_id,
            sender: Some(pr::Address {
                user_id: self.from.user.clone(),
                device_id: self.from.device,
            }),
            message_id,
            server_timestamp_ms: now,
            ciphertext: self.ciphertext.clone(),
            franking_commitment: self.franking.clone(),
            franking_tag,
        }
    }
}

#[derive(Default)]
struct Relay {
    devices: BTreeMap<Address, Published>,
    mailboxes: BTreeMap<Address, VecDeque<Envelope>>,
}

impl Relay {
    fn devices_of(&self, user: &str) -> Vec<(Address, IdentityPublicKey)> {
        self.devices
            .iter()
            .filter(|(a, _)| a.user == user)
            .map(|(a, p)| (a.clone(), p.identity))
            .collect()
    }

    /// A bundle, spending one one-time prekey (gone even if the fetcher crashes).
    fn take_bundle(&mut self, a: &Address) -> Option<PrekeyBundle> {
        let p = self.devices.get_mut(a)?;
        let (id, spk, sig) = p.signed;
        let bundle =
            PrekeyBundle::from_public_parts(p.identity, id, spk, sig, p.one_time.pop_front());
        let bundle = match p.kem_one_time.pop_front().or_else(|| p.last_resort.clone()) {
            Some(k) => bundle.with_kem_public(k),
            None => bundle,
        };
        bundle.verify().ok()?;
        Some(bundle)
    }
}

struct SimDevice {
    dev: Device,
    /// The "disk": what was committed survives a crash.
    disk: MemoryStore,
    /// The disk is journaled, and a restart rebuilds it from these rows, as a browser does
    /// from IndexedDB: what the journal wrote is all that survives.
    rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    key: [u8; 32],
    store: Sealed,
    /// Device lists remembered in memory (gone after a crash).
    lists: DeviceLists,
    /// Messages shown to the app: (from, id).
    shown: Vec<(Address, MessageId)>,
}

/// A new device's disk, journaled as a browser's is.
fn new_disk() -> MemoryStore {
    MemoryStore::journaled([]).expect("an empty store")
}

fn sealed(disk: &MemoryStore, key: [u8; 32], rng: &mut StdRng) -> Sealed {
    Sealed::new(
        Box::new(disk.clone()),
        StorageKey::from_bytes(key),
        Box::new(StdRng::from_rng(rng)),
    )
}

impl SimDevice {
    fn open(me: Address, disk: MemoryStore, key: [u8; 32], now: u64, rng: &mut StdRng) -> Self {
        let mut store = sealed(&disk, key, rng);
        let identity = store
            .transaction(|tx| account::open(tx, &me, &SIM_PREKEYS, now, rng))
            .expect("account opens");
        Self {
            dev: Device {
                me,
                identity,
                group_config: GroupConfig::default(),
                prekeys: SIM_PREKEYS,
                post_quantum: super::PostQuantum::WhenOffered,
            },
            disk,
            rows: std::collections::BTreeMap::new(),
            key,
            store,
            lists: DeviceLists::new(true),
            shown: Vec::new(),
        }
    }

    /// Writes what was committed since the last write to the rows: what a browser's
    /// driver does before any frame leaves (and hush-wasm after each call that changes
    /// the store).
    fn persist(&mut self) {
        for (k, v) in self.disk.take_changes() {
            match v {
                Some(v) => self.rows.insert(k, v),
                None => self.rows.remove(&k),
            };
        }
    }

    /// A crash: everything not committed is gone, and so is everything committed but not
    /// yet written to the rows; the device comes back from its rows.
    fn restart(&mut self, now: u64, rng: &mut StdRng) {
        {
            // The journal holds exactly what was committed: the rows with every pending
            // change applied load back into the same tables.
            let mut all = self.rows.clone();
            for (k, v) in self.disk.take_changes() {
                match v {
                    Some(v) => all.insert(k, v),
                    None => all.remove(&k),
                };
            }
            let rebuilt = MemoryStore::journaled(all).expect("rows load");
            assert!(
                rebuilt.same_rows(&self.disk),
                "the journal's rows differ from what was committed"
            );
            // What was never written is lost.
            self.disk = MemoryStore::journaled(self.rows.clone()).expect("rows load");
        }
        let reopened = Self::open(self.dev.me.clone(), self.disk.clone(), self.key, now, rng);
        assert_eq!(
            reopened.dev.identity.public(),
            self.dev.identity.public(),
            "the identity changed across a restart"
        );
        self.dev = reopened.dev;
        self.store = reopened.store;
        self.lists = reopened.lists;
    }

    /// Uploads the current signed prekey, the current last-resort KEM prekey, and the
    /// one-time prekeys and KEM prekeys not uploaded yet.
    fn publish(&mut self, relay: &mut Relay) {
        let me = self.dev.me.clone();
        let identity = *self.dev.identity.public();
        let public = |k: &KemPrekey| BundleKemPrekey {
            id: k.id(),
            key: k.public_key().clone(),
            signature: *k.signature(),
        };
        let (spk, fresh, kem, last_resort) = self
            .store
            .transaction(|tx| {
                let current = u32::try_from(tx.meta_u64("spk_current")?).unwrap_or(1);
                let spk = account::load_signed_prekey(tx, current)?.expect("signed prekey");
                let keys = tx.unuploaded_prekeys()?;
                let ids: Vec<u32> = keys.iter().map(|(id, _)| *id).collect();
                tx.mark_uploaded(&ids)?;
                let fresh: Vec<(u32, X25519PublicKey)> = keys
                    .iter()
                    .map(|(id, secret)| {
                        let secret = hush_crypto::SecretBytes::<32>::from_slice(secret)
                            .expect("32-byte secret");
                        let k = OneTimePrekey::from_secret_bytes(*id, &secret);
                        (*id, *k.public_key())
                    })
                    .collect();
                let kem = account::unuploaded_kem_prekeys(tx, 100)?;
                let ids: Vec<u32> = kem.iter().map(KemPrekey::id).collect();
                tx.mark_kem_uploaded(&ids)?;
                let lr = u32::try_from(tx.meta_u64("kem_lr_current")?).unwrap_or(0);
                let last_resort = account::load_kem_prekey(tx, lr)?;
                Ok((
                    (spk.id(), *spk.public_key(), *spk.signature()),
                    fresh,
                    kem.iter().map(public).collect::<Vec<_>>(),
                    last_resort.as_ref().map(public),
                ))
            })
            .expect("publish");
        // The upload is a frame: what it reports is written first.
        self.persist();
        let entry = relay.devices.entry(me).or_insert(Published {
            identity,
            signed: spk,
            one_time: VecDeque::new(),
            kem_one_time: VecDeque::new(),
            last_resort: None,
        });
        entry.signed = spk;
        entry.one_time.extend(fresh);
        entry.kem_one_time.extend(kem);
        entry.last_resort = last_resort;
    }
}

/// A message sent: by whom, to which devices.
struct Sent {
    from: Address,
    id: MessageId,
    /// For a direct message, the devices of its recipient and of its sender's user when it
    /// was queued; for a group message, the devices it was encrypted for (the sender's
    /// directory then), learnt from its `Send` frames.
    to: BTreeSet<Address>,
    group: Option<GroupId>,
    /// For a direct message, its recipient user.
    to_user: Option<String>,
}

/// A group as the sim's omniscient eye sees it.
struct SimGroup {
    id: GroupId,
    /// The device that created it, its only admin.
    admin: usize,
    /// Users in it, as the admin made them.
    users: BTreeSet<String>,
    /// Users the admin removed.
    removed: BTreeSet<String>,
}

struct World {
    rng: StdRng,
    now: u64,
    relay: Relay,
    devices: Vec<SimDevice>,
    sent: Vec<Sent>,
    /// Per sender, the order of its messages.
    order: HashMap<MessageId, usize>,
    /// Devices linked during the run.
    linked: usize,
    /// Sends the relay model refused for a stale device list.
    stale: usize,
    groups: Vec<SimGroup>,
    /// Group changes made: (creations, adds, removals).
    changes: [usize; 3],
    /// Envelopes delivered out of order across senders.
    reordered: usize,
    /// Connections dropped in the middle of a pass or before an acknowledgement.
    disconnects: usize,
    /// Deliveries after which a device held more group items than before (SPEC §16.9).
    held: usize,
}

const USERS: [(&str, u32); 4] = [("alice", 1), ("alice", 2), ("bob", 1), ("carol", 1)];

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut relay = Relay::default();
        let mut devices = Vec::new();
        for (i, (user, device)) in USERS.iter().enumerate() {
            let key = [u8::try_from(i).unwrap_or(0) + 1; 32];
            let mut d = SimDevice::open(
                Address::new(*user, *device),
                new_disk(),
                key,
                1_000,
                &mut rng,
            );
            d.publish(&mut relay);
            devices.push(d);
        }
        Self {
            rng,
            now: 1_000,
            relay,
            devices,
            sent: Vec::new(),
            order: HashMap::new(),
            linked: 0,
            stale: 0,
            groups: Vec::new(),
            changes: [0; 3],
            reordered: 0,
            disconnects: 0,
            held: 0,
        }
    }

    /// Most devices linked in one run.
    const MAX_LINKED: usize = 2;

    /// A new device of a random user joins: registered at the relay with its prekeys.
    fn link(&mut self) {
        let user = ["alice", "bob", "carol"][self.rng.random_range(0..3)];
        let device = self
            .relay
            .devices
            .keys()
            .filter(|a| a.user == user)
            .map(|a| a.device)
            .max()
            .unwrap_or(0)
            + 1;
        let key = [u8::try_from(self.devices.len()).unwrap_or(0) + 1; 32];
        let mut d = SimDevice::open(
            Address::new(user, device),
            new_disk(),
            key,
            self.now,
            &mut self.rng,
        );
        d.publish(&mut self.relay);
        self.devices.push(d);
        self.linked += 1;
    }

    /// Whether to crash here: 15% of the time when `crashes` is on.
    fn crash(&mut self, crashes: bool) -> bool {
        crashes && self.rng.random_bool(0.15)
    }

    fn send(&mut self) {
        let i = self.rng.random_range(0..self.devices.len());
        let me = self.devices[i].dev.me.user.clone();
        let others: Vec<&str> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|u| *u != me)
            .collect();
        let user = others[self.rng.random_range(0..others.len())].to_string();
        self.send_to(i, &user);
    }

    /// Queues a text from device `i` to `user`.
    fn send_to(&mut self, i: usize, user: &str) -> MessageId {
        let me = self.devices[i].dev.me.clone();
        let to: BTreeSet<Address> = self
            .relay
            .devices
            .keys()
            .filter(|a| a.user == user || (a.user == me.user && **a != me))
            .cloned()
            .collect();
        self.queue(i, &Conversation::Direct(user.to_string()), to)
            .expect("queue")
    }

    /// Queues a text from device `i`; `None` if the core refuses it (a group this device
    /// is not, or no longer, in).
    fn queue(
        &mut self,
        i: usize,
        conversation: &Conversation,
        to: BTreeSet<Address>,
    ) -> Option<MessageId> {
        let me = self.devices[i].dev.me.clone();
        let d = &mut self.devices[i];
        let text = format!("{me} #{}", self.sent.len());
        let now = self.now;
        let rng = &mut self.rng;
        let id = d
            .store
            .transaction(|tx| {
                outbound::queue(&d.dev, tx, conversation, &Body::Text(text), now, rng)
            })
            .ok()?;
        // The app's call returns once the message is written (hush-wasm's sendText).
        d.persist();
        let n = self.sent.iter().filter(|s| s.from == me).count();
        self.order.insert(id, n);
        let (group, to_user) = match conversation {
            Conversation::Group(g) => (Some(*g), None),
            Conversation::Direct(u) => (None, Some(u.clone())),
        };
        self.sent.push(Sent {
            from: me,
            id,
            to,
            group,
            to_user,
        });
        Some(id)
    }

    /// Most groups in one run.
    const MAX_GROUPS: usize = 2;

    /// A device of a member user writes to a group (refused, and forgotten, if that device
    /// is not in it as far as it knows).
    fn group_send(&mut self) {
        if self.groups.is_empty() {
            return self.send();
        }
        let g = &self.groups[self.rng.random_range(0..self.groups.len())];
        let id = g.id;
        let candidates: Vec<usize> = (0..self.devices.len())
            .filter(|&i| g.users.contains(&self.devices[i].dev.me.user))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.random_range(0..candidates.len())];
        // Recipients are learnt when it is encrypted.
        self.queue(i, &Conversation::Group(id), BTreeSet::new());
    }

    /// The admin of a group creates it, adds a user, or removes one.
    fn group_change(&mut self) {
        const ALL: [&str; 3] = ["alice", "bob", "carol"];
        let now = self.now;
        let pick = self.rng.random_range(0..3);
        if self.groups.len() < Self::MAX_GROUPS && (self.groups.is_empty() || pick == 0) {
            let admin = self.rng.random_range(0..self.devices.len());
            let me = self.devices[admin].dev.me.clone();
            let mut users: BTreeSet<String> = ALL
                .iter()
                .filter(|u| **u != me.user && self.rng.random_bool(0.6))
                .map(|u| (*u).to_string())
                .collect();
            users.insert(me.user.clone());
            let listed: Vec<(Address, IdentityPublicKey)> = users
                .iter()
                .flat_map(|u| self.relay.devices_of(u))
                .filter(|(a, _)| *a != me)
                .collect();
            let d = &mut self.devices[admin];
            let rng = &mut self.rng;
            let (id, _) = d
                .store
                .transaction(|tx| super::groups::create(&d.dev, tx, "sim", &listed, now, rng))
                .expect("create a group");
            // The app's call returns once this is written (hush-wasm).
            d.persist();
            self.groups.push(SimGroup {
                id,
                admin,
                users,
                removed: BTreeSet::new(),
            });
            self.changes[0] += 1;
            return;
        }
        if self.groups.is_empty() {
            return;
        }
        let k = self.rng.random_range(0..self.groups.len());
        let admin = self.groups[k].admin;
        let own = self.devices[admin].dev.me.user.clone();
        let g = &self.groups[k];
        let addable: Vec<&str> = ALL
            .into_iter()
            .filter(|u| !g.users.contains(*u) && !g.removed.contains(*u))
            .collect();
        let removable: Vec<String> = g.users.iter().filter(|u| **u != own).cloned().collect();
        let id = g.id;
        let d = &mut self.devices[admin];
        let rng = &mut self.rng;
        if !addable.is_empty() && (removable.is_empty() || pick == 1) {
            let user = addable[rng.random_range(0..addable.len())];
            let listed = self.relay.devices_of(user);
            d.store
                .transaction(|tx| super::groups::add(&d.dev, tx, &id, &listed, now, rng))
                .expect("add to a group");
            d.persist();
            self.groups[k].users.insert(user.to_string());
            self.changes[1] += 1;
        } else if !removable.is_empty() {
            let user = removable[rng.random_range(0..removable.len())].clone();
            d.store
                .transaction(|tx| super::groups::remove(&d.dev, tx, &id, &user, now, rng))
                .expect("remove from a group");
            d.persist();
            self.groups[k].users.remove(&user);
            self.groups[k].removed.insert(user);
            self.changes[2] += 1;
        }
    }

    /// One pass of a device over its outbox, maybe crashing between two transactions.
    fn flush(&mut self, i: usize, crashes: bool) {
        let now = self.now;
        // The core's own pass over the outbox, its steps answered by the relay model.
        let mut pass = Pass::default();
        loop {
            let d = &mut self.devices[i];
            let (step, _) = pass
                .next(&d.dev, &mut d.store, &d.lists, now, &mut self.rng)
                .expect("pass");
            match step {
                Step::Done { .. } => return,
                Step::Prepare { seq, draft } => {
                    let mut p = Preparation::new(seq, draft).expect("draft");
                    loop {
                        let d = &mut self.devices[i];
                        let need = d
                            .store
                            .read(|tx| p.need(&d.dev, &d.lists, tx, now))
                            .expect("need");
                        match need {
                            None => break,
                            Some(Need::Devices(user)) => {
                                // Every frame leaves after what was committed is written.
                                self.devices[i].persist();
                                let listed = self.relay.devices_of(&user);
                                let d = &mut self.devices[i];
                                p.listed(&mut d.lists, &user, listed);
                            }
                            Some(Need::Bundles(missing)) => {
                                self.devices[i].persist();
                                // Spent at the relay even if we crash.
                                let bundles: HashMap<Address, PrekeyBundle> = missing
                                    .into_iter()
                                    .filter_map(|(a, k)| {
                                        let b = self.relay.take_bundle(&a)?;
                                        (*b.identity_key() == k).then_some((a, b))
                                    })
                                    .collect();
                                p.bundles(bundles);
                                if self.crash(crashes) {
                                    return self.devices[i].restart(now, &mut self.rng);
                                }
                            }
                        }
                    }
                    let d = &mut self.devices[i];
                    // A group message from a device removed meanwhile fails here, and is
                    // reported failed.
                    let result = p.encrypt(&d.dev, &mut d.store, now, &mut self.rng);
                    if let Err(e) = &result {
                        assert!(
                            matches!(
                                e,
                                crate::error::ClientError::Encrypt(
                                    crate::error::EncryptError::Group(
                                        hush_groups::GroupEncryptError::NotAMember
                                    )
                                )
                            ),
                            "encrypt: {e:?}"
                        );
                    }
                    pass.prepared(&mut d.store, result.map(drop))
                        .expect("prepared");
                    if self.crash(crashes) {
                        return self.devices[i].restart(now, &mut self.rng);
                    }
                }
                Step::Send(p) => {
                    // The frame leaves once what made it is written (a ciphertext is never
                    // sent from a ratchet state a crash could take back), whatever the
                    // relay then answers.
                    self.devices[i].persist();
                    // Made for a device list that has changed: refused, nothing stored.
                    let stale = p.frame.device_lists.iter().any(|c| {
                        let devices: Vec<(u32, [u8; 32])> = self
                            .relay
                            .devices_of(&c.user_id)
                            .iter()
                            .map(|(a, k)| (a.device, *k.as_bytes()))
                            .collect();
                        hush_relay_protocol::device_list::digest(&c.user_id, &devices)[..]
                            != c.digest[..]
                    });
                    if stale {
                        let refusal = Err(crate::error::ClientError::Relay {
                            code: crate::error::RelayErrorCode::StaleDevices,
                            message: "stale".into(),
                            retry_after_ms: 0,
                        });
                        let d = &mut self.devices[i];
                        pass.answer(&d.dev, &mut d.store, &mut d.lists, p, refusal, now)
                            .expect("answer");
                        self.stale += 1;
                        continue;
                    }
                    // The connection drops before the frame reaches the relay: the pass
                    // ends, and the next one sends it again.
                    if self.disconnect(crashes) {
                        return;
                    }
                    // The relay stores it for every recipient (the "sent" tick)...
                    let from = self.devices[i].dev.me.clone();
                    let recipients: BTreeSet<Address> = p
                        .frame
                        .recipients
                        .iter()
                        .map(|r| Address::new(r.user_id.clone(), r.device_id))
                        .collect();
                    let leak_to =
                        self.learn_group_recipients(&from, &p.frame.message_id, &recipients);
                    for (to, leaked) in recipients
                        .into_iter()
                        .map(|a| (a, false))
                        .chain(leak_to.into_iter().map(|a| (a, true)))
                    {
                        self.relay
                            .mailboxes
                            .entry(to)
                            .or_default()
                            .push_back(Envelope {
                                from: from.clone(),
                                message_id: p.frame.message_id.clone(),
                                ciphertext: p.frame.ciphertext.clone(),
                                leaked,
                                franking: p.frame.franking_commitment.clone(),
                            });
                    }
                    // ...and a crash (or a lost connection) before the device records it
                    // means sending it again.
                    if self.crash(crashes) {
                        return self.devices[i].restart(now, &mut self.rng);
                    }
                    if self.disconnect(crashes) {
                        return;
                    }
                    let sent = pr::server_frame::Body::Sent(pr::Sent {
                        message_id: p.frame.message_id.clone(),
                        server_timestamp_ms: now,
                        refused: Vec::new(),
                    });
                    let d = &mut self.devices[i];
                    pass.answer(&d.dev, &mut d.store, &mut d.lists, p, Ok(sent), now)
                        .expect("answer");
                }
            }
        }
    }

    /// Prints one delivery: who to whom, the message's number among its sender's (if it is
    /// a text), and what came of it.
    fn trace(&self, me: &Address, from: &Address, mid: &[u8], leaked: bool, events: &[Event]) {
        let n = MessageId::try_from(mid)
            .ok()
            .and_then(|m| self.order.get(&m));
        let what: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Message(m) => format!("shown #{}", self.order[&m.id]),
                other => format!("{other:?}").chars().take(80).collect(),
            })
            .collect();
        eprintln!("{me} <- {from} #{n:?} leaked={leaked}: {what:?}");
    }

    /// How many group items device `i` holds (SPEC §16.9).
    fn held_count(&mut self, i: usize) -> usize {
        self.devices[i]
            .store
            .read(|tx| tx.held_before(u64::MAX))
            .expect("held items")
            .len()
    }

    /// Whether either user was removed from a group.
    fn removed_pair(&self, a: &Address, b: &Address) -> bool {
        self.groups
            .iter()
            .any(|g| g.removed.contains(&a.user) || g.removed.contains(&b.user))
    }

    /// Whether the connection drops here: 5% of the time when `crashes` is on.
    fn disconnect(&mut self, crashes: bool) -> bool {
        let dropped = crashes && self.rng.random_bool(0.05);
        self.disconnects += usize::from(dropped);
        dropped
    }

    /// For a group message's `Send`: records its recipients as the devices it was meant
    /// for, and returns the devices of the group's former members, to whom a curious relay
    /// passes a copy.
    fn learn_group_recipients(
        &mut self,
        from: &Address,
        message_id: &[u8],
        recipients: &BTreeSet<Address>,
    ) -> Vec<Address> {
        let Ok(id) = MessageId::try_from(message_id) else {
            return Vec::new();
        };
        let Some(s) = self.sent.iter_mut().find(|s| s.id == id) else {
            return Vec::new();
        };
        let Some(gid) = s.group else {
            return Vec::new();
        };
        s.to.extend(recipients.iter().cloned());
        let Some(g) = self.groups.iter().find(|g| g.id == gid) else {
            return Vec::new();
        };
        self.relay
            .devices
            .keys()
            .filter(|a| g.removed.contains(&a.user) && !recipients.contains(a) && *a != from)
            .cloned()
            .collect()
    }

    /// Delivers the oldest envelope waiting for a device; a crash (or a lost acknowledgement)
    /// after it is processed means it comes again.
    fn deliver(&mut self, i: usize, crashes: bool) {
        let me = self.devices[i].dev.me.clone();
        // The relay keeps each sender's order; across senders (another relay node's
        // wake-up first, say) it may deliver in another order.
        let firsts: Vec<usize> = self.relay.mailboxes.get(&me).map_or(Vec::new(), |m| {
            let mut senders = BTreeSet::new();
            (0..m.len())
                .filter(|&k| senders.insert(m[k].from.clone()))
                .collect()
        });
        if firsts.is_empty() {
            return;
        }
        let at = if crashes && firsts.len() > 1 && self.rng.random_bool(0.3) {
            self.reordered += 1;
            firsts[self.rng.random_range(1..firsts.len())]
        } else {
            0
        };
        let Some(env) = self.relay.mailboxes.get(&me).and_then(|m| m.get(at)) else {
            return;
        };
        let leaked = env.leaked;
        let env_from = env.from.clone();
        let env_mid = env.message_id.clone();
        let envelope = env.frame(&me, 1, env.message_id.clone(), self.now);
        let now = self.now;
        let held_before = self.held_count(i);
        // The core's own handling of pushed frames, its questions answered by the relay
        // model.
        let mut pushes = Pushes::new(vec![pr::ServerFrame {
            request_id: 0,
            body: Some(pr::server_frame::Body::Envelope(envelope)),
        }]);
        let events = loop {
            let d = &mut self.devices[i];
            match pushes
                .next(&d.dev, &mut d.store, now, &mut self.rng)
                .expect("receive")
            {
                PushStep::Devices(user) => {
                    self.devices[i].persist();
                    let listed = self.relay.devices_of(&user);
                    let d = &mut self.devices[i];
                    pushes
                        .listed(&d.dev, &mut d.store, Some(&listed), now, &mut self.rng)
                        .expect("receive");
                }
                PushStep::Done {
                    envelope_ids,
                    events,
                    ..
                } => {
                    assert_eq!(envelope_ids, [1], "the envelope is acknowledged");
                    // The driver writes before the acknowledgement leaves, and shows the
                    // events after it.
                    self.devices[i].persist();
                    break events;
                }
                other => panic!("unexpected step {other:?}"),
            }
        };
        if std::env::var("HUSH_SIM_TRACE").is_ok() {
            self.trace(&me, &env_from, &env_mid, leaked, &events);
        }
        if self.held_count(i) > held_before {
            self.held += 1;
        }
        for e in events {
            match e {
                Event::Message(m) => self.devices[i].shown.push((m.from, m.id)),
                // A former member cannot read what was not sent to it.
                Event::Dropped { .. } if leaked => {}
                // A member removed meanwhile: its late sender key or message is refused by
                // those who know it was removed, and it may not read what others sent
                // before they knew.
                Event::Dropped { reason, .. }
                    if self.removed_pair(&env_from, &me) && group_drop(&reason) => {}
                Event::Dropped { from, reason } => {
                    panic!("{me} dropped an envelope from {from}: {reason:?}")
                }
                _ => {}
            }
        }
        if self.crash(crashes) {
            return self.devices[i].restart(now, &mut self.rng);
        }
        // The acknowledgement is lost with the connection: the relay sends it again.
        if self.disconnect(crashes) {
            return;
        }
        if let Some(m) = self.relay.mailboxes.get_mut(&me) {
            m.remove(at);
        }
    }

    fn check(&self) {
        let group_of: HashMap<MessageId, Option<GroupId>> =
            self.sent.iter().map(|s| (s.id, s.group)).collect();
        for d in &self.devices {
            let mut seen = std::collections::HashSet::new();
            let mut last: HashMap<(&Address, Option<GroupId>), usize> = HashMap::new();
            for (from, id) in &d.shown {
                assert!(seen.insert(id), "{} was shown {id:?} twice", d.dev.me);
                let n = self.order[id];
                // Per sender and conversation: a group message that came before the sender
                // key it needs waits for it, and may be shown after later direct ones.
                if let Some(prev) = last.insert((from, group_of[id]), n) {
                    assert!(
                        prev < n,
                        "{} showed {from}'s messages out of order: #{prev} then #{n} ({:?})",
                        d.dev.me,
                        group_of[id].is_some()
                    );
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += self.rng.random_range(1..2_000);
        let i = self.rng.random_range(0..self.devices.len());
        match self.rng.random_range(0..20) {
            0..=3 => self.send(),
            4 | 5 => self.group_send(),
            6..=10 => self.flush(i, true),
            11..=16 => self.deliver(i, true),
            17 => self.group_change(),
            18 if self.linked < Self::MAX_LINKED && self.rng.random_bool(0.5) => self.link(),
            _ => {
                let now = self.now;
                self.devices[i].restart(now, &mut self.rng);
            }
        }
        self.check();
    }

    /// Heals the network: flushes and delivers until nothing is left, with no crashes.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let busy = self
                .devices
                .iter_mut()
                .any(|d| d.store.read(|tx| tx.outbox_len()).expect("outbox length") > 0)
                || self.relay.mailboxes.values().any(|m| !m.is_empty());
            if !busy {
                return;
            }
            for i in 0..self.devices.len() {
                self.flush(i, false);
                while self
                    .relay
                    .mailboxes
                    .get(&self.devices[i].dev.me)
                    .is_some_and(|m| !m.is_empty())
                {
                    self.deliver(i, false);
                }
            }
        }
        panic!("the network never settled");
    }

    fn final_checks(&mut self) {
        self.check();
        for d in &self.devices {
            for (from, id) in &d.shown {
                let s = self.sent.iter().find(|s| s.id == *id).expect("sent");
                // A direct message only on its recipient's and its sender's devices (one
                // linked after it was queued may get it too).
                if let Some(u) = &s.to_user {
                    assert!(
                        d.dev.me.user == *u || d.dev.me.user == s.from.user,
                        "{} read {from}'s message to {u}",
                        d.dev.me
                    );
                }
                assert!(
                    s.group.is_none() || s.to.contains(&d.dev.me),
                    "{} read {from}'s message {id:?}, which was not sent to it",
                    d.dev.me
                );
            }
        }
        for s in &self.sent {
            for a in &s.to {
                let d = self
                    .devices
                    .iter()
                    .find(|d| d.dev.me == *a)
                    .expect("recipient device");
                let n = d.shown.iter().filter(|(_, id)| *id == s.id).count();
                let removed = s.group.is_some_and(|gid| {
                    self.groups.iter().any(|g| {
                        g.id == gid
                            && (g.removed.contains(&s.from.user) || g.removed.contains(&a.user))
                    })
                });
                if removed {
                    assert!(
                        n <= 1,
                        "{a} showed {}'s message {:?} {n} times",
                        s.from,
                        s.id
                    );
                    continue;
                }
                assert_eq!(n, 1, "{a} showed {}'s message {:?} {n} times", s.from, s.id);
            }
        }
        // Nothing is left waiting for a group change, but what a removal explains.
        for d in &mut self.devices {
            let held = d
                .store
                .read(|tx| tx.held_before(u64::MAX))
                .expect("held items");
            for (_, group, from) in held {
                // Only a removal from that very group explains it.
                assert!(
                    self.groups.iter().any(|g| g.id[..] == group[..]
                        && (g.removed.contains(&from.user) || g.removed.contains(&d.dev.me.user))),
                    "{} still holds an item from {from}",
                    d.dev.me
                );
            }
        }
        let now = self.now;
        for i in 0..self.devices.len() {
            self.devices[i].restart(now, &mut self.rng);
            let d = &mut self.devices[i];
            let history = d.store.read(|tx| tx.messages()).expect("history opens");
            let me = &d.dev.me;
            let received = history
                .iter()
                .filter(|m| (m.from_user.as_str(), m.from_device) != (me.user.as_str(), me.device))
                .count();
            assert_eq!(received, d.shown.len(), "{me}'s history");
        }
    }
}

/// A drop that a removal can explain: from or to a member no longer in the group (never a
/// bad signature, a failed authentication or a malformed item).
fn group_drop(reason: &crate::event::DropReason) -> bool {
    use crate::event::{DropReason, Undecryptable};
    use hush_groups::{ControlError, DistributionError as D, GroupDecryptError as G};
    matches!(
        reason,
        DropReason::UnknownGroup
            | DropReason::Undecryptable(
                Undecryptable::Group(G::RemovedMember | G::NotAMember | G::KeyUnavailable)
                    | Undecryptable::Distribution(D::RemovedMember | D::NotAMember)
                    | Undecryptable::Control(ControlError::NotInGroup)
            )
    )
}

/// What one run did, for the test to check that the seeds exercise it all.
#[derive(Default)]
struct Tally {
    linked: usize,
    stale: usize,
    changes: [usize; 3],
    group_messages: usize,
    reordered: usize,
    disconnects: usize,
    held: usize,
}

/// One seeded run.
fn run(seed: u64) -> Tally {
    let result = std::panic::catch_unwind(|| {
        let mut w = World::new(seed);
        for _ in 0..STEPS {
            w.step();
        }
        w.settle();
        w.final_checks();
        assert!(!w.sent.is_empty());
        Tally {
            linked: w.linked,
            stale: w.stale,
            changes: w.changes,
            group_messages: w
                .sent
                .iter()
                .filter(|s| s.group.is_some() && !s.to.is_empty())
                .count(),
            reordered: w.reordered,
            disconnects: w.disconnects,
            held: w.held,
        }
    });
    match result {
        Ok(t) => t,
        Err(e) => {
            eprintln!("simulation failed with seed {seed}: replay with HUSH_SIM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn seeded_simulations_lose_and_repeat_nothing() {
    if let Some(seed) = std::env::var("HUSH_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed);
        return;
    }
    let seeds = std::env::var("HUSH_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SIM_SEEDS);
    let mut all = Tally::default();
    for seed in 0..seeds {
        let t = run(seed);
        all.linked += t.linked;
        all.stale += t.stale;
        for k in 0..3 {
            all.changes[k] += t.changes[k];
        }
        all.group_messages += t.group_messages;
        all.reordered += t.reordered;
        all.disconnects += t.disconnects;
        all.held += t.held;
    }
    let [created, added, removed] = all.changes;
    eprintln!(
        "{seeds} runs: {} devices linked, {} sends refused as stale, groups: {created} created, \
         {added} adds, {removed} removals, {} group messages; {} deliveries out of order \
         across senders, {} connections dropped, {} deliveries held",
        all.linked, all.stale, all.group_messages, all.reordered, all.disconnects, all.held
    );
    // The seeds run by `cargo test` do exercise each of these.
    if seeds >= SIM_SEEDS {
        for (what, n) in [
            ("links", all.linked),
            ("stale refusals", all.stale),
            ("group creations", created),
            ("adds", added),
            ("removals", removed),
            ("group messages", all.group_messages),
            ("reorders", all.reordered),
            ("disconnects", all.disconnects),
            ("held group items", all.held),
        ] {
            assert!(n > 0, "no {what} in {seeds} runs");
        }
    }
}

/// SPEC §16.7: a relay that held back an old prekey message made without a one-time prekey,
/// and hands it over under a fresh envelope id once its session is forgotten, cannot make it
/// replace the session the pair is using; the pair keeps talking both ways.
#[test]
fn a_replayed_prekey_message_does_not_replace_the_session_in_use() {
    let mut w = World::new(5);
    let (alice, bob) = (0, 2);
    let bob_addr = w.devices[bob].dev.me.clone();
    let alice_addr = w.devices[alice].dev.me.clone();
    // Bob's one-time prekeys are gone: Alice's sessions start from his signed prekey alone.
    w.relay
        .devices
        .get_mut(&bob_addr)
        .expect("bob published")
        .one_time
        .clear();
    let held_id = w.send_to(alice, "bob");
    w.flush(alice, false);
    let held = w
        .relay
        .mailboxes
        .get_mut(&bob_addr)
        .and_then(VecDeque::pop_back)
        .expect("alice's first prekey message to bob");
    for s in w.sent.iter_mut().filter(|s| s.id == held_id) {
        s.to.retain(|a| *a != bob_addr);
    }
    // More new sessions from Alice than Bob remembers, each delivered.
    for _ in 0..=inbound::MAX_PREVIOUS_SESSIONS {
        let d = &mut w.devices[alice];
        d.store
            .transaction(|tx| tx.forget_device(&bob_addr))
            .expect("forget");
        w.send_to(alice, "bob");
        w.settle();
    }
    let base_key = |w: &mut World| {
        w.devices[bob]
            .store
            .read(|tx| tx.session(&alice_addr))
            .expect("session")
            .and_then(|s| s.base_key().copied())
    };
    let in_use = base_key(&mut w).expect("bob's session with alice");
    let Some(Incoming::Session(SessionMessage::Prekey(p))) = Incoming::decode(&held.ciphertext)
    else {
        panic!("the held message is a prekey message")
    };
    assert_ne!(*p.base_key(), in_use, "the held session is forgotten");
    let replay = |message_id: Vec<u8>, w: &mut World| {
        let envelope = held.frame(&bob_addr, 1, message_id, w.now);
        let registered = w.relay.devices.get(&alice_addr).map(|p| p.identity);
        let now = w.now;
        let d = &mut w.devices[bob];
        inbound::receive(
            &d.dev,
            &mut d.store,
            envelope,
            Incoming::decode(&held.ciphertext),
            registered,
            now,
            &mut w.rng,
        )
        .expect("receive")
    };
    for attempt in 0..2 {
        let events = replay(vec![0xEE; 16], &mut w);
        assert!(
            matches!(
                events.as_slice(),
                [Event::Dropped {
                    reason: crate::DropReason::Undecryptable(
                        crate::event::Undecryptable::MessageIdMismatch
                    ),
                    ..
                }]
            ),
            "attempt {attempt}: {events:?}"
        );
        assert_eq!(
            base_key(&mut w),
            Some(in_use),
            "the session in use was replaced"
        );
    }
    // The pair still talks both ways on it.
    w.send_to(bob, "alice");
    w.send_to(alice, "bob");
    w.settle();
    w.final_checks();
}

/// SPEC §6.2: a post-quantum first message that Bob accepted, replayed under a fresh
/// envelope id once its session is forgotten, is refused before anything is decrypted: its
/// one-time KEM prekey is gone, or its use of the last-resort KEM prekey is recorded.
#[test]
fn a_replayed_post_quantum_prekey_message_is_refused() {
    for last_resort in [false, true] {
        let mut w = World::new(6);
        let (alice, bob) = (0, 2);
        let bob_addr = w.devices[bob].dev.me.clone();
        let alice_addr = w.devices[alice].dev.me.clone();
        // Bob's one-time prekeys are gone (so only the KEM prekey tells a replay), and
        // for the last-resort case his one-time KEM prekeys too.
        let published = w.relay.devices.get_mut(&bob_addr).expect("bob published");
        published.one_time.clear();
        if last_resort {
            published.kem_one_time.clear();
        }
        w.send_to(alice, "bob");
        w.flush(alice, false);
        let first_envelope = w
            .relay
            .mailboxes
            .get(&bob_addr)
            .and_then(VecDeque::back)
            .map(|e| e.frame(&bob_addr, 1, vec![0xEE; 16], w.now))
            .expect("alice's first prekey message to bob");
        let first = first_envelope.ciphertext.clone();
        let Some(Incoming::Session(SessionMessage::Prekey(p))) = Incoming::decode(&first) else {
            panic!("a prekey message")
        };
        let kem_id = p.kem_prekey_id().expect("a post-quantum first message");
        assert_eq!(kem_id >= account::LAST_RESORT_BASE, last_resort);
        w.settle();
        // More new sessions from Alice than Bob remembers, each delivered.
        for _ in 0..=inbound::MAX_PREVIOUS_SESSIONS {
            w.devices[alice]
                .store
                .transaction(|tx| tx.forget_device(&bob_addr))
                .expect("forget");
            w.send_to(alice, "bob");
            w.settle();
        }
        let in_use = w.devices[bob]
            .store
            .read(|tx| tx.session(&alice_addr))
            .expect("session")
            .and_then(|s| s.base_key().copied());
        assert_ne!(
            in_use.as_ref(),
            Some(p.base_key()),
            "its session is forgotten"
        );
        let envelope = first_envelope.clone();
        let registered = w.relay.devices.get(&alice_addr).map(|p| p.identity);
        let now = w.now;
        let d = &mut w.devices[bob];
        let events = inbound::receive(
            &d.dev,
            &mut d.store,
            envelope,
            Incoming::decode(&first),
            registered,
            now,
            &mut w.rng,
        )
        .expect("receive");
        let expected = if last_resort {
            crate::event::Undecryptable::KemPrekeyReused
        } else {
            crate::event::Undecryptable::KemPrekeyUsed
        };
        assert!(
            matches!(
                events.as_slice(),
                [Event::Dropped { reason: crate::DropReason::Undecryptable(u), .. }] if *u == expected
            ),
            "last resort {last_resort}: {events:?}"
        );
        let after = w.devices[bob]
            .store
            .read(|tx| tx.session(&alice_addr))
            .expect("session")
            .and_then(|s| s.base_key().copied());
        assert_eq!(after, in_use, "the session in use was replaced");
        w.send_to(bob, "alice");
        w.send_to(alice, "bob");
        w.settle();
        w.final_checks();
    }
}

/// SPEC §16.9: a member's sender key and message that reach a device before the admin's
/// creation of the group are held, not dropped, and shown once the group arrives.
#[test]
fn group_items_that_come_before_the_group_wait_for_it() {
    let mut w = World::new(7);
    let (alice, bob, carol) = (0, 2, 3);
    let carol_addr = w.devices[carol].dev.me.clone();
    let alice_addr = w.devices[alice].dev.me.clone();
    let listed: Vec<(Address, IdentityPublicKey)> = ["alice", "bob", "carol"]
        .iter()
        .flat_map(|u| w.relay.devices_of(u))
        .filter(|(a, _)| *a != alice_addr)
        .collect();
    let now = w.now;
    let d = &mut w.devices[alice];
    let (gid, _) = d
        .store
        .transaction(|tx| super::groups::create(&d.dev, tx, "early", &listed, now, &mut w.rng))
        .expect("create");
    w.groups.push(SimGroup {
        id: gid,
        admin: alice,
        users: ["alice", "bob", "carol"].map(String::from).into(),
        removed: BTreeSet::new(),
    });
    w.flush(alice, false);
    // Bob hears of the group first and writes to it at once.
    while w
        .relay
        .mailboxes
        .get(&w.devices[bob].dev.me)
        .is_some_and(|m| !m.is_empty())
    {
        w.deliver(bob, false);
    }
    let id = w
        .queue(bob, &Conversation::Group(gid), BTreeSet::new())
        .expect("bob writes to the group");
    w.flush(bob, false);
    // Carol gets Bob's sender key and message before Alice's creation of the group.
    let mailbox = w
        .relay
        .mailboxes
        .get_mut(&carol_addr)
        .expect("carol's mail");
    let (from_alice, rest): (VecDeque<_>, VecDeque<_>) =
        mailbox.drain(..).partition(|e| e.from == alice_addr);
    assert!(!from_alice.is_empty() && rest.len() >= 2);
    let early = rest.len();
    mailbox.extend(rest);
    mailbox.extend(from_alice);
    for _ in 0..early {
        w.deliver(carol, false);
    }
    let held = |w: &mut World| {
        w.devices[carol]
            .store
            .read(|tx| tx.held_before(u64::MAX))
            .expect("held")
            .len()
    };
    assert!(w.devices[carol].shown.iter().all(|(_, m)| *m != id));
    assert!(held(&mut w) >= 2, "the sender key and the message wait");
    w.settle();
    assert_eq!(held(&mut w), 0);
    assert_eq!(
        w.devices[carol]
            .shown
            .iter()
            .filter(|(_, m)| *m == id)
            .count(),
        1,
        "shown once the group arrived"
    );
    w.final_checks();
}
