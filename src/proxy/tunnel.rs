//! Non-vendor hosts: bytes copied untouched both ways, audited like a forwarded call: the
//! decision record is in the log before the client's first byte goes upstream, a progress
//! record (bytes so far) comes every `audit.progress_interval` while the tunnel is open, and the
//! outcome when it closes. A long tunnel is therefore visible while it runs, and a `kill -9`
//! leaves its decision for the next start's `outcome_lost` (issue 15). A tunnel refused on its
//! first bytes (below) never went upstream: it has one record.
//!
//! One look is taken before copying: if the client opens with a TLS ClientHello, its SNI must
//! name the CONNECT host (or, for a CONNECT to an allowed IP, must not name a vendor). Otherwise a
//! client could CONNECT to a name of its own that resolves to a vendor's address and ask TLS for
//! the vendor: domain fronting around the interception. A ClientHello without SNI is refused
//! where the target shares a front end with an intercepted host (a vendor's `fronts`). The
//! server's direction is copied from
//! the start, so protocols where the server speaks first are not held up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::audited::AuditGuard;
use crate::config::Config;
use crate::host::{Host, normalise};
use crate::policy::{Action, Reason};

/// The most we buffer while waiting for a complete ClientHello.
const MAX_HELLO: usize = 16 * 1024;

/// What the client's first bytes say.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    /// Not TLS: nothing to check.
    Unchecked,
    Sni(String),
    /// A ClientHello without SNI: the server picks a site by the `Host` inside, unseen.
    NoSni,
    /// Looked like TLS but never became a complete ClientHello.
    Incomplete,
}

/// Read the client's opening bytes into `buf` until the ClientHello is complete or it is clear
/// there is none.
async fn read_opening<R: tokio::io::AsyncRead + Unpin>(
    client: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Opening> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(if buf.is_empty() {
                Opening::Unchecked
            } else {
                Opening::Incomplete
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS record starts with content type 22 (handshake).
        if buf[0] != 0x16 {
            return Ok(Opening::Unchecked);
        }
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return Ok(Opening::Incomplete);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Ok(match accepted.client_hello().server_name() {
                    Some(sni) => Opening::Sni(sni.to_string()),
                    None => Opening::NoSni,
                });
            }
            Ok(None) if buf.len() < MAX_HELLO => continue,
            Ok(None) => return Ok(Opening::Incomplete),
            // Not a ClientHello rustls understands: treat the stream as opaque bytes.
            Err(_) => return Ok(Opening::Unchecked),
        }
    }
}

/// Whether a ClientHello's SNI fits the CONNECT target.
fn sni_allowed(config: &Config, target: &Host, sni: &str) -> bool {
    match (normalise(sni), target) {
        (Ok(sni), Host::Name(_)) => &sni == target,
        (Ok(Host::Name(name)), Host::Ip(_)) => config.vendor_for(&name).is_none(),
        (Ok(Host::Ip(_)), Host::Ip(_)) => true,
        (Err(_), _) => false,
    }
}

/// Copy `rd` to `wr` until `rd` ends, counting the bytes as they go (for progress records).
async fn pump<R, W>(rd: &mut R, wr: &mut W, counted: &AtomicU64) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        wr.write_all(&buf[..n]).await?;
        total += n as u64;
        counted.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub async fn tunnel(
    upgraded: Upgraded,
    upstream: TcpStream,
    guard: AuditGuard,
    config: Arc<Config>,
    target: Host,
) {
    let client = TokioIo::new(upgraded);
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = upstream.into_split();
    let (sent_up, sent_down) = (AtomicU64::new(0), AtomicU64::new(0));
    let every = guard.progress_every();
    // Shared by the client's direction (the decision) and the progress timer, in one task; the
    // lock is never held across an await.
    let guard = std::sync::Mutex::new(guard);
    let (up_result, down_result) = {
        let lock = || guard.lock().unwrap_or_else(|p| p.into_inner());

        let down = async {
            let n = pump(&mut up_rd, &mut client_wr, &sent_down).await;
            let _ = client_wr.shutdown().await;
            n
        };
        let up = async {
            let mut opening = Vec::new();
            let verdict = tokio::time::timeout(
                config.handshake_timeout,
                read_opening(&mut client_rd, &mut opening),
            )
            .await;
            let refuse = match &verdict {
                Ok(Ok(Opening::Sni(sni))) if !sni_allowed(&config, &target, sni) => Some(format!(
                    "sni_mismatch: {}",
                    sni.chars().take(253).collect::<String>()
                )),
                // A front end shared with an intercepted host picks the site by the encrypted `Host`
                // when the ClientHello names none: CONNECT www.googleapis.com, no SNI, then
                // `Host: generativelanguage.googleapis.com` reaches Gemini unseen (issue 14).
                Ok(Ok(Opening::NoSni)) if target.as_name().is_some_and(|n| config.fronted(n)) => {
                    Some("sni_missing".to_string())
                }
                Ok(Ok(Opening::Incomplete)) | Err(_) => Some("tls_hello_incomplete".to_string()),
                _ => None,
            };
            if let Some(why) = refuse {
                return Err(why);
            }
            // The decision, in the file before the first byte goes upstream.
            let decided = lock().decide();
            if !decided.await {
                return Err("audit_unavailable".to_string());
            }
            up_wr
                .write_all(&opening)
                .await
                .map_err(|e| format!("tunnel_io: {}", e.kind()))?;
            sent_up.fetch_add(opening.len() as u64, Ordering::Relaxed);
            let rest = pump(&mut client_rd, &mut up_wr, &sent_up)
                .await
                .map_err(|e| format!("tunnel_io: {}", e.kind()))?;
            let _ = up_wr.shutdown().await;
            Ok(opening.len() as u64 + rest)
        };
        // A refusal ends both directions at once; otherwise both run to their end.
        let both = async {
            tokio::pin!(down);
            tokio::pin!(up);
            tokio::select! {
                u = &mut up => match u {
                    Err(why) => (Err(why), None),
                    Ok(n) => (Ok(n), Some(down.await)),
                },
                d = &mut down => (up.await, Some(d)),
            }
        };
        tokio::pin!(both);
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                done = &mut both => break done,
                _ = progress.tick() => lock().progress(
                    Some(sent_up.load(Ordering::Relaxed)),
                    sent_down.load(Ordering::Relaxed),
                ),
            }
        }
    };
    let mut guard = guard.into_inner().unwrap_or_else(|p| p.into_inner());
    let r = guard.rec();
    match up_result {
        Ok(n) => r.bytes_up = n,
        Err(why)
            if why.starts_with("sni_mismatch")
                || why == "sni_missing"
                || why == "tls_hello_incomplete" =>
        {
            r.action = Action::Block;
            r.reason = if why == "tls_hello_incomplete" {
                Reason::TlsHandshake
            } else {
                Reason::SniMismatch
            };
            r.error = Some(why);
        }
        Err(why) => {
            r.bytes_up = sent_up.load(Ordering::Relaxed);
            r.error = Some(why);
        }
    }
    match down_result {
        Some(Ok(n)) => r.bytes_down = n,
        Some(Err(e)) => {
            r.bytes_down = sent_down.load(Ordering::Relaxed);
            r.error = r.error.take().or(Some(format!("tunnel_io: {}", e.kind())));
        }
        None => r.bytes_down = sent_down.load(Ordering::Relaxed),
    }
    guard.finish();
}
