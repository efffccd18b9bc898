//! Device addresses: a user id and a device number (docs/SPEC.md §14.1).

use crate::limits::MAX_USER_ID;
use crate::proto;

/// One device of one user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The user id: 1 to [`MAX_USER_ID`] bytes of UTF-8.
    pub user: String,
    /// The device number.
    pub device: u32,
}

/// Whether `user` is a valid user id: 1 to [`MAX_USER_ID`] bytes.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_ID
}

impl Addr {
    /// Reads a wire address, checking the user id. `None` when it is missing or invalid.
    pub fn from_proto(a: Option<&proto::Address>) -> Option<Self> {
        let a = a?;
        valid_user_id(&a.user_id).then(|| Self {
            user: a.user_id.clone(),
            device: a.device_id,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Address {
        proto::Address {
            user_id: self.user.clone(),
            device_id: self.device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_length_boundary() {
        let at = |n: usize| proto::Address {
            user_id: "u".repeat(n),
            device_id: 3,
        };
        assert_eq!(Addr::from_proto(Some(&at(0))), None);
        assert_eq!(
            Addr::from_proto(Some(&at(MAX_USER_ID))).map(|a| a.user.len()),
            Some(MAX_USER_ID)
        );
        assert_eq!(Addr::from_proto(Some(&at(MAX_USER_ID + 1))), None);
        assert_eq!(Addr::from_proto(None), None);
        let a = Addr::from_proto(Some(&at(1))).unwrap();
        assert_eq!(a.to_proto(), at(1));
    }
}
