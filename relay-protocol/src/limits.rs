//! Limits both sides of the relay protocol must agree on (docs/SPEC.md §14.4). Limits that
//! a relay operator may change (frame size, recipients per send, mailbox size...) are the
//! relay's settings, not these.

/// Longest user id, in bytes (UTF-8). A user id is never empty.
pub const MAX_USER_ID: usize = 64;
/// Longest client-chosen message id, in bytes. A message id is never empty.
pub const MAX_MESSAGE_ID: usize = 32;
/// Most message ids in one end-to-end read receipt (SPEC §16.2).
pub const MAX_READ_IDS: usize = 1024;
/// Most ids in one `Ack` or `AckReceipts` frame.
pub const MAX_ACK_IDS: usize = 1024;
/// Most devices a relay lets one user register: a `Devices` answer (about 45 bytes a
/// device) always fits in [`MAX_SERVER_FRAME`]. A relay's own cap is at most this.
pub const MAX_DEVICES_PER_USER: usize = 1024;
/// Most device lists one send may check ([`crate::device_list`]): a direct message's
/// recipient and the sender's own user.
pub const MAX_DEVICE_LIST_CHECKS: usize = 2;
/// Length of the relay's authentication nonce.
pub const NONCE_LEN: usize = 32;
/// Largest frame a device accepts from the relay (1 MiB). A relay never sends a larger one.
pub const MAX_SERVER_FRAME: usize = 1 << 20;
/// Largest committed content an abuse report may reveal (SPEC §17): 128 KiB, above any
/// content a client sends (a 64 KiB text with its envelope of fields).
pub const MAX_REPORT_CONTENT: usize = 128 * 1024;
/// Longest reason a reporter may give, in bytes (UTF-8).
pub const MAX_REPORT_REASON: usize = 1024;
