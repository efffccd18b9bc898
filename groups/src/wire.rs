//! Typed views of the protobuf messages in `proto/hush_group.proto`, with strict decoding:
//! every message must be the one canonical encoding of its content (docs/SPEC.md §9 rules).

use hush_crypto::{IdentityPublicKey, SecretBytes, Signature, SigningPublicKey};
use prost::Message as _;

use crate::config::MAX_WIRE_LEN;
use crate::error::DecodeError;
use crate::member::Role;
use crate::proto;

/// Version of every group wire message.
pub const GROUP_VERSION: u32 = 1;
/// Length of a group id.
pub const GROUP_ID_LEN: usize = 32;
/// Prefix of what a sender chain's key signs: `"hush group message v1" ‖ content`.
pub const MESSAGE_SIGNATURE_CONTEXT: &[u8] = hush_crypto::labels::GROUP_MESSAGE_SIGNATURE_CONTEXT;
/// HKDF info expanding a group message key into an AEAD key and nonce.
pub const GROUP_KEYS_INFO: &[u8] = hush_crypto::labels::GROUP_KEYS_INFO;
/// Prefix of what a control message's signer signs: `"hush group control v1" ‖ content`.
pub const CONTROL_SIGNATURE_CONTEXT: &[u8] = hush_crypto::labels::GROUP_CONTROL_SIGNATURE_CONTEXT;
/// Prefix of what a group info's signer signs: `"hush group info v1" ‖ content`.
pub const GROUP_INFO_SIGNATURE_CONTEXT: &[u8] = hush_crypto::labels::GROUP_INFO_SIGNATURE_CONTEXT;

/// A group id: 32 random bytes chosen by the creator.
pub type GroupId = [u8; GROUP_ID_LEN];

pub(crate) fn decode_strict<T: prost::Message + Default>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_WIRE_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_WIRE_LEN,
        });
    }
    let value = T::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
    if value.encoded_len() != bytes.len() || value.encode_to_vec() != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

fn check_version(v: u32) -> Result<(), DecodeError> {
    if v == GROUP_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion(v))
    }
}

pub(crate) fn fixed<const N: usize>(
    bytes: &[u8],
    field: &'static str,
) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::BadLength {
        field,
        len: bytes.len(),
        expected: N,
    })
}

pub(crate) fn identity(bytes: &[u8]) -> Result<IdentityPublicKey, DecodeError> {
    Ok(IdentityPublicKey::from_slice(bytes)?)
}

fn signature(bytes: &[u8]) -> Result<Signature, DecodeError> {
    Signature::from_slice(bytes).ok_or(DecodeError::BadLength {
        field: "signature",
        len: bytes.len(),
        expected: 64,
    })
}

pub(crate) fn members_from_proto(
    list: &[proto::Member],
) -> Result<Vec<(IdentityPublicKey, Role)>, DecodeError> {
    list.iter()
        .map(|m| Ok((identity(&m.identity_key)?, Role::from_wire(m.role)?)))
        .collect()
}

pub(crate) fn members_to_proto(list: &[(IdentityPublicKey, Role)]) -> Vec<proto::Member> {
    list.iter()
        .map(|(k, r)| proto::Member {
            identity_key: k.to_bytes().to_vec(),
            role: r.to_wire(),
        })
        .collect()
}

/// `content` and `signature` of a signed wrapper message.
pub(crate) struct Signed {
    pub(crate) content: Vec<u8>,
    pub(crate) signature: Signature,
}

pub(crate) fn sign(
    context: &[u8],
    content: Vec<u8>,
    sign: impl FnOnce(&[u8]) -> Signature,
) -> Signed {
    let mut m = Vec::with_capacity(context.len() + content.len());
    m.extend_from_slice(context);
    m.extend_from_slice(&content);
    Signed {
        signature: sign(&m),
        content,
    }
}

pub(crate) fn verify(context: &[u8], signed: &Signed, key: &SigningPublicKey) -> bool {
    let mut m = Vec::with_capacity(context.len() + signed.content.len());
    m.extend_from_slice(context);
    m.extend_from_slice(&signed.content);
    key.verify(&m, &signed.signature).is_ok()
}

/// A decoded group message.
pub(crate) struct GroupMessage {
    pub(crate) signed: Signed,
    pub(crate) group_id: GroupId,
    /// The sender's identity key bytes, looked up in the membership (which holds it parsed)
    /// rather than parsed again for every message.
    pub(crate) sender: [u8; 32],
    pub(crate) epoch: u64,
    pub(crate) chain_id: u32,
    pub(crate) iteration: u32,
    pub(crate) ciphertext: Vec<u8>,
}

impl GroupMessage {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer: proto::GroupMessage = decode_strict(bytes)?;
        let c: proto::GroupMessageContent = decode_strict(&outer.content)?;
        check_version(c.version)?;
        if c.ciphertext.len() < hush_crypto::aead::TAG_LEN {
            return Err(DecodeError::BadLength {
                field: "ciphertext",
                len: c.ciphertext.len(),
                expected: 16,
            });
        }
        Ok(Self {
            group_id: fixed(&c.group_id, "group_id")?,
            sender: fixed(&c.sender, "sender")?,
            epoch: c.epoch,
            chain_id: c.chain_id,
            iteration: c.iteration,
            ciphertext: c.ciphertext,
            signed: Signed {
                signature: signature(&outer.signature)?,
                content: outer.content,
            },
        })
    }
}

/// The AEAD associated data of a group message:
/// `group_id ‖ sender ‖ u64be(epoch) ‖ u32be(chain_id) ‖ u32be(iteration)` (80 bytes).
pub fn message_ad(
    group_id: &GroupId,
    sender: &[u8; 32],
    epoch: u64,
    chain_id: u32,
    iteration: u32,
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(80);
    ad.extend_from_slice(group_id);
    ad.extend_from_slice(sender);
    ad.extend_from_slice(&epoch.to_be_bytes());
    ad.extend_from_slice(&chain_id.to_be_bytes());
    ad.extend_from_slice(&iteration.to_be_bytes());
    ad
}

pub(crate) fn encode_message_content(
    group_id: &GroupId,
    sender: &IdentityPublicKey,
    epoch: u64,
    chain_id: u32,
    iteration: u32,
    ciphertext: Vec<u8>,
) -> Vec<u8> {
    proto::GroupMessageContent {
        version: GROUP_VERSION,
        group_id: group_id.to_vec(),
        sender: sender.to_bytes().to_vec(),
        epoch,
        chain_id,
        iteration,
        ciphertext,
    }
    .encode_to_vec()
}

pub(crate) fn encode_signed_message(signed: Signed) -> Vec<u8> {
    proto::GroupMessage {
        content: signed.content,
        signature: signed.signature.to_bytes().to_vec(),
    }
    .encode_to_vec()
}

/// A decoded sender-key distribution.
pub(crate) struct Distribution {
    pub(crate) group_id: GroupId,
    pub(crate) epoch: u64,
    pub(crate) chain_id: u32,
    pub(crate) iteration: u32,
    pub(crate) chain_key: SecretBytes<32>,
    pub(crate) signing_key: SigningPublicKey,
}

impl Distribution {
    pub(crate) fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut p = proto::SenderKeyDistribution {
            version: GROUP_VERSION,
            group_id: self.group_id.to_vec(),
            epoch: self.epoch,
            chain_id: self.chain_id,
            iteration: self.iteration,
            chain_key: self.chain_key.expose().to_vec(),
            signing_key: self.signing_key.to_bytes().to_vec(),
        };
        let bytes = zeroize::Zeroizing::new(p.encode_to_vec());
        zeroize::Zeroize::zeroize(&mut p.chain_key);
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut p: proto::SenderKeyDistribution = decode_strict(bytes)?;
        let parsed = (|| {
            check_version(p.version)?;
            Ok(Self {
                group_id: fixed(&p.group_id, "group_id")?,
                epoch: p.epoch,
                chain_id: p.chain_id,
                iteration: p.iteration,
                chain_key: SecretBytes::from_slice(&p.chain_key).ok_or(DecodeError::BadLength {
                    field: "chain_key",
                    len: p.chain_key.len(),
                    expected: 32,
                })?,
                signing_key: SigningPublicKey::from_slice(&p.signing_key)?,
            })
        })();
        zeroize::Zeroize::zeroize(&mut p.chain_key);
        parsed
    }
}

/// A membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Creates the group with these members (epoch 0).
    Create(Vec<(IdentityPublicKey, Role)>),
    /// Adds a member with a role.
    Add(IdentityPublicKey, Role),
    /// Removes a member.
    Remove(IdentityPublicKey),
    /// The signer leaves.
    Leave,
    /// Makes a member an admin.
    Promote(IdentityPublicKey),
    /// Makes an admin a plain member.
    Demote(IdentityPublicKey),
}

/// A decoded control message.
pub(crate) struct Control {
    pub(crate) signed: Signed,
    pub(crate) group_id: GroupId,
    pub(crate) epoch: u64,
    pub(crate) parent: [u8; 32],
    pub(crate) signer: IdentityPublicKey,
    pub(crate) action: Action,
}

impl Control {
    pub(crate) fn digest(&self) -> [u8; 32] {
        hush_crypto::hash::sha256(&[&self.signed.content])
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        use proto::control_content::Action as A;
        let outer: proto::ControlMessage = decode_strict(bytes)?;
        let c: proto::ControlContent = decode_strict(&outer.content)?;
        check_version(c.version)?;
        let action = match c.action.ok_or(DecodeError::MissingField("action"))? {
            A::Create(create) => Action::Create(members_from_proto(&create.members)?),
            A::Add(m) => Action::Add(identity(&m.identity_key)?, Role::from_wire(m.role)?),
            A::Remove(k) => Action::Remove(identity(&k)?),
            A::Leave(_) => Action::Leave,
            A::Promote(k) => Action::Promote(identity(&k)?),
            A::Demote(k) => Action::Demote(identity(&k)?),
        };
        Ok(Self {
            group_id: fixed(&c.group_id, "group_id")?,
            epoch: c.epoch,
            parent: fixed(&c.parent, "parent")?,
            signer: identity(&c.signer)?,
            action,
            signed: Signed {
                signature: signature(&outer.signature)?,
                content: outer.content,
            },
        })
    }

    pub(crate) fn encode_content(
        group_id: &GroupId,
        epoch: u64,
        parent: &[u8; 32],
        signer: &IdentityPublicKey,
        action: &Action,
    ) -> Vec<u8> {
        use proto::control_content::Action as A;
        let action = match action {
            Action::Create(members) => A::Create(proto::Create {
                members: members_to_proto(members),
            }),
            Action::Add(k, r) => A::Add(proto::Member {
                identity_key: k.to_bytes().to_vec(),
                role: r.to_wire(),
            }),
            Action::Remove(k) => A::Remove(k.to_bytes().to_vec()),
            Action::Leave => A::Leave(proto::Leave {}),
            Action::Promote(k) => A::Promote(k.to_bytes().to_vec()),
            Action::Demote(k) => A::Demote(k.to_bytes().to_vec()),
        };
        proto::ControlContent {
            version: GROUP_VERSION,
            group_id: group_id.to_vec(),
            epoch,
            parent: parent.to_vec(),
            signer: signer.to_bytes().to_vec(),
            action: Some(action),
        }
        .encode_to_vec()
    }
}

pub(crate) fn encode_signed_control(signed: Signed) -> Vec<u8> {
    proto::ControlMessage {
        content: signed.content,
        signature: signed.signature.to_bytes().to_vec(),
    }
    .encode_to_vec()
}

/// A decoded group info.
pub(crate) struct Info {
    pub(crate) signed: Signed,
    pub(crate) group_id: GroupId,
    pub(crate) epoch: u64,
    pub(crate) head: [u8; 32],
    pub(crate) members: Vec<(IdentityPublicKey, Role)>,
    pub(crate) signer: IdentityPublicKey,
}

impl Info {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let outer: proto::GroupInfo = decode_strict(bytes)?;
        let c: proto::GroupInfoContent = decode_strict(&outer.content)?;
        check_version(c.version)?;
        Ok(Self {
            group_id: fixed(&c.group_id, "group_id")?,
            epoch: c.epoch,
            head: fixed(&c.head, "head")?,
            members: members_from_proto(&c.members)?,
            signer: identity(&c.signer)?,
            signed: Signed {
                signature: signature(&outer.signature)?,
                content: outer.content,
            },
        })
    }

    pub(crate) fn encode_content(
        group_id: &GroupId,
        epoch: u64,
        head: &[u8; 32],
        members: &[(IdentityPublicKey, Role)],
        signer: &IdentityPublicKey,
    ) -> Vec<u8> {
        proto::GroupInfoContent {
            version: GROUP_VERSION,
            group_id: group_id.to_vec(),
            epoch,
            head: head.to_vec(),
            members: members_to_proto(members),
            signer: signer.to_bytes().to_vec(),
        }
        .encode_to_vec()
    }
}

pub(crate) fn encode_signed_info(signed: Signed) -> Vec<u8> {
    proto::GroupInfo {
        content: signed.content,
        signature: signed.signature.to_bytes().to_vec(),
    }
    .encode_to_vec()
}

/// The group wire messages, for [`validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A signed group message.
    GroupMessage,
    /// A sender-key distribution.
    SenderKeyDistribution,
    /// A signed membership change.
    ControlMessage,
    /// A signed group info.
    GroupInfo,
}

/// Runs the strict decoder for `kind` on `bytes` (canonical encoding, version, lengths,
/// keys), without checking signatures or any group state. For test vectors, fuzzing and
/// tools; [`Group`](crate::Group) runs the same decoders on every input.
pub fn validate(kind: Kind, bytes: &[u8]) -> Result<(), DecodeError> {
    match kind {
        Kind::GroupMessage => GroupMessage::decode(bytes).map(drop),
        Kind::SenderKeyDistribution => Distribution::decode(bytes).map(drop),
        Kind::ControlMessage => Control::decode(bytes).map(drop),
        Kind::GroupInfo => Info::decode(bytes).map(drop),
    }
}
