//! The client side towards the vendor: rustls with the system roots, the webpki roots and any
//! extra roots from config; ALPN h2 + http/1.1; pooled keep-alive connections.

use std::path::Path;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::TlsSetupError;
use crate::config::UpstreamConfig;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The roots we trust upstream: webpki's, the system's and `extra_roots` (named `what` in
/// errors).
pub fn root_store(
    what: &'static str,
    extra_roots: &[impl AsRef<Path>],
) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate is the OS's problem, not a reason to refuse to start.
        let _ = roots.add(cert);
    }
    for path in extra_roots {
        let path = path.as_ref();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsSetupError::Invalid {
                what,
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsSetupError::Invalid {
                what,
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsSetupError::Invalid {
                what,
                path: path.to_path_buf(),
                message: "no PEM certificate in it".into(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TlsSetupError::Invalid {
                what,
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}

pub fn client_config(cfg: &UpstreamConfig) -> Result<ClientConfig, TlsSetupError> {
    let roots = root_store("upstream root file", &cfg.extra_roots)?;
    ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid {
            what: "TLS provider",
            path: Default::default(),
            message: e.to_string(),
        })
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The pooled HTTPS client for forwarded requests, over `tcp` (which resolves, checks the
/// destination and connects within the connect timeout).
pub fn client<C>(tls: ClientConfig, tcp: C) -> Client<HttpsConnector<C>, ProxyBody>
where
    HttpsConnector<C>: Connect + Clone + Send + Sync + 'static,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build(https)
}
