// IndexedDB for hush-wasm: one database per device, one object store of rows (binary key →
// binary value). The rows are the client store's: sealed records and the few plain columns
// SPEC §16.8 lists, never a key in the clear.

const ROWS = "rows";

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export async function idbOpen(name) {
  const r = indexedDB.open(name, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(ROWS);
  r.onblocked = () => console.warn(`hush: database ${name} is held open elsewhere`);
  const db = await request(r);
  // Someone deletes or upgrades the database: let go of it rather than block them.
  db.onversionchange = () => db.close();
  return db;
}

// Holds the device's lock for as long as the page keeps it open: two tabs on one device
// would encrypt from the same ratchet state and mix their rows. Resolves with the function
// that releases it, or null if another tab (or window) holds it.
export function idbLock(name) {
  // Without Web Locks (browsers before 2022) one device could run in two tabs: refuse.
  if (!navigator.locks) return Promise.reject(new Error("this browser has no Web Locks"));
  return new Promise((resolve, reject) => {
    navigator.locks
      .request(`hush:${name}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(null);
          return undefined;
        }
        return new Promise((release) => resolve(() => release()));
      })
      .catch(reject);
  });
}

// Every row as [key, value] pairs of Uint8Array.
export async function idbLoad(db) {
  const tx = db.transaction(ROWS, "readonly");
  const store = tx.objectStore(ROWS);
  const [keys, values] = await Promise.all([
    request(store.getAllKeys()),
    request(store.getAll()),
  ]);
  return keys.map((k, i) => [new Uint8Array(k), new Uint8Array(values[i])]);
}

// Writes one batch of changes, in order ([key, value] to write, [key, null] to delete), in
// one transaction, after `previous` (the batch before it): a failed write fails every later
// one, so nothing is ever reported durable on top of a lost change. Resolves when the
// transaction has committed.
export function idbWrite(db, previous, changes) {
  return previous.then(
    () =>
      new Promise((resolve, reject) => {
        const tx = db.transaction(ROWS, "readwrite", { durability: "strict" });
        const store = tx.objectStore(ROWS);
        for (const [k, v] of changes) {
          if (v === null) store.delete(k);
          else store.put(v, k);
        }
        tx.oncomplete = () => resolve();
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error || new Error("IndexedDB write aborted"));
      }),
  );
}

export function idbClose(db) {
  db.close();
}

export function idbDelete(name) {
  return request(indexedDB.deleteDatabase(name));
}
