//! The gateway's certificate authority and the per-host leaf cache.
//!
//! On first start without a configured CA, an ECDSA P-256 CA is generated in the state directory
//! (key mode 0600). A configured corporate CA is used as-is. Leaves are minted on demand per
//! intercepted host, kept with a ready rustls `ServerConfig` (ALPN h2 + http/1.1), and re-minted
//! once three quarters of their validity has passed, so no client ever sees an expiring leaf.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::config::CaConfig;
use crate::host::Host;

pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Past this many cached hosts the cache starts over (wildcard vendor patterns could otherwise
/// be used to grow it without bound).
const MAX_CACHED_HOSTS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that the state directory is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable: {message}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cannot mint a certificate for {host}: {message}")]
    Mint { host: String, message: String },
}

struct CachedLeaf {
    config: Arc<ServerConfig>,
    refresh_at: SystemTime,
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    cert_path: PathBuf,
    leaf_validity: Duration,
    cache: DashMap<Host, CachedLeaf>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Use the configured CA, or the one in the state directory, creating it on first start.
    pub fn load_or_create(
        cfg: &CaConfig,
        state_dir: &Path,
    ) -> Result<CertificateAuthority, TlsSetupError> {
        let (cert_path, key_path) = match &cfg.files {
            Some((c, k)) => (c.clone(), k.clone()),
            None => {
                let cert = state_dir.join(CA_CERT_FILE);
                let key = state_dir.join(CA_KEY_FILE);
                if !cert.exists() && !key.exists() {
                    generate(state_dir, &cert, &key)?;
                }
                (cert, key)
            }
        };
        let ca_pem = std::fs::read_to_string(&cert_path).map_err(|source| TlsSetupError::Read {
            what: "CA certificate",
            path: cert_path.clone(),
            source,
        })?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|source| TlsSetupError::Read {
            what: "CA key",
            path: key_path.clone(),
            source,
        })?;
        let invalid = |what, path: &Path, message: String| TlsSetupError::Invalid {
            what,
            path: path.to_path_buf(),
            message,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(
                "CA key",
                &key_path,
                format!("{e}; expected a PEM PKCS#8 private key"),
            )
        })?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
            invalid(
                "CA certificate",
                &cert_path,
                format!("{e}; expected a PEM certificate"),
            )
        })?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(|e| invalid("CA certificate", &cert_path, e.to_string()))?;
        let ca = CertificateAuthority {
            issuer,
            ca_der,
            ca_pem,
            cert_path,
            leaf_validity: cfg.leaf_validity,
            cache: DashMap::new(),
        };
        // Fail at start, not on the first client, if cert and key do not belong together.
        ca.mint(&Host::Name("aigate.selftest.invalid".into()))
            .map_err(|e| {
                invalid(
                    "CA certificate and key",
                    &key_path,
                    format!("{e}; do the certificate and key belong together?"),
                )
            })?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The TLS config to present for `host`, minted on first use and cached.
    pub fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let now = SystemTime::now();
        if let Some(leaf) = self.cache.get(host) {
            if now < leaf.refresh_at {
                return Ok(leaf.config.clone());
            }
        }
        let config = self.mint(host)?;
        if self.cache.len() >= MAX_CACHED_HOSTS {
            self.cache.clear();
        }
        self.cache.insert(
            host.clone(),
            CachedLeaf {
                config: config.clone(),
                refresh_at: now + self.leaf_validity * 3 / 4,
            },
        );
        Ok(config)
    }

    /// A certificate for several names (host names or addresses), signed by this CA, with the
    /// CA after it: the console's own certificate (`console/tls.rs`), not cached.
    pub fn mint_chain(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
        let err = |message: String| TlsSetupError::Mint {
            host: names.join(", "),
            message,
        };
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| err(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names
                .first()
                .cloned()
                .unwrap_or_else(|| "aigate console".into()),
        );
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| err(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.ca_der.clone()], key_der))
    }

    fn mint(&self, host: &Host) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let err = |message: String| TlsSetupError::Mint {
            host: host.to_string(),
            message,
        };
        let name = match host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        let mut params =
            CertificateParams::new(vec![name.clone()]).map_err(|e| err(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(self.leaf_validity.as_secs() as i64);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| err(e.to_string()))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key_der)
            .map_err(|e| err(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn generate(state_dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsSetupError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsSetupError::Write { path, source }
    };
    std::fs::create_dir_all(state_dir).map_err(write_err(state_dir))?;
    let mint_err = |e: rcgen::Error| TlsSetupError::Mint {
        host: "the aigate CA".into(),
        message: e.to_string(),
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "aigate egress CA");
    dn.push(DnType::OrganizationName, "aigate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).map_err(mint_err)?;

    // The key first, created with 0600 so it is never readable by others, not even briefly.
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(key_path).map_err(write_err(key_path))?;
    f.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_err(key_path))?;
    std::fs::write(cert_path, cert.pem()).map_err(write_err(cert_path))?;
    tracing::info!(cert = %cert_path.display(), "generated a new aigate CA");
    Ok(())
}
