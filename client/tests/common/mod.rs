//! What the client's integration tests share: an in-process relay on loopback, a device
//! driven through the SDK, and a raw device that sends whatever bytes it likes.

#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::time::Duration;

pub(crate) use futures_util::{SinkExt, StreamExt};
pub(crate) use hush_client::proto::client as pc;
pub(crate) use hush_client::{
    Body, Client, ClientConfig, ClientError, DropReason, Event, GroupChange, Message,
};
pub(crate) use hush_crypto::{IdentityKeyPair, StorageKey};
pub(crate) use hush_relay_protocol::proto::{
    self as pr, client_frame::Body as In, server_frame::Body as Out,
};
pub(crate) use hush_relay_protocol::signed::auth_message;
pub(crate) use prost::Message as _;
pub(crate) use tokio_tungstenite::tungstenite::Message as Ws;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hush-client-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) async fn relay(dir: &Path) -> String {
    relay_with(dir, |_| {}).await
}

/// A relay with some settings changed.
pub(crate) async fn relay_with(dir: &Path, tweak: impl FnOnce(&mut hush_relay::Config)) -> String {
    let store = hush_relay::SqliteStore::open(&dir.join("relay.db")).unwrap();
    let mut config = hush_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        blob_dir: dir.join("blobs"),
        ..Default::default()
    };
    tweak(&mut config);
    let relay = hush_relay::Relay::build(config, store).await.unwrap();
    let addr = relay.local_addr().to_string();
    tokio::spawn(relay.run(std::future::pending()));
    addr
}

pub(crate) struct Dev {
    pub(crate) client: Client,
    pub(crate) events: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

pub(crate) fn open(dir: &Path, addr: &str, user: &str, key: [u8; 32]) -> Result<Dev, ClientError> {
    open_with(dir, addr, user, key, |_| {})
}

/// [`open`] with settings changed by `tweak`.
pub(crate) fn open_with(
    dir: &Path,
    addr: &str,
    user: &str,
    key: [u8; 32],
    tweak: impl FnOnce(&mut ClientConfig),
) -> Result<Dev, ClientError> {
    let mut config = ClientConfig::new(
        format!("ws://{addr}"),
        dir.join(format!("{user}.db")),
        StorageKey::from_bytes(key),
        user,
        1,
    );
    tweak(&mut config);
    let (client, events) = Client::open(config)?;
    Ok(Dev { client, events })
}

impl Dev {
    pub(crate) async fn online(&self) {
        self.client.start();
        self.client.wait_connected(WAIT).await.unwrap();
    }

    pub(crate) async fn next<T>(&mut self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            let e = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("timed out")
                .expect("client gone");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    }

    pub(crate) async fn message(&mut self) -> Message {
        self.next(|e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Waits until this device has joined a group.
    pub(crate) async fn joined(&mut self) {
        self.next(|e| {
            matches!(
                e,
                Event::Group {
                    change: GroupChange::Joined { .. },
                    ..
                }
            )
            .then_some(())
        })
        .await;
    }

    pub(crate) async fn dropped(&mut self) -> DropReason {
        self.next(|e| match e {
            Event::Dropped { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await
    }
}

/// A hand-driven device that sends whatever bytes it likes.
pub(crate) struct Raw {
    pub(crate) ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub(crate) next: u64,
    pub(crate) id: IdentityKeyPair,
}

impl Raw {
    pub(crate) async fn connect(addr: &str, user: &str) -> Self {
        let id = IdentityKeyPair::generate(&mut rand::rng());
        match Self::connect_device(addr, user, 1, id, None).await {
            Ok(raw) => raw,
            Err(refused) => panic!("{refused:?}"),
        }
    }

    /// Authenticates as `user`'s device `device` with key `id` (and a link for a further
    /// device): the connection, or the relay's answer when it refuses.
    pub(crate) async fn connect_device(
        addr: &str,
        user: &str,
        device: u32,
        id: IdentityKeyPair,
        link: Option<pr::DeviceLink>,
    ) -> Result<Self, Out> {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
            .await
            .unwrap();
        let Some(Ok(Ws::Binary(b))) = ws.next().await else {
            panic!("no challenge")
        };
        let Some(Out::Challenge(ch)) = pr::ServerFrame::decode(&b[..]).unwrap().body else {
            panic!("no challenge")
        };
        let key = id.public().to_bytes().to_vec();
        let sig = id.sign(&auth_message(&ch.relay_id, &ch.nonce, user, device, &key));
        let mut raw = Self { ws, next: 1, id };
        let reply = raw
            .call(In::Authenticate(pr::Authenticate {
                address: Some(pr::Address {
                    user_id: user.into(),
                    device_id: device,
                }),
                identity_key: key,
                signature: sig.to_bytes().to_vec(),
                link,
                ..Default::default()
            }))
            .await;
        match reply {
            Out::Authenticated(_) => Ok(raw),
            refused => Err(refused),
        }
    }

    /// A link by this device (device 1 of `user`) for `user`'s device `device` with `key`.
    pub(crate) fn link(&self, user: &str, device: u32, key: &IdentityKeyPair) -> pr::DeviceLink {
        pr::DeviceLink {
            linking_device_id: 1,
            signature: self
                .id
                .sign(&hush_relay_protocol::signed::link_message(
                    user,
                    device,
                    key.public().as_bytes(),
                ))
                .to_bytes()
                .to_vec(),
        }
    }

    pub(crate) async fn call(&mut self, body: In) -> Out {
        let id = self.next;
        self.next += 1;
        let f = pr::ClientFrame {
            request_id: id,
            body: Some(body),
        };
        self.ws
            .send(Ws::Binary(f.encode_to_vec().into()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Ws::Binary(b))) = self.ws.next().await else {
                panic!("closed")
            };
            let f = pr::ServerFrame::decode(&b[..]).unwrap();
            if f.request_id == id {
                return f.body.unwrap();
            }
        }
    }

    pub(crate) async fn send_to(&mut self, user: &str, ciphertext: Vec<u8>) {
        let mut mid = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut mid);
        self.send_as(user, &mid, ciphertext).await;
    }

    /// Sends `ciphertext` to `user`'s device 1 under message id `mid`; the relay stores it.
    pub(crate) async fn send_as(&mut self, user: &str, mid: &[u8], ciphertext: Vec<u8>) {
        self.send_franked(user, mid, ciphertext, vec![]).await;
    }

    /// [`Raw::send_as`] with a franking commitment (SPEC §17).
    pub(crate) async fn send_franked(
        &mut self,
        user: &str,
        mid: &[u8],
        ciphertext: Vec<u8>,
        franking_commitment: Vec<u8>,
    ) {
        let out = self
            .call(In::Send(pr::Send {
                recipients: vec![pr::Address {
                    user_id: user.into(),
                    device_id: 1,
                }],
                message_id: mid.to_vec(),
                ciphertext,
                device_lists: vec![],
                franking_commitment,
            }))
            .await;
        assert!(matches!(out, Out::Sent(_)), "{out:?}");
    }
}

/// A hand-driven device with real sessions: sends whatever content it likes.
pub(crate) struct Peer {
    pub(crate) raw: Raw,
    pub(crate) user: String,
    pub(crate) sessions: std::collections::HashMap<String, hush_sessions::Session>,
}

impl Peer {
    pub(crate) fn member(&self) -> pc::Member {
        pc::Member {
            identity_key: self.raw.id.public().to_bytes().to_vec(),
            user_id: self.user.clone(),
            device_id: 1,
        }
    }

    /// Encrypts `body` for `user`'s device 1 (starting a session from its bundle the first
    /// time) and sends it.
    pub(crate) async fn send_content(&mut self, user: &str, body: pc::content::Body) {
        self.start_session(user).await;
        self.send_over_session(user, body).await;
    }

    /// Starts a session with `user`'s device 1 from its bundle, unless there is one.
    pub(crate) async fn start_session(&mut self, user: &str) {
        if !self.sessions.contains_key(user) {
            // A client is connected before its first prekey upload is stored: until then
            // the relay has no bundle for it, so ask again for a while.
            let deadline = std::time::Instant::now() + WAIT;
            let b = loop {
                let answer = self
                    .raw
                    .call(In::FetchBundle(pr::FetchBundle {
                        address: Some(pr::Address {
                            user_id: user.into(),
                            device_id: 1,
                        }),
                    }))
                    .await;
                match answer {
                    Out::Bundle(b) => break b,
                    other if std::time::Instant::now() >= deadline => {
                        panic!("no bundle: {other:?}")
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            };
            let bundle = hush_sessions::PrekeyBundle::from_public_parts(
                hush_crypto::IdentityPublicKey::from_slice(&b.identity_key).unwrap(),
                b.signed_prekey_id,
                hush_crypto::X25519PublicKey::from_slice(&b.signed_prekey).unwrap(),
                hush_crypto::Signature::from_slice(&b.signed_prekey_signature).unwrap(),
                b.one_time_prekey.map(|k| {
                    (
                        k.id,
                        hush_crypto::X25519PublicKey::from_slice(&k.key).unwrap(),
                    )
                }),
            );
            let bundle = match b.kem_prekey {
                Some(k) => bundle.with_kem_public(hush_sessions::BundleKemPrekey {
                    id: k.id,
                    key: hush_crypto::kem::KemPublicKey::from_slice(&k.key).unwrap(),
                    signature: hush_crypto::Signature::from_slice(&k.signature).unwrap(),
                }),
                None => bundle,
            };
            let s = hush_sessions::Session::initiate(&self.raw.id, &bundle, None, &mut rand::rng())
                .unwrap();
            self.sessions.insert(user.to_string(), s);
        }
    }

    /// Encrypts `body` over the session with `user`'s device 1 and sends it.
    pub(crate) async fn send_over_session(&mut self, user: &str, body: pc::content::Body) {
        let mut mid = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut mid);
        let content = pc::Content {
            message_id: mid.to_vec(),
            sent_ms: 1,
            body: Some(body),
            sync: None,
            forwarded: 0,
            franking_key: vec![],
        };
        let (plaintext, commitment) = franked(&content);
        let session = self.sessions.get_mut(user).unwrap();
        let m = session.encrypt(&plaintext).unwrap();
        let payload = pc::Payload {
            kind: Some(pc::payload::Kind::Session(m.to_bytes())),
        };
        self.raw
            .send_franked(user, &mid, payload.encode_to_vec(), commitment)
            .await;
    }
}

/// A Content as hush clients encrypt it (SPEC §17): a text or attachment is followed by a
/// fresh franking key as field 15, and the commitment to the bytes before it goes to the
/// relay. Returns the plaintext and the commitment (empty for other bodies).
pub(crate) fn franked(content: &pc::Content) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = content.encode_to_vec();
    if !matches!(
        content.body,
        Some(pc::content::Body::Text(_) | pc::content::Body::Attachment(_))
    ) {
        return (bytes, vec![]);
    }
    let key = hush_crypto::franking::FrankingKey::generate(&mut rand::rng());
    let commitment = hush_crypto::franking::commit(&key, &bytes).to_vec();
    bytes.extend_from_slice(&[0x7a, 0x20]);
    bytes.extend_from_slice(key.expose());
    (bytes, commitment)
}
