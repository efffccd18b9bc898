//! Refusals: every error frame the relay sends is built here, with the reason label under
//! which `/metrics` counts it.

use hush_relay_protocol::proto::ErrorCode;
use hush_relay_protocol::{FrameError, RequestError, codec};

use crate::store::{StoreError, error_chain};

/// A refused request, or a refusal that ends the connection.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) message: &'static str,
    pub(crate) retry_after_ms: u64,
    pub(crate) fatal: bool,
    /// The `/metrics` label of the refusal (`hush_relay_rejections_total{reason}`).
    pub(crate) reason: &'static str,
}

/// A refusal of one request; the connection stays open.
pub(crate) const fn refuse(
    code: ErrorCode,
    message: &'static str,
    reason: &'static str,
) -> Refused {
    Refused {
        code,
        message,
        retry_after_ms: 0,
        fatal: false,
        reason,
    }
}

/// The `/metrics` label of a refusal by code, where the code says it all.
const fn reason_of(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Malformed => "malformed",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::TooManyRecipients => "too_many_recipients",
        ErrorCode::InvalidKey => "invalid_key",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::BadSignature => "bad_signature",
        ErrorCode::NotFound => "not_found",
        ErrorCode::UnknownRecipient => "unknown_recipient",
        ErrorCode::MailboxFull => "mailbox_full",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::AuthFailed => "auth_failed",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::Timeout => "timeout",
        ErrorCode::TooManyDevices => "too_many_devices",
        ErrorCode::StaleDevices => "stale_devices",
        ErrorCode::ReportRefused => "report_refused",
        ErrorCode::ShuttingDown => "shutdown",
        ErrorCode::Internal | ErrorCode::Unspecified => "internal",
    }
}

impl Refused {
    /// Ends the connection after this refusal.
    pub(crate) const fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    /// The error frame answering request `request_id`.
    pub(crate) fn frame(&self, request_id: u64) -> Vec<u8> {
        codec::error_frame(
            request_id,
            self.code,
            self.message,
            self.retry_after_ms,
            self.fatal,
        )
    }

    /// Over a rate limit: retry after `wait`.
    pub(crate) fn rate_limited(wait: std::time::Duration) -> Self {
        Self {
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            ..refuse(ErrorCode::RateLimited, "rate limited", "rate_limited")
        }
    }

    /// A text WebSocket message.
    pub(crate) const TEXT_FRAME: Self =
        refuse(ErrorCode::Malformed, "binary frames only", "malformed");
    /// A request other than authentication before authenticating.
    pub(crate) const AUTHENTICATE_FIRST: Self = refuse(
        ErrorCode::Unauthenticated,
        "authenticate first",
        "unauthenticated",
    );
    /// A second authentication.
    pub(crate) const ALREADY_AUTHENTICATED: Self =
        refuse(ErrorCode::Malformed, "already authenticated", "malformed");
    /// No authentication in time.
    pub(crate) const AUTH_TIMEOUT: Self = refuse(
        ErrorCode::Timeout,
        "authentication timed out",
        "auth_timeout",
    )
    .fatal();
    /// Nothing from the device for the idle timeout.
    pub(crate) const IDLE: Self = refuse(ErrorCode::Timeout, "idle", "idle_timeout").fatal();
    /// The same device connected again elsewhere.
    pub(crate) const REPLACED: Self =
        refuse(ErrorCode::Forbidden, "connected elsewhere", "replaced").fatal();
    /// Another device of the user removed this one.
    pub(crate) const REMOVED: Self =
        refuse(ErrorCode::Forbidden, "device removed", "removed").fatal();
    /// The relay is stopping: come back in a second.
    pub(crate) const SHUTTING_DOWN: Self = Self {
        retry_after_ms: 1000,
        ..refuse(ErrorCode::ShuttingDown, "relay shutting down", "shutdown").fatal()
    };
    /// Something the device cannot fix.
    pub(crate) const INTERNAL: Self = refuse(ErrorCode::Internal, "internal error", "internal");
    /// A send made for a device list that is no longer the user's (SPEC §14.2).
    pub(crate) const STALE_DEVICES: Self = refuse(
        ErrorCode::StaleDevices,
        "a user's devices have changed: list them again",
        "stale_devices",
    );
}

impl From<FrameError> for Refused {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { .. } => {
                refuse(ErrorCode::TooLarge, "frame too large", "too_large")
            }
            _ => refuse(ErrorCode::Malformed, "malformed frame", "malformed"),
        }
    }
}

impl From<RequestError> for Refused {
    fn from(e: RequestError) -> Self {
        refuse(e.code, e.message, reason_of(e.code))
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownRecipient(_) => refuse(
                ErrorCode::UnknownRecipient,
                "unknown recipient",
                "unknown_recipient",
            ),
            StoreError::MailboxFull(_) => refuse(
                ErrorCode::MailboxFull,
                "a recipient's mailbox is full",
                "mailbox_full",
            ),
            StoreError::SenderShareFull(_) => refuse(
                ErrorCode::MailboxFull,
                "your share of a recipient's mailbox is full",
                "mailbox_share_full",
            ),
            StoreError::PrekeyStockFull => refuse(
                ErrorCode::TooLarge,
                "one-time prekey stock full",
                "prekey_stock_full",
            ),
            StoreError::NoLastResort => refuse(
                ErrorCode::Malformed,
                "a post-quantum signed prekey needs a last-resort KEM prekey",
                "no_last_resort_kem_prekey",
            ),
            StoreError::TooManyDevices => refuse(
                ErrorCode::TooManyDevices,
                "the user has the most devices this relay allows; remove one first",
                "too_many_devices",
            ),
            StoreError::TooManyReports => Self {
                retry_after_ms: 3_600_000,
                ..refuse(
                    ErrorCode::RateLimited,
                    "too many reports today",
                    "too_many_reports",
                )
            },
            StoreError::Revoked => refuse(
                ErrorCode::Forbidden,
                "this identity key was removed from the user",
                "revoked",
            ),
            StoreError::RecipientUnavailable(_) => Self {
                retry_after_ms: 1000,
                ..refuse(
                    ErrorCode::Internal,
                    "a recipient's database is unavailable; retry",
                    "recipient_unavailable",
                )
            },
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %error_chain(&e), "store unavailable");
                Self {
                    retry_after_ms: 1000,
                    ..refuse(
                        ErrorCode::Internal,
                        "the relay's database is unavailable; retry",
                        "store_unavailable",
                    )
                }
            }
            other => {
                // The whole chain: "database error: <the driver's message>".
                tracing::error!(error = %error_chain(&other), "store failure");
                Self::INTERNAL
            }
        }
    }
}
