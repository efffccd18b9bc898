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

/// A ratchet message's parts, borrowed from where they were decoded.
pub(crate) struct RatchetView<'a> {
    pub(crate) header: Header,
    pub(crate) header_bytes: &'a [u8],
    pub(crate) ciphertext: &'a [u8],
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

    pub(crate) fn view(&self) -> RatchetView<'_> {
        RatchetView {
            header: self.header,
            header_bytes: &self.header_bytes,
            ciphertext: &self.ciphertext,
        }
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
        // The common case, a well-formed ratchet message, in one pass; anything else (a
        // prekey message, or bytes the single pass does not accept) takes the general path,
        // which accepts exactly the same canonical encodings and names the error.
        if let Some(m) = fast::ratchet_message(bytes) {
            return Ok(Self::Ratchet(m));
        }
        Self::from_bytes_general(bytes)
    }

    /// [`SessionMessage::from_bytes`] through the protobuf decoder and the re-encoding check.
    fn from_bytes_general(bytes: &[u8]) -> Result<Self, DecodeError> {
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

/// A single-pass reader for the canonical encoding of a `SessionMessage` holding a ratchet
/// message (SPEC §9.1–§9.3). It accepts only what the general decoder accepts, returning the
/// same value, and returns `None` for everything else; a test checks the two against each
/// other on valid and mutated messages.
pub(crate) mod fast {
    use super::{
        CHUNK_LEN, Chunk, Header, MAX_MESSAGE_LEN, PqHeader, RatchetMessage, RatchetView, TAG_LEN,
    };
    use hush_crypto::X25519PublicKey;

    struct Reader<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        const fn new(bytes: &'a [u8]) -> Self {
            Self { bytes, pos: 0 }
        }

        const fn done(&self) -> bool {
            self.pos == self.bytes.len()
        }

        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }

        /// Consumes `tag` if it is next.
        fn tag(&mut self, tag: u8) -> bool {
            if self.peek() == Some(tag) {
                self.pos += 1;
                true
            } else {
                false
            }
        }

        /// A minimal varint of at most 32 bits.
        fn varint32(&mut self) -> Option<u32> {
            let mut value: u64 = 0;
            for i in 0..5 {
                let b = self.peek()?;
                self.pos += 1;
                value |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    // Minimal: no trailing zero group (except the single byte 0).
                    if i > 0 && b == 0 {
                        return None;
                    }
                    return u32::try_from(value).ok();
                }
            }
            None
        }

        /// A nonzero u32 field (a zero one is omitted in the canonical form).
        fn nonzero(&mut self) -> Option<u32> {
            self.varint32().filter(|&v| v != 0)
        }

        /// A length-delimited field's contents.
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let len = self.varint32()? as usize;
            let end = self.pos.checked_add(len)?;
            let out = self.bytes.get(self.pos..end)?;
            self.pos = end;
            Some(out)
        }
    }

    /// [`ratchet_view`], copied into an owned message.
    pub(crate) fn ratchet_message(bytes: &[u8]) -> Option<RatchetMessage> {
        let v = ratchet_view(bytes)?;
        Some(RatchetMessage::new(
            v.header,
            v.header_bytes.to_vec(),
            v.ciphertext.to_vec(),
        ))
    }

    /// `SessionMessage{ratchet: RatchetMessage{header, ciphertext}}`, canonical, with a valid
    /// header; `None` otherwise.
    pub(crate) fn ratchet_view(bytes: &[u8]) -> Option<RatchetView<'_>> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return None;
        }
        let mut outer = Reader::new(bytes);
        if !outer.tag(0x0a) {
            return None;
        }
        let inner = outer.bytes()?;
        if !outer.done() {
            return None;
        }
        let mut r = Reader::new(inner);
        if !r.tag(0x0a) {
            return None;
        }
        let header_bytes = r.bytes()?;
        if !r.tag(0x12) {
            return None;
        }
        let ciphertext = r.bytes()?;
        if !r.done() || ciphertext.len() < TAG_LEN {
            return None;
        }
        Some(RatchetView {
            header: header(header_bytes)?,
            header_bytes,
            ciphertext,
        })
    }

    fn header(bytes: &[u8]) -> Option<Header> {
        let mut r = Reader::new(bytes);
        if !(r.tag(0x08) && r.varint32()? == 1 && r.tag(0x12) && r.varint32()? == 32) {
            return None;
        }
        let key: [u8; 32] = r.bytes.get(r.pos..r.pos + 32)?.try_into().ok()?;
        r.pos += 32;
        let previous_chain_length = if r.tag(0x18) { r.nonzero()? } else { 0 };
        let message_number = if r.tag(0x20) { r.nonzero()? } else { 0 };
        let pq = if r.tag(0x2a) {
            Some(pq_header(r.bytes()?)?)
        } else {
            None
        };
        r.done().then_some(Header {
            ratchet_key: X25519PublicKey::from_bytes(key),
            previous_chain_length,
            message_number,
            pq,
        })
    }

    fn pq_header(bytes: &[u8]) -> Option<PqHeader> {
        let mut r = Reader::new(bytes);
        if !r.tag(0x08) {
            return None;
        }
        let epoch = r.nonzero()?;
        let mixed = if r.tag(0x10) { r.nonzero()? } else { 0 };
        let index = if r.tag(0x18) {
            u8::try_from(r.nonzero()?).ok()?
        } else {
            0
        };
        let chunk = if r.tag(0x22) {
            let data: [u8; CHUNK_LEN] = r.bytes()?.try_into().ok()?;
            Some(Chunk { index, data })
        } else if index != 0 {
            return None;
        } else {
            None
        };
        (r.done() && mixed < epoch).then_some(PqHeader {
            epoch,
            mixed,
            chunk,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::{KemPrekey, OneTimePrekey, PrekeyBundle, Session, SignedPrekey, Suite};

    /// Ratchet messages of both suites: first chains and later ones, with and without chunks,
    /// with PN and N zero and not.
    fn samples() -> Vec<Vec<u8>> {
        let mut out = vec![];
        for suite in [Suite::Classical, Suite::PostQuantum] {
            let mut rng = StdRng::seed_from_u64(5);
            let a = hush_crypto::IdentityKeyPair::generate(&mut rng);
            let b = hush_crypto::IdentityKeyPair::generate(&mut rng);
            let spk = SignedPrekey::generate_for(suite, 1, &b, &mut rng);
            let opk = OneTimePrekey::generate(2, &mut rng);
            let kem = KemPrekey::generate_one_time(3, &b, &mut rng);
            let mut bundle = PrekeyBundle::new(b.public(), &spk, Some(&opk));
            if suite == Suite::PostQuantum {
                bundle = bundle.with_kem_prekey(&kem);
            }
            let mut alice = Session::initiate(&a, &bundle, None, &mut rng).unwrap();
            let SessionMessage::Prekey(m) = alice.encrypt(b"hi").unwrap() else {
                panic!()
            };
            let kem = (suite == Suite::PostQuantum).then_some(&kem);
            let (mut bob, _) =
                Session::accept_with_kem(&b, &spk, Some(&opk), kem, &m, None, &mut rng).unwrap();
            for round in 0..40 {
                let w = bob.encrypt(&[round as u8; 3]).unwrap().to_bytes();
                alice.decrypt_bytes(&w, &mut rng).unwrap();
                if round % 7 == 0 {
                    out.push(w);
                }
                for _ in 0..(round % 3) {
                    let w = alice.encrypt(b"more").unwrap().to_bytes();
                    bob.decrypt_bytes(&w, &mut rng).unwrap();
                    out.push(w);
                }
            }
        }
        out
    }

    /// The single pass accepts only what the general decoder accepts, with the same value,
    /// and accepts every well-formed ratchet message.
    #[test]
    fn the_single_pass_agrees_with_the_general_decoder() {
        let mut checked = 0;
        let compare = |bytes: &[u8], checked: &mut usize| {
            if let Some(m) = fast::ratchet_message(bytes) {
                assert_eq!(
                    SessionMessage::from_bytes_general(bytes),
                    Ok(SessionMessage::Ratchet(m)),
                    "{}",
                    hex::encode(bytes)
                );
            }
            *checked += 1;
        };
        for w in samples() {
            assert!(fast::ratchet_message(&w).is_some());
            compare(&w, &mut checked);
            for i in 0..w.len() {
                for x in [0x01u8, 0x02, 0x08, 0x10, 0x40, 0x80, 0xff] {
                    let mut m = w.clone();
                    m[i] ^= x;
                    compare(&m, &mut checked);
                }
                compare(&w[..i], &mut checked);
                let mut longer = w.clone();
                longer.insert(i, 0);
                compare(&longer, &mut checked);
            }
        }
        assert!(checked > 10_000);
    }
}
