//! Every refusal is a record, and every record says what happened: requests hyper refuses
//! before aigate sees them, every `Upgrade` value, and a client that ends its own handshake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestEnv;

const ALLOW_SDK: &str =
    "\n[[rules]]\nname = \"sanctioned-sdks\"\naction = \"allow\"\ntools = [\"anthropic-sdk\"]\n";

/// Raw bytes on an intercepted HTTP/1.1 connection; what the gateway sends until the end of
/// the first response head, or until it closes (10 s at most).
async fn intercepted_head(env: &TestEnv, bytes: &[u8]) -> String {
    let mut tls = env
        .tls_through("api.anthropic.com:443", "api.anthropic.com", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(bytes).await.unwrap();
    read_head(&mut tls).await
}

async fn read_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).to_string()
}

/// A WebSocket upgrade may carry a second protocol, in a second field line or after a comma;
/// `h2c` must not reach the vendor behind `websocket`.
#[tokio::test]
async fn every_upgrade_value_is_checked() {
    let env = TestEnv::builder().append(ALLOW_SDK).start().await;
    let ws = "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    for upgrade in [
        "Upgrade: websocket\r\nUpgrade: h2c\r\n",
        "Upgrade: websocket, h2c\r\n",
        "Upgrade: h2c\r\nUpgrade: websocket\r\n",
    ] {
        let head = intercepted_head(
            &env,
            format!("GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: Anthropic/Python 0.69.0\r\n{ws}{upgrade}\r\n").as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 403"), "{upgrade:?}: {head:.300}");
        assert!(
            head.contains("x-aigate-reason: upgrade_refused"),
            "{upgrade:?}: {head:.400}"
        );
    }
    assert!(
        env.vendor.requests().is_empty(),
        "an upgrade reached the vendor"
    );
    let records = env.audit_n(3).await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "upgrade_refused")
            .count(),
        3,
        "{records:#?}"
    );
}
