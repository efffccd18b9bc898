//! Stateful fuzzers, like libsignal's interaction fuzzer: the input bytes are a seed and a
//! list of actions. They assert the properties of the property tests: every intact message
//! decrypts exactly once to its plaintext, everything else is refused without changing the
//! receiver's state, sealed snapshots restore exactly, and group memberships converge.

use std::collections::HashSet;

use hush_crypto::{IdentityKeyPair, StorageKey};
use hush_groups::{Group, GroupConfig, GroupDecryptError, Role};
use hush_sessions::{
    KemPrekey, OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey, Suite,
};

use crate::rng::FuzzRng;

/// At most this many actions per input, so every run stays short.
const MAX_ACTIONS: usize = 300;

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += 1;
        b
    }
    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
    fn seed(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| acc << 8 | u64::from(self.byte()))
    }
}

struct Flight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
}

/// Two parties: send, deliver in any order, duplicate, tamper, and seal/unseal. The seed's
/// lowest bit picks the suite: PQXDH (with a one-time KEM prekey) or X3DH.
pub fn session_interaction(data: &[u8]) {
    let mut inp = Input { data, pos: 0 };
    let seed = inp.seed();
    let post_quantum = seed & 1 == 1;
    let mut rng = FuzzRng::new(seed);
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let suite = if post_quantum {
        Suite::PostQuantum
    } else {
        Suite::Classical
    };
    let spk = SignedPrekey::generate_for(suite, 1, &bob_id, &mut rng);
    let mut opk = Some(OneTimePrekey::generate(2, &mut rng));
    let kem = post_quantum.then(|| KemPrekey::generate_one_time(3, &bob_id, &mut rng));
    let mut bundle = PrekeyBundle::new(bob_id.public(), &spk, opk.as_ref());
    if let Some(k) = &kem {
        bundle = bundle.with_kem_prekey(k);
    }
    let mut alice = Session::initiate(&alice_id, &bundle, None, &mut rng).expect("initiate");
    assert_eq!(alice.is_post_quantum(), post_quantum);
    let mut bob: Option<Session> = None;
    let storage = StorageKey::generate(&mut rng);
    let mut queues: [Vec<Flight>; 2] = [vec![], vec![]]; // [to alice, to bob]
    let mut delivered: [Vec<Vec<u8>>; 2] = [vec![], vec![]];
    let mut counter = 0u32;

    let receive = |to_bob: bool,
                   bytes: &[u8],
                   alice: &mut Session,
                   bob: &mut Option<Session>,
                   opk: &mut Option<OneTimePrekey>,
                   rng: &mut FuzzRng|
     -> Option<Vec<u8>> {
        if !to_bob {
            return alice.decrypt_bytes(bytes, rng).ok();
        }
        if let Some(b) = bob.as_mut() {
            return b.decrypt_bytes(bytes, rng).ok();
        }
        let SessionMessage::Prekey(p) = SessionMessage::from_bytes(bytes).ok()? else {
            return None;
        };
        let key = opk
            .as_ref()
            .filter(|k| Some(k.id()) == p.one_time_prekey_id());
        let (s, pt) =
            Session::accept_with_kem(&bob_id, &spk, key, kem.as_ref(), &p, None, rng).ok()?;
        assert_eq!(s.is_post_quantum(), p.is_post_quantum());
        *opk = None;
        *bob = Some(s);
        Some(pt)
    };
    let state = |to_bob: bool, alice: &Session, bob: &Option<Session>| -> Option<Vec<u8>> {
        if to_bob {
            bob.as_ref().map(|b| b.to_bytes().to_vec())
        } else {
            Some(alice.to_bytes().to_vec())
        }
    };

    for _ in 0..MAX_ACTIONS {
        let Some(op) = inp.next() else { break };
        match op % 6 {
            0 | 1 => {
                let from_alice = op % 6 == 0;
                counter += 1;
                let mut plaintext = counter.to_be_bytes().to_vec();
                plaintext.resize(4 + usize::from(inp.byte() % 48), op);
                let session = if from_alice {
                    Some(&mut alice)
                } else {
                    bob.as_mut()
                };
                let Some(session) = session else { continue };
                let bytes = session.encrypt(&plaintext).expect("encrypt").to_bytes();
                queues[usize::from(from_alice)].push(Flight { bytes, plaintext });
            }
            2 => {
                let to_bob = inp.byte() & 1 == 1;
                let q = &mut queues[usize::from(to_bob)];
                if q.is_empty() {
                    continue;
                }
                let m = q.remove(usize::from(inp.byte()) % q.len());
                let pt = receive(to_bob, &m.bytes, &mut alice, &mut bob, &mut opk, &mut rng);
                assert_eq!(
                    pt.as_deref(),
                    Some(m.plaintext.as_slice()),
                    "an intact message did not decrypt"
                );
                delivered[usize::from(to_bob)].push(m.bytes);
            }
            3 | 4 => {
                let to_bob = inp.byte() & 1 == 1;
                let pick = usize::from(inp.byte());
                let mut bytes = if op % 6 == 3 {
                    let d = &delivered[usize::from(to_bob)];
                    if d.is_empty() {
                        continue;
                    }
                    d[pick % d.len()].clone()
                } else {
                    let q = &queues[usize::from(to_bob)];
                    if q.is_empty() {
                        continue;
                    }
                    q[pick % q.len()].bytes.clone()
                };
                if op % 6 == 4 {
                    let at = usize::from(inp.byte()) * 7 % bytes.len();
                    bytes[at] ^= inp.byte() | 1;
                }
                let before = state(to_bob, &alice, &bob);
                let pt = receive(to_bob, &bytes, &mut alice, &mut bob, &mut opk, &mut rng);
                assert!(pt.is_none(), "a duplicate or tampered message was accepted");
                assert_eq!(
                    before,
                    state(to_bob, &alice, &bob),
                    "a refused message changed the state"
                );
            }
            _ => {
                let to_bob = inp.byte() & 1 == 1;
                let before = state(to_bob, &alice, &bob);
                if to_bob {
                    if let Some(b) = bob.as_ref() {
                        let sealed = b.seal(&storage, &mut rng).expect("seal");
                        bob = Some(Session::unseal(&storage, &sealed).expect("unseal"));
                    }
                } else {
                    let sealed = alice.seal(&storage, &mut rng).expect("seal");
                    alice = Session::unseal(&storage, &sealed).expect("unseal");
                }
                assert_eq!(
                    before,
                    state(to_bob, &alice, &bob),
                    "a sealed state did not restore exactly"
                );
            }
        }
    }
}

struct GroupFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
    sender: usize,
    sender_incarnation: u32,
    recipients: HashSet<(usize, u32)>,
}

const PEOPLE: usize = 5;

/// A group: members join and leave while messages interleave.
pub fn group_interaction(data: &[u8]) {
    let mut inp = Input { data, pos: 0 };
    let mut rng = FuzzRng::new(inp.seed());
    let ids: Vec<IdentityKeyPair> = (0..PEOPLE)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let admin = || IdentityKeyPair::from_seed(&ids[0].seed());
    let others: Vec<_> = [1, 2]
        .iter()
        .map(|i: &usize| (*ids[*i].public(), Role::Member))
        .collect();
    // Every removal makes every sender rotate; keep all chains so that the model's
    // expectations stay exact (the `max_old_chains` limit has boundary tests of its own).
    let config = GroupConfig {
        max_old_chains: 10_000,
        ..GroupConfig::default()
    };
    let (g0, create) = Group::create(&ids[0], &others, config, &mut rng).expect("create");
    let mut groups: Vec<Option<Group>> = (0..PEOPLE).map(|_| None).collect();
    groups[0] = Some(g0);
    for i in [1, 2] {
        groups[i] =
            Some(Group::from_create(ids[i].public(), &create, config).expect("from_create"));
    }
    let mut members: HashSet<usize> = [0, 1, 2].into_iter().collect();
    let mut removed: HashSet<usize> = HashSet::new();
    let mut incarnation = [1u32; PEOPLE];
    let mut sent: Vec<GroupFlight> = vec![];
    let mut done: HashSet<(usize, usize, u32)> = HashSet::new();
    let storage = StorageKey::generate(&mut rng);

    for _ in 0..MAX_ACTIONS {
        let Some(op) = inp.next() else { break };
        let who = usize::from(inp.byte()) % PEOPLE;
        match op % 6 {
            0 => {
                if !members.contains(&who) {
                    continue;
                }
                let plaintext = (sent.len() as u32).to_be_bytes().to_vec();
                let out = groups[who]
                    .as_mut()
                    .expect("member")
                    .encrypt(&plaintext, 0, &mut rng)
                    .expect("encrypt");
                let recipients: HashSet<(usize, u32)> = members
                    .iter()
                    .filter(|m| **m != who)
                    .map(|m| (*m, incarnation[*m]))
                    .collect();
                if let Some(d) = &out.distribution {
                    for (m, _) in &recipients {
                        groups[*m]
                            .as_mut()
                            .expect("member")
                            .process_distribution(ids[who].public(), d)
                            .expect("distribution");
                    }
                }
                sent.push(GroupFlight {
                    bytes: out.message,
                    plaintext,
                    sender: who,
                    sender_incarnation: incarnation[who],
                    recipients,
                });
            }
            1 | 2 => {
                if sent.is_empty() || groups[who].is_none() {
                    continue;
                }
                let i = usize::from(inp.byte()) % sent.len();
                let f = &sent[i];
                let mut bytes = f.bytes.clone();
                let tamper = op % 6 == 2;
                if tamper {
                    let at = usize::from(inp.byte()) * 5 % bytes.len();
                    bytes[at] ^= inp.byte() | 1;
                }
                let entitled = f.recipients.contains(&(who, incarnation[who]))
                    && !done.contains(&(i, who, incarnation[who]));
                let sender_gone =
                    removed.contains(&f.sender) || incarnation[f.sender] != f.sender_incarnation;
                let g = groups[who].as_mut().expect("group");
                let before = g.to_bytes().to_vec();
                match g.decrypt(&bytes) {
                    Ok(p) => {
                        assert!(entitled && !tamper, "decrypted a message it must not read");
                        assert_eq!(p.plaintext, f.plaintext);
                        done.insert((i, who, incarnation[who]));
                    }
                    Err(GroupDecryptError::RemovedMember | GroupDecryptError::UnknownChain)
                        if sender_gone =>
                    {
                        assert_eq!(
                            before,
                            g.to_bytes().to_vec(),
                            "a refused message changed the state"
                        );
                    }
                    Err(e) => {
                        assert!(
                            !entitled || tamper,
                            "member failed on a message it was sent: {e}"
                        );
                        assert_eq!(
                            before,
                            g.to_bytes().to_vec(),
                            "a refused message changed the state"
                        );
                    }
                }
            }
            3 => {
                if who == 0 || members.contains(&who) {
                    continue;
                }
                let (add, info) = groups[0]
                    .as_mut()
                    .expect("admin")
                    .add(&admin(), ids[who].public(), Role::Member)
                    .expect("add");
                for m in members.iter().filter(|m| **m != 0) {
                    groups[*m]
                        .as_mut()
                        .expect("member")
                        .apply(&add)
                        .expect("apply add");
                }
                members.insert(who);
                removed.remove(&who);
                incarnation[who] += 1;
                groups[who] = Some(
                    Group::join(ids[who].public(), &info, ids[0].public(), config).expect("join"),
                );
                for m in members
                    .iter()
                    .filter(|m| **m != who)
                    .copied()
                    .collect::<Vec<_>>()
                {
                    if let Some(d) = groups[m]
                        .as_ref()
                        .expect("member")
                        .sender_key_distribution()
                    {
                        groups[who]
                            .as_mut()
                            .expect("joined")
                            .process_distribution(ids[m].public(), &d)
                            .expect("handover");
                    }
                }
            }
            4 => {
                if who == 0 || !members.contains(&who) {
                    continue;
                }
                let remove = groups[0]
                    .as_mut()
                    .expect("admin")
                    .remove(&admin(), ids[who].public())
                    .expect("remove");
                members.remove(&who);
                for m in members.iter().filter(|m| **m != 0).copied().chain([who]) {
                    groups[m]
                        .as_mut()
                        .expect("member")
                        .apply(&remove)
                        .expect("apply remove");
                }
                removed.insert(who);
            }
            _ => {
                let Some(g) = groups[who].as_ref() else {
                    continue;
                };
                let before = g.to_bytes().to_vec();
                let sealed = g.seal(&storage, &mut rng).expect("seal");
                groups[who] = Some(Group::unseal(&storage, &sealed).expect("unseal"));
                assert_eq!(
                    before,
                    groups[who].as_ref().expect("restored").to_bytes().to_vec()
                );
            }
        }
        let reference = groups[0].as_ref().expect("admin").membership().clone();
        for m in &members {
            assert_eq!(
                groups[*m].as_ref().expect("member").membership(),
                &reference,
                "memberships diverged"
            );
        }
    }
}
