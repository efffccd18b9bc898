//! Session benchmarks, hush against vodozemac's Olm doing the same operations in the same
//! run, plus the primitive operations each protocol step is made of (for the ratios in
//! docs/BENCHMARKS.md). Messages are 100 bytes. Run: `cargo bench -p hush-sessions`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hush_crypto::kem::{KemCiphertext, KemKeyPair};
use hush_crypto::{IdentityKeyPair, X25519KeyPair};
use hush_sessions::{
    KemPrekey, OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey, Suite,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use vodozemac::olm::{Account, OlmMessage, SessionConfig};

const MSG: [u8; 100] = [0x42; 100];

struct HushPair {
    rng: StdRng,
    alice: Session,
    bob: Session,
}

fn hush_pair() -> HushPair {
    pair_of(Suite::Classical)
}

/// A PQXDH session, so both sides run the post-quantum ratchet.
fn hush_pq_pair() -> HushPair {
    let p = pair_of(Suite::PostQuantum);
    assert!(p.alice.pq_ratchet().is_some());
    p
}

fn pair_of(suite: Suite) -> HushPair {
    let mut rng = StdRng::seed_from_u64(1);
    let a = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate_for(suite, 1, &b, &mut rng);
    let opk = OneTimePrekey::generate(2, &mut rng);
    let kem = KemPrekey::generate_one_time(3, &b, &mut rng);
    let mut bundle = PrekeyBundle::new(b.public(), &spk, Some(&opk));
    if suite == Suite::PostQuantum {
        bundle = bundle.with_kem_prekey(&kem);
    }
    let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(m) = alice.encrypt(&MSG).unwrap() else {
        panic!()
    };
    let kem = (suite == Suite::PostQuantum).then_some(&kem);
    let (mut bob, _) =
        Session::accept_with_kem(&b, &spk, Some(&opk), kem, &m, None, &mut rng).unwrap();
    let r = bob.encrypt(&MSG).unwrap().to_bytes();
    alice.decrypt_bytes(&r, &mut rng).unwrap();
    HushPair { rng, alice, bob }
}

struct VodoPair {
    alice: vodozemac::olm::Session,
    bob: vodozemac::olm::Session,
}

fn vodo_pair() -> VodoPair {
    let alice_acc = Account::new();
    let mut bob_acc = Account::new();
    bob_acc.generate_one_time_keys(1);
    let otk = *bob_acc.one_time_keys().values().next().unwrap();
    bob_acc.mark_keys_as_published();
    let mut alice = alice_acc
        .create_outbound_session(SessionConfig::version_1(), bob_acc.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(m) = alice.encrypt(MSG).unwrap() else {
        panic!()
    };
    let res = bob_acc
        .create_inbound_session(SessionConfig::version_1(), alice_acc.curve25519_key(), &m)
        .unwrap();
    let mut bob = res.session;
    let r = bob.encrypt(MSG).unwrap();
    alice.decrypt(&r).unwrap();
    VodoPair { alice, bob }
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("primitive");
    let mut rng = StdRng::seed_from_u64(3);
    let k1 = X25519KeyPair::generate(&mut rng);
    let k2 = X25519KeyPair::generate(&mut rng);
    g.bench_function("x25519_keygen", |b| {
        b.iter(|| X25519KeyPair::generate(&mut rng))
    });
    g.bench_function("x25519_dh", |b| {
        b.iter(|| k1.diffie_hellman(black_box(k2.public())).unwrap())
    });
    let id = IdentityKeyPair::generate(&mut rng);
    let sig = id.sign(b"signed prekey message of about fifty-seven bytes.......");
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| {
            id.public().verify(
                b"signed prekey message of about fifty-seven bytes.......",
                black_box(&sig),
            )
        })
    });
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| id.sign(black_box(b"57 bytes")))
    });
    let mk = hush_crypto::SecretBytes::from_bytes([1u8; 32]);
    g.bench_function("chain_step", |b| {
        b.iter(|| hush_crypto::kdf::chain_step(black_box(&mk)))
    });
    g.bench_function("message_keys_hkdf", |b| {
        b.iter(|| hush_crypto::MessageKeys::derive(black_box(&mk), hush_sessions::MESSAGE_INFO))
    });
    let keys = hush_crypto::MessageKeys::derive(&mk, b"x");
    g.bench_function("chacha20poly1305_seal_100", |b| {
        b.iter(|| keys.seal(black_box(&[0u8; 100]), &MSG).unwrap())
    });
    // ML-KEM-768: hush's (libcrux-ml-kem) and RustCrypto's `ml-kem`, the other candidate.
    let seed = [7u8; 64];
    g.bench_function("mlkem768_keygen", |b| {
        b.iter(|| KemKeyPair::from_seed(hush_crypto::SecretBytes::from_bytes(black_box(seed))))
    });
    let kem = KemKeyPair::generate(&mut rng);
    g.bench_function("mlkem768_encapsulate", |b| {
        b.iter(|| black_box(kem.public()).encapsulate(&mut rng))
    });
    let (ct, _) = kem.public().encapsulate(&mut rng);
    let ct = KemCiphertext::from_slice(ct.as_bytes()).unwrap();
    g.bench_function("mlkem768_decapsulate", |b| {
        b.iter(|| kem.decapsulate(black_box(&ct)))
    });
    {
        use ml_kem::array::Array;
        use ml_kem::{Decapsulate, DecapsulationKey, MlKem768};
        g.bench_function("rustcrypto_mlkem768_keygen", |b| {
            b.iter(|| DecapsulationKey::<MlKem768>::from_seed(black_box(Array::from(seed))))
        });
        let rc = DecapsulationKey::<MlKem768>::from_seed(Array::from(seed));
        let m = Array::from([9u8; 32]);
        g.bench_function("rustcrypto_mlkem768_encapsulate", |b| {
            b.iter(|| black_box(rc.encapsulation_key()).encapsulate_deterministic(black_box(&m)))
        });
        let (rc_ct, _) = rc.encapsulation_key().encapsulate_deterministic(&m);
        g.bench_function("rustcrypto_mlkem768_decapsulate", |b| {
            b.iter(|| rc.decapsulate(black_box(&rc_ct)))
        });
    }
    let big = vec![0x42u8; 64 * 1024];
    g.throughput(criterion::Throughput::Bytes(big.len() as u64));
    g.bench_function("chacha20poly1305_seal_64k", |b| {
        b.iter(|| keys.seal(b"", black_box(&big)).unwrap())
    });
    g.finish();
}

fn encrypt(c: &mut Criterion) {
    let mut g = c.benchmark_group("encrypt_existing_chain");
    let mut p = hush_pair();
    g.bench_function("hush", |b| {
        b.iter(|| p.alice.encrypt(black_box(&MSG)).unwrap().to_bytes())
    });
    // The initiator sends its key's chunks; one way, it cycles through all 256 chunk indices,
    // 244 of which are parity chunks (the costly case: each is computed from the whole key).
    let mut p = hush_pq_pair();
    g.bench_function("hush_pq_ratchet", |b| {
        b.iter(|| p.alice.encrypt(black_box(&MSG)).unwrap().to_bytes())
    });
    // Only systematic chunks (a copy): chunks 1 to 11 of an epoch (chunk 0 went with the
    // message that completed the pending ratchet step, before the snapshot).
    let mut p = hush_pq_pair();
    p.alice.encrypt(&MSG).unwrap();
    let fresh = p.alice.to_bytes();
    g.bench_function("hush_pq_ratchet_systematic_chunk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                if i % 11 == 0 {
                    p.alice = Session::from_bytes(&fresh).unwrap();
                }
                let start = Instant::now();
                black_box(p.alice.encrypt(black_box(&MSG)).unwrap().to_bytes());
                total += start.elapsed();
            }
            total
        })
    });
    let mut v = vodo_pair();
    g.bench_function("vodozemac", |b| {
        b.iter(|| v.alice.encrypt(black_box(MSG)).unwrap().to_parts())
    });
    g.finish();
}

fn decrypt(c: &mut Criterion) {
    let mut g = c.benchmark_group("decrypt_existing_chain");
    let mut p = hush_pair();
    g.bench_function("hush", |b| {
        b.iter_custom(|iters| {
            let msgs: Vec<_> = (0..iters)
                .map(|_| p.bob.encrypt(&MSG).unwrap().to_bytes())
                .collect();
            let start = Instant::now();
            for m in &msgs {
                black_box(p.alice.decrypt_bytes(m, &mut p.rng).unwrap());
            }
            start.elapsed()
        })
    });
    // Bob receives the initiator's key chunks: he keeps 11, encapsulates on the 12th, then
    // ignores the rest until the epoch moves (all included, as they come).
    let mut p = hush_pq_pair();
    g.bench_function("hush_pq_ratchet", |b| {
        b.iter_custom(|iters| {
            let msgs: Vec<_> = (0..iters)
                .map(|_| p.alice.encrypt(&MSG).unwrap().to_bytes())
                .collect();
            let start = Instant::now();
            for m in &msgs {
                black_box(p.bob.decrypt_bytes(m, &mut p.rng).unwrap());
            }
            start.elapsed()
        })
    });
    let mut v = vodo_pair();
    g.bench_function("vodozemac", |b| {
        b.iter_custom(|iters| {
            let msgs: Vec<_> = (0..iters)
                .map(|_| v.bob.encrypt(MSG).unwrap().to_parts())
                .collect();
            let start = Instant::now();
            for (t, m) in &msgs {
                let m = OlmMessage::from_parts(*t, m).unwrap();
                black_box(v.alice.decrypt(&m).unwrap());
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn ratchet_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("decrypt_with_ratchet_step");
    let mut p = hush_pair();
    g.bench_function("hush", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Each message carries a new ratchet key: ping-pong, timing only Bob's receive.
                let m = p.alice.encrypt(&MSG).unwrap().to_bytes();
                let start = Instant::now();
                black_box(p.bob.decrypt_bytes(&m, &mut p.rng).unwrap());
                total += start.elapsed();
                let r = p.bob.encrypt(&MSG).unwrap().to_bytes();
                p.alice.decrypt_bytes(&r, &mut p.rng).unwrap();
            }
            total
        })
    });
    let mut v = vodo_pair();
    g.bench_function("vodozemac", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = v.alice.encrypt(MSG).unwrap().to_parts();
                let start = Instant::now();
                let m = OlmMessage::from_parts(m.0, &m.1).unwrap();
                black_box(v.bob.decrypt(&m).unwrap());
                total += start.elapsed();
                let r = v.bob.encrypt(MSG).unwrap();
                v.alice.decrypt(&r).unwrap();
            }
            total
        })
    });
    g.finish();
}

/// A conversation: one message each way per iteration (encrypt, decrypt, encrypt, decrypt),
/// every message a DH ratchet step; with the post-quantum ratchet, its epochs (and their
/// ML-KEM operations, one of each per 23 round trips) run as they come.
fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip");
    for (name, mut p) in [("hush", hush_pair()), ("hush_pq_ratchet", hush_pq_pair())] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let m = p.alice.encrypt(&MSG).unwrap().to_bytes();
                black_box(p.bob.decrypt_bytes(&m, &mut p.rng).unwrap());
                let r = p.bob.encrypt(&MSG).unwrap().to_bytes();
                black_box(p.alice.decrypt_bytes(&r, &mut p.rng).unwrap());
            })
        });
    }
    let mut v = vodo_pair();
    g.bench_function("vodozemac", |b| {
        b.iter(|| {
            let m = v.alice.encrypt(MSG).unwrap().to_parts();
            let m = OlmMessage::from_parts(m.0, &m.1).unwrap();
            black_box(v.bob.decrypt(&m).unwrap());
            let r = v.bob.encrypt(MSG).unwrap().to_parts();
            let r = OlmMessage::from_parts(r.0, &r.1).unwrap();
            black_box(v.alice.decrypt(&r).unwrap());
        })
    });
    g.finish();
}

fn establishment(c: &mut Criterion) {
    let mut g = c.benchmark_group("establish");
    let mut rng = StdRng::seed_from_u64(4);
    let a = IdentityKeyPair::generate(&mut rng);
    let b_id = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &b_id, &mut rng);
    let opk = OneTimePrekey::generate(2, &mut rng);
    let bundle = PrekeyBundle::new(b_id.public(), &spk, Some(&opk));
    g.bench_function("hush_initiator", |b| {
        b.iter(|| Session::initiate(&a, black_box(&bundle), None, &mut rng).unwrap())
    });
    let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(first) = alice.encrypt(&MSG).unwrap() else {
        panic!()
    };
    g.bench_function("hush_responder", |b| {
        b.iter(|| {
            Session::accept(&b_id, &spk, Some(&opk), black_box(&first), None, &mut rng).unwrap()
        })
    });

    // PQXDH: the same keys, the signed prekey signed for the post-quantum suite, and a
    // one-time KEM prekey.
    let pq_spk = SignedPrekey::generate_for(Suite::PostQuantum, 3, &b_id, &mut rng);
    let kem = KemPrekey::generate_one_time(4, &b_id, &mut rng);
    let pq_bundle = PrekeyBundle::new(b_id.public(), &pq_spk, Some(&opk)).with_kem_prekey(&kem);
    g.bench_function("hush_pqxdh_initiator", |b| {
        b.iter(|| Session::initiate(&a, black_box(&pq_bundle), None, &mut rng).unwrap())
    });
    let mut alice = Session::initiate(&a, &pq_bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(first) = alice.encrypt(&MSG).unwrap() else {
        panic!()
    };
    g.bench_function("hush_pqxdh_responder", |b| {
        b.iter(|| {
            Session::accept_with_kem(
                &b_id,
                &pq_spk,
                Some(&opk),
                Some(&kem),
                black_box(&first),
                None,
                &mut rng,
            )
            .unwrap()
        })
    });

    let alice_acc = Account::new();
    let mut bob_acc = Account::new();
    bob_acc.generate_one_time_keys(1);
    let otk = *bob_acc.one_time_keys().values().next().unwrap();
    g.bench_function("vodozemac_initiator", |b| {
        b.iter(|| {
            alice_acc
                .create_outbound_session(
                    SessionConfig::version_1(),
                    bob_acc.curve25519_key(),
                    black_box(otk),
                )
                .unwrap()
        })
    });
    g.bench_function("vodozemac_responder", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Each inbound session consumes a one-time key: make a fresh one, untimed.
                bob_acc.generate_one_time_keys(1);
                let otk = *bob_acc.one_time_keys().values().next().unwrap();
                bob_acc.mark_keys_as_published();
                let mut out = alice_acc
                    .create_outbound_session(
                        SessionConfig::version_1(),
                        bob_acc.curve25519_key(),
                        otk,
                    )
                    .unwrap();
                let OlmMessage::PreKey(m) = out.encrypt(MSG).unwrap() else {
                    panic!()
                };
                let start = Instant::now();
                black_box(
                    bob_acc
                        .create_inbound_session(
                            SessionConfig::version_1(),
                            alice_acc.curve25519_key(),
                            &m,
                        )
                        .unwrap(),
                );
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = primitives, encrypt, decrypt, ratchet_step, round_trip, establishment }
criterion_main!(benches);
