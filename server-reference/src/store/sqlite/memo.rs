//! What the database thread remembers of each device between operations, so that the hot
//! path (store an envelope, acknowledge it, queue its receipt) reads and hashes less: one
//! map lookup per device and operation, and no allocation once a device is remembered.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{Addr, StoreError};

/// Most devices, and most (device, sending user) counts, remembered; past either, all is
/// forgotten and read again when next needed.
const CACHE_ENTRIES: usize = 100_000;

/// What is remembered of one device. Each count is read from the database when first
/// needed and kept in step by every write after that.
#[derive(Default)]
pub(super) struct Memo {
    /// Only a registered device is remembered as such (a removed device is forgotten when it
    /// is removed, see [`Memos::forget`]).
    registered: bool,
    /// Its mailbox's (count, bytes).
    usage: Option<(u64, u64)>,
    /// For each sending user, the (count, bytes) of that user's envelopes in its mailbox.
    senders: HashMap<String, (u64, u64)>,
    /// Receipts queued for it.
    receipts: Option<u64>,
}

/// The memo of every device the database thread has met lately.
#[derive(Default)]
pub(super) struct Memos {
    devices: HashMap<Addr, Memo>,
    /// How many (device, sender) counts `devices` holds.
    sender_counts: usize,
}

/// What [`Memos::with`] lends: the connection, to read what is not remembered yet.
pub(super) struct Reader<'a> {
    conn: &'a Connection,
    sender_counts: &'a mut usize,
}

impl Memos {
    /// Runs `f` on the memo of `a` (empty if nothing is remembered of it).
    pub(super) fn with<T>(
        &mut self,
        conn: &Connection,
        a: &Addr,
        f: impl FnOnce(&mut Reader<'_>, &mut Memo) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut reader = Reader {
            conn,
            sender_counts: &mut self.sender_counts,
        };
        let out = match self.devices.get_mut(a) {
            Some(m) => f(&mut reader, m),
            None => {
                let mut m = Memo::default();
                let out = f(&mut reader, &mut m);
                // Only a device that exists is remembered: sends to made-up addresses do not
                // push real devices out.
                if m.registered || m.receipts.is_some() {
                    if self.devices.len() >= CACHE_ENTRIES {
                        self.devices.clear();
                        self.sender_counts = m.senders.len();
                    }
                    self.devices.insert(a.clone(), m);
                } else {
                    self.sender_counts = self.sender_counts.saturating_sub(m.senders.len());
                }
                out
            }
        };
        if self.sender_counts > CACHE_ENTRIES {
            self.forget_all();
        }
        out
    }

    /// Runs `f` on the memo of `a` if one is kept; a count not read yet stays unread.
    pub(super) fn update(&mut self, a: &Addr, f: impl FnOnce(&mut Memo)) {
        if let Some(m) = self.devices.get_mut(a) {
            f(m);
        }
    }

    /// Forgets every count (after a rollback, or an expiry that changed them behind the
    /// memo's back); which devices are registered is read again too.
    pub(super) fn forget_all(&mut self) {
        self.devices.clear();
        self.sender_counts = 0;
    }

    /// Forgets a removed device.
    pub(super) fn forget(&mut self, a: &Addr) {
        if let Some(m) = self.devices.remove(a) {
            self.sender_counts = self.sender_counts.saturating_sub(m.senders.len());
        }
    }

    /// How many devices are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.devices.len()
    }

    /// Forgets how many receipts `a` has queued (it acknowledged some).
    pub(super) fn forget_receipts(&mut self, a: &Addr) {
        self.update(a, |m| m.receipts = None);
    }
}

impl Memo {
    /// Whether `a` (this memo's device) is registered.
    pub(super) fn registered(&mut self, r: &Reader<'_>, a: &Addr) -> Result<bool, StoreError> {
        if !self.registered {
            self.registered = r
                .conn
                .prepare_cached("SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2")?
                .query_row(params![a.user, a.device], |x| x.get::<_, i64>(0))
                .optional()?
                .is_some();
        }
        Ok(self.registered)
    }

    /// The (count, bytes) of `a`'s mailbox.
    pub(super) fn usage(&mut self, r: &Reader<'_>, a: &Addr) -> Result<(u64, u64), StoreError> {
        if let Some(u) = self.usage {
            return Ok(u);
        }
        let (count, bytes): (i64, i64) = r
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM mailbox WHERE user_id = ?1 AND device_id = ?2",
            )?
            .query_row(params![a.user, a.device], |x| Ok((x.get(0)?, x.get(1)?)))?;
        let u = (count as u64, bytes as u64);
        self.usage = Some(u);
        Ok(u)
    }

    /// The (count, bytes) of the envelopes user `sender` has queued in `a`'s mailbox.
    pub(super) fn share(
        &mut self,
        r: &mut Reader<'_>,
        a: &Addr,
        sender: &str,
    ) -> Result<(u64, u64), StoreError> {
        if let Some(u) = self.senders.get(sender) {
            return Ok(*u);
        }
        let (count, bytes): (i64, i64) = r
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(mb.size), 0) FROM mailbox mb LEFT JOIN messages m ON m.id = mb.message
                 WHERE mb.user_id = ?1 AND mb.device_id = ?2 AND COALESCE(mb.sender_user, m.sender_user) = ?3",
            )?
            .query_row(params![a.user, a.device, sender], |x| Ok((x.get(0)?, x.get(1)?)))?;
        let u = (count as u64, bytes as u64);
        self.senders.insert(sender.to_string(), u);
        *r.sender_counts += 1;
        Ok(u)
    }

    /// Counts one more envelope of `size` bytes from user `sender` in the mailbox, where
    /// counted already.
    pub(super) fn add(&mut self, sender: &str, size: u64) {
        if let Some(u) = &mut self.usage {
            u.0 += 1;
            u.1 += size;
        }
        if let Some(u) = self.senders.get_mut(sender) {
            u.0 += 1;
            u.1 += size;
        }
    }

    /// Counts one envelope of `size` bytes from user `sender` less, where counted already.
    pub(super) fn remove(&mut self, sender: &str, size: u64) {
        if let Some(u) = &mut self.usage {
            u.0 = u.0.saturating_sub(1);
            u.1 = u.1.saturating_sub(size);
        }
        if let Some(u) = self.senders.get_mut(sender) {
            u.0 = u.0.saturating_sub(1);
            u.1 = u.1.saturating_sub(size);
        }
    }

    /// Whether `a` may take one more receipt under `max`; if so, counts it.
    pub(super) fn take_receipt_room(
        &mut self,
        r: &Reader<'_>,
        a: &Addr,
        max: u64,
    ) -> Result<bool, StoreError> {
        let n = match self.receipts {
            Some(n) => n,
            None => {
                let n: i64 = r
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM receipts WHERE user_id = ?1 AND device_id = ?2",
                    )?
                    .query_row(params![a.user, a.device], |x| x.get(0))?;
                n as u64
            }
        };
        let room = n < max;
        self.receipts = Some(if room { n + 1 } else { n });
        Ok(room)
    }
}
