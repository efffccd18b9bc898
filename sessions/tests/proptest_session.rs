//! Property tests: two parties through random sequences of sends in either direction,
//! deliveries in any order, duplicates, drops, tampering, and seal/unseal round trips.
//!
//! Checked: every intact message decrypts exactly once, to its plaintext; everything else
//! (duplicates, tampered bytes) is rejected and leaves the receiver's state byte-for-byte as
//! it was. The sequences are short enough that no limit is reached, so no intact message may
//! legitimately fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_crypto::{IdentityKeyPair, StorageKey};
use hush_sessions::{
    KemPrekey, OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey, Suite,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug, Clone)]
enum Action {
    Send {
        from_alice: bool,
        len: usize,
    },
    Deliver {
        to_bob: bool,
        pick: usize,
    },
    Duplicate {
        to_bob: bool,
        pick: usize,
    },
    Drop {
        to_bob: bool,
        pick: usize,
    },
    Tamper {
        to_bob: bool,
        pick: usize,
        at: usize,
        xor: u8,
    },
    Restore {
        bob: bool,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<bool>(), 0usize..64).prop_map(|(from_alice, len)| Action::Send { from_alice, len }),
        4 => (any::<bool>(), any::<usize>()).prop_map(|(to_bob, pick)| Action::Deliver { to_bob, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_bob, pick)| Action::Duplicate { to_bob, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_bob, pick)| Action::Drop { to_bob, pick }),
        2 => (any::<bool>(), any::<usize>(), any::<usize>(), 1u8..=255)
            .prop_map(|(to_bob, pick, at, xor)| Action::Tamper { to_bob, pick, at, xor }),
        1 => any::<bool>().prop_map(|bob| Action::Restore { bob }),
    ]
}

struct InFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
}

struct World {
    rng: StdRng,
    bob_id: IdentityKeyPair,
    spk: SignedPrekey,
    opk: Option<OneTimePrekey>,
    kem: Option<KemPrekey>,
    alice: Session,
    bob: Option<Session>,
    to_bob: Vec<InFlight>,
    to_alice: Vec<InFlight>,
    delivered_to_bob: Vec<Vec<u8>>,
    delivered_to_alice: Vec<Vec<u8>>,
    storage: StorageKey,
    counter: u32,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let alice_id = IdentityKeyPair::generate(&mut rng);
        let bob_id = IdentityKeyPair::generate(&mut rng);
        // Odd seeds run PQXDH (with a one-time KEM prekey), even ones X3DH.
        let post_quantum = seed % 2 == 1;
        let suite = if post_quantum {
            Suite::PostQuantum
        } else {
            Suite::Classical
        };
        let spk = SignedPrekey::generate_for(suite, 1, &bob_id, &mut rng);
        let opk = OneTimePrekey::generate(2, &mut rng);
        let kem = post_quantum.then(|| KemPrekey::generate_one_time(3, &bob_id, &mut rng));
        let mut bundle = PrekeyBundle::new(bob_id.public(), &spk, Some(&opk));
        if let Some(k) = &kem {
            bundle = bundle.with_kem_prekey(k);
        }
        let alice = Session::initiate(&alice_id, &bundle, None, &mut rng).unwrap();
        assert_eq!(alice.is_post_quantum(), post_quantum);
        let storage = StorageKey::generate(&mut rng);
        World {
            rng,
            bob_id,
            spk,
            opk: Some(opk),
            kem,
            alice,
            bob: None,
            to_bob: vec![],
            to_alice: vec![],
            delivered_to_bob: vec![],
            delivered_to_alice: vec![],
            storage,
            counter: 0,
        }
    }

    /// Bob receives `bytes`: through his session, or by accepting a first prekey message.
    fn bob_receive(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(bob) = self.bob.as_mut() {
            return bob
                .decrypt_bytes(bytes, &mut self.rng)
                .map_err(|e| e.to_string());
        }
        let msg = SessionMessage::from_bytes(bytes).map_err(|e| e.to_string())?;
        let SessionMessage::Prekey(p) = msg else {
            return Err("no session yet".into());
        };
        let opk = self
            .opk
            .as_ref()
            .filter(|k| Some(k.id()) == p.one_time_prekey_id());
        let (session, pt) = Session::accept_with_kem(
            &self.bob_id,
            &self.spk,
            opk,
            self.kem.as_ref(),
            &p,
            None,
            &mut self.rng,
        )
        .map_err(|e| e.to_string())?;
        self.opk = None; // used once
        self.bob = Some(session);
        Ok(pt)
    }

    /// Delivers every message still in flight: each must decrypt to its plaintext.
    fn deliver_all(&mut self) {
        while let Some(m) = self.to_bob.pop() {
            assert_eq!(self.bob_receive(&m.bytes).unwrap(), m.plaintext);
        }
        while let Some(m) = self.to_alice.pop() {
            let pt = self.alice.decrypt_bytes(&m.bytes, &mut self.rng).unwrap();
            assert_eq!(pt, m.plaintext);
        }
    }

    fn receive(&mut self, to_bob: bool, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if to_bob {
            self.bob_receive(bytes)
        } else {
            self.alice
                .decrypt_bytes(bytes, &mut self.rng)
                .map_err(|e| e.to_string())
        }
    }

    fn state(&self, bob: bool) -> Option<Vec<u8>> {
        if bob {
            self.bob.as_ref().map(|s| s.to_bytes().to_vec())
        } else {
            Some(self.alice.to_bytes().to_vec())
        }
    }

    fn queue(&mut self, to_bob: bool) -> &mut Vec<InFlight> {
        if to_bob {
            &mut self.to_bob
        } else {
            &mut self.to_alice
        }
    }

    fn delivered(&mut self, to_bob: bool) -> &mut Vec<Vec<u8>> {
        if to_bob {
            &mut self.delivered_to_bob
        } else {
            &mut self.delivered_to_alice
        }
    }

    fn expect_rejected(&mut self, to_bob: bool, bytes: &[u8], what: &str) {
        let before = self.state(to_bob);
        let r = self.receive(to_bob, bytes);
        assert!(r.is_err(), "{what} was accepted");
        assert_eq!(before, self.state(to_bob), "{what} changed the state");
    }

    fn step(&mut self, a: Action) {
        match a {
            Action::Send { from_alice, len } => {
                self.counter += 1;
                let mut plaintext = self.counter.to_be_bytes().to_vec();
                plaintext.resize(4 + len, from_alice as u8);
                let session = if from_alice {
                    Some(&mut self.alice)
                } else {
                    self.bob.as_mut()
                };
                let Some(session) = session else { return };
                let bytes = session.encrypt(&plaintext).unwrap().to_bytes();
                self.queue(from_alice).push(InFlight { bytes, plaintext });
            }
            Action::Deliver { to_bob, pick } => {
                let q = self.queue(to_bob);
                if q.is_empty() {
                    return;
                }
                let m = q.remove(pick % q.len());
                let pt = self
                    .receive(to_bob, &m.bytes)
                    .unwrap_or_else(|e| panic!("intact message failed: {e}"));
                assert_eq!(pt, m.plaintext);
                self.delivered(to_bob).push(m.bytes);
            }
            Action::Duplicate { to_bob, pick } => {
                let d = self.delivered(to_bob);
                if d.is_empty() {
                    return;
                }
                let bytes = d[pick % d.len()].clone();
                self.expect_rejected(to_bob, &bytes, "duplicate");
            }
            Action::Drop { to_bob, pick } => {
                let q = self.queue(to_bob);
                if !q.is_empty() {
                    q.remove(pick % q.len());
                }
            }
            Action::Tamper {
                to_bob,
                pick,
                at,
                xor,
            } => {
                let q = self.queue(to_bob);
                if q.is_empty() {
                    return;
                }
                let mut bytes = q[pick % q.len()].bytes.clone();
                let i = at % bytes.len();
                bytes[i] ^= xor;
                self.expect_rejected(to_bob, &bytes, "tampered message");
            }
            Action::Restore { bob } => {
                let sealed = if bob {
                    let Some(s) = self.bob.as_ref() else { return };
                    s.seal(&self.storage, &mut self.rng).unwrap()
                } else {
                    self.alice.seal(&self.storage, &mut self.rng).unwrap()
                };
                let restored = Session::unseal(&self.storage, &sealed).unwrap();
                let before = self.state(bob);
                if bob {
                    self.bob = Some(restored);
                } else {
                    self.alice = restored;
                }
                assert_eq!(before, self.state(bob));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn conversations(seed in any::<u64>(), actions in prop::collection::vec(action(), 1..120)) {
        let mut w = World::new(seed);
        for a in actions {
            w.step(a);
        }
        // Finally every message still in flight is delivered, and decrypts.
        w.deliver_all();
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Long post-quantum conversations, so that the post-quantum ratchet runs through
    /// several epochs under drops, duplicates, tampering, reordering and restores.
    #[test]
    fn long_post_quantum_conversations(
        seed in any::<u64>(),
        actions in prop::collection::vec(action(), 400..900),
    ) {
        let mut w = World::new(seed | 1);
        for a in actions {
            w.step(a);
        }
        w.deliver_all();
    }
}

/// The property above does not require epochs to advance (a random run may drop too much);
/// one long fixed conversation of the same kind shows that they do.
#[test]
fn a_long_random_conversation_reaches_several_epochs() {
    let mut w = World::new(11);
    let mut dice = StdRng::seed_from_u64(12);
    use rand::RngExt;
    for _ in 0..3000 {
        let a = match dice.random_range(0..10) {
            0..4 => Action::Send {
                from_alice: dice.random_bool(0.5),
                len: 8,
            },
            4..8 => Action::Deliver {
                to_bob: dice.random_bool(0.5),
                pick: dice.random_range(0..usize::MAX),
            },
            8 => Action::Drop {
                to_bob: dice.random_bool(0.5),
                pick: dice.random_range(0..usize::MAX),
            },
            _ => Action::Restore {
                bob: dice.random_bool(0.5),
            },
        };
        w.step(a);
    }
    let (a, b) = (
        w.alice.pq_ratchet().unwrap(),
        w.bob.as_ref().unwrap().pq_ratchet().unwrap(),
    );
    assert!(a.epoch >= 3 && b.epoch >= 3, "{a:?} {b:?}");
}
