//! Attachment blobs over plain HTTP: authenticated, streamed uploads with a size cap and
//! content-addressed ids; downloads with Range support and immutable caching headers, so a
//! CDN can sit in front. The relay only ever holds ciphertext: clients encrypt first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hush_crypto::hash::Sha256Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::store::{Addr, Store};
use crate::{Shared, now_ms};

/// Issues a one-time upload token for `addr`. The database keeps only its SHA-256.
pub(crate) async fn issue_token<S: Store>(
    shared: &Shared<S>,
    addr: &Addr,
    ttl: Duration,
) -> Result<[u8; 32], crate::store::StoreError> {
    let mut token = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut token);
    let expires = now_ms().saturating_add(ttl.as_millis() as u64);
    shared
        .store
        .put_upload_token(hush_crypto::hash::sha256(&[&token]), addr, expires)
        .await?;
    Ok(token)
}

fn status(code: StatusCode, text: &'static str) -> Response {
    (code, text).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<[u8; 32]> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let hex = v.strip_prefix("Bearer ")?;
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn blob_path(dir: &std::path::Path, id: &str) -> PathBuf {
    dir.join(id)
}

/// `POST /v1/blobs`: streams the body to disk, hashing it; replies `{"id", "size"}`.
pub(crate) async fn upload<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(token) = bearer(&headers) else {
        shared.metrics.reject("blob_unauthenticated");
        return status(StatusCode::UNAUTHORIZED, "an upload token is required");
    };
    let redeemed = shared
        .store
        .take_upload_token(hush_crypto::hash::sha256(&[&token]), now_ms())
        .await;
    let Ok(Some(owner)) = redeemed else {
        shared.metrics.reject("blob_unauthenticated");
        return status(
            StatusCode::UNAUTHORIZED,
            "unknown, used or expired upload token",
        );
    };
    let dir = &shared.config.blob_dir;
    if tokio::fs::create_dir_all(dir).await.is_err() {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "blob storage unavailable",
        );
    }
    // Within the device's daily quota: what is left of it caps this upload too.
    let day = now_ms() / crate::store::DAY_MS;
    let quota = shared.config.blob_bytes_per_day;
    let Ok(used) = shared.store.blob_usage(&owner, day).await else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "store failed");
    };
    if used >= quota {
        shared.metrics.reject("blob_quota");
        return status(StatusCode::TOO_MANY_REQUESTS, "daily upload quota used");
    }
    // A random name, unrelated to the token.
    let mut name = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut name);
    let tmp = dir.join(format!("upload-{}", hex(&name)));
    let Ok(mut file) = tokio::fs::File::create(&tmp).await else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "blob storage unavailable",
        );
    };
    let mut hasher = Sha256Stream::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    let max = shared.config.max_blob_bytes;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            let _ = tokio::fs::remove_file(&tmp).await;
            return status(StatusCode::BAD_REQUEST, "upload interrupted");
        };
        size += chunk.len() as u64;
        if size > max {
            let _ = tokio::fs::remove_file(&tmp).await;
            shared.metrics.reject("blob_too_large");
            return status(StatusCode::PAYLOAD_TOO_LARGE, "blob exceeds the size cap");
        }
        if used + size > quota {
            let _ = tokio::fs::remove_file(&tmp).await;
            shared.metrics.reject("blob_quota");
            return status(StatusCode::TOO_MANY_REQUESTS, "daily upload quota used");
        }
        hasher.update(&chunk);
        if file.write_all(&chunk).await.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
            return status(StatusCode::INTERNAL_SERVER_ERROR, "write failed");
        }
    }
    if file.sync_all().await.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
        return status(StatusCode::INTERNAL_SERVER_ERROR, "write failed");
    }
    drop(file);
    // Counted before the blob exists (concurrent uploads of one device cannot overrun it).
    match shared.store.add_blob_usage(&owner, day, size, quota).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            shared.metrics.reject("blob_quota");
            return status(StatusCode::TOO_MANY_REQUESTS, "daily upload quota used");
        }
        Err(_) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return status(StatusCode::INTERNAL_SERVER_ERROR, "store failed");
        }
    }
    let id = hex(&hasher.finish());
    if tokio::fs::rename(&tmp, blob_path(dir, &id)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "write failed");
    }
    let expires = now_ms().saturating_add(shared.config.blob_ttl.as_millis() as u64);
    if shared.store.put_blob(&id, size, expires).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "store failed");
    }
    tracing::debug!(user = %owner.user, device = owner.device, size, "blob stored");
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"id\":\"{id}\",\"size\":{size}}}"),
    )
        .into_response()
}

/// Parses a single `bytes=` range against `len`: `Ok(None)` for no header, `Err` if
/// unsatisfiable or malformed.
fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let spec = v
        .to_str()
        .map_err(|_| ())?
        .strip_prefix("bytes=")
        .ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (s, e) => (
            s.parse().map_err(|_| ())?,
            e.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1)),
        ),
    };
    if len == 0 || start > end || start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `GET /v1/blobs/{id}`: the blob, or the requested byte range of it.
pub(crate) async fn download<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_id(&id) {
        return status(StatusCode::NOT_FOUND, "no such blob");
    }
    let Ok(Some(len)) = shared.store.blob(&id, now_ms()).await else {
        return status(StatusCode::NOT_FOUND, "no such blob");
    };
    let Ok(mut file) = tokio::fs::File::open(blob_path(&shared.config.blob_dir, &id)).await else {
        return status(StatusCode::NOT_FOUND, "no such blob");
    };
    let (code, start, end) = match range(&headers, len) {
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                "",
            )
                .into_response();
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "read failed");
    }
    let stream = futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(64 * 1024) as usize];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), (file, left - n as u64)))
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = code;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The web client shares this origin: a blob is never rendered or run as a page.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if code == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// Deletes the files of expired blobs.
pub(crate) async fn expire<S: Store>(shared: &Shared<S>) {
    if let Ok(ids) = shared.store.expire_blobs(now_ms()).await {
        for id in ids {
            let _ = tokio::fs::remove_file(blob_path(&shared.config.blob_dir, &id)).await;
        }
    }
}
