//! The on-device store, as a small trait of transactional operations ([`Store`],
//! [`StoreTx`]) that any backend implements: [`SqliteStore`] (the default, one file per
//! device; with the default `native` feature) and [`MemoryStore`] (tests and simulations). Backends keep only sealed records
//! and the plain columns SPEC §16.8 lists; sealing and opening, each record under its own
//! label, happen above them in `Tx`, so a browser or phone backend stores nothing in the
//! clear either. Every change caused by one message is one transaction.

mod memory;
#[cfg(native_io)]
mod sqlite;

use std::cell::RefCell;

use hush_crypto::{CryptoRng, StorageKey, Zeroizing};
use prost::Message as _;

pub use self::memory::MemoryStore;
#[cfg(native_io)]
pub use self::sqlite::SqliteStore;
use crate::error::ClientError;
use crate::event::{Address, GroupId, ReceiptKind};
use crate::proto::client as pc;

/// Seal labels: one per kind of record (SPEC §16.8).
pub(crate) use hush_crypto::labels::client_record as label;

/// A browser backend whose commits are in memory at once and durable later (IndexedDB
/// behind a journaled [`MemoryStore`]). The client awaits [`Durability::flush`] before any
/// frame leaves (`ClientConfig::durability`).
#[cfg(web_io)]
pub trait Durability {
    /// Resolves once every commit made so far is durable. Once a write has failed, this
    /// fails every time: what is in memory is no longer what is kept.
    fn flush(&self)
    -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>>>>;
}

/// A backend failed (the database, the disk...). Its own error is the source.
#[derive(Debug, thiserror::Error)]
#[error("store backend failed")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps a backend's error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

/// A stored record that did not open under the storage key or did not decode, and was set
/// aside so that everything else goes on (see [`crate::Event::RecordSetAside`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoredRecord {
    /// The session with this device (a new one starts with its next prekey message).
    Session(Address),
    /// The sessions a newer one replaced, with this device.
    PreviousSessions(Address),
    /// A group's state, directory and name: this device is no longer in the group until it
    /// is added again.
    Group(crate::event::GroupId),
    /// An outbox entry, by its message id: the message was not sent.
    Outbox(Vec<u8>),
}

/// A tick recorded for a message this device sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    any(test, feature = "web"),
    derive(serde::Serialize, serde::Deserialize)
)]
pub enum Tick {
    /// The message was written to this device's outbox (not sent yet).
    Queued,
    /// The relay stored the message for this device (recorded per recipient device; only
    /// these devices' receipts count).
    Addressed,
    /// One of the three receipts.
    Receipt(ReceiptKind),
}

/// An outbox entry as stored: (seq, message id, sealed draft unless already encrypted).
pub type OutboxRow = (i64, Vec<u8>, Option<Vec<u8>>);
/// Pending read receipts for one sender: (row ids, sender, message ids).
pub type ReadsRow = (Vec<i64>, Address, Vec<Vec<u8>>);

/// A store backend: hands out transactions.
pub trait Store: Send {
    /// Starts a transaction. Dropping it without [`StoreTx::commit`] rolls it back.
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError>;
}

/// One transaction's operations. Values named `sealed` are sealed records, opaque to the
/// backend; everything else is what SPEC §16.8 stores in the clear. Sequence numbers and row
/// ids are the backend's, increasing in insertion order.
#[allow(missing_docs)] // Each operation is named for the table and action it is.
pub trait StoreTx {
    /// Makes every change of this transaction durable, or none.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    fn device_key(&self, a: &Address) -> Result<Option<Vec<u8>>, StoreError>;
    /// The user's devices in device-id order.
    fn devices_of(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, StoreError>;
    fn set_device_key(&self, a: &Address, key: &[u8]) -> Result<(), StoreError>;
    /// Forgets the device and its session.
    fn forget_device(&self, a: &Address) -> Result<(), StoreError>;

    fn session(&self, a: &Address) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_session(&self, a: &Address, sealed: &[u8]) -> Result<(), StoreError>;
    fn delete_session(&self, a: &Address) -> Result<(), StoreError>;
    /// The sessions a newer one replaced, newest first (SPEC §16.7).
    fn previous_sessions(&self, a: &Address) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Replaces the list of previous sessions.
    fn set_previous_sessions(&self, a: &Address, sealed: &[Vec<u8>]) -> Result<(), StoreError>;

    fn put_signed_prekey(&self, id: u32, sealed: &[u8], created_ms: u64) -> Result<(), StoreError>;
    fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes signed prekeys created before `before_ms`, except the two in `keep` (the
    /// current one and the one it replaced).
    fn prune_signed_prekeys(&self, before_ms: u64, keep: [u32; 2]) -> Result<(), StoreError>;

    /// Adds (or replaces) a one-time prekey, not uploaded yet.
    fn put_one_time_prekey(&self, id: u32, sealed: &[u8]) -> Result<(), StoreError>;
    fn one_time_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    fn delete_one_time_prekey(&self, id: u32) -> Result<(), StoreError>;
    /// Up to `limit` one-time prekeys not uploaded yet, in id order.
    fn unuploaded_prekeys(&self, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError>;
    fn mark_uploaded(&self, ids: &[u32]) -> Result<(), StoreError>;
    /// The relay holds `remaining` of this device's uploaded one-time prekeys, the highest
    /// ids (it hands out the lowest first, SPEC §14.2): those are not handed out; every other
    /// uploaded key is, since `now_ms` unless already marked earlier.
    fn set_prekey_stock(&self, remaining: u64, now_ms: u64) -> Result<(), StoreError>;
    /// Deletes one-time prekeys handed out at or before `before_ms`; returns how many.
    fn prune_handed_out(&self, before_ms: u64) -> Result<u64, StoreError>;

    /// Adds (or replaces) a one-time KEM prekey, not uploaded yet. The one-time KEM prekey
    /// operations below behave as their one-time prekey counterparts above.
    fn put_kem_prekey(&self, id: u32, sealed: &[u8]) -> Result<(), StoreError>;
    fn kem_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    fn delete_kem_prekey(&self, id: u32) -> Result<(), StoreError>;
    fn unuploaded_kem_prekeys(&self, limit: usize) -> Result<Vec<(u32, Vec<u8>)>, StoreError>;
    fn mark_kem_uploaded(&self, ids: &[u32]) -> Result<(), StoreError>;
    fn set_kem_stock(&self, remaining: u64, now_ms: u64) -> Result<(), StoreError>;
    fn prune_kem_handed_out(&self, before_ms: u64) -> Result<u64, StoreError>;

    fn put_last_resort_kem_prekey(
        &self,
        id: u32,
        sealed: &[u8],
        created_ms: u64,
    ) -> Result<(), StoreError>;
    fn last_resort_kem_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes last-resort KEM prekeys created before `before_ms`, except the two in `keep`
    /// (the current one and the one it replaced), and the uses recorded for them.
    fn prune_last_resort_kem_prekeys(
        &self,
        before_ms: u64,
        keep: [u32; 2],
    ) -> Result<(), StoreError>;
    /// Whether a session was started with last-resort KEM prekey `kem_id`, signed prekey
    /// `signed_prekey_id` and base key `base_key` (SPEC §6.2).
    fn kem_prekey_used(
        &self,
        kem_id: u32,
        signed_prekey_id: u32,
        base_key: &[u8],
    ) -> Result<bool, StoreError>;
    fn record_kem_prekey_use(
        &self,
        kem_id: u32,
        signed_prekey_id: u32,
        base_key: &[u8],
    ) -> Result<(), StoreError>;

    fn group(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put_group(&self, id: &[u8], sealed: &[u8]) -> Result<(), StoreError>;
    fn delete_group(&self, id: &[u8]) -> Result<(), StoreError>;
    /// Keeps a record that could not be used (`kind`, its key, its bytes as stored), out of
    /// the way (SPEC §16.8, "Records set aside").
    fn put_aside(
        &self,
        kind: &str,
        key: &[u8],
        sealed: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// How many records were set aside.
    fn set_aside_count(&self) -> Result<u64, StoreError>;
    /// Keeps a group message or sender key from `from` that cannot be applied before some
    /// change to group `group_id` (SPEC §16.9).
    fn hold(
        &self,
        group_id: &[u8],
        from: &Address,
        sealed: &[u8],
        at_ms: u64,
    ) -> Result<(), StoreError>;
    /// What is held for a group, oldest first: (id, when it was held, sealed).
    fn held(&self, group_id: &[u8]) -> Result<Vec<(i64, u64, Vec<u8>)>, StoreError>;
    /// When the oldest item from `from` held for a group was held, if any is.
    fn oldest_held_from(&self, group_id: &[u8], from: &Address) -> Result<Option<u64>, StoreError>;
    /// What has been held since before `before_ms`, oldest first: (id, group id, sender).
    fn held_before(&self, before_ms: u64) -> Result<Vec<HeldRow>, StoreError>;
    /// How many items each sender has held, in any group, and the id of its oldest.
    fn held_senders(&self) -> Result<Vec<(Address, u64, i64)>, StoreError>;
    /// The oldest item held from `from`, in any group: (id, group id).
    fn oldest_held_of(&self, from: &Address) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Forgets a held item.
    fn release(&self, id: i64) -> Result<(), StoreError>;
    fn group_ids(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Appends a draft to the outbox; returns its sequence number.
    fn push_draft(&self, message_id: &[u8], sealed: &[u8], now_ms: u64) -> Result<i64, StoreError>;
    /// The oldest outbox entry after sequence number `after` (0 for the oldest of all):
    /// (seq, message id, sealed draft unless already encrypted).
    fn next_outbox(&self, after: i64) -> Result<Option<OutboxRow>, StoreError>;
    /// Replaces the draft of `seq` by its encrypted envelopes, indexed 0, 1, ..., and keeps
    /// the draft aside until the entry is done (for [`StoreTx::restore_draft`]).
    fn set_ready(&self, seq: i64, sealed: &[Vec<u8>]) -> Result<(), StoreError>;
    /// Drops what is left of the envelopes of `seq` and makes its kept draft its draft
    /// again, to be encrypted anew (a send refused for a stale device list); `false`, and
    /// nothing changed, if no draft is kept for it.
    fn restore_draft(&self, seq: i64) -> Result<bool, StoreError>;
    /// The first envelope of `seq` not sent yet with an index above `after` (-1 for the
    /// first of all): (index, sealed).
    fn next_ready(&self, seq: i64, after: i64) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    fn done_ready(&self, seq: i64, idx: i64) -> Result<(), StoreError>;
    /// Replaces the envelope `idx` of `seq` (some of its recipients have it; the rest are
    /// to be sent again).
    fn replace_ready(&self, seq: i64, idx: i64, sealed: &[u8]) -> Result<(), StoreError>;
    /// Removes the entry `seq` and whatever of it is left.
    fn done_outbox(&self, seq: i64) -> Result<(), StoreError>;
    fn outbox_len(&self) -> Result<u64, StoreError>;

    fn push_read(&self, from: &Address, message_id: &[u8]) -> Result<(), StoreError>;
    /// Up to `limit` pending read receipts for the sender of the oldest one:
    /// (row ids, sender, message ids).
    fn pending_reads(&self, limit: usize) -> Result<Option<ReadsRow>, StoreError>;
    fn done_reads(&self, ids: &[i64]) -> Result<(), StoreError>;

    fn processed(&self, from: &Address, message_id: &[u8]) -> Result<bool, StoreError>;
    fn mark_processed(
        &self,
        from: &Address,
        message_id: &[u8],
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Appends a history entry.
    fn put_message(&self, sealed: &[u8], now_ms: u64) -> Result<(), StoreError>;
    /// The history, oldest first.
    fn messages(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Records a tick once; `false` if it was already there.
    fn put_tick(
        &self,
        message_id: &[u8],
        by: &Address,
        tick: Tick,
        at_ms: u64,
    ) -> Result<bool, StoreError>;
    /// Whether that one tick is recorded.
    fn has_tick(&self, message_id: &[u8], by: &Address, tick: Tick) -> Result<bool, StoreError>;
    /// The message's ticks, ordered by tick, then address.
    fn ticks(&self, message_id: &[u8]) -> Result<Vec<(Address, Tick, u64)>, StoreError>;
}

/// A held item, by row: (id, group id, sender).
pub type HeldRow = (i64, Vec<u8>, Address);

/// One-time prekey secrets: (id, secret).
pub(crate) type PrekeySecrets = Vec<(u32, Zeroizing<Vec<u8>>)>;
/// An outbox entry: (seq, message id, draft if not encrypted yet).
pub(crate) type OutboxEntry = (i64, Vec<u8>, Option<pc::Draft>);
/// Read receipts for one sender: (row ids, sender, message ids).
pub(crate) type PendingReads = ReadsRow;

/// Most one-time prekeys uploaded at once.
const UPLOAD_BATCH: usize = 500;
/// Most read receipts for one sender sent in one frame.
const READ_BATCH: usize = 64;

/// The randomness that sealing uses (a fresh salt per record), supplied by the caller.
pub(crate) type SealRng = Box<dyn CryptoRng + Send>;

/// A backend, the key that seals its records, and the randomness for the salts.
pub(crate) struct Sealed {
    backend: Box<dyn Store>,
    key: StorageKey,
    rng: RefCell<SealRng>,
}

impl Sealed {
    pub(crate) fn new(backend: Box<dyn Store>, key: StorageKey, rng: SealRng) -> Self {
        Self {
            backend,
            key,
            rng: RefCell::new(rng),
        }
    }

    /// Runs `f` in one transaction: all of it is committed, or none.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.transaction_when(f, |_| true)
    }

    /// Runs `f` in a transaction that commits only when `f` returns `Ok(Ok(_))`: an
    /// `Ok(Err(_))` (input refused) is rolled back like a store error.
    pub(crate) fn transaction_if_ok<T, E>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<Result<T, E>, ClientError>,
    ) -> Result<Result<T, E>, ClientError> {
        self.transaction_when(f, Result::is_ok)
    }

    /// Runs `f` in a transaction, committed if `commit` says so of its result.
    fn transaction_when<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
        commit: impl FnOnce(&T) -> bool,
    ) -> Result<T, ClientError> {
        let raw = self.backend.begin()?;
        let out = f(&Tx {
            raw: &*raw,
            key: &self.key,
            rng: &self.rng,
        })?;
        if commit(&out) {
            raw.commit()?;
        }
        Ok(out)
    }

    /// Runs `f` in a transaction that is always rolled back (for reads).
    pub(crate) fn read<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.transaction_when(f, |_| false)
    }
}

/// One transaction, with the storage key at hand: typed records in, sealed bytes to the
/// backend.
pub(crate) struct Tx<'a> {
    raw: &'a dyn StoreTx,
    key: &'a StorageKey,
    rng: &'a RefCell<SealRng>,
}

impl Tx<'_> {
    pub(crate) fn seal(&self, label: &[u8], bytes: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut rng = self
            .rng
            .try_borrow_mut()
            .map_err(|_| StoreError::backend(std::io::Error::other("re-entrant seal")))?;
        Ok(self.key.seal(label, bytes, &mut **rng)?)
    }

    pub(crate) fn open(
        &self,
        label: &[u8],
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        Ok(self.key.open(label, blob)?)
    }

    fn open_proto<M: prost::Message + Default>(
        &self,
        label: &[u8],
        blob: &[u8],
    ) -> Result<M, ClientError> {
        let bytes = self.open(label, blob)?;
        M::decode(&bytes[..]).map_err(|_| ClientError::Corrupt)
    }

    pub(crate) fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.raw.meta(k)?)
    }

    pub(crate) fn set_meta(&self, k: &str, v: &[u8]) -> Result<(), ClientError> {
        Ok(self.raw.set_meta(k, v)?)
    }

    pub(crate) fn meta_u64(&self, k: &str) -> Result<u64, ClientError> {
        Ok(self
            .meta(k)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub(crate) fn set_meta_u64(&self, k: &str, v: u64) -> Result<(), ClientError> {
        self.set_meta(k, &v.to_be_bytes())
    }

    // --- devices and sessions ---

    pub(crate) fn device_key(&self, a: &Address) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.raw.device_key(a)?)
    }

    pub(crate) fn devices_of(&self, user: &str) -> Result<Vec<(u32, Vec<u8>)>, ClientError> {
        Ok(self.raw.devices_of(user)?)
    }

    pub(crate) fn set_device_key(&self, a: &Address, key: &[u8]) -> Result<(), ClientError> {
        Ok(self.raw.set_device_key(a, key)?)
    }

    pub(crate) fn forget_device(&self, a: &Address) -> Result<(), ClientError> {
        Ok(self.raw.forget_device(a)?)
    }

    pub(crate) fn session(
        &self,
        a: &Address,
    ) -> Result<Option<hush_sessions::Session>, ClientError> {
        match self.raw.session(a)? {
            None => Ok(None),
            Some(b) => {
                let bytes = self.open(label::SESSION, &b)?;
                Ok(Some(
                    hush_sessions::Session::from_bytes(&bytes).map_err(|_| ClientError::Corrupt)?,
                ))
            }
        }
    }

    pub(crate) fn save_session(
        &self,
        a: &Address,
        s: &hush_sessions::Session,
    ) -> Result<(), ClientError> {
        let sealed = self.seal(label::SESSION, &s.to_bytes())?;
        Ok(self.raw.put_session(a, &sealed)?)
    }

    /// The sessions a newer one replaced, newest first.
    pub(crate) fn previous_sessions(
        &self,
        a: &Address,
    ) -> Result<Vec<hush_sessions::Session>, ClientError> {
        self.raw
            .previous_sessions(a)?
            .iter()
            .map(|b| {
                let bytes = self.open(label::SESSION, b)?;
                hush_sessions::Session::from_bytes(&bytes).map_err(|_| ClientError::Corrupt)
            })
            .collect()
    }

    pub(crate) fn save_previous_sessions(
        &self,
        a: &Address,
        sessions: &[hush_sessions::Session],
    ) -> Result<(), ClientError> {
        let sealed = sessions
            .iter()
            .map(|s| self.seal(label::SESSION, &s.to_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.raw.set_previous_sessions(a, &sealed)?)
    }

    // --- prekeys ---

    pub(crate) fn put_signed_prekey(
        &self,
        id: u32,
        secret: &[u8],
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let sealed = self.seal(label::SIGNED_PREKEY, secret)?;
        Ok(self.raw.put_signed_prekey(id, &sealed, now_ms)?)
    }

    pub(crate) fn signed_prekey(&self, id: u32) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        self.raw
            .signed_prekey(id)?
            .map(|b| self.open(label::SIGNED_PREKEY, &b))
            .transpose()
    }

    pub(crate) fn prune_signed_prekeys(
        &self,
        before_ms: u64,
        keep: [u32; 2],
    ) -> Result<(), ClientError> {
        Ok(self.raw.prune_signed_prekeys(before_ms, keep)?)
    }

    pub(crate) fn put_one_time_prekey(&self, id: u32, secret: &[u8]) -> Result<(), ClientError> {
        let sealed = self.seal(label::ONE_TIME_PREKEY, secret)?;
        Ok(self.raw.put_one_time_prekey(id, &sealed)?)
    }

    pub(crate) fn one_time_prekey(
        &self,
        id: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        self.raw
            .one_time_prekey(id)?
            .map(|b| self.open(label::ONE_TIME_PREKEY, &b))
            .transpose()
    }

    pub(crate) fn delete_one_time_prekey(&self, id: u32) -> Result<(), ClientError> {
        Ok(self.raw.delete_one_time_prekey(id)?)
    }

    /// One-time prekeys generated but not yet uploaded: (id, secret).
    pub(crate) fn unuploaded_prekeys(&self) -> Result<PrekeySecrets, ClientError> {
        self.raw
            .unuploaded_prekeys(UPLOAD_BATCH)?
            .into_iter()
            .map(|(id, b)| Ok((id, self.open(label::ONE_TIME_PREKEY, &b)?)))
            .collect()
    }

    pub(crate) fn mark_uploaded(&self, ids: &[u32]) -> Result<(), ClientError> {
        Ok(self.raw.mark_uploaded(ids)?)
    }

    pub(crate) fn set_prekey_stock(&self, remaining: u64, now_ms: u64) -> Result<(), ClientError> {
        Ok(self.raw.set_prekey_stock(remaining, now_ms)?)
    }

    pub(crate) fn prune_handed_out(&self, before_ms: u64) -> Result<u64, ClientError> {
        Ok(self.raw.prune_handed_out(before_ms)?)
    }

    pub(crate) fn put_kem_prekey(&self, id: u32, record: &[u8]) -> Result<(), ClientError> {
        let sealed = self.seal(label::KEM_PREKEY, record)?;
        Ok(self.raw.put_kem_prekey(id, &sealed)?)
    }

    pub(crate) fn kem_prekey(&self, id: u32) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        self.raw
            .kem_prekey(id)?
            .map(|b| self.open(label::KEM_PREKEY, &b))
            .transpose()
    }

    pub(crate) fn delete_kem_prekey(&self, id: u32) -> Result<(), ClientError> {
        Ok(self.raw.delete_kem_prekey(id)?)
    }

    /// One-time KEM prekeys generated but not yet uploaded: (id, record).
    pub(crate) fn unuploaded_kem_prekeys(
        &self,
        limit: usize,
    ) -> Result<PrekeySecrets, ClientError> {
        self.raw
            .unuploaded_kem_prekeys(limit)?
            .into_iter()
            .map(|(id, b)| Ok((id, self.open(label::KEM_PREKEY, &b)?)))
            .collect()
    }

    pub(crate) fn mark_kem_uploaded(&self, ids: &[u32]) -> Result<(), ClientError> {
        Ok(self.raw.mark_kem_uploaded(ids)?)
    }

    pub(crate) fn set_kem_stock(&self, remaining: u64, now_ms: u64) -> Result<(), ClientError> {
        Ok(self.raw.set_kem_stock(remaining, now_ms)?)
    }

    pub(crate) fn prune_kem_handed_out(&self, before_ms: u64) -> Result<u64, ClientError> {
        Ok(self.raw.prune_kem_handed_out(before_ms)?)
    }

    pub(crate) fn put_last_resort_kem_prekey(
        &self,
        id: u32,
        record: &[u8],
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let sealed = self.seal(label::KEM_PREKEY, record)?;
        Ok(self.raw.put_last_resort_kem_prekey(id, &sealed, now_ms)?)
    }

    pub(crate) fn last_resort_kem_prekey(
        &self,
        id: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        self.raw
            .last_resort_kem_prekey(id)?
            .map(|b| self.open(label::KEM_PREKEY, &b))
            .transpose()
    }

    pub(crate) fn prune_last_resort_kem_prekeys(
        &self,
        before_ms: u64,
        keep: [u32; 2],
    ) -> Result<(), ClientError> {
        Ok(self.raw.prune_last_resort_kem_prekeys(before_ms, keep)?)
    }

    pub(crate) fn kem_prekey_used(
        &self,
        u: &hush_sessions::KemPrekeyUse,
    ) -> Result<bool, ClientError> {
        Ok(self
            .raw
            .kem_prekey_used(u.kem_prekey_id, u.signed_prekey_id, u.base_key.as_bytes())?)
    }

    pub(crate) fn record_kem_prekey_use(
        &self,
        u: &hush_sessions::KemPrekeyUse,
    ) -> Result<(), ClientError> {
        Ok(self.raw.record_kem_prekey_use(
            u.kem_prekey_id,
            u.signed_prekey_id,
            u.base_key.as_bytes(),
        )?)
    }

    // --- records set aside ---

    /// Whether `f` fails because a stored record does not open or decode.
    fn unusable<T>(r: Result<T, ClientError>) -> Result<bool, ClientError> {
        match r {
            Ok(_) => Ok(false),
            Err(ClientError::Corrupt | ClientError::Sealed) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Sets aside, for a message from `from` (in group `group`, if a group message), every
    /// record it needs that does not open or decode: the session with `from`, its previous
    /// sessions, the group; or, if none of those, any group that does not open (a session
    /// message may carry a group change or sender key). Returns what was set aside.
    pub(crate) fn set_aside_for(
        &self,
        from: &Address,
        group: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<Vec<StoredRecord>, ClientError> {
        let mut out = Vec::new();
        let key = |a: &Address| [a.user.as_bytes(), b"\0", &a.device.to_be_bytes()].concat();
        if Self::unusable(self.session(from))? {
            if let Some(b) = self.raw.session(from)? {
                self.raw.put_aside("session", &key(from), &b, now_ms)?;
            }
            self.raw.delete_session(from)?;
            out.push(StoredRecord::Session(from.clone()));
        }
        if Self::unusable(self.previous_sessions(from))? {
            for b in self.raw.previous_sessions(from)? {
                self.raw
                    .put_aside("previous_session", &key(from), &b, now_ms)?;
            }
            self.raw.set_previous_sessions(from, &[])?;
            out.push(StoredRecord::PreviousSessions(from.clone()));
        }
        let groups = match group {
            Some(g) => vec![g.to_vec()],
            None if out.is_empty() => self.raw.group_ids()?,
            None => vec![],
        };
        for id in groups {
            let usable = self
                .group(&id)
                .and_then(|rec| rec.map(|r| crate::core::groups::load_group(&r)).transpose());
            if Self::unusable(usable)? {
                if let Some(b) = self.raw.group(&id)? {
                    self.raw.put_aside("group", &id, &b, now_ms)?;
                }
                self.raw.delete_group(&id)?;
                if let Ok(gid) = GroupId::try_from(id.as_slice()) {
                    out.push(StoredRecord::Group(gid));
                }
            }
        }
        Ok(out)
    }

    /// Sets aside the first outbox entry after `after` if its draft or one of its
    /// envelopes does not open or decode. Returns it.
    pub(crate) fn set_aside_outbox(
        &self,
        after: i64,
        now_ms: u64,
    ) -> Result<Option<StoredRecord>, ClientError> {
        let Some((seq, mid, draft)) = self.raw.next_outbox(after)? else {
            return Ok(None);
        };
        let mut bad = Self::unusable(self.next_outbox(after))?;
        let mut idx = -1;
        while !bad {
            match self.next_ready(seq, idx) {
                Ok(Some((i, _))) => idx = i,
                Ok(None) => break,
                Err(ClientError::Corrupt | ClientError::Sealed) => bad = true,
                Err(e) => return Err(e),
            }
        }
        if !bad {
            return Ok(None);
        }
        self.raw
            .put_aside("outbox", &mid, &draft.unwrap_or_default(), now_ms)?;
        let mut idx = -1;
        while let Some((i, b)) = self.raw.next_ready(seq, idx)? {
            self.raw.put_aside("outbox_ready", &mid, &b, now_ms)?;
            idx = i;
        }
        self.raw.done_outbox(seq)?;
        Ok(Some(StoredRecord::Outbox(mid)))
    }

    // --- groups ---

    pub(crate) fn group(&self, id: &[u8]) -> Result<Option<pc::GroupRecord>, ClientError> {
        self.raw
            .group(id)?
            .map(|b| self.open_proto(label::GROUP, &b))
            .transpose()
    }

    pub(crate) fn save_group(
        &self,
        id: &[u8],
        record: &pc::GroupRecord,
    ) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(record.encode_to_vec());
        let sealed = self.seal(label::GROUP, &bytes)?;
        Ok(self.raw.put_group(id, &sealed)?)
    }

    /// Holds `item` (sealed) until a change to its group (SPEC §16.9).
    pub(crate) fn hold(&self, item: &pc::HeldItem, now_ms: u64) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(item.encode_to_vec());
        let sealed = self.seal(label::HELD, &bytes)?;
        let from = Address::new(item.from_user.clone(), item.from_device);
        Ok(self.raw.hold(&item.group_id, &from, &sealed, now_ms)?)
    }

    /// What is held for a group, oldest first, with when it was held; `None` for an item
    /// that does not open.
    pub(crate) fn held(
        &self,
        group_id: &[u8],
    ) -> Result<Vec<(i64, u64, Option<pc::HeldItem>)>, ClientError> {
        Ok(self
            .raw
            .held(group_id)?
            .into_iter()
            .map(|(id, at, b)| (id, at, self.open_proto(label::HELD, &b).ok()))
            .collect())
    }

    pub(crate) fn oldest_held_from(
        &self,
        group_id: &[u8],
        from: &Address,
    ) -> Result<Option<u64>, ClientError> {
        Ok(self.raw.oldest_held_from(group_id, from)?)
    }

    pub(crate) fn held_before(&self, before_ms: u64) -> Result<Vec<HeldRow>, ClientError> {
        Ok(self.raw.held_before(before_ms)?)
    }

    pub(crate) fn held_senders(&self) -> Result<Vec<(Address, u64, i64)>, ClientError> {
        Ok(self.raw.held_senders()?)
    }

    pub(crate) fn oldest_held_of(
        &self,
        from: &Address,
    ) -> Result<Option<(i64, Vec<u8>)>, ClientError> {
        Ok(self.raw.oldest_held_of(from)?)
    }

    pub(crate) fn release(&self, id: i64) -> Result<(), ClientError> {
        Ok(self.raw.release(id)?)
    }

    pub(crate) fn group_ids(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        Ok(self.raw.group_ids()?)
    }

    // --- outbox ---

    pub(crate) fn push_draft(
        &self,
        message_id: &[u8],
        draft: &pc::Draft,
        now_ms: u64,
    ) -> Result<i64, ClientError> {
        let bytes = Zeroizing::new(draft.encode_to_vec());
        let sealed = self.seal(label::DRAFT, &bytes)?;
        Ok(self.raw.push_draft(message_id, &sealed, now_ms)?)
    }

    /// The oldest outbox entry: (seq, message id, draft if not encrypted yet).
    pub(crate) fn next_outbox(&self, after: i64) -> Result<Option<OutboxEntry>, ClientError> {
        let Some((seq, mid, draft)) = self.raw.next_outbox(after)? else {
            return Ok(None);
        };
        let draft = draft
            .map(|b| self.open_proto(label::DRAFT, &b))
            .transpose()?;
        Ok(Some((seq, mid, draft)))
    }

    /// Replaces the draft of `seq` by its encrypted envelopes.
    pub(crate) fn set_ready(&self, seq: i64, ready: &[pc::Ready]) -> Result<(), ClientError> {
        let sealed = ready
            .iter()
            .map(|r| self.seal(label::READY, &r.encode_to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.raw.set_ready(seq, &sealed)?)
    }

    pub(crate) fn next_ready(
        &self,
        seq: i64,
        after: i64,
    ) -> Result<Option<(i64, pc::Ready)>, ClientError> {
        self.raw
            .next_ready(seq, after)?
            .map(|(idx, b)| Ok((idx, self.open_proto(label::READY, &b)?)))
            .transpose()
    }

    pub(crate) fn done_ready(&self, seq: i64, idx: i64) -> Result<(), ClientError> {
        Ok(self.raw.done_ready(seq, idx)?)
    }

    pub(crate) fn replace_ready(
        &self,
        seq: i64,
        idx: i64,
        ready: &pc::Ready,
    ) -> Result<(), ClientError> {
        let sealed = self.seal(label::READY, &ready.encode_to_vec())?;
        Ok(self.raw.replace_ready(seq, idx, &sealed)?)
    }

    pub(crate) fn done_outbox(&self, seq: i64) -> Result<(), ClientError> {
        Ok(self.raw.done_outbox(seq)?)
    }

    pub(crate) fn restore_draft(&self, seq: i64) -> Result<bool, ClientError> {
        Ok(self.raw.restore_draft(seq)?)
    }

    pub(crate) fn outbox_len(&self) -> Result<u64, ClientError> {
        Ok(self.raw.outbox_len()?)
    }

    pub(crate) fn push_read(&self, from: &Address, message_id: &[u8]) -> Result<(), ClientError> {
        Ok(self.raw.push_read(from, message_id)?)
    }

    /// Up to 64 pending read receipts for one sender: (ids, sender, message ids).
    pub(crate) fn pending_reads(&self) -> Result<Option<PendingReads>, ClientError> {
        Ok(self.raw.pending_reads(READ_BATCH)?)
    }

    pub(crate) fn done_reads(&self, ids: &[i64]) -> Result<(), ClientError> {
        Ok(self.raw.done_reads(ids)?)
    }

    // --- received messages ---

    pub(crate) fn processed(&self, from: &Address, message_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self.raw.processed(from, message_id)?)
    }

    pub(crate) fn mark_processed(
        &self,
        from: &Address,
        message_id: &[u8],
        now_ms: u64,
    ) -> Result<(), ClientError> {
        Ok(self.raw.mark_processed(from, message_id, now_ms)?)
    }

    pub(crate) fn put_message(
        &self,
        m: &pc::StoredMessage,
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(m.encode_to_vec());
        let sealed = self.seal(label::MESSAGE, &bytes)?;
        Ok(self.raw.put_message(&sealed, now_ms)?)
    }

    pub(crate) fn messages(&self) -> Result<Vec<pc::StoredMessage>, ClientError> {
        self.raw
            .messages()?
            .into_iter()
            .map(|b| self.open_proto(label::MESSAGE, &b))
            .collect()
    }

    pub(crate) fn put_tick(
        &self,
        message_id: &[u8],
        by: &Address,
        tick: Tick,
        at_ms: u64,
    ) -> Result<bool, ClientError> {
        Ok(self.raw.put_tick(message_id, by, tick, at_ms)?)
    }

    pub(crate) fn ticks(
        &self,
        message_id: &[u8],
    ) -> Result<Vec<(Address, Tick, u64)>, ClientError> {
        Ok(self.raw.ticks(message_id)?)
    }

    /// Whether this device queued `message_id` (so its receipts are for us).
    /// Whether the relay stored message `message_id` of this device for device `by`.
    pub(crate) fn addressed_to(
        &self,
        message_id: &[u8],
        by: &Address,
    ) -> Result<bool, ClientError> {
        Ok(self.raw.has_tick(message_id, by, Tick::Addressed)?)
    }

    /// Whether `me` (this device) wrote message `message_id`.
    pub(crate) fn queued_by(&self, message_id: &[u8], me: &Address) -> Result<bool, ClientError> {
        Ok(self.raw.has_tick(message_id, me, Tick::Queued)?)
    }

    pub(crate) fn queued_here(&self, message_id: &[u8]) -> Result<bool, ClientError> {
        Ok(self
            .ticks(message_id)?
            .iter()
            .any(|(_, t, _)| *t == Tick::Queued))
    }
}
