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
    /// What a passing check still wants the reader to know.
    pub note: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok && !self.note.is_empty() {
            write!(f, "ok    {}: {}", self.what, self.note)
        } else if self.ok {
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
        note: String::new(),
    }
}

/// A passing check with something to add.
fn noted(what: impl Into<String>, note: impl Into<String>) -> Check {
    Check {
        note: note.into(),
        ..check(true, what, "")
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

    // 1. The CA: in this machine's trust store, or in the file a tool's own variable names.
    let trusted = match &ca {
        Ok(ca) => rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .any(|c| c.as_ref() == ca.as_ref()),
        Err(_) => false,
    };
    let mut by_variable = Vec::new();
    for (name, tools) in CA_VARIABLES {
        let Some(file) = env(name) else { continue };
        let holds = match (&ca, std::fs::read(&file)) {
            (Ok(ca), Ok(pem)) => CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .any(|c| c.as_ref() == ca.as_ref()),
            (_, Err(e)) => {
                out.push(check(
                    false,
                    format!("{name} holds the aigate CA ({tools})"),
                    format!("{name}={file}: cannot read it on this machine: {e}"),
                ));
                continue;
            }
            (Err(_), _) => false,
        };
        if holds {
            by_variable.push(*name);
        }
        out.push(check(
            holds,
            format!("{name} holds the aigate CA ({tools})"),
            format!("{name}={file} does not hold this gateway's CA: aigate ca export > {file}"),
        ));
    }
    out.push(match (trusted, by_variable.is_empty()) {
        (true, _) => check(true, "the aigate CA is trusted by this machine's store", ""),
        (false, false) => noted(
            "the aigate CA is trusted through this machine's tool variables",
            format!(
                "{} (not in the system store: other programs, such as curl, do not trust it)",
                by_variable.join(", ")
            ),
        ),
        (false, true) => check(
            false,
            "the aigate CA is trusted by this machine's store",
            "install it: aigate ca export > /usr/local/share/ca-certificates/aigate.crt && update-ca-certificates (tools with their own store: NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, CODEX_CA_CERTIFICATE)",
        ),
    });

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

    // 3. Vendor hosts resolve on this machine. That matters only where the gateway runs: a
    // client behind the proxy never resolves them itself.
    let resolver = Resolver::new(&config.upstream.resolve);
    let gateway_here = runs_the_gateway(proxy).await;
    for v in &config.vendors {
        for h in &v.hosts {
            if let HostPattern::Exact(name) = h {
                let resolved = resolver.lookup(name, 443).await.is_ok();
                out.push(resolution(name, resolved, gateway_here, proxy));
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

/// The variables with which tools trust a CA of their own, as docs/clients.md documents them,
/// and who reads each.
const CA_VARIABLES: &[(&str, &str)] = &[
    (
        "NODE_EXTRA_CA_CERTS",
        "Claude Code, Gemini CLI, Copilot CLI, Node SDKs",
    ),
    ("SSL_CERT_FILE", "Python SDKs, Codex CLI"),
    ("CODEX_CA_CERTIFICATE", "Codex CLI"),
];

/// Whether the gateway at `proxy` runs on this machine: its address is a loopback one, or one
/// this machine can bind.
async fn runs_the_gateway(proxy: &str) -> bool {
    let Ok(addrs) = tokio::net::lookup_host(proxy).await else {
        return false;
    };
    for addr in addrs {
        let ip = addr.ip();
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        if std::net::UdpSocket::bind((ip, 0)).is_ok() {
            return true;
        }
    }
    false
}

/// A vendor name's resolution, described for the machine the check runs on.
fn resolution(name: &str, resolved: bool, gateway_here: bool, proxy: &str) -> Check {
    match (resolved, gateway_here) {
        (true, _) => check(true, format!("{name} resolves on this machine"), ""),
        (false, true) => check(
            false,
            format!("{name} resolves on this machine"),
            "this machine runs the gateway, which cannot reach this vendor: check this machine's DNS (or upstream.resolve)",
        ),
        (false, false) => noted(
            format!("{name} does not resolve on this machine"),
            format!(
                "clients behind the proxy do not need it (the gateway at {proxy} resolves it); run `aigate doctor` on the gateway host to check its DNS"
            ),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: on a client machine, a vendor name that does not resolve was reported as "check
    /// DNS on the gateway host". Each line describes the machine it runs on.
    #[test]
    fn resolution_is_described_for_this_machine() {
        assert_eq!(
            resolution("api.anthropic.com", true, false, "gw:3128").to_string(),
            "ok    api.anthropic.com resolves on this machine"
        );
        assert_eq!(
            resolution("api.anthropic.com", false, false, "gw:3128").to_string(),
            "ok    api.anthropic.com does not resolve on this machine: clients behind the proxy do not need it (the gateway at gw:3128 resolves it); run `aigate doctor` on the gateway host to check its DNS"
        );
        assert_eq!(
            resolution("api.anthropic.com", false, true, "127.0.0.1:3128").to_string(),
            "FAIL  api.anthropic.com resolves on this machine: this machine runs the gateway, which cannot reach this vendor: check this machine's DNS (or upstream.resolve)"
        );
    }

    #[tokio::test]
    async fn the_gateway_is_here_when_its_address_is() {
        assert!(runs_the_gateway("127.0.0.1:3128").await);
        assert!(runs_the_gateway("[::1]:3128").await);
        assert!(
            !runs_the_gateway("192.0.2.1:3128").await,
            "TEST-NET-1 is nobody's"
        );
    }
}
