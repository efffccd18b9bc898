//! Group behaviour: membership changes and their typed errors, sender-key errors, limits at
//! both sides of their boundaries, rotation, state at rest, and secret hygiene. Every refused
//! operation is checked to leave the state byte-for-byte unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hush_crypto::{IdentityKeyPair, StorageKey};
use hush_groups::{
    ControlError, DistributionError, Group, GroupConfig, GroupDecryptError, GroupEncryptError,
    InvalidChange, MembershipChange, Role, RotationPolicy,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const NOW: u64 = 1_000_000;

struct World {
    rng: StdRng,
    ids: Vec<IdentityKeyPair>,
    groups: Vec<Group>,
}

/// Member 0 creates a group with members 1..n (all plain members).
fn world(n: usize, config: GroupConfig, seed: u64) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<_> = (0..n)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let others: Vec<_> = ids[1..]
        .iter()
        .map(|i| (*i.public(), Role::Member))
        .collect();
    let (g0, create) = Group::create(&ids[0], &others, config, &mut rng).unwrap();
    let mut groups = vec![g0];
    for id in &ids[1..] {
        groups.push(Group::from_create(id.public(), &create, config).unwrap());
    }
    World { rng, ids, groups }
}

impl World {
    /// Member `i` sends; its distribution (if any) reaches every current member.
    fn send(&mut self, i: usize, text: &[u8]) -> Vec<u8> {
        let sent = self.groups[i].encrypt(text, NOW, &mut self.rng).unwrap();
        if let Some(d) = &sent.distribution {
            for j in 0..self.groups.len() {
                if j != i
                    && self.groups[j].is_member()
                    && self.groups[i]
                        .membership()
                        .role(self.ids[j].public())
                        .is_some()
                {
                    self.groups[j]
                        .process_distribution(self.ids[i].public(), d)
                        .unwrap();
                }
            }
        }
        sent.message
    }

    fn apply_all(&mut self, except: usize, control: &[u8]) {
        for j in 0..self.groups.len() {
            if j != except {
                self.groups[j].apply(control).unwrap();
            }
        }
    }
}

fn unchanged<T: std::fmt::Debug, E: std::fmt::Debug + PartialEq>(
    g: &mut Group,
    expected: E,
    f: impl FnOnce(&mut Group) -> Result<T, E>,
) {
    let before = g.to_bytes();
    assert_eq!(f(g).unwrap_err(), expected);
    assert_eq!(
        *before,
        *g.to_bytes(),
        "state changed by a refused operation"
    );
}

#[test]
fn messages_reach_every_member() {
    let mut w = world(4, GroupConfig::default(), 1);
    for sender in 0..4 {
        let m = w.send(sender, format!("from {sender}").as_bytes());
        for r in 0..4 {
            if r != sender {
                let p = w.groups[r].decrypt(&m).unwrap();
                assert_eq!(p.plaintext, format!("from {sender}").as_bytes());
                assert_eq!(&p.sender, w.ids[sender].public());
            }
        }
    }
}

#[test]
fn decrypt_errors_leave_state_unchanged() {
    let mut w = world(3, GroupConfig::default(), 2);
    let m = w.send(1, b"hi");
    w.groups[0].decrypt(&m).unwrap();
    // Duplicate.
    unchanged(&mut w.groups[0], GroupDecryptError::Duplicate, |g| {
        g.decrypt(&m)
    });
    // Bad signature: flip a bit in the signature (last byte of the message).
    let mut bad = m.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    unchanged(&mut w.groups[2], GroupDecryptError::BadSignature, |g| {
        g.decrypt(&bad)
    });
    // Tampered content (the ciphertext) also fails the signature.
    let mut bad = m.clone();
    let at = bad.len() - 70;
    bad[at] ^= 1;
    unchanged(&mut w.groups[2], GroupDecryptError::BadSignature, |g| {
        g.decrypt(&bad)
    });
    // From ourselves.
    unchanged(&mut w.groups[1], GroupDecryptError::FromSelf, |g| {
        g.decrypt(&m)
    });
    // Unknown chain: member 2 never distributed a key to anyone (we drop it from 0's view).
    let sent = w.groups[2].encrypt(b"x", NOW, &mut w.rng).unwrap();
    unchanged(&mut w.groups[0], GroupDecryptError::UnknownChain, |g| {
        g.decrypt(&sent.message)
    });
    // A message for another group.
    let mut other = world(2, GroupConfig::default(), 3);
    let om = other.send(0, b"elsewhere");
    unchanged(&mut w.groups[0], GroupDecryptError::WrongGroup, |g| {
        g.decrypt(&om)
    });
    // Garbage.
    assert!(matches!(
        w.groups[0].decrypt(&[1, 2, 3]),
        Err(GroupDecryptError::Decode(_))
    ));
    // Still works afterwards.
    let m2 = w.send(1, b"again");
    assert_eq!(w.groups[0].decrypt(&m2).unwrap().plaintext, b"again");
    assert_eq!(w.groups[2].decrypt(&m2).unwrap().plaintext, b"again");
}

#[test]
fn non_member_removed_member_and_future_epoch() {
    let mut w = world(3, GroupConfig::default(), 4);
    // A stranger's group message (its own group with the same... different group id) aside,
    // a member of a *different* group cannot reach ours: WrongGroup. Here: removal.
    let before_removal = w.send(2, b"before");
    w.groups[0].decrypt(&before_removal).unwrap();
    let remove = w.groups[0]
        .remove(&w.ids[0].clone_for_test(), w.ids[2].public())
        .unwrap();
    w.apply_all(0, &remove);
    // Member 2 still sends with its old chain: refused as a removed member, everywhere.
    let after = w.groups[2].encrypt(b"after", NOW, &mut w.rng);
    assert_eq!(after.unwrap_err(), GroupEncryptError::NotAMember);
    unchanged(&mut w.groups[1], GroupDecryptError::RemovedMember, |g| {
        g.decrypt(&before_removal)
    });
    // A distribution from the removed member is refused too.
    let d = w.groups[1].sender_key_distribution();
    assert!(d.is_none(), "rotation pending after a removal");
    // Add a new member 3 at epoch 2; a member still at epoch 1 sees its traffic as future.
    let new_id = IdentityKeyPair::generate(&mut w.rng);
    let admin = w.ids[0].clone_for_test();
    let (add, info) = w.groups[0]
        .add(&admin, new_id.public(), Role::Member)
        .unwrap();
    let mut newbie = Group::join(
        new_id.public(),
        &info,
        w.ids[0].public(),
        GroupConfig::default(),
    )
    .unwrap();
    let sent = newbie.encrypt(b"hello", NOW, &mut w.rng).unwrap();
    unchanged(
        &mut w.groups[1],
        DistributionError::FromFutureEpoch { epoch: 2 },
        |g| g.process_distribution(new_id.public(), sent.distribution.as_ref().unwrap()),
    );
    unchanged(
        &mut w.groups[1],
        GroupDecryptError::FromFutureEpoch { epoch: 2 },
        |g| g.decrypt(&sent.message),
    );
    w.groups[1].apply(&add).unwrap();
    w.groups[1]
        .process_distribution(new_id.public(), sent.distribution.as_ref().unwrap())
        .unwrap();
    assert_eq!(
        w.groups[1].decrypt(&sent.message).unwrap().plaintext,
        b"hello"
    );
    // A stranger who is not and never was a member.
    let stranger = IdentityKeyPair::generate(&mut w.rng);
    let d = newbie.sender_key_distribution().unwrap();
    unchanged(&mut w.groups[1], DistributionError::NotAMember, |g| {
        g.process_distribution(stranger.public(), &d)
    });
    unchanged(&mut w.groups[1], DistributionError::Duplicate, |g| {
        g.process_distribution(new_id.public(), &d)
    });
    unchanged(&mut newbie, DistributionError::FromSelf, |g| {
        g.process_distribution(new_id.public(), &d)
    });
    unchanged(&mut w.groups[1], DistributionError::RemovedMember, |g| {
        g.process_distribution(w.ids[2].public(), &d)
    });
}

trait CloneForTest {
    fn clone_for_test(&self) -> IdentityKeyPair;
}
impl CloneForTest for IdentityKeyPair {
    fn clone_for_test(&self) -> IdentityKeyPair {
        IdentityKeyPair::from_seed(&self.seed())
    }
}

#[test]
fn control_errors_leave_state_unchanged() {
    let mut w = world(4, GroupConfig::default(), 5);
    let admin = w.ids[0].clone_for_test();
    let m1 = w.ids[1].clone_for_test();
    let stranger = IdentityKeyPair::generate(&mut w.rng);
    let snapshot_at_0 = w.groups[0].to_bytes();
    // Epoch 1: add the stranger. Epoch 2: promote member 1.
    let (add, _) = w.groups[0]
        .add(&admin, stranger.public(), Role::Member)
        .unwrap();
    let promote = w.groups[0].promote(&admin, w.ids[1].public()).unwrap();
    // Early: epoch 2 before epoch 1.
    unchanged(
        &mut w.groups[2],
        ControlError::FromFuture {
            epoch: 2,
            current: 0,
        },
        |g| g.apply(&promote),
    );
    w.groups[2].apply(&add).unwrap();
    w.groups[2].apply(&promote).unwrap();
    // Replayed.
    unchanged(&mut w.groups[2], ControlError::Replayed { epoch: 2 }, |g| {
        g.apply(&promote)
    });
    unchanged(&mut w.groups[2], ControlError::Replayed { epoch: 1 }, |g| {
        g.apply(&add)
    });
    // Conflicting: member 1's view (still at epoch 0) lets it — it is not an admin there — so
    // use a second admin: after promote, member 1 is admin at epoch 2 in its own view.
    w.groups[1].apply(&add).unwrap();
    w.groups[1].apply(&promote).unwrap();
    w.groups[3].apply(&add).unwrap();
    w.groups[3].apply(&promote).unwrap();
    let a = w.groups[0].remove(&admin, w.ids[3].public()).unwrap(); // epoch 3 by admin 0
    let b = w.groups[1].demote(&m1, w.ids[0].public()).unwrap(); // epoch 3 by admin 1
    w.groups[2].apply(&a).unwrap();
    unchanged(
        &mut w.groups[2],
        ControlError::Conflicting { epoch: 3 },
        |g| g.apply(&b),
    );
    // Stale: a different change for epoch 1, built from a snapshot of the admin at epoch 0.
    let stale = {
        let mut fork = Group::from_bytes(&snapshot_at_0).unwrap();
        fork.add(
            &admin,
            IdentityKeyPair::generate(&mut w.rng).public(),
            Role::Member,
        )
        .unwrap()
        .0
    };
    unchanged(
        &mut w.groups[2],
        ControlError::Stale {
            epoch: 1,
            current: 3,
        },
        |g| g.apply(&stale),
    );
    // A change for another group.
    let mut rng = StdRng::seed_from_u64(99);
    let (mut elsewhere, _) = Group::create(&admin, &[], GroupConfig::default(), &mut rng).unwrap();
    let foreign = elsewhere.add(&admin, m1.public(), Role::Member).unwrap().0;
    unchanged(&mut w.groups[2], ControlError::WrongGroup, |g| {
        g.apply(&foreign)
    });
    // Unauthorised: plain member 2 tries to add (in its own view it is not an admin).
    let mut g2 = Group::from_bytes(&w.groups[2].to_bytes()).unwrap();
    let m2 = w.ids[2].clone_for_test();
    assert_eq!(
        g2.add(
            &m2,
            IdentityKeyPair::generate(&mut w.rng).public(),
            Role::Member
        )
        .unwrap_err(),
        ControlError::Unauthorized
    );
    assert_eq!(*g2.to_bytes(), *w.groups[2].to_bytes());
    // Bad signature.
    let mut bad = a.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    unchanged(&mut w.groups[3], ControlError::BadSignature, |g| {
        g.apply(&bad)
    });
    // A create cannot be applied to an existing group (here: another group's create).
    let mut rng = StdRng::seed_from_u64(7);
    let (_, create) = Group::create(&admin, &[], GroupConfig::default(), &mut rng).unwrap();
    unchanged(&mut w.groups[3], ControlError::WrongGroup, |g| {
        g.apply(&create)
    });
}

#[test]
fn invalid_changes() {
    let mut w = world(3, GroupConfig::default(), 6);
    let admin = w.ids[0].clone_for_test();
    let g = &mut w.groups[0];
    let m1 = *w.ids[1].public();
    let before = g.to_bytes();
    assert_eq!(
        g.add(&admin, &m1, Role::Member).unwrap_err(),
        InvalidChange::AlreadyMember.into()
    );
    let stranger = IdentityKeyPair::generate(&mut w.rng);
    assert_eq!(
        g.remove(&admin, stranger.public()).unwrap_err(),
        InvalidChange::NotAMember.into()
    );
    assert_eq!(
        g.remove(&admin, admin.public()).unwrap_err(),
        InvalidChange::RemoveSelf.into()
    );
    assert_eq!(
        g.leave(&admin).unwrap_err(),
        InvalidChange::LastAdmin.into()
    );
    assert_eq!(
        g.demote(&admin, admin.public()).unwrap_err(),
        InvalidChange::LastAdmin.into()
    );
    assert_eq!(
        g.demote(&admin, &m1).unwrap_err(),
        InvalidChange::RoleUnchanged.into()
    );
    assert_eq!(*before, *g.to_bytes());
    g.promote(&admin, &m1).unwrap();
    assert_eq!(
        g.promote(&admin, &m1).unwrap_err(),
        InvalidChange::RoleUnchanged.into()
    );
    // With a second admin, the first may leave.
    let leave = g.leave(&admin).unwrap();
    assert!(!g.is_member());
    assert_eq!(w.groups[0].membership().epoch(), 2);
    // Member 1 needs the promote change; the same world rebuilt from the same seed gives the
    // identical signed change (Ed25519 signatures are deterministic).
    let promote = {
        let mut same = world(3, GroupConfig::default(), 6);
        same.groups[0].promote(&admin, &m1).unwrap()
    };
    w.groups[1].apply(&promote).unwrap();
    assert_eq!(
        w.groups[1].apply(&leave).unwrap(),
        MembershipChange::Left(*admin.public())
    );
    assert_eq!(w.groups[1].membership().role(&m1), Some(Role::Admin));
    assert_eq!(w.groups[1].membership().len(), 2);
}

#[test]
fn group_size_limit_boundary() {
    let config = GroupConfig {
        max_members: 5,
        ..GroupConfig::default()
    };
    // Exactly at the limit: fine.
    let mut w = world(5, config, 7);
    assert_eq!(w.groups[0].membership().len(), 5);
    // One more: refused, unchanged.
    let admin = w.ids[0].clone_for_test();
    let extra = IdentityKeyPair::generate(&mut w.rng);
    let before = w.groups[0].to_bytes();
    assert_eq!(
        w.groups[0]
            .add(&admin, extra.public(), Role::Member)
            .unwrap_err(),
        InvalidChange::GroupFull { max: 5 }.into()
    );
    assert_eq!(*before, *w.groups[0].to_bytes());
    // Creating with max + 1 members is refused too.
    let mut rng = StdRng::seed_from_u64(8);
    let six: Vec<_> = (0..5)
        .map(|_| (*IdentityKeyPair::generate(&mut rng).public(), Role::Member))
        .collect();
    assert_eq!(
        Group::create(&admin, &six, config, &mut rng).unwrap_err(),
        InvalidChange::GroupFull { max: 5 }.into()
    );
}

#[test]
fn forward_jump_limit_boundary() {
    let config = GroupConfig {
        max_forward_jump: 10,
        ..GroupConfig::default()
    };
    let mut w = world(2, config, 9);
    let msgs: Vec<_> = (0..12u8).map(|i| w.send(0, &[i])).collect();
    // Iteration 11 is 11 ahead of 0: refused.
    unchanged(
        &mut w.groups[1],
        GroupDecryptError::TooFarAhead { gap: 11, max: 10 },
        |g| g.decrypt(&msgs[11]),
    );
    // Iteration 10 is exactly 10 ahead: accepted.
    assert_eq!(w.groups[1].decrypt(&msgs[10]).unwrap().plaintext, [10]);
    assert_eq!(w.groups[1].skipped_keys(w.ids[0].public()), 10);
    assert_eq!(w.groups[1].decrypt(&msgs[3]).unwrap().plaintext, [3]);
}

#[test]
fn skipped_keys_limit_boundary() {
    let config = GroupConfig {
        max_skipped_keys: 5,
        ..GroupConfig::default()
    };
    let mut w = world(2, config, 10);
    let msgs: Vec<_> = (0..8u8).map(|i| w.send(0, &[i])).collect();
    // Skip exactly 5: all kept.
    w.groups[1].decrypt(&msgs[5]).unwrap();
    assert_eq!(w.groups[1].skipped_keys(w.ids[0].public()), 5);
    let mut at_limit = Group::from_bytes(&w.groups[1].to_bytes()).unwrap();
    assert_eq!(at_limit.decrypt(&msgs[0]).unwrap().plaintext, [0]);
    // One more skipped key evicts the oldest.
    w.groups[1].decrypt(&msgs[7]).unwrap();
    assert_eq!(w.groups[1].skipped_keys(w.ids[0].public()), 5);
    unchanged(&mut w.groups[1], GroupDecryptError::Duplicate, |g| {
        g.decrypt(&msgs[0])
    });
    assert_eq!(w.groups[1].decrypt(&msgs[1]).unwrap().plaintext, [1]);
    assert_eq!(w.groups[1].decrypt(&msgs[6]).unwrap().plaintext, [6]);
}

#[test]
fn old_chains_limit_boundary() {
    let config = GroupConfig {
        max_old_chains: 2,
        rotation: RotationPolicy {
            after_messages: Some(2),
            after_seconds: None,
        },
        ..GroupConfig::default()
    };
    let mut w = world(2, config, 11);
    // Each chain carries two messages; hold back the second message of each chain.
    let mut held = vec![];
    for _ in 0..4 {
        let first = w.send(0, b"first");
        held.push(w.send(0, b"held"));
        w.groups[1].decrypt(&first).unwrap();
    }
    // Four chains distributed; newest + 2 old are kept.
    assert_eq!(w.groups[1].chains(w.ids[0].public()), 3);
    unchanged(&mut w.groups[1], GroupDecryptError::UnknownChain, |g| {
        g.decrypt(&held[0])
    });
    // The oldest kept chain (the second) still works.
    assert_eq!(w.groups[1].decrypt(&held[1]).unwrap().plaintext, b"held");
    assert_eq!(w.groups[1].decrypt(&held[3]).unwrap().plaintext, b"held");
}

#[test]
fn rotation_policy_by_count_and_time() {
    let config = GroupConfig {
        rotation: RotationPolicy {
            after_messages: Some(3),
            after_seconds: Some(60),
        },
        ..GroupConfig::default()
    };
    let mut w = world(2, config, 12);
    let g = &mut w.groups[0];
    let rotations = |sends: &[u64], g: &mut Group, rng: &mut StdRng| -> Vec<bool> {
        sends
            .iter()
            .map(|now| {
                // Asking first predicts exactly what the send does, and changes nothing.
                let predicted = g.needs_rotation(*now);
                let before = g.to_bytes();
                assert_eq!(g.needs_rotation(*now), predicted);
                assert!(g.to_bytes() == before);
                let rotated = g.encrypt(b"m", *now, rng).unwrap().distribution.is_some();
                assert_eq!(rotated, predicted, "needs_rotation at {now}");
                rotated
            })
            .collect()
    };
    // First send creates the key; the fourth (after 3 messages) rotates.
    assert_eq!(
        rotations(&[NOW, NOW, NOW, NOW], g, &mut w.rng),
        [true, false, false, true]
    );
    // 59 seconds later: no rotation; 60: rotation.
    assert_eq!(
        rotations(&[NOW + 59, NOW + 60], g, &mut w.rng),
        [false, true]
    );
}

#[test]
fn a_create_counts_only_from_its_creator() {
    let mut rng = StdRng::seed_from_u64(19);
    let ids: Vec<_> = (0..3)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let others = [
        (*ids[1].public(), Role::Member),
        (*ids[2].public(), Role::Member),
    ];
    let (_, create) = Group::create(&ids[0], &others, GroupConfig::default(), &mut rng).unwrap();
    let config = GroupConfig::default();
    assert!(Group::from_create_by(ids[1].public(), &create, ids[0].public(), config).is_ok());
    assert_eq!(
        Group::from_create_by(ids[1].public(), &create, ids[2].public(), config).unwrap_err(),
        ControlError::NotFromCreator
    );
}

#[test]
fn a_message_from_before_the_latest_removal_is_flagged() {
    // 0 admin, 1 kept in the dark by the relay, 2 up to date, 3 removed.
    let mut w = world(4, GroupConfig::default(), 17);
    let before = w.send(1, b"before");
    assert_eq!(
        w.groups[2].decrypt(&before).unwrap().sent_before_removal,
        None
    );
    let admin = w.ids[0].clone_for_test();
    let remove = w.groups[0].remove(&admin, w.ids[3].public()).unwrap();
    // The relay withholds the removal from member 1.
    for j in [2, 3] {
        w.groups[j].apply(&remove).unwrap();
    }
    let epoch = w.groups[2].epoch();
    // Member 1 still sends on the chain member 3 holds: member 2 reads it, flagged with
    // the removal's epoch; member 3 can read it too, which is what the flag warns of.
    let stale = w.groups[1].encrypt(b"stale", NOW, &mut w.rng).unwrap();
    assert!(stale.distribution.is_none());
    let opened = w.groups[2].decrypt(&stale.message).unwrap();
    assert_eq!(opened.plaintext, b"stale");
    assert_eq!(opened.sent_before_removal, Some(epoch));
    // Once member 1 applies the removal it rotates, and its messages are no longer flagged.
    w.groups[1].apply(&remove).unwrap();
    let fresh = w.send(1, b"fresh");
    let opened = w.groups[2].decrypt(&fresh).unwrap();
    assert_eq!(opened.sent_before_removal, None);
    assert_eq!(
        w.groups[3].decrypt(&fresh).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
}

#[test]
fn removal_rotates_and_locks_out_the_removed_member() {
    let mut w = world(3, GroupConfig::default(), 13);
    let m = w.send(0, b"everyone");
    assert_eq!(w.groups[2].decrypt(&m).unwrap().plaintext, b"everyone");
    let admin = w.ids[0].clone_for_test();
    let remove = w.groups[0].remove(&admin, w.ids[2].public()).unwrap();
    w.apply_all(0, &remove);
    assert!(!w.groups[2].is_member());
    // Member 1's next send rotates too, and it can tell before encrypting; a member who is
    // out never needs one.
    assert!(w.groups[1].needs_rotation(NOW));
    assert!(!w.groups[2].needs_rotation(NOW));
    let sent = w.groups[1].encrypt(b"after", NOW, &mut w.rng).unwrap();
    assert!(sent.distribution.is_some());
    w.groups[0]
        .process_distribution(w.ids[1].public(), sent.distribution.as_ref().unwrap())
        .unwrap();
    assert_eq!(
        w.groups[0].decrypt(&sent.message).unwrap().plaintext,
        b"after"
    );
    // The removed member has none of the new chains.
    assert_eq!(
        w.groups[2].decrypt(&sent.message).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
    let from_admin = w.groups[0]
        .encrypt(b"admin after", NOW, &mut w.rng)
        .unwrap();
    assert!(from_admin.distribution.is_some());
    assert_eq!(
        w.groups[2].decrypt(&from_admin.message).unwrap_err(),
        GroupDecryptError::UnknownChain
    );
}

#[test]
fn sealed_state_round_trip() {
    let mut w = world(3, GroupConfig::default(), 14);
    let msgs: Vec<_> = (0..3u8).map(|i| w.send(0, &[i])).collect();
    w.groups[1].decrypt(&msgs[2]).unwrap();
    let key = StorageKey::generate(&mut w.rng);
    let sealed = w.groups[1].seal(&key, &mut w.rng).unwrap();
    let mut restored = Group::unseal(&key, &sealed).unwrap();
    assert_eq!(*restored.to_bytes(), *w.groups[1].to_bytes());
    assert_eq!(restored.decrypt(&msgs[0]).unwrap().plaintext, [0]);
    let sealed0 = w.groups[0].seal(&key, &mut w.rng).unwrap();
    let mut sender = Group::unseal(&key, &sealed0).unwrap();
    let next = sender.encrypt(b"continues", NOW, &mut w.rng).unwrap();
    assert!(next.distribution.is_none());
    assert_eq!(
        restored.decrypt(&next.message).unwrap().plaintext,
        b"continues"
    );
    let other = StorageKey::generate(&mut w.rng);
    assert!(Group::unseal(&other, &sealed).is_err());
    // A session blob cannot be opened as a group blob (labels differ).
    let session_like = key
        .seal(b"session", &w.groups[1].to_bytes(), &mut w.rng)
        .unwrap();
    assert!(Group::unseal(&key, &session_like).is_err());
}

#[test]
fn debug_holds_no_secrets() {
    let mut w = world(2, GroupConfig::default(), 15);
    let sent = w.groups[0].encrypt(b"x", NOW, &mut w.rng).unwrap();
    let dist = sent.distribution.unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // The chain key is bytes 2.. of field 6 in the distribution; check no 16-byte window of
    // the distribution or the state's secrets appears in Debug output.
    let debug = format!("{:?}", w.groups[0]);
    let state = w.groups[0].to_bytes();
    for window in state.windows(16).step_by(4) {
        let wh = hex(window);
        if debug.contains(&wh) {
            assert!(
                hex(w.ids[0].public().as_bytes()).contains(&wh),
                "Debug leaks {wh}"
            );
        }
    }
    let sent_dbg = format!(
        "{:?}",
        hush_groups::GroupSend {
            distribution: Some(dist),
            message: vec![]
        }
    );
    assert!(!sent_dbg.contains("chain_key"));
}

#[test]
fn message_from_a_never_member_is_refused() {
    let mut w = world(3, GroupConfig::default(), 16);
    let admin = w.ids[0].clone_for_test();
    let snapshot = w.groups[0].to_bytes();
    // The real group moves to epoch 1 by promoting member 1.
    let promote = w.groups[0].promote(&admin, w.ids[1].public()).unwrap();
    w.groups[2].apply(&promote).unwrap();
    // A fork of the admin's state (same group id) adds a stranger at epoch 1 instead.
    let stranger = IdentityKeyPair::generate(&mut w.rng);
    let mut fork = Group::from_bytes(&snapshot).unwrap();
    let (_, info) = fork.add(&admin, stranger.public(), Role::Member).unwrap();
    let mut s = Group::join(
        stranger.public(),
        &info,
        admin.public(),
        GroupConfig::default(),
    )
    .unwrap();
    let sent = s.encrypt(b"let me in", NOW, &mut w.rng).unwrap();
    // Same group id, epoch not ahead of ours, sender never a member: NotAMember.
    unchanged(&mut w.groups[2], GroupDecryptError::NotAMember, |g| {
        g.decrypt(&sent.message)
    });
    unchanged(&mut w.groups[2], DistributionError::NotAMember, |g| {
        g.process_distribution(stranger.public(), sent.distribution.as_ref().unwrap())
    });
}

#[test]
fn member_lists_must_be_sorted_and_unique() {
    let mut rng = StdRng::seed_from_u64(17);
    let ids: Vec<_> = (0..3)
        .map(|_| IdentityKeyPair::generate(&mut rng))
        .collect();
    let (_, create) = Group::create(
        &ids[0],
        &[
            (*ids[1].public(), Role::Member),
            (*ids[2].public(), Role::Member),
        ],
        GroupConfig::default(),
        &mut rng,
    )
    .unwrap();
    // Swap two member entries inside the signed content and re-sign: order is checked.
    let mut members: Vec<_> = ids.iter().map(|i| i.public().to_bytes()).collect();
    members.sort();
    assert!(Group::from_create(ids[1].public(), &create, GroupConfig::default()).is_ok());
    // A hand-made create with the members reversed, validly signed by the admin.
    let reversed: Vec<(hush_crypto::IdentityPublicKey, Role)> = members
        .iter()
        .rev()
        .map(|k| {
            let key = hush_crypto::IdentityPublicKey::from_bytes(k).unwrap();
            (
                key,
                if &key == ids[0].public() {
                    Role::Admin
                } else {
                    Role::Member
                },
            )
        })
        .collect();
    let mut content = vec![0x08, 0x01, 0x12, 0x20];
    content.extend_from_slice(&[0x77; 32]);
    content.extend_from_slice(&[0x22, 0x20]);
    content.extend_from_slice(&[0; 32]);
    content.extend_from_slice(&[0x2a, 0x20]);
    content.extend_from_slice(ids[0].public().as_bytes());
    let mut body = vec![];
    for (k, r) in &reversed {
        let mut m = vec![0x0a, 0x20];
        m.extend_from_slice(k.as_bytes());
        if *r == Role::Admin {
            m.extend_from_slice(&[0x10, 0x01]);
        }
        body.push(0x0a);
        body.push(m.len() as u8);
        body.extend_from_slice(&m);
    }
    content.push(0x32);
    content.push(body.len() as u8);
    content.extend_from_slice(&body);
    let mut signed = b"hush group control v1".to_vec();
    signed.extend_from_slice(&content);
    let sig = ids[0].sign(&signed);
    let mut msg = vec![0x0a, content.len() as u8, 0x01];
    msg[1] = (content.len() as u8 & 0x7f) | 0x80;
    msg[2] = (content.len() >> 7) as u8;
    msg.extend_from_slice(&content);
    msg.extend_from_slice(&[0x12, 0x40]);
    msg.extend_from_slice(sig.as_bytes());
    assert_eq!(
        Group::from_create(ids[1].public(), &msg, GroupConfig::default()).unwrap_err(),
        InvalidChange::UnsortedMembers.into()
    );
}
