//! # hush-sessions
//!
//! One-to-one end-to-end encrypted sessions: X3DH to agree a secret from a prekey bundle,
//! then the Double Ratchet, following Signal's specifications with ChaCha20-Poly1305 as the
//! AEAD. Every byte is specified in `docs/SPEC.md`.
//!
//! The crate is sans-I/O: no async, no sockets, no clock, no storage. It takes bytes and an
//! RNG and returns bytes, or typed errors that leave the session exactly as it was.
//!
//! ```
//! use hush_crypto::{IdentityKeyPair, StorageKey};
//! use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey};
//!
//! let mut rng = rand::rng();
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let bob = IdentityKeyPair::generate(&mut rng);
//!
//! // Bob publishes a bundle (in practice through the relay).
//! let spk = SignedPrekey::generate(1, &bob, &mut rng);
//! let opk = OneTimePrekey::generate(100, &mut rng);
//! let bundle_bytes = PrekeyBundle::new(bob.public(), &spk, Some(&opk)).to_bytes();
//!
//! // Alice starts a session from it and sends a first message.
//! let bundle = PrekeyBundle::from_bytes(&bundle_bytes)?;
//! let mut alice_session = Session::initiate(&alice, &bundle, None, &mut rng)?;
//! let wire = alice_session.encrypt(b"hello Bob")?.to_bytes();
//!
//! // Bob receives a prekey message, looks up the prekeys it names, and accepts it.
//! let SessionMessage::Prekey(first) = SessionMessage::from_bytes(&wire)? else {
//!     return Err("expected a prekey message".into());
//! };
//! assert_eq!(first.one_time_prekey_id(), Some(100));
//! let (mut bob_session, plaintext) =
//!     Session::accept(&bob, &spk, Some(&opk), &first, None, &mut rng)?;
//! assert_eq!(plaintext, b"hello Bob");
//! drop(opk); // one-time prekeys are used once: Bob deletes it now.
//!
//! // Replies ratchet forward; a replay is refused and changes nothing.
//! let reply = bob_session.encrypt(b"hi Alice")?.to_bytes();
//! assert_eq!(alice_session.decrypt_bytes(&reply, &mut rng)?, b"hi Alice");
//! assert!(alice_session.decrypt_bytes(&reply, &mut rng).is_err());
//!
//! // State seals at rest and continues where it left off.
//! let storage = StorageKey::generate(&mut rng);
//! let sealed = alice_session.seal(&storage, &mut rng)?;
//! let mut restored = Session::unseal(&storage, &sealed)?;
//! let next = restored.encrypt(b"still here")?.to_bytes();
//! assert_eq!(bob_session.decrypt_bytes(&next, &mut rng)?, b"still here");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod bundle;
mod chain_key;
mod erasure;
pub mod error;
#[cfg(test)]
mod healing_tests;
pub mod limits;
pub mod message;
mod message_key;
pub mod pq_ratchet;
#[cfg(test)]
mod pq_refusal_tests;
mod receiver_chain;
mod root_key;
mod session;
pub mod state;
pub mod x3dh;

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/hush.session.v1.rs"));
    pub mod state {
        include!(concat!(env!("OUT_DIR"), "/hush.session.state.v1.rs"));
    }
}

pub use bundle::{BundleKemPrekey, KemPrekey, OneTimePrekey, PrekeyBundle, SignedPrekey, Suite};
pub use error::{
    AcceptError, BundleError, DecodeError, DecryptError, EncryptError, IdentityChange, InitError,
    PqError, StateError,
};
pub use hush_crypto::{IdentityKeyPair, IdentityPublicKey};
pub use message::{Header, KemPrekeyUse, PrekeyMessage, RatchetMessage, SessionMessage};
pub use message_key::MESSAGE_INFO;
pub use pq_ratchet::{Chunk, PqHeader};
pub use root_key::{ROOT_INFO, ROOT_PQ_INFO};
pub use session::{PqStatus, Session, SuitePolicy};
