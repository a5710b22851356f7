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

/// A client that ends its own handshake (closes at once, stops mid-ClientHello, or rejects
/// the gateway's certificate with an alert) is recorded `abandoned`, never `block`: aigate
/// refused nothing. Bytes that are not TLS are still the gateway's refusal.
#[tokio::test]
async fn a_client_that_ends_its_own_handshake_is_not_a_block() {
    let env = TestEnv::builder().start().await;
    // Closed right after the CONNECT's 200.
    let s = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    drop(s);
    // Half a ClientHello, then closed.
    let mut s = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    drop(s);
    // A client that does not trust the aigate CA: it sends an alert and closes.
    let tcp = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let refused = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("api.anthropic.com").unwrap(),
            tcp,
        )
        .await;
    assert!(refused.is_err(), "the client trusts no CA");
    // Not TLS at all: the gateway's refusal.
    let mut s = env.connect_raw("api.anthropic.com:443", "").await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 64])).await;

    let records = env.audit_n(4).await;
    assert_eq!(records.len(), 4, "{records:#?}");
    let abandoned: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "abandoned")
        .collect();
    assert_eq!(abandoned.len(), 3, "{records:#?}");
    for r in &abandoned {
        assert_eq!(r["reason"], "client_closed_tls", "{r:#}");
        assert_eq!(r["kind"], "request");
    }
    assert!(
        abandoned
            .iter()
            .any(|r| r["error"].as_str().unwrap_or("").contains("alert")),
        "the alert is named: {abandoned:#?}"
    );
    let blocked: Vec<_> = records.iter().filter(|r| r["action"] == "block").collect();
    assert_eq!(blocked.len(), 1, "{records:#?}");
    assert_eq!(blocked[0]["reason"], "tls_handshake");
    assert!(env.vendor.requests().is_empty());
}

/// Requests that hyper refuses before aigate sees them: on the proxy leg, on an intercepted
/// connection and on the admin leg.
const HYPER_REFUSES: [(&str, &[u8]); 5] = [
    (
        "two Content-Lengths",
        b"POST http://echo.internal.test:7000/ HTTP/1.1\r\nHost: echo.internal.test:7000\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    (
        "xchunked",
        b"POST http://echo.internal.test:7000/ HTTP/1.1\r\nHost: echo.internal.test:7000\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold",
        b"GET http://echo.internal.test:7000/ HTTP/1.1\r\nHost: echo.internal.test:7000\r\nx-a: b\r\n c\r\n\r\n",
    ),
    ("h2c preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    (
        "CONNECT with a path",
        b"CONNECT api.anthropic.com:443/v1/messages HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n",
    ),
];

/// Send `bytes` on a fresh connection to `addr`; what comes back until the gateway closes.
async fn raw_to(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test]
async fn requests_hyper_refuses_are_recorded_on_the_proxy_leg() {
    let env = TestEnv::builder().start().await;
    for (i, (name, bytes)) in HYPER_REFUSES.iter().enumerate() {
        let got = raw_to(env.gateway.proxy_addr, bytes).await;
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 4"),
            "{name}: {got:.200}"
        );
        let records = env.audit_n(i + 1).await;
        assert_eq!(
            records.len(),
            i + 1,
            "{name}: one record each: {records:#?}"
        );
        let r = &records[i];
        assert_eq!(r["action"], "block", "{name}: {r:#}");
        assert_eq!(r["reason"], "bad_request", "{name}: {r:#}");
        assert_eq!(r["kind"], "tunnel", "{name}: {r:#}");
        assert!(
            r["error"].as_str().unwrap_or("").starts_with("http: "),
            "{name}: hyper's refusal: {r:#}"
        );
    }
    assert!(env.vendor.requests().is_empty());
}

#[tokio::test]
async fn requests_hyper_refuses_are_recorded_on_an_intercepted_connection() {
    let env = TestEnv::builder().append(ALLOW_SDK).start().await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "two Content-Lengths",
            b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: Anthropic/Python 0.69.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "xchunked",
            b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nUser-Agent: Anthropic/Python 0.69.0\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\nx-a: b\r\n c\r\n\r\n",
        ),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let head = intercepted_head(&env, bytes).await;
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 4"),
            "{name}: {head:.200}"
        );
        let records = env.audit_n(i + 1).await;
        assert_eq!(
            records.len(),
            i + 1,
            "{name}: one record each: {records:#?}"
        );
        let r = &records[i];
        assert_eq!(r["reason"], "bad_request", "{name}: {r:#}");
        assert_eq!(r["kind"], "request", "{name}: {r:#}");
        assert_eq!(r["vendor"], "anthropic", "{name}: {r:#}");
    }
    assert!(env.vendor.requests().is_empty());
}

#[tokio::test]
async fn requests_hyper_refuses_are_recorded_on_the_admin_leg() {
    let env = TestEnv::builder().start().await;
    for (i, (name, bytes)) in HYPER_REFUSES.iter().enumerate() {
        let got = raw_to(env.gateway.admin_addr, bytes).await;
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 4"),
            "{name}: {got:.200}"
        );
        let records = env.audit_n(i + 1).await;
        assert_eq!(
            records.len(),
            i + 1,
            "{name}: one record each: {records:#?}"
        );
        let r = &records[i];
        assert_eq!(r["kind"], "admin", "{name}: {r:#}");
        assert_eq!(r["reason"], "bad_request", "{name}: {r:#}");
    }
}

/// The records of a stopped gateway's log, with the summaries written at the stop.
async fn records_after_stop(env: TestEnv) -> Vec<serde_json::Value> {
    let log = env.gateway.audit().path().to_path_buf();
    let TestEnv { gateway, dir, .. } = env;
    gateway.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    drop(dir);
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["reason"] != "audit_checkpoint")
        .collect()
}

/// What a flood of refusals from one address left in the log: at most 10 records of its own
/// (docs/security.md), then one summary that counts the rest.
fn bounded(records: &[serde_json::Value], sent: u64, reasons: &[&str]) {
    let own: Vec<_> = records
        .iter()
        .filter(|r| reasons.contains(&r["reason"].as_str().unwrap()))
        .collect();
    let summaries: Vec<_> = records
        .iter()
        .filter(|r| r["reason"] == "proxy_refusals_summarized")
        .collect();
    assert_eq!(own.len(), 10, "{records:#?}");
    assert_eq!(summaries.len(), 1, "{records:#?}");
    assert_eq!(records.len(), 11, "nothing else: {records:#?}");
    let s = summaries[0];
    assert_eq!(s["kind"], "tunnel");
    assert_eq!(s["client"], "127.0.0.1");
    assert_eq!(s["admin"]["refusals"], sent - 10);
    let by_reason: u64 = s["admin"]["reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, sent - 10);
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} refusals from 127.0.0.1 between ", sent - 10)),
        "{s:#}"
    );
}

/// Refusals on the proxy port before anyone is identified (a missing or wrong proxy
/// credential, requests hyper refuses, a CONNECT target that does not parse) are bounded like
/// the admin side's: an outsider cannot grow the log at the rate they can send them (issue 15).
#[tokio::test]
async fn a_flood_of_unidentified_proxy_refusals_is_folded_into_a_summary() {
    let env = TestEnv::builder()
        .replace("require_auth = false", "require_auth = true")
        .start()
        .await;
    let mut sent = 0;
    for i in 0..60 {
        let cred = if i % 2 == 0 {
            ""
        } else {
            "Proxy-Authorization: Bearer not-a-real-token-123\r\n"
        };
        let refused = env
            .connect_raw("api.anthropic.com:443", cred)
            .await
            .unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 407"), "{refused}");
        sent += 1;
    }
    for (_, bytes) in HYPER_REFUSES.iter().cycle().take(20) {
        raw_to(env.gateway.proxy_addr, bytes).await;
        sent += 1;
    }
    assert!(env.connect_raw("not a target", "").await.is_err());
    sent += 1;
    let records = records_after_stop(env).await;
    bounded(
        &records,
        sent,
        &["proxy_auth", "proxy_auth_wrong", "bad_request"],
    );
    let reasons = &records.last().unwrap()["admin"]["reasons"];
    assert!(reasons["bad_request"].as_u64().unwrap() >= 11, "{reasons}");
}

/// A client outside `gateway.allowed_clients` opening connection after connection.
#[tokio::test]
async fn a_flood_from_a_denied_network_is_folded_into_a_summary() {
    let env = TestEnv::builder()
        .replace(
            "# allowed_clients = [\"10.0.0.0/8\", \"192.168.0.0/16\"]",
            "allowed_clients = [\"10.0.0.0/8\"]",
        )
        .start()
        .await;
    for _ in 0..50 {
        let head = env
            .connect_raw("echo.internal.test:7000", "")
            .await
            .unwrap_err();
        assert!(head.contains("x-aigate-reason: client_denied"), "{head}");
    }
    let records = records_after_stop(env).await;
    bounded(&records, 50, &["client_denied"]);
    assert_eq!(records[10]["admin"]["statuses"]["403"], 40);
}
