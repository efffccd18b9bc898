//! The relay connection: the WebSocket (natively over TCP, optionally TLS; in a browser, the
//! page's `WebSocket`), authentication, and requests matched to replies by request id.
//! Pushed frames (envelopes, receipts, prekey status) go to a channel for the client's
//! worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{ClientError, UrlError};
use crate::rt;
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

    #[cfg(native_io)]
    pub(crate) fn host_header(&self) -> String {
        self.authority()
    }
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
    flush: rt::Flush,
}

impl Conn {
    /// Sends a request and waits for its reply; an `Error` reply becomes
    /// [`ClientError::Relay`].
    pub(crate) async fn request(&self, body: In) -> Result<Out, ClientError> {
        self.flush.wait().await?;
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
        let reply = rt::timeout(REQUEST_TIMEOUT, rx).await;
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
    flush: rt::Flush,
) -> Result<
    (
        Conn,
        proto::Authenticated,
        mpsc::Receiver<proto::ServerFrame>,
    ),
    ClientError,
> {
    let (mut ws_tx, mut ws_rx) = rt::timeout(Duration::from_secs(10), ws::open(url, extra_roots))
        .await
        .map_err(|_| ClientError::Io(std::io::ErrorKind::TimedOut.into()))??;

    let recv =
        |m: Result<Option<Vec<u8>>, rt::Elapsed>| -> Result<proto::ServerFrame, ClientError> {
            match m {
                Ok(Some(b)) => {
                    codec::decode_server(&b, MAX_SERVER_FRAME).map_err(|_| ClientError::Protocol)
                }
                _ => Err(ClientError::Offline),
            }
        };
    let first = recv(rt::timeout(Duration::from_secs(10), ws_rx.next()).await)?;
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
    // The identity key this signs with is durable before the relay registers it.
    flush.wait().await?;
    ws_tx.send(auth).await?;
    let reply = recv(rt::timeout(Duration::from_secs(10), ws_rx.next()).await)?;
    let authenticated = match reply.body {
        Some(Out::Authenticated(a)) => a,
        Some(Out::Error(e)) => return Err(relay_error(&e)),
        _ => return Err(ClientError::Protocol),
    };

    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let (push_tx, push_rx) = mpsc::channel::<proto::ServerFrame>(1024);
    let pending: Pending = Arc::default();
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let dead = Arc::new(tokio::sync::Notify::new());
    let writer_dead = dead.clone();
    rt::spawn(async move {
        loop {
            tokio::select! {
                frame = out_rx.recv() => {
                    let Some(frame) = frame else { break };
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
                () = writer_dead.notified() => break,
            }
        }
        ws_tx.close().await;
    });
    let reader_pending = pending.clone();
    let reader_alive = alive.clone();
    rt::spawn(async move {
        while let Some(b) = ws_rx.next().await {
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
            flush,
        },
        authenticated,
        push_rx,
    ))
}

#[cfg(native_io)]
pub(crate) use self::ws::{Io, open_stream};

/// The WebSocket natively: tokio-tungstenite over TCP, optionally TLS.
#[cfg(native_io)]
mod ws {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::stream::{SplitSink, SplitStream};
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    use super::RelayUrl;
    use crate::error::{ClientError, UrlError};
    use hush_relay_protocol::limits::MAX_SERVER_FRAME;

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

    type Socket = WebSocketStream<Box<dyn Io>>;

    /// The sending half.
    pub(super) struct WsTx(SplitSink<Socket, WsMessage>);
    /// The receiving half.
    pub(super) struct WsRx(SplitStream<Socket>);

    impl WsTx {
        pub(super) async fn send(&mut self, frame: Vec<u8>) -> Result<(), ClientError> {
            self.0
                .send(WsMessage::Binary(frame.into()))
                .await
                .map_err(|_| ClientError::Offline)
        }

        pub(super) async fn close(mut self) {
            let _ = self.0.close().await;
        }
    }

    impl WsRx {
        /// The next binary message; `None` once the connection is closed or fails.
        pub(super) async fn next(&mut self) -> Option<Vec<u8>> {
            loop {
                match self.0.next().await {
                    Some(Ok(WsMessage::Binary(b))) => return Some(b.to_vec()),
                    Some(Ok(WsMessage::Close(_)) | Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            }
        }
    }

    /// Opens the WebSocket to `url`'s `/v1/ws`.
    pub(super) async fn open(
        url: &RelayUrl,
        extra_roots: Option<&PathBuf>,
    ) -> Result<(WsTx, WsRx), ClientError> {
        let stream = open_stream(url, extra_roots).await?;
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_SERVER_FRAME);
        config.max_frame_size = Some(MAX_SERVER_FRAME);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url.ws(), stream, Some(config))
            .await
            .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
        let (sink, stream) = ws.split();
        Ok((WsTx(sink), WsRx(stream)))
    }
}

/// The WebSocket in a browser: the page's own `WebSocket` (TLS and its certificates are the
/// browser's), its callbacks feeding a channel.
#[cfg(web_io)]
mod ws {
    use std::path::PathBuf;

    use tokio::sync::mpsc;
    use wasm_bindgen::JsCast as _;
    use wasm_bindgen::closure::Closure;
    use web_sys::{BinaryType, MessageEvent, WebSocket};

    use super::RelayUrl;
    use crate::error::ClientError;
    use hush_relay_protocol::limits::MAX_SERVER_FRAME;

    enum Incoming {
        Frame(Vec<u8>),
        Closed,
    }

    /// The socket and its callbacks, detached and closed when both halves are gone.
    struct Socket {
        ws: WebSocket,
        _on_message: Closure<dyn FnMut(MessageEvent)>,
        _on_close: Closure<dyn FnMut(web_sys::Event)>,
        _on_open: Closure<dyn FnMut(web_sys::Event)>,
    }

    impl Drop for Socket {
        fn drop(&mut self) {
            self.ws.set_onmessage(None);
            self.ws.set_onclose(None);
            self.ws.set_onerror(None);
            self.ws.set_onopen(None);
            let _ = self.ws.close();
        }
    }

    /// The sending half.
    pub(super) struct WsTx(std::rc::Rc<Socket>);
    /// The receiving half.
    pub(super) struct WsRx {
        rx: mpsc::UnboundedReceiver<Incoming>,
        _socket: std::rc::Rc<Socket>,
    }

    impl WsTx {
        pub(super) async fn send(&mut self, frame: Vec<u8>) -> Result<(), ClientError> {
            if self.0.ws.ready_state() != WebSocket::OPEN {
                return Err(ClientError::Offline);
            }
            self.0
                .ws
                .send_with_u8_array(&frame)
                .map_err(|_| ClientError::Offline)
        }

        pub(super) async fn close(self) {
            let _ = self.0.ws.close();
        }
    }

    impl WsRx {
        /// The next binary message; `None` once the connection is closed or fails.
        pub(super) async fn next(&mut self) -> Option<Vec<u8>> {
            match self.rx.recv().await {
                Some(Incoming::Frame(b)) => Some(b),
                Some(Incoming::Closed) | None => None,
            }
        }
    }

    fn io(what: &str) -> ClientError {
        ClientError::Io(std::io::Error::other(what.to_string()))
    }

    /// Opens the WebSocket to `url`'s `/v1/ws` and waits until it is open.
    pub(super) async fn open(
        url: &RelayUrl,
        _extra_roots: Option<&PathBuf>,
    ) -> Result<(WsTx, WsRx), ClientError> {
        let ws = WebSocket::new(&url.ws()).map_err(|_| io("the browser refused the WebSocket"))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let (tx, rx) = mpsc::unbounded_channel();
        // `true` when the socket opens, `false` when it fails or closes first.
        let (state_tx, mut state) = mpsc::unbounded_channel::<bool>();
        let frames = tx.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            // Text frames are not part of the protocol; an oversized frame ends the
            // connection as the native client's WebSocket limit does.
            if let Ok(buf) = e.data().dyn_into::<js_sys::ArrayBuffer>() {
                let msg = if buf.byte_length() as usize > MAX_SERVER_FRAME {
                    Incoming::Closed
                } else {
                    Incoming::Frame(js_sys::Uint8Array::new(&buf).to_vec())
                };
                let _ = frames.send(msg);
            }
        });
        let closed_state = state_tx.clone();
        let on_close = Closure::<dyn FnMut(web_sys::Event)>::new(move |_e: web_sys::Event| {
            let _ = closed_state.send(false);
            let _ = tx.send(Incoming::Closed);
        });
        let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_e: web_sys::Event| {
            let _ = state_tx.send(true);
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let socket = std::rc::Rc::new(Socket {
            ws,
            _on_message: on_message,
            _on_close: on_close,
            _on_open: on_open,
        });
        if state.recv().await != Some(true) {
            return Err(io("the relay's WebSocket did not open"));
        }
        Ok((
            WsTx(socket.clone()),
            WsRx {
                rx,
                _socket: socket,
            },
        ))
    }
}
