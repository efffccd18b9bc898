//! The web client (`web/`, built into `server-reference/web/` by `web/build.sh`), served at
//! `/` on the relay's own port, so that a browser is all a person needs besides the relay.
//! The files are compiled into the binary; every answer carries a content security policy
//! that allows no inline script and no other origin.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Scripts and styles only from this origin (no inline script, no `eval`, but WebAssembly
/// compilation), connections only to it (the relay's WebSocket and blobs) and to the page's
/// own `blob:` URLs (decrypted files it shows or saves: a `blob:` URL belongs to the origin
/// that made it), images from it and from those URLs; nothing may frame the page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self' blob:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Path, media type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
    (
        "hush_wasm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/hush_wasm.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../web/favicon.svg"),
    ),
    (
        "idb.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/idb.js"),
    ),
    (
        "hush_wasm_bg.wasm",
        "application/wasm",
        include_bytes!("../web/hush_wasm_bg.wasm"),
    ),
];

/// `GET /` and `GET /{file}`: one of the web client's files, or 404.
pub(crate) async fn file(path: Option<axum::extract::Path<String>>) -> Response {
    let name = path.as_ref().map_or("index.html", |p| p.0.as_str());
    let Some((_, media, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new relay version serves a new client at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
