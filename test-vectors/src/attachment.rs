//! Attachment vectors: the chunked AEAD of SPEC §15, at every chunk boundary, and blobs a
//! reader must refuse.

use hush_crypto::attachment::{self, AttachmentError, AttachmentKey, CHUNK, SEGMENT};
use hush_crypto::hash::sha256;
use serde_json::{Value, json};

use crate::util::{Report, VectorError, arr32, check_hex, gen_err, h, list, num, pattern, text};

/// Plaintext byte `i` of a case is `i mod 251`.
fn plaintext(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Hex of small blobs is recorded whole; larger ones by length, digest and last 48 bytes.
const WHOLE: usize = 512;

fn case_json(key: &[u8; 32], len: u64) -> Result<Value, VectorError> {
    let blob =
        attachment::seal(&AttachmentKey::from_bytes(*key), &plaintext(len)).map_err(gen_err)?;
    let mut c = json!({
        "key": h(key),
        "plaintext_len": len,
        "blob_len": blob.len(),
        "blob_sha256": h(&sha256(&[&blob])),
        "blob_tail": h(&blob[blob.len().saturating_sub(48)..]),
    });
    if blob.len() <= WHOLE {
        c["blob"] = h(&blob);
    }
    Ok(c)
}

/// Applies a recorded mutation to a sealed blob.
fn mutate(blob: &[u8], m: &Value) -> Result<Vec<u8>, VectorError> {
    Ok(match text(m, "mutation")? {
        "truncate" => blob[..(num(m, "to")? as usize).min(blob.len())].to_vec(),
        "flip" => {
            let mut b = blob.to_vec();
            let at = num(m, "at")? as usize;
            if let Some(x) = b.get_mut(at) {
                *x ^= 1;
            }
            b
        }
        "swap_first_two_segments" => {
            if blob.len() < 2 * SEGMENT {
                return Err(VectorError::Field("swap needs two full segments".into()));
            }
            [
                &blob[SEGMENT..2 * SEGMENT],
                &blob[..SEGMENT],
                &blob[2 * SEGMENT..],
            ]
            .concat()
        }
        "append" => [blob, &crate::util::bytes(m, "bytes")?].concat(),
        other => return Err(VectorError::Field(format!("unknown mutation {other}"))),
    })
}

fn error_name(e: AttachmentError) -> String {
    match e {
        AttachmentError::Chunk { index } => format!("Chunk({index})"),
        AttachmentError::Sequence => "Sequence".into(),
        _ => "other".into(),
    }
}

pub(crate) fn generate() -> Result<Value, VectorError> {
    let key = pattern(0x40);
    let lens = [
        0,
        1,
        300,
        CHUNK as u64 - 1,
        CHUNK as u64,
        CHUNK as u64 + 1,
        3 * CHUNK as u64,
    ];
    let cases = lens
        .iter()
        .map(|&l| case_json(&key, l))
        .collect::<Result<Vec<_>, _>>()?;
    let two = 2 * CHUNK as u64 + 1;
    let blob =
        attachment::seal(&AttachmentKey::from_bytes(key), &plaintext(two)).map_err(gen_err)?;
    let invalid = [
        json!({"mutation": "truncate", "to": SEGMENT}),
        json!({"mutation": "truncate", "to": blob.len() - 1}),
        json!({"mutation": "truncate", "to": 0}),
        json!({"mutation": "truncate", "to": SEGMENT + 15}),
        json!({"mutation": "flip", "at": 0}),
        json!({"mutation": "flip", "at": blob.len() - 1}),
        json!({"mutation": "swap_first_two_segments"}),
        json!({"mutation": "append", "bytes": h(&[0u8; 16])}),
    ];
    let invalid = invalid
        .into_iter()
        .map(|mut m| {
            let bad = mutate(&blob, &m)?;
            let got = attachment::open(&AttachmentKey::from_bytes(key), &bad)
                .map(|_| "accepted".to_string())
                .unwrap_or_else(error_name);
            m["key"] = h(&key);
            m["plaintext_len"] = json!(two);
            m["error"] = json!(got);
            Ok(m)
        })
        .collect::<Result<Vec<_>, VectorError>>()?;
    Ok(json!({
        "description": "Chunked AEAD for attachments (SPEC §15). Plaintext byte i is i mod 251. Blobs over 512 bytes are given by length, SHA-256 (the relay's blob id) and last 48 bytes. Invalid entries mutate the blob of the case with plaintext_len bytes; error is Chunk(index of the first chunk that fails) or Sequence (a segment shorter than the tag, or an empty blob).",
        "chunk": CHUNK,
        "cases": cases,
        "invalid": invalid,
    }))
}

pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    r.check(num(v, "chunk")? == CHUNK as u64, || {
        "attachment chunk size differs".into()
    });
    for (i, c) in list(v, "cases")?.iter().enumerate() {
        let ctx = format!("attachment cases[{i}]");
        let key = arr32(c, "key")?;
        let len = num(c, "plaintext_len")?;
        let blob =
            attachment::seal(&AttachmentKey::from_bytes(key), &plaintext(len)).map_err(gen_err)?;
        r.check(num(c, "blob_len")? == blob.len() as u64, || {
            format!("{ctx}: blob_len differs")
        });
        check_hex(r, &ctx, c, "blob_sha256", &sha256(&[&blob]));
        check_hex(
            r,
            &ctx,
            c,
            "blob_tail",
            &blob[blob.len().saturating_sub(48)..],
        );
        if c.get("blob").is_some() {
            check_hex(r, &ctx, c, "blob", &blob);
        }
        let opened = attachment::open(&AttachmentKey::from_bytes(key), &blob);
        r.check(opened.is_ok_and(|p| *p == plaintext(len)), || {
            format!("{ctx}: does not open")
        });
    }
    for (i, m) in list(v, "invalid")?.iter().enumerate() {
        let key = AttachmentKey::from_bytes(arr32(m, "key")?);
        let blob = attachment::seal(&key, &plaintext(num(m, "plaintext_len")?)).map_err(gen_err)?;
        let got = attachment::open(&key, &mutate(&blob, m)?)
            .map(|_| "accepted".to_string())
            .unwrap_or_else(error_name);
        r.eq(&format!("attachment invalid[{i}]"), text(m, "error")?, &got);
    }
    Ok(())
}
