//! A small canonical protobuf encoder driven by a schema table, used to build the wire
//! vectors (and hand-made messages such as unauthorised changes) from field values. The
//! real crates' decoders check every result.

use serde_json::{Map, Value, json};

use crate::util::{VectorError, h, pattern};

#[derive(Clone, Copy)]
enum K {
    /// Varint, omitted when 0.
    Int,
    /// Varint with presence (`optional`), written when the key exists.
    OptInt,
    /// Length-delimited bytes (hex in JSON), omitted when empty.
    Bytes,
    /// Bytes in a oneof: written when the key exists, even if empty.
    OneofBytes,
    /// A nested message, written when the key exists (also for oneof members).
    Msg(&'static str),
    /// A repeated nested message.
    Rep(&'static str),
}

fn schema(t: &str) -> Option<&'static [(&'static str, u32, K)]> {
    use K::*;
    Some(match t {
        "Header" => &[
            ("version", 1, Int),
            ("ratchet_key", 2, Bytes),
            ("previous_chain_length", 3, Int),
            ("message_number", 4, Int),
        ],
        "RatchetMessage" => &[("header", 1, Bytes), ("ciphertext", 2, Bytes)],
        "PrekeyMessage" => &[
            ("version", 1, Int),
            ("identity_key", 2, Bytes),
            ("base_key", 3, Bytes),
            ("signed_prekey_id", 4, Int),
            ("one_time_prekey_id", 5, OptInt),
            ("message", 6, Msg("RatchetMessage")),
            ("kem_prekey_id", 7, OptInt),
            ("kem_ciphertext", 8, Bytes),
        ],
        "SessionMessage" => &[
            ("ratchet", 1, Msg("RatchetMessage")),
            ("prekey", 2, Msg("PrekeyMessage")),
        ],
        "PrekeyBundle" => &[
            ("version", 1, Int),
            ("identity_key", 2, Bytes),
            ("signed_prekey_id", 3, Int),
            ("signed_prekey", 4, Bytes),
            ("signed_prekey_signature", 5, Bytes),
            ("one_time_prekey", 6, Msg("OneTimePrekey")),
            ("kem_prekey", 7, Msg("KemPrekey")),
        ],
        "OneTimePrekey" => &[("id", 1, Int), ("key", 2, Bytes)],
        "KemPrekey" => &[("id", 1, Int), ("key", 2, Bytes), ("signature", 3, Bytes)],
        "Member" => &[("identity_key", 1, Bytes), ("role", 2, Int)],
        "GroupMessageContent" => &[
            ("version", 1, Int),
            ("group_id", 2, Bytes),
            ("sender", 3, Bytes),
            ("epoch", 4, Int),
            ("chain_id", 5, Int),
            ("iteration", 6, Int),
            ("ciphertext", 7, Bytes),
        ],
        "GroupMessage" | "ControlMessage" | "GroupInfo" => {
            &[("content", 1, Bytes), ("signature", 2, Bytes)]
        }
        "SenderKeyDistribution" => &[
            ("version", 1, Int),
            ("group_id", 2, Bytes),
            ("epoch", 3, Int),
            ("chain_id", 4, Int),
            ("iteration", 5, Int),
            ("chain_key", 6, Bytes),
            ("signing_key", 7, Bytes),
        ],
        "Create" => &[("members", 1, Rep("Member"))],
        "Leave" => &[],
        "ControlContent" => &[
            ("version", 1, Int),
            ("group_id", 2, Bytes),
            ("epoch", 3, Int),
            ("parent", 4, Bytes),
            ("signer", 5, Bytes),
            ("create", 6, Msg("Create")),
            ("add", 7, Msg("Member")),
            ("remove", 8, OneofBytes),
            ("leave", 9, Msg("Leave")),
            ("promote", 10, OneofBytes),
            ("demote", 11, OneofBytes),
        ],
        "GroupInfoContent" => &[
            ("version", 1, Int),
            ("group_id", 2, Bytes),
            ("epoch", 3, Int),
            ("head", 4, Bytes),
            ("members", 5, Rep("Member")),
            ("signer", 6, Bytes),
        ],
        _ => return None,
    })
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn ld(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(number << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The canonical encoding of message type `t` with `fields` (JSON, as in wire.json).
pub(crate) fn encode(t: &str, fields: &Value) -> Result<Vec<u8>, VectorError> {
    let bad = |what: &str| VectorError::Field(format!("{t}.{what}"));
    let table = schema(t).ok_or_else(|| bad("unknown type"))?;
    let obj = fields
        .as_object()
        .ok_or_else(|| bad("fields is not an object"))?;
    if let Some(k) = obj.keys().find(|k| !table.iter().any(|(n, _, _)| n == k)) {
        return Err(bad(k));
    }
    let mut out = vec![];
    for (name, number, kind) in table {
        let Some(v) = obj.get(*name) else { continue };
        let hexed = || -> Result<Vec<u8>, VectorError> {
            hex::decode(v.as_str().ok_or_else(|| bad(name))?).map_err(|_| bad(name))
        };
        match kind {
            K::Int | K::OptInt => {
                let n = v.as_u64().ok_or_else(|| bad(name))?;
                if n != 0 || matches!(kind, K::OptInt) {
                    varint(u64::from(number << 3), &mut out);
                    varint(n, &mut out);
                }
            }
            K::Bytes => {
                let b = hexed()?;
                if !b.is_empty() {
                    ld(*number, &b, &mut out);
                }
            }
            K::OneofBytes => ld(*number, &hexed()?, &mut out),
            K::Msg(inner) => ld(*number, &encode(inner, v)?, &mut out),
            K::Rep(inner) => {
                for item in v.as_array().ok_or_else(|| bad(name))? {
                    ld(*number, &encode(inner, item)?, &mut out);
                }
            }
        }
    }
    Ok(out)
}

fn entry(t: &str, fields: Value) -> Result<Value, VectorError> {
    let bytes = encode(t, &fields)?;
    Ok(json!({"type": t, "fields": fields, "bytes": h(&bytes)}))
}

fn with(mut base: Value, key: &str, v: Value) -> Value {
    if let Some(o) = base.as_object_mut() {
        o.insert(key.to_string(), v);
    }
    base
}

/// A valid ML-KEM-768 public key (from a fixed seed).
fn kem_key() -> Vec<u8> {
    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&pattern(0xa0));
    seed[32..].copy_from_slice(&pattern(0xc0));
    hush_crypto::kem::KemKeyPair::from_seed(hush_crypto::SecretBytes::from_bytes(seed))
        .public()
        .to_bytes()
        .to_vec()
}

fn ident(seed: u8) -> Vec<u8> {
    hush_crypto::IdentityKeyPair::from_seed(&hush_crypto::SecretBytes::from_bytes(pattern(seed)))
        .public()
        .to_bytes()
        .to_vec()
}

/// Positive encodings, one or more per message type.
pub(crate) fn valid_entries() -> Result<Vec<Value>, VectorError> {
    let rk = h(&pattern(0xa0));
    let header0 = json!({"version": 1, "ratchet_key": rk});
    let header_big = json!({"version": 1, "ratchet_key": rk, "previous_chain_length": 300, "message_number": 70000});
    let hb = encode("Header", &header_big)?;
    let ratchet = json!({"header": h(&hb), "ciphertext": h(&[0x5a; 25])});
    let prekey = json!({
        "version": 1, "identity_key": h(&ident(0)), "base_key": h(&pattern(0x80)), "signed_prekey_id": 1,
        "one_time_prekey_id": 0, "message": ratchet,
    });
    let prekey_no_opk = json!({
        "version": 1, "identity_key": h(&ident(0)), "base_key": h(&pattern(0x80)), "signed_prekey_id": 0, "message": ratchet,
    });
    let bundle = json!({
        "version": 1, "identity_key": h(&ident(0x20)), "signed_prekey_id": 1, "signed_prekey": h(&pattern(0x40)),
        "signed_prekey_signature": h(&[7; 64]), "one_time_prekey": {"id": 2, "key": h(&pattern(0x60))},
    });
    let bundle_no_opk = json!({
        "version": 1, "identity_key": h(&ident(0x20)), "signed_prekey": h(&pattern(0x40)),
        "signed_prekey_signature": h(&[7; 64]),
    });
    // PQXDH fields: a KEM prekey id of 0 is present in a prekey message (optional) and
    // omitted in a bundle's KemPrekey (plain).
    let prekey_pq = with(
        with(prekey_no_opk.clone(), "kem_prekey_id", json!(0)),
        "kem_ciphertext",
        h(&[0x4b; 1088]),
    );
    let bundle_pq = with(
        bundle_no_opk.clone(),
        "kem_prekey",
        json!({"key": h(&kem_key()), "signature": h(&[8; 64])}),
    );
    let gid = h(&pattern(0x90));
    let content = json!({
        "version": 1, "group_id": gid, "sender": h(&ident(0)), "epoch": 3, "chain_id": 0x0102_0304u32,
        "iteration": 129, "ciphertext": h(&[0x33; 27]),
    });
    let content_bytes = encode("GroupMessageContent", &content)?;
    let member_admin = json!({"identity_key": h(&ident(0)), "role": 1});
    let member = json!({"identity_key": h(&ident(0x20)), "role": 0});
    let control_base = json!({"version": 1, "group_id": gid, "epoch": 4, "parent": h(&pattern(0xf0)), "signer": h(&ident(0))});
    let control_create = json!({"version": 1, "group_id": gid, "parent": h(&[0; 32]), "signer": h(&ident(0)), "create": {"members": [member_admin, member]}});
    let cc = encode("ControlContent", &control_create)?;
    let info = json!({"version": 1, "group_id": gid, "epoch": 4, "head": h(&pattern(0xf0)), "members": [member_admin, member], "signer": h(&ident(0))});
    let ic = encode("GroupInfoContent", &info)?;
    let target = h(&ident(0x20));
    let mut out = vec![
        entry("Header", header0.clone())?,
        entry("Header", header_big)?,
        entry("RatchetMessage", ratchet.clone())?,
        entry("PrekeyMessage", prekey.clone())?,
        entry("SessionMessage", json!({"ratchet": ratchet}))?,
        entry("SessionMessage", json!({"prekey": prekey}))?,
        entry("SessionMessage", json!({"prekey": prekey_no_opk}))?,
        entry("PrekeyBundle", bundle)?,
        entry("PrekeyBundle", bundle_no_opk)?,
        entry("SessionMessage", json!({"prekey": prekey_pq}))?,
        entry("PrekeyBundle", bundle_pq)?,
        entry("GroupMessageContent", content)?,
        entry(
            "GroupMessage",
            json!({"content": h(&content_bytes), "signature": h(&[9; 64])}),
        )?,
        entry(
            "SenderKeyDistribution",
            json!({"version": 1, "group_id": gid, "epoch": 2, "chain_id": 77, "iteration": 5, "chain_key": h(&pattern(0xa0)), "signing_key": h(&ident(0x40))}),
        )?,
        entry("ControlContent", control_create)?,
        entry("ControlContent", with(control_base.clone(), "add", member))?,
        entry(
            "ControlContent",
            with(control_base.clone(), "remove", target.clone()),
        )?,
        entry(
            "ControlContent",
            with(control_base.clone(), "leave", json!({})),
        )?,
        entry(
            "ControlContent",
            with(control_base.clone(), "promote", target.clone()),
        )?,
        entry("ControlContent", with(control_base, "demote", target))?,
        entry(
            "ControlMessage",
            json!({"content": h(&cc), "signature": h(&[9; 64])}),
        )?,
        entry("GroupInfoContent", info)?,
        entry(
            "GroupInfo",
            json!({"content": h(&ic), "signature": h(&[9; 64])}),
        )?,
    ];
    // A header with N = 0 but PN set, for the omission rule.
    out.push(entry(
        "Header",
        with(header0, "previous_chain_length", json!(1)),
    )?);
    Ok(out)
}

fn bad(t: &str, bytes: Vec<u8>, reason: &str) -> Value {
    json!({"type": t, "bytes": h(&bytes), "error": "Decode", "reason": reason})
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Encodings a strict decoder must refuse.
pub(crate) fn invalid_entries() -> Result<Vec<Value>, VectorError> {
    let key = pattern(0xa0);
    let header = cat(&[&[0x08, 0x01, 0x12, 0x20], &key]);
    let session = |fields: Value| encode("SessionMessage", &fields);
    let good_header = h(&header);
    let short_ct = session(json!({"ratchet": {"header": good_header, "ciphertext": h(&[1; 15])}}))?;
    let weak_identity = {
        let mut one = [0u8; 32];
        one[0] = 1;
        session(
            json!({"prekey": {"version": 1, "identity_key": h(&one), "base_key": h(&pattern(0x80)),
            "message": {"header": good_header, "ciphertext": h(&[1; 16])}}}),
        )?
    };
    let gid = h(&pattern(0x90));
    let content_short_sender = encode(
        "GroupMessageContent",
        &json!({"version": 1, "group_id": gid, "sender": h(&[1; 31]), "chain_id": 1, "ciphertext": h(&[1; 16])}),
    )?;
    let control_no_action = encode(
        "ControlContent",
        &json!({"version": 1, "group_id": gid, "epoch": 1, "parent": h(&[0; 32]), "signer": h(&ident(0))}),
    )?;
    let control_bad_role = {
        let mut c = encode(
            "ControlContent",
            &json!({"version": 1, "group_id": gid, "epoch": 1, "parent": h(&[0; 32]), "signer": h(&ident(0)),
                "add": {"identity_key": h(&ident(0x20)), "role": 2}}),
        )?;
        c.truncate(c.len());
        c
    };
    let info_v2 = encode(
        "GroupInfoContent",
        &json!({"version": 2, "group_id": gid, "head": h(&[0; 32]), "signer": h(&ident(0))}),
    )?;
    let signed = |content: Vec<u8>| -> Result<Vec<u8>, VectorError> {
        encode(
            "GroupMessage",
            &json!({"content": h(&content), "signature": h(&[9; 64])}),
        )
    };
    // PQXDH fields (SPEC §9.4, §9.5).
    let pq = |kem_id: Option<u32>, ct_len: usize| {
        let mut p = json!({"version": 1, "identity_key": h(&ident(0)), "base_key": h(&pattern(0x80)),
            "message": {"header": good_header, "ciphertext": h(&[1; 16])}});
        if let Some(id) = kem_id {
            p = with(p, "kem_prekey_id", json!(id));
        }
        if ct_len > 0 {
            p = with(p, "kem_ciphertext", h(&vec![0x4b; ct_len]));
        }
        session(json!({ "prekey": p }))
    };
    let bundle_kem = |key: Vec<u8>, sig: usize| {
        encode(
            "PrekeyBundle",
            &json!({"version": 1, "identity_key": h(&ident(0x20)), "signed_prekey": h(&pattern(0x40)),
                "signed_prekey_signature": h(&[7; 64]),
                "kem_prekey": {"id": 3, "key": h(&key), "signature": h(&vec![8; sig])}}),
        )
    };
    let mut not_canonical = kem_key();
    not_canonical[0] = 0xff;
    not_canonical[1] |= 0x0f;
    let pq_entries = vec![
        bad(
            "SessionMessage",
            pq(Some(3), 0)?,
            "kem_prekey_id without kem_ciphertext",
        ),
        bad(
            "SessionMessage",
            pq(None, 1088)?,
            "kem_ciphertext without kem_prekey_id",
        ),
        bad(
            "SessionMessage",
            pq(Some(3), 1087)?,
            "1,087-byte KEM ciphertext",
        ),
        bad(
            "SessionMessage",
            pq(Some(3), 1089)?,
            "1,089-byte KEM ciphertext",
        ),
        bad(
            "PrekeyBundle",
            bundle_kem(not_canonical, 64)?,
            "KEM public key with a coefficient not below q",
        ),
        bad(
            "PrekeyBundle",
            bundle_kem(kem_key()[..1183].to_vec(), 64)?,
            "1,183-byte KEM public key",
        ),
        bad(
            "PrekeyBundle",
            bundle_kem(kem_key(), 63)?,
            "63-byte KEM prekey signature",
        ),
    ];
    Ok([
        bad(
            "Header",
            cat(&[&header, &[0x18, 0x00]]),
            "PN = 0 written explicitly",
        ),
        bad(
            "Header",
            cat(&[&[0x12, 0x20], &key, &[0x08, 0x01]]),
            "fields out of order",
        ),
        bad(
            "Header",
            cat(&[&[0x08, 0x81, 0x00, 0x12, 0x20], &key]),
            "non-minimal varint",
        ),
        bad(
            "Header",
            cat(&[&[0x08, 0x02, 0x12, 0x20], &key]),
            "version 2",
        ),
        bad(
            "Header",
            cat(&[&[0x08, 0x01, 0x12, 0x1f], &key[..31]]),
            "31-byte ratchet key",
        ),
        bad("Header", cat(&[&header, &[0x28, 0x01]]), "unknown field 5"),
        bad(
            "Header",
            cat(&[&header, &[0x08, 0x01]]),
            "version written twice",
        ),
        bad("Header", header[..30].to_vec(), "truncated"),
        bad("SessionMessage", vec![], "no body"),
        bad("SessionMessage", short_ct, "15-byte ciphertext"),
        bad(
            "SessionMessage",
            weak_identity,
            "identity key of small order",
        ),
        bad(
            "PrekeyBundle",
            cat(&[
                &[0x08, 0x01, 0x12, 0x20],
                &ident(0x20),
                &[0x22, 0x20],
                &pattern(0x40),
                &[0x2a, 0x3f],
                &[7; 63],
            ]),
            "63-byte signature",
        ),
        bad(
            "GroupMessage",
            signed(content_short_sender)?,
            "31-byte sender",
        ),
        bad(
            "GroupMessage",
            encode("GroupMessage", &json!({"content": h(&[0x08, 0x01])}))?,
            "no signature",
        ),
        bad(
            "SenderKeyDistribution",
            encode(
                "SenderKeyDistribution",
                &json!({"version": 1, "group_id": gid, "chain_id": 1, "chain_key": h(&[1; 31]), "signing_key": h(&ident(0x40))}),
            )?,
            "31-byte chain key",
        ),
        bad(
            "ControlMessage",
            encode(
                "ControlMessage",
                &json!({"content": h(&control_no_action), "signature": h(&[9; 64])}),
            )?,
            "no action",
        ),
        bad(
            "ControlMessage",
            encode(
                "ControlMessage",
                &json!({"content": h(&control_bad_role), "signature": h(&[9; 64])}),
            )?,
            "role 2",
        ),
        bad(
            "GroupInfo",
            encode(
                "GroupInfo",
                &json!({"content": h(&info_v2), "signature": h(&[9; 64])}),
            )?,
            "version 2",
        ),
    ]
    .into_iter()
    .chain(pq_entries)
    .collect())
}

/// Builds a signed control message by hand (for changes the real API refuses to make).
pub(crate) fn control_message(
    content_fields: &Value,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), VectorError> {
    let content = encode("ControlContent", content_fields)?;
    let mut m = hush_groups::wire::CONTROL_SIGNATURE_CONTEXT.to_vec();
    m.extend_from_slice(&content);
    let sig = sign(&m);
    let msg = encode(
        "ControlMessage",
        &json!({"content": h(&content), "signature": h(&sig)}),
    )?;
    Ok((content, msg))
}

#[allow(dead_code)]
fn _unused(_: Map<String, Value>) {}
