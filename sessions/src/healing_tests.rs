//! Post-compromise security against a quantum adversary (SPEC §7.8.8): an adversary that holds
//! a copy of Alice's whole state, sees every message, and breaks X25519 (it learns each new
//! ratchet private key Alice draws) follows the session until an ML-KEM secret drawn after
//! the compromise is mixed in, and never after. Without the post-quantum ratchet it follows
//! for ever: the same test on a classical session is the control that shows it can fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;

use hush_crypto::IdentityKeyPair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::pq_ratchet::{CIPHERTEXT_CHUNKS, KEY_CHUNKS};
use crate::{
    DecryptError, KemPrekey, OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey,
    Suite,
};

/// The healing bound of SPEC §7.8.8: after a compromise, each side sends at most this many
/// messages (turns alternating) before every later message key depends on a fresh ML-KEM
/// secret.
const K: usize = 2 * (KEY_CHUNKS + CIPHERTEXT_CHUNKS) - 1;

/// The adversary's RNG: Alice's new ratchet private key first (recovered from its public
/// key by breaking X25519), then bytes of its own, unrelated to Alice's (it cannot know the
/// ML-KEM randomness Alice draws).
struct Adversary {
    ratchet: Option<[u8; 32]>,
    own: StdRng,
}

impl rand_core::TryRng for Adversary {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.own.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.own.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        match self.ratchet.take() {
            Some(k) => {
                assert_eq!(dst.len(), 32, "the ratchet key is drawn first");
                dst.copy_from_slice(&k);
            }
            None => self.own.fill_bytes(dst),
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for Adversary {}

fn chain_key(s: &Session) -> [u8; 32] {
    *s.sender.chain_key.key().expose()
}

/// Runs a ping-pong conversation, compromises Alice after `compromise_after` rounds, and
/// returns how many messages Alice and Bob sent after it until the adversary could derive
/// neither side's message keys, or `None` if it still could after `rounds` rounds.
fn healing(post_quantum: bool, compromise_after: usize, rounds: usize) -> Option<(usize, usize)> {
    let mut setup = StdRng::seed_from_u64(7);
    let (mut rng_a, mut rng_b) = (StdRng::seed_from_u64(1), StdRng::seed_from_u64(2));
    let alice_id = IdentityKeyPair::generate(&mut setup);
    let bob_id = IdentityKeyPair::generate(&mut setup);
    let suite = if post_quantum {
        Suite::PostQuantum
    } else {
        Suite::Classical
    };
    let spk = SignedPrekey::generate_for(suite, 1, &bob_id, &mut setup);
    let opk = OneTimePrekey::generate(2, &mut setup);
    let kem = KemPrekey::generate_one_time(3, &bob_id, &mut setup);
    let mut bundle = PrekeyBundle::new(bob_id.public(), &spk, Some(&opk));
    if post_quantum {
        bundle = bundle.with_kem_prekey(&kem);
    }
    let mut alice = Session::initiate(&alice_id, &bundle, None, &mut rng_a).unwrap();
    let SessionMessage::Prekey(first) = alice.encrypt(b"0").unwrap() else {
        panic!("expected a prekey message");
    };
    let kem = post_quantum.then_some(&kem);
    let (mut bob, _) =
        Session::accept_with_kem(&bob_id, &spk, Some(&opk), kem, &first, None, &mut rng_b).unwrap();
    assert_eq!(alice.pq_ratchet().is_some(), post_quantum);

    let mut eve: Option<Session> = None;
    let (mut sent_a, mut sent_b) = (0usize, 0usize);
    let mut healed: Option<(usize, usize)> = None;
    for round in 0..compromise_after + rounds {
        // Alice sends; the adversary, in step, derives the same key if it still can (the
        // chain keys after the message are equal exactly when the message keys were).
        let m = alice.encrypt(b"a").unwrap();
        if let Some(e) = eve.as_mut() {
            sent_a += 1;
            e.encrypt(b"a").unwrap();
            let follows = chain_key(e) == chain_key(&alice);
            if !follows && healed.is_none() {
                healed = Some((sent_a - 1, sent_b));
            }
            assert!(
                follows == healed.is_none(),
                "Alice's message keys readable again"
            );
        }
        bob.decrypt(&m, &mut rng_b).unwrap();

        // Bob answers; the adversary tries to read it with Alice's copy.
        if eve.is_some() {
            sent_b += 1;
        }
        let m = bob.encrypt(b"b").unwrap();
        let pending = |s: &Session| s.pending_step.as_ref().map(|p| *p.secret.expose());
        let before = pending(&alice);
        alice.decrypt(&m, &mut rng_a).unwrap();
        if let Some(e) = eve.as_mut() {
            let stepped = pending(&alice) != before;
            let mut rng = Adversary {
                ratchet: if stepped { pending(&alice) } else { None },
                own: StdRng::seed_from_u64(round as u64),
            };
            match e.decrypt(&m, &mut rng) {
                Ok(pt) => {
                    assert_eq!(pt, b"b");
                    assert!(healed.is_none(), "Bob's messages readable again");
                }
                Err(err) => {
                    if healed.is_none() {
                        // The keys differ; the adversary's copy is otherwise in step. (Stuck
                        // from then on, later messages may name secrets it never reached.)
                        assert_eq!(err, DecryptError::Authentication);
                        healed = Some((sent_a, sent_b - 1));
                    }
                }
            }
        }
        if round + 1 == compromise_after {
            eve = Some(Session::from_bytes(&alice.to_bytes()).unwrap());
        }
    }
    healed
}

#[test]
fn a_compromised_state_heals_within_k_messages_each() {
    // Compromise Alice at every point of two whole epochs, so the worst case (just after she
    // draws a key pair) is among them.
    let per_epoch = KEY_CHUNKS + CIPHERTEXT_CHUNKS;
    let mut worst = (0, 0);
    for t in 3..3 + 2 * per_epoch {
        let (a, b) = healing(true, t, 3 * K).unwrap_or_else(|| panic!("never healed (t = {t})"));
        assert!(
            a <= K && b <= K,
            "t = {t}: healed after {a} and {b} messages"
        );
        worst = (worst.0.max(a), worst.1.max(b));
    }
    println!(
        "worst case: Alice sent {}, Bob {} (K = {K})",
        worst.0, worst.1
    );
    // The bound is tight: some compromise point needs all K.
    assert_eq!(worst.0.max(worst.1), K);
}

#[test]
fn a_classical_session_never_heals_against_this_adversary() {
    assert_eq!(healing(false, 5, 3 * K), None);
}
