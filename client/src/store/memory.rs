//! An in-memory backend for tests, deterministic simulations and browsers. Clones share one
//! database, so a test can "restart" a device by opening a new client on a clone: what was
//! committed is there, what was not is gone. A transaction works on a copy of the tables and
//! replaces them on commit.
//!
//! With the `web` feature, `MemoryStore::journaled` also records what each commit changed,
//! row by row (`MemoryStore::take_changes`), for a backend that keeps the rows elsewhere
//! (a browser's IndexedDB, in `hush-wasm`) to write, and rebuilds a store from those rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{HeldRow, OutboxRow, ReadsRow, Store, StoreError, StoreTx, Tick};
use crate::event::{Address, ReceiptKind};

type Key = (String, u32);

fn key(a: &Address) -> Key {
    (a.user.clone(), a.device)
}

#[derive(Clone, Default, PartialEq)]
struct Tables {
    meta: BTreeMap<String, Vec<u8>>,
    devices: BTreeMap<Key, Vec<u8>>,
    sessions: BTreeMap<Key, Vec<u8>>,
    previous_sessions: BTreeMap<Key, Vec<Vec<u8>>>,
    /// id → (sealed, created_ms)
    signed_prekeys: BTreeMap<u32, (Vec<u8>, u64)>,
    /// id → (sealed, uploaded, handed out at)
    one_time_prekeys: BTreeMap<u32, (Vec<u8>, bool, Option<u64>)>,
    /// The same for one-time KEM prekeys.
    kem_prekeys: BTreeMap<u32, (Vec<u8>, bool, Option<u64>)>,
    /// id → (sealed, created_ms)
    last_resort_kem_prekeys: BTreeMap<u32, (Vec<u8>, u64)>,
    /// (KEM prekey id, signed prekey id, base key)
    kem_prekey_uses: BTreeSet<(u32, u32, Vec<u8>)>,
    groups: BTreeMap<Vec<u8>, Vec<u8>>,
    /// (kind, key, sealed, at_ms)
    set_aside: Vec<(String, Vec<u8>, Vec<u8>, u64)>,
    /// id → (group id, sender, sealed, at_ms)
    held: BTreeMap<i64, (Vec<u8>, Address, Vec<u8>, u64)>,
    next_held: i64,
    /// seq → (message id, sealed draft)
    outbox: BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>,
    outbox_ready: BTreeMap<(i64, i64), Vec<u8>>,
    /// seq → sealed draft of an encrypted entry
    kept_drafts: BTreeMap<i64, Vec<u8>>,
    next_seq: i64,
    /// id → (sender, message id)
    pending_reads: BTreeMap<i64, (Key, Vec<u8>)>,
    next_read: i64,
    processed: BTreeSet<(Key, Vec<u8>)>,
    messages: Vec<Vec<u8>>,
    /// (message id, tick order, address) → (tick, at_ms)
    ticks: BTreeMap<(Vec<u8>, u8, Key), (Tick, u64)>,
}

/// The order SQLite returns ticks in: sent, delivered, read, addressed, queued.
const fn tick_order(t: Tick) -> u8 {
    match t {
        Tick::Receipt(ReceiptKind::Sent) => 0,
        Tick::Receipt(ReceiptKind::Delivered) => 1,
        Tick::Receipt(ReceiptKind::Read) => 2,
        Tick::Queued => 255,
        Tick::Addressed => 254,
    }
}

type OneTimeKeys = BTreeMap<u32, (Vec<u8>, bool, Option<u64>)>;

fn unuploaded(keys: &OneTimeKeys, limit: usize) -> Vec<(u32, Vec<u8>)> {
    keys.iter()
        .filter(|(_, (_, uploaded, _))| !uploaded)
        .take(limit)
        .map(|(id, (s, _, _))| (*id, s.clone()))
        .collect()
}

fn mark_uploaded(keys: &mut OneTimeKeys, ids: &[u32]) {
    for id in ids {
        if let Some((_, uploaded, _)) = keys.get_mut(id) {
            *uploaded = true;
        }
    }
}

fn set_stock(keys: &mut OneTimeKeys, remaining: u64, now_ms: u64) {
    let mut kept = 0;
    for (_, uploaded, handed_out) in keys.values_mut().rev() {
        if !*uploaded {
            continue;
        }
        if kept < remaining {
            kept += 1;
            *handed_out = None;
        } else if handed_out.is_none() {
            *handed_out = Some(now_ms);
        }
    }
}

fn prune_handed_out(keys: &mut OneTimeKeys, before_ms: u64) -> u64 {
    let before = keys.len();
    keys.retain(|_, (_, _, handed_out)| handed_out.is_none_or(|at| at > before_ms));
    (before - keys.len()) as u64
}

/// A device's store in memory.
#[derive(Clone, Default)]
pub struct MemoryStore {
    db: Arc<Mutex<Tables>>,
    /// Rows changed by commits and not taken yet (journaled stores only).
    #[cfg(any(test, feature = "web"))]
    journal: Option<Arc<Mutex<Vec<journal::Change>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.db
            .lock()
            .map_err(|_| StoreError::backend(std::io::Error::other("memory store poisoned")))
    }
}

impl Store for MemoryStore {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError> {
        let work = self.lock()?.clone();
        Ok(Box::new(MemoryTx {
            store: self,
            work: std::cell::RefCell::new(work),
        }))
    }
}

struct MemoryTx<'a> {
    store: &'a MemoryStore,
    work: std::cell::RefCell<Tables>,
}

impl MemoryTx<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> Result<T, StoreError> {
        let mut t = self
            .work
            .try_borrow_mut()
            .map_err(|_| StoreError::backend(std::io::Error::other("re-entrant use")))?;
        Ok(f(&mut t))
    }
}

impl StoreTx for MemoryTx<'_> {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let work = self.work.into_inner();
        let mut db = self.store.lock()?;
        #[cfg(any(test, feature = "web"))]
        if let Some(j) = &self.store.journal {
            let mut changes = Vec::new();
            journal::diff(&db, &work, &mut changes)?;
            j.lock()
                .map_err(|_| StoreError::backend(std::io::Error::other("journal poisoned")))?
                .extend(changes);
        }
        *db = work;
        Ok(())
    }

    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.meta.get(k).cloned())
    }

    fn set_meta(&self, k: &str, v: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.meta.insert(k.to_string(), v.to_vec());
        })
    }

    fn device_key(&self, a: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.devices.get(&key(a)).cloned())
    }

    fn devices_of(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.with(|t| {
            t.devices
                .iter()
                .filter(|((u, _), _)| u == user)
                .map(|((_, d), k)| (*d, k.clone()))
                .collect()
        })
    }

    fn set_device_key(&self, a: &Address, k: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.devices.insert(key(a), k.to_vec());
        })
    }

    fn forget_device(&self, a: &Address) -> Result<(), StoreError> {
        self.with(|t| {
            t.devices.remove(&key(a));
            t.sessions.remove(&key(a));
            t.previous_sessions.remove(&key(a));
        })
    }

    fn session(&self, a: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.sessions.get(&key(a)).cloned())
    }

    fn put_session(&self, a: &Address, sealed: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.sessions.insert(key(a), sealed.to_vec());
        })
    }

    fn delete_session(&self, a: &Address) -> Result<(), StoreError> {
        self.with(|t| {
            t.sessions.remove(&key(a));
        })
    }

    fn previous_sessions(&self, a: &Address) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with(|t| {
            t.previous_sessions
                .get(&key(a))
                .cloned()
                .unwrap_or_default()
        })
    }

    fn set_previous_sessions(&self, a: &Address, sealed: &[Vec<u8>]) -> Result<(), StoreError> {
        self.with(|t| {
            if sealed.is_empty() {
                t.previous_sessions.remove(&key(a));
            } else {
                t.previous_sessions.insert(key(a), sealed.to_vec());
            }
        })
    }

    fn put_signed_prekey(&self, id: u32, sealed: &[u8], created_ms: u64) -> Result<(), StoreError> {
        self.with(|t| {
            t.signed_prekeys.insert(id, (sealed.to_vec(), created_ms));
        })
    }

    fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.signed_prekeys.get(&id).map(|(s, _)| s.clone()))
    }

    fn prune_signed_prekeys(&self, before_ms: u64, keep: [u32; 2]) -> Result<(), StoreError> {
        self.with(|t| {
            t.signed_prekeys
                .retain(|id, (_, created)| *created >= before_ms || keep.contains(id));
        })
    }

    fn put_one_time_prekey(&self, id: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.one_time_prekeys
                .insert(id, (sealed.to_vec(), false, None));
        })
    }

    fn one_time_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.one_time_prekeys.get(&id).map(|(s, _, _)| s.clone()))
    }

    fn delete_one_time_prekey(&self, id: u32) -> Result<(), StoreError> {
        self.with(|t| {
            t.one_time_prekeys.remove(&id);
        })
    }

    fn unuploaded_prekeys(&self, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.with(|t| unuploaded(&t.one_time_prekeys, limit))
    }

    fn mark_uploaded(&self, ids: &[u32]) -> Result<(), StoreError> {
        self.with(|t| mark_uploaded(&mut t.one_time_prekeys, ids))
    }

    fn set_prekey_stock(&self, remaining: u64, now_ms: u64) -> Result<(), StoreError> {
        self.with(|t| set_stock(&mut t.one_time_prekeys, remaining, now_ms))
    }

    fn prune_handed_out(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.with(|t| prune_handed_out(&mut t.one_time_prekeys, before_ms))
    }

    fn put_kem_prekey(&self, id: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.kem_prekeys.insert(id, (sealed.to_vec(), false, None));
        })
    }

    fn kem_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.kem_prekeys.get(&id).map(|(s, _, _)| s.clone()))
    }

    fn delete_kem_prekey(&self, id: u32) -> Result<(), StoreError> {
        self.with(|t| {
            t.kem_prekeys.remove(&id);
        })
    }

    fn unuploaded_kem_prekeys(&self, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.with(|t| unuploaded(&t.kem_prekeys, limit))
    }

    fn mark_kem_uploaded(&self, ids: &[u32]) -> Result<(), StoreError> {
        self.with(|t| mark_uploaded(&mut t.kem_prekeys, ids))
    }

    fn set_kem_stock(&self, remaining: u64, now_ms: u64) -> Result<(), StoreError> {
        self.with(|t| set_stock(&mut t.kem_prekeys, remaining, now_ms))
    }

    fn prune_kem_handed_out(&self, before_ms: u64) -> Result<u64, StoreError> {
        self.with(|t| prune_handed_out(&mut t.kem_prekeys, before_ms))
    }

    fn put_last_resort_kem_prekey(
        &self,
        id: u32,
        sealed: &[u8],
        created_ms: u64,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            t.last_resort_kem_prekeys
                .insert(id, (sealed.to_vec(), created_ms));
        })
    }

    fn last_resort_kem_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.last_resort_kem_prekeys.get(&id).map(|(s, _)| s.clone()))
    }

    fn prune_last_resort_kem_prekeys(
        &self,
        before_ms: u64,
        keep: [u32; 2],
    ) -> Result<(), StoreError> {
        self.with(|t| {
            t.last_resort_kem_prekeys
                .retain(|id, (_, created)| *created >= before_ms || keep.contains(id));
            let kept = &t.last_resort_kem_prekeys;
            t.kem_prekey_uses.retain(|(id, _, _)| kept.contains_key(id));
        })
    }

    fn kem_prekey_used(
        &self,
        kem_id: u32,
        signed_prekey_id: u32,
        base_key: &[u8],
    ) -> Result<bool, StoreError> {
        self.with(|t| {
            t.kem_prekey_uses
                .contains(&(kem_id, signed_prekey_id, base_key.to_vec()))
        })
    }

    fn record_kem_prekey_use(
        &self,
        kem_id: u32,
        signed_prekey_id: u32,
        base_key: &[u8],
    ) -> Result<(), StoreError> {
        self.with(|t| {
            t.kem_prekey_uses
                .insert((kem_id, signed_prekey_id, base_key.to_vec()));
        })
    }

    fn group(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|t| t.groups.get(id).cloned())
    }

    fn put_group(&self, id: &[u8], sealed: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.groups.insert(id.to_vec(), sealed.to_vec());
        })
    }

    fn delete_group(&self, id: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.groups.remove(id);
        })
    }

    fn put_aside(
        &self,
        kind: &str,
        key: &[u8],
        sealed: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            t.set_aside
                .push((kind.to_string(), key.to_vec(), sealed.to_vec(), at_ms));
        })
    }

    fn hold(
        &self,
        group_id: &[u8],
        from: &Address,
        sealed: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            t.next_held += 1;
            let id = t.next_held;
            t.held.insert(
                id,
                (group_id.to_vec(), from.clone(), sealed.to_vec(), at_ms),
            );
        })
    }

    fn held(&self, group_id: &[u8]) -> Result<Vec<(i64, u64, Vec<u8>)>, StoreError> {
        self.with(|t| {
            t.held
                .iter()
                .filter(|(_, (g, ..))| g == group_id)
                .map(|(id, (_, _, sealed, at))| (*id, *at, sealed.clone()))
                .collect()
        })
    }

    fn oldest_held_from(&self, group_id: &[u8], from: &Address) -> Result<Option<u64>, StoreError> {
        self.with(|t| {
            t.held
                .values()
                .filter(|(g, a, ..)| g == group_id && a == from)
                .map(|(.., at)| *at)
                .min()
        })
    }

    fn held_before(&self, before_ms: u64) -> Result<Vec<HeldRow>, StoreError> {
        self.with(|t| {
            t.held
                .iter()
                .filter(|(_, (.., at))| *at < before_ms)
                .map(|(id, (g, a, ..))| (*id, g.clone(), a.clone()))
                .collect()
        })
    }

    fn held_senders(&self) -> Result<Vec<(Address, u64, i64)>, StoreError> {
        self.with(|t| {
            let mut counts: BTreeMap<Key, (u64, i64)> = BTreeMap::new();
            for (id, (_, a, ..)) in &t.held {
                let e = counts.entry(key(a)).or_insert((0, *id));
                e.0 += 1;
                e.1 = e.1.min(*id);
            }
            counts
                .into_iter()
                .map(|((u, d), (n, oldest))| (Address::new(u, d), n, oldest))
                .collect()
        })
    }

    fn oldest_held_of(&self, from: &Address) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.with(|t| {
            t.held
                .iter()
                .find(|(_, (_, a, ..))| a == from)
                .map(|(id, (g, ..))| (*id, g.clone()))
        })
    }

    fn release(&self, id: i64) -> Result<(), StoreError> {
        self.with(|t| {
            t.held.remove(&id);
        })
    }

    fn set_aside_count(&self) -> Result<u64, StoreError> {
        self.with(|t| t.set_aside.len() as u64)
    }

    fn group_ids(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with(|t| t.groups.keys().cloned().collect())
    }

    fn push_draft(
        &self,
        message_id: &[u8],
        sealed: &[u8],
        _now_ms: u64,
    ) -> Result<i64, StoreError> {
        self.with(|t| {
            t.next_seq += 1;
            t.outbox
                .insert(t.next_seq, (message_id.to_vec(), Some(sealed.to_vec())));
            t.next_seq
        })
    }

    fn next_outbox(&self, after: i64) -> Result<Option<OutboxRow>, StoreError> {
        self.with(|t| {
            t.outbox
                .range(after.saturating_add(1)..)
                .next()
                .map(|(seq, (mid, draft))| (*seq, mid.clone(), draft.clone()))
        })
    }

    fn set_ready(&self, seq: i64, sealed: &[Vec<u8>]) -> Result<(), StoreError> {
        self.with(|t| {
            for (i, r) in (0..).zip(sealed) {
                t.outbox_ready.insert((seq, i), r.clone());
            }
            if let Some(draft) = t.outbox.get_mut(&seq).and_then(|(_, d)| d.take()) {
                t.kept_drafts.insert(seq, draft);
            }
        })
    }

    fn restore_draft(&self, seq: i64) -> Result<bool, StoreError> {
        self.with(|t| {
            let Some((_, draft)) = t.outbox.get_mut(&seq) else {
                return false;
            };
            let Some(kept) = t.kept_drafts.remove(&seq) else {
                return false;
            };
            *draft = Some(kept);
            t.outbox_ready.retain(|(s, _), _| *s != seq);
            true
        })
    }

    fn next_ready(&self, seq: i64, after: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.with(|t| {
            t.outbox_ready
                .range((seq, after.saturating_add(1))..=(seq, i64::MAX))
                .next()
                .map(|((_, idx), s)| (*idx, s.clone()))
        })
    }

    fn done_ready(&self, seq: i64, idx: i64) -> Result<(), StoreError> {
        self.with(|t| {
            t.outbox_ready.remove(&(seq, idx));
        })
    }

    fn replace_ready(&self, seq: i64, idx: i64, sealed: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            if let Some(r) = t.outbox_ready.get_mut(&(seq, idx)) {
                *r = sealed.to_vec();
            }
        })
    }

    fn done_outbox(&self, seq: i64) -> Result<(), StoreError> {
        self.with(|t| {
            t.outbox_ready.retain(|(s, _), _| *s != seq);
            t.kept_drafts.remove(&seq);
            t.outbox.remove(&seq);
        })
    }

    fn outbox_len(&self) -> Result<u64, StoreError> {
        self.with(|t| t.outbox.len() as u64)
    }

    fn push_read(&self, from: &Address, message_id: &[u8]) -> Result<(), StoreError> {
        self.with(|t| {
            t.next_read += 1;
            t.pending_reads
                .insert(t.next_read, (key(from), message_id.to_vec()));
        })
    }

    fn pending_reads(&self, limit: usize) -> Result<Option<ReadsRow>, StoreError> {
        self.with(|t| {
            let (_, (first, _)) = t.pending_reads.iter().next()?;
            let first = first.clone();
            let (ids, mids) = t
                .pending_reads
                .iter()
                .filter(|(_, (from, _))| *from == first)
                .take(limit)
                .map(|(id, (_, mid))| (*id, mid.clone()))
                .unzip();
            Some((ids, Address::new(first.0, first.1), mids))
        })
    }

    fn done_reads(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.with(|t| {
            for id in ids {
                t.pending_reads.remove(id);
            }
        })
    }

    fn processed(&self, from: &Address, message_id: &[u8]) -> Result<bool, StoreError> {
        self.with(|t| t.processed.contains(&(key(from), message_id.to_vec())))
    }

    fn mark_processed(
        &self,
        from: &Address,
        message_id: &[u8],
        _now_ms: u64,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            t.processed.insert((key(from), message_id.to_vec()));
        })
    }

    fn put_message(&self, sealed: &[u8], _now_ms: u64) -> Result<(), StoreError> {
        self.with(|t| t.messages.push(sealed.to_vec()))
    }

    fn messages(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with(|t| t.messages.clone())
    }

    fn put_tick(
        &self,
        message_id: &[u8],
        by: &Address,
        tick: Tick,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(|t| {
            let k = (message_id.to_vec(), tick_order(tick), key(by));
            if t.ticks.contains_key(&k) {
                return false;
            }
            t.ticks.insert(k, (tick, at_ms));
            true
        })
    }

    fn has_tick(&self, message_id: &[u8], by: &Address, tick: Tick) -> Result<bool, StoreError> {
        self.with(|t| {
            t.ticks
                .contains_key(&(message_id.to_vec(), tick_order(tick), key(by)))
        })
    }

    fn ticks(&self, message_id: &[u8]) -> Result<Vec<(Address, Tick, u64)>, StoreError> {
        self.with(|t| {
            t.ticks
                .iter()
                .filter(|((mid, _, _), _)| mid.as_slice() == message_id)
                .map(|((_, _, (u, d)), (tick, at))| (Address::new(u.clone(), *d), *tick, *at))
                .collect()
        })
    }
}

#[cfg(test)]
impl MemoryStore {
    /// Whether two stores hold the same rows.
    pub(crate) fn same_rows(&self, other: &Self) -> bool {
        match (self.lock(), other.lock()) {
            (Ok(a), Ok(b)) => *a == *b,
            _ => false,
        }
    }
}

#[cfg(any(test, feature = "web"))]
impl MemoryStore {
    /// A store holding `rows` (as [`take_changes`](Self::take_changes) gave them, the
    /// latest value of each key; none for a new device) that records what each commit
    /// changes. A row that does not decode fails with the reason.
    pub fn journaled(
        rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            db: Arc::new(Mutex::new(journal::load(rows)?)),
            journal: Some(Arc::default()),
        })
    }

    /// What commits changed since the last call, in commit order: `(key, Some(value))` to
    /// write, `(key, None)` to delete. Writing them in order, each call's changes
    /// atomically, keeps the copy equal to a committed state of this store.
    pub fn take_changes(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.journal
            .as_ref()
            .and_then(|j| j.lock().ok().map(|mut j| std::mem::take(&mut *j)))
            .unwrap_or_default()
    }
}

/// Rows of a journaled store: the key is a table's number then the row's key, the value the
/// row's value, each in postcard; the three counters are one row.
#[cfg(any(test, feature = "web"))]
mod journal {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::Tables;
    use crate::store::StoreError;

    pub(super) type Change = (Vec<u8>, Option<Vec<u8>>);

    const COUNTERS: u8 = 255;

    fn bad(what: &'static str) -> StoreError {
        StoreError::backend(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
    }

    fn enc<T: Serialize + ?Sized>(t: &T) -> Result<Vec<u8>, StoreError> {
        postcard::to_allocvec(t).map_err(|_| bad("row does not encode"))
    }

    fn key_of<K: Serialize>(table: u8, k: &K) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![table];
        out.extend(enc(k)?);
        Ok(out)
    }

    fn map<K: Serialize + Ord, V: Serialize + PartialEq>(
        table: u8,
        old: &BTreeMap<K, V>,
        new: &BTreeMap<K, V>,
        out: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        for (k, v) in new {
            if old.get(k) != Some(v) {
                out.push((key_of(table, k)?, Some(enc(v)?)));
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                out.push((key_of(table, k)?, None));
            }
        }
        Ok(())
    }

    fn set<K: Serialize + Ord>(
        table: u8,
        old: &BTreeSet<K>,
        new: &BTreeSet<K>,
        out: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        for k in new.difference(old) {
            out.push((key_of(table, k)?, Some(Vec::new())));
        }
        for k in old.difference(new) {
            out.push((key_of(table, k)?, None));
        }
        Ok(())
    }

    /// A list as rows keyed by position.
    fn list<V: Serialize + PartialEq>(
        table: u8,
        old: &[V],
        new: &[V],
        out: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        for (i, v) in new.iter().enumerate() {
            if old.get(i) != Some(v) {
                out.push((key_of(table, &(i as u64))?, Some(enc(v)?)));
            }
        }
        for i in new.len()..old.len() {
            out.push((key_of(table, &(i as u64))?, None));
        }
        Ok(())
    }

    /// Calls `$each!(number, field, kind)` for every table: one list, so that `diff` and
    /// `load` cannot disagree on a number.
    macro_rules! tables {
        ($each:ident) => {
            $each!(0, meta, map);
            $each!(1, devices, map);
            $each!(2, sessions, map);
            $each!(3, previous_sessions, map);
            $each!(4, signed_prekeys, map);
            $each!(5, one_time_prekeys, map);
            $each!(6, kem_prekeys, map);
            $each!(7, last_resort_kem_prekeys, map);
            $each!(8, kem_prekey_uses, set);
            $each!(9, groups, map);
            $each!(10, set_aside, list);
            $each!(11, held, map);
            $each!(12, outbox, map);
            $each!(13, outbox_ready, map);
            $each!(14, kept_drafts, map);
            $each!(15, pending_reads, map);
            $each!(16, processed, set);
            $each!(17, messages, list);
            $each!(18, ticks, map);
        };
    }

    pub(super) fn diff(
        old: &Tables,
        new: &Tables,
        out: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        macro_rules! one {
            ($n:expr, $field:ident, $kind:ident) => {
                $kind($n, &old.$field, &new.$field, out)?
            };
        }
        tables!(one);
        let counters = |t: &Tables| (t.next_held, t.next_seq, t.next_read);
        if counters(old) != counters(new) {
            out.push((vec![COUNTERS], Some(enc(&counters(new))?)));
        }
        Ok(())
    }

    fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
        postcard::from_bytes(b).map_err(|_| bad("stored row does not decode"))
    }

    trait Load {
        fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    }

    impl<K: DeserializeOwned + Ord, V: DeserializeOwned> Load for BTreeMap<K, V> {
        fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.insert(dec(key)?, dec(value)?);
            Ok(())
        }
    }

    impl<K: DeserializeOwned + Ord> Load for BTreeSet<K> {
        fn load(&mut self, key: &[u8], _value: &[u8]) -> Result<(), StoreError> {
            self.insert(dec(key)?);
            Ok(())
        }
    }

    /// Rows keyed by position back into a list: positions must run 0, 1, 2... with no gap.
    fn positions<V>(rows: BTreeMap<u64, V>) -> Result<Vec<V>, StoreError> {
        rows.into_iter()
            .enumerate()
            .map(|(i, (at, v))| {
                if at == i as u64 {
                    Ok(v)
                } else {
                    Err(bad("a list row is missing"))
                }
            })
            .collect()
    }

    pub(super) fn load(
        rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Tables, StoreError> {
        let mut t = Tables::default();
        // Lists are gathered by position first.
        let mut set_aside = BTreeMap::new();
        let mut messages = BTreeMap::new();
        for (key, value) in rows {
            let Some((&table, k)) = key.split_first() else {
                return Err(bad("empty row key"));
            };
            macro_rules! one {
                ($n:expr, set_aside, list) => {
                    if table == $n {
                        set_aside.load(k, &value)?;
                        continue;
                    }
                };
                ($n:expr, messages, list) => {
                    if table == $n {
                        messages.load(k, &value)?;
                        continue;
                    }
                };
                ($n:expr, $field:ident, $kind:ident) => {
                    if table == $n {
                        t.$field.load(k, &value)?;
                        continue;
                    }
                };
            }
            tables!(one);
            if table == COUNTERS {
                (t.next_held, t.next_seq, t.next_read) = dec(&value)?;
                continue;
            }
            return Err(bad("row of an unknown table"));
        }
        t.set_aside = positions(set_aside)?;
        t.messages = positions(messages)?;
        Ok(t)
    }
}
