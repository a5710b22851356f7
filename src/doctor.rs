//! `aigate doctor`: is this machine set up to go through the gateway, and does the gateway
//! intercept? One line per check, with the fix when it fails.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::host::HostPattern;
use crate::resolve::Resolver;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub what: String,
    /// What is wrong and how to fix it, when not ok.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            write!(f, "ok    {}", self.what)
        } else {
            write!(f, "FAIL  {}: {}", self.what, self.detail)
        }
    }
}

fn check(ok: bool, what: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        ok,
        what: what.into(),
        detail: detail.into(),
    }
}

/// Run every check. `proxy` is `host:port` of the gateway; `ca_pem` its CA certificate.
pub async fn run(
    config: &Config,
    proxy: &str,
    ca_pem: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes());

    // 1. The CA in this machine's trust store.
    let trusted = match &ca {
        Ok(ca) => rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .any(|c| c.as_ref() == ca.as_ref()),
        Err(_) => false,
    };
    out.push(check(
        trusted,
        "the aigate CA is trusted by this machine's store",
        "install it: aigate ca export > /usr/local/share/ca-certificates/aigate.crt && update-ca-certificates (tools with their own store: NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, CODEX_CA_CERTIFICATE)",
    ));

    // 2. The proxy variables.
    let var = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|v| env(v).map(|val| (*v, val)));
    match var {
        Some((name, value)) => {
            let points_here = value.contains(proxy);
            out.push(check(
                points_here,
                format!("{name} points at the gateway"),
                format!(
                    "{name}={value}, but the gateway is {proxy}; export HTTPS_PROXY=http://{proxy}"
                ),
            ));
        }
        None => out.push(check(
            false,
            "HTTPS_PROXY is set",
            format!("export HTTPS_PROXY=http://{proxy}"),
        )),
    }
    for name in ["NO_PROXY", "no_proxy"] {
        if let Some(list) = env(name) {
            let bypassed: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .filter(|e| {
                    *e == "*"
                        || config.vendors.iter().any(|v| {
                            v.hosts
                                .iter()
                                .any(|h| h.literal_tail().ends_with(e.trim_start_matches('.')))
                        })
                })
                .collect();
            out.push(check(
                bypassed.is_empty(),
                format!("{name} leaves the vendor hosts to the proxy"),
                format!(
                    "{name} exempts {}; remove those entries",
                    bypassed.join(", ")
                ),
            ));
        }
    }

    // 3. Vendor hosts resolve (as the gateway resolves them).
    let resolver = Resolver::new(&config.upstream.resolve);
    for v in &config.vendors {
        for h in &v.hosts {
            if let HostPattern::Exact(name) = h {
                let ok = resolver.lookup(name, 443).await.is_ok();
                out.push(check(
                    ok,
                    format!("{name} resolves"),
                    "the gateway cannot reach this vendor: check DNS on the gateway host",
                ));
            }
        }
    }

    // 4. A test request is intercepted: CONNECT to a vendor and see a leaf from the aigate CA.
    let probe = config
        .vendors
        .iter()
        .flat_map(|v| v.hosts.iter())
        .find_map(|h| match h {
            HostPattern::Exact(n) => Some(n.clone()),
            HostPattern::Suffix(_) | HostPattern::Labels(_) => None,
        });
    match (probe, ca) {
        (Some(host), Ok(ca)) => {
            let result = intercepted(proxy, &host, ca).await;
            out.push(check(
                result.is_ok(),
                format!("a CONNECT to {host} through {proxy} is intercepted by aigate"),
                result.err().unwrap_or_default(),
            ));
        }
        (None, _) => out.push(check(
            false,
            "a vendor host to probe",
            "the policy lists no exact vendor host",
        )),
        (_, Err(e)) => out.push(check(
            false,
            "the aigate CA certificate is readable",
            e.to_string(),
        )),
    }
    out
}

async fn intercepted(proxy: &str, host: &str, ca: CertificateDer<'static>) -> Result<(), String> {
    let mut tcp =
        tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(proxy))
            .await
            .map_err(|_| format!("no answer from {proxy}"))?
            .map_err(|e| {
                format!("cannot connect to {proxy}: {e}; is `aigate run` running there?")
            })?;
    tcp.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if tcp.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "the proxy answered {:?}",
            head.lines().next().unwrap_or("")
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| format!("the TLS answer is not from this aigate CA ({e}): another proxy or no interception on the way"))
}
