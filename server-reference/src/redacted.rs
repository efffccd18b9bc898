//! Settings that must never be printed: the registration token and the PostgreSQL URL
//! (which may carry a password). Their `Debug` shows `<redacted>`, so a configuration
//! logged with `{:?}` leaks neither.

use core::fmt;
use core::ops::Deref;
use core::str::FromStr;

/// A value whose `Debug` output is `<redacted>`. Reach the value with `*` or `.0`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> Deref for Redacted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl FromStr for Redacted<String> {
    type Err = core::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}
