//! Named bounds on everything a peer can make a session store or compute.

/// The most message keys one incoming message may make a chain skip. A message whose
/// number is more than this beyond the next expected one, on its chain or (for a new ratchet
/// key) on the previous chain, is refused with [`DecryptError::TooFarAhead`].
///
/// [`DecryptError::TooFarAhead`]: crate::DecryptError::TooFarAhead
pub const MAX_MESSAGE_GAP: u32 = 1000;

/// The most skipped message keys a session keeps. Past it, the oldest are evicted first, and a
/// late message for an evicted key is refused as [`DecryptError::Duplicate`].
///
/// [`DecryptError::Duplicate`]: crate::DecryptError::Duplicate
pub const MAX_SKIPPED_KEYS: usize = 2000;

/// The most receiving chains (peer ratchet keys) a session keeps. Past it, the oldest chain
/// is dropped; its skipped keys stay until evicted by [`MAX_SKIPPED_KEYS`].
pub const MAX_RECEIVER_CHAINS: usize = 5;

/// The largest plaintext one message may carry (256 KiB). Attachments travel as pointers.
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024;

/// The largest encoded session message or prekey bundle a decoder accepts: room for a
/// PQXDH prekey message carrying [`MAX_PLAINTEXT_LEN`] bytes (its KEM ciphertext and
/// prekey id take 1,093 bytes, its other fields about 140).
pub const MAX_MESSAGE_LEN: usize = MAX_PLAINTEXT_LEN + 2048;

/// The largest serialized session state a decoder accepts.
pub const MAX_STATE_LEN: usize = 1024 * 1024;

/// The most bytes the post-quantum ratchet adds to a message header (SPEC §7.8.2): a 104-byte
/// chunk with its index, the two epoch numbers at their largest, and the field's tag and
/// length. The mean over a conversation is lower (SPEC §7.8.7).
pub const MAX_PQ_HEADER_OVERHEAD: usize = 123;
