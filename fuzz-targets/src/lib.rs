//! # hush-fuzz-targets
//!
//! The body of every fuzz target. `fuzz/fuzz_targets/*.rs` call these from libFuzzer
//! (`cargo +nightly fuzz run NAME`), and `tests/corpus.rs` replays every checked-in corpus
//! file through them under the stable test suite. Each function panics only when a
//! property is violated: a decoder panics, accepts non-canonical bytes, or a protocol
//! state machine decrypts something it must not, loses a message, or changes state on a
//! refused input.
//!
//! ```
//! hush_fuzz_targets::session_message(&[0x0a, 0x00]);
//! hush_fuzz_targets::session_interaction(b"any bytes drive a conversation");
//! ```

#![forbid(unsafe_code)]
// Panicking on a violated property is how a fuzz target reports it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod interaction;
mod rng;

pub use interaction::{group_interaction, session_interaction};

use hush_crypto::{SecretBytes, StorageKey};
use hush_groups::Group;
use hush_groups::wire::{Kind, validate};
use hush_sessions::{Header, PrekeyBundle, Session, SessionMessage};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by name: what `fuzz/` builds and what the corpus test replays.
pub const TARGETS: [(&str, Target); 10] = [
    ("session_message", session_message),
    ("prekey_bundle", prekey_bundle),
    ("header", header),
    ("group_wire", group_wire),
    ("sealed_state", sealed_state),
    ("state_bytes", state_bytes),
    ("session_interaction", session_interaction),
    ("group_interaction", group_interaction),
    ("relay_frame", relay_frame),
    ("client_payload", client_payload),
];

/// `SessionMessage::from_bytes`: never panics; what it accepts re-encodes to the same bytes.
pub fn session_message(data: &[u8]) {
    if let Ok(m) = SessionMessage::from_bytes(data) {
        assert_eq!(
            m.to_bytes(),
            data,
            "accepted a non-canonical session message"
        );
    }
}

/// `PrekeyBundle::from_bytes` and `verify`: never panic; accepted bundles are canonical.
pub fn prekey_bundle(data: &[u8]) {
    if let Ok(b) = PrekeyBundle::from_bytes(data) {
        assert_eq!(b.to_bytes(), data, "accepted a non-canonical bundle");
        let _ = b.verify();
    }
}

/// `Header::decode`: never panics; accepted headers re-encode to the same bytes.
pub fn header(data: &[u8]) {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(h.encode(), data, "accepted a non-canonical header");
    }
}

/// The group decoders (the first byte picks which): never panic.
pub fn group_wire(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let kind = match which % 4 {
        0 => Kind::GroupMessage,
        1 => Kind::SenderKeyDistribution,
        2 => Kind::ControlMessage,
        _ => Kind::GroupInfo,
    };
    let _ = validate(kind, rest);
}

/// Sealed state blobs under a fixed key: opening never panics, for sessions and groups.
pub fn sealed_state(data: &[u8]) {
    let key = StorageKey::from_bytes([7; 32]);
    let _ = Session::unseal(&key, data);
    let _ = Group::unseal(&key, data);
    let _ = key.open(b"session", data);
}

/// Unsealed state bytes (what a corrupted store could hold): restoring never panics, and a
/// restored state serializes again.
pub fn state_bytes(data: &[u8]) {
    if let Ok(s) = Session::from_bytes(data) {
        let _ = s.to_bytes();
    }
    if let Ok(g) = Group::from_bytes(data) {
        let _ = g.to_bytes();
    }
    let _ = SecretBytes::<32>::from_slice(data);
}

/// The relay's client-frame decoder and request parser: never panic, at any size up to the limit and beyond.
pub fn relay_frame(data: &[u8]) {
    use hush_relay_protocol::{Request, codec, request::RequestLimits};
    let limits = RequestLimits {
        max_recipients: 256,
        max_envelope_bytes: 260 * 1024,
        max_prekeys_per_upload: 500,
        max_kem_prekeys_per_upload: 100,
    };
    if let Ok(frame) = codec::decode_client(data, 300 * 1024) {
        // Parsing a decoded frame never panics either, whatever it holds.
        let _ = Request::parse(frame, &limits);
    }
    let _ = codec::decode_client(data, data.len().saturating_sub(1));
}

/// The client's payload decoders (`hush_client::wire`): the relay envelope's `Payload`, and
/// decrypted `Content` with its attachment pointer. Never panic; what `parse_content`
/// accepts has a 16-byte id and, for attachments, a pointer `wire::attachment` accepts.
pub fn client_payload(data: &[u8]) {
    use hush_client::proto::client as pc;
    use hush_client::wire;
    use prost::Message as _;
    let _ = wire::parse_payload(data);
    let id = pc::Content::decode(data)
        .map(|c| c.message_id)
        .unwrap_or_default();
    if let Ok(c) = wire::parse_content(data, &id) {
        assert_eq!(
            c.message_id.len(),
            16,
            "accepted a message id that is not 16 bytes"
        );
        if let Some(pc::content::Body::Attachment(a)) = &c.body {
            let p = wire::attachment(a).expect("parse_content accepted a bad pointer");
            assert_eq!(p.blob_id, hex_lower(&p.digest), "blob id is not the digest");
        }
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
