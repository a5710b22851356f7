//! Dialling a destination for a tunnel: resolve the name, connect within the upstream connect
//! timeout.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::Shared;
use super::connect::Target;
use crate::config::Config;
use crate::host::Host;

pub(super) async fn dial(
    shared: &Shared,
    cfg: &Config,
    target: &Target,
) -> std::io::Result<TcpStream> {
    let addrs = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(n) => shared.resolver.lookup(n, target.port).await?,
    };
    let stream = tokio::time::timeout(cfg.upstream.connect_timeout, TcpStream::connect(&addrs[..]))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
