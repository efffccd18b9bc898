//! # hush-groups
//!
//! Sender-key groups, as Signal and WhatsApp do them: each member encrypts a message once
//! with its own sender key (a hash-ratchet chain and an Ed25519 signing key) and the relay
//! fans the ciphertext out. Membership is managed end to end: the group state changes only
//! through signed control messages, applied in epoch order, so the relay never learns who is
//! in a group. Sans-I/O like `hush-sessions`: bytes, the time and an RNG in; bytes, events
//! or typed errors out. Sender keys travel inside pairwise `hush-sessions` sessions; moving
//! bytes is the caller's job. Every byte is specified in `docs/SPEC.md`.
//!
//! ```
//! use hush_crypto::IdentityKeyPair;
//! use hush_groups::{Group, GroupConfig, GroupDecryptError, MembershipChange, Role};
//!
//! let mut rng = rand::rng();
//! let (alice_id, bob_id, carol_id) = (
//!     IdentityKeyPair::generate(&mut rng),
//!     IdentityKeyPair::generate(&mut rng),
//!     IdentityKeyPair::generate(&mut rng),
//! );
//! let now = 1_700_000_000; // the caller's clock, in seconds
//!
//! // Alice creates the group with Bob; Bob builds his view from the signed create change.
//! let (mut alice, create) =
//!     Group::create(&alice_id, &[(*bob_id.public(), Role::Member)], GroupConfig::default(), &mut rng)?;
//! let mut bob = Group::from_create(bob_id.public(), &create, GroupConfig::default())?;
//!
//! // Alice's first send creates her sender key; she sends the distribution to Bob over
//! // their pairwise session (not shown), then the message goes to the relay once.
//! let sent = alice.encrypt(b"hello group", now, &mut rng)?;
//! bob.process_distribution(alice_id.public(), &sent.distribution.unwrap())?;
//! assert_eq!(bob.decrypt(&sent.message)?.plaintext, b"hello group");
//!
//! // Alice adds Carol: Bob applies the change, Carol joins from the group info.
//! let (add, info) = alice.add(&alice_id, carol_id.public(), Role::Member)?;
//! assert_eq!(bob.apply(&add)?, MembershipChange::Added(*carol_id.public(), Role::Member));
//! let mut carol = Group::join(carol_id.public(), &info, alice_id.public(), GroupConfig::default())?;
//! // Existing members hand Carol their current sender key: she cannot read older messages.
//! carol.process_distribution(alice_id.public(), &alice.sender_key_distribution().unwrap())?;
//! assert_eq!(carol.decrypt(&sent.message), Err(GroupDecryptError::KeyUnavailable));
//!
//! // Alice removes Bob: her next send rotates her sender key, for Carol only.
//! let remove = alice.remove(&alice_id, bob_id.public())?;
//! carol.apply(&remove)?;
//! bob.apply(&remove)?;
//! let after = alice.encrypt(b"bob is gone", now, &mut rng)?;
//! carol.process_distribution(alice_id.public(), &after.distribution.unwrap())?;
//! assert_eq!(carol.decrypt(&after.message)?.plaintext, b"bob is gone");
//! assert_eq!(bob.decrypt(&after.message), Err(GroupDecryptError::UnknownChain));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
mod group;
mod member;
mod membership;
mod sender_key;
pub mod state;
pub mod wire;

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/hush.group.v1.rs"));
    pub mod state {
        include!(concat!(env!("OUT_DIR"), "/hush.group.state.v1.rs"));
    }
}

pub use config::{GroupConfig, RotationPolicy};
pub use error::{
    ControlError, DecodeError, DistributionError, GroupDecryptError, GroupEncryptError,
    GroupStateError, InvalidChange,
};
pub use group::{Group, GroupPlaintext, GroupSend, MembershipChange};
pub use member::Role;
pub use membership::Membership;
