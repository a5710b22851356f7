//! Non-vendor hosts: bytes copied untouched both ways, one audit record when the tunnel closes.

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pipeline::AuditGuard;

pub async fn tunnel(upgraded: Upgraded, mut upstream: TcpStream, mut guard: AuditGuard) {
    let mut client = TokioIo::new(upgraded);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            let r = guard.rec();
            r.bytes_up = up;
            r.bytes_down = down;
        }
        Err(e) => guard.rec().error = Some(format!("tunnel_io: {}", e.kind())),
    }
    guard.finish();
}
