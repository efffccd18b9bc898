//! Franking vectors (SPEC §17): commitments, relay tags, and reports an operator must accept
//! or refuse (with the class of the refusal).

use hush_crypto::franking::{self, FrankingKey, RelayFrankingKey, ReportError, Stamp};
use serde_json::{Value, json};

use crate::util::{Report, VectorError, arr32, bytes, check_hex, list, num, seeded, text};

fn stamp_json(s: &Stamp<'_>) -> Value {
    json!({
        "sender_user": s.sender.0, "sender_device": s.sender.1,
        "recipient_user": s.recipient.0, "recipient_device": s.recipient.1,
        "server_ms": s.server_ms,
    })
}

fn stamp_of(v: &Value) -> Result<Stamp<'_>, VectorError> {
    let device = |name| {
        u32::try_from(num(v, name)?).map_err(|_| VectorError::Field(format!("{name} too large")))
    };
    Ok(Stamp {
        sender: (text(v, "sender_user")?, device("sender_device")?),
        recipient: (text(v, "recipient_user")?, device("recipient_device")?),
        server_ms: num(v, "server_ms")?,
    })
}

/// The franking vectors.
pub(crate) fn generate() -> Value {
    let relay_key = seeded("franking relay key");
    let relay = RelayFrankingKey::from_bytes(relay_key);
    let contents: [&[u8]; 3] = [b"", b"hello", &[0x5a; 300]];
    let commitments: Vec<Value> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let nf = seeded(&format!("franking key {i}"));
            let cf = franking::commit(&FrankingKey::from_bytes(nf), c);
            json!({"franking_key": hex::encode(nf), "content": hex::encode(c), "commitment": hex::encode(cf)})
        })
        .collect();
    // One message from mallory.1 to alice.2, reported.
    let nf = seeded("franking key 1");
    let key = FrankingKey::from_bytes(nf);
    let content = b"an abusive message";
    let cf = franking::commit(&key, content);
    let stamp = Stamp {
        sender: ("mallory", 1),
        recipient: ("alice", 2),
        server_ms: 1_700_000_000_000,
    };
    let tags: Vec<Value> = [
        stamp,
        Stamp {
            recipient: ("bob", 1),
            ..stamp
        },
        Stamp {
            server_ms: 1_700_000_000_001,
            ..stamp
        },
    ]
    .iter()
    .map(|s| {
        json!({"commitment": hex::encode(cf), "stamp": stamp_json(s),
               "tag": hex::encode(franking::relay_tag(&relay, &cf, s))})
    })
    .collect();
    let rf = franking::relay_tag(&relay, &cf, &stamp);
    let rf_bob = franking::relay_tag(
        &relay,
        &cf,
        &Stamp {
            recipient: ("bob", 1),
            ..stamp
        },
    );
    let other_key = seeded("franking key 9");
    let other_cf = franking::commit(&FrankingKey::from_bytes(other_key), b"never sent");
    let report = |name: &str,
                  content: &[u8],
                  nf: [u8; 32],
                  cf: [u8; 32],
                  rf: [u8; 32],
                  s: Stamp<'_>,
                  result: &str| {
        json!({"name": name, "content": hex::encode(content), "franking_key": hex::encode(nf),
               "commitment": hex::encode(cf), "tag": hex::encode(rf), "stamp": stamp_json(&s),
               "result": result})
    };
    let reports = vec![
        report("valid", content, nf, cf, rf, stamp, "ok"),
        report(
            "changed message",
            b"a harmless message",
            nf,
            cf,
            rf,
            stamp,
            "Commitment",
        ),
        report(
            "another franking key and commitment for a message never sent",
            b"never sent",
            other_key,
            other_cf,
            rf,
            stamp,
            "RelayTag",
        ),
        report(
            "another sender",
            content,
            nf,
            cf,
            rf,
            Stamp {
                sender: ("bob", 1),
                ..stamp
            },
            "RelayTag",
        ),
        report(
            "a tag issued to another recipient, replayed by alice",
            content,
            nf,
            cf,
            rf_bob,
            stamp,
            "RelayTag",
        ),
        report(
            "another time",
            content,
            nf,
            cf,
            rf,
            Stamp {
                server_ms: 1_700_000_000_001,
                ..stamp
            },
            "RelayTag",
        ),
    ];
    // A franked Content (SPEC §16.2): message_id, sent_ms, text "hello", then the key.
    let mut committed = vec![0x0a, 0x10];
    committed.extend([0x11; 16]);
    committed.extend([0x10, 0xe8, 0x07, 0x1a, 0x05]);
    committed.extend(b"hello");
    let fk = seeded("franking key content");
    let plaintext = [&committed[..], &[0x7a, 0x20], &fk[..]].concat();
    let franked_content = json!({
        "content": hex::encode(&committed),
        "franking_key": hex::encode(fk),
        "plaintext": hex::encode(&plaintext),
        "commitment": hex::encode(franking::commit(&FrankingKey::from_bytes(fk), &committed)),
    });
    json!({
        "franked_content": franked_content,
        "description": "Message franking (SPEC §17): commitments cf = HMAC-SHA256(nf, label || content), the relay's tags binding cf to sender, recipient and time, and reports: result \"ok\" or the class of refusal (Commitment, RelayTag), checked in that order.",
        "relay_key": hex::encode(relay_key),
        "commitments": commitments,
        "relay_tags": tags,
        "reports": reports,
    })
}

/// Checks the franking vectors against `hush_crypto::franking`.
pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    let relay = RelayFrankingKey::from_bytes(arr32(v, "relay_key")?);
    for (i, c) in list(v, "commitments")?.iter().enumerate() {
        let key = FrankingKey::from_bytes(arr32(c, "franking_key")?);
        let cf = franking::commit(&key, &bytes(c, "content")?);
        check_hex(r, &format!("commitments[{i}]"), c, "commitment", &cf);
    }
    let f = crate::util::field(v, "franked_content")?;
    let committed = bytes(f, "content")?;
    let fk = arr32(f, "franking_key")?;
    let plaintext = [&committed[..], &[0x7a, 0x20], &fk[..]].concat();
    check_hex(r, "franked_content", f, "plaintext", &plaintext);
    let cf = franking::commit(&FrankingKey::from_bytes(fk), &committed);
    check_hex(r, "franked_content", f, "commitment", &cf);
    for (i, c) in list(v, "relay_tags")?.iter().enumerate() {
        let stamp = stamp_of(crate::util::field(c, "stamp")?)?;
        let rf = franking::relay_tag(&relay, &arr32(c, "commitment")?, &stamp);
        check_hex(r, &format!("relay_tags[{i}]"), c, "tag", &rf);
    }
    for c in list(v, "reports")? {
        let name = text(c, "name")?;
        let stamp = stamp_of(crate::util::field(c, "stamp")?)?;
        let got = franking::verify_report(
            &relay,
            &bytes(c, "content")?,
            &FrankingKey::from_bytes(arr32(c, "franking_key")?),
            &arr32(c, "commitment")?,
            &arr32(c, "tag")?,
            &stamp,
        );
        let got = match got {
            Ok(()) => "ok",
            Err(ReportError::Commitment) => "Commitment",
            Err(ReportError::RelayTag) => "RelayTag",
        };
        r.eq(&format!("reports[{name}]"), text(c, "result")?, got);
    }
    Ok(())
}
