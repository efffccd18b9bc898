//! End to end at full size: 256 members, sender keys carried inside real pairwise
//! `hush-sessions` sessions; create, send from several members, remove one, add one. And a
//! scaling test: 1,024 members with the limit raised.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_crypto::IdentityKeyPair;
use hush_groups::{Group, GroupConfig, GroupDecryptError, InvalidChange, Role};
use hush_sessions::{OneTimePrekey, PrekeyBundle, Session, SessionMessage, SignedPrekey};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;

const NOW: u64 = 5;

struct Member {
    id: IdentityKeyPair,
    spk: SignedPrekey,
    group: Option<Group>,
    /// Pairwise sessions, by peer index.
    sessions: HashMap<usize, Session>,
}

struct World {
    rng: StdRng,
    members: Vec<Member>,
}

impl World {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let members = (0..n)
            .map(|_| {
                let id = IdentityKeyPair::generate(&mut rng);
                let spk = SignedPrekey::generate(1, &id, &mut rng);
                Member {
                    id,
                    spk,
                    group: None,
                    sessions: HashMap::new(),
                }
            })
            .collect();
        World { rng, members }
    }

    /// Sends `payload` from `from` to `to` through their pairwise session (built on first use
    /// from `to`'s bundle) and returns what `to` decrypts.
    fn pairwise(&mut self, from: usize, to: usize, payload: &[u8]) -> Vec<u8> {
        if !self.members[from].sessions.contains_key(&to) {
            let opk = OneTimePrekey::generate(7, &mut self.rng);
            let bundle = PrekeyBundle::new(
                self.members[to].id.public(),
                &self.members[to].spk,
                Some(&opk),
            );
            let mut s =
                Session::initiate(&self.members[from].id, &bundle, None, &mut self.rng).unwrap();
            let SessionMessage::Prekey(first) = s.encrypt(payload).unwrap() else {
                panic!()
            };
            let (peer, pt) = Session::accept(
                &self.members[to].id,
                &self.members[to].spk,
                Some(&opk),
                &first,
                None,
                &mut self.rng,
            )
            .unwrap();
            self.members[from].sessions.insert(to, s);
            self.members[to].sessions.insert(from, peer);
            return pt;
        }
        let wire = self.members[from]
            .sessions
            .get_mut(&to)
            .unwrap()
            .encrypt(payload)
            .unwrap()
            .to_bytes();
        let rng = &mut self.rng;
        self.members[to]
            .sessions
            .get_mut(&from)
            .unwrap()
            .decrypt_bytes(&wire, rng)
            .unwrap()
    }

    fn group(&mut self, i: usize) -> &mut Group {
        self.members[i].group.as_mut().unwrap()
    }

    /// Member `i` sends `text`; a new sender key goes to every other current member over the
    /// pairwise sessions; every current member decrypts.
    fn send_and_check(&mut self, i: usize, text: &[u8]) -> Vec<u8> {
        let sent = {
            let rng = &mut self.rng;
            self.members[i]
                .group
                .as_mut()
                .unwrap()
                .encrypt(text, NOW, rng)
                .unwrap()
        };
        let recipients: Vec<usize> = self
            .current_members()
            .into_iter()
            .filter(|j| *j != i)
            .collect();
        if let Some(d) = &sent.distribution {
            for &j in &recipients {
                let got = self.pairwise(i, j, d);
                let from = *self.members[i].id.public();
                self.group(j).process_distribution(&from, &got).unwrap();
            }
        }
        for &j in &recipients {
            let p = self.group(j).decrypt(&sent.message).unwrap();
            assert_eq!(p.plaintext, text);
        }
        sent.message
    }

    fn current_members(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|j| {
                self.members[*j]
                    .group
                    .as_ref()
                    .is_some_and(|g| g.is_member())
            })
            .collect()
    }
}

fn create(w: &mut World, n: usize, config: GroupConfig) {
    let others: Vec<_> = w.members[1..n]
        .iter()
        .map(|m| (*m.id.public(), Role::Member))
        .collect();
    let (g0, create) = Group::create(&w.members[0].id, &others, config, &mut w.rng).unwrap();
    w.members[0].group = Some(g0);
    for m in &mut w.members[1..n] {
        m.group = Some(Group::from_create(m.id.public(), &create, config).unwrap());
    }
}

#[test]
fn two_hundred_fifty_six_members() {
    let mut w = World::new(257, 1);
    create(&mut w, 256, GroupConfig::default());
    assert_eq!(w.group(0).membership().len(), 256);

    // Several members send; everyone else reads every message.
    for sender in [0, 17, 255] {
        w.send_and_check(sender, format!("hello from {sender}").as_bytes());
    }
    let before_removal = w.send_and_check(17, b"second message from 17");

    // The admin removes member 200; every member applies the change.
    let admin = IdentityKeyPair::from_seed(&w.members[0].id.seed());
    let removed = *w.members[200].id.public();
    let remove = w.group(0).remove(&admin, &removed).unwrap();
    for j in 1..256 {
        w.group(j).apply(&remove).unwrap();
    }
    assert!(!w.group(200).is_member());
    // Senders rotate; the removed member reads none of it.
    let after_17 = w.send_and_check(17, b"after the removal");
    assert_eq!(
        w.group(200).decrypt(&after_17).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
    let after_0 = w.send_and_check(0, b"admin after the removal");
    assert_eq!(
        w.group(200).decrypt(&after_0).unwrap_err(),
        GroupDecryptError::UnknownChain
    );

    // The admin adds member 256; every member applies; the new member joins from the info.
    let newcomer = *w.members[256].id.public();
    let (add, info) = w.group(0).add(&admin, &newcomer, Role::Member).unwrap();
    for j in 1..256 {
        w.group(j).apply(&add).unwrap();
    }
    let info = w.pairwise(0, 256, &info);
    let admin_pub = *admin.public();
    w.members[256].group =
        Some(Group::join(&newcomer, &info, &admin_pub, GroupConfig::default()).unwrap());
    // Members that have a sender key hand over its current state.
    for j in w.current_members() {
        if j == 256 {
            continue;
        }
        if let Some(d) = w.group(j).sender_key_distribution() {
            let got = w.pairwise(j, 256, &d);
            let from = *w.members[j].id.public();
            w.group(256).process_distribution(&from, &got).unwrap();
        }
    }
    // The newcomer reads what follows, and nothing from before it joined.
    w.send_and_check(17, b"welcome");
    assert_eq!(
        w.group(256).decrypt(&after_17).unwrap_err(),
        GroupDecryptError::KeyUnavailable
    );
    assert_eq!(
        w.group(256).decrypt(&before_removal).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
    w.send_and_check(256, b"thanks");
    // Everyone converged on the same membership.
    let head = *w.group(0).membership().head();
    for j in w.current_members() {
        assert_eq!(w.group(j).membership().head(), &head);
        assert_eq!(w.group(j).membership().len(), 256);
    }
    // The default limit holds: a 257th member is refused.
    let extra = IdentityKeyPair::generate(&mut w.rng);
    assert_eq!(
        w.group(0)
            .add(&admin, extra.public(), Role::Member)
            .unwrap_err(),
        InvalidChange::GroupFull { max: 256 }.into()
    );
}

#[test]
fn one_thousand_twenty_four_members_with_the_limit_raised() {
    let config = GroupConfig {
        max_members: 1024,
        ..GroupConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(2);
    let ids: Vec<_> = (0..1024)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let others: Vec<_> = ids[1..]
        .iter()
        .map(|i| (*i.public(), Role::Member))
        .collect();
    // With the default limit, 1,024 members are refused.
    assert_eq!(
        Group::create(&ids[0], &others, GroupConfig::default(), &mut rng).unwrap_err(),
        InvalidChange::GroupFull { max: 256 }.into()
    );
    let (mut g0, create) = Group::create(&ids[0], &others, config, &mut rng).unwrap();
    let mut groups: Vec<Group> = ids[1..]
        .iter()
        .map(|i| Group::from_create(i.public(), &create, config).unwrap())
        .collect();
    let sent = g0.encrypt(b"to 1023 others", NOW, &mut rng).unwrap();
    let dist = sent.distribution.unwrap();
    for g in &mut groups {
        g.process_distribution(ids[0].public(), &dist).unwrap();
        assert_eq!(
            g.decrypt(&sent.message).unwrap().plaintext,
            b"to 1023 others"
        );
    }
    let admin = IdentityKeyPair::from_seed(&ids[0].seed());
    let remove = g0.remove(&admin, ids[1023].public()).unwrap();
    for g in &mut groups {
        g.apply(&remove).unwrap();
    }
    assert_eq!(g0.membership().len(), 1023);
    let again = g0.encrypt(b"after", NOW, &mut rng).unwrap();
    assert!(again.distribution.is_some());
    assert_eq!(
        groups[1022].decrypt(&again.message).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
}
