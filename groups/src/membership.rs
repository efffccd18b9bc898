//! Group membership: who is in the group, with which role, at which epoch. Changes are pure
//! functions of the current membership, so a refused change cannot leave a trace.

use std::collections::BTreeMap;

use hush_crypto::IdentityPublicKey;

use crate::error::{ControlError, InvalidChange};
use crate::member::Role;
use crate::wire::{Action, GroupId};

/// The members of a group at one epoch, ordered by identity key bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub(crate) group_id: GroupId,
    pub(crate) epoch: u64,
    /// Digest of the change that produced this epoch.
    pub(crate) head: [u8; 32],
    pub(crate) members: BTreeMap<[u8; 32], (IdentityPublicKey, Role)>,
}

impl Membership {
    /// The group id.
    pub const fn group_id(&self) -> &GroupId {
        &self.group_id
    }

    /// The current epoch: 0 at creation, one more for each applied change.
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Digest of the change that produced the current epoch.
    pub const fn head(&self) -> &[u8; 32] {
        &self.head
    }

    /// Members and roles, ordered by identity key.
    pub fn members(&self) -> impl Iterator<Item = (&IdentityPublicKey, Role)> {
        self.members.values().map(|(k, r)| (k, *r))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The role of `key`, if it is a member.
    pub fn role(&self, key: &IdentityPublicKey) -> Option<Role> {
        self.members.get(key.as_bytes()).map(|(_, r)| *r)
    }

    pub(crate) fn member_list(&self) -> Vec<(IdentityPublicKey, Role)> {
        self.members.values().copied().collect()
    }

    fn admins(&self) -> usize {
        self.members
            .values()
            .filter(|(_, r)| *r == Role::Admin)
            .count()
    }

    /// Validates a create change's (or group info's) member list into a members map: at most
    /// `max_members`, in strictly ascending order of identity key bytes, the signer an admin.
    pub(crate) fn from_create(
        signer: &IdentityPublicKey,
        list: &[(IdentityPublicKey, Role)],
        max_members: u32,
    ) -> Result<BTreeMap<[u8; 32], (IdentityPublicKey, Role)>, InvalidChange> {
        if list.len() > max_members as usize {
            return Err(InvalidChange::GroupFull { max: max_members });
        }
        let mut members = BTreeMap::new();
        let mut previous: Option<[u8; 32]> = None;
        for (k, r) in list {
            let bytes = k.to_bytes();
            match previous {
                Some(p) if p == bytes => return Err(InvalidChange::DuplicateMember),
                Some(p) if p > bytes => return Err(InvalidChange::UnsortedMembers),
                _ => {}
            }
            previous = Some(bytes);
            members.insert(bytes, (*k, *r));
        }
        match members.get(signer.as_bytes()) {
            Some((_, Role::Admin)) => Ok(members),
            _ => Err(InvalidChange::CreatorNotAdmin),
        }
    }

    /// The members after `signer` applies `action`, or why it may not.
    pub(crate) fn after(
        &self,
        signer: &IdentityPublicKey,
        action: &Action,
        max_members: u32,
    ) -> Result<BTreeMap<[u8; 32], (IdentityPublicKey, Role)>, ControlError> {
        let signer_role = self.role(signer);
        let require_admin = || match signer_role {
            Some(Role::Admin) => Ok(()),
            _ => Err(ControlError::Unauthorized),
        };
        let mut members = self.members.clone();
        match action {
            Action::Create(_) => return Err(InvalidChange::MisplacedCreate.into()),
            Action::Add(key, role) => {
                require_admin()?;
                if members.contains_key(key.as_bytes()) {
                    return Err(InvalidChange::AlreadyMember.into());
                }
                if members.len() >= max_members as usize {
                    return Err(InvalidChange::GroupFull { max: max_members }.into());
                }
                members.insert(key.to_bytes(), (*key, *role));
            }
            Action::Remove(key) => {
                require_admin()?;
                if key == signer {
                    return Err(InvalidChange::RemoveSelf.into());
                }
                let (_, role) = members
                    .remove(key.as_bytes())
                    .ok_or(InvalidChange::NotAMember)?;
                if role == Role::Admin && self.admins() == 1 && !members.is_empty() {
                    return Err(InvalidChange::LastAdmin.into());
                }
            }
            Action::Leave => {
                let role = signer_role.ok_or(ControlError::Unauthorized)?;
                members.remove(signer.as_bytes());
                if role == Role::Admin && self.admins() == 1 && !members.is_empty() {
                    return Err(InvalidChange::LastAdmin.into());
                }
            }
            Action::Promote(key) => {
                require_admin()?;
                let entry = members
                    .get_mut(key.as_bytes())
                    .ok_or(InvalidChange::NotAMember)?;
                if entry.1 == Role::Admin {
                    return Err(InvalidChange::RoleUnchanged.into());
                }
                entry.1 = Role::Admin;
            }
            Action::Demote(key) => {
                require_admin()?;
                let entry = members
                    .get_mut(key.as_bytes())
                    .ok_or(InvalidChange::NotAMember)?;
                if entry.1 == Role::Member {
                    return Err(InvalidChange::RoleUnchanged.into());
                }
                if self.admins() == 1 {
                    return Err(InvalidChange::LastAdmin.into());
                }
                entry.1 = Role::Member;
            }
        }
        Ok(members)
    }
}
