//! Which devices are connected here, and how new mail and receipts reach their connections.
//!
//! Each connected device has an [`Inbox`]. When the store promises to report what it commits
//! in commit order ([`Store::deliver_on_commit`](crate::Store::deliver_on_commit)), each
//! committed envelope or receipt is pushed into its device's inbox and the connection sends
//! it without reading the database. Otherwise, or when an inbox is full, the inbox is only
//! flagged, and the connection reads its mailbox from the store. Either way nothing is
//! skipped: see [`Inbox::take`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::{Addr, Delivery};

/// Most deliveries waiting in one inbox; past this, the connection reads its mailbox.
const MAX_QUEUED: usize = 1024;
/// Most ciphertext bytes waiting in one inbox.
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// A connection's inbox: pushed deliveries, a flag that says "read the store too", and the
/// connection's other signals ("replaced by a newer connection", "your one-time prekey
/// stock changed"), all behind one [`Notify`] so that an idle connection waits on one
/// future.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) notify: Notify,
    queue: Mutex<Queue>,
    replaced: AtomicBool,
    prekeys: AtomicBool,
}

/// The signals besides deliveries, taken by [`Inbox::signals`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    /// A newer connection of the device (here or on another node), or the device removed.
    pub(crate) replaced: bool,
    /// The device's one-time prekey stock changed.
    pub(crate) prekeys: bool,
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

    fn replace(&self) {
        self.replaced.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn prekeys_changed(&self) {
        self.prekeys.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Takes the signals raised since the last call.
    pub(crate) fn signals(&self) -> Signals {
        Signals {
            replaced: self.replaced.swap(false, Ordering::SeqCst),
            prekeys: self.prekeys.swap(false, Ordering::SeqCst),
        }
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

/// A connection's id and its inbox.
type Entry = (u64, Arc<Inbox>);

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
}

impl Hub {
    pub(crate) fn register(&self, addr: &Addr) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(Inbox::default());
        let old = self
            .devices
            .lock()
            .map(|mut d| d.insert(addr.clone(), (id, inbox.clone())))
            .unwrap_or(None);
        if let Some((_, old_inbox)) = old {
            old_inbox.replace();
        }
        Registration {
            hub: self,
            addr: addr.clone(),
            id,
            inbox,
        }
    }

    /// Pushes a committed delivery to its device, if it is connected here. `false` if not.
    pub(crate) fn push(&self, d: Delivery) -> bool {
        let Ok(devices) = self.devices.lock() else {
            return false;
        };
        match devices.get(d.to()) {
            Some((_, inbox)) => {
                inbox.push(d);
                true
            }
            None => false,
        }
    }

    /// Wakes `addr`, if it is connected here, to read its mailbox from the store.
    pub(crate) fn wake(&self, addr: &Addr) {
        if let Ok(d) = self.devices.lock()
            && let Some((_, inbox)) = d.get(addr)
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
            && let Some((_, inbox)) = d.get(addr)
        {
            inbox.replace();
        }
    }

    /// Tells `addr`, if connected here, that its one-time prekey stock changed.
    pub(crate) fn prekeys_taken(&self, addr: &Addr) {
        if let Ok(d) = self.devices.lock()
            && let Some((_, inbox)) = d.get(addr)
        {
            inbox.prekeys_changed();
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.hub.devices.lock()
            && d.get(&self.addr).is_some_and(|(id, _)| *id == self.id)
        {
            d.remove(&self.addr);
        }
    }
}
