//! The client store in IndexedDB: a journaled `MemoryStore` whose changes are written, in
//! commit order, one IndexedDB transaction per flush, before any frame leaves.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

use hush_client::{Durability, MemoryStore, StoreError};
use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/src/idb.js")]
extern "C" {
    #[wasm_bindgen(js_name = idbOpen)]
    fn idb_open(name: &str) -> Promise;
    #[wasm_bindgen(js_name = idbLoad)]
    fn idb_load(db: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = idbWrite)]
    fn idb_write(db: &JsValue, previous: &Promise, changes: &Array) -> Promise;
    #[wasm_bindgen(js_name = idbClose)]
    pub(crate) fn idb_close(db: &JsValue);
    #[wasm_bindgen(js_name = idbLock)]
    fn idb_lock(name: &str) -> Promise;
}

/// The device's lock (`idbLock`): `None` if another tab holds it.
pub(crate) async fn lock(name: &str) -> Result<Option<js_sys::Function>, StoreError> {
    let release = JsFuture::from(idb_lock(name))
        .await
        .map_err(|e| failed(&e))?;
    Ok(release.dyn_into::<js_sys::Function>().ok())
}

fn failed(e: &JsValue) -> StoreError {
    let what = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| "IndexedDB failed".to_string());
    StoreError::backend(std::io::Error::other(what))
}

/// Opens (or creates) the device's database and reads every row into a journaled store.
pub(crate) async fn open(name: &str) -> Result<(JsValue, MemoryStore), StoreError> {
    let db = JsFuture::from(idb_open(name))
        .await
        .map_err(|e| failed(&e))?;
    let rows = JsFuture::from(idb_load(&db))
        .await
        .map_err(|e| failed(&e))?;
    let rows: Vec<(Vec<u8>, Vec<u8>)> = Array::from(&rows)
        .iter()
        .map(|pair| {
            let pair = Array::from(&pair);
            (
                Uint8Array::new(&pair.get(0)).to_vec(),
                Uint8Array::new(&pair.get(1)).to_vec(),
            )
        })
        .collect();
    let store = MemoryStore::journaled(rows)?;
    Ok((db, store))
}

/// Writes the store's changes to IndexedDB.
pub(crate) struct IndexedDb {
    store: MemoryStore,
    db: JsValue,
    /// The last write: every later one waits for it, and fails if it failed.
    last: RefCell<Promise>,
}

impl IndexedDb {
    pub(crate) fn new(store: MemoryStore, db: JsValue) -> Self {
        Self {
            store,
            db,
            last: RefCell::new(Promise::resolve(&JsValue::UNDEFINED)),
        }
    }
}

impl Durability for IndexedDb {
    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>>>> {
        let changes = self.store.take_changes();
        if !changes.is_empty() {
            let batch = Array::new();
            for (k, v) in changes {
                let value = match v {
                    Some(v) => JsValue::from(Uint8Array::from(v.as_slice())),
                    None => JsValue::NULL,
                };
                batch.push(&Array::of2(&Uint8Array::from(k.as_slice()).into(), &value));
            }
            let mut last = self.last.borrow_mut();
            *last = idb_write(&self.db, &last, &batch);
        }
        let wait = JsFuture::from(self.last.borrow().clone());
        Box::pin(async move { wait.await.map(|_| ()).map_err(|e| failed(&e)) })
    }
}
