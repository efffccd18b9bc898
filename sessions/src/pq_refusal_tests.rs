//! An authentic message that the post-quantum ratchet refuses (a peer that breaks the
//! protocol) leaves the receiver's session byte for byte as it was and draws no randomness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;

use hush_crypto::IdentityKeyPair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{
    DecryptError, KemPrekey, OneTimePrekey, PqError, PrekeyBundle, Session, SessionMessage,
    SignedPrekey, Suite,
};

/// Counts the bytes drawn.
struct Counting(StdRng, usize);

impl rand_core::TryRng for Counting {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.1 += 4;
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.1 += 8;
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.1 += dst.len();
        self.0.fill_bytes(dst);
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Counting {}

fn pair() -> (Session, Session, StdRng) {
    let mut rng = StdRng::seed_from_u64(21);
    let a = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate_for(Suite::PostQuantum, 1, &b, &mut rng);
    let opk = OneTimePrekey::generate(2, &mut rng);
    let kem = KemPrekey::generate_one_time(3, &b, &mut rng);
    let bundle = PrekeyBundle::new(b.public(), &spk, Some(&opk)).with_kem_prekey(&kem);
    let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(m) = alice.encrypt(b"hi").unwrap() else {
        panic!()
    };
    let (bob, _) =
        Session::accept_with_kem(&b, &spk, Some(&opk), Some(&kem), &m, None, &mut rng).unwrap();
    (alice, bob, rng)
}

/// Bob refuses `wire` with `want`, unchanged and without drawing.
fn refused(bob: &mut Session, wire: &[u8], want: PqError) {
    let before = bob.to_bytes();
    let mut rng = Counting(StdRng::seed_from_u64(1), 0);
    assert_eq!(
        bob.decrypt_bytes(wire, &mut rng),
        Err(DecryptError::PostQuantum(want))
    );
    assert_eq!(*bob.to_bytes(), *before);
    assert_eq!(rng.1, 0, "randomness drawn for a refused message");
}

#[test]
fn a_peer_claiming_a_later_epoch_is_refused_without_a_trace() {
    // On the chain Bob already has (Alice's first chain) and on a new one.
    let (mut alice, mut bob, mut rng) = pair();
    let pq = alice.pq.as_mut().unwrap();
    pq.epoch += 2;
    pq.mixable = pq.epoch - 1;
    let wire = alice.encrypt(b"lie").unwrap().to_bytes();
    refused(&mut bob, &wire, PqError::EpochAhead { ours: 1, theirs: 3 });

    let (mut alice, mut bob, _) = pair();
    let reply = bob.encrypt(b"reply").unwrap().to_bytes();
    alice.decrypt_bytes(&reply, &mut rng).unwrap();
    alice.pq.as_mut().unwrap().epoch += 2;
    let wire = alice.encrypt(b"lie on a new chain").unwrap().to_bytes();
    refused(&mut bob, &wire, PqError::EpochAhead { ours: 1, theirs: 3 });
}

#[test]
fn a_chunk_out_of_turn_is_refused_without_a_trace() {
    // Run until Bob has encapsulated (he is sending his ciphertext in epoch 1), then let
    // Alice claim epoch 2 while still sending a chunk.
    let (mut alice, mut bob, mut rng) = pair();
    for _ in 0..12 {
        let w = alice.encrypt(b"k").unwrap().to_bytes();
        bob.decrypt_bytes(&w, &mut rng).unwrap();
    }
    assert_eq!(
        bob.pq.as_ref().unwrap().secrets.len(),
        1,
        "Bob encapsulated"
    );
    let pq = alice.pq.as_mut().unwrap();
    pq.epoch = 2;
    pq.mixable = 1;
    pq.secrets.push(crate::pq_ratchet::EpochSecret {
        epoch: 1,
        secret: hush_crypto::SecretBytes::from_bytes([0; 32]),
    });
    let wire = alice.encrypt(b"chunk out of turn").unwrap().to_bytes();
    refused(&mut bob, &wire, PqError::UnexpectedChunk);
}
