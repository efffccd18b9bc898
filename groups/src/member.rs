//! Member roles.

use crate::error::DecodeError;
use crate::proto;

/// A member's role. Admins sign membership changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A plain member.
    Member,
    /// An admin: may add, remove, promote and demote.
    Admin,
}

impl Role {
    pub(crate) fn from_wire(v: i32) -> Result<Self, DecodeError> {
        match proto::Role::try_from(v) {
            Ok(proto::Role::Member) => Ok(Self::Member),
            Ok(proto::Role::Admin) => Ok(Self::Admin),
            Err(_) => Err(DecodeError::UnknownRole(v)),
        }
    }

    pub(crate) const fn to_wire(self) -> i32 {
        match self {
            Self::Member => proto::Role::Member as i32,
            Self::Admin => proto::Role::Admin as i32,
        }
    }
}
