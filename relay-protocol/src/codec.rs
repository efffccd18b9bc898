//! The frame codec: one protobuf message per binary WebSocket message (docs/SPEC.md §14).
//! Decoding checks the size limit before parsing and refuses a frame without a body.

use prost::Message as _;

use crate::proto::{self, ClientFrame, ErrorCode, ServerFrame, client_frame, server_frame};

/// Why a frame was refused before any processing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Over the frame size limit.
    #[error("frame of {len} bytes exceeds {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a valid frame, or a frame with no body.
    #[error("malformed frame")]
    Malformed,
}

fn check_len(bytes: &[u8], max: usize) -> Result<(), FrameError> {
    if bytes.len() > max {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}

/// Decodes one binary WebSocket message from a device (at most `max` bytes).
pub fn decode_client(bytes: &[u8], max: usize) -> Result<ClientFrame, FrameError> {
    check_len(bytes, max)?;
    let frame = ClientFrame::decode(bytes).map_err(|_| FrameError::Malformed)?;
    if frame.body.is_none() {
        return Err(FrameError::Malformed);
    }
    Ok(frame)
}

/// Decodes one binary WebSocket message from the relay (at most `max` bytes).
pub fn decode_server(bytes: &[u8], max: usize) -> Result<ServerFrame, FrameError> {
    check_len(bytes, max)?;
    let frame = ServerFrame::decode(bytes).map_err(|_| FrameError::Malformed)?;
    if frame.body.is_none() {
        return Err(FrameError::Malformed);
    }
    Ok(frame)
}

/// Encodes a device's frame.
pub fn encode_client(request_id: u64, body: client_frame::Body) -> Vec<u8> {
    ClientFrame {
        request_id,
        body: Some(body),
    }
    .encode_to_vec()
}

/// Encodes a relay's frame.
pub fn encode_server(request_id: u64, body: server_frame::Body) -> Vec<u8> {
    ServerFrame {
        request_id,
        body: Some(body),
    }
    .encode_to_vec()
}

/// An error frame: the relay refuses request `request_id` (0 when the refusal answers no
/// request), asks the device to wait `retry_after_ms` before retrying (0: no advice), and
/// closes the connection after it when `fatal`.
pub fn error_frame(
    request_id: u64,
    code: ErrorCode,
    message: &str,
    retry_after_ms: u64,
    fatal: bool,
) -> Vec<u8> {
    encode_server(
        request_id,
        server_frame::Body::Error(proto::Error {
            code: code as i32,
            message: message.to_string(),
            retry_after_ms,
            fatal,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_boundary() {
        let ping = encode_client(1, client_frame::Body::Ping(proto::Ping {}));
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

        let pong = encode_server(2, server_frame::Body::Pong(proto::Pong {}));
        assert_eq!(
            decode_server(&pong, pong.len()).map(|f| f.request_id),
            Ok(2)
        );
        assert!(matches!(
            decode_server(&pong, pong.len() - 1),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(decode_server(&[], 100), Err(FrameError::Malformed));
    }

    #[test]
    fn error_frames_round_trip() {
        let bytes = error_frame(9, ErrorCode::MailboxFull, "full", 0, true);
        let f = decode_server(&bytes, 1 << 20).unwrap();
        assert_eq!(f.request_id, 9);
        let Some(server_frame::Body::Error(e)) = f.body else {
            panic!("not an error frame");
        };
        assert_eq!(e.code(), ErrorCode::MailboxFull);
        assert_eq!(
            (e.message.as_str(), e.retry_after_ms, e.fatal),
            ("full", 0, true)
        );
    }
}
