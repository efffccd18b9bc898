//! Attachments: encrypt a file in chunks to a temporary file, upload it to the relay's blob
//! store over HTTP, and send a pointer; download, verify the digest, and decrypt. Memory
//! use is a few chunks whatever the file size.

use std::path::{Path, PathBuf};

use hush_crypto::attachment::{self as chunked, AttachmentKey, CHUNK, SEGMENT};
use hush_crypto::hash::Sha256Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::client::{Client, Progress};
use crate::error::{AttachmentError, ClientError};
use crate::event::{Attachment, Body, Conversation, MessageId};
use crate::net;
use hush_relay_protocol::proto::{client_frame::Body as In, server_frame::Body as Out};

fn att(e: hush_crypto::attachment::AttachmentError) -> ClientError {
    ClientError::Attachment(AttachmentError::Chunk(e))
}

/// Reads up to `buf.len()` bytes, stopping early only at end of file.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> Result<usize, ClientError> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

/// A temporary file removed on drop unless kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn new(dir: &Path, tag: &str) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir)?;
        let mut r = [0u8; 8];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut r);
        Ok(Self(Some(
            dir.join(format!("{tag}-{}.tmp", hex::encode(r))),
        )))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Most bytes of a response's status line and headers together.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Time allowed for a response's status line and headers.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads one line of a response head into `line`, taking its length from `budget`: a
/// line that would exceed what is left of the budget is a protocol error, so a relay (or
/// anyone in its place) cannot make the client buffer without limit.
async fn read_head_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
    budget: &mut usize,
) -> Result<usize, ClientError> {
    let n = (&mut *reader).take(*budget as u64).read_line(line).await?;
    if n > 0 && !line.ends_with('\n') {
        return Err(ClientError::Protocol);
    }
    *budget -= n;
    Ok(n)
}

/// A file to send as the request body: path, length, progress callback.
type Upload<'a> = (&'a Path, u64, &'a mut dyn FnMut(Progress));

/// Sends `request` and reads the response status and headers, leaving the body in the
/// returned reader.
async fn http(
    client: &Client,
    head: String,
    body: Option<Upload<'_>>,
) -> Result<(u16, Vec<(String, String)>, BufReader<Box<dyn net::Io>>), ClientError> {
    let inner = &client.inner;
    let mut stream = net::open_stream(&inner.url, inner.ca_file.as_ref()).await?;
    stream.write_all(head.as_bytes()).await?;
    if let Some((path, total, progress)) = body {
        let mut f = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; SEGMENT];
        let mut done = 0;
        progress(Progress { done, total });
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).await?;
            done += n as u64;
            progress(Progress { done, total });
        }
    }
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let read_head = async {
        let mut budget = MAX_RESPONSE_HEAD;
        let mut line = String::new();
        read_head_line(&mut reader, &mut line, &mut budget).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(ClientError::Protocol)?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if read_head_line(&mut reader, &mut line, &mut budget).await? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            if headers.len() > 100 {
                return Err(ClientError::Protocol);
            }
        }
        Ok((status, headers))
    };
    let (status, headers) = tokio::time::timeout(HEAD_TIMEOUT, read_head)
        .await
        .map_err(|_| ClientError::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok((status, headers, reader))
}

fn content_length(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
}

impl Client {
    /// Encrypts the file at `path` under a fresh key, uploads it, and queues a message with
    /// the pointer to `to`. `progress` sees the upload.
    pub async fn send_file(
        &self,
        to: Conversation,
        path: &Path,
        media_type: &str,
        progress: impl FnMut(Progress),
    ) -> Result<MessageId, ClientError> {
        let attachment = self.upload_file(path, media_type, progress).await?;
        self.send(to, Body::Attachment(attachment))
    }

    /// Encrypts the file at `path` under a fresh key and uploads it; returns the pointer to
    /// send (with [`Client::send`] or [`Client::reply`]). `progress` sees the upload.
    pub async fn upload_file(
        &self,
        path: &Path,
        media_type: &str,
        mut progress: impl FnMut(Progress),
    ) -> Result<Attachment, ClientError> {
        let key = AttachmentKey::generate(&mut rand::rng());
        let sealed = TempFile::new(&self.inner.blob_dir, "upload")?;
        // Encrypt chunk by chunk, reading one chunk ahead to know which is last.
        let mut input = tokio::fs::File::open(path).await?;
        let mut output = tokio::fs::File::create(sealed.path()).await?;
        let mut sealer = chunked::Sealer::new(&key);
        let mut digest = Sha256Stream::new();
        let mut size = 0u64;
        let mut current = vec![0u8; CHUNK];
        let mut next = vec![0u8; CHUNK];
        let mut n = read_full(&mut input, &mut current).await?;
        loop {
            let m = if n == CHUNK {
                read_full(&mut input, &mut next).await?
            } else {
                0
            };
            let last = n < CHUNK || m == 0;
            let segment = sealer.seal_chunk(&current[..n], last).map_err(att)?;
            digest.update(&segment);
            output.write_all(&segment).await?;
            size += n as u64;
            if last {
                break;
            }
            std::mem::swap(&mut current, &mut next);
            n = m;
        }
        output.sync_all().await?;
        drop(output);
        let digest = digest.finish();
        let total = chunked::sealed_len(size);

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
        if total > token.max_bytes {
            return Err(ClientError::Attachment(AttachmentError::TooLarge {
                size: total,
                max: token.max_bytes,
            }));
        }
        let head = format!(
            "POST /v1/blobs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
            self.inner.url.host_header(),
            hex::encode(&token.token)
        );
        let (status, headers, mut reader) =
            http(self, head, Some((sealed.path(), total, &mut progress))).await?;
        let mut body = vec![0u8; content_length(&headers).unwrap_or(0).min(4096) as usize];
        reader.read_exact(&mut body).await?;
        if status != 201 {
            return Err(ClientError::Attachment(AttachmentError::Http(status)));
        }
        let blob_id = hex::encode(digest);
        let text = String::from_utf8_lossy(&body);
        if !text.contains(&format!("\"{blob_id}\"")) {
            return Err(ClientError::Attachment(AttachmentError::WrongBlobId));
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Attachment {
            blob_id,
            key: *key.expose(),
            digest,
            size,
            media_type: media_type.to_string(),
            file_name,
        })
    }

    /// Downloads an attachment, checks its digest and size, decrypts it, and writes the
    /// plaintext to `dest` (only once all of it has verified). `progress` sees the download.
    pub async fn download(
        &self,
        attachment: &Attachment,
        dest: &Path,
        mut progress: impl FnMut(Progress),
    ) -> Result<(), ClientError> {
        if attachment.blob_id.len() != 64
            || !attachment.blob_id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ClientError::Attachment(AttachmentError::BadBlobId));
        }
        let expected = chunked::sealed_len(attachment.size);
        let head = format!(
            "GET /v1/blobs/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            attachment.blob_id,
            self.inner.url.host_header()
        );
        let (status, headers, mut reader) = http(self, head, None).await?;
        if status != 200 {
            return Err(ClientError::Attachment(AttachmentError::Http(status)));
        }
        if content_length(&headers) != Some(expected) {
            return Err(ClientError::Attachment(AttachmentError::SizeMismatch));
        }
        // Download to a temporary file, hashing as it comes.
        let sealed = TempFile::new(&self.inner.blob_dir, "download")?;
        let mut out = tokio::fs::File::create(sealed.path()).await?;
        let mut digest = Sha256Stream::new();
        let mut buf = vec![0u8; SEGMENT];
        let mut done = 0u64;
        progress(Progress {
            done,
            total: expected,
        });
        while done < expected {
            let want = ((expected - done) as usize).min(buf.len());
            let n = reader.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(ClientError::Attachment(AttachmentError::CutShort));
            }
            digest.update(&buf[..n]);
            out.write_all(&buf[..n]).await?;
            done += n as u64;
            progress(Progress {
                done,
                total: expected,
            });
        }
        out.flush().await?;
        drop(out);
        if !hush_crypto::constant_time_eq(&digest.finish(), &attachment.digest) {
            return Err(ClientError::Attachment(AttachmentError::DigestMismatch));
        }
        // Decrypt segment by segment into a temporary file next to `dest`, then rename.
        let key = AttachmentKey::from_bytes(attachment.key);
        let mut opener = chunked::Opener::new(&key);
        let mut input = tokio::fs::File::open(sealed.path()).await?;
        let plain_dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let plain = TempFile::new(plain_dir, ".hush-download")?;
        let mut output = tokio::fs::File::create(plain.path()).await?;
        let mut remaining = expected;
        let mut written = 0u64;
        while remaining > 0 {
            let n = (remaining as usize).min(SEGMENT);
            input.read_exact(&mut buf[..n]).await?;
            remaining -= n as u64;
            let chunk = opener.open_chunk(&buf[..n], remaining == 0).map_err(att)?;
            output.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
        if !opener.is_finished() || written != attachment.size {
            return Err(ClientError::Attachment(AttachmentError::SizeMismatch));
        }
        output.sync_all().await?;
        drop(output);
        let mut plain = plain;
        if let Some(p) = plain.0.take() {
            tokio::fs::rename(&p, dest).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_response_head_is_read_within_its_budget() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let mut r = BufReader::new(&head[..]);
        let (mut line, mut budget) = (String::new(), MAX_RESPONSE_HEAD);
        assert_eq!(
            read_head_line(&mut r, &mut line, &mut budget)
                .await
                .unwrap(),
            17
        );
        assert_eq!(budget, MAX_RESPONSE_HEAD - 17);
        // A header line longer than what is left: refused, not buffered.
        let long = [
            b"HTTP/1.1 200 OK\r\nX: ".as_slice(),
            &vec![b'a'; MAX_RESPONSE_HEAD],
        ]
        .concat();
        let mut r = BufReader::new(&long[..]);
        let (mut line, mut budget) = (String::new(), MAX_RESPONSE_HEAD);
        read_head_line(&mut r, &mut line, &mut budget)
            .await
            .unwrap();
        line.clear();
        assert!(matches!(
            read_head_line(&mut r, &mut line, &mut budget).await,
            Err(ClientError::Protocol)
        ));
        assert!(line.len() <= MAX_RESPONSE_HEAD);
    }
}
