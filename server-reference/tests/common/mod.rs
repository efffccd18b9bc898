//! What the relay's integration tests share: a relay on either backend, and a raw
//! WebSocket client speaking the relay protocol.

#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub(crate) use std::path::PathBuf;
pub(crate) use std::time::Duration;

pub(crate) use futures_util::{SinkExt, StreamExt};
pub(crate) use hush_crypto::{IdentityKeyPair, X25519KeyPair};
pub(crate) use hush_relay::{Config, RateLimit, Relay, SqliteStore};
pub(crate) use hush_relay_protocol::proto::{
    self, ErrorCode, client_frame::Body as In, server_frame::Body as Out,
};
pub(crate) use hush_relay_protocol::signed;
pub(crate) use prost::Message as _;
pub(crate) use tokio::net::TcpStream;
pub(crate) use tokio_tungstenite::tungstenite::Message;
pub(crate) use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which store a test runs on. Every behaviour test runs on both (see the bottom of the
/// file): SQLite in its own directory, PostgreSQL (127.0.0.1:5432, database `test`) in its
/// own schema.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) const PG_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A test's database: a SQLite file or a PostgreSQL schema.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) backend: Backend,
    pub(crate) path: PathBuf,
    pub(crate) schema: String,
}

impl Backend {
    /// A fresh, empty database for the test `name`.
    pub(crate) async fn db(self, name: &str) -> Db {
        let path = db_path(&format!("{self:?}-{name}"));
        let schema = format!(
            "hush_test_{}_{}",
            std::process::id(),
            name.replace('-', "_")
        );
        if let Self::Postgres = self {
            hush_relay::PgStore::drop_schema(PG_URL, &schema)
                .await
                .unwrap();
        }
        Db {
            backend: self,
            path,
            schema,
        }
    }
}

impl Db {
    /// Every byte the database holds, for scanning.
    pub(crate) async fn dump(&self) -> Vec<Vec<u8>> {
        match self.backend {
            Backend::Sqlite => ["", "-wal", "-shm"]
                .iter()
                .filter_map(|ext| std::fs::read(format!("{}{ext}", self.path.display())).ok())
                .collect(),
            Backend::Postgres => {
                let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let tables = client
                    .query(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                        &[&self.schema],
                    )
                    .await
                    .unwrap();
                let mut out = Vec::new();
                for t in tables {
                    let name: String = t.get(0);
                    for r in client
                        .query(
                            &format!("SELECT t::TEXT FROM {}.{} t", self.schema, name),
                            &[],
                        )
                        .await
                        .unwrap()
                    {
                        out.push(r.get::<_, String>(0).into_bytes());
                    }
                }
                out
            }
        }
    }
}

pub(crate) struct TestRelay {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) db: Db,
}

pub(crate) fn db_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hush-relay-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("relay.db")
}

pub(crate) async fn spawn<S: hush_relay::Store>(
    config: Config,
    store: S,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let relay = Relay::build(config, store).await.unwrap();
    let addr = relay.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (addr, tx, task)
}

pub(crate) async fn start(db: Db, tweak: impl FnOnce(&mut Config)) -> TestRelay {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        blob_dir: db.path.with_file_name("blobs"),
        ..Config::default()
    };
    tweak(&mut config);
    let (addr, stop, task) = match db.backend {
        Backend::Sqlite => spawn(config, SqliteStore::open(&db.path).unwrap()).await,
        Backend::Postgres => {
            spawn(
                config,
                hush_relay::PgStore::connect(PG_URL, Some(&db.schema), 8)
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    TestRelay {
        addr,
        stop: Some(stop),
        task,
        db,
    }
}

impl TestRelay {
    pub(crate) async fn stop(mut self) -> Db {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.db.clone()
    }
}

pub(crate) struct Client {
    pub(crate) ws: Ws,
    pub(crate) nonce: Vec<u8>,
    pub(crate) relay_id: Vec<u8>,
    pub(crate) next_id: u64,
    /// Frames received while waiting for something else.
    pub(crate) queue: Vec<proto::ServerFrame>,
}

pub(crate) async fn connect(relay: &TestRelay) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", relay.addr))
        .await
        .unwrap();
    let mut c = Client {
        ws,
        nonce: vec![],
        relay_id: vec![],
        next_id: 1,
        queue: vec![],
    };
    let f = c.recv_raw().await.expect("challenge");
    let Some(Out::Challenge(ch)) = f.body else {
        panic!("expected a challenge, got {f:?}")
    };
    c.nonce = ch.nonce;
    c.relay_id = ch.relay_id;
    c
}

impl Client {
    pub(crate) async fn recv_raw(&mut self) -> Option<proto::ServerFrame> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .ok()??;
            match m.ok()? {
                Message::Binary(b) => return Some(proto::ServerFrame::decode(&b[..]).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next frame, taking queued ones first.
    pub(crate) async fn recv(&mut self) -> Option<proto::ServerFrame> {
        if !self.queue.is_empty() {
            return Some(self.queue.remove(0));
        }
        self.recv_raw().await
    }

    pub(crate) async fn send_bytes(&mut self, b: Vec<u8>) {
        self.ws.send(Message::Binary(b.into())).await.unwrap();
    }

    pub(crate) async fn send(&mut self, body: In) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_bytes(
            proto::ClientFrame {
                request_id: id,
                body: Some(body),
            }
            .encode_to_vec(),
        )
        .await;
        id
    }

    /// Sends and waits for the reply to this request (queueing pushes meanwhile).
    pub(crate) async fn call(&mut self, body: In) -> Out {
        let id = self.send(body).await;
        loop {
            let f = self
                .recv_raw()
                .await
                .expect("connection closed while waiting for a reply");
            if f.request_id == id {
                return f.body.unwrap();
            }
            self.queue.push(f);
        }
    }

    pub(crate) async fn auth(
        &mut self,
        id: &IdentityKeyPair,
        user: &str,
        device: u32,
        link: Option<proto::DeviceLink>,
    ) -> Out {
        self.auth_with_token(id, user, device, link, vec![]).await
    }

    /// Authenticates presenting a registration token.
    pub(crate) async fn auth_with_token(
        &mut self,
        id: &IdentityKeyPair,
        user: &str,
        device: u32,
        link: Option<proto::DeviceLink>,
        registration_token: Vec<u8>,
    ) -> Out {
        let key = id.public().to_bytes().to_vec();
        let sig = id.sign(&signed::auth_message(
            &self.relay_id,
            &self.nonce,
            user,
            device,
            &key,
        ));
        self.call(In::Authenticate(proto::Authenticate {
            address: Some(addr(user, device)),
            identity_key: key,
            signature: sig.to_bytes().to_vec(),
            registration_token,
            link,
        }))
        .await
    }

    /// Waits for a pushed frame matching `f`.
    pub(crate) async fn expect_push<T>(&mut self, mut f: impl FnMut(&Out) -> Option<T>) -> T {
        loop {
            let frame = self
                .recv()
                .await
                .expect("connection closed while waiting for a push");
            if let Some(body) = &frame.body
                && let Some(t) = f(body)
            {
                return t;
            }
        }
    }

    /// Sends raw bytes that are not a valid frame: the relay answers MALFORMED, and the
    /// connection still answers a ping.
    pub(crate) async fn malformed_then_usable(&mut self, frame: Message) {
        self.ws.send(frame).await.unwrap();
        let e = self
            .expect_push(|b| matches!(b, Out::Error(_)).then(|| code(b)))
            .await;
        assert_eq!(e, ErrorCode::Malformed);
        assert!(matches!(
            self.call(In::Ping(proto::Ping {})).await,
            Out::Pong(_)
        ));
    }

    pub(crate) async fn envelope(&mut self) -> proto::Envelope {
        self.expect_push(|b| {
            if let Out::Envelope(e) = b {
                Some(e.clone())
            } else {
                None
            }
        })
        .await
    }

    pub(crate) async fn receipt(&mut self) -> proto::Receipt {
        self.expect_push(|b| {
            if let Out::Receipt(r) = b {
                Some(r.clone())
            } else {
                None
            }
        })
        .await
    }
}

pub(crate) fn addr(user: &str, device: u32) -> proto::Address {
    proto::Address {
        user_id: user.into(),
        device_id: device,
    }
}

pub(crate) fn code(out: &Out) -> ErrorCode {
    match out {
        Out::Error(e) => ErrorCode::try_from(e.code).unwrap(),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

pub(crate) async fn registered(relay: &TestRelay, user: &str) -> (Client, IdentityKeyPair) {
    let id = IdentityKeyPair::generate(&mut rand::rng());
    let mut c = connect(relay).await;
    assert!(matches!(
        c.auth(&id, user, 1, None).await,
        Out::Authenticated(_)
    ));
    (c, id)
}

pub(crate) fn send_to(recipients: &[(&str, u32)], mid: &[u8], ct: &[u8]) -> In {
    In::Send(proto::Send {
        recipients: recipients.iter().map(|(u, d)| addr(u, *d)).collect(),
        message_id: mid.to_vec(),
        ciphertext: ct.to_vec(),
        device_lists: vec![],
        franking_commitment: vec![],
    })
}

pub(crate) fn upload(id: &IdentityKeyPair, spk_id: u32, n: u32) -> In {
    let spk = X25519KeyPair::generate(&mut rand::rng());
    let sig = id.sign(&signed::signed_prekey_message(
        spk_id,
        spk.public().as_bytes(),
    ));
    In::UploadPrekeys(proto::UploadPrekeys {
        signed_prekey_id: spk_id,
        signed_prekey: spk.public().to_bytes().to_vec(),
        signed_prekey_signature: sig.to_bytes().to_vec(),
        one_time_prekeys: (0..n)
            .map(|i| proto::OneTimePrekey {
                id: spk_id * 10_000 + i,
                key: X25519KeyPair::generate(&mut rand::rng())
                    .public()
                    .to_bytes()
                    .to_vec(),
            })
            .collect(),
        ..Default::default()
    })
}

/// A signed one-time or last-resort KEM prekey of `id` numbered `key_id`.
pub(crate) fn kem_prekey(id: &IdentityKeyPair, key_id: u32) -> proto::KemPrekey {
    let k = hush_sessions::KemPrekey::generate_one_time(key_id, id, &mut rand::rng());
    proto::KemPrekey {
        id: key_id,
        key: k.public_key().as_bytes().to_vec(),
        signature: k.signature().to_bytes().to_vec(),
    }
}

/// A post-quantum upload: signed prekey `spk_id` signed for PQXDH, `n` one-time prekeys and
/// `kem` one-time KEM prekeys (ids `spk_id * 10_000 + i` and `spk_id * 20_000 + i`), and a
/// last-resort KEM prekey if `last_resort` names its id.
pub(crate) fn upload_pq(
    id: &IdentityKeyPair,
    spk_id: u32,
    n: u32,
    kem: u32,
    last_resort: Option<u32>,
) -> In {
    let spk = X25519KeyPair::generate(&mut rand::rng());
    let sig = id.sign(&signed::pq_signed_prekey_message(
        spk_id,
        spk.public().as_bytes(),
    ));
    In::UploadPrekeys(proto::UploadPrekeys {
        signed_prekey_id: spk_id,
        signed_prekey: spk.public().to_bytes().to_vec(),
        signed_prekey_signature: sig.to_bytes().to_vec(),
        one_time_prekeys: (0..n)
            .map(|i| proto::OneTimePrekey {
                id: spk_id * 10_000 + i,
                key: X25519KeyPair::generate(&mut rand::rng())
                    .public()
                    .to_bytes()
                    .to_vec(),
            })
            .collect(),
        kem_prekeys: (0..kem)
            .map(|i| kem_prekey(id, spk_id * 20_000 + i))
            .collect(),
        last_resort_kem_prekey: last_resort.map(|k| kem_prekey(id, k)),
    })
}

/// The relay's bundle as hush-sessions reads it.
pub(crate) fn session_bundle(b: &proto::Bundle) -> hush_sessions::PrekeyBundle {
    let bundle = hush_sessions::PrekeyBundle::from_public_parts(
        hush_crypto::IdentityPublicKey::from_slice(&b.identity_key).unwrap(),
        b.signed_prekey_id,
        hush_crypto::X25519PublicKey::from_slice(&b.signed_prekey).unwrap(),
        hush_crypto::Signature::from_slice(&b.signed_prekey_signature).unwrap(),
        b.one_time_prekey.as_ref().map(|k| {
            (
                k.id,
                hush_crypto::X25519PublicKey::from_slice(&k.key).unwrap(),
            )
        }),
    );
    match &b.kem_prekey {
        None => bundle,
        Some(k) => bundle.with_kem_public(hush_sessions::BundleKemPrekey {
            id: k.id,
            key: hush_crypto::kem::KemPublicKey::from_slice(&k.key).unwrap(),
            signature: hush_crypto::Signature::from_slice(&k.signature).unwrap(),
        }),
    }
}

/// A device link: `linker` (device `linking_device` of `user`) vouches for `key` as `device`.
pub(crate) fn link_for(
    linker: &IdentityKeyPair,
    linking_device: u32,
    user: &str,
    device: u32,
    key: &IdentityKeyPair,
) -> proto::DeviceLink {
    proto::DeviceLink {
        linking_device_id: linking_device,
        signature: linker
            .sign(&signed::link_message(user, device, key.public().as_bytes()))
            .to_bytes()
            .to_vec(),
    }
}

/// Every behaviour test, once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Postgres).await;
            })*
        }
    };
}

/// One HTTP request on its own connection: (status, head, de-chunked body).
pub(crate) async fn http(relay: &TestRelay, request: Vec<u8>) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(&request).await.unwrap();
    let mut out = vec![];
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let mut body = out[split + 4..].to_vec();
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        // De-chunk.
        let mut plain = vec![];
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = plain;
    }
    (status, head, body)
}

/// A blob upload request, with a bearer token if given.
pub(crate) fn post(token: Option<&[u8]>, body: &[u8]) -> Vec<u8> {
    let auth = token
        .map(|t| {
            format!(
                "Authorization: Bearer {}\r\n",
                t.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        })
        .unwrap_or_default();
    let mut r = format!("POST /v1/blobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}
