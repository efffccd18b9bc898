//! The JavaScript API: `HushClient` and `generateStorageKey`.

use std::rc::Rc;

use hush_client::{Address, Client, ClientConfig, ClientError, GroupId};
use hush_crypto::StorageKey;
use js_sys::{Function, Promise, Reflect, Uint8Array};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::durability::{self, IndexedDb};
use crate::json;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Options of `HushClient.open`. */
export interface OpenOptions {
  /** The relay: `ws://host:port` or `wss://host:port`. */
  relay: string;
  /** This device's user id: 1 to 64 bytes of a-z, 0-9, '.', '_' and '-'. */
  user: string;
  /** This device's number (1 for a user's first device). */
  device: number;
  /** 32 bytes that seal everything kept in IndexedDB. The app keeps it, or derives it. */
  storageKey: Uint8Array;
  /** The IndexedDB database; default `hush-<user>-<device>`. */
  database?: string;
}
export interface Address { user: string; device: number; }
export type Conversation = { direct: string } | { group: string };
export type MessageBody =
  | { text: string }
  | { attachment: { name: string; mime: string; size: number } };
export interface Message {
  /** 32 hex digits. */
  id: string;
  from: Address;
  conversation: Conversation;
  body: MessageBody;
  sentMs: number;
  serverMs: number;
  outgoing: boolean;
  forwarded: number;
}
export type ReceiptKind = "sent" | "delivered" | "read";
export interface Presence { user: string; online: boolean; lastSeenMs: number | null; }
export interface SafetyNumber {
  address: Address;
  /** Twelve groups of five digits. */
  groups: string[];
  /** The compact form for a QR code, hex. */
  scannable: string;
  postQuantum: boolean | null;
}
export interface Group { id: string; name: string; members: Address[]; }
/** Why something failed, for the page to choose its words. */
export type ErrorCode =
  | "relay-down" | "unknown-user" | "mailbox-full" | "rate-limited" | "too-large"
  | "auth-failed" | "forbidden" | "wrong-key" | "invalid" | "storage" | "wrong-relay" | "open-elsewhere"
  | "failed" | string;
export type HushEvent =
  | { type: "connected"; registered: boolean }
  | { type: "disconnected"; reason: string | null; code: ErrorCode | null }
  | { type: "message"; message: Message }
  | { type: "receipt"; messageId: string; kind: ReceiptKind; by: Address; atMs: number }
  | ({ type: "presence" } & Presence)
  | { type: "identityChanged"; address: Address; safetyNumber: string[] }
  | { type: "group"; group: string; change: "joined" | "added" | "removed" | "left" | "removedSelf" | "roleChanged"; member: Address | null; name: string | null; by: Address }
  | { type: "sendDelayed"; messageId: string; code: "mailbox-full" | "rate-limited" | "delayed" }
  | { type: "sendFailed"; messageId: string; reason: string; code: ErrorCode }
  | { type: "dropped"; from: Address; reason: string }
  | { type: "sessionStarted"; with: Address; postQuantum: boolean; initiated: boolean }
  | { type: "housekeeping" };
"#;

fn invalid(what: &'static str) -> JsValue {
    json::error(&ClientError::Invalid(what))
}

fn field(options: &JsValue, name: &str) -> JsValue {
    Reflect::get(options, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

fn group_id(hex_id: &str) -> Result<GroupId, JsValue> {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| GroupId::try_from(b.as_slice()).ok())
        .ok_or_else(|| invalid("a group id is 64 hex digits"))
}

fn conversation(c: &JsValue) -> Result<hush_client::Conversation, JsValue> {
    if let Some(g) = field(c, "group").as_string() {
        return Ok(hush_client::Conversation::Group(group_id(&g)?));
    }
    field(c, "direct")
        .as_string()
        .map(hush_client::Conversation::Direct)
        .ok_or_else(|| invalid("a conversation is { direct: user } or { group: id }"))
}

fn message_id(hex_id: &str) -> Result<[u8; 16], JsValue> {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| invalid("a message id is 32 hex digits"))
}

/// 32 random bytes from the browser's CSPRNG, for a new storage key.
#[wasm_bindgen(js_name = generateStorageKey)]
pub fn generate_storage_key() -> Uint8Array {
    let mut key = [0u8; 32];
    rand_bytes(&mut key);
    let out = Uint8Array::from(key.as_slice());
    zeroize::Zeroize::zeroize(&mut key);
    out
}

/// A QR code of `data` (hex; for example a safety number's `scannable`), as its modules:
/// `{ size, modules }`, `modules[y * size + x]` is 1 for a dark module.
#[wasm_bindgen(js_name = qrCode, unchecked_return_type = "{ size: number; modules: Uint8Array }")]
pub fn qr_code(data: &str) -> Result<JsValue, JsValue> {
    let bytes = hex::decode(data).map_err(|_| invalid("QR data must be hex"))?;
    let code = qrcode::QrCode::with_error_correction_level(&bytes, qrcode::EcLevel::M)
        .map_err(|_| invalid("too much data for a QR code"))?;
    let modules: Vec<u8> = code
        .to_colors()
        .iter()
        .map(|c| u8::from(*c == qrcode::Color::Dark))
        .collect();
    let out = js_sys::Object::new();
    let _ = Reflect::set(&out, &"size".into(), &JsValue::from(code.width() as u32));
    let _ = Reflect::set(
        &out,
        &"modules".into(),
        &Uint8Array::from(modules.as_slice()),
    );
    Ok(out.into())
}

/// Runs the workloads of `bench` in this page (docs/BENCHMARKS.md): a JSON array of
/// `{ name, iterations, micros }`, microseconds per operation, the fastest of three runs.
#[wasm_bindgen]
pub fn benchmark() -> Result<String, JsValue> {
    let performance = Reflect::get(&js_sys::global(), &"performance".into())?;
    let now_fn: Function = Reflect::get(&performance, &"now".into())?.dyn_into()?;
    let now = || {
        now_fn
            .call0(&performance)
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    };
    crate::bench::run(&now)
        .map(|r| crate::bench::to_json(&r))
        .map_err(|e| JsValue::from_str(&e.to_string()))
}

fn rand_bytes(out: &mut [u8]) {
    use rand::Rng as _;
    rand::rng().fill_bytes(out);
}

/// One device of one user in this page.
#[wasm_bindgen]
pub struct HushClient {
    client: Client,
    events: Rc<std::cell::RefCell<Option<Events>>>,
    db: JsValue,
    store: Rc<IndexedDb>,
    /// Releases the device's lock (`close`).
    release: js_sys::Function,
    closed: std::cell::Cell<bool>,
}

impl Drop for HushClient {
    /// `free()` (or `Symbol.dispose`) closes the device as `close()` does.
    fn drop(&mut self) {
        self.close();
    }
}

type Events = tokio::sync::mpsc::UnboundedReceiver<hush_client::Event>;

fn coded(message: &str, code: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &"code".into(), &code.into());
    err.into()
}

/// Resolves once every commit so far is in IndexedDB.
async fn written(store: &IndexedDb) -> Result<(), JsValue> {
    hush_client::Durability::flush(store)
        .await
        .map_err(|e| json::error(&ClientError::Store(e)))
}

#[wasm_bindgen]
impl HushClient {
    /// Opens (or creates) the device kept in IndexedDB. On first use this makes the
    /// identity key and prekeys. Fails with code `wrong-key` if the storage key is not the
    /// one the device was made with.
    #[wasm_bindgen(unchecked_return_type = "Promise<HushClient>")]
    pub fn open(#[wasm_bindgen(unchecked_param_type = "OpenOptions")] options: JsValue) -> Promise {
        future_to_promise(async move {
            let relay = field(&options, "relay")
                .as_string()
                .ok_or_else(|| invalid("relay must be a string"))?;
            let user = field(&options, "user")
                .as_string()
                .ok_or_else(|| invalid("user must be a string"))?;
            let device = field(&options, "device")
                .as_f64()
                .filter(|d| d.fract() == 0.0 && *d >= 1.0 && *d <= f64::from(u32::MAX))
                .ok_or_else(|| invalid("device must be a whole number from 1"))?
                as u32;
            let key = field(&options, "storageKey");
            let key = key
                .dyn_ref::<Uint8Array>()
                .filter(|k| k.length() == 32)
                .ok_or_else(|| invalid("storageKey must be 32 bytes (a Uint8Array)"))?;
            let mut bytes = [0u8; 32];
            key.copy_to(&mut bytes);
            let storage_key = StorageKey::from_bytes(bytes);
            zeroize::Zeroize::zeroize(&mut bytes);
            let database = field(&options, "database")
                .as_string()
                .unwrap_or_else(|| format!("hush-{user}-{device}"));
            let Some(release) = durability::lock(&database)
                .await
                .map_err(|e| json::error(&ClientError::Store(e)))?
            else {
                return Err(coded(
                    "this device is open in another tab or window",
                    "open-elsewhere",
                ));
            };
            let (db, store) = match durability::open(&database).await {
                Ok(o) => o,
                Err(e) => {
                    let _ = release.call0(&JsValue::NULL);
                    return Err(json::error(&ClientError::Store(e)));
                }
            };
            let durable = Rc::new(IndexedDb::new(store.clone(), db.clone()));
            let mut config = ClientConfig::new(relay, "", storage_key, user, device);
            config.durability = Some(durable.clone());
            let opened = Client::open_with_store(config, store);
            // A new device's identity and prekeys are written before anything else.
            let opened = match opened {
                Ok(c) => written(&durable).await.map(|()| c),
                Err(e) => Err(json::error(&e)),
            };
            let (client, events) = match opened {
                Ok(c) => c,
                Err(e) => {
                    durability::idb_close(&db);
                    let _ = release.call0(&JsValue::NULL);
                    return Err(e);
                }
            };
            Ok(HushClient {
                client,
                events: Rc::new(std::cell::RefCell::new(Some(events))),
                db,
                store: durable,
                release,
                closed: std::cell::Cell::new(false),
            }
            .into())
        })
    }

    /// Calls `callback` with every event, in order (once; a second call does nothing).
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: HushEvent) => void")] callback: Function,
    ) {
        let Some(mut events) = self.events.borrow_mut().take() else {
            return;
        };
        wasm_bindgen_futures::spawn_local(async move {
            while let Some(e) = events.recv().await {
                let _ = callback.call1(&JsValue::NULL, &json::to_js(&json::event(&e)));
            }
        });
    }

    /// Connects (registering on first use) and keeps connected, reconnecting with backoff.
    pub fn start(&self) {
        self.client.start();
    }

    /// Disconnects. Everything accepted is kept.
    pub fn stop(&self) {
        self.client.stop();
    }

    /// Stops, closes the database and lets go of the device (another tab may then open
    /// it).
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.client.stop();
        durability::idb_close(&self.db);
        let _ = self.release.call0(&JsValue::NULL);
    }

    /// Whether connected and authenticated now.
    #[wasm_bindgen(getter, js_name = isConnected)]
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// This device's user id.
    #[wasm_bindgen(getter)]
    pub fn user(&self) -> String {
        self.client.address().user.clone()
    }

    /// This device's number.
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> u32 {
        self.client.address().device
    }

    /// This device's identity key, hex.
    #[wasm_bindgen(getter, js_name = identityKey)]
    pub fn identity_key(&self) -> String {
        hex::encode(self.client.identity_key().as_bytes())
    }

    /// Commits now, and resolves with `value` once that is in IndexedDB.
    fn then_written(&self, result: Result<JsValue, JsValue>) -> Promise {
        let store = self.store.clone();
        future_to_promise(async move {
            let value = result?;
            written(&store).await?;
            Ok(value)
        })
    }

    /// Queues a text to every device of `user` (and this user's other devices); resolves
    /// with its id once it is in IndexedDB (a reload after that does not lose it), and it
    /// goes out when connected.
    #[wasm_bindgen(js_name = sendText, unchecked_return_type = "Promise<string>")]
    pub fn send_text(&self, user: &str, text: &str) -> Promise {
        self.then_written(
            self.client
                .send_text(user, text)
                .map(|id| JsValue::from_str(&hex::encode(id)))
                .map_err(|e| json::error(&e)),
        )
    }

    /// Queues a text to a group (its id in hex), as `sendText`.
    #[wasm_bindgen(js_name = sendGroupText, unchecked_return_type = "Promise<string>")]
    pub fn send_group_text(&self, group: &str, text: &str) -> Promise {
        let sent = group_id(group).and_then(|g| {
            self.client
                .send_group_text(&g, text)
                .map(|id| JsValue::from_str(&hex::encode(id)))
                .map_err(|e| json::error(&e))
        });
        self.then_written(sent)
    }

    /// Seals a file the page read (`bytes`) in 64 KiB chunks, uploads it to the relay with
    /// `onProgress(done, total)` as it goes, and queues a message with its pointer; resolves
    /// with the message id. Fails with code `too-large` over the relay's limit.
    #[wasm_bindgen(js_name = sendFile, unchecked_return_type = "Promise<string>")]
    pub fn send_file(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Conversation")] to: JsValue,
        name: String,
        mime: String,
        bytes: Vec<u8>,
        #[wasm_bindgen(unchecked_param_type = "(done: number, total: number) => void")]
        on_progress: Option<Function>,
    ) -> Promise {
        let client = self.client.clone();
        let store = self.store.clone();
        future_to_promise(async move {
            let to = conversation(&to)?;
            let progress = move |p: hush_client::Progress| {
                if let Some(f) = &on_progress {
                    let _ = f.call2(
                        &JsValue::NULL,
                        &JsValue::from(p.done as f64),
                        &JsValue::from(p.total as f64),
                    );
                }
            };
            let id = client
                .send_bytes(to, &name, &mime, &bytes, progress)
                .await
                .map_err(|e| json::error(&e))?;
            written(&store).await?;
            Ok(JsValue::from_str(&hex::encode(id)))
        })
    }

    /// Downloads the file of a message (its id in hex), checks it against the pointer's
    /// digest and size, and resolves with its bytes; `onProgress(done, total)` as it comes.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn download(
        &self,
        id: String,
        #[wasm_bindgen(unchecked_param_type = "(done: number, total: number) => void")]
        on_progress: Option<Function>,
    ) -> Promise {
        let client = self.client.clone();
        future_to_promise(async move {
            let wanted = message_id(&id)?;
            let messages = client.messages().map_err(|e| json::error(&e))?;
            let attachment = messages
                .into_iter()
                .find_map(|m| match m.body {
                    hush_client::Body::Attachment(a) if m.id == wanted => Some(a),
                    _ => None,
                })
                .ok_or_else(|| invalid("no file message with this id"))?;
            let progress = move |p: hush_client::Progress| {
                if let Some(f) = &on_progress {
                    let _ = f.call2(
                        &JsValue::NULL,
                        &JsValue::from(p.done as f64),
                        &JsValue::from(p.total as f64),
                    );
                }
            };
            let bytes = client
                .download_bytes(&attachment, progress)
                .await
                .map_err(|e| json::error(&e))?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Tells the sender that these messages (ids in hex) were read (queued if offline;
    /// resolves once that is in IndexedDB).
    #[wasm_bindgen(js_name = markRead, unchecked_return_type = "Promise<void>")]
    pub fn mark_read(&self, user: &str, device: u32, ids: Vec<String>) -> Promise {
        let done = ids
            .iter()
            .map(|i| message_id(i))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|ids| {
                self.client
                    .mark_read(&Address::new(user, device), &ids)
                    .map_err(|e| json::error(&e))
            })
            .map(|()| JsValue::UNDEFINED);
        self.then_written(done)
    }

    /// Messages sent and received, oldest first.
    #[wasm_bindgen(unchecked_return_type = "Message[]")]
    pub fn messages(&self) -> Result<JsValue, JsValue> {
        let all = self.client.messages().map_err(|e| json::error(&e))?;
        Ok(json::to_js(&Value::Array(
            all.iter().map(json::message).collect(),
        )))
    }

    /// The ticks of a message this device sent: `[{ by, kind, atMs }]`.
    #[wasm_bindgen(unchecked_return_type = "{ by: Address; kind: ReceiptKind; atMs: number }[]")]
    pub fn receipts(&self, id: &str) -> Result<JsValue, JsValue> {
        let rows = self
            .client
            .receipts(&message_id(id)?)
            .map_err(|e| json::error(&e))?;
        Ok(json::to_js(&Value::Array(
            rows.iter()
                .map(|(a, k, t)| {
                    json!({ "by": json::address(a), "kind": json::receipt_kind(*k), "atMs": t })
                })
                .collect(),
        )))
    }

    /// Messages waiting to be sent.
    #[wasm_bindgen(js_name = outboxLength)]
    pub fn outbox_length(&self) -> Result<f64, JsValue> {
        self.client
            .outbox_len()
            .map(|n| n as f64)
            .map_err(|e| json::error(&e))
    }

    /// Polls `user`'s presence and emits `presence` events when it changes.
    #[wasm_bindgen(js_name = watchPresence)]
    pub fn watch_presence(&self, user: &str) {
        self.client.watch_presence(user);
    }

    /// Asks the relay for `user`'s presence now.
    #[wasm_bindgen(unchecked_return_type = "Promise<Presence>")]
    pub fn presence(&self, user: String) -> Promise {
        let client = self.client.clone();
        future_to_promise(async move {
            let p = client.presence(&user).await.map_err(|e| json::error(&e))?;
            Ok(json::to_js(&json::presence(&p)))
        })
    }

    /// Safety numbers with each device of `user` (the device list refreshed when
    /// connected).
    #[wasm_bindgen(js_name = safetyNumbers, unchecked_return_type = "Promise<SafetyNumber[]>")]
    pub fn safety_numbers(&self, user: String) -> Promise {
        let client = self.client.clone();
        let store = self.store.clone();
        future_to_promise(async move {
            let all = client
                .safety_numbers(&user)
                .await
                .map_err(|e| json::error(&e))?;
            // It records the devices the relay listed.
            written(&store).await?;
            Ok(json::to_js(&Value::Array(
                all.iter()
                    .map(|s| {
                        json!({
                            "address": json::address(&s.address),
                            "groups": s.safety_number.display_groups(),
                            "scannable": hex::encode(s.safety_number.scannable()),
                            "postQuantum": s.post_quantum,
                        })
                    })
                    .collect(),
            )))
        })
    }

    /// Creates a group of this user and `users`; resolves with its id (hex).
    #[wasm_bindgen(js_name = createGroup, unchecked_return_type = "Promise<string>")]
    pub fn create_group(&self, name: String, users: Vec<String>) -> Promise {
        let client = self.client.clone();
        let store = self.store.clone();
        future_to_promise(async move {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            let id = client
                .create_group(&name, &users)
                .await
                .map_err(|e| json::error(&e))?;
            written(&store).await?;
            Ok(JsValue::from_str(&hex::encode(id)))
        })
    }

    /// Adds every device of `user` to a group this device administers.
    #[wasm_bindgen(js_name = addToGroup, unchecked_return_type = "Promise<void>")]
    pub fn add_to_group(&self, group: String, user: String) -> Promise {
        let client = self.client.clone();
        let store = self.store.clone();
        future_to_promise(async move {
            client
                .add_to_group(&group_id(&group)?, &user)
                .await
                .map_err(|e| json::error(&e))?;
            written(&store).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Removes every device of `user` from a group this device administers.
    #[wasm_bindgen(js_name = removeFromGroup, unchecked_return_type = "Promise<void>")]
    pub fn remove_from_group(&self, group: &str, user: &str) -> Promise {
        let done = group_id(group).and_then(|g| {
            self.client
                .remove_from_group(&g, user)
                .map(|()| JsValue::UNDEFINED)
                .map_err(|e| json::error(&e))
        });
        self.then_written(done)
    }

    /// Leaves a group.
    #[wasm_bindgen(js_name = leaveGroup, unchecked_return_type = "Promise<void>")]
    pub fn leave_group(&self, group: &str) -> Promise {
        let done = group_id(group).and_then(|g| {
            self.client
                .leave_group(&g)
                .map(|()| JsValue::UNDEFINED)
                .map_err(|e| json::error(&e))
        });
        self.then_written(done)
    }

    /// The groups this device is in.
    #[wasm_bindgen(unchecked_return_type = "Group[]")]
    pub fn groups(&self) -> Result<JsValue, JsValue> {
        let all = self.client.groups().map_err(|e| json::error(&e))?;
        Ok(json::to_js(&Value::Array(
            all.iter()
                .map(|(id, name, members)| {
                    json!({
                        "id": hex::encode(id),
                        "name": name,
                        "members": members.iter().map(json::address).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )))
    }
}
