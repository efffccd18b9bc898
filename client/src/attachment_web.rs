//! Attachments in a browser: the file is in the page's memory (a `File` read by the page),
//! sealed in 64 KiB chunks (SPEC §15) in memory, and carried by the page's
//! `XMLHttpRequest`, whose progress events drive the caller's progress bar. The pointer, the
//! digest check and the size checks are the native client's (`attachment.rs`).

use std::cell::RefCell;
use std::rc::Rc;

use hush_crypto::attachment::{self as chunked, AttachmentKey};
use hush_crypto::hash::sha256;
use hush_relay_protocol::proto::{client_frame::Body as In, server_frame::Body as Out};
use tokio::sync::oneshot;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::closure::Closure;
use web_sys::{ProgressEvent, XmlHttpRequest, XmlHttpRequestResponseType};

use crate::client::{Client, Progress};
use crate::error::{AttachmentError, ClientError};
use crate::event::{Attachment, Body, Conversation, MessageId};

fn att(e: hush_crypto::attachment::AttachmentError) -> ClientError {
    ClientError::Attachment(AttachmentError::Chunk(e))
}

fn io(what: &str) -> ClientError {
    ClientError::Io(std::io::Error::other(what.to_string()))
}

/// How long one upload or download may take: a minute, and a second more for every 64 KiB
/// (100 MiB at 64 KiB/s, about 0.5 Mbit/s, takes under half an hour).
fn xhr_timeout_ms(bytes: u64) -> u32 {
    u32::try_from(60_000 + bytes / 64).unwrap_or(u32::MAX)
}

/// An exchange in flight: dropped before it ends (the caller gave up), it aborts the request
/// and detaches the callbacks before they are freed.
struct InFlight {
    req: XmlHttpRequest,
    finished: bool,
    _callbacks: Vec<Closure<dyn FnMut(ProgressEvent)>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.req.set_onload(None);
        self.req.set_onerror(None);
        self.req.set_onabort(None);
        self.req.set_ontimeout(None);
        self.req.set_onprogress(None);
        if let Ok(u) = self.req.upload() {
            u.set_onprogress(None);
        }
        if !self.finished {
            let _ = self.req.abort();
        }
    }
}

/// One HTTP exchange: status and body, with progress of the upload (if `body`) or of the
/// download. A download larger than `expected` bytes is aborted as it comes
/// (`SizeMismatch`); an upload's answer is small and read whole.
async fn xhr(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
    expected: u64,
    progress: Rc<RefCell<dyn FnMut(Progress)>>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let req = XmlHttpRequest::new().map_err(|_| io("XMLHttpRequest refused"))?;
    req.open(method, url)
        .map_err(|_| io("XMLHttpRequest refused the URL"))?;
    req.set_response_type(XmlHttpRequestResponseType::Arraybuffer);
    req.set_timeout(xhr_timeout_ms(expected));
    if let Some(token) = bearer {
        req.set_request_header("Authorization", &format!("Bearer {token}"))
            .map_err(|_| io("XMLHttpRequest refused a header"))?;
        req.set_request_header("Content-Type", "application/octet-stream")
            .map_err(|_| io("XMLHttpRequest refused a header"))?;
    }
    let (done_tx, done) = oneshot::channel::<bool>();
    let done_tx = Rc::new(RefCell::new(Some(done_tx)));
    let finish = |ok: bool| {
        let done_tx = done_tx.clone();
        Closure::<dyn FnMut(ProgressEvent)>::new(move |_e: ProgressEvent| {
            if let Some(tx) = done_tx.borrow_mut().take() {
                let _ = tx.send(ok);
            }
        })
    };
    let on_load = finish(true);
    let on_error = finish(false);
    req.set_onload(Some(on_load.as_ref().unchecked_ref()));
    req.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    req.set_onabort(Some(on_error.as_ref().unchecked_ref()));
    req.set_ontimeout(Some(on_error.as_ref().unchecked_ref()));
    let oversized = Rc::new(std::cell::Cell::new(false));
    let report = {
        let progress = progress.clone();
        let req = req.clone();
        let oversized = oversized.clone();
        let downloading = body.is_none();
        Closure::<dyn FnMut(ProgressEvent)>::new(move |e: ProgressEvent| {
            let loaded = e.loaded() as u64;
            if downloading && loaded > expected {
                // More than the pointer says: stop taking it (`onabort` ends the wait).
                oversized.set(true);
                req.set_onprogress(None);
                let _ = req.abort();
                return;
            }
            if e.length_computable() {
                (progress.borrow_mut())(Progress {
                    done: loaded,
                    total: e.total() as u64,
                });
            }
        })
    };
    match body {
        Some(_) => {
            let upload = req
                .upload()
                .map_err(|_| io("XMLHttpRequest has no upload"))?;
            upload.set_onprogress(Some(report.as_ref().unchecked_ref()));
        }
        None => req.set_onprogress(Some(report.as_ref().unchecked_ref())),
    }
    let mut flight = InFlight {
        req: req.clone(),
        finished: false,
        _callbacks: vec![on_load, on_error, report],
    };
    match body {
        Some(bytes) => {
            let array = js_sys::Uint8Array::from(bytes);
            req.send_with_opt_buffer_source(Some(&array))
                .map_err(|_| io("XMLHttpRequest did not send"))?;
        }
        None => req.send().map_err(|_| io("XMLHttpRequest did not send"))?,
    }
    let ok = done.await.unwrap_or(false);
    flight.finished = true;
    drop(flight);
    if oversized.get() {
        return Err(ClientError::Attachment(AttachmentError::SizeMismatch));
    }
    if !ok {
        return Err(ClientError::Offline);
    }
    let status = req.status().map_err(|_| ClientError::Offline)?;
    let body = req
        .response()
        .ok()
        .and_then(|r| r.dyn_into::<js_sys::ArrayBuffer>().ok())
        .map(|b| js_sys::Uint8Array::new(&b).to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

impl Client {
    fn blobs_url(&self) -> String {
        let u = &self.inner.url;
        let host = if u.host.contains(':') {
            format!("[{}]", u.host)
        } else {
            u.host.clone()
        };
        format!(
            "{}://{host}:{}/v1/blobs",
            if u.tls { "https" } else { "http" },
            u.port
        )
    }

    /// Seals `bytes` (a file the page read) under a fresh key, uploads them, and queues a
    /// message with the pointer to `to`. `progress` sees the upload.
    pub async fn send_bytes(
        &self,
        to: Conversation,
        file_name: &str,
        media_type: &str,
        bytes: &[u8],
        progress: impl FnMut(Progress) + 'static,
    ) -> Result<MessageId, ClientError> {
        let attachment = self
            .upload_bytes(file_name, media_type, bytes, progress)
            .await?;
        self.send(to, Body::Attachment(attachment))
    }

    /// Seals `bytes` under a fresh key and uploads them; returns the pointer to send.
    pub async fn upload_bytes(
        &self,
        file_name: &str,
        media_type: &str,
        bytes: &[u8],
        progress: impl FnMut(Progress) + 'static,
    ) -> Result<Attachment, ClientError> {
        let key = AttachmentKey::generate(&mut rand::rng());
        let sealed = chunked::seal(&key, bytes).map_err(att)?;
        let digest = sha256(&[&sealed]);
        let token = match self
            .inner
            .conn()?
            .request(In::UploadToken(
                hush_relay_protocol::proto::UploadTokenRequest {},
            ))
            .await?
        {
            Out::UploadToken(t) => t,
            _ => return Err(ClientError::Protocol),
        };
        let total = sealed.len() as u64;
        if total > token.max_bytes {
            return Err(ClientError::Attachment(AttachmentError::TooLarge {
                size: total,
                max: token.max_bytes,
            }));
        }
        let progress: Rc<RefCell<dyn FnMut(Progress)>> = Rc::new(RefCell::new(progress));
        (progress.borrow_mut())(Progress { done: 0, total });
        let (status, body) = xhr(
            "POST",
            &self.blobs_url(),
            Some(&hex::encode(&token.token)),
            Some(&sealed),
            total,
            progress.clone(),
        )
        .await?;
        if status != 201 {
            return Err(ClientError::Attachment(AttachmentError::Http(status)));
        }
        let blob_id = hex::encode(digest);
        if !String::from_utf8_lossy(&body).contains(&format!("\"{blob_id}\"")) {
            return Err(ClientError::Attachment(AttachmentError::WrongBlobId));
        }
        (progress.borrow_mut())(Progress { done: total, total });
        Ok(Attachment {
            blob_id,
            key: *key.expose(),
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
            file_name: file_name.to_string(),
        })
    }

    /// Downloads an attachment, checks its size and digest, and returns the plaintext (only
    /// once all of it has verified). `progress` sees the download.
    pub async fn download_bytes(
        &self,
        attachment: &Attachment,
        progress: impl FnMut(Progress) + 'static,
    ) -> Result<Vec<u8>, ClientError> {
        if attachment.blob_id.len() != 64
            || !attachment.blob_id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ClientError::Attachment(AttachmentError::BadBlobId));
        }
        let expected = chunked::sealed_len(attachment.size);
        let url = format!("{}/{}", self.blobs_url(), attachment.blob_id);
        let progress: Rc<RefCell<dyn FnMut(Progress)>> = Rc::new(RefCell::new(progress));
        let (status, sealed) = xhr("GET", &url, None, None, expected, progress).await?;
        if status != 200 {
            return Err(ClientError::Attachment(AttachmentError::Http(status)));
        }
        if sealed.len() as u64 != expected {
            return Err(ClientError::Attachment(AttachmentError::SizeMismatch));
        }
        if !hush_crypto::constant_time_eq(&sha256(&[&sealed]), &attachment.digest) {
            return Err(ClientError::Attachment(AttachmentError::DigestMismatch));
        }
        let key = AttachmentKey::from_bytes(attachment.key);
        let plain = chunked::open(&key, &sealed).map_err(att)?;
        if plain.len() as u64 != attachment.size {
            return Err(ClientError::Attachment(AttachmentError::SizeMismatch));
        }
        Ok(plain.to_vec())
    }
}
