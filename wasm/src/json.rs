//! What the JavaScript side sees: events, messages and errors as plain objects (the types
//! are declared in `api.rs`'s TypeScript section). Ids and keys are lowercase hex.

use hush_client::{
    Address, Body, ClientError, Conversation, DelayReason, DropReason, Event, GroupChange, Message,
    Presence, ReceiptKind, RelayErrorCode,
};
use serde_json::{Value, json};
use wasm_bindgen::JsValue;

pub(crate) fn to_js(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

pub(crate) fn address(a: &Address) -> Value {
    json!({ "user": a.user, "device": a.device })
}

pub(crate) fn receipt_kind(k: ReceiptKind) -> &'static str {
    match k {
        ReceiptKind::Sent => "sent",
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
    }
}

pub(crate) fn presence(p: &Presence) -> Value {
    json!({ "user": p.user, "online": p.online, "lastSeenMs": p.last_seen_ms })
}

pub(crate) fn message(m: &Message) -> Value {
    let conversation = match &m.conversation {
        Conversation::Direct(u) => json!({ "direct": u }),
        Conversation::Group(g) => json!({ "group": hex::encode(g) }),
    };
    let body = match &m.body {
        Body::Text(t) => json!({ "text": t }),
        Body::Attachment(a) => json!({
            "attachment": { "name": a.file_name, "mime": a.media_type, "size": a.size }
        }),
    };
    json!({
        "id": hex::encode(m.id),
        "from": address(&m.from),
        "conversation": conversation,
        "body": body,
        "sentMs": m.sent_ms,
        "serverMs": m.server_ms,
        "outgoing": m.outgoing,
        "forwarded": m.forwarded,
    })
}

/// A short, stable name for each kind of failure, for the page to pick its words.
pub(crate) fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Relay { code, .. } => match code {
            RelayErrorCode::UnknownRecipient | RelayErrorCode::NotFound => "unknown-user".into(),
            RelayErrorCode::MailboxFull => "mailbox-full".into(),
            RelayErrorCode::RateLimited => "rate-limited".into(),
            RelayErrorCode::TooLarge => "too-large".into(),
            RelayErrorCode::AuthFailed | RelayErrorCode::Unauthenticated => "auth-failed".into(),
            RelayErrorCode::Forbidden => "forbidden".into(),
            RelayErrorCode::ShuttingDown => "relay-down".into(),
            other => format!("relay-{other:?}").to_lowercase(),
        },
        ClientError::Unknown(_) => "unknown-user".into(),
        ClientError::Attachment(hush_client::AttachmentError::TooLarge { .. }) => {
            "too-large".into()
        }
        ClientError::Offline | ClientError::Io(_) => "relay-down".into(),
        ClientError::Sealed => "wrong-key".into(),
        ClientError::Invalid(_) => "invalid".into(),
        ClientError::Store(_) | ClientError::Corrupt => "storage".into(),
        ClientError::WrongRelay => "wrong-relay".into(),
        _ => "failed".into(),
    }
}

pub(crate) fn error(e: &ClientError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"code".into(), &error_code(e).into());
    err.into()
}

pub(crate) fn event(e: &Event) -> Value {
    match e {
        Event::Connected { registered } => json!({ "type": "connected", "registered": registered }),
        Event::Disconnected { reason } => json!({
            "type": "disconnected",
            "reason": reason.as_ref().map(|r| r.to_string()),
            "code": reason.as_ref().map(|r| error_code(r)),
        }),
        Event::Message(m) => json!({ "type": "message", "message": message(m) }),
        Event::Receipt {
            message_id,
            kind,
            by,
            at_ms,
        } => json!({
            "type": "receipt",
            "messageId": hex::encode(message_id),
            "kind": receipt_kind(*kind),
            "by": address(by),
            "atMs": at_ms,
        }),
        Event::Presence(p) => {
            let mut v = presence(p);
            v["type"] = "presence".into();
            v
        }
        Event::IdentityChanged {
            address: a,
            safety_number,
        } => json!({
            "type": "identityChanged",
            "address": address(a),
            "safetyNumber": safety_number.display_groups(),
        }),
        Event::Group { group, change, by } => {
            let (kind, who, name) = match change {
                GroupChange::Joined { name, .. } => ("joined", None, Some(name.clone())),
                GroupChange::Added(a) => ("added", Some(address(a)), None),
                GroupChange::Removed(a) => ("removed", Some(address(a)), None),
                GroupChange::Left(a) => ("left", Some(address(a)), None),
                GroupChange::RemovedSelf => ("removedSelf", None, None),
                GroupChange::RoleChanged(a) => ("roleChanged", Some(address(a)), None),
            };
            json!({
                "type": "group",
                "group": hex::encode(group),
                "change": kind,
                "member": who,
                "name": name,
                "by": address(by),
            })
        }
        Event::SendDelayed { message_id, reason } => json!({
            "type": "sendDelayed",
            "messageId": hex::encode(message_id),
            "code": match reason {
                DelayReason::MailboxFull => "mailbox-full",
                DelayReason::RateLimited => "rate-limited",
                _ => "delayed",
            },
        }),
        Event::SendFailed { message_id, reason } => json!({
            "type": "sendFailed",
            "messageId": hex::encode(message_id),
            "reason": reason.to_string(),
            "code": error_code(reason),
        }),
        Event::Dropped { from, reason } => json!({
            "type": "dropped",
            "from": address(from),
            "reason": match reason {
                DropReason::Malformed => "malformed",
                DropReason::Undecryptable(_) => "undecryptable",
                DropReason::NoSession => "no-session",
                DropReason::UnknownGroup => "unknown-group",
                DropReason::TooEarly => "too-early",
            },
        }),
        Event::SessionStarted {
            with,
            post_quantum,
            initiated,
        } => json!({
            "type": "sessionStarted",
            "with": address(with),
            "postQuantum": post_quantum,
            "initiated": initiated,
        }),
        _ => json!({ "type": "housekeeping" }),
    }
}
