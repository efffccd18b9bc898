//! Session behaviour: set-up, ordering, failures that leave no trace, limits at their
//! boundaries, identity changes, state at rest, and secret hygiene.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{established, ratcheted, rng};
use hush_crypto::{IdentityKeyPair, Signature, StorageKey};
use hush_sessions::limits::{
    MAX_MESSAGE_GAP, MAX_PLAINTEXT_LEN, MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS,
};
use hush_sessions::{
    AcceptError, BundleError, DecodeError, DecryptError, EncryptError, InitError, OneTimePrekey,
    PrekeyBundle, Session, SessionMessage, SignedPrekey, StateError,
};

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn without_one_time_prekey() {
    let mut rng = rng(1);
    let a = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &b, &mut rng);
    let bundle =
        PrekeyBundle::from_bytes(&PrekeyBundle::new(b.public(), &spk, None).to_bytes()).unwrap();
    assert!(bundle.one_time_prekey().is_none());
    let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(m) = alice.encrypt(b"x").unwrap() else {
        panic!()
    };
    assert_eq!(m.one_time_prekey_id(), None);
    let (_, pt) = Session::accept(&b, &spk, None, &m, None, &mut rng).unwrap();
    assert_eq!(pt, b"x");
}

#[test]
fn prekey_messages_until_reply_then_ratchet_messages() {
    let mut p = established(2);
    assert!(p.alice.awaiting_reply());
    // Alice's second message is still a prekey message, and Bob's existing session takes it.
    let second = p.alice.encrypt(b"second").unwrap();
    assert!(matches!(second, SessionMessage::Prekey(_)));
    assert_eq!(p.bob.decrypt(&second, &mut p.rng).unwrap(), b"second");
    let reply = p.bob.encrypt(b"reply").unwrap();
    assert!(matches!(reply, SessionMessage::Ratchet(_)));
    p.alice.decrypt(&reply, &mut p.rng).unwrap();
    assert!(!p.alice.awaiting_reply());
    assert!(matches!(
        p.alice.encrypt(b"third").unwrap(),
        SessionMessage::Ratchet(_)
    ));
}

#[test]
fn many_messages_both_ways_out_of_order() {
    let mut p = ratcheted(3);
    for round in 0..5u8 {
        let from_a: Vec<_> = (0..4u8)
            .map(|i| (p.alice.encrypt(&[round, i]).unwrap().to_bytes(), [round, i]))
            .collect();
        let from_b: Vec<_> = (0..3u8)
            .map(|i| (p.bob.encrypt(&[i, round]).unwrap().to_bytes(), [i, round]))
            .collect();
        for (m, pt) in from_a.iter().rev() {
            assert_eq!(&p.bob.decrypt_bytes(m, &mut p.rng).unwrap(), pt);
        }
        for (m, pt) in [&from_b[1], &from_b[0], &from_b[2]] {
            assert_eq!(&p.alice.decrypt_bytes(m, &mut p.rng).unwrap(), pt);
        }
    }
    assert_eq!(p.alice.skipped_keys(), 0);
    assert_eq!(p.bob.skipped_keys(), 0);
}

#[test]
fn duplicate_is_reported_and_changes_nothing() {
    let mut p = ratcheted(4);
    let m = p.alice.encrypt(b"once").unwrap().to_bytes();
    assert_eq!(p.bob.decrypt_bytes(&m, &mut p.rng).unwrap(), b"once");
    let before = p.bob.to_bytes();
    assert_eq!(
        p.bob.decrypt_bytes(&m, &mut p.rng),
        Err(DecryptError::Duplicate)
    );
    assert_eq!(*before, *p.bob.to_bytes());
    // Also for a message that used a skipped key.
    let m1 = p.alice.encrypt(b"1").unwrap().to_bytes();
    let m2 = p.alice.encrypt(b"2").unwrap().to_bytes();
    p.bob.decrypt_bytes(&m2, &mut p.rng).unwrap();
    p.bob.decrypt_bytes(&m1, &mut p.rng).unwrap();
    let before = p.bob.to_bytes();
    assert_eq!(
        p.bob.decrypt_bytes(&m1, &mut p.rng),
        Err(DecryptError::Duplicate)
    );
    assert_eq!(*before, *p.bob.to_bytes());
}

#[test]
fn every_tampered_byte_is_rejected_without_trace() {
    let mut p = ratcheted(5);
    // A message that carries a DH ratchet step, and one on an existing chain.
    let step = p.bob.encrypt(b"ratchet step").unwrap().to_bytes();
    p.alice.decrypt_bytes(&step, &mut p.rng).unwrap();
    let _ = p.alice.encrypt(b"x").unwrap();
    let step = p
        .alice
        .encrypt(b"carries a new ratchet key")
        .unwrap()
        .to_bytes();
    let same_chain = p.alice.encrypt(b"same chain").unwrap().to_bytes();
    for m in [&step, &same_chain] {
        let before = p.bob.to_bytes();
        for i in 0..m.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = m.clone();
                bad[i] ^= flip;
                assert!(
                    p.bob.decrypt_bytes(&bad, &mut p.rng).is_err(),
                    "byte {i} flip {flip:#x}"
                );
                assert_eq!(*before, *p.bob.to_bytes(), "state changed by byte {i}");
            }
        }
        for len in 0..m.len() {
            assert!(p.bob.decrypt_bytes(&m[..len], &mut p.rng).is_err());
        }
        assert!(p.bob.decrypt_bytes(m, &mut p.rng).is_ok());
    }
}

#[test]
fn message_for_another_session_fails_authentication() {
    let mut p = ratcheted(6);
    let mut q = ratcheted(7);
    let m = q.alice.encrypt(b"for q").unwrap().to_bytes();
    let before = p.bob.to_bytes();
    assert_eq!(
        p.bob.decrypt_bytes(&m, &mut p.rng),
        Err(DecryptError::Authentication)
    );
    assert_eq!(*before, *p.bob.to_bytes());
    let _ = q.bob.decrypt_bytes(&m, &mut q.rng).unwrap();
}

#[test]
fn prekey_message_for_another_session_is_wrong_session() {
    let mut p = established(8);
    let q = established(9);
    let mut other = q.alice;
    let m = other.encrypt(b"x").unwrap();
    assert_eq!(
        p.bob.decrypt(&m, &mut p.rng),
        Err(DecryptError::WrongSession)
    );
}

/// SPEC §7.4: the initiator's own session takes no prekey message, not even its own first
/// message reflected back to it; nothing changes.
#[test]
fn the_initiator_refuses_its_own_prekey_message() {
    let mut p = established(26);
    let m = p.alice.encrypt(b"to bob").unwrap();
    assert!(matches!(m, SessionMessage::Prekey(_)));
    let before = p.alice.to_bytes();
    assert_eq!(
        p.alice.decrypt(&m, &mut p.rng),
        Err(DecryptError::WrongSession)
    );
    assert_eq!(*before, *p.alice.to_bytes());
}

#[test]
fn gap_limit_boundary_on_a_chain() {
    let mut p = ratcheted(10);
    let msgs: Vec<_> = (0..=MAX_MESSAGE_GAP + 1)
        .map(|_| p.alice.encrypt(b"m").unwrap().to_bytes())
        .collect();
    // Message number MAX+1 would skip MAX+1 keys: refused, state unchanged.
    let before = p.bob.to_bytes();
    assert_eq!(
        p.bob
            .decrypt_bytes(&msgs[MAX_MESSAGE_GAP as usize + 1], &mut p.rng),
        Err(DecryptError::TooFarAhead {
            gap: MAX_MESSAGE_GAP + 1,
            max: MAX_MESSAGE_GAP
        })
    );
    assert_eq!(*before, *p.bob.to_bytes());
    // Message number MAX skips exactly MAX keys: accepted.
    p.bob
        .decrypt_bytes(&msgs[MAX_MESSAGE_GAP as usize], &mut p.rng)
        .unwrap();
    assert_eq!(p.bob.skipped_keys(), MAX_MESSAGE_GAP as usize);
    p.bob.decrypt_bytes(&msgs[0], &mut p.rng).unwrap();
}

#[test]
fn gap_limit_boundary_on_previous_chain() {
    // PN forces the receiver to skip the rest of its current chain on a ratchet step.
    for (extra, ok) in [(MAX_MESSAGE_GAP, true), (MAX_MESSAGE_GAP + 1, false)] {
        let mut p = ratcheted(11);
        let first = p.alice.encrypt(b"seen").unwrap().to_bytes();
        p.bob.decrypt_bytes(&first, &mut p.rng).unwrap();
        for _ in 0..extra {
            let _ = p.alice.encrypt(b"lost").unwrap();
        }
        let reply = p.bob.encrypt(b"r").unwrap().to_bytes();
        p.alice.decrypt_bytes(&reply, &mut p.rng).unwrap();
        let stepped = p.alice.encrypt(b"new chain").unwrap().to_bytes();
        let r = p.bob.decrypt_bytes(&stepped, &mut p.rng);
        if ok {
            assert_eq!(r.unwrap(), b"new chain");
        } else {
            assert_eq!(
                r,
                Err(DecryptError::TooFarAhead {
                    gap: extra,
                    max: MAX_MESSAGE_GAP
                })
            );
        }
    }
}

#[test]
fn skipped_key_store_boundary_evicts_oldest() {
    let mut p = ratcheted(12);
    let msgs: Vec<_> = (0..2005)
        .map(|i: u32| p.alice.encrypt(&i.to_be_bytes()).unwrap().to_bytes())
        .collect();
    p.bob.decrypt_bytes(&msgs[1000], &mut p.rng).unwrap(); // skips 0..1000
    p.bob.decrypt_bytes(&msgs[2000], &mut p.rng).unwrap(); // skips 1001..2000
    p.bob.decrypt_bytes(&msgs[2002], &mut p.rng).unwrap(); // skips 2001
    assert_eq!(p.bob.skipped_keys(), MAX_SKIPPED_KEYS);
    // At the limit nothing was evicted: message 0 is still readable... after one more skip it is not.
    let probe = p.bob.to_bytes();
    let mut at_limit = Session::from_bytes(&probe).unwrap();
    assert_eq!(
        at_limit.decrypt_bytes(&msgs[0], &mut p.rng).unwrap(),
        0u32.to_be_bytes()
    );
    p.bob.decrypt_bytes(&msgs[2004], &mut p.rng).unwrap(); // skips 2003: one over
    assert_eq!(p.bob.skipped_keys(), MAX_SKIPPED_KEYS);
    assert_eq!(
        p.bob.decrypt_bytes(&msgs[0], &mut p.rng),
        Err(DecryptError::Duplicate)
    );
    assert_eq!(
        p.bob.decrypt_bytes(&msgs[1], &mut p.rng).unwrap(),
        1u32.to_be_bytes()
    );
    assert_eq!(
        p.bob.decrypt_bytes(&msgs[2003], &mut p.rng).unwrap(),
        2003u32.to_be_bytes()
    );
}

/// Returns Bob's session after Alice has used `chains` sending chains; `held` is the second
/// message of Alice's first chain, never delivered (nothing was skipped for it).
fn chains_with_held_message(seed: u64, chains: usize) -> (common::Pair, Vec<u8>) {
    let mut p = ratcheted(seed);
    let first = p.alice.encrypt(b"0").unwrap().to_bytes();
    let held = p.alice.encrypt(b"held").unwrap().to_bytes();
    p.bob.decrypt_bytes(&first, &mut p.rng).unwrap();
    for _ in 1..chains {
        let r = p.bob.encrypt(b"r").unwrap().to_bytes();
        p.alice.decrypt_bytes(&r, &mut p.rng).unwrap();
        // Send two so the first of each new chain makes PN=0 skips irrelevant for `held`.
        let m = p.alice.encrypt(b"a").unwrap().to_bytes();
        p.bob.decrypt_bytes(&m, &mut p.rng).unwrap();
    }
    (p, held)
}

#[test]
fn receiver_chain_limit_boundary() {
    // PN skipping stores `held`'s key when the next chain arrives, so to see the chain limit we
    // check the chain count, and that a held message beyond PN on an evicted chain fails.
    let (p, _) = chains_with_held_message(13, MAX_RECEIVER_CHAINS);
    assert_eq!(p.bob.receiving_chains(), MAX_RECEIVER_CHAINS);
    let (p, _) = chains_with_held_message(13, MAX_RECEIVER_CHAINS + 1);
    assert_eq!(p.bob.receiving_chains(), MAX_RECEIVER_CHAINS);

    // A chain still kept accepts a message past its index; a dropped chain does not.
    for (later_chains, ok) in [
        (MAX_RECEIVER_CHAINS - 1, true),
        (MAX_RECEIVER_CHAINS, false),
    ] {
        let mut p = ratcheted(14);
        let a0 = p.alice.encrypt(b"a0").unwrap().to_bytes();
        p.bob.decrypt_bytes(&a0, &mut p.rng).unwrap();
        // Snapshot Alice on chain 1, then move both sides forward.
        let alice_chain1 = Session::from_bytes(&p.alice.to_bytes()).unwrap();
        for _ in 0..later_chains {
            let r = p.bob.encrypt(b"r").unwrap().to_bytes();
            p.alice.decrypt_bytes(&r, &mut p.rng).unwrap();
            let m = p.alice.encrypt(b"a").unwrap().to_bytes();
            p.bob.decrypt_bytes(&m, &mut p.rng).unwrap();
        }
        // A message on chain 1 with a number Bob never skipped to (PN skipping stopped at 1).
        let mut forked = alice_chain1;
        let _ = forked.encrypt(b"n1").unwrap();
        let late = forked.encrypt(b"n2 on chain 1").unwrap().to_bytes();
        let r = p.bob.decrypt_bytes(&late, &mut p.rng);
        if ok {
            assert_eq!(r.unwrap(), b"n2 on chain 1");
        } else {
            assert_eq!(r, Err(DecryptError::Authentication));
        }
    }
}

#[test]
fn plaintext_limit_boundary() {
    let mut p = ratcheted(15);
    let big = vec![7u8; MAX_PLAINTEXT_LEN];
    let m = p.alice.encrypt(&big).unwrap().to_bytes();
    assert_eq!(p.bob.decrypt_bytes(&m, &mut p.rng).unwrap(), big);
    let too_big = vec![7u8; MAX_PLAINTEXT_LEN + 1];
    assert_eq!(
        p.alice.encrypt(&too_big).unwrap_err(),
        EncryptError::TooLarge {
            len: MAX_PLAINTEXT_LEN + 1,
            max: MAX_PLAINTEXT_LEN
        }
    );
    let huge = vec![0u8; hush_sessions::limits::MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        SessionMessage::from_bytes(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn bundle_with_bad_signature_is_refused() {
    let mut rng = rng(16);
    let a = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &b, &mut rng);
    let good = PrekeyBundle::new(b.public(), &spk, None);
    let mut sig = good.signature().to_bytes();
    sig[0] ^= 1;
    let bad = PrekeyBundle::from_public_parts(
        *b.public(),
        1,
        *spk.public_key(),
        Signature::from_bytes(sig),
        None,
    );
    assert_eq!(bad.verify(), Err(BundleError::InvalidSignature));
    assert_eq!(
        Session::initiate(&a, &bad, None, &mut rng).unwrap_err(),
        InitError::Bundle(BundleError::InvalidSignature)
    );
    // The signature also binds the prekey id.
    let renumbered =
        PrekeyBundle::from_public_parts(*b.public(), 2, *spk.public_key(), *good.signature(), None);
    assert_eq!(renumbered.verify(), Err(BundleError::InvalidSignature));
    // And the identity: someone else's key cannot certify Bob's prekey.
    let mallory = IdentityKeyPair::generate(&mut rng);
    let swapped = PrekeyBundle::from_public_parts(
        *mallory.public(),
        1,
        *spk.public_key(),
        *good.signature(),
        None,
    );
    assert_eq!(swapped.verify(), Err(BundleError::InvalidSignature));
}

#[test]
fn identity_change_is_a_trust_decision() {
    let mut rng = rng(17);
    let a = IdentityKeyPair::generate(&mut rng);
    let b_old = IdentityKeyPair::generate(&mut rng);
    let b_new = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &b_new, &mut rng);
    let bundle = PrekeyBundle::new(b_new.public(), &spk, None);
    match Session::initiate(&a, &bundle, Some(b_old.public()), &mut rng) {
        Err(InitError::IdentityChanged(change)) => {
            assert_eq!(&change.known, b_old.public());
            assert_eq!(&change.received, b_new.public());
        }
        other => panic!("expected IdentityChanged, got {other:?}"),
    }
    // Once the caller trusts the new key, it works.
    let mut alice = Session::initiate(&a, &bundle, Some(b_new.public()), &mut rng).unwrap();
    // The responder side also refuses an unexpected initiator identity.
    let SessionMessage::Prekey(m) = alice.encrypt(b"x").unwrap() else {
        panic!()
    };
    let stranger = IdentityKeyPair::generate(&mut rng);
    assert!(matches!(
        Session::accept(&b_new, &spk, None, &m, Some(stranger.public()), &mut rng),
        Err(AcceptError::IdentityChanged(_))
    ));
    assert!(Session::accept(&b_new, &spk, None, &m, Some(a.public()), &mut rng).is_ok());
}

#[test]
fn accept_checks_the_prekeys_it_is_given() {
    let mut rng = rng(18);
    let a = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &b, &mut rng);
    let spk2 = SignedPrekey::generate(2, &b, &mut rng);
    let opk = OneTimePrekey::generate(5, &mut rng);
    let opk6 = OneTimePrekey::generate(6, &mut rng);
    let bundle = PrekeyBundle::new(b.public(), &spk, Some(&opk));
    let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
    let SessionMessage::Prekey(m) = alice.encrypt(b"x").unwrap() else {
        panic!()
    };
    assert_eq!(
        Session::accept(&b, &spk2, Some(&opk), &m, None, &mut rng).unwrap_err(),
        AcceptError::WrongSignedPrekey {
            expected: 1,
            got: 2
        }
    );
    assert_eq!(
        Session::accept(&b, &spk, None, &m, None, &mut rng).unwrap_err(),
        AcceptError::MissingOneTimePrekey(Some(5))
    );
    assert_eq!(
        Session::accept(&b, &spk, Some(&opk6), &m, None, &mut rng).unwrap_err(),
        AcceptError::MissingOneTimePrekey(Some(5))
    );
    // A one-time prekey with the right id but the wrong secret gives a different SK.
    let forged = OneTimePrekey::generate(5, &mut rng);
    assert_eq!(
        Session::accept(&b, &spk, Some(&forged), &m, None, &mut rng).unwrap_err(),
        AcceptError::Decrypt(DecryptError::Authentication)
    );
    assert!(Session::accept(&b, &spk, Some(&opk), &m, None, &mut rng).is_ok());
}

#[test]
fn sealed_state_restores_exactly() {
    let mut p = ratcheted(19);
    let m1 = p.alice.encrypt(b"1").unwrap().to_bytes();
    let m2 = p.alice.encrypt(b"2").unwrap().to_bytes();
    p.bob.decrypt_bytes(&m2, &mut p.rng).unwrap();
    let key = StorageKey::generate(&mut p.rng);
    let sealed = p.bob.seal(&key, &mut p.rng).unwrap();
    let restored = Session::unseal(&key, &sealed).unwrap();
    assert_eq!(*restored.to_bytes(), *p.bob.to_bytes());
    let mut bob = restored;
    assert_eq!(bob.decrypt_bytes(&m1, &mut p.rng).unwrap(), b"1");
    let r = bob.encrypt(b"r").unwrap().to_bytes();
    assert_eq!(p.alice.decrypt_bytes(&r, &mut p.rng).unwrap(), b"r");
    // Wrong key, tampered blob, garbage and wrong version are typed errors.
    let other = StorageKey::generate(&mut p.rng);
    assert!(matches!(
        Session::unseal(&other, &sealed),
        Err(StateError::Seal(_))
    ));
    let mut bad = sealed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        Session::unseal(&key, &bad),
        Err(StateError::Seal(_))
    ));
    assert!(matches!(
        Session::from_bytes(&[0xff, 0xff]),
        Err(StateError::Decode(_))
    ));
    // version = 2
    assert_eq!(
        Session::from_bytes(&[0x08, 0x02]).unwrap_err(),
        StateError::UnsupportedVersion(2)
    );
}

#[test]
fn debug_output_holds_no_key_bytes() {
    let p = ratcheted(20);
    let state = p.bob.to_bytes();
    let debug = format!("{:?}", p.bob);
    // Every 32-byte secret in the state (root key, chain keys, ratchet secret) is absent.
    let hex = to_hex(&state);
    assert!(debug.contains("Session"));
    for window in state.windows(16).step_by(8) {
        let w = to_hex(window);
        if hex.contains(&w) && debug.contains(&w) {
            // Only public keys may appear (identity keys).
            assert!(
                to_hex(p.bob.remote_identity().as_bytes()).contains(&w)
                    || to_hex(p.bob.local_identity().as_bytes()).contains(&w),
                "Debug leaks state bytes {w}"
            );
        }
    }
    let mut rng = rng(21);
    let id = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &id, &mut rng);
    let opk = OneTimePrekey::generate(1, &mut rng);
    assert!(!format!("{spk:?}").contains(&to_hex(spk.secret_bytes().expose())));
    assert!(!format!("{opk:?}").contains(&to_hex(opk.secret_bytes().expose())));
    assert!(!format!("{id:?}").contains(&to_hex(id.seed().expose())));
}

#[test]
fn error_texts_hold_no_secrets_or_plaintext() {
    let mut p = ratcheted(22);
    let m = p
        .alice
        .encrypt(b"very secret plaintext")
        .unwrap()
        .to_bytes();
    let mut bad = m.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let e = p.bob.decrypt_bytes(&bad, &mut p.rng).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("secret"));
    let state = to_hex(&p.bob.to_bytes());
    assert!(!state.contains(&to_hex(text.as_bytes())));
}

#[test]
fn wire_decoding_is_strict() {
    let mut p = ratcheted(23);
    let m = p.alice.encrypt(b"x").unwrap().to_bytes();
    // An unknown trailing field makes the encoding non-canonical.
    let mut extra = m.clone();
    extra.extend_from_slice(&[0x18, 0x01]);
    assert_eq!(
        SessionMessage::from_bytes(&extra),
        Err(DecodeError::NonCanonical)
    );
    assert_eq!(
        SessionMessage::from_bytes(&[]),
        Err(DecodeError::MissingField("body"))
    );
    assert_eq!(
        SessionMessage::from_bytes(&[0x0a]),
        Err(DecodeError::Protobuf)
    );
    let decoded = SessionMessage::from_bytes(&m).unwrap();
    assert_eq!(decoded.to_bytes(), m);
    let bundle_garbage = PrekeyBundle::from_bytes(&[0x08, 0x01]);
    assert!(matches!(bundle_garbage, Err(DecodeError::IdentityKey(_))));
}

/// Regression (found by the property test): on a ratchet step the previous chain must end at
/// PN, or a late message on it could decrypt once through the chain and again from the store.
#[test]
fn late_message_on_finished_chain_decrypts_once() {
    let mut p = ratcheted(24);
    let b: Vec<_> = (0..3u8)
        .map(|i| p.bob.encrypt(&[i]).unwrap().to_bytes())
        .collect();
    p.alice.decrypt_bytes(&b[0], &mut p.rng).unwrap();
    let a = p.alice.encrypt(b"a").unwrap().to_bytes();
    p.bob.decrypt_bytes(&a, &mut p.rng).unwrap();
    let c = p.bob.encrypt(b"c").unwrap().to_bytes();
    p.alice.decrypt_bytes(&c, &mut p.rng).unwrap(); // PN = 3: keys 1 and 2 are stored
    assert_eq!(p.alice.skipped_keys(), 2);
    assert_eq!(p.alice.decrypt_bytes(&b[2], &mut p.rng).unwrap(), [2]);
    assert_eq!(
        p.alice.decrypt_bytes(&b[2], &mut p.rng),
        Err(DecryptError::Duplicate)
    );
    assert_eq!(p.alice.decrypt_bytes(&b[1], &mut p.rng).unwrap(), [1]);
    assert_eq!(p.alice.skipped_keys(), 0);
}

/// Regression (found by the property test): a repeated prekey message must carry exactly the
/// X3DH parameters that started the session.
#[test]
fn repeated_prekey_message_with_other_parameters_is_refused() {
    let mut p = established(25);
    let SessionMessage::Prekey(second) = p.alice.encrypt(b"second").unwrap() else {
        panic!()
    };
    let wire = SessionMessage::Prekey(second.clone()).to_bytes();
    // Re-encode with a different one-time prekey id (field 5 of PrekeyMessage).
    let id_field = [0x28, 9u8]; // tag 5 varint, value 9
    let pos = wire.windows(2).position(|w| w == id_field).unwrap();
    let mut changed = wire.clone();
    changed[pos + 1] = 10;
    let before = p.bob.to_bytes();
    assert_eq!(
        p.bob.decrypt_bytes(&changed, &mut p.rng),
        Err(DecryptError::WrongSession)
    );
    assert_eq!(*before, *p.bob.to_bytes());
    assert_eq!(p.bob.decrypt_bytes(&wire, &mut p.rng).unwrap(), b"second");
}

/// A peer that sends a second new ratchet key before hearing back (a forked state: no honest
/// peer does) is refused without a trace; the pending step is unaffected and the session
/// goes on.
#[test]
fn a_second_new_ratchet_key_before_sending_is_refused_cleanly() {
    let mut p = common::established(31);
    let w = p.alice.encrypt(b"a1").unwrap().to_bytes();
    let bob_before = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    p.bob.decrypt_bytes(&w, &mut p.rng).unwrap();
    let r1 = p.bob.encrypt(b"b1").unwrap().to_bytes();
    // The fork: Bob's earlier state receives the same message with other randomness.
    let mut fork = bob_before;
    fork.decrypt_bytes(&w, &mut common::rng(99)).unwrap();
    let r2 = fork.encrypt(b"b1 forked").unwrap().to_bytes();
    assert_eq!(p.alice.decrypt_bytes(&r1, &mut p.rng).unwrap(), b"b1");
    let before = p.alice.to_bytes();
    assert!(p.alice.decrypt_bytes(&r2, &mut p.rng).is_err());
    assert_eq!(*p.alice.to_bytes(), *before);
    let w = p.alice.encrypt(b"a2").unwrap().to_bytes();
    assert_eq!(p.bob.decrypt_bytes(&w, &mut p.rng).unwrap(), b"a2");
}
