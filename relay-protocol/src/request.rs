//! Requests: a decoded [`ClientFrame`] parsed into a typed [`Request`] with every check that
//! needs no stored state (addresses, lengths, key encodings, and the relay's per-request
//! limits in [`RequestLimits`]). The relay then applies the request; a fuzz target can
//! call [`Request::parse`] directly.

use hush_crypto::kem::KemPublicKey;
use hush_crypto::{IdentityPublicKey, Signature, X25519PublicKey};

use crate::address::{Addr, valid_user_id};
use crate::device_list::DIGEST_LEN;
use crate::limits::{
    MAX_ACK_IDS, MAX_DEVICE_LIST_CHECKS, MAX_MESSAGE_ID, MAX_REPORT_CONTENT, MAX_REPORT_REASON,
};
use crate::proto::{self, ClientFrame, ErrorCode, client_frame::Body};

/// The relay's per-request limits that parsing checks (its settings, with its defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most recipient addresses in one send (counted before duplicates are removed).
    pub max_recipients: usize,
    /// Largest envelope ciphertext, in bytes.
    pub max_envelope_bytes: usize,
    /// Most one-time prekeys in one upload.
    pub max_prekeys_per_upload: usize,
    /// Most one-time KEM prekeys in one upload (each about 1.25 KB).
    pub max_kem_prekeys_per_upload: usize,
}

/// A request refused by parsing: the frame's request id, the error code and a fixed
/// explanation, both sent back in an error frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RequestError {
    /// The refused frame's request id.
    pub request_id: u64,
    /// The error code.
    pub code: ErrorCode,
    /// What was wrong, for the device's developer.
    pub message: &'static str,
}

/// The answer to the relay's challenge (SPEC §14.1), with its keys parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticate {
    /// The device authenticating.
    pub address: Addr,
    /// Its identity key.
    pub identity_key: IdentityPublicKey,
    /// Its signature over [`crate::signed::auth_message`].
    pub signature: Signature,
    /// The registration token, for relays that require one (empty when none).
    pub registration_token: Vec<u8>,
    /// Another device of the user vouching for this one.
    pub link: Option<proto::DeviceLink>,
}

/// A one-time or signed prekey: its id and a valid X25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prekey {
    /// The prekey id.
    pub id: u32,
    /// The 32-byte X25519 public key.
    pub key: Vec<u8>,
}

/// A KEM prekey: its id, a valid ML-KEM-768 public key, and a 64-byte signature (not yet
/// verified: that needs the stored identity key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KemPrekey {
    /// The prekey id.
    pub id: u32,
    /// The 1,184-byte encapsulation key.
    pub key: Vec<u8>,
    /// The identity key's signature over [`crate::signed::kem_prekey_message`].
    pub signature: Vec<u8>,
}

/// A prekey upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPrekeys {
    /// A new signed prekey and its signature (not yet verified: that needs the stored
    /// identity key).
    pub signed_prekey: Option<(Prekey, Vec<u8>)>,
    /// New one-time prekeys.
    pub one_time_prekeys: Vec<Prekey>,
    /// New one-time KEM prekeys.
    pub kem_prekeys: Vec<KemPrekey>,
    /// A new last-resort KEM prekey.
    pub last_resort_kem_prekey: Option<KemPrekey>,
}

fn kem_prekey(k: proto::KemPrekey) -> Result<KemPrekey, (ErrorCode, &'static str)> {
    if KemPublicKey::from_slice(&k.key).is_err() {
        return Err((
            ErrorCode::InvalidKey,
            "KEM prekeys are 1,184-byte ML-KEM-768 keys",
        ));
    }
    if k.signature.len() != 64 {
        return Err((ErrorCode::Malformed, "bad KEM prekey signature length"));
    }
    Ok(KemPrekey {
        id: k.id,
        key: k.key,
        signature: k.signature,
    })
}

/// One envelope for one or more recipient devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// Distinct recipients, sorted.
    pub recipients: Vec<Addr>,
    /// The sender's message id, 1 to [`MAX_MESSAGE_ID`] bytes.
    pub message_id: Vec<u8>,
    /// The ciphertext (never empty).
    pub ciphertext: Vec<u8>,
    /// The device lists the sender encrypted for: (user, digest), distinct users, at most
    /// [`MAX_DEVICE_LIST_CHECKS`]. The relay
    /// refuses the send with `STALE_DEVICES` if one is not the user's current list.
    pub device_lists: Vec<(String, [u8; DIGEST_LEN])>,
    /// The sender's franking commitment (SPEC §17), if it gave one.
    pub franking_commitment: Option<[u8; 32]>,
}

/// An abuse report (SPEC §17): a received message revealed with its franking key, its
/// commitment and the relay's tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Report {
    /// The envelope's sender.
    pub sender: Addr,
    /// The envelope's `server_timestamp_ms`.
    pub server_ms: u64,
    /// The committed content, at most [`MAX_REPORT_CONTENT`] bytes.
    pub content: Vec<u8>,
    /// The franking key.
    pub franking_key: [u8; 32],
    /// The envelope's franking commitment.
    pub commitment: [u8; 32],
    /// The envelope's franking tag.
    pub tag: [u8; 32],
    /// The reporter's words, at most [`MAX_REPORT_REASON`] bytes.
    pub reason: String,
    /// What the reporter agreed to, 1 to [`MAX_REPORT_REASON`] bytes.
    pub consent: String,
}

impl core::fmt::Debug for Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The content is a message: not for logs.
        f.debug_struct("Report")
            .field("sender", &self.sender)
            .field("server_ms", &self.server_ms)
            .field("content_len", &self.content.len())
            .finish_non_exhaustive()
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// The answer to the challenge (valid only as the first frame; boxed: its parsed keys
    /// are large).
    Authenticate(Box<Authenticate>),
    /// Liveness check.
    Ping,
    /// Upload prekeys.
    UploadPrekeys(UploadPrekeys),
    /// Fetch a device's prekey bundle (spending one one-time prekey).
    FetchBundle(Addr),
    /// Store an envelope.
    Send(Send),
    /// Acknowledge envelopes (removes them from the mailbox): at most [`MAX_ACK_IDS`].
    Ack(Vec<u64>),
    /// Acknowledge receipts: at most [`MAX_ACK_IDS`].
    AckReceipts(Vec<u64>),
    /// A user's presence.
    Presence(String),
    /// Whether this user's last-seen time is hidden.
    PresenceSettings {
        /// Hide it.
        hide_last_seen: bool,
    },
    /// A token to upload one attachment blob.
    UploadToken,
    /// A user's devices and identity keys.
    ListDevices(String),
    /// Remove another device of the authenticated user.
    RemoveDevice(u32),
    /// An abuse report (boxed: it carries a message).
    Report(Box<Report>),
}

fn valid_message_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_MESSAGE_ID
}

impl Request {
    /// The request's name, as a metrics label: `authenticate`, `ping`, `upload_prekeys`,
    /// `fetch_bundle`, `send`, `ack`, `read`, `ack_receipts`, `presence`,
    /// `presence_settings`, `upload_token`, `list_devices`, `remove_device` or `report`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Authenticate(_) => "authenticate",
            Self::Ping => "ping",
            Self::UploadPrekeys(_) => "upload_prekeys",
            Self::FetchBundle(_) => "fetch_bundle",
            Self::Send(_) => "send",
            Self::Ack(_) => "ack",
            Self::AckReceipts(_) => "ack_receipts",
            Self::Presence(_) => "presence",
            Self::PresenceSettings { .. } => "presence_settings",
            Self::UploadToken => "upload_token",
            Self::ListDevices(_) => "list_devices",
            Self::RemoveDevice(_) => "remove_device",
            Self::Report(_) => "report",
        }
    }

    /// Parses a decoded frame. Returns the request id with the request, or the refusal.
    pub fn parse(frame: ClientFrame, limits: &RequestLimits) -> Result<(u64, Self), RequestError> {
        let request_id = frame.request_id;
        let refuse = |code, message| RequestError {
            request_id,
            code,
            message,
        };
        let malformed = |message| refuse(ErrorCode::Malformed, message);
        let request = match frame.body.ok_or(malformed("malformed frame"))? {
            Body::Authenticate(a) => {
                let address =
                    Addr::from_proto(a.address.as_ref()).ok_or(malformed("bad address"))?;
                let identity_key = IdentityPublicKey::from_slice(&a.identity_key)
                    .map_err(|_| refuse(ErrorCode::InvalidKey, "invalid identity key"))?;
                let signature =
                    Signature::from_slice(&a.signature).ok_or(malformed("bad signature length"))?;
                Self::Authenticate(Box::new(Authenticate {
                    address,
                    identity_key,
                    signature,
                    registration_token: a.registration_token,
                    link: a.link,
                }))
            }
            Body::Ping(_) => Self::Ping,
            Body::UploadPrekeys(u) => {
                if u.one_time_prekeys.len() > limits.max_prekeys_per_upload {
                    return Err(refuse(
                        ErrorCode::TooLarge,
                        "too many prekeys in one upload",
                    ));
                }
                let valid_key = |k: &[u8]| X25519PublicKey::from_slice(k).is_some();
                if u.one_time_prekeys.iter().any(|k| !valid_key(&k.key)) {
                    return Err(refuse(
                        ErrorCode::InvalidKey,
                        "one-time prekeys are 32-byte X25519 keys",
                    ));
                }
                let signed_prekey = if u.signed_prekey.is_empty() {
                    None
                } else if !valid_key(&u.signed_prekey) {
                    return Err(refuse(
                        ErrorCode::InvalidKey,
                        "signed prekey is a 32-byte X25519 key",
                    ));
                } else {
                    Some((
                        Prekey {
                            id: u.signed_prekey_id,
                            key: u.signed_prekey,
                        },
                        u.signed_prekey_signature,
                    ))
                };
                if u.kem_prekeys.len() > limits.max_kem_prekeys_per_upload {
                    return Err(refuse(
                        ErrorCode::TooLarge,
                        "too many KEM prekeys in one upload",
                    ));
                }
                let kem = |k| kem_prekey(k).map_err(|(code, message)| refuse(code, message));
                Self::UploadPrekeys(UploadPrekeys {
                    signed_prekey,
                    one_time_prekeys: u
                        .one_time_prekeys
                        .into_iter()
                        .map(|k| Prekey {
                            id: k.id,
                            key: k.key,
                        })
                        .collect(),
                    kem_prekeys: u
                        .kem_prekeys
                        .into_iter()
                        .map(kem)
                        .collect::<Result<_, _>>()?,
                    last_resort_kem_prekey: u.last_resort_kem_prekey.map(kem).transpose()?,
                })
            }
            Body::FetchBundle(f) => Self::FetchBundle(
                Addr::from_proto(f.address.as_ref()).ok_or(malformed("bad address"))?,
            ),
            Body::Send(s) => {
                if s.recipients.is_empty() {
                    return Err(malformed("no recipients"));
                }
                if s.recipients.len() > limits.max_recipients {
                    return Err(refuse(ErrorCode::TooManyRecipients, "too many recipients"));
                }
                if !valid_message_id(&s.message_id) {
                    return Err(malformed("message id must be 1 to 32 bytes"));
                }
                if s.ciphertext.is_empty() {
                    return Err(malformed("empty ciphertext"));
                }
                if s.ciphertext.len() > limits.max_envelope_bytes {
                    return Err(refuse(ErrorCode::TooLarge, "envelope too large"));
                }
                let mut recipients = s
                    .recipients
                    .iter()
                    .map(|r| Addr::from_proto(Some(r)))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(malformed("bad recipient address"))?;
                recipients.sort();
                recipients.dedup();
                if s.device_lists.len() > MAX_DEVICE_LIST_CHECKS {
                    return Err(refuse(ErrorCode::TooLarge, "too many device lists"));
                }
                let mut device_lists = Vec::with_capacity(s.device_lists.len());
                for l in s.device_lists {
                    if !valid_user_id(&l.user_id) {
                        return Err(malformed("bad user id in a device list"));
                    }
                    let digest = <[u8; DIGEST_LEN]>::try_from(l.digest.as_slice())
                        .map_err(|_| malformed("a device list digest is 32 bytes"))?;
                    if device_lists.iter().any(|(u, _)| *u == l.user_id) {
                        return Err(malformed("a user's device list twice"));
                    }
                    device_lists.push((l.user_id, digest));
                }
                let franking_commitment = match s.franking_commitment.len() {
                    0 => None,
                    _ => Some(
                        <[u8; 32]>::try_from(s.franking_commitment.as_slice())
                            .map_err(|_| malformed("a franking commitment is 32 bytes"))?,
                    ),
                };
                Self::Send(Send {
                    recipients,
                    message_id: s.message_id,
                    ciphertext: s.ciphertext,
                    device_lists,
                    franking_commitment,
                })
            }
            Body::Ack(a) => {
                if a.envelope_ids.len() > MAX_ACK_IDS {
                    return Err(refuse(ErrorCode::TooLarge, "too many ids in one frame"));
                }
                Self::Ack(a.envelope_ids)
            }
            Body::AckReceipts(a) => {
                if a.receipt_ids.len() > MAX_ACK_IDS {
                    return Err(refuse(ErrorCode::TooLarge, "too many ids in one frame"));
                }
                Self::AckReceipts(a.receipt_ids)
            }
            Body::Presence(q) => {
                if !valid_user_id(&q.user_id) {
                    return Err(malformed("bad user id"));
                }
                Self::Presence(q.user_id)
            }
            Body::RemoveDevice(r) => Self::RemoveDevice(r.device_id),
            Body::Report(r) => {
                let sender =
                    Addr::from_proto(r.sender.as_ref()).ok_or(malformed("bad sender address"))?;
                if r.content.len() > MAX_REPORT_CONTENT {
                    return Err(refuse(ErrorCode::TooLarge, "reported content too large"));
                }
                if r.reason.len() > MAX_REPORT_REASON || r.consent.len() > MAX_REPORT_REASON {
                    return Err(refuse(ErrorCode::TooLarge, "reason too long"));
                }
                if r.consent.is_empty() {
                    return Err(malformed("a report needs the reporter's consent"));
                }
                let key = |b: &[u8], what| <[u8; 32]>::try_from(b).map_err(|_| malformed(what));
                Self::Report(Box::new(Report {
                    sender,
                    server_ms: r.server_timestamp_ms,
                    franking_key: key(&r.franking_key, "a franking key is 32 bytes")?,
                    commitment: key(&r.franking_commitment, "a franking commitment is 32 bytes")?,
                    tag: key(&r.franking_tag, "a franking tag is 32 bytes")?,
                    content: r.content,
                    reason: r.reason,
                    consent: r.consent,
                }))
            }
            Body::PresenceSettings(p) => Self::PresenceSettings {
                hide_last_seen: p.hide_last_seen,
            },
            Body::UploadToken(_) => Self::UploadToken,
            Body::ListDevices(q) => {
                if !valid_user_id(&q.user_id) {
                    return Err(malformed("bad user id"));
                }
                Self::ListDevices(q.user_id)
            }
        };
        Ok((request_id, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_USER_ID;

    const LIMITS: RequestLimits = RequestLimits {
        max_recipients: 3,
        max_envelope_bytes: 10,
        max_prekeys_per_upload: 2,
        max_kem_prekeys_per_upload: 2,
    };

    fn parse(body: Body) -> Result<Request, (ErrorCode, &'static str)> {
        Request::parse(
            ClientFrame {
                request_id: 5,
                body: Some(body),
            },
            &LIMITS,
        )
        .map(|(id, r)| {
            assert_eq!(id, 5);
            r
        })
        .map_err(|e| {
            assert_eq!(e.request_id, 5);
            (e.code, e.message)
        })
    }

    fn addr(user: &str, device: u32) -> proto::Address {
        proto::Address {
            user_id: user.into(),
            device_id: device,
        }
    }

    fn send(recipients: Vec<proto::Address>, message_id: usize, ciphertext: usize) -> Body {
        Body::Send(proto::Send {
            recipients,
            message_id: vec![1; message_id],
            ciphertext: vec![2; ciphertext],
            device_lists: vec![],
            franking_commitment: vec![],
        })
    }

    fn check(user: &str, digest_len: usize) -> proto::DeviceListCheck {
        proto::DeviceListCheck {
            user_id: user.into(),
            digest: vec![7; digest_len],
        }
    }

    fn send_checking(lists: Vec<proto::DeviceListCheck>) -> Body {
        Body::Send(proto::Send {
            recipients: vec![addr("a", 1)],
            message_id: vec![1],
            ciphertext: vec![2],
            device_lists: lists,
            franking_commitment: vec![],
        })
    }

    #[test]
    fn franking_commitments_and_reports_at_their_boundaries() {
        let with = |len: usize| {
            Body::Send(proto::Send {
                recipients: vec![addr("a", 1)],
                message_id: vec![1],
                ciphertext: vec![2],
                device_lists: vec![],
                franking_commitment: vec![9; len],
            })
        };
        let Ok(Request::Send(s)) = parse(with(32)) else {
            panic!("a franked send was refused");
        };
        assert_eq!(s.franking_commitment, Some([9; 32]));
        let Ok(Request::Send(s)) = parse(with(0)) else {
            panic!("an unfranked send was refused");
        };
        assert_eq!(s.franking_commitment, None);
        for bad in [1, 31, 33] {
            assert_eq!(parse(with(bad)).unwrap_err().0, ErrorCode::Malformed);
        }
        let report = |content: usize, reason: usize, key: usize| {
            Body::Report(proto::Report {
                sender: Some(addr("mallory", 1)),
                server_timestamp_ms: 5,
                content: vec![1; content],
                franking_key: vec![2; key],
                franking_commitment: vec![3; 32],
                franking_tag: vec![4; 32],
                reason: "x".repeat(reason),
                consent: "I agree".into(),
            })
        };
        let Ok(Request::Report(r)) = parse(report(MAX_REPORT_CONTENT, MAX_REPORT_REASON, 32))
        else {
            panic!("a report at the limits was refused");
        };
        assert_eq!((r.server_ms, r.franking_key, r.tag), (5, [2; 32], [4; 32]));
        assert!(!format!("{r:?}").contains("[1, 1"), "no content in Debug");
        assert_eq!(
            parse(report(MAX_REPORT_CONTENT + 1, 0, 32)),
            Err((ErrorCode::TooLarge, "reported content too large"))
        );
        assert_eq!(
            parse(report(0, MAX_REPORT_REASON + 1, 32)),
            Err((ErrorCode::TooLarge, "reason too long"))
        );
        assert_eq!(parse(report(0, 0, 31)).unwrap_err().0, ErrorCode::Malformed);
        let mut no_sender = report(0, 0, 32);
        if let Body::Report(r) = &mut no_sender {
            r.sender = None;
        }
        assert_eq!(parse(no_sender).unwrap_err().0, ErrorCode::Malformed);
        let consent = |c: String| {
            let mut b = report(0, 0, 32);
            if let Body::Report(r) = &mut b {
                r.consent = c;
            }
            parse(b)
        };
        assert_eq!(
            consent(String::new()),
            Err((
                ErrorCode::Malformed,
                "a report needs the reporter's consent"
            ))
        );
        assert!(consent("y".repeat(MAX_REPORT_REASON)).is_ok());
        assert_eq!(
            consent("y".repeat(MAX_REPORT_REASON + 1)).unwrap_err().0,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn device_list_checks_at_their_boundaries() {
        let two = vec![check("a", DIGEST_LEN), check("b", DIGEST_LEN)];
        let Ok(Request::Send(s)) = parse(send_checking(two.clone())) else {
            panic!("a send checking two lists was refused");
        };
        assert_eq!(
            s.device_lists,
            [
                ("a".to_string(), [7; DIGEST_LEN]),
                ("b".into(), [7; DIGEST_LEN])
            ]
        );
        let mut three = two.clone();
        three.push(check("c", DIGEST_LEN));
        assert_eq!(
            parse(send_checking(three)),
            Err((ErrorCode::TooLarge, "too many device lists"))
        );
        for bad in [
            vec![check("a", DIGEST_LEN - 1)],
            vec![check("a", DIGEST_LEN + 1)],
            vec![check("A", DIGEST_LEN)],
            vec![check("", DIGEST_LEN)],
            vec![check("a", DIGEST_LEN), check("a", DIGEST_LEN)],
        ] {
            assert_eq!(
                parse(send_checking(bad)).unwrap_err().0,
                ErrorCode::Malformed
            );
        }
    }

    #[test]
    fn send_limits_at_their_boundaries() {
        let three = vec![addr("b", 2), addr("a", 1), addr("b", 2)];
        let Ok(Request::Send(s)) = parse(send(three.clone(), MAX_MESSAGE_ID, 10)) else {
            panic!("a valid send was refused");
        };
        // Sorted, duplicates removed.
        assert_eq!(
            s.recipients,
            [
                Addr {
                    user: "a".into(),
                    device: 1
                },
                Addr {
                    user: "b".into(),
                    device: 2
                }
            ]
        );
        let mut four = three.clone();
        four.push(addr("c", 1));
        assert_eq!(
            parse(send(four, 1, 1)),
            Err((ErrorCode::TooManyRecipients, "too many recipients"))
        );
        assert_eq!(
            parse(send(vec![], 1, 1)).unwrap_err().0,
            ErrorCode::Malformed
        );
        assert_eq!(
            parse(send(three.clone(), 0, 1)).unwrap_err().0,
            ErrorCode::Malformed
        );
        assert_eq!(
            parse(send(three.clone(), MAX_MESSAGE_ID + 1, 1))
                .unwrap_err()
                .0,
            ErrorCode::Malformed
        );
        assert_eq!(
            parse(send(three.clone(), 1, 0)).unwrap_err().0,
            ErrorCode::Malformed
        );
        assert_eq!(
            parse(send(three, 1, 11)),
            Err((ErrorCode::TooLarge, "envelope too large"))
        );
        let long_user = "u".repeat(MAX_USER_ID + 1);
        assert_eq!(
            parse(send(vec![addr(&long_user, 1)], 1, 1)),
            Err((ErrorCode::Malformed, "bad recipient address"))
        );
    }

    #[test]
    fn ack_lists_are_capped_at_their_boundary() {
        let ids = |n: usize| (0..n as u64).collect::<Vec<_>>();
        assert!(matches!(
            parse(Body::Ack(proto::Ack {
                envelope_ids: ids(MAX_ACK_IDS)
            })),
            Ok(Request::Ack(v)) if v.len() == MAX_ACK_IDS
        ));
        assert_eq!(
            parse(Body::Ack(proto::Ack {
                envelope_ids: ids(MAX_ACK_IDS + 1)
            })),
            Err((ErrorCode::TooLarge, "too many ids in one frame"))
        );
        assert!(matches!(
            parse(Body::AckReceipts(proto::AckReceipts {
                receipt_ids: ids(MAX_ACK_IDS)
            })),
            Ok(Request::AckReceipts(v)) if v.len() == MAX_ACK_IDS
        ));
        assert_eq!(
            parse(Body::AckReceipts(proto::AckReceipts {
                receipt_ids: ids(MAX_ACK_IDS + 1)
            })),
            Err((ErrorCode::TooLarge, "too many ids in one frame"))
        );
    }

    #[test]
    fn prekey_uploads_are_checked() {
        let key = |id| proto::OneTimePrekey {
            id,
            key: vec![9; 32],
        };
        let upload = |n: u32, signed: Vec<u8>| {
            Body::UploadPrekeys(proto::UploadPrekeys {
                signed_prekey_id: 1,
                signed_prekey: signed,
                signed_prekey_signature: vec![0; 64],
                one_time_prekeys: (0..n).map(key).collect(),
                ..Default::default()
            })
        };
        let Ok(Request::UploadPrekeys(u)) = parse(upload(2, vec![])) else {
            panic!("a valid upload was refused");
        };
        assert_eq!((u.one_time_prekeys.len(), u.signed_prekey), (2, None));
        assert_eq!(parse(upload(3, vec![])).unwrap_err().0, ErrorCode::TooLarge);
        assert_eq!(
            parse(upload(0, vec![9; 31])).unwrap_err().0,
            ErrorCode::InvalidKey
        );
        assert!(matches!(
            parse(upload(0, vec![9; 32])),
            Ok(Request::UploadPrekeys(UploadPrekeys {
                signed_prekey: Some(_),
                ..
            }))
        ));
    }

    #[test]
    fn kem_prekey_uploads_are_checked() {
        let valid = hush_crypto::kem::KemKeyPair::generate(&mut rand::rng())
            .public()
            .to_bytes()
            .to_vec();
        let kem = |key: &[u8], sig: usize| proto::KemPrekey {
            id: 4,
            key: key.to_vec(),
            signature: vec![1; sig],
        };
        let upload = |n: usize, last: Option<proto::KemPrekey>| {
            Body::UploadPrekeys(proto::UploadPrekeys {
                kem_prekeys: (0..n).map(|_| kem(&valid, 64)).collect(),
                last_resort_kem_prekey: last,
                ..Default::default()
            })
        };
        // At the limit (2 here), and one over.
        let Ok(Request::UploadPrekeys(u)) = parse(upload(2, Some(kem(&valid, 64)))) else {
            panic!("a valid upload was refused");
        };
        assert_eq!(u.kem_prekeys.len(), 2);
        assert_eq!(u.last_resort_kem_prekey.unwrap().key, valid);
        assert_eq!(
            parse(upload(3, None)),
            Err((ErrorCode::TooLarge, "too many KEM prekeys in one upload"))
        );
        // A short key, a key with a coefficient not below q, a short signature.
        let mut not_canonical = valid.clone();
        not_canonical[0] = 0xff;
        not_canonical[1] |= 0x0f;
        for (bad, code) in [
            (kem(&valid[..1183], 64), ErrorCode::InvalidKey),
            (kem(&not_canonical, 64), ErrorCode::InvalidKey),
            (kem(&valid, 63), ErrorCode::Malformed),
        ] {
            assert_eq!(parse(upload(0, Some(bad.clone()))).unwrap_err().0, code);
            let in_list = Body::UploadPrekeys(proto::UploadPrekeys {
                kem_prekeys: vec![bad],
                ..Default::default()
            });
            assert_eq!(parse(in_list).unwrap_err().0, code);
        }
    }

    #[test]
    fn addresses_and_user_ids_are_checked() {
        let long = "u".repeat(MAX_USER_ID + 1);
        for body in [
            Body::FetchBundle(proto::FetchBundle { address: None }),
            Body::FetchBundle(proto::FetchBundle {
                address: Some(addr(&long, 1)),
            }),
            Body::ListDevices(proto::ListDevices {
                user_id: String::new(),
            }),
            Body::ListDevices(proto::ListDevices {
                user_id: long.clone(),
            }),
            Body::Presence(proto::PresenceQuery {
                user_id: String::new(),
            }),
            Body::Presence(proto::PresenceQuery {
                user_id: long.clone(),
            }),
            Body::Authenticate(proto::Authenticate::default()),
        ] {
            assert_eq!(parse(body).unwrap_err().0, ErrorCode::Malformed);
        }
        let auth = |key: Vec<u8>, sig: Vec<u8>| {
            Body::Authenticate(proto::Authenticate {
                address: Some(addr("a", 1)),
                identity_key: key,
                signature: sig,
                ..Default::default()
            })
        };
        assert_eq!(
            parse(auth(vec![1; 31], vec![0; 64])).unwrap_err().0,
            ErrorCode::InvalidKey
        );
        let frame = ClientFrame {
            request_id: 1,
            body: None,
        };
        assert_eq!(
            Request::parse(frame, &LIMITS).unwrap_err().code,
            ErrorCode::Malformed
        );
    }
}
