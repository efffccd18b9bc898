//! The relay connection: TCP (optionally TLS), the WebSocket, authentication, and requests
//! matched to replies by request id. Pushed frames (envelopes, receipts, prekey status)
//! go to a channel for the client's worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::{ClientError, UrlError};
use hush_relay_protocol::codec;
use hush_relay_protocol::limits::MAX_SERVER_FRAME;
use hush_relay_protocol::proto::{self, client_frame::Body as In, server_frame::Body as Out};

/// How long a request waits for its reply.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed relay URL: `ws://host:port` or `wss://host:port` (path `/v1/ws`).
#[derive(Debug, Clone)]
pub(crate) struct RelayUrl {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl RelayUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err(ClientError::Url(UrlError::Scheme));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().map_err(|_| ClientError::Url(UrlError::Port))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(ClientError::Url(UrlError::NoHost));
        }
        Ok(Self { tls, host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub(crate) fn ws(&self) -> String {
        format!(
            "{}://{}/v1/ws",
            if self.tls { "wss" } else { "ws" },
            self.authority()
        )
    }

    pub(crate) fn host_header(&self) -> String {
        self.authority()
    }
}

/// A byte stream to the relay, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens TCP, and TLS if the URL says so (trusting the web PKI roots and, if given, the
/// PEM certificates in `extra_roots`).
pub(crate) async fn open_stream(
    url: &RelayUrl,
    extra_roots: Option<&PathBuf>,
) -> Result<Box<dyn Io>, ClientError> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| ClientError::Io(std::io::ErrorKind::TimedOut.into()))??;
    tcp.set_nodelay(true)?;
    if !url.tls {
        return Ok(Box::new(tcp));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_roots {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| ClientError::Url(UrlError::CaFile(Box::new(e))))?
        {
            let cert = cert.map_err(|e| ClientError::Url(UrlError::CaFile(Box::new(e))))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Url(UrlError::CaFile(Box::new(e))))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Url(UrlError::Tls(Box::new(e))))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(url.host.clone())
        .map_err(|_| ClientError::Url(UrlError::TlsName))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(Box::new(tls))
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Out>>>>;

/// A live, authenticated connection: send requests through it; pushes arrive on the
/// channel returned by [`connect`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next: Arc<AtomicU64>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl Conn {
    /// Sends a request and waits for its reply; an `Error` reply becomes
    /// [`ClientError::Relay`].
    pub(crate) async fn request(&self, body: In) -> Result<Out, ClientError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| ClientError::Offline)?
            .insert(id, tx);
        let frame = codec::encode_client(id, body);
        if self.out.send(frame).await.is_err() {
            return Err(ClientError::Offline);
        }
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        match reply {
            Ok(Ok(Out::Error(e))) => Err(relay_error(&e)),
            Ok(Ok(out)) => Ok(out),
            _ => Err(ClientError::Offline),
        }
    }

    /// Whether the connection is still up.
    pub(crate) fn is_open(&self) -> bool {
        self.alive.load(Ordering::Relaxed) && !self.out.is_closed()
    }
}

pub(crate) fn relay_error(e: &proto::Error) -> ClientError {
    ClientError::Relay {
        code: e.code.into(),
        message: e.message.clone(),
        retry_after_ms: e.retry_after_ms,
    }
}

/// What authentication needs.
pub(crate) struct Credentials<'a> {
    pub(crate) identity: &'a hush_crypto::IdentityKeyPair,
    pub(crate) user: &'a str,
    pub(crate) device: u32,
    pub(crate) registration_token: Option<&'a [u8]>,
    /// The relay id to expect in the challenge, if bound.
    pub(crate) relay_id: Option<&'a [u8]>,
    pub(crate) link: Option<proto::DeviceLink>,
}

/// Connects, authenticates, and starts the reader and writer tasks. Returns the
/// connection, the relay's `Authenticated` answer (whether this authentication registered
/// the device, whether the relay checks device lists), and the push channel (closed when
/// the connection drops).
pub(crate) async fn connect(
    url: &RelayUrl,
    extra_roots: Option<&PathBuf>,
    creds: Credentials<'_>,
) -> Result<
    (
        Conn,
        proto::Authenticated,
        mpsc::Receiver<proto::ServerFrame>,
    ),
    ClientError,
> {
    let stream = open_stream(url, extra_roots).await?;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_SERVER_FRAME);
    config.max_frame_size = Some(MAX_SERVER_FRAME);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(url.ws(), stream, Some(config)),
    )
    .await
    .map_err(|_| ClientError::Io(std::io::ErrorKind::TimedOut.into()))?
    .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;

    let recv = |m: Option<Result<WsMessage, _>>| -> Result<proto::ServerFrame, ClientError> {
        match m {
            Some(Ok(WsMessage::Binary(b))) => {
                codec::decode_server(&b, MAX_SERVER_FRAME).map_err(|_| ClientError::Protocol)
            }
            _ => Err(ClientError::Offline),
        }
    };
    let first = recv(
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| ClientError::Offline)?,
    )?;
    let Some(Out::Challenge(ch)) = first.body else {
        return match first.body {
            Some(Out::Error(e)) => Err(relay_error(&e)),
            _ => Err(ClientError::Protocol),
        };
    };
    if creds
        .relay_id
        .is_some_and(|expected| !hush_crypto::constant_time_eq(expected, &ch.relay_id))
    {
        return Err(ClientError::WrongRelay);
    }
    let key = creds.identity.public().to_bytes().to_vec();
    let sig = creds
        .identity
        .sign(&hush_relay_protocol::signed::auth_message(
            &ch.relay_id,
            &ch.nonce,
            creds.user,
            creds.device,
            &key,
        ));
    let auth = codec::encode_client(
        1,
        In::Authenticate(proto::Authenticate {
            address: Some(proto::Address {
                user_id: creds.user.to_string(),
                device_id: creds.device,
            }),
            identity_key: key,
            signature: sig.to_bytes().to_vec(),
            registration_token: creds
                .registration_token
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            link: creds.link,
        }),
    );
    ws.send(WsMessage::Binary(auth.into()))
        .await
        .map_err(|_| ClientError::Offline)?;
    let reply = recv(
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| ClientError::Offline)?,
    )?;
    let authenticated = match reply.body {
        Some(Out::Authenticated(a)) => a,
        Some(Out::Error(e)) => return Err(relay_error(&e)),
        _ => return Err(ClientError::Protocol),
    };

    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let (push_tx, push_rx) = mpsc::channel::<proto::ServerFrame>(1024);
    let pending: Pending = Arc::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let dead = Arc::new(tokio::sync::Notify::new());
    let writer_dead = dead.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = out_rx.recv() => {
                    let Some(frame) = frame else { break };
                    if sink.send(WsMessage::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
                () = writer_dead.notified() => break,
            }
        }
        let _ = sink.close().await;
    });
    let reader_pending = pending.clone();
    let reader_alive = alive.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let WsMessage::Binary(b) = m else {
                if matches!(m, WsMessage::Close(_)) {
                    break;
                }
                continue;
            };
            // A frame that does not decode, or has no body, is skipped (SPEC §14).
            let Ok(f) = codec::decode_server(&b, MAX_SERVER_FRAME) else {
                continue;
            };
            if f.request_id != 0 {
                let waiter = reader_pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&f.request_id));
                if let (Some(w), Some(body)) = (waiter, f.body) {
                    let _ = w.send(body);
                }
                continue;
            }
            if push_tx.send(f).await.is_err() {
                break;
            }
        }
        // Dropping the waiters fails every request still in flight.
        reader_alive.store(false, Ordering::Relaxed);
        if let Ok(mut p) = reader_pending.lock() {
            p.clear();
        }
        dead.notify_one();
    });
    Ok((
        Conn {
            out: out_tx,
            pending,
            next: Arc::new(AtomicU64::new(2)),
            alive,
        },
        authenticated,
        push_rx,
    ))
}
