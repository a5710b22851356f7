//! Name resolution for upstream connections: config overrides first (tests, split-horizon
//! set-ups), then the system resolver, so `/etc/hosts` and the OS's DNS settings apply.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: Arc<HashMap<String, SocketAddr>>,
}

impl Resolver {
    pub fn new(overrides: &[(String, SocketAddr)]) -> Resolver {
        Resolver {
            overrides: Arc::new(overrides.iter().cloned().collect()),
        }
    }

    /// Addresses for `host:port`. An override carries its own port and wins over `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.overrides.get(host) {
            return Ok(vec![*addr]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no address"),
            ));
        }
        Ok(addrs)
    }
}

/// For hyper-util's `HttpConnector`: port 0 means "use the URI's port".
impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.lookup(name.as_str(), 0).await?.into_iter()) })
    }
}
