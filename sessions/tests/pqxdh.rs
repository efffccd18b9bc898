//! PQXDH: post-quantum sessions from bundles with a signed ML-KEM-768 prekey, the checks that
//! keep a relay from stripping or swapping it, last-resort reuse, and state at rest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::rng;
use hush_crypto::kem::{KEM_CIPHERTEXT_LEN, KemKeyPair};
use hush_crypto::{IdentityKeyPair, Signature, StorageKey};
use hush_sessions::{
    AcceptError, BundleError, BundleKemPrekey, DecodeError, DecryptError, InitError, KemPrekey,
    OneTimePrekey, PrekeyBundle, PrekeyMessage, Session, SessionMessage, SignedPrekey, Suite,
    SuitePolicy,
};
use rand::rngs::StdRng;

struct Bob {
    id: IdentityKeyPair,
    spk: SignedPrekey,
    opk: OneTimePrekey,
    kem: KemPrekey,
    last_resort: KemPrekey,
}

fn bob(rng: &mut StdRng) -> Bob {
    let id = IdentityKeyPair::generate(rng);
    Bob {
        spk: SignedPrekey::generate_for(Suite::PostQuantum, 3, &id, rng),
        opk: OneTimePrekey::generate(4, rng),
        kem: KemPrekey::generate_one_time(5, &id, rng),
        last_resort: KemPrekey::generate_last_resort(6, &id, rng),
        id,
    }
}

fn first(session: &mut Session, text: &[u8]) -> PrekeyMessage {
    match session.encrypt(text).unwrap() {
        SessionMessage::Prekey(m) => *m,
        SessionMessage::Ratchet(_) => panic!("expected a prekey message"),
    }
}

/// Re-encodes a prekey message with one field's bytes changed, through the wire form.
fn with_kem_ciphertext(m: &PrekeyMessage, flip: usize) -> PrekeyMessage {
    let mut wire = SessionMessage::Prekey(Box::new(m.clone())).to_bytes();
    // The ciphertext is the last field: its last byte is the message's last byte.
    let len = wire.len();
    wire[len - 1 - flip] ^= 0x01;
    match SessionMessage::from_bytes(&wire).unwrap() {
        SessionMessage::Prekey(p) => *p,
        SessionMessage::Ratchet(_) => unreachable!(),
    }
}

#[test]
fn a_post_quantum_session_with_and_without_one_time_prekeys() {
    let mut rng = rng(1);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    for (opk, kem) in [
        (Some(&b.opk), &b.kem),
        (None, &b.kem),
        (Some(&b.opk), &b.last_resort),
        (None, &b.last_resort),
    ] {
        let bundle = PrekeyBundle::new(b.id.public(), &b.spk, opk).with_kem_prekey(kem);
        let bundle = PrekeyBundle::from_bytes(&bundle.to_bytes()).unwrap();
        assert_eq!(bundle.verify(), Ok(Suite::PostQuantum));
        let mut a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
        assert!(a.is_post_quantum());
        let m = first(&mut a, b"quantum hello");
        assert!(m.is_post_quantum());
        assert_eq!(m.kem_prekey_id(), Some(kem.id()));
        assert_eq!(
            m.kem_ciphertext().unwrap().as_bytes().len(),
            KEM_CIPHERTEXT_LEN
        );
        let (mut bs, pt) =
            Session::accept_with_kem(&b.id, &b.spk, opk, Some(kem), &m, None, &mut rng).unwrap();
        assert_eq!(pt, b"quantum hello");
        assert!(bs.is_post_quantum());
        let reply = bs.encrypt(b"and back").unwrap().to_bytes();
        assert_eq!(a.decrypt_bytes(&reply, &mut rng).unwrap(), b"and back");
        assert!(!a.awaiting_reply());
    }
}

#[test]
fn the_kem_secret_is_in_the_key() {
    // The same X25519 inputs with and without the KEM secret give different sessions: a
    // responder that ignored the ciphertext would not decrypt.
    let mut rng = rng(2);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let bundle = PrekeyBundle::new(b.id.public(), &b.spk, None).with_kem_prekey(&b.kem);
    let mut a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let m = first(&mut a, b"x");
    // Another KEM key pair under the same id decapsulates to an unrelated secret (implicit
    // rejection): the inner message fails to authenticate and no session is made.
    let impostor = KemPrekey::from_parts(
        b.kem.id(),
        false,
        KemKeyPair::generate(&mut rng).seed().duplicate(),
        *b.kem.signature(),
    );
    assert_eq!(
        Session::accept_with_kem(&b.id, &b.spk, None, Some(&impostor), &m, None, &mut rng)
            .unwrap_err(),
        AcceptError::Decrypt(DecryptError::Authentication)
    );
    // A tampered ciphertext likewise; the right key still opens the untampered message.
    for flip in [0, 500, KEM_CIPHERTEXT_LEN - 1] {
        let bad = with_kem_ciphertext(&m, flip);
        assert_eq!(
            Session::accept_with_kem(&b.id, &b.spk, None, Some(&b.kem), &bad, None, &mut rng)
                .unwrap_err(),
            AcceptError::Decrypt(DecryptError::Authentication)
        );
    }
    assert!(
        Session::accept_with_kem(&b.id, &b.spk, None, Some(&b.kem), &m, None, &mut rng).is_ok()
    );
}

#[test]
fn the_responder_needs_the_kem_prekey_the_message_names() {
    let mut rng = rng(3);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let bundle = PrekeyBundle::new(b.id.public(), &b.spk, Some(&b.opk)).with_kem_prekey(&b.kem);
    let mut a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let m = first(&mut a, b"x");
    // None (a one-time KEM prekey already used and deleted), or another one.
    assert_eq!(
        Session::accept(&b.id, &b.spk, Some(&b.opk), &m, None, &mut rng).unwrap_err(),
        AcceptError::MissingKemPrekey(5)
    );
    assert_eq!(
        Session::accept_with_kem(
            &b.id,
            &b.spk,
            Some(&b.opk),
            Some(&b.last_resort),
            &m,
            None,
            &mut rng
        )
        .unwrap_err(),
        AcceptError::MissingKemPrekey(5)
    );
}

#[test]
fn a_stripped_kem_prekey_is_refused() {
    let mut rng = rng(4);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let stripped = PrekeyBundle::new(b.id.public(), &b.spk, Some(&b.opk));
    let stripped = PrekeyBundle::from_bytes(&stripped.to_bytes()).unwrap();
    assert_eq!(stripped.verify(), Err(BundleError::KemPrekeyRemoved));
    for policy in [
        SuitePolicy::PostQuantumWhenOffered,
        SuitePolicy::PostQuantumOnly,
    ] {
        assert_eq!(
            Session::initiate_with(&alice, &stripped, None, policy, &mut rng).unwrap_err(),
            InitError::Bundle(BundleError::KemPrekeyRemoved)
        );
    }
    // A classical signed prekey cannot be passed off with a KEM prekey beside it either: the
    // suites sign different messages.
    let classical = SignedPrekey::generate(3, &b.id, &mut rng);
    let dressed = PrekeyBundle::new(b.id.public(), &classical, None).with_kem_prekey(&b.kem);
    assert_eq!(dressed.verify(), Err(BundleError::InvalidSignature));
}

#[test]
fn the_policy_decides_about_classical_bundles() {
    let mut rng = rng(5);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPrekey::generate(1, &b, &mut rng);
    let classical = PrekeyBundle::new(b.public(), &spk, None);
    assert_eq!(classical.verify(), Ok(Suite::Classical));
    assert_eq!(
        Session::initiate_with(
            &alice,
            &classical,
            None,
            SuitePolicy::PostQuantumOnly,
            &mut rng
        )
        .unwrap_err(),
        InitError::ClassicalRefused
    );
    let s = Session::initiate(&alice, &classical, None, &mut rng).unwrap();
    assert!(!s.is_post_quantum());
}

#[test]
fn kem_prekey_signatures_bind_key_id_and_owner() {
    let mut rng = rng(6);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let base = PrekeyBundle::new(b.id.public(), &b.spk, None);
    let good = BundleKemPrekey {
        id: b.kem.id(),
        key: b.kem.public_key().clone(),
        signature: *b.kem.signature(),
    };
    let mut flipped = good.signature.to_bytes();
    flipped[7] ^= 0x20;
    let other = KemPrekey::generate_one_time(5, &IdentityKeyPair::generate(&mut rng), &mut rng);
    for bad in [
        // A flipped signature bit.
        BundleKemPrekey {
            signature: Signature::from_bytes(flipped),
            ..good.clone()
        },
        // Renumbered: the one-time key passed off as the last-resort key's id.
        BundleKemPrekey {
            id: b.last_resort.id(),
            ..good.clone()
        },
        // Another key under Bob's signature.
        BundleKemPrekey {
            key: b.last_resort.public_key().clone(),
            ..good.clone()
        },
        // Someone else's key and signature.
        BundleKemPrekey {
            id: other.id(),
            key: other.public_key().clone(),
            signature: *other.signature(),
        },
    ] {
        let bundle = base.clone().with_kem_public(bad);
        assert_eq!(bundle.verify(), Err(BundleError::InvalidKemPrekeySignature));
        assert_eq!(
            Session::initiate(&alice, &bundle, None, &mut rng).unwrap_err(),
            InitError::Bundle(BundleError::InvalidKemPrekeySignature)
        );
    }
    assert_eq!(base.with_kem_public(good).verify(), Ok(Suite::PostQuantum));
}

#[test]
fn repeats_reach_the_session_and_last_resort_uses_tell_sessions_apart() {
    let mut rng = rng(7);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let bundle = PrekeyBundle::new(b.id.public(), &b.spk, None).with_kem_prekey(&b.last_resort);
    let mut a1 = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let m1 = first(&mut a1, b"one");
    let (mut b1, _) = Session::accept_with_kem(
        &b.id,
        &b.spk,
        None,
        Some(&b.last_resort),
        &m1,
        None,
        &mut rng,
    )
    .unwrap();
    // Alice repeats her PQXDH parameters until she hears back; Bob's session takes them.
    let again = SessionMessage::Prekey(Box::new(first(&mut a1, b"two")));
    assert_eq!(b1.decrypt(&again, &mut rng).unwrap(), b"two");
    // The same parameters with another ciphertext are another session's.
    let SessionMessage::Prekey(p) = &again else {
        unreachable!()
    };
    let swapped = SessionMessage::Prekey(Box::new(with_kem_ciphertext(p, 9)));
    let before = b1.to_bytes();
    assert_eq!(
        b1.decrypt(&swapped, &mut rng).unwrap_err(),
        DecryptError::WrongSession
    );
    assert_eq!(*b1.to_bytes(), *before);
    // Every session with the last-resort key has its own use; repeats share it.
    let use1 = m1.kem_prekey_use().unwrap();
    assert_eq!(p.kem_prekey_use(), Some(use1));
    assert_eq!(use1.kem_prekey_id, 6);
    assert_eq!(use1.signed_prekey_id, 3);
    let mut a2 = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let m2 = first(&mut a2, b"other");
    assert_ne!(m2.kem_prekey_use(), Some(use1));
    // A classical message has none.
    let spk = SignedPrekey::generate(1, &b.id, &mut rng);
    let mut c = Session::initiate(
        &alice,
        &PrekeyBundle::new(b.id.public(), &spk, None),
        None,
        &mut rng,
    )
    .unwrap();
    assert_eq!(first(&mut c, b"c").kem_prekey_use(), None);
}

#[test]
fn post_quantum_state_survives_sealing() {
    let mut rng = rng(8);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let bundle = PrekeyBundle::new(b.id.public(), &b.spk, Some(&b.opk)).with_kem_prekey(&b.kem);
    let a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let key = StorageKey::generate(&mut rng);
    // The initiator's pending parameters, with the ciphertext, survive a restart.
    let mut a = Session::unseal(&key, &a.seal(&key, &mut rng).unwrap()).unwrap();
    assert!(a.is_post_quantum());
    let m = first(&mut a, b"after restart");
    let (bs, pt) = Session::accept_with_kem(
        &b.id,
        &b.spk,
        Some(&b.opk),
        Some(&b.kem),
        &m,
        None,
        &mut rng,
    )
    .unwrap();
    assert_eq!(pt, b"after restart");
    let mut bs = Session::unseal(&key, &bs.seal(&key, &mut rng).unwrap()).unwrap();
    assert!(bs.is_post_quantum());
    // The restored responder still recognises the repeat (ciphertext included).
    let repeat = a.encrypt(b"repeat").unwrap();
    assert_eq!(bs.decrypt(&repeat, &mut rng).unwrap(), b"repeat");
}

#[test]
fn malformed_kem_fields_are_refused() {
    let mut rng = rng(9);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let bundle = PrekeyBundle::new(b.id.public(), &b.spk, None).with_kem_prekey(&b.kem);
    let mut a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let wire = SessionMessage::Prekey(Box::new(first(&mut a, b"x"))).to_bytes();
    // The prekey message ends with field 7 (kem_prekey_id = 5: `38 05`) then field 8
    // (`42 c0 08` and 1,088 bytes). Drop field 8, or field 7, or shorten the ciphertext.
    let tail = 3 + KEM_CIPHERTEXT_LEN;
    let outer = |inner: &[u8]| {
        let mut v = vec![0x12];
        let mut n = inner.len();
        while n >= 0x80 {
            v.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        v.push(n as u8);
        v.extend_from_slice(inner);
        v
    };
    // Skip the outer tag and its varint length to reach the PrekeyMessage.
    let start = 1 + wire[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    let inner = &wire[start..];
    assert_eq!(
        &inner[inner.len() - tail - 2..inner.len() - tail],
        &[0x38, 0x05]
    );
    let no_ct = outer(&inner[..inner.len() - tail]);
    assert_eq!(
        SessionMessage::from_bytes(&no_ct),
        Err(DecodeError::MissingField("kem_ciphertext"))
    );
    let mut no_id = inner[..inner.len() - tail - 2].to_vec();
    no_id.extend_from_slice(&inner[inner.len() - tail..]);
    assert_eq!(
        SessionMessage::from_bytes(&outer(&no_id)),
        Err(DecodeError::MissingField("kem_prekey_id"))
    );
    let mut short = inner[..inner.len() - tail].to_vec();
    short.extend_from_slice(&[0x42, 0xbf, 0x08]);
    short.extend_from_slice(&inner[inner.len() - KEM_CIPHERTEXT_LEN + 1..]);
    assert_eq!(
        SessionMessage::from_bytes(&outer(&short)),
        Err(DecodeError::BadLength {
            field: "kem_ciphertext",
            len: KEM_CIPHERTEXT_LEN - 1,
            expected: KEM_CIPHERTEXT_LEN
        })
    );
    assert!(SessionMessage::from_bytes(&outer(inner)).is_ok());
    // A bundle whose KEM key is not a canonical ML-KEM-768 key is a decode error.
    let mut bytes = bundle.to_bytes();
    let key_at = bytes
        .windows(16)
        .position(|w| w == &b.kem.public_key().as_bytes()[..16])
        .unwrap();
    bytes[key_at] = 0xff;
    bytes[key_at + 1] |= 0x0f;
    assert_eq!(
        PrekeyBundle::from_bytes(&bytes),
        Err(DecodeError::InvalidKemKey("kem_prekey.key"))
    );
}

#[test]
fn kem_secrets_never_print() {
    let mut rng = rng(10);
    let b = bob(&mut rng);
    let seed: String = b.kem.seed().expose()[..6]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    let shown = format!("{:?}", b.kem);
    assert!(shown.starts_with("KemPrekey"));
    assert!(!shown.contains(&seed));
}

#[test]
fn a_post_quantum_first_message_of_the_largest_plaintext_fits_the_limit() {
    use hush_sessions::limits::{MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN};
    let mut rng = rng(11);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let bundle = PrekeyBundle::new(b.id.public(), &b.spk, Some(&b.opk)).with_kem_prekey(&b.kem);
    let mut a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    let big = vec![0x5a; MAX_PLAINTEXT_LEN];
    let wire = a.encrypt(&big).unwrap().to_bytes();
    assert!(wire.len() <= MAX_MESSAGE_LEN, "{} bytes", wire.len());
    let SessionMessage::Prekey(m) = SessionMessage::from_bytes(&wire).unwrap() else {
        panic!()
    };
    let (_, pt) = Session::accept_with_kem(
        &b.id,
        &b.spk,
        Some(&b.opk),
        Some(&b.kem),
        &m,
        None,
        &mut rng,
    )
    .unwrap();
    assert_eq!(pt, big);
}

#[test]
fn x3dh_on_a_post_quantum_signed_prekey_is_refused() {
    // What a relay would need to downgrade a first contact with a post-quantum device: a
    // classical signature on its signed prekey. Even with one (made here with Bob's key),
    // Bob refuses X3DH naming his post-quantum signed prekey.
    let mut rng = rng(12);
    let alice = IdentityKeyPair::generate(&mut rng);
    let b = bob(&mut rng);
    let classical_sig = b.id.sign(&hush_sessions::bundle::signed_prekey_message(
        b.spk.id(),
        b.spk.public_key(),
    ));
    let as_classical = SignedPrekey::from_parts(
        Suite::Classical,
        b.spk.id(),
        &b.spk.secret_bytes(),
        classical_sig,
    );
    let bundle = PrekeyBundle::new(b.id.public(), &as_classical, Some(&b.opk));
    let mut a = Session::initiate(&alice, &bundle, None, &mut rng).unwrap();
    assert!(!a.is_post_quantum());
    let m = first(&mut a, b"downgraded");
    assert_eq!(
        Session::accept_with_kem(
            &b.id,
            &b.spk,
            Some(&b.opk),
            Some(&b.kem),
            &m,
            None,
            &mut rng
        )
        .unwrap_err(),
        AcceptError::ClassicalRefused
    );
    // The same message to the classical signed prekey (the same key) is X3DH as usual.
    let (_, pt) = Session::accept(&b.id, &as_classical, Some(&b.opk), &m, None, &mut rng).unwrap();
    assert_eq!(pt, b"downgraded");
}
