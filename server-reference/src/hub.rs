//! Which devices are connected here, and how new mail and receipts reach their connections.
//!
//! Each connected device has an [`Inbox`]. When the store promises to report what it commits
//! in commit order ([`Store::deliver_on_commit`](crate::Store::deliver_on_commit)), each
//! committed envelope or receipt is pushed into its device's inbox and the connection sends
//! it without reading the database. Otherwise, or when an inbox is full, the inbox is only
//! flagged, and the connection reads its mailbox from the store. Either way nothing is
//! skipped: see [`Inbox::take`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::{Addr, Delivery};

/// Most deliveries waiting in one inbox; past this, the connection reads its mailbox.
const MAX_QUEUED: usize = 1024;
/// Most ciphertext bytes waiting in one inbox.
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// A connection's inbox: pushed deliveries, and a flag that says "read the store too".
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) notify: Notify,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Delivery>,
    bytes: usize,
    check_store: bool,
}

fn size(d: &Delivery) -> usize {
    match d {
        Delivery::Envelope { message, .. } => message.ciphertext.len(),
        Delivery::Receipt { .. } => 0,
    }
}

impl Inbox {
    /// Queues a committed delivery. Once the store flag is set, nothing more is queued until
    /// the connection takes the queue: everything after the flag is read from the store, so
    /// the queue never holds an item newer than one it dropped.
    fn push(&self, d: Delivery) {
        if let Ok(mut q) = self.queue.lock() {
            let n = size(&d);
            if q.check_store || q.items.len() >= MAX_QUEUED || q.bytes + n > MAX_QUEUED_BYTES {
                q.check_store = true;
            } else {
                q.bytes += n;
                q.items.push_back(d);
            }
        }
        self.notify.notify_one();
    }

    /// Asks the connection to read its mailbox and receipts from the store.
    fn wake(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.check_store = true;
        }
        self.notify.notify_one();
    }

    /// Takes the queued deliveries (oldest first) and whether the store must be read after
    /// them. Everything committed before this call is either in the returned queue or, if
    /// the flag is returned, in the store; everything committed after it is pushed again.
    pub(crate) fn take(&self) -> (VecDeque<Delivery>, bool) {
        match self.queue.lock() {
            Ok(mut q) => {
                q.bytes = 0;
                let check = std::mem::take(&mut q.check_store);
                (std::mem::take(&mut q.items), check)
            }
            Err(_) => (VecDeque::new(), true),
        }
    }
}

/// A connection's id and its signals: its inbox, "replaced by a newer connection", and
/// "your one-time prekey stock changed".
type Entry = (u64, Arc<Inbox>, Arc<Notify>, Arc<Notify>);

/// Connected devices. A device connected twice keeps only its newest connection; the older
/// one is told to close.
#[derive(Default)]
pub(crate) struct Hub {
    devices: Mutex<HashMap<Addr, Entry>>,
    next: AtomicU64,
}

/// A registration in the hub; removes itself when dropped.
pub(crate) struct Registration<'a> {
    hub: &'a Hub,
    addr: Addr,
    id: u64,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) replaced: Arc<Notify>,
    pub(crate) prekeys: Arc<Notify>,
}

impl Hub {
    pub(crate) fn register(&self, addr: &Addr) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(Inbox::default());
        let replaced = Arc::new(Notify::new());
        let prekeys = Arc::new(Notify::new());
        let entry = (id, inbox.clone(), replaced.clone(), prekeys.clone());
        let old = self
            .devices
            .lock()
            .map(|mut d| d.insert(addr.clone(), entry))
            .unwrap_or(None);
        if let Some((_, _, old_replaced, _)) = old {
            old_replaced.notify_one();
        }
        Registration {
            hub: self,
            addr: addr.clone(),
            id,
            inbox,
            replaced,
            prekeys,
        }
    }

    /// Pushes a committed delivery to its device, if it is connected here. `false` if not.
    pub(crate) fn push(&self, d: Delivery) -> bool {
        let Ok(devices) = self.devices.lock() else {
            return false;
        };
        match devices.get(d.to()) {
            Some((_, inbox, _, _)) => {
                inbox.push(d);
                true
            }
            None => false,
        }
    }

    /// Wakes `addr`, if it is connected here, to read its mailbox from the store.
    pub(crate) fn wake(&self, addr: &Addr) {
        if let Ok(d) = self.devices.lock()
            && let Some((_, inbox, _, _)) = d.get(addr)
        {
            inbox.wake();
        }
    }

    /// Whether `addr` is connected to this node.
    pub(crate) fn is_local(&self, addr: &Addr) -> bool {
        self.devices.lock().is_ok_and(|d| d.contains_key(addr))
    }

    /// Closes `addr`'s connection here (it connected to another node).
    pub(crate) fn kick(&self, addr: &Addr) {
        if let Ok(d) = self.devices.lock()
            && let Some((_, _, replaced, _)) = d.get(addr)
        {
            replaced.notify_one();
        }
    }

    /// Tells `addr`, if connected here, that its one-time prekey stock changed.
    pub(crate) fn prekeys_taken(&self, addr: &Addr) {
        if let Ok(d) = self.devices.lock()
            && let Some((_, _, _, prekeys)) = d.get(addr)
        {
            prekeys.notify_one();
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.hub.devices.lock()
            && d.get(&self.addr)
                .is_some_and(|(id, _, _, _)| *id == self.id)
        {
            d.remove(&self.addr);
        }
    }
}
