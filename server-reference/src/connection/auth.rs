//! Authentication (docs/SPEC.md §14.1) as two typed states: [`Challenged`] (the relay has
//! sent a fresh nonce and waits for exactly one `Authenticate` frame) consumes itself into
//! [`Authenticated`] or a fatal refusal.

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use hush_crypto::IdentityPublicKey;
use hush_relay_protocol::proto::{self, client_frame::Body as In, server_frame::Body as Out};
use hush_relay_protocol::{Authenticate, Request, codec, limits::NONCE_LEN, signed};
use rand::Rng as _;

use super::refusal::{Refused, refuse};
use super::{Sink, send};
use crate::store::{Addr, DeviceLookup, Store};
use crate::{Shared, now_ms};
use proto::ErrorCode;

/// The challenge is out; the next frame must answer it.
pub(super) struct Challenged {
    nonce: [u8; NONCE_LEN],
}

/// A device that proved it holds its identity key.
pub(super) struct Authenticated {
    request_id: u64,
    pub(super) addr: Addr,
    registered: bool,
}

/// Challenge, then exactly one `Authenticate` frame within the authentication timeout.
/// Returns the device, or `None` after sending a fatal error frame.
pub(super) async fn authenticate<S: Store>(
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    shared: &Shared<S>,
) -> Option<Addr> {
    let challenged = Challenged::send(sink, shared).await?;
    let next = tokio::time::timeout(shared.config.auth_timeout, stream.next()).await;
    let bytes = match next {
        Err(_) => {
            let r = Refused::AUTH_TIMEOUT;
            shared.metrics.reject(r.reason);
            send(sink, r.frame(0)).await;
            return None;
        }
        Ok(Some(Ok(Message::Binary(b)))) => b,
        Ok(_) => return None,
    };
    match challenged.accept(&bytes, shared).await {
        Ok(device) => {
            // Online from the moment it is told it is authenticated.
            let _ = shared.store.touch(&device.addr.user, now_ms()).await;
            let answer = Out::Authenticated(proto::Authenticated {
                registered: device.registered,
                checks_device_lists: true,
            });
            send(sink, codec::encode_server(device.request_id, answer)).await;
            Some(device.addr)
        }
        Err((request_id, r)) => {
            shared.metrics.reject(r.reason);
            send(sink, r.fatal().frame(request_id)).await;
            None
        }
    }
}

impl Challenged {
    /// Sends a challenge with a fresh nonce. `None` if the connection is gone.
    async fn send<S>(sink: &mut Sink, shared: &Shared<S>) -> Option<Self> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let challenge = proto::Challenge {
            nonce: nonce.to_vec(),
            relay_id: shared.config.relay_id.clone(),
        };
        send(sink, codec::encode_server(0, Out::Challenge(challenge)))
            .await
            .then_some(Self { nonce })
    }

    /// Checks the answer: the signature over this challenge, then the device's registration
    /// (registering it, or re-keying it with a device link, where allowed).
    async fn accept<S: Store>(
        self,
        bytes: &[u8],
        shared: &Shared<S>,
    ) -> Result<Authenticated, (u64, Refused)> {
        let frame = codec::decode_client(bytes, shared.config.max_frame_bytes)
            .map_err(|e| (0, e.into()))?;
        let rid = frame.request_id;
        if !matches!(frame.body, Some(In::Authenticate(_))) {
            return Err((rid, Refused::AUTHENTICATE_FIRST));
        }
        let Request::Authenticate(a) = Request::parse(frame, &shared.config.request_limits())
            .map_err(|e| (rid, e.into()))?
            .1
        else {
            return Err((rid, Refused::AUTHENTICATE_FIRST));
        };
        let key = a.identity_key.as_bytes();
        let msg = signed::auth_message(
            &shared.config.relay_id,
            &self.nonce,
            &a.address.user,
            a.address.device,
            key,
        );
        if a.identity_key.verify(&msg, &a.signature).is_err() {
            return Err((
                rid,
                refuse(
                    ErrorCode::AuthFailed,
                    "signature does not verify for this challenge",
                    "auth_failed",
                ),
            ));
        }
        let registered = register(&a, shared).await.map_err(|r| (rid, r))?;
        Ok(Authenticated {
            request_id: rid,
            addr: a.address,
            registered,
        })
    }
}

/// Finds the device, registering or re-keying it where the rules allow. `true` when this
/// authentication registered the device (or a new key for it).
async fn register<S: Store>(a: &Authenticate, shared: &Shared<S>) -> Result<bool, Refused> {
    let addr = &a.address;
    let key = a.identity_key.as_bytes();
    let link_invalid = refuse(
        ErrorCode::Forbidden,
        "device link signature does not verify",
        "link_invalid",
    );
    match shared.store.device(addr).await? {
        DeviceLookup::Known(stored) if stored == key => Ok(false),
        DeviceLookup::Known(stored) => {
            // A reinstalled device with a new identity key: another device of the same user
            // must vouch for the new key.
            let Some(link) = a.link.as_ref() else {
                return Err(refuse(
                    ErrorCode::AuthFailed,
                    "another identity key owns this device",
                    "auth_failed",
                ));
            };
            let devices = shared.store.devices(&addr.user).await?;
            if link.linking_device_id == addr.device || !link_verifies(&devices, link, addr, key) {
                return Err(link_invalid);
            }
            if !shared.store.rekey(addr, &stored, key).await? {
                return Err(refuse(
                    ErrorCode::AuthFailed,
                    "device changed concurrently",
                    "auth_failed",
                ));
            }
            // The old installation, if still connected, is replaced when this one's session
            // registers with the hub.
            Ok(true)
        }
        DeviceLookup::Unknown(devices) => {
            if devices.is_empty() {
                // An unclaimed user id: the first device claims it (with a token, if the
                // relay requires one).
                if let Some(token) = &shared.config.registration_token
                    && !hush_crypto::constant_time_eq(token, &a.registration_token)
                {
                    return Err(refuse(
                        ErrorCode::Forbidden,
                        "registration token required",
                        "registration_token",
                    ));
                }
                if let Some(hook) = &shared.config.registration_hook {
                    let claim = crate::hook::Claim {
                        user_id: &addr.user,
                        device_id: addr.device,
                        identity_key: key,
                        token: &a.registration_token,
                    };
                    match crate::hook::allows(hook, &claim).await {
                        Ok(true) => {}
                        Ok(false) => {
                            return Err(refuse(
                                ErrorCode::Forbidden,
                                "registration refused by the operator's check",
                                "registration_hook",
                            ));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "registration hook unreachable");
                            return Err(Refused {
                                retry_after_ms: 5000,
                                ..refuse(
                                    ErrorCode::Internal,
                                    "the operator's registration check did not answer",
                                    "registration_hook_down",
                                )
                            });
                        }
                    }
                }
            } else {
                // Another device of an existing user: an existing device must vouch for it.
                let link = a.link.as_ref().ok_or(refuse(
                    ErrorCode::Forbidden,
                    "user exists: a device link is required",
                    "link_required",
                ))?;
                if !link_verifies(&devices, link, addr, key) {
                    return Err(link_invalid);
                }
            }
            if !shared
                .store
                .register(addr, key, now_ms(), shared.config.max_devices_per_user)
                .await?
            {
                return Err(refuse(
                    ErrorCode::AuthFailed,
                    "device registered concurrently",
                    "auth_failed",
                ));
            }
            Ok(true)
        }
    }
}

/// Whether `link` is a valid signature, by the linking device among `devices`, vouching for
/// `identity_key` at `addr`.
fn link_verifies(
    devices: &[(u32, Vec<u8>)],
    link: &proto::DeviceLink,
    addr: &Addr,
    identity_key: &[u8],
) -> bool {
    let Some(linker) = devices
        .iter()
        .find(|(d, _)| *d == link.linking_device_id)
        .and_then(|(_, k)| IdentityPublicKey::from_slice(k).ok())
    else {
        return false;
    };
    hush_crypto::Signature::from_slice(&link.signature).is_some_and(|s| {
        linker
            .verify(
                &signed::link_message(&addr.user, addr.device, identity_key),
                &s,
            )
            .is_ok()
    })
}
