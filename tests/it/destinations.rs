//! The gateway is not a way in (issue 15): internal destinations are refused after resolution on
//! every path (CONNECT, absolute-form, the upstream leg of an intercepted host) unless config
//! opens them, and clients outside `gateway.allowed_clients` are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestEnv, by_id};

/// The request id a refusal names in its `x-aigate-request-id` header.
fn request_id(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("x-aigate-request-id: "))
        .unwrap_or_else(|| panic!("no request id in {head}"))
        .trim()
        .to_string()
}

/// Assert a refused CONNECT is a 403 `destination_denied` with one block record naming it.
async fn assert_connect_denied(env: &TestEnv, target: &str, dialled: &str) {
    let head = env.connect_raw(target, "").await.unwrap_err();
    assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
    assert!(
        head.contains("x-aigate-reason: destination_denied"),
        "{target}: {head}"
    );
    let id = request_id(&head);
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(r["action"], "block", "{target}");
    assert_eq!(r["reason"], "destination_denied", "{target}");
    assert_eq!(r["status"], 403, "{target}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains(dialled), "{target}: {error}");
}

/// `curl -p -x gateway:3128 http://localhost:9180/v1/audit` reached the "loopback-only" admin
/// API. Every spelling of the gateway host's loopback is refused, the name `localhost` (which
/// resolves to 127.0.0.1 only after the check a name-based rule would make) included.
#[tokio::test]
async fn connect_to_loopback_is_refused_in_every_spelling() {
    let env = TestEnv::builder().start().await;
    let admin = env.gateway.admin_addr.port();
    for (target, dialled) in [
        (format!("127.0.0.1:{admin}"), format!("127.0.0.1:{admin}")),
        (format!("localhost:{admin}"), format!(":{admin}")),
        (format!("[::ffff:127.0.0.1]:{admin}"), format!(":{admin}")),
        (format!("2130706433:{admin}"), format!("127.0.0.1:{admin}")),
        (format!("127.1.2.3:{admin}"), format!("127.1.2.3:{admin}")),
        (format!("0.0.0.0:{admin}"), format!("0.0.0.0:{admin}")),
    ] {
        assert_connect_denied(&env, &target, &dialled).await;
    }
    // Nothing but refusals: no tunnel was opened.
    let records = env.audit().await;
    assert_eq!(records.len(), 6, "{records:#?}");
    assert!(records.iter().all(|r| r["reason"] == "destination_denied"));
}

/// Cloud metadata (link-local IPv4 and AWS's IPv6 address) and private ranges are refused,
/// even on ports where a raw IP address passes the ip_literal check.
#[tokio::test]
async fn connect_to_metadata_and_private_ranges_is_refused() {
    let env = TestEnv::builder().start().await;
    for (target, dialled) in [
        ("169.254.169.254:8775", "169.254.169.254:8775"),
        ("[fd00:ec2::254]:8775", "[fd00:ec2::254]:8775"),
        ("10.0.0.1:5432", "10.0.0.1:5432"),
        ("192.168.1.1:8080", "192.168.1.1:8080"),
        ("172.16.0.1:22", "172.16.0.1:22"),
        ("100.64.0.1:3128", "100.64.0.1:3128"),
        ("[fe80::1]:8080", "[fe80::1]:8080"),
        ("224.0.0.1:9000", "224.0.0.1:9000"),
    ] {
        assert_connect_denied(&env, target, dialled).await;
    }
}

/// `allowed_ip_literals` opens a raw address on a web port; it does not open an internal one.
#[tokio::test]
async fn an_allowed_ip_literal_is_still_an_internal_destination() {
    let env = TestEnv::builder()
        .replace(
            "allowed_ip_literals = []",
            "allowed_ip_literals = [\"169.254.169.254\"]",
        )
        .start()
        .await;
    assert_connect_denied(&env, "169.254.169.254:80", "169.254.169.254:80").await;
}

/// The same attack without CONNECT: an absolute-form plain-HTTP request.
#[tokio::test]
async fn absolute_form_requests_to_internal_addresses_are_refused() {
    let env = TestEnv::builder().start().await;
    let admin = env.gateway.admin_addr.port();
    let client = env.client(true);
    for url in [
        format!("http://127.0.0.1:{admin}/v1/audit"),
        format!("http://localhost:{admin}/v1/audit"),
        "http://169.254.169.254:8775/latest/meta-data/".to_string(),
        "http://10.0.0.1:8080/".to_string(),
    ] {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{url}");
        assert_eq!(
            resp.headers()["x-aigate-reason"],
            "destination_denied",
            "{url}"
        );
        let id = crate::common::request_id(resp.headers());
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("gateway.allowed_destinations"),
            "{url}: {text}"
        );
        let records = env.audit().await;
        let r = by_id(&records, &id);
        assert_eq!(r["action"], "block", "{url}");
        assert_eq!(r["reason"], "destination_denied", "{url}");
    }
    assert_eq!(env.audit().await.len(), 4);
}

/// An intercepted vendor host whose name resolves to an internal address: the upstream leg is
/// checked too, and the refusal comes in the vendor's error shape.
#[tokio::test]
async fn the_intercepted_upstream_leg_is_checked_after_resolution() {
    let env = TestEnv::builder()
        .replace(
            "hosts = [\"api.anthropic.com\"]",
            "hosts = [\"api.anthropic.com\", \"localhost\"]",
        )
        .start()
        .await;
    let client = env.client(true);
    let resp = client
        .post("https://localhost/v1/messages")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-reason"], "destination_denied");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("loopback"), "{message}");
    let records = env.audit().await;
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r["reason"] == "destination_denied")
        .collect();
    assert_eq!(denied.len(), 1, "{records:#?}");
    assert_eq!(denied[0]["kind"], "request");
    assert_eq!(denied[0]["action"], "block");
    assert_eq!(denied[0]["vendor"], "anthropic");
    assert!(env.vendor.requests().is_empty());
}

/// `gateway.allowed_destinations` opens exactly what it names: an address and port, a name and
/// port, a CIDR. The vendor's loopback address is open because `[upstream.resolve]` names it.
#[tokio::test]
async fn allowed_destinations_open_what_they_name() {
    let probe = crate::common::start_echo().await;
    let other = crate::common::start_echo().await;
    let env = TestEnv::builder()
        .allow_destination(format!("127.0.0.1:{}", probe.port()))
        .allow_destination(format!("localhost:{}", other.port()))
        .start()
        .await;
    for target in [
        format!("127.0.0.1:{}", probe.port()),
        format!("localhost:{}", other.port()),
    ] {
        let mut s = env.connect_raw(&target, "").await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping", "{target}");
    }
    // Not opened: the second server by address (only its name is listed), and the same name
    // on another port.
    assert_connect_denied(
        &env,
        &format!("127.0.0.1:{}", other.port()),
        &format!("127.0.0.1:{}", other.port()),
    )
    .await;
    let admin = env.gateway.admin_addr.port();
    assert_connect_denied(&env, &format!("localhost:{admin}"), &format!(":{admin}")).await;
    // A CIDR opens every port in it.
    let wide = env
        .variant("wide", |t| {
            t.replace(
                "allowed_destinations = [",
                "allowed_destinations = [\"127.0.0.0/8\", ",
            )
        })
        .await;
    let mut s = tokio::net::TcpStream::connect(wide.proxy_addr)
        .await
        .unwrap();
    let target = format!("127.0.0.1:{}", other.port());
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// A client outside `gateway.allowed_clients` is refused before it can send anything, with a
/// record; a client inside is served.
#[tokio::test]
async fn allowed_clients_refuse_other_networks() {
    let env = TestEnv::builder()
        .replace(
            "# allowed_clients = [\"10.0.0.0/8\", \"192.168.0.0/16\"]",
            "allowed_clients = [\"10.0.0.0/8\"]",
        )
        .start()
        .await;
    let head = env
        .connect_raw("echo.internal.test:7000", "")
        .await
        .unwrap_err();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("x-aigate-reason: client_denied"), "{head}");
    let records = env.audit().await;
    let r = by_id(&records, &request_id(&head));
    assert_eq!(r["action"], "block");
    assert_eq!(r["reason"], "client_denied");
    assert!(r["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(records.len(), 1);

    let open = env
        .variant("loopback-clients", |t| {
            t.replace(
                "allowed_clients = [\"10.0.0.0/8\"]",
                "allowed_clients = [\"10.0.0.0/8\", \"127.0.0.1\"]",
            )
        })
        .await;
    let mut s = tokio::net::TcpStream::connect(open.proxy_addr)
        .await
        .unwrap();
    let target = "echo.internal.test:7000";
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// A WebSocket upgrade dials its own upstream connection (not the pooled client): it is checked
/// the same way, and the client gets the 403 instead of a 101.
#[tokio::test]
async fn a_websocket_upstream_leg_is_checked_too() {
    let env = TestEnv::builder()
        .replace(
            "hosts = [\"api.openai.com\", \"chatgpt.com\"]",
            "hosts = [\"api.openai.com\", \"chatgpt.com\", \"localhost\"]",
        )
        .start()
        .await;
    let tls = env
        .tls_through("localhost:443", "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let req = http::Request::builder()
        .uri("wss://localhost/v1/responses")
        .header("host", "localhost")
        .header("user-agent", "OpenAI/Python 2.1.0")
        .header("x-stainless-lang", "python")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let err = tokio_tungstenite::client_async(req, tls).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(resp) = err else {
        panic!("expected an HTTP refusal, got {err}");
    };
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-aigate-reason"], "destination_denied");
    let records = env.audit_n(1).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["reason"], "destination_denied");
    assert_eq!(records[0]["action"], "block");
    assert!(env.vendor.requests().is_empty());
}
