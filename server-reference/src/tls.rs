//! Built-in TLS (rustls): the acceptor that [`crate::listen`] completes each handshake with
//! before serving the same routes, WebSocket upgrades included, over the encrypted stream.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::{RelayError, TlsFiles};

pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, RelayError> {
    let e = |what: &str, err: &dyn std::fmt::Display| RelayError::Tls(format!("{what}: {err}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|x| e("certificate", &x))?
        .collect::<Result<_, _>>()
        .map_err(|x| e("certificate", &x))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|x| e("private key", &x))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|x| e("protocols", &x))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|x| e("certificate and key", &x))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
