//! Decoding of untrusted client payloads (docs/SPEC.md §16), in one place: the relay
//! envelope's `Payload`, and the `Content` inside a decrypted message with its attachment
//! pointer. Everything the receiving path reads goes through these checks.
//!
//! ```
//! use hush_client::wire;
//! assert!(wire::parse_payload(&[0xff]).is_err());
//! assert!(wire::parse_content(&[], &[0; 16]).is_err());
//! ```

use prost::Message as _;

use crate::event::{Attachment, GroupId};
use crate::proto::client as pc;

/// Why client payload bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a protobuf of the expected message.
    #[error("not a valid encoding")]
    Malformed,
    /// A field is missing, the wrong length, or out of range.
    #[error("invalid field: {0}")]
    Field(&'static str),
}

/// What a relay envelope's ciphertext holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A session message (SPEC §9.3).
    Session(Vec<u8>),
    /// A sender-key group message (SPEC §13.3) for a group.
    Group {
        /// The group.
        group_id: GroupId,
        /// The group message.
        message: Vec<u8>,
    },
}

/// Decodes a relay envelope's ciphertext.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, WireError> {
    let p = pc::Payload::decode(bytes).map_err(|_| WireError::Malformed)?;
    match p.kind {
        Some(pc::payload::Kind::Session(s)) if !s.is_empty() => Ok(Payload::Session(s)),
        Some(pc::payload::Kind::Group(g)) => Ok(Payload::Group {
            group_id: g
                .group_id
                .as_slice()
                .try_into()
                .map_err(|_| WireError::Field("group_id"))?,
            message: g.message,
        }),
        _ => Err(WireError::Field("kind")),
    }
}

/// Decodes and checks decrypted content: its message id must be 16 bytes and equal the
/// envelope's; an attachment pointer must be well formed; group ids must be 32 bytes.
pub fn parse_content(bytes: &[u8], envelope_message_id: &[u8]) -> Result<pc::Content, WireError> {
    let c = pc::Content::decode(bytes).map_err(|_| WireError::Malformed)?;
    if c.message_id.len() != 16 || c.message_id != envelope_message_id {
        return Err(WireError::Field("message_id"));
    }
    match &c.body {
        None => return Err(WireError::Field("body")),
        Some(pc::content::Body::Text(t)) if t.len() > crate::MAX_TEXT => {
            return Err(WireError::Field("text"));
        }
        Some(pc::content::Body::Attachment(a)) => {
            attachment(a)?;
        }
        Some(pc::content::Body::GroupControl(g)) if g.group_id.len() != 32 => {
            return Err(WireError::Field("group_id"));
        }
        Some(pc::content::Body::Read(r))
            if r.message_ids.is_empty()
                || r.message_ids.len() > hush_relay_protocol::limits::MAX_READ_IDS
                || r.message_ids.iter().any(|m| m.len() != 16) =>
        {
            return Err(WireError::Field("read"));
        }
        Some(pc::content::Body::SenderKey(k)) if k.group_id.len() != 32 => {
            return Err(WireError::Field("group_id"));
        }
        _ => {}
    }
    if let Some(sync) = &c.sync {
        match &sync.with {
            Some(pc::conversation::With::UserId(u))
                if !u.is_empty() && u.len() <= crate::MAX_USER_ID => {}
            Some(pc::conversation::With::GroupId(g)) if g.len() == 32 => {}
            _ => return Err(WireError::Field("sync")),
        }
    }
    Ok(c)
}

/// Checks an attachment pointer (SPEC §15.2): a 64-digit lower-case hex blob id equal to
/// the hex of the 32-byte digest, and a 32-byte key.
pub fn attachment(a: &pc::AttachmentPointer) -> Result<Attachment, WireError> {
    let key: [u8; 32] = a
        .key
        .as_slice()
        .try_into()
        .map_err(|_| WireError::Field("key"))?;
    let digest: [u8; 32] = a
        .digest
        .as_slice()
        .try_into()
        .map_err(|_| WireError::Field("digest"))?;
    if a.blob_id != hex::encode(digest) {
        return Err(WireError::Field("blob_id"));
    }
    if a.size > (1u64 << 40) {
        return Err(WireError::Field("size"));
    }
    Ok(Attachment {
        blob_id: a.blob_id.clone(),
        key,
        digest,
        size: a.size,
        media_type: a.media_type.clone(),
        file_name: a.file_name.clone(),
    })
}
