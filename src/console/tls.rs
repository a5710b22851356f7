//! The admin listener over TLS (`[console.tls]`): engineers' browsers on other machines open
//! request links, and a session cookie should not cross the network in clear.
//!
//! Either the operator's certificate and key (PEM files), or a certificate minted at start from
//! aigate's CA, which the company's machines already trust to reach the vendors through aigate.
//! Only HTTP/1.1 is offered (the admin listener's hyper server speaks nothing else).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConsoleTls;
use crate::tls::{CertificateAuthority, TlsSetupError};

/// A minted console certificate's lifetime: the longest a browser accepts (CA/Browser Forum,
/// 397 days). It is minted again at every start.
pub const MINTED_VALIDITY: Duration = Duration::from_secs(397 * 86_400);

/// The TLS config of the admin listener. `names` are the host names and addresses a minted
/// certificate covers.
pub fn server_config(
    tls: &ConsoleTls,
    ca: &CertificateAuthority,
    names: &[String],
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let (chain, key, path) = match tls {
        ConsoleTls::Files { cert, key } => (read_chain(cert)?, read_key(key)?, cert.clone()),
        ConsoleTls::Mint => {
            let (chain, key) = ca.mint_chain(names, MINTED_VALIDITY)?;
            (chain, key, ca.cert_path().to_path_buf())
        }
    };
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| TlsSetupError::Invalid {
            what: "console.tls certificate",
            path,
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let text = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what: "console.tls.cert",
        path: path.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Invalid {
            what: "console.tls.cert",
            path: path.to_path_buf(),
            message: format!("{e}; write the chain as PEM, leaf first"),
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Invalid {
            what: "console.tls.cert",
            path: path.to_path_buf(),
            message: "no certificate in it; write the chain as PEM, leaf first".into(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let text = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what: "console.tls.key",
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| TlsSetupError::Invalid {
        what: "console.tls.key",
        path: path.to_path_buf(),
        message: format!("{e}; give the private key as PEM (PKCS#8, PKCS#1 or SEC1)"),
    })
}

/// The names a minted console certificate covers: `localhost`, the listener's address (loopback
/// for an unspecified one, and the machine's host name then), and `console.public_url`'s host.
pub fn names(config: &crate::config::Config, bound: std::net::SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if bound.ip().is_unspecified() {
        names.push("127.0.0.1".into());
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim();
            if !host.is_empty() {
                names.push(host.to_string());
            }
        }
    } else {
        names.push(bound.ip().to_string());
    }
    names.dedup();
    let _ = config;
    names
}
