//! Vectors with plain inputs and outputs: identity keys and safety numbers, KDFs, X3DH,
//! sealing, and wire encodings.

use hush_crypto::kdf::{chain_step, hkdf_sha256};
use hush_crypto::x25519::x25519;
use hush_crypto::{
    IdentityKeyPair, IdentityPublicKey, KeyError, MessageKeys, SafetyNumber, SealError,
    SecretBytes, StorageKey, X25519KeyPair, X25519PublicKey,
};
use hush_groups::wire::{Kind, validate};
use hush_sessions::bundle::signed_prekey_message;
use hush_sessions::{Header, OneTimePrekey, PrekeyBundle, SessionMessage, SignedPrekey};
use serde_json::{Value, json};

use crate::util::{
    Report, VectorError, arr32, bytes, check_hex, h, list, num, pattern, seeded, text,
};
use crate::wire::{encode, invalid_entries, valid_entries};

fn identity_seeds() -> Vec<[u8; 32]> {
    vec![
        pattern(0x00),
        pattern(0x20),
        seeded("identity 2"),
        seeded("identity 3"),
    ]
}

pub(crate) fn identity() -> Value {
    let identities: Vec<Value> = identity_seeds()
        .iter()
        .map(|seed| {
            let id = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(*seed));
            json!({
                "seed": h(seed),
                "ed25519_public": h(id.public().as_bytes()),
                "x25519_public": h(id.public().to_x25519().as_bytes()),
                "x25519_private": h(id.x25519_secret().expose()),
            })
        })
        .collect();
    let ids: Vec<IdentityKeyPair> = identity_seeds()
        .iter()
        .map(|s| IdentityKeyPair::from_seed(&SecretBytes::from_bytes(*s)))
        .collect();
    let pairs: [(&[u8], usize, &[u8], usize); 3] = [
        (b"alice", 0, b"bob", 1),
        (b"bob", 1, b"alice", 0),
        (b"+15551234567", 2, b"+15557654321", 3),
    ];
    let safety: Vec<Value> = pairs
        .iter()
        .map(|(ia, a, ib, b)| {
            let n = SafetyNumber::compute((ia, ids[*a].public()), (ib, ids[*b].public()));
            json!({
                "id_a": h(ia), "key_a": h(ids[*a].public().as_bytes()),
                "id_b": h(ib), "key_b": h(ids[*b].public().as_bytes()),
                "digits": n.digits(), "scannable": h(n.scannable()),
            })
        })
        .collect();
    let mut p_plus_1 = [0xffu8; 32];
    p_plus_1[0] = 0xee;
    p_plus_1[31] = 0x7f;
    let mut one = [0u8; 32];
    one[0] = 1;
    let mut two = [0u8; 32];
    two[0] = 2;
    json!({
        "description": "Ed25519 identity keys and their X25519 form (SPEC §3); safety numbers (SPEC §10); invalid identity keys.",
        "identities": identities,
        "safety_numbers": safety,
        "invalid_identity_keys": [
            {"key": h(&one), "error": "Decode", "reason": "the identity point: small order"},
            {"key": h(&[0u8; 32]), "error": "Decode", "reason": "y = 0: a point of order 4"},
            {"key": h(&p_plus_1), "error": "Decode", "reason": "y = p + 1: non-canonical encoding"},
            {"key": h(&two), "error": "Decode", "reason": "y = 2: not on the curve"},
            {"key": TORSION_KEY, "error": "Decode", "reason": "12345·B plus a point of order 8: canonical, not of small order, but not in the prime-order subgroup"},
        ],
    })
}

/// `12345·B + T8`, `T8` the order-8 point encoded `c7176a70…ac037a`: a canonical encoding
/// of a point that is not of small order, with a torsion component (SPEC §3).
const TORSION_KEY: &str = "40a4cf5c611d737a2f1c6fcca84d9cabfed80987f186a5a6c57e629bff1af27f";

pub(crate) fn verify_identity(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (i, c) in list(v, "identities")?.iter().enumerate() {
        let id = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(arr32(c, "seed")?));
        let ctx = format!("identities[{i}]");
        check_hex(r, &ctx, c, "ed25519_public", id.public().as_bytes());
        check_hex(
            r,
            &ctx,
            c,
            "x25519_public",
            id.public().to_x25519().as_bytes(),
        );
        check_hex(r, &ctx, c, "x25519_private", id.x25519_secret().expose());
    }
    for (i, c) in list(v, "safety_numbers")?.iter().enumerate() {
        let ka = IdentityPublicKey::from_slice(&bytes(c, "key_a")?)
            .map_err(|e| VectorError::Field(e.to_string()))?;
        let kb = IdentityPublicKey::from_slice(&bytes(c, "key_b")?)
            .map_err(|e| VectorError::Field(e.to_string()))?;
        let n = SafetyNumber::compute((&bytes(c, "id_a")?, &ka), (&bytes(c, "id_b")?, &kb));
        r.eq(
            &format!("safety_numbers[{i}].digits"),
            text(c, "digits")?,
            n.digits(),
        );
        check_hex(
            r,
            &format!("safety_numbers[{i}]"),
            c,
            "scannable",
            n.scannable(),
        );
    }
    for (i, c) in list(v, "invalid_identity_keys")?.iter().enumerate() {
        let refused = matches!(
            IdentityPublicKey::from_slice(&bytes(c, "key")?),
            Err(KeyError::InvalidEncoding | KeyError::WeakKey | KeyError::InvalidLength)
        );
        r.check(refused && text(c, "error")? == "Decode", || {
            format!("invalid_identity_keys[{i}] accepted")
        });
    }
    Ok(())
}

pub(crate) fn kdf() -> Value {
    let root: Vec<Value> = (0..3)
        .map(|i| {
            let rk = seeded(&format!("rk {i}"));
            let dh = seeded(&format!("dh {i}"));
            let (rk_out, ck_out) = hkdf_sha256::<64>(&rk, &dh, hush_sessions::ROOT_INFO).split_halves();
            json!({"rk": h(&rk), "dh": h(&dh), "rk_out": h(rk_out.expose()), "ck_out": h(ck_out.expose())})
        })
        .collect();
    let mut chain = vec![];
    let mut ck = SecretBytes::from_bytes(seeded("ck"));
    for _ in 0..4 {
        let (mk, next) = chain_step(&ck);
        chain.push(json!({"ck": h(ck.expose()), "mk": h(mk.expose()), "ck_out": h(next.expose())}));
        ck = next;
    }
    let infos: [&[u8]; 2] = [
        hush_sessions::MESSAGE_INFO,
        hush_groups::wire::GROUP_KEYS_INFO,
    ];
    let keys: Vec<Value> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let mk = SecretBytes::from_bytes(seeded(&format!("mk {i}")));
            let k = MessageKeys::derive(&mk, info);
            json!({"info": String::from_utf8_lossy(info), "mk": h(mk.expose()), "key": h(k.key()), "nonce": h(k.nonce())})
        })
        .collect();
    json!({
        "description": "The root KDF, the chain KDF and message-key expansion (SPEC §7, §13.2).",
        "root_kdf": root, "chain_kdf": chain, "message_keys": keys,
    })
}

pub(crate) fn verify_kdf(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (i, c) in list(v, "root_kdf")?.iter().enumerate() {
        let (rk, ck) =
            hkdf_sha256::<64>(&bytes(c, "rk")?, &bytes(c, "dh")?, hush_sessions::ROOT_INFO)
                .split_halves();
        check_hex(r, &format!("root_kdf[{i}]"), c, "rk_out", rk.expose());
        check_hex(r, &format!("root_kdf[{i}]"), c, "ck_out", ck.expose());
    }
    for (i, c) in list(v, "chain_kdf")?.iter().enumerate() {
        let (mk, next) = chain_step(&SecretBytes::from_bytes(arr32(c, "ck")?));
        check_hex(r, &format!("chain_kdf[{i}]"), c, "mk", mk.expose());
        check_hex(r, &format!("chain_kdf[{i}]"), c, "ck_out", next.expose());
    }
    for (i, c) in list(v, "message_keys")?.iter().enumerate() {
        let k = MessageKeys::derive(
            &SecretBytes::from_bytes(arr32(c, "mk")?),
            text(c, "info")?.as_bytes(),
        );
        check_hex(r, &format!("message_keys[{i}]"), c, "key", k.key());
        check_hex(r, &format!("message_keys[{i}]"), c, "nonce", k.nonce());
    }
    Ok(())
}

struct X3dhInputs {
    ik_a: [u8; 32],
    ik_b: [u8; 32],
    spk_id: u32,
    spk: [u8; 32],
    opk: Option<(u32, [u8; 32])>,
    ek: [u8; 32],
}

fn x3dh_case(inp: &X3dhInputs) -> Result<Value, VectorError> {
    let a = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(inp.ik_a));
    let b = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(inp.ik_b));
    let spk = SignedPrekey::generate(
        inp.spk_id,
        &b,
        &mut crate::util::Scripted::new(&[inp.spk.to_vec()]),
    );
    let opk = inp
        .opk
        .map(|(id, k)| OneTimePrekey::from_secret_bytes(id, &SecretBytes::from_bytes(k)));
    let ek = X25519KeyPair::from_secret_bytes(&SecretBytes::from_bytes(inp.ek));
    let e = |x: hush_crypto::DhError| crate::util::gen_err(x);
    let dh1 = a.diffie_hellman(spk.public_key()).map_err(e)?;
    let dh2 = ek.diffie_hellman(b.public().to_x25519()).map_err(e)?;
    let dh3 = ek.diffie_hellman(spk.public_key()).map_err(e)?;
    let dh4 = opk
        .as_ref()
        .map(|o| ek.diffie_hellman(o.public_key()))
        .transpose()
        .map_err(e)?;
    let mut ikm = vec![0xff; 32];
    for d in [Some(&dh1), Some(&dh2), Some(&dh3), dh4.as_ref()]
        .into_iter()
        .flatten()
    {
        ikm.extend_from_slice(d.expose());
    }
    let sk = hkdf_sha256::<32>(&[0; 32], &ikm, hush_sessions::x3dh::X3DH_INFO);
    let mut ad = a.public().as_bytes().to_vec();
    ad.extend_from_slice(b.public().as_bytes());
    let bundle = PrekeyBundle::new(b.public(), &spk, opk.as_ref());
    Ok(json!({
        "ik_a_seed": h(&inp.ik_a), "ik_b_seed": h(&inp.ik_b),
        "spk_id": inp.spk_id, "spk_private": h(&inp.spk),
        "opk_id": inp.opk.map(|(id, _)| id), "opk_private": inp.opk.map(|(_, k)| h(&k)),
        "ek_private": h(&inp.ek),
        "ik_a": h(a.public().as_bytes()), "ik_b": h(b.public().as_bytes()),
        "spk": h(spk.public_key().as_bytes()), "opk": opk.as_ref().map(|o| h(o.public_key().as_bytes())),
        "ek": h(ek.public().as_bytes()),
        "spk_signed_message": h(&signed_prekey_message(inp.spk_id, spk.public_key())),
        "spk_signature": h(spk.signature().as_bytes()),
        "bundle": h(&bundle.to_bytes()),
        "dh1": h(dh1.expose()), "dh2": h(dh2.expose()), "dh3": h(dh3.expose()),
        "dh4": dh4.as_ref().map(|d| h(d.expose())),
        "sk": h(sk.expose()), "ad": h(&ad),
    }))
}

pub(crate) fn x3dh() -> Value {
    let with = X3dhInputs {
        ik_a: pattern(0x00),
        ik_b: pattern(0x20),
        spk_id: 1,
        spk: pattern(0x40),
        opk: Some((2, pattern(0x60))),
        ek: pattern(0x80),
    };
    let without = X3dhInputs {
        ik_a: seeded("x3dh a"),
        ik_b: seeded("x3dh b"),
        spk_id: 300,
        spk: seeded("x3dh spk"),
        opk: None,
        ek: seeded("x3dh ek"),
    };
    let cases: Vec<Value> = [with, without]
        .iter()
        .filter_map(|c| x3dh_case(c).ok())
        .collect();
    json!({"description": "X3DH with and without a one-time prekey (SPEC §5, §6).", "cases": cases})
}

pub(crate) fn verify_x3dh(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (i, c) in list(v, "cases")?.iter().enumerate() {
        let opk = match (
            c.get("opk_id").and_then(Value::as_u64),
            c.get("opk_private").and_then(Value::as_str),
        ) {
            (Some(id), Some(_)) => Some((id as u32, arr32(c, "opk_private")?)),
            _ => None,
        };
        let inp = X3dhInputs {
            ik_a: arr32(c, "ik_a_seed")?,
            ik_b: arr32(c, "ik_b_seed")?,
            spk_id: num(c, "spk_id")? as u32,
            spk: arr32(c, "spk_private")?,
            opk,
            ek: arr32(c, "ek_private")?,
        };
        let computed = x3dh_case(&inp)?;
        for key in [
            "ik_a",
            "ik_b",
            "spk",
            "opk",
            "ek",
            "spk_signed_message",
            "spk_signature",
            "bundle",
            "dh1",
            "dh2",
            "dh3",
            "dh4",
            "sk",
            "ad",
        ] {
            r.check(c.get(key) == computed.get(key), || {
                format!("x3dh cases[{i}].{key} differs")
            });
        }
        // The real bundle decoder accepts it and its signature verifies.
        let ok = PrekeyBundle::from_bytes(&bytes(c, "bundle")?).is_ok_and(|b| b.verify().is_ok());
        r.check(ok, || format!("x3dh cases[{i}]: bundle refused"));
    }
    Ok(())
}

pub(crate) fn seal() -> Value {
    let key = pattern(0xe0);
    let storage = StorageKey::from_bytes(key);
    let cases: Vec<Value> = [(b"session".as_slice(), b"example state".as_slice(), pattern(0x10)), (b"group", b"", seeded("salt 1"))]
        .iter()
        .filter_map(|(label, pt, salt)| {
            let blob = storage.seal_with_salt(label, pt, salt).ok()?;
            Some(json!({"storage_key": h(&key), "label": String::from_utf8_lossy(label), "salt": h(salt), "plaintext": h(pt), "blob": h(&blob)}))
        })
        .collect();
    let good = storage
        .seal_with_salt(b"session", b"x", &pattern(0x10))
        .unwrap_or_default();
    let mut v2 = good.clone();
    if let Some(b) = v2.first_mut() {
        *b = 2;
    }
    let mut flipped = good.clone();
    if let Some(b) = flipped.last_mut() {
        *b ^= 1;
    }
    json!({
        "description": "Sealing state at rest (SPEC §11.1).",
        "cases": cases,
        "invalid": [
            {"storage_key": h(&key), "label": "session", "blob": h(&good[..48.min(good.len())]), "error": "Malformed"},
            {"storage_key": h(&key), "label": "session", "blob": h(&v2), "error": "UnsupportedVersion"},
            {"storage_key": h(&key), "label": "session", "blob": h(&flipped), "error": "Decrypt"},
            {"storage_key": h(&key), "label": "group", "blob": h(&good), "error": "Decrypt"},
        ],
    })
}

pub(crate) fn verify_seal(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (i, c) in list(v, "cases")?.iter().enumerate() {
        let storage = StorageKey::from_bytes(arr32(c, "storage_key")?);
        let label = text(c, "label")?.as_bytes();
        let blob = storage
            .seal_with_salt(label, &bytes(c, "plaintext")?, &arr32(c, "salt")?)
            .map_err(crate::util::gen_err)?;
        check_hex(r, &format!("seal cases[{i}]"), c, "blob", &blob);
        let opened = storage.open(label, &bytes(c, "blob")?).map(|p| p.to_vec());
        r.check(opened.ok() == Some(bytes(c, "plaintext")?), || {
            format!("seal cases[{i}] does not open")
        });
    }
    for (i, c) in list(v, "invalid")?.iter().enumerate() {
        let storage = StorageKey::from_bytes(arr32(c, "storage_key")?);
        let got = match storage.open(text(c, "label")?.as_bytes(), &bytes(c, "blob")?) {
            Ok(_) => "accepted",
            Err(SealError::Malformed) => "Malformed",
            Err(SealError::UnsupportedVersion(_)) => "UnsupportedVersion",
            Err(SealError::Decrypt) => "Decrypt",
            Err(_) => "other",
        };
        r.eq(&format!("seal invalid[{i}]"), text(c, "error")?, got);
    }
    Ok(())
}

pub(crate) fn wire() -> Result<Value, VectorError> {
    Ok(json!({
        "description": "Canonical encodings of every wire message (SPEC §9, §13), and encodings decoders must refuse.",
        "valid": valid_entries()?,
        "invalid": invalid_entries()?,
    }))
}

/// Runs the real crate's strict decoder for a message type; `None` for types that are only
/// ever decoded inside another (contents of signed wrappers).
fn real_decode(kind: &str, b: &[u8]) -> Option<bool> {
    Some(match kind {
        "Header" => Header::decode(b).is_ok(),
        "SessionMessage" => SessionMessage::from_bytes(b).is_ok_and(|m| m.to_bytes() == b),
        "PrekeyBundle" => PrekeyBundle::from_bytes(b).is_ok_and(|m| m.to_bytes() == b),
        "GroupMessage" => validate(Kind::GroupMessage, b).is_ok(),
        "SenderKeyDistribution" => validate(Kind::SenderKeyDistribution, b).is_ok(),
        "ControlMessage" => validate(Kind::ControlMessage, b).is_ok(),
        "GroupInfo" => validate(Kind::GroupInfo, b).is_ok(),
        _ => return None,
    })
}

pub(crate) fn verify_wire(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (i, c) in list(v, "valid")?.iter().enumerate() {
        let kind = text(c, "type")?;
        let b = bytes(c, "bytes")?;
        let encoded = encode(kind, crate::util::field(c, "fields")?)?;
        r.check(encoded == b, || {
            format!(
                "wire valid[{i}] ({kind}): fields encode to {}",
                hex::encode(&encoded)
            )
        });
        if let Some(ok) = real_decode(kind, &b) {
            r.check(ok, || {
                format!("wire valid[{i}] ({kind}): the real decoder refused it")
            });
        }
    }
    for (i, c) in list(v, "invalid")?.iter().enumerate() {
        let kind = text(c, "type")?;
        match real_decode(kind, &bytes(c, "bytes")?) {
            Some(ok) => r.check(!ok && text(c, "error")? == "Decode", || {
                format!("wire invalid[{i}] ({kind}) accepted")
            }),
            None => r.fail(format!(
                "wire invalid[{i}]: type {kind} has no standalone decoder"
            )),
        }
    }
    let _ = X25519PublicKey::from_bytes([0; 32]);
    let _ = x25519;
    Ok(())
}
