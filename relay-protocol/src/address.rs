//! Device addresses: a user id and a device number (docs/SPEC.md §14.1).

use crate::limits::MAX_USER_ID;
use crate::proto;

/// One device of one user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The user id (see [`valid_user_id`]).
    pub user: String,
    /// The device number.
    pub device: u32,
}

/// Whether `user` is a valid user id: 1 to [`MAX_USER_ID`] bytes of lower-case ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit. One spelling per
/// name: no upper case, no look-alike letters from other scripts, no invisible characters,
/// so two ids that look the same are the same id (SPEC §14.1).
pub fn valid_user_id(user: &str) -> bool {
    let b = user.as_bytes();
    (1..=MAX_USER_ID).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
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
    fn user_ids_have_one_spelling() {
        for ok in ["alice", "a", "bob.smith", "x_1-2", "0day", &"a".repeat(64)] {
            assert!(valid_user_id(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",         // upper case: "alice" is the one spelling
            "аlice",         // a Cyrillic а that looks like a Latin a
            "ali\u{200b}ce", // a zero-width space
            "alice ",
            ".alice",
            "-alice",
            "al/ice",
            "élise",
            &"a".repeat(65),
        ] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }

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
