//! Wire messages: typed views of the protobuf messages in `proto/hush_session.proto`.
//!
//! Decoding is strict: a message must be the one canonical protobuf encoding of its content
//! (fields in order, defaults omitted, minimal varints, no unknown fields), so every message
//! has exactly one byte form.

use hush_crypto::kem::{KEM_PUBLIC_KEY_LEN, KemCiphertext, KemPublicKey};
use hush_crypto::{IdentityPublicKey, KemError, Signature, X25519PublicKey};
use prost::Message as _;

use crate::erasure::CHUNK_LEN;
use crate::error::DecodeError;
use crate::limits::MAX_MESSAGE_LEN;
use crate::pq_ratchet::{Chunk, PqHeader};
use crate::proto;

/// Version of the header and prekey message encodings.
pub const MESSAGE_VERSION: u32 = 1;

/// Length of the Poly1305 tag at the end of every ciphertext.
pub const TAG_LEN: usize = hush_crypto::aead::TAG_LEN;

pub(crate) fn decode_strict<T: prost::Message + Default>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let value = T::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
    if value.encoded_len() != bytes.len() || value.encode_to_vec() != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

pub(crate) fn key32(bytes: &[u8], field: &'static str) -> Result<X25519PublicKey, DecodeError> {
    X25519PublicKey::from_slice(bytes).ok_or(DecodeError::BadLength {
        field,
        len: bytes.len(),
        expected: 32,
    })
}

pub(crate) fn kem_key(bytes: &[u8], field: &'static str) -> Result<KemPublicKey, DecodeError> {
    KemPublicKey::from_slice(bytes).map_err(|e| match e {
        KemError::InvalidKey => DecodeError::InvalidKemKey(field),
        _ => DecodeError::BadLength {
            field,
            len: bytes.len(),
            expected: KEM_PUBLIC_KEY_LEN,
        },
    })
}

pub(crate) fn kem_ciphertext(
    bytes: &[u8],
    field: &'static str,
) -> Result<KemCiphertext, DecodeError> {
    KemCiphertext::from_slice(bytes).map_err(|_| DecodeError::BadLength {
        field,
        len: bytes.len(),
        expected: hush_crypto::kem::KEM_CIPHERTEXT_LEN,
    })
}

pub(crate) fn signature64(bytes: &[u8], field: &'static str) -> Result<Signature, DecodeError> {
    Signature::from_slice(bytes).ok_or(DecodeError::BadLength {
        field,
        len: bytes.len(),
        expected: 64,
    })
}

/// The authenticated header of a ratchet message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: X25519PublicKey,
    /// PN: the number of messages in the sender's previous sending chain.
    pub previous_chain_length: u32,
    /// N: this message's number in the current sending chain.
    pub message_number: u32,
    /// The post-quantum ratchet's part, present iff the session runs it (SPEC §7.8.2).
    pub pq: Option<PqHeader>,
}

impl Header {
    /// The canonical encoding (protobuf `hush.session.v1.Header`, version 1).
    pub fn encode(&self) -> Vec<u8> {
        proto::Header {
            version: MESSAGE_VERSION,
            ratchet_key: self.ratchet_key.to_bytes().to_vec(),
            previous_chain_length: self.previous_chain_length,
            message_number: self.message_number,
            pq: self.pq.as_ref().map(|pq| proto::PqHeader {
                epoch: pq.epoch,
                mixed: pq.mixed,
                chunk_index: pq.chunk.map_or(0, |c| u32::from(c.index)),
                chunk: pq.chunk.map(|c| c.data.to_vec()).unwrap_or_default(),
            }),
        }
        .encode_to_vec()
    }

    /// Decodes a header strictly (canonical, version 1, 32-byte ratchet key).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let p: proto::Header = decode_strict(bytes)?;
        if p.version != MESSAGE_VERSION {
            return Err(DecodeError::UnsupportedVersion(p.version));
        }
        Ok(Self {
            ratchet_key: key32(&p.ratchet_key, "header.ratchet_key")?,
            previous_chain_length: p.previous_chain_length,
            message_number: p.message_number,
            pq: p.pq.as_ref().map(pq_header).transpose()?,
        })
    }
}

fn pq_header(p: &proto::PqHeader) -> Result<PqHeader, DecodeError> {
    if p.epoch == 0 {
        return Err(DecodeError::MissingField("header.pq.epoch"));
    }
    if p.mixed >= p.epoch {
        // A chain mixes a secret both sides hold: one of an epoch the sender has finished.
        return Err(DecodeError::OutOfRange("header.pq.mixed"));
    }
    let chunk = if p.chunk.is_empty() {
        if p.chunk_index != 0 {
            return Err(DecodeError::MissingField("header.pq.chunk"));
        }
        None
    } else {
        let data: [u8; CHUNK_LEN] =
            p.chunk
                .as_slice()
                .try_into()
                .map_err(|_| DecodeError::BadLength {
                    field: "header.pq.chunk",
                    len: p.chunk.len(),
                    expected: CHUNK_LEN,
                })?;
        let index = u8::try_from(p.chunk_index)
            .map_err(|_| DecodeError::OutOfRange("header.pq.chunk_index"))?;
        Some(Chunk { index, data })
    };
    Ok(PqHeader {
        epoch: p.epoch,
        mixed: p.mixed,
        chunk,
    })
}

/// A Double Ratchet message: an encoded header and the AEAD ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RatchetMessage {
    header: Header,
    header_bytes: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl RatchetMessage {
    pub(crate) const fn new(header: Header, header_bytes: Vec<u8>, ciphertext: Vec<u8>) -> Self {
        Self {
            header,
            header_bytes,
            ciphertext,
        }
    }

    /// The decoded header.
    pub const fn header(&self) -> &Header {
        &self.header
    }

    /// The header exactly as encoded (and authenticated).
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// The ciphertext with its tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    fn to_proto(&self) -> proto::RatchetMessage {
        proto::RatchetMessage {
            header: self.header_bytes.clone(),
            ciphertext: self.ciphertext.clone(),
        }
    }

    fn from_proto(p: proto::RatchetMessage) -> Result<Self, DecodeError> {
        let header = Header::decode(&p.header)?;
        if p.ciphertext.len() < TAG_LEN {
            return Err(DecodeError::BadLength {
                field: "ciphertext",
                len: p.ciphertext.len(),
                expected: TAG_LEN,
            });
        }
        Ok(Self {
            header,
            header_bytes: p.header,
            ciphertext: p.ciphertext,
        })
    }
}

/// What the owner of a last-resort KEM prekey records for each session it accepts with it, and
/// refuses to accept twice: the KEM prekey id, the signed prekey id and the base key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KemPrekeyUse {
    /// The KEM prekey's id.
    pub kem_prekey_id: u32,
    /// The signed prekey's id.
    pub signed_prekey_id: u32,
    /// The initiator's base key.
    pub base_key: X25519PublicKey,
}

/// The initiator's message until it receives a reply: X3DH or PQXDH parameters and a
/// ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyMessage {
    identity_key: IdentityPublicKey,
    base_key: X25519PublicKey,
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
    message: RatchetMessage,
    kem: Option<(u32, KemCiphertext)>,
}

impl PrekeyMessage {
    pub(crate) const fn new(
        identity_key: IdentityPublicKey,
        base_key: X25519PublicKey,
        signed_prekey_id: u32,
        one_time_prekey_id: Option<u32>,
        message: RatchetMessage,
        kem: Option<(u32, KemCiphertext)>,
    ) -> Self {
        Self {
            identity_key,
            base_key,
            signed_prekey_id,
            one_time_prekey_id,
            message,
            kem,
        }
    }

    /// Whether the message starts a post-quantum (PQXDH) session: it carries a KEM
    /// ciphertext.
    pub const fn is_post_quantum(&self) -> bool {
        self.kem.is_some()
    }

    /// The id of the responder's KEM prekey that was used, if any.
    pub fn kem_prekey_id(&self) -> Option<u32> {
        self.kem.as_ref().map(|(id, _)| *id)
    }

    /// The KEM ciphertext, if any.
    pub fn kem_ciphertext(&self) -> Option<&KemCiphertext> {
        self.kem.as_ref().map(|(_, ct)| ct)
    }

    /// What the responder records if the KEM prekey is its last-resort one, and checks before
    /// accepting another session with it; `None` for a classical message.
    pub fn kem_prekey_use(&self) -> Option<KemPrekeyUse> {
        self.kem.as_ref().map(|(id, _)| KemPrekeyUse {
            kem_prekey_id: *id,
            signed_prekey_id: self.signed_prekey_id,
            base_key: self.base_key,
        })
    }

    /// The initiator's identity key.
    pub const fn identity_key(&self) -> &IdentityPublicKey {
        &self.identity_key
    }

    /// The initiator's X3DH ephemeral key EK_A.
    pub const fn base_key(&self) -> &X25519PublicKey {
        &self.base_key
    }

    /// The id of the responder's signed prekey that was used.
    pub const fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey_id
    }

    /// The id of the responder's one-time prekey that was used, if any.
    pub const fn one_time_prekey_id(&self) -> Option<u32> {
        self.one_time_prekey_id
    }

    /// The ratchet message inside.
    pub const fn message(&self) -> &RatchetMessage {
        &self.message
    }
}

/// Every message a session sends or receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionMessage {
    /// An ordinary ratchet message.
    Ratchet(RatchetMessage),
    /// A ratchet message wrapped with the X3DH parameters that start the session.
    Prekey(Box<PrekeyMessage>),
}

impl SessionMessage {
    /// The ratchet message, wrapped or not.
    pub const fn ratchet_message(&self) -> &RatchetMessage {
        match self {
            Self::Ratchet(m) => m,
            Self::Prekey(p) => &p.message,
        }
    }

    /// Encodes the message (protobuf `hush.session.v1.SessionMessage`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = match self {
            Self::Ratchet(m) => proto::session_message::Body::Ratchet(m.to_proto()),
            Self::Prekey(p) => proto::session_message::Body::Prekey(proto::PrekeyMessage {
                version: MESSAGE_VERSION,
                identity_key: p.identity_key.to_bytes().to_vec(),
                base_key: p.base_key.to_bytes().to_vec(),
                signed_prekey_id: p.signed_prekey_id,
                one_time_prekey_id: p.one_time_prekey_id,
                message: Some(p.message.to_proto()),
                kem_prekey_id: p.kem.as_ref().map(|(id, _)| *id),
                kem_ciphertext: p
                    .kem
                    .as_ref()
                    .map(|(_, ct)| ct.as_bytes().to_vec())
                    .unwrap_or_default(),
            }),
        };
        proto::SessionMessage { body: Some(body) }.encode_to_vec()
    }

    /// Decodes and validates a message. Keys and lengths are checked; nothing is decrypted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let p: proto::SessionMessage = decode_strict(bytes)?;
        match p.body.ok_or(DecodeError::MissingField("body"))? {
            proto::session_message::Body::Ratchet(m) => {
                Ok(Self::Ratchet(RatchetMessage::from_proto(m)?))
            }
            proto::session_message::Body::Prekey(p) => {
                if p.version != MESSAGE_VERSION {
                    return Err(DecodeError::UnsupportedVersion(p.version));
                }
                // Both KEM fields or neither.
                let kem = match (p.kem_prekey_id, p.kem_ciphertext.is_empty()) {
                    (None, true) => None,
                    (Some(id), false) => {
                        Some((id, kem_ciphertext(&p.kem_ciphertext, "kem_ciphertext")?))
                    }
                    (None, false) => return Err(DecodeError::MissingField("kem_prekey_id")),
                    (Some(_), true) => return Err(DecodeError::MissingField("kem_ciphertext")),
                };
                Ok(Self::Prekey(Box::new(PrekeyMessage {
                    identity_key: IdentityPublicKey::from_slice(&p.identity_key)?,
                    base_key: key32(&p.base_key, "base_key")?,
                    signed_prekey_id: p.signed_prekey_id,
                    one_time_prekey_id: p.one_time_prekey_id,
                    message: RatchetMessage::from_proto(
                        p.message.ok_or(DecodeError::MissingField("message"))?,
                    )?,
                    kem,
                })))
            }
        }
    }
}
