//! Which devices are connected here, and how to wake them when mail or receipts arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::Addr;

/// Connected devices, each with a wake-up signal. A device connected twice keeps only its
/// newest connection's signal; the older one is told to close.
/// A connection's id and its signals: new mail or receipts, "replaced by a newer
/// connection", and "your one-time prekey stock changed".
type Entry = (u64, Arc<Notify>, Arc<Notify>, Arc<Notify>);

#[derive(Default)]
pub(crate) struct Hub {
    devices: Mutex<HashMap<Addr, Entry>>,
    next: std::sync::atomic::AtomicU64,
}

/// A registration in the hub; removes itself when dropped.
pub(crate) struct Registration<'a> {
    hub: &'a Hub,
    addr: Addr,
    id: u64,
    pub(crate) wake: Arc<Notify>,
    pub(crate) replaced: Arc<Notify>,
    pub(crate) prekeys: Arc<Notify>,
}

impl Hub {
    pub(crate) fn register(&self, addr: &Addr) -> Registration<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let replaced = Arc::new(Notify::new());
        let prekeys = Arc::new(Notify::new());
        let entry = (id, wake.clone(), replaced.clone(), prekeys.clone());
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
            wake,
            replaced,
            prekeys,
        }
    }

    /// Wakes `addr` if it is connected here.
    pub(crate) fn wake(&self, addr: &Addr) {
        if let Ok(d) = self.devices.lock()
            && let Some((_, wake, _, _)) = d.get(addr)
        {
            wake.notify_one();
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
