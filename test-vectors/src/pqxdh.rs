//! PQXDH vectors (SPEC §5, §6.2): bundles with signed ML-KEM-768 prekeys, the key agreement
//! recomputed from the specification's formulas beside the real `Session`, the initiator's
//! first message, and what an initiator or a responder must refuse.

use std::collections::HashSet;

use hush_crypto::kdf::hkdf_sha256;
use hush_crypto::kem::{KemCiphertext, KemKeyPair};
use hush_crypto::{IdentityKeyPair, SecretBytes, Signature, X25519KeyPair};
use hush_sessions::bundle::{kem_prekey_message, suite_signed_prekey_message};
use hush_sessions::x3dh::PQXDH_INFO;
use hush_sessions::{
    AcceptError, BundleError, BundleKemPrekey, DecryptError, InitError, KemPrekey, KemPrekeyUse,
    OneTimePrekey, PrekeyBundle, PrekeyMessage, Session, SessionMessage, SignedPrekey, Suite,
    SuitePolicy,
};
use serde_json::{Value, json};

use crate::util::{
    Report, Scripted, VectorError, arr32, bytes, gen_err, h, list, num, pattern, seeded, text,
};

struct Inputs {
    ik_a: [u8; 32],
    ik_b: [u8; 32],
    spk_id: u32,
    spk: [u8; 32],
    opk: Option<(u32, [u8; 32])>,
    kem_id: u32,
    kem_seed: [u8; 64],
    last_resort: bool,
    ek: [u8; 32],
    kem_m: [u8; 32],
    dhs_a: [u8; 32],
    /// The seed of Alice's first post-quantum ratchet key pair (SPEC §7.8.5), drawn last.
    pq_seed: [u8; 64],
    plaintext: Vec<u8>,
}

/// Bob's keys for a case.
struct Bob {
    id: IdentityKeyPair,
    spk: SignedPrekey,
    opk: Option<OneTimePrekey>,
    kem: KemPrekey,
}

fn bob(inp: &Inputs) -> Bob {
    let id = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(inp.ik_b));
    let spk = SignedPrekey::generate_for(
        Suite::PostQuantum,
        inp.spk_id,
        &id,
        &mut Scripted::new(&[inp.spk.to_vec()]),
    );
    let kem_pair = KemKeyPair::from_seed(SecretBytes::from_bytes(inp.kem_seed));
    let kem_signature = id.sign(&kem_prekey_message(inp.kem_id, kem_pair.public()));
    Bob {
        opk: inp
            .opk
            .map(|(i, k)| OneTimePrekey::from_secret_bytes(i, &SecretBytes::from_bytes(k))),
        kem: KemPrekey::from_parts(
            inp.kem_id,
            inp.last_resort,
            SecretBytes::from_bytes(inp.kem_seed),
            kem_signature,
        ),
        spk,
        id,
    }
}

fn bundle_of(b: &Bob) -> PrekeyBundle {
    PrekeyBundle::new(b.id.public(), &b.spk, b.opk.as_ref()).with_kem_prekey(&b.kem)
}

/// Every value of a case, recomputed from its inputs: the specification's formulas with
/// hush-crypto primitives, and the real session's first message.
fn case(inp: &Inputs) -> Result<Value, VectorError> {
    let a = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(inp.ik_a));
    let b = bob(inp);
    let ek = X25519KeyPair::from_secret_bytes(&SecretBytes::from_bytes(inp.ek));
    let dh1 = a.diffie_hellman(b.spk.public_key()).map_err(gen_err)?;
    let dh2 = ek
        .diffie_hellman(b.id.public().to_x25519())
        .map_err(gen_err)?;
    let dh3 = ek.diffie_hellman(b.spk.public_key()).map_err(gen_err)?;
    let dh4 = b
        .opk
        .as_ref()
        .map(|o| ek.diffie_hellman(o.public_key()))
        .transpose()
        .map_err(gen_err)?;
    let (ct, ss) = b
        .kem
        .public_key()
        .encapsulate(&mut Scripted::new(&[inp.kem_m.to_vec()]));
    let mut ikm = vec![0xff; 32];
    for d in [Some(&dh1), Some(&dh2), Some(&dh3), dh4.as_ref()]
        .into_iter()
        .flatten()
    {
        ikm.extend_from_slice(d.expose());
    }
    ikm.extend_from_slice(ss.expose());
    let sk = hkdf_sha256::<32>(&[0; 32], &ikm, PQXDH_INFO);
    let mut ad = a.public().as_bytes().to_vec();
    ad.extend_from_slice(b.id.public().as_bytes());
    let bundle = bundle_of(&b);
    // The real initiator: its randomness is EK_A, then the encapsulation's m, then DHs_A,
    // then the seed of its first post-quantum ratchet key pair.
    let mut rng = Scripted::new(&[
        inp.ek.to_vec(),
        inp.kem_m.to_vec(),
        inp.dhs_a.to_vec(),
        inp.pq_seed.to_vec(),
    ]);
    let pq_public = KemKeyPair::from_seed(SecretBytes::from_bytes(inp.pq_seed))
        .public()
        .to_bytes();
    let mut alice = Session::initiate(&a, &bundle, None, &mut rng).map_err(gen_err)?;
    let wire = alice.encrypt(&inp.plaintext).map_err(gen_err)?.to_bytes();
    Ok(json!({
        "ik_a_seed": h(&inp.ik_a), "ik_b_seed": h(&inp.ik_b),
        "spk_id": inp.spk_id, "spk_private": h(&inp.spk),
        "opk_id": inp.opk.map(|(id, _)| id), "opk_private": inp.opk.map(|(_, k)| h(&k)),
        "kem_id": inp.kem_id, "kem_seed": h(&inp.kem_seed), "kem_last_resort": inp.last_resort,
        "ek_private": h(&inp.ek), "kem_m": h(&inp.kem_m), "dhs_a_private": h(&inp.dhs_a),
        "pq_seed": h(&inp.pq_seed), "pq_public": h(&pq_public),
        "plaintext": h(&inp.plaintext),
        "ik_a": h(a.public().as_bytes()), "ik_b": h(b.id.public().as_bytes()),
        "spk": h(b.spk.public_key().as_bytes()),
        "opk": b.opk.as_ref().map(|o| h(o.public_key().as_bytes())),
        "ek": h(ek.public().as_bytes()),
        "spk_signed_message": h(&suite_signed_prekey_message(Suite::PostQuantum, inp.spk_id, b.spk.public_key())),
        "spk_signature": h(b.spk.signature().as_bytes()),
        "kem_public": h(b.kem.public_key().as_bytes()),
        "kem_signed_message": h(&kem_prekey_message(inp.kem_id, b.kem.public_key())),
        "kem_signature": h(b.kem.signature().as_bytes()),
        "bundle": h(&bundle.to_bytes()),
        "dh1": h(dh1.expose()), "dh2": h(dh2.expose()), "dh3": h(dh3.expose()),
        "dh4": dh4.as_ref().map(|d| h(d.expose())),
        "kem_ciphertext": h(ct.as_bytes()), "ss": h(ss.expose()),
        "sk": h(sk.expose()), "ad": h(&ad),
        "wire": h(&wire),
    }))
}

/// 64 deterministic bytes: `seeded(label ‖ " d") ‖ seeded(label ‖ " z")`.
fn seed64(label: &str) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&seeded(&format!("{label} d")));
    out[32..].copy_from_slice(&seeded(&format!("{label} z")));
    out
}

fn inputs() -> [Inputs; 2] {
    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&pattern(0xa0));
    seed[32..].copy_from_slice(&pattern(0xc0));
    let mut seed2 = [0u8; 64];
    seed2[..32].copy_from_slice(&seeded("pqxdh kem d"));
    seed2[32..].copy_from_slice(&seeded("pqxdh kem z"));
    [
        Inputs {
            ik_a: pattern(0x00),
            ik_b: pattern(0x20),
            spk_id: 1,
            spk: pattern(0x40),
            opk: Some((2, pattern(0x60))),
            kem_id: 3,
            kem_seed: seed,
            last_resort: false,
            ek: pattern(0x80),
            kem_m: pattern(0xe0),
            dhs_a: seeded("pqxdh dhs a"),
            pq_seed: seed64("pqxdh pq 1"),
            plaintext: b"hello Bob, post-quantum".to_vec(),
        },
        Inputs {
            ik_a: seeded("pqxdh a"),
            ik_b: seeded("pqxdh b"),
            spk_id: 70_000,
            spk: seeded("pqxdh spk"),
            opk: None,
            kem_id: 4_000_000_000,
            kem_seed: seed2,
            last_resort: true,
            ek: seeded("pqxdh ek"),
            kem_m: seeded("pqxdh m"),
            dhs_a: seeded("pqxdh dhs a 2"),
            pq_seed: seed64("pqxdh pq 2"),
            plaintext: b"last resort".to_vec(),
        },
    ]
}

fn inputs_of(c: &Value) -> Result<Inputs, VectorError> {
    let opk = match (
        c.get("opk_id").and_then(Value::as_u64),
        c.get("opk_private").and_then(Value::as_str),
    ) {
        (Some(id), Some(_)) => Some((id as u32, arr32(c, "opk_private")?)),
        _ => None,
    };
    Ok(Inputs {
        ik_a: arr32(c, "ik_a_seed")?,
        ik_b: arr32(c, "ik_b_seed")?,
        spk_id: num(c, "spk_id")? as u32,
        spk: arr32(c, "spk_private")?,
        opk,
        kem_id: num(c, "kem_id")? as u32,
        kem_seed: bytes(c, "kem_seed")?
            .try_into()
            .map_err(|_| VectorError::Field("kem_seed is not 64 bytes".into()))?,
        last_resort: c
            .get("kem_last_resort")
            .and_then(Value::as_bool)
            .ok_or_else(|| VectorError::Field("kem_last_resort".into()))?,
        ek: arr32(c, "ek_private")?,
        kem_m: arr32(c, "kem_m")?,
        dhs_a: arr32(c, "dhs_a_private")?,
        pq_seed: bytes(c, "pq_seed")?
            .try_into()
            .map_err(|_| VectorError::Field("pq_seed is not 64 bytes".into()))?,
        plaintext: bytes(c, "plaintext")?,
    })
}

/// Re-encodes a first message with a change, through the real encoder.
fn prekey_of(wire: &[u8]) -> Result<PrekeyMessage, VectorError> {
    match SessionMessage::from_bytes(wire).map_err(gen_err)? {
        SessionMessage::Prekey(p) => Ok(*p),
        SessionMessage::Ratchet(_) => Err(gen_err("not a prekey message")),
    }
}

/// A first message without its KEM fields (7 and 8, its last 1,093 bytes): X3DH naming the
/// post-quantum signed prekey.
fn strip_kem(wire: &[u8]) -> Result<Vec<u8>, VectorError> {
    // SessionMessage field 2: 0x12, a varint length, the PrekeyMessage.
    let mut len = 0usize;
    let mut at = 1;
    for shift in (0..).step_by(7) {
        let b = *wire.get(at).ok_or_else(|| gen_err("short"))?;
        len |= usize::from(b & 0x7f) << shift;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let inner = wire
        .get(at..at + len)
        .ok_or_else(|| gen_err("bad length"))?;
    let kept = &inner[..inner.len() - 1093];
    let mut out = vec![0x12];
    let mut n = kept.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(kept);
    Ok(out)
}

/// Flips one bit of the KEM ciphertext in a first message's wire bytes.
fn flip_ciphertext(wire: &[u8], ct: &KemCiphertext, at: usize) -> Result<Vec<u8>, VectorError> {
    let pos = wire
        .windows(32)
        .position(|w| w == &ct.as_bytes()[..32])
        .ok_or_else(|| gen_err("ciphertext not found"))?;
    let mut out = wire.to_vec();
    out[pos + at] ^= 0x01;
    Ok(out)
}

fn bundle_negatives(cases: &[Inputs; 2]) -> Result<Vec<Value>, VectorError> {
    let inp = &cases[0];
    let b = bob(inp);
    let good = bundle_of(&b);
    let kem = good
        .kem_prekey()
        .cloned()
        .ok_or_else(|| gen_err("no KEM prekey"))?;
    let mut flipped = kem.signature.to_bytes();
    flipped[0] ^= 0x01;
    let classical_spk =
        SignedPrekey::generate(inp.spk_id, &b.id, &mut Scripted::new(&[inp.spk.to_vec()]));
    let classical = PrekeyBundle::new(b.id.public(), &classical_spk, b.opk.as_ref());
    let mut bad_key = good.to_bytes();
    let at = bad_key
        .windows(32)
        .position(|w| w == &kem.key.as_bytes()[..32])
        .ok_or_else(|| gen_err("key not found"))?;
    // The first 12-bit coefficient set to 4095, which is not below q = 3329.
    bad_key[at] = 0xff;
    bad_key[at + 1] |= 0x0f;
    let entries = [
        (
            good.clone().without_kem_prekey().to_bytes(),
            "post_quantum_when_offered",
            "KemPrekeyRemoved",
            "the KEM prekey removed from a bundle whose signed prekey is signed for PQXDH",
        ),
        (
            good.clone()
                .with_kem_public(BundleKemPrekey {
                    signature: Signature::from_bytes(flipped),
                    ..kem.clone()
                })
                .to_bytes(),
            "post_quantum_when_offered",
            "InvalidKemPrekeySignature",
            "one bit of the KEM prekey signature flipped",
        ),
        (
            good.clone()
                .with_kem_public(BundleKemPrekey {
                    id: kem.id + 1,
                    ..kem.clone()
                })
                .to_bytes(),
            "post_quantum_when_offered",
            "InvalidKemPrekeySignature",
            "the KEM prekey renumbered",
        ),
        (
            classical.clone().with_kem_public(kem.clone()).to_bytes(),
            "post_quantum_when_offered",
            "InvalidSignature",
            "a classical signed prekey with a KEM prekey beside it",
        ),
        (
            classical.to_bytes(),
            "post_quantum_only",
            "ClassicalRefused",
            "a classical bundle (valid) under the post-quantum-only policy",
        ),
        (
            bad_key,
            "post_quantum_when_offered",
            "Decode",
            "a KEM public key that is not a canonical ML-KEM-768 encoding",
        ),
    ];
    Ok(entries
        .into_iter()
        .map(|(bundle, policy, error, note)| {
            json!({"bundle": h(&bundle), "ik_a_seed": h(&inp.ik_a), "policy": policy, "error": error, "note": note})
        })
        .collect())
}

/// What a responder refuses, each with the state it is in: `accepted` lists earlier cases'
/// first messages it accepted (so their one-time KEM prekeys are deleted and their
/// last-resort uses recorded).
fn responder_negatives(cases: &[Inputs; 2]) -> Result<Vec<Value>, VectorError> {
    let wire0 = bytes(&case(&cases[0])?, "wire")?;
    let wire1 = bytes(&case(&cases[1])?, "wire")?;
    let m0 = prekey_of(&wire0)?;
    let ct0 = m0.kem_ciphertext().ok_or_else(|| gen_err("no ct"))?;
    let entries = [
        (
            0,
            vec![],
            flip_ciphertext(&wire0, ct0, 0)?,
            "Authentication",
            "one bit of the KEM ciphertext flipped: decapsulation gives another secret",
        ),
        (
            0,
            vec![],
            flip_ciphertext(&wire0, ct0, 1087)?,
            "Authentication",
            "the last byte of the KEM ciphertext changed",
        ),
        (
            0,
            vec![],
            strip_kem(&wire0)?,
            "ClassicalRefused",
            "the first message without its KEM fields: X3DH naming a post-quantum signed prekey",
        ),
        (
            0,
            vec![0],
            wire0.clone(),
            "MissingKemPrekey",
            "the first message again, after its session was accepted and forgotten: the one-time KEM prekey is gone",
        ),
        (
            1,
            vec![1],
            wire1.clone(),
            "KemPrekeyReused",
            "the first message again, after its session was accepted and forgotten: the last-resort use is recorded",
        ),
    ];
    Ok(entries
        .into_iter()
        .map(|(case, accepted, wire, error, note)| {
            json!({"case": case, "accepted": accepted, "wire": h(&wire), "error": error, "note": note})
        })
        .collect())
}

pub(crate) fn generate() -> Result<Value, VectorError> {
    let cases = inputs();
    let values: Vec<Value> = cases.iter().map(case).collect::<Result<_, _>>()?;
    Ok(json!({
        "description": "PQXDH with ML-KEM-768 (SPEC §5, §6.2): a bundle with a one-time prekey and a one-time KEM prekey, and one with neither one-time prekey and the last-resort KEM prekey; each with the key agreement and the initiator's first message. bundle_negative: bundles an initiator refuses under a policy. responder_negative: first messages a responder refuses, after accepting the listed cases' first messages.",
        "cases": values,
        "bundle_negative": bundle_negatives(&cases)?,
        "responder_negative": responder_negatives(&cases)?,
    }))
}

/// A responder as SPEC §6.2 describes it: prekeys by id, one-time KEM prekeys deleted after
/// use, last-resort uses recorded. Sessions are forgotten after each accept, so a repeat
/// starts a new session.
struct Responder {
    bob: Bob,
    kem_deleted: bool,
    used: HashSet<KemPrekeyUse>,
}

impl Responder {
    fn accept(&mut self, wire: &[u8]) -> Result<Vec<u8>, String> {
        let m = match SessionMessage::from_bytes(wire) {
            Ok(SessionMessage::Prekey(p)) => p,
            Ok(_) => return Err("NotPrekey".into()),
            Err(_) => return Err("Decode".into()),
        };
        if let Some(u) = m.kem_prekey_use()
            && self.bob.kem.is_last_resort()
            && self.used.contains(&u)
        {
            return Err("KemPrekeyReused".into());
        }
        let kem = (!self.kem_deleted).then_some(&self.bob.kem);
        let mut rng = Scripted::new(&[]);
        match Session::accept_with_kem(
            &self.bob.id,
            &self.bob.spk,
            self.bob.opk.as_ref(),
            kem,
            &m,
            None,
            &mut rng,
        ) {
            Ok((_, pt)) => {
                if self.bob.kem.is_last_resort() {
                    self.used.extend(m.kem_prekey_use());
                } else {
                    self.kem_deleted = true;
                }
                Ok(pt)
            }
            Err(AcceptError::MissingKemPrekey(_)) => Err("MissingKemPrekey".into()),
            Err(AcceptError::ClassicalRefused) => Err("ClassicalRefused".into()),
            Err(AcceptError::Decrypt(DecryptError::Authentication)) => Err("Authentication".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }
}

fn class_of_init(e: &InitError) -> String {
    match e {
        InitError::Bundle(BundleError::InvalidSignature) => "InvalidSignature".into(),
        InitError::Bundle(BundleError::InvalidKemPrekeySignature) => {
            "InvalidKemPrekeySignature".into()
        }
        InitError::Bundle(BundleError::KemPrekeyRemoved) => "KemPrekeyRemoved".into(),
        InitError::ClassicalRefused => "ClassicalRefused".into(),
        other => format!("{other:?}"),
    }
}

pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    let cases = list(v, "cases")?;
    let mut parsed = vec![];
    for (i, c) in cases.iter().enumerate() {
        let inp = inputs_of(c)?;
        let computed = case(&inp)?;
        for key in [
            "ik_a",
            "ik_b",
            "spk",
            "opk",
            "ek",
            "spk_signed_message",
            "spk_signature",
            "kem_public",
            "kem_signed_message",
            "kem_signature",
            "bundle",
            "dh1",
            "dh2",
            "dh3",
            "dh4",
            "kem_ciphertext",
            "ss",
            "sk",
            "ad",
            "wire",
        ] {
            r.check(c.get(key) == computed.get(key), || {
                format!("pqxdh cases[{i}].{key} differs")
            });
        }
        // The real responder opens the recorded first message.
        let mut responder = Responder {
            bob: bob(&inp),
            kem_deleted: false,
            used: HashSet::new(),
        };
        let opened = responder.accept(&bytes(c, "wire")?);
        r.check(opened.as_deref() == Ok(&inp.plaintext[..]), || {
            format!("pqxdh cases[{i}]: the responder got {opened:?}")
        });
        parsed.push(inp);
    }
    for (i, e) in list(v, "bundle_negative")?.iter().enumerate() {
        let a = IdentityKeyPair::from_seed(&SecretBytes::from_bytes(arr32(e, "ik_a_seed")?));
        let policy = match text(e, "policy")? {
            "post_quantum_only" => SuitePolicy::PostQuantumOnly,
            _ => SuitePolicy::PostQuantumWhenOffered,
        };
        let got = match PrekeyBundle::from_bytes(&bytes(e, "bundle")?) {
            Err(_) => "Decode".to_string(),
            Ok(bundle) => {
                match Session::initiate_with(&a, &bundle, None, policy, &mut Scripted::new(&[])) {
                    Ok(_) => "accepted".into(),
                    Err(err) => class_of_init(&err),
                }
            }
        };
        r.eq(
            &format!("pqxdh bundle_negative[{i}]"),
            text(e, "error")?,
            &got,
        );
    }
    for (i, e) in list(v, "responder_negative")?.iter().enumerate() {
        let index = num(e, "case")? as usize;
        let inp = parsed
            .get(index)
            .ok_or_else(|| VectorError::Field(format!("case {index}")))?;
        let mut responder = Responder {
            bob: bob(inp),
            kem_deleted: false,
            used: HashSet::new(),
        };
        for earlier in list(e, "accepted")? {
            let j = earlier
                .as_u64()
                .and_then(|j| cases.get(j as usize))
                .ok_or_else(|| VectorError::Field("accepted".into()))?;
            let accepted = responder.accept(&bytes(j, "wire")?);
            r.check(accepted.is_ok(), || {
                format!("pqxdh responder_negative[{i}]: earlier message refused")
            });
        }
        let got = match responder.accept(&bytes(e, "wire")?) {
            Ok(_) => "accepted".to_string(),
            Err(class) => class,
        };
        r.eq(
            &format!("pqxdh responder_negative[{i}]"),
            text(e, "error")?,
            &got,
        );
    }
    Ok(())
}
