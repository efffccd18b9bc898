//! Client payload vectors (SPEC §16.2): Contents as written and as forwarded, how each is
//! shown, and which forwards the rule allows.

use hush_client::{Body, Conversation, ForwardLimits, Message, wire};
use serde_json::{Value, json};

use crate::util::{Report, VectorError, bytes, list, num, text};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A text Content, canonical: message_id, sent_ms, text, forwarded (omitted if 0).
fn encode(message_id: &[u8; 16], sent_ms: u64, body: &str, forwarded: u64) -> Vec<u8> {
    let mut b = vec![0x0a, 0x10];
    b.extend_from_slice(message_id);
    b.push(0x10);
    varint(sent_ms, &mut b);
    b.push(0x1a);
    varint(body.len() as u64, &mut b);
    b.extend_from_slice(body.as_bytes());
    if forwarded > 0 {
        b.push(0x48);
        varint(forwarded, &mut b);
    }
    b
}

fn shown(forwarded: u32) -> &'static str {
    let m = Message {
        id: [0; 16],
        from: hush_client::Address::new("a", 1),
        conversation: Conversation::Direct("a".into()),
        body: Body::Text(String::new()),
        sent_ms: 0,
        server_ms: 0,
        outgoing: false,
        before_removal: false,
        forwarded,
        reportable: false,
    };
    if m.forwarded_many_times() {
        "forwarded many times"
    } else if m.is_forwarded() {
        "forwarded"
    } else {
        "original"
    }
}

/// The content vectors.
pub(crate) fn generate() -> Value {
    let id = [0x42; 16];
    let contents: Vec<Value> = [0u64, 1, 4, 5, 300]
        .iter()
        .map(|&f| {
            let body = format!("forwarded {f} times before");
            json!({
                "message_id": hex::encode(id),
                "sent_ms": 1_700_000_000_000u64,
                "text": body,
                "forwarded": f,
                "bytes": hex::encode(encode(&id, 1_700_000_000_000, &body, f)),
                "shown": shown(u32::try_from(f).unwrap_or(u32::MAX)),
            })
        })
        .collect();
    let limits = ForwardLimits::default();
    let forwards: Vec<Value> = [
        (0u32, 0usize),
        (0, 5),
        (0, 6),
        (4, 5),
        (4, 6),
        (5, 1),
        (5, 2),
        (300, 1),
    ]
    .iter()
    .map(|&(f, n)| json!({"forwarded": f, "chats": n, "allowed": limits.allows(f, n).is_ok()}))
    .collect();
    json!({
        "description": "Client Contents (SPEC §16.2): a text as its sender wrote it and as forwarded, its canonical bytes, how it is shown (original, forwarded, forwarded many times: forwarded >= 5), and whether a forward of a message forwarded `forwarded` times to `chats` chats at once is allowed (at most 5 chats, 1 once forwarded many times, at least 1).",
        "contents": contents,
        "forwards": forwards,
    })
}

/// Checks the content vectors against `hush-client`'s decoder and rules.
pub(crate) fn verify(v: &Value, r: &mut Report) -> Result<(), VectorError> {
    for (i, c) in list(v, "contents")?.iter().enumerate() {
        let b = bytes(c, "bytes")?;
        let id = bytes(c, "message_id")?;
        let want_text = text(c, "text")?;
        let forwarded = num(c, "forwarded")?;
        let sent_ms = num(c, "sent_ms")?;
        let id16: [u8; 16] = id
            .as_slice()
            .try_into()
            .map_err(|_| VectorError::Field("message_id is 16 bytes".into()))?;
        r.check(encode(&id16, sent_ms, want_text, forwarded) == b, || {
            format!("contents[{i}]: fields do not encode to bytes")
        });
        match wire::parse_content(&b, &id) {
            Ok(content) => {
                let ok = content.sent_ms == sent_ms
                    && u64::from(content.forwarded) == forwarded
                    && matches!(&content.body, Some(hush_client::proto::client::content::Body::Text(t)) if t == want_text);
                r.check(ok, || format!("contents[{i}]: decoded fields differ"));
                r.eq(
                    &format!("contents[{i}].shown"),
                    text(c, "shown")?,
                    shown(content.forwarded),
                );
            }
            Err(e) => r.fail(format!("contents[{i}]: refused: {e}")),
        }
    }
    let limits = ForwardLimits::default();
    for (i, c) in list(v, "forwards")?.iter().enumerate() {
        let f = u32::try_from(num(c, "forwarded")?)
            .map_err(|_| VectorError::Field("forwarded".into()))?;
        let n =
            usize::try_from(num(c, "chats")?).map_err(|_| VectorError::Field("chats".into()))?;
        let want = c.get("allowed").and_then(Value::as_bool).unwrap_or(false);
        let got = limits.allows(f, n).is_ok();
        r.check(want == got, || {
            format!("forwards[{i}]: expected {want}, got {got}")
        });
    }
    Ok(())
}
