//! Named, configurable limits and the sender-key rotation policy.

/// Default largest group (members, counting devices).
pub const DEFAULT_MAX_MEMBERS: u32 = 256;
/// Default furthest forward jump one message may make in a sender chain.
pub const DEFAULT_MAX_FORWARD_JUMP: u32 = 2000;
/// Default most skipped message keys stored per sender.
pub const DEFAULT_MAX_SKIPPED_KEYS: u32 = 2000;
/// Default most old chains kept per sender, besides its newest one.
pub const DEFAULT_MAX_OLD_CHAINS: u32 = 4;
/// How many applied membership changes are remembered to recognise replays.
pub const CONTROL_HISTORY: usize = 64;
/// How many removed members are remembered to report [`RemovedMember`] rather than
/// [`NotAMember`].
///
/// [`RemovedMember`]: crate::GroupDecryptError::RemovedMember
/// [`NotAMember`]: crate::GroupDecryptError::NotAMember
pub const REMOVED_HISTORY: usize = 1024;
/// The largest plaintext of one group message (256 KiB).
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024;
/// The largest encoded group message, distribution, control message or group info accepted.
/// A group info lists every member (about 36 bytes each).
pub const MAX_WIRE_LEN: usize = 512 * 1024;
/// The largest serialized group state accepted.
pub const MAX_STATE_LEN: usize = 64 * 1024 * 1024;

/// When a member replaces its own sender key even without a membership change, to bound how
/// long a stolen chain key stays useful (post-compromise healing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate after this many messages on one chain.
    pub after_messages: Option<u32>,
    /// Rotate when the chain is this many seconds old (by the `now` the caller passes).
    pub after_seconds: Option<u64>,
}

/// Limits and policy of a group. Every member should use the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Largest number of members; creating or adding past it fails with `GroupFull`.
    pub max_members: u32,
    /// Furthest forward jump in a sender chain; past it, `TooFarAhead`.
    pub max_forward_jump: u32,
    /// Most skipped message keys stored per sender; past it the oldest are evicted.
    pub max_skipped_keys: u32,
    /// Most old chains kept per sender besides the newest; past it the oldest is dropped.
    pub max_old_chains: u32,
    /// Optional periodic rotation of our own sender key.
    pub rotation: RotationPolicy,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            max_members: DEFAULT_MAX_MEMBERS,
            max_forward_jump: DEFAULT_MAX_FORWARD_JUMP,
            max_skipped_keys: DEFAULT_MAX_SKIPPED_KEYS,
            max_old_chains: DEFAULT_MAX_OLD_CHAINS,
            rotation: RotationPolicy::default(),
        }
    }
}
