//! # hush-client
//!
//! The hush client SDK: one device of one user. It speaks the relay protocol over
//! WebSocket, keeps its keys, sessions, groups, outbox and message history in an on-device
//! SQLite database sealed with a key the app supplies, and reports what happens as typed
//! [`Event`]s.
//!
//! * **Offline first.** [`Client::send_text`] writes the message to the durable outbox and
//!   returns; the worker encrypts and sends it when connected, reconnecting with backoff.
//!   Each state change is committed in one transaction with the message that caused it, so
//!   killing the app at any point loses nothing and never leaves a ratchet out of step.
//! * **Housekeeping.** First contact fetches a prekey bundle; one-time prekeys are refilled
//!   when the relay says stock is low; the signed prekey rotates on a schedule.
//! * **Groups** ([`Client::create_group`] and friends) use sender keys and the relay's
//!   multi-recipient send; distribution and rotation after removals are automatic.
//! * **Attachments** ([`Client::send_file`], [`Client::download`]) are encrypted in
//!   64 KiB chunks (docs/SPEC.md §15), so memory stays flat.
//! * **Several devices per user**: sending to a user reaches each of their devices and this
//!   user's other devices.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use hush_client::{Body, Client, ClientConfig, Event, ReceiptKind};
//! use hush_crypto::StorageKey;
//!
//! // A relay on a free loopback port (in production: `hush relay`).
//! let dir = std::env::temp_dir().join(format!("hush-client-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let store = hush_relay::SqliteStore::open(&dir.join("relay.db"))?;
//! let config = hush_relay::Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     blob_dir: dir.join("blobs"),
//!     ..Default::default()
//! };
//! let relay = hush_relay::Relay::build(config, store).await?;
//! let url = format!("ws://{}", relay.local_addr());
//! tokio::spawn(relay.run(std::future::pending()));
//!
//! // Two devices, each with its own store and storage key.
//! let mut rng = rand::rng();
//! let (alice, mut alice_events) = Client::open(ClientConfig::new(
//!     &url, dir.join("alice.db"), StorageKey::generate(&mut rng), "alice", 1))?;
//! let (bob, mut bob_events) = Client::open(ClientConfig::new(
//!     &url, dir.join("bob.db"), StorageKey::generate(&mut rng), "bob", 1))?;
//! alice.start();
//! bob.start();
//! bob.wait_connected(Duration::from_secs(10)).await?;
//! alice.wait_connected(Duration::from_secs(10)).await?;
//!
//! // Alice writes; the first message builds the session from Bob's prekey bundle.
//! let id = alice.send_text("bob", "hello Bob")?;
//! let message = loop {
//!     if let Some(Event::Message(m)) = bob_events.recv().await { break m; }
//! };
//! assert_eq!(message.body, Body::Text("hello Bob".into()));
//! bob.mark_read(&message.from, &[message.id])?;
//!
//! // Alice sees the three ticks.
//! let mut ticks = Vec::new();
//! while ticks.len() < 3 {
//!     if let Some(Event::Receipt { message_id, kind, .. }) = alice_events.recv().await {
//!         assert_eq!(message_id, id);
//!         ticks.push(kind);
//!     }
//! }
//! assert_eq!(ticks, [ReceiptKind::Sent, ReceiptKind::Delivered, ReceiptKind::Read]);
//! alice.stop();
//! bob.stop();
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(not(driver), allow(dead_code))]

#[cfg(native_io)]
mod attachment;
#[cfg(web_io)]
mod attachment_web;
#[cfg(driver)]
mod client;
mod core;
#[cfg(driver)]
mod driver;
pub mod error;
pub mod event;
#[cfg(driver)]
mod net;
#[cfg(driver)]
mod rt;
pub mod store;
pub mod wire;

pub use crate::core::held::{
    HELD_ITEM_TTL_MS, HELD_ORDER_WAIT_MS, MAX_HELD_ITEMS, MAX_HELD_PER_SENDER,
};
pub use crate::core::{FORWARDED_MANY_TIMES, ForwardLimits, MAX_TEXT, MAX_USER_ID, PostQuantum};
#[cfg(driver)]
pub use client::{Client, ClientConfig, DeviceLink, Progress};
pub use error::{AttachmentError, ClientError, EncryptError, RelayErrorCode, UrlError};
pub use event::{
    Address, Attachment, Body, Conversation, DelayReason, DeviceSafety, DropReason, Event,
    GroupChange, GroupId, Message, MessageId, Presence, ReceiptKind, Undecryptable,
};
#[cfg(web_io)]
pub use store::Durability;
#[cfg(native_io)]
pub use store::SqliteStore;
pub use store::{MemoryStore, Store, StoreError, StoredRecord};

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod proto {
    //! Generated protobuf types of the client payloads (`proto/hush_client.proto`,
    //! docs/SPEC.md §16): what [`crate::wire`] parses. The relay protocol's types live in
    //! `hush-relay-protocol`.
    pub mod client {
        //! `hush.client.v1`.
        include!(concat!(env!("OUT_DIR"), "/hush.client.v1.rs"));
    }
}
