//! The post-quantum ratchet (SPEC §7.8) through the public API: epochs advance in a
//! conversation, loss and reordering delay but never break them, the header's post-quantum
//! part stays within its bound, failures change nothing, restored sessions continue exactly,
//! and a header without the post-quantum part is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::rng;
use hush_crypto::IdentityKeyPair;
use hush_sessions::limits::MAX_PQ_HEADER_OVERHEAD;
use hush_sessions::pq_ratchet::{CHUNK_LEN, CIPHERTEXT_CHUNKS, KEY_CHUNKS};
use hush_sessions::{
    Chunk, DecryptError, Header, KemPrekey, OneTimePrekey, PqError, PqHeader, PrekeyBundle,
    Session, SessionMessage, SignedPrekey, Suite,
};
use rand::RngExt;
use rand::rngs::StdRng;

struct Pair {
    rng: StdRng,
    alice: Session,
    bob: Session,
}

/// A PQXDH session, Bob having accepted Alice's first message.
fn pair(seed: u64) -> Pair {
    let mut rng = rng(seed);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate_for(Suite::PostQuantum, 1, &bob_id, &mut rng);
    let opk = OneTimePrekey::generate(2, &mut rng);
    let kem = KemPrekey::generate_one_time(3, &bob_id, &mut rng);
    let bundle = PrekeyBundle::new(bob_id.public(), &spk, Some(&opk)).with_kem_prekey(&kem);
    let mut alice = Session::initiate(&alice_id, &bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(first) = alice.encrypt(b"hello").unwrap() else {
        panic!("expected a prekey message");
    };
    assert!(first.message().header().pq.is_some());
    let (bob, pt) = Session::accept_with_kem(
        &bob_id,
        &spk,
        Some(&opk),
        Some(&kem),
        &first,
        None,
        &mut rng,
    )
    .unwrap();
    assert_eq!(pt, b"hello");
    Pair { rng, alice, bob }
}

impl Pair {
    fn send(&mut self, from_alice: bool, text: &[u8]) -> Vec<u8> {
        let s = if from_alice {
            &mut self.alice
        } else {
            &mut self.bob
        };
        s.encrypt(text).unwrap().to_bytes()
    }

    fn recv(&mut self, to_alice: bool, wire: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let s = if to_alice {
            &mut self.alice
        } else {
            &mut self.bob
        };
        s.decrypt_bytes(wire, &mut self.rng)
    }

    /// One message each way, delivered at once.
    fn round(&mut self) {
        let w = self.send(true, b"ping");
        assert_eq!(self.recv(false, &w).unwrap(), b"ping");
        let w = self.send(false, b"pong");
        assert_eq!(self.recv(true, &w).unwrap(), b"pong");
    }
}

/// The bytes the post-quantum part adds to a header.
fn overhead(header: &Header) -> usize {
    let classical = Header {
        pq: None,
        ..*header
    };
    header.encode().len() - classical.encode().len()
}

#[test]
fn classical_sessions_do_not_run_it() {
    let mut p = common::established(1);
    assert!(p.alice.pq_ratchet().is_none() && p.bob.pq_ratchet().is_none());
    let m = p.alice.encrypt(b"x").unwrap();
    assert!(m.ratchet_message().header().pq.is_none());
    assert_eq!(p.bob.decrypt(&m, &mut p.rng).unwrap(), b"x");
}

#[test]
fn epochs_advance_in_a_conversation_within_the_overhead_bound() {
    let mut p = pair(2);
    let (mut max, mut total, mut count) = (0usize, 0usize, 0usize);
    for i in 0..200 {
        for from_alice in [true, false] {
            let m = if from_alice {
                p.alice.encrypt(b"ping").unwrap()
            } else {
                p.bob.encrypt(b"pong").unwrap()
            };
            let o = overhead(m.ratchet_message().header());
            max = max.max(o);
            total += o;
            count += 1;
            let wire = m.to_bytes();
            p.recv(!from_alice, &wire).map(|_| ()).unwrap_or_else(|e| {
                panic!("round {i}: {e}");
            });
        }
    }
    let (a, b) = (p.alice.pq_ratchet().unwrap(), p.bob.pq_ratchet().unwrap());
    // An epoch takes KEY_CHUNKS + CIPHERTEXT_CHUNKS rounds: 200 rounds make 8.
    let per_epoch = (KEY_CHUNKS + CIPHERTEXT_CHUNKS) as u32;
    assert!(a.epoch >= 200 / per_epoch, "{a:?}");
    assert!(
        a.mixed + 2 >= a.epoch && b.mixed + 2 >= b.epoch,
        "{a:?} {b:?}"
    );
    assert!(max <= MAX_PQ_HEADER_OVERHEAD && MAX_PQ_HEADER_OVERHEAD <= 128);
    println!(
        "post-quantum header bytes: max {max}, mean {:.1} over {count} messages",
        total as f64 / count as f64
    );
}

#[test]
fn the_overhead_bound_is_exact() {
    let worst = Header {
        ratchet_key: hush_crypto::X25519PublicKey::from_bytes([9; 32]),
        previous_chain_length: 0,
        message_number: 0,
        pq: Some(PqHeader {
            epoch: u32::MAX,
            mixed: u32::MAX - 1,
            chunk: Some(Chunk {
                index: 255,
                data: [0xff; CHUNK_LEN],
            }),
        }),
    };
    assert_eq!(overhead(&worst), MAX_PQ_HEADER_OVERHEAD);
    assert_eq!(Header::decode(&worst.encode()).unwrap(), worst);
}

/// Messages in random bursts, a third of them lost, the rest delivered in random order.
#[test]
fn loss_and_reordering_delay_epochs_but_never_break_them() {
    for seed in 0..4u64 {
        let mut p = pair(100 + seed);
        let mut dice = rng(200 + seed);
        let mut to_bob: Vec<Vec<u8>> = vec![];
        let mut to_alice: Vec<Vec<u8>> = vec![];
        for _ in 0..300 {
            let from_alice = dice.random_bool(0.5);
            for _ in 0..dice.random_range(1..4) {
                let w = p.send(from_alice, b"m");
                if dice.random_bool(0.67) {
                    if from_alice {
                        &mut to_bob
                    } else {
                        &mut to_alice
                    }
                    .push(w);
                }
            }
            // Deliver some of what is in flight, in random order.
            for to_alice_side in [false, true] {
                let queue = if to_alice_side {
                    &mut to_alice
                } else {
                    &mut to_bob
                };
                let n = dice.random_range(0..=queue.len());
                let mut batch: Vec<Vec<u8>> = vec![];
                for _ in 0..n {
                    let i = dice.random_range(0..queue.len());
                    batch.push(queue.swap_remove(i));
                }
                for w in batch {
                    assert_eq!(p.recv(to_alice_side, &w).unwrap(), b"m");
                }
            }
        }
        let (a, b) = (p.alice.pq_ratchet().unwrap(), p.bob.pq_ratchet().unwrap());
        assert!(a.epoch >= 4 && b.epoch >= 4, "seed {seed}: {a:?} {b:?}");
        assert!(a.mixed >= 2 && b.mixed >= 2, "seed {seed}: {a:?} {b:?}");
        // Held chunks never reach what a payload needs: the last one completes it.
        assert!(a.chunks_held < KEY_CHUNKS && b.chunks_held < KEY_CHUNKS);
    }
}

/// Every message of a conversation, the ones that complete a key or a ciphertext included,
/// tampered first: refused, and both states unchanged byte for byte.
#[test]
fn a_failed_decrypt_leaves_the_whole_state_unchanged() {
    let mut p = pair(3);
    for i in 0..120 {
        let from_alice = i % 2 == 0;
        let wire = p.send(from_alice, b"text");
        for at in [wire.len() - 1, wire.len() / 2, 40] {
            let mut bad = wire.clone();
            bad[at] ^= 0x20;
            let receiver = if from_alice { &p.bob } else { &p.alice };
            let before = receiver.to_bytes();
            assert!(p.recv(!from_alice, &bad).is_err());
            let receiver = if from_alice { &p.bob } else { &p.alice };
            assert_eq!(*receiver.to_bytes(), *before, "message {i}, byte {at}");
        }
        p.recv(!from_alice, &wire).unwrap();
        // A replay is refused and changes nothing either.
        let receiver = if from_alice { &p.bob } else { &p.alice };
        let before = receiver.to_bytes();
        assert!(p.recv(!from_alice, &wire).is_err());
        let receiver = if from_alice { &p.bob } else { &p.alice };
        assert_eq!(*receiver.to_bytes(), *before);
    }
    assert!(p.alice.pq_ratchet().unwrap().mixed >= 2);
}

/// Two runs from one seed, one restoring both sessions from bytes before every step: they
/// send identical bytes throughout, mid-epoch included.
#[test]
fn a_restored_session_continues_exactly() {
    let mut plain = pair(4);
    let mut restored = pair(4);
    for i in 0..150 {
        restored.alice = Session::from_bytes(&restored.alice.to_bytes()).unwrap();
        restored.bob = Session::from_bytes(&restored.bob.to_bytes()).unwrap();
        let from_alice = i % 3 != 2;
        let a = plain.send(from_alice, b"same");
        let b = restored.send(from_alice, b"same");
        assert_eq!(a, b, "step {i}");
        plain.recv(!from_alice, &a).unwrap();
        restored.recv(!from_alice, &b).unwrap();
    }
    assert_eq!(*plain.alice.to_bytes(), *restored.alice.to_bytes());
    assert!(plain.alice.pq_ratchet().unwrap().epoch >= 4);
}

/// Protobuf of a `SessionMessage` holding a ratchet message: header bytes and ciphertext.
fn ratchet_wire(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
        out
    }
    let inner = [field(0x0a, header), field(0x12, ciphertext)].concat();
    field(0x0a, &inner)
}

#[test]
fn a_header_without_the_post_quantum_part_is_refused_as_a_downgrade() {
    let mut p = pair(5);
    p.round();
    let m = p.alice.encrypt(b"x").unwrap();
    let r = m.ratchet_message();
    let stripped = Header {
        pq: None,
        ..*r.header()
    };
    let wire = ratchet_wire(&stripped.encode(), r.ciphertext());
    let before = p.bob.to_bytes();
    assert_eq!(
        p.bob.decrypt_bytes(&wire, &mut p.rng),
        Err(DecryptError::PostQuantum(PqError::Missing))
    );
    assert_eq!(*p.bob.to_bytes(), *before);
    // And a classical session refuses a header that has one.
    let mut c = common::established(6);
    let m = c.alice.encrypt(b"x").unwrap();
    let r = m.ratchet_message();
    let added = Header {
        pq: Some(PqHeader {
            epoch: 1,
            mixed: 0,
            chunk: None,
        }),
        ..*r.header()
    };
    let wire = ratchet_wire(&added.encode(), r.ciphertext());
    assert_eq!(
        c.bob.decrypt_bytes(&wire, &mut c.rng),
        Err(DecryptError::PostQuantum(PqError::Missing))
    );
}

#[test]
fn malformed_post_quantum_headers_are_refused_at_decoding() {
    let base = Header {
        ratchet_key: hush_crypto::X25519PublicKey::from_bytes([9; 32]),
        previous_chain_length: 0,
        message_number: 0,
        pq: None,
    };
    let mut ok = [0xabu8; CHUNK_LEN];
    ok[0] = 1;
    let good = Header {
        pq: Some(PqHeader {
            epoch: 3,
            mixed: 2,
            chunk: Some(Chunk { index: 7, data: ok }),
        }),
        ..base
    };
    assert_eq!(Header::decode(&good.encode()).unwrap(), good);
    // The encoding of the PqHeader is the header's tail: field 5 (0x2a), its length, then
    // fields 1-4. Build variants by hand.
    let classical = base.encode();
    let variant = |body: &[u8]| {
        let mut h = classical.clone();
        h.push(0x2a);
        h.push(body.len() as u8);
        h.extend_from_slice(body);
        Header::decode(&h)
    };
    let chunk = |len: usize| {
        let mut v = vec![0x22, len as u8];
        v.extend(std::iter::repeat_n(1u8, len));
        v
    };
    // Epoch 0.
    assert!(variant(&[0x10, 0x01]).is_err());
    assert!(variant(&[]).is_err());
    // Mixed not below epoch.
    assert!(variant(&[0x08, 0x02, 0x10, 0x02]).is_err());
    // Chunk of 103 and 105 bytes; 104 is accepted.
    for (len, accepted) in [(103, false), (104, true), (105, false)] {
        let body = [vec![0x08, 0x01], chunk(len)].concat();
        assert_eq!(variant(&body).is_ok(), accepted, "chunk of {len}");
    }
    // Index 255 accepted, 256 refused; an index without a chunk refused.
    let with_index = |i: &[u8]| [vec![0x08, 0x01, 0x18], i.to_vec(), chunk(104)].concat();
    assert!(variant(&with_index(&[0xff, 0x01])).is_ok());
    assert!(variant(&with_index(&[0x80, 0x02])).is_err());
    assert!(variant(&[0x08, 0x01, 0x18, 0x05]).is_err());
}

#[test]
fn chunks_fill_a_payload_exactly_once() {
    assert_eq!(KEY_CHUNKS, 12);
    assert_eq!(CIPHERTEXT_CHUNKS, 11);
    const { assert!(KEY_CHUNKS * CHUNK_LEN >= 1184 && (KEY_CHUNKS - 1) * CHUNK_LEN < 1184) };
    const {
        assert!(CIPHERTEXT_CHUNKS * CHUNK_LEN >= 1088 && (CIPHERTEXT_CHUNKS - 1) * CHUNK_LEN < 1088)
    };
}

#[test]
fn dropped_and_restored_sessions_still_decrypt_late_messages() {
    let mut p = pair(8);
    let mut late = vec![];
    for i in 0..60 {
        let w = p.send(true, b"late?");
        if i % 5 == 0 {
            late.push(w);
        } else {
            p.recv(false, &w).unwrap();
        }
        let w = p.send(false, b"pong");
        p.recv(true, &w).unwrap();
    }
    p.bob = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    for w in late.iter().rev() {
        assert_eq!(p.recv(false, w).unwrap(), b"late?");
    }
    p.round();
}
