//! Group state at rest: versioned protobuf (`proto/hush_group_state.proto`), optionally
//! sealed under a caller's [`StorageKey`].

use std::collections::{BTreeMap, VecDeque};

use hush_crypto::{
    CryptoRng, SealError, SecretBytes, SigningKeyPair, SigningPublicKey, StorageKey, Zeroizing,
};
use prost::Message as _;

use crate::config::{GroupConfig, MAX_STATE_LEN, RotationPolicy};
use crate::error::{DecodeError, GroupStateError};
use crate::group::Group;
use crate::member::Role;
use crate::membership::Membership;
use crate::proto::state as ps;
use crate::sender_key::{OwnChain, ReceiverChain, SenderChains, Skipped};
use crate::wire::{fixed, identity};

/// Version of the serialized group state.
pub const GROUP_STATE_VERSION: u32 = 1;
/// The seal label for group state.
pub const GROUP_SEAL_LABEL: &[u8] = b"group";

fn secret32(bytes: &[u8], field: &'static str) -> Result<SecretBytes<32>, DecodeError> {
    SecretBytes::from_slice(bytes).ok_or(DecodeError::BadLength {
        field,
        len: bytes.len(),
        expected: 32,
    })
}

fn role_from_state(v: u32) -> Result<Role, DecodeError> {
    Role::from_wire(i32::try_from(v).map_err(|_| DecodeError::UnknownRole(i32::MAX))?)
}

impl Group {
    /// Serializes the whole group (membership and sender keys). The bytes hold secrets: seal
    /// them before storing, or use [`Group::seal`].
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let c = &self.config;
        let state = ps::GroupState {
            version: GROUP_STATE_VERSION,
            config: Some(ps::Config {
                max_members: c.max_members,
                max_forward_jump: c.max_forward_jump,
                max_skipped_keys: c.max_skipped_keys,
                max_old_chains: c.max_old_chains,
                rotate_after_messages: c.rotation.after_messages,
                rotate_after_seconds: c.rotation.after_seconds,
            }),
            own_identity: self.own_identity.to_bytes().to_vec(),
            group_id: self.membership.group_id.to_vec(),
            epoch: self.membership.epoch,
            head: self.membership.head.to_vec(),
            members: self
                .membership
                .members()
                .map(|(k, r)| ps::StateMember {
                    identity_key: k.to_bytes().to_vec(),
                    role: r.to_wire() as u32,
                })
                .collect(),
            history: self
                .history
                .iter()
                .map(|(e, d)| ps::Applied {
                    epoch: *e,
                    digest: d.to_vec(),
                })
                .collect(),
            removed: self
                .removed
                .iter()
                .map(|(k, e)| ps::Removed {
                    identity_key: k.to_vec(),
                    epoch: *e,
                })
                .collect(),
            own_chain: self.own_chain.as_ref().map(|o| ps::OwnChain {
                chain_id: o.chain_id,
                iteration: o.iteration,
                chain_key: o.chain_key.expose().to_vec(),
                signing_seed: o.signing.seed().expose().to_vec(),
                sent: o.sent,
                created_at: o.created_at,
            }),
            old_own_chain_ids: self.old_own_chain_ids.iter().copied().collect(),
            rotation_required: self.rotation_required,
            senders: self
                .senders
                .iter()
                .map(|(k, s)| ps::SenderChains {
                    identity_key: k.to_vec(),
                    chains: s
                        .chains
                        .iter()
                        .map(|c| ps::ReceiverChain {
                            chain_id: c.chain_id,
                            first_iteration: c.first_iteration,
                            iteration: c.iteration,
                            chain_key: c.chain_key.expose().to_vec(),
                            signing_key: c.signing_key.to_bytes().to_vec(),
                        })
                        .collect(),
                    skipped: s
                        .skipped
                        .iter()
                        .map(|k| ps::Skipped {
                            chain_id: k.chain_id,
                            iteration: k.iteration,
                            message_key: k.key.expose().to_vec(),
                        })
                        .collect(),
                })
                .collect(),
            left: self.left,
        };
        Zeroizing::new(state.encode_to_vec())
    }

    /// Restores a group serialized by [`Group::to_bytes`], enforcing its configured limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GroupStateError> {
        if bytes.len() > MAX_STATE_LEN {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_STATE_LEN,
            }
            .into());
        }
        let s = ps::GroupState::decode(bytes).map_err(|_| DecodeError::Protobuf)?;
        if s.version != GROUP_STATE_VERSION {
            return Err(GroupStateError::UnsupportedVersion(s.version));
        }
        let c = s
            .config
            .as_ref()
            .ok_or(DecodeError::MissingField("config"))?;
        let config = GroupConfig {
            max_members: c.max_members,
            max_forward_jump: c.max_forward_jump,
            max_skipped_keys: c.max_skipped_keys,
            max_old_chains: c.max_old_chains,
            rotation: RotationPolicy {
                after_messages: c.rotate_after_messages,
                after_seconds: c.rotate_after_seconds,
            },
        };
        let too_many = |field: &'static str, len: usize, max: usize| -> Result<(), DecodeError> {
            if len > max {
                Err(DecodeError::BadLength {
                    field,
                    len,
                    expected: max,
                })
            } else {
                Ok(())
            }
        };
        too_many("members", s.members.len(), config.max_members as usize)?;
        let mut members = BTreeMap::new();
        for m in &s.members {
            let k = identity(&m.identity_key)?;
            members.insert(k.to_bytes(), (k, role_from_state(m.role)?));
        }
        let membership = Membership {
            group_id: fixed(&s.group_id, "group_id")?,
            epoch: s.epoch,
            head: fixed(&s.head, "head")?,
            members,
        };
        let history = s
            .history
            .iter()
            .map(|a| Ok((a.epoch, fixed(&a.digest, "history.digest")?)))
            .collect::<Result<VecDeque<_>, DecodeError>>()?;
        let removed = s
            .removed
            .iter()
            .map(|r| Ok((fixed(&r.identity_key, "removed.identity_key")?, r.epoch)))
            .collect::<Result<VecDeque<_>, DecodeError>>()?;
        let own_chain = match &s.own_chain {
            Some(o) => Some(OwnChain {
                chain_id: o.chain_id,
                iteration: o.iteration,
                chain_key: secret32(&o.chain_key, "own_chain.chain_key")?,
                signing: SigningKeyPair::from_seed(&secret32(
                    &o.signing_seed,
                    "own_chain.signing_seed",
                )?),
                sent: o.sent,
                created_at: o.created_at,
            }),
            None => None,
        };
        let mut senders = BTreeMap::new();
        for sc in &s.senders {
            too_many(
                "chains",
                sc.chains.len(),
                config.max_old_chains as usize + 1,
            )?;
            too_many(
                "skipped",
                sc.skipped.len(),
                config.max_skipped_keys as usize,
            )?;
            let mut chains = SenderChains::default();
            for c in &sc.chains {
                chains.chains.push_back(ReceiverChain {
                    chain_id: c.chain_id,
                    first_iteration: c.first_iteration,
                    iteration: c.iteration,
                    chain_key: secret32(&c.chain_key, "chain_key")?,
                    signing_key: SigningPublicKey::from_slice(&c.signing_key)
                        .map_err(DecodeError::from)?,
                });
            }
            for k in &sc.skipped {
                chains.skipped.push_back(Skipped {
                    chain_id: k.chain_id,
                    iteration: k.iteration,
                    key: secret32(&k.message_key, "message_key")?,
                });
            }
            senders.insert(fixed(&sc.identity_key, "senders.identity_key")?, chains);
        }
        Ok(Self {
            config,
            own_identity: identity(&s.own_identity)?,
            membership,
            history,
            removed,
            own_chain,
            old_own_chain_ids: s.old_own_chain_ids.iter().copied().collect(),
            rotation_required: s.rotation_required,
            senders,
            left: s.left,
        })
    }

    /// Serializes and seals the group under `key` (label `"group"`).
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        key: &StorageKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, SealError> {
        key.seal(GROUP_SEAL_LABEL, &self.to_bytes(), rng)
    }

    /// Opens and restores a group sealed by [`Group::seal`].
    pub fn unseal(key: &StorageKey, blob: &[u8]) -> Result<Self, GroupStateError> {
        let bytes = key.open(GROUP_SEAL_LABEL, blob)?;
        Self::from_bytes(&bytes)
    }
}
