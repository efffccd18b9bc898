//! Shared set-up for the session tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use hush_crypto::IdentityKeyPair;
use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub struct Pair {
    pub rng: StdRng,
    pub alice_id: IdentityKeyPair,
    pub bob_id: IdentityKeyPair,
    pub alice: Session,
    pub bob: Session,
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Alice initiates with Bob's bundle and Bob accepts her first message.
pub fn established(seed: u64) -> Pair {
    let mut rng = rng(seed);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(7, &bob_id, &mut rng);
    let opk = OneTimePrekey::generate(9, &mut rng);
    let bundle = PrekeyBundle::new(bob_id.public(), &spk, Some(&opk));
    let mut alice = Session::initiate(&alice_id, &bundle, None, &mut rng).unwrap();
    let first = alice.encrypt(b"first").unwrap();
    let SessionMessage::Prekey(first) = first else {
        panic!("expected a prekey message")
    };
    let (bob, pt) = Session::accept(&bob_id, &spk, Some(&opk), &first, None, &mut rng).unwrap();
    assert_eq!(pt, b"first");
    Pair {
        rng,
        alice_id,
        bob_id,
        alice,
        bob,
    }
}

/// One message each way, so both sides have ratcheted.
pub fn ratcheted(seed: u64) -> Pair {
    let mut p = established(seed);
    let m = p.bob.encrypt(b"reply").unwrap().to_bytes();
    assert_eq!(p.alice.decrypt_bytes(&m, &mut p.rng).unwrap(), b"reply");
    p
}
