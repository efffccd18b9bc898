//! # hush-relay-protocol
//!
//! The protocol between hush devices and a hush relay (docs/SPEC.md §14), with no I/O: the
//! wire types generated from `proto/hush_relay.proto`, the frame codec with every check of
//! §14, the exact bytes that authentication and device links sign (§14.1), device
//! addresses, and the limits both sides must agree on. A request frame parses into a typed
//! [`Request`] that the relay then applies (as mini-redis parses a frame into a command).
//!
//! The client and the relay both depend on this crate; neither depends on the other. It
//! builds for `wasm32-unknown-unknown`.
//!
//! ```
//! use hush_relay_protocol::{codec, proto, request::RequestLimits, signed, Addr, Request};
//! use hush_crypto::IdentityKeyPair;
//!
//! // A device answers the relay's challenge by signing the SPEC §14.1 input.
//! let identity = IdentityKeyPair::generate(&mut rand::rng());
//! let me = Addr { user: "alice".into(), device: 1 };
//! let nonce = [7u8; 32];
//! let key = identity.public().to_bytes();
//! let to_sign = signed::auth_message(b"hush-relay", &nonce, &me.user, me.device, &key);
//! let frame = codec::encode_client(1, proto::client_frame::Body::Authenticate(proto::Authenticate {
//!     address: Some(me.to_proto()),
//!     identity_key: key.to_vec(),
//!     signature: identity.sign(&to_sign).to_bytes().to_vec(),
//!     ..Default::default()
//! }));
//!
//! // The relay decodes the frame with its size limit and parses it into a typed request,
//! // checking its own per-request limits.
//! let limits = RequestLimits { max_recipients: 256, max_envelope_bytes: 260 * 1024,
//!                              max_prekeys_per_upload: 500, max_kem_prekeys_per_upload: 100 };
//! let decoded = codec::decode_client(&frame, 300 * 1024)?;
//! let (request_id, request) = Request::parse(decoded, &limits)?;
//! assert_eq!(request_id, 1);
//! assert!(matches!(request, Request::Authenticate(auth) if auth.address == me));
//!
//! // A relay's refusal travels as an error frame that the device decodes.
//! let refusal = codec::error_frame(1, proto::ErrorCode::RateLimited, "rate limited", 250, false);
//! let reply = codec::decode_server(&refusal, 1 << 20)?;
//! assert!(matches!(reply.body, Some(proto::server_frame::Body::Error(e)) if e.retry_after_ms == 250));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod address;
pub mod codec;
pub mod device_list;
pub mod limits;
pub mod request;
pub mod signed;

pub use address::{Addr, valid_user_id};
pub use codec::FrameError;
pub use request::{Authenticate, Request, RequestError};

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod proto {
    //! Generated protobuf types of `proto/hush_relay.proto` (package `hush.relay.v1`).
    include!(concat!(env!("OUT_DIR"), "/hush.relay.v1.rs"));
}
