//! Group benchmarks, hush against vodozemac's Megolm doing the same work in the same run.
//! Messages are 100 bytes. Run: `cargo bench -p hush-groups --bench group`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hush_crypto::IdentityKeyPair;
use hush_groups::{Group, GroupConfig, Role, RotationPolicy};
use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey};
use rand::SeedableRng;
use rand::rngs::StdRng;
use vodozemac::megolm::{GroupSession, InboundGroupSession, MegolmMessage, SessionConfig};

const MSG: [u8; 100] = [0x42; 100];
const NOW: u64 = 1;

/// A group of `n` members; returns the sender (member 0), one receiver holding the sender's
/// key, and the rng.
fn hush_group(n: usize, config: GroupConfig) -> (Group, Group, StdRng) {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let ids: Vec<_> = (0..n)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let others: Vec<_> = ids[1..]
        .iter()
        .map(|i| (*i.public(), Role::Member))
        .collect();
    let (mut sender, create) = Group::create(&ids[0], &others, config, &mut rng).unwrap();
    let mut receiver = Group::from_create(ids[1].public(), &create, config).unwrap();
    let first = sender.encrypt(&MSG, NOW, &mut rng).unwrap();
    receiver
        .process_distribution(ids[0].public(), &first.distribution.unwrap())
        .unwrap();
    receiver.decrypt(&first.message).unwrap();
    (sender, receiver, rng)
}

fn send(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_send");
    for n in [2usize, 256] {
        let (mut sender, _, mut rng) = hush_group(n, GroupConfig::default());
        g.bench_with_input(BenchmarkId::new("hush", n), &n, |b, _| {
            b.iter(|| {
                sender
                    .encrypt(black_box(&MSG), NOW, &mut rng)
                    .unwrap()
                    .message
            })
        });
    }
    let mut outbound = GroupSession::new(SessionConfig::version_1());
    g.bench_function("megolm", |b| {
        b.iter(|| outbound.encrypt(black_box(MSG)).to_bytes())
    });
    g.finish();
}

fn receive(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_receive");
    let (mut sender, mut receiver, mut rng) = hush_group(2, GroupConfig::default());
    g.bench_function("hush", |b| {
        b.iter_custom(|iters| {
            let msgs: Vec<_> = (0..iters)
                .map(|_| sender.encrypt(&MSG, NOW, &mut rng).unwrap().message)
                .collect();
            let start = Instant::now();
            for m in &msgs {
                black_box(receiver.decrypt(m).unwrap());
            }
            start.elapsed()
        })
    });
    let mut outbound = GroupSession::new(SessionConfig::version_1());
    let mut inbound = InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());
    g.bench_function("megolm", |b| {
        b.iter_custom(|iters| {
            let msgs: Vec<_> = (0..iters)
                .map(|_| outbound.encrypt(MSG).to_bytes())
                .collect();
            let start = Instant::now();
            for m in &msgs {
                let m = MegolmMessage::from_bytes(m).unwrap();
                black_box(inbound.decrypt(&m).unwrap());
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// A new sender key, distributed to 255 members over established pairwise sessions.
fn distribute(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_sender_key_to_255");
    g.sample_size(20);
    let mut rng = StdRng::seed_from_u64(9);
    let me = IdentityKeyPair::generate(&mut rng);
    let mut sessions: Vec<Session> = (0..255)
        .map(|_| {
            let peer = IdentityKeyPair::generate(&mut rng);
            let spk = SignedPrekey::generate(1, &peer, &mut rng);
            let opk = OneTimePrekey::generate(1, &mut rng);
            let mut s = Session::initiate(
                &me,
                &PrekeyBundle::new(peer.public(), &spk, Some(&opk)),
                None,
                &mut rng,
            )
            .unwrap();
            let SessionMessage::Prekey(m) = s.encrypt(b"hi").unwrap() else {
                panic!()
            };
            let (mut p, _) = Session::accept(&peer, &spk, Some(&opk), &m, None, &mut rng).unwrap();
            let r = p.encrypt(b"hi").unwrap().to_bytes();
            s.decrypt_bytes(&r, &mut rng).unwrap();
            s
        })
        .collect();
    // Rotate on every send, so each send makes a new sender key.
    let config = GroupConfig {
        rotation: RotationPolicy {
            after_messages: Some(1),
            after_seconds: None,
        },
        ..GroupConfig::default()
    };
    let (mut group, _, mut grng) = hush_group(256, config);
    g.bench_function("hush", |b| {
        b.iter(|| {
            let sent = group.encrypt(&MSG, NOW, &mut grng).unwrap();
            let d = sent.distribution.unwrap();
            for s in &mut sessions {
                black_box(s.encrypt(&d).unwrap().to_bytes());
            }
        })
    });
    g.bench_function("megolm_session_key_over_hush_sessions", |b| {
        b.iter(|| {
            let outbound = GroupSession::new(SessionConfig::version_1());
            let key = outbound.session_key().to_bytes();
            for s in &mut sessions {
                black_box(s.encrypt(&key).unwrap().to_bytes());
            }
        })
    });
    g.finish();
}

/// Receiving message 1,000 of a chain first: 1,000 keys to skip and store.
fn catch_up(c: &mut Criterion) {
    let mut g = c.benchmark_group("catch_up_1000");
    let (mut sender, receiver, mut rng) = hush_group(2, GroupConfig::default());
    for _ in 0..999 {
        sender.encrypt(&MSG, NOW, &mut rng).unwrap();
    }
    let late = sender.encrypt(&MSG, NOW, &mut rng).unwrap().message;
    let snapshot = receiver.to_bytes();
    g.bench_function("hush", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut r = Group::from_bytes(&snapshot).unwrap();
                let start = Instant::now();
                black_box(r.decrypt(&late).unwrap());
                total += start.elapsed();
            }
            total
        })
    });
    let mut outbound = GroupSession::new(SessionConfig::version_1());
    let key = outbound.session_key();
    for _ in 0..1000 {
        outbound.encrypt(MSG);
    }
    let late = outbound.encrypt(MSG).to_bytes();
    g.bench_function("megolm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut inbound = InboundGroupSession::new(&key, SessionConfig::version_1());
                let start = Instant::now();
                let m = MegolmMessage::from_bytes(&late).unwrap();
                black_box(inbound.decrypt(&m).unwrap());
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

criterion_group! { name = benches; config = config(); targets = send, receive, distribute, catch_up }
criterion_main!(benches);
