//! The frame codec, apart from connection I/O: decoding client frames, encoding server
//! frames, and the exact bytes that authentication and device links sign.

use prost::Message as _;

use crate::proto::{self, ErrorCode, ServerFrame, server_frame::Body};

/// Prefix of the authentication signature input.
pub const AUTH_CONTEXT: &[u8] = b"hush relay auth v1";
/// Prefix of a device-link signature input.
pub const LINK_CONTEXT: &[u8] = b"hush relay link v1";
/// Prefix of a signed prekey's signature input (docs/SPEC.md §5.1).
pub const SIGNED_PREKEY_CONTEXT: &[u8] = b"hush signed prekey v1";
/// Longest user id, in bytes.
pub const MAX_USER_ID: usize = 64;
/// Longest client message id, in bytes.
pub const MAX_MESSAGE_ID: usize = 32;

/// Why a client frame was refused before any processing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Over the frame size limit.
    #[error("frame of {len} bytes exceeds {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a valid `ClientFrame`.
    #[error("malformed frame")]
    Malformed,
}

/// Decodes one binary WebSocket message as a client frame.
pub fn decode_client(bytes: &[u8], max: usize) -> Result<proto::ClientFrame, FrameError> {
    if bytes.len() > max {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let frame = proto::ClientFrame::decode(bytes).map_err(|_| FrameError::Malformed)?;
    if frame.body.is_none() {
        return Err(FrameError::Malformed);
    }
    Ok(frame)
}

/// Encodes a server frame.
pub fn encode_server(request_id: u64, body: Body) -> Vec<u8> {
    ServerFrame {
        request_id,
        body: Some(body),
    }
    .encode_to_vec()
}

/// An error frame.
pub fn error(
    request_id: u64,
    code: ErrorCode,
    message: &str,
    retry_after_ms: u64,
    fatal: bool,
) -> Vec<u8> {
    encode_server(
        request_id,
        Body::Error(proto::Error {
            code: code as i32,
            message: message.to_string(),
            retry_after_ms,
            fatal,
        }),
    )
}

fn push_lv(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// What a device signs to authenticate:
/// `"hush relay auth v1" ‖ u32be(len) ‖ relay_id ‖ nonce ‖ u32be(len) ‖ user_id ‖
/// u32be(device_id) ‖ identity_key`.
pub fn auth_message(
    relay_id: &[u8],
    nonce: &[u8],
    user: &str,
    device: u32,
    identity_key: &[u8],
) -> Vec<u8> {
    let mut m = AUTH_CONTEXT.to_vec();
    push_lv(&mut m, relay_id);
    m.extend_from_slice(nonce);
    push_lv(&mut m, user.as_bytes());
    m.extend_from_slice(&device.to_be_bytes());
    m.extend_from_slice(identity_key);
    m
}

/// What an existing device signs to vouch for a new device of the same user:
/// `"hush relay link v1" ‖ u32be(len) ‖ user_id ‖ u32be(device_id) ‖ identity_key`.
pub fn link_message(user: &str, device: u32, identity_key: &[u8]) -> Vec<u8> {
    let mut m = LINK_CONTEXT.to_vec();
    push_lv(&mut m, user.as_bytes());
    m.extend_from_slice(&device.to_be_bytes());
    m.extend_from_slice(identity_key);
    m
}

/// What an identity key signs to certify signed prekey `id` (docs/SPEC.md §5.1).
pub fn signed_prekey_message(id: u32, key: &[u8]) -> Vec<u8> {
    let mut m = SIGNED_PREKEY_CONTEXT.to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(key);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_boundary() {
        let ping = proto::ClientFrame {
            request_id: 1,
            body: Some(proto::client_frame::Body::Ping(proto::Ping {})),
        }
        .encode_to_vec();
        assert!(decode_client(&ping, ping.len()).is_ok());
        assert_eq!(
            decode_client(&ping, ping.len() - 1),
            Err(FrameError::TooLarge {
                len: ping.len(),
                max: ping.len() - 1
            })
        );
        assert_eq!(
            decode_client(&[0xff, 0xff], 100),
            Err(FrameError::Malformed)
        );
        assert_eq!(decode_client(&[], 100), Err(FrameError::Malformed));
    }

    #[test]
    fn signed_inputs_are_length_prefixed() {
        // ("ab", 1) and ("a", ...) can never produce the same bytes.
        assert_ne!(
            auth_message(b"r", &[0; 32], "ab", 1, &[1; 32]),
            auth_message(b"r", &[0; 32], "a", 1, &[1; 32])
        );
        assert_eq!(signed_prekey_message(1, &[2; 32]).len(), 21 + 4 + 32);
    }
}
