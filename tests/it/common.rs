//! The test harness: a real TLS vendor upstream, the real gateway in-process, and real clients,
//! all on 127.0.0.1:0. `TestEnv::builder().start().await` gives all three and the audit records.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use aigate::{App, AppHandle, config};

/// Host names the fake vendor answers for (its certificate covers them all): first-party hosts,
/// and one of each managed cloud and relay route.
pub const VENDOR_HOSTS: &[&str] = &[
    "api.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "chatgpt.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "us-east5-aiplatform.googleapis.com",
    "aiplatform.googleapis.com",
    "my-res.services.ai.azure.com",
    "openrouter.ai",
    "api.mistral.ai",
    "www.googleapis.com",
];

/// What the vendor received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    /// The body as far as it arrived.
    pub body: Bytes,
    /// Body bytes that arrived (also when the body broke off).
    pub body_len: usize,
    /// The body arrived whole: its declared length, or a chunked body's last chunk.
    pub complete: bool,
}

#[derive(Clone, Default)]
pub struct Vendor {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// The SSE route sends its first event, then waits for this before the rest.
    pub release_sse: Arc<Notify>,
    /// Answers set by the test, by path (without the query): headers and body chunks.
    pub canned: Arc<Mutex<Vec<(String, Canned)>>>,
}

/// A recorded answer the vendor plays back: each chunk a frame of its own (chunked transfer), a
/// pause between them so the gateway sees them one by one.
#[derive(Clone)]
pub struct Canned {
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Bytes>,
    pub gap: std::time::Duration,
}

impl Vendor {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Answer requests for `path` with `canned`.
    pub fn serve(&self, path: &str, canned: Canned) {
        self.canned.lock().unwrap().push((path.to_string(), canned));
    }
}

pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`: (certificate PEM, PKCS#8 key PEM), for servers that read files.
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(cfg)
    }
}

type VBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn vendor_route(
    vendor: Vendor,
    mut req: Request<Incoming>,
) -> Result<Response<VBody>, std::convert::Infallible> {
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, mut body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    // Recorded before the body is read and updated frame by frame, so that a body the gateway
    // cuts off is on record as far as it came, even if the connection's end drops this task.
    let at = {
        let mut seen = vendor.seen.lock().unwrap();
        seen.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: Bytes::new(),
            body_len: 0,
            complete: false,
        });
        seen.len() - 1
    };
    let mut received = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                vendor.seen.lock().unwrap()[at].complete = true;
                break;
            }
            Some(Err(_)) => break,
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    received.extend_from_slice(d);
                    vendor.seen.lock().unwrap()[at].body_len = received.len();
                }
            }
        }
    }
    vendor.seen.lock().unwrap()[at].body = received.freeze();
    if is_ws {
        let key = parts
            .headers
            .get("sec-websocket-key")
            .cloned()
            .unwrap_or(http::HeaderValue::from_static(""));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed())
            .unwrap();
        return Ok(resp);
    }
    let canned = {
        let bare = path.split('?').next().unwrap_or("");
        vendor
            .canned
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(p, _)| p == bare)
            .map(|(_, c)| c.clone())
    };
    if let Some(c) = canned {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            for chunk in c.chunks {
                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                    return;
                }
                tokio::time::sleep(c.gap).await;
            }
        });
        let mut resp = Response::builder();
        for (name, value) in &c.headers {
            resp = resp.header(name, value);
        }
        return Ok(resp
            .body(StreamBody::new(tokio_stream_from(rx)).boxed())
            .unwrap());
    }
    if path.starts_with("/stall") {
        // Never answers.
        std::future::pending::<()>().await;
    }
    if path.starts_with("/reset-stream") {
        // A chunked stream that breaks off after its first event.
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from(
                    "event: message\ndata: {\"n\":1}\n\n",
                ))))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let _ = tx
                .send(Err(std::io::Error::other("vendor broke off")))
                .await;
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap());
    }
    if path.starts_with("/reset") {
        // Promises 1000 bytes, sends 30, then ends: the connection breaks mid-body.
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from(
                    "event: message\ndata: {\"n\":1}\n\n",
                ))))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("content-length", "1000")
            .body(body)
            .unwrap());
    }
    if path.starts_with("/sse") {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        let release = vendor.release_sse.clone();
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from(
                    "event: message\ndata: {\"n\":1}\n\n",
                ))))
                .await;
            release.notified().await;
            for n in 2..=5 {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from(format!(
                        "event: message\ndata: {{\"n\":{n}}}\n\n"
                    )))))
                    .await;
            }
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("alt-svc", "h3=\":443\"; ma=86400")
            .body(body)
            .unwrap());
    }
    let json = serde_json::json!({"ok": true, "path": path}).to_string();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("alt-svc", "h3=\":443\"; ma=86400")
        .body(Full::new(Bytes::from(json)).map_err(|n| match n {}).boxed())
        .unwrap())
}

/// An mpsc receiver as a Stream, without pulling in tokio-stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Start the fake vendor: TLS with the test upstream CA, ALPN as given.
pub async fn start_vendor(ca: &TestCa, alpn: &[&[u8]]) -> (SocketAddr, Vendor) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(VENDOR_HOSTS, alpn));
    let vendor = Vendor::default();
    let v = vendor.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let v = v.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req| vendor_route(v.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, vendor)
}

/// A plain TCP echo server (a non-vendor destination for tunnels).
pub async fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

pub struct TestEnv {
    pub gateway: AppHandle,
    pub vendor: Vendor,
    pub vendor_addr: SocketAddr,
    pub echo_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub upstream_ca: TestCa,
}

/// A clock the test moves forward.
#[derive(Default)]
pub struct TestClock {
    ahead_secs: std::sync::atomic::AtomicU64,
}

impl TestClock {
    pub fn advance(&self, d: std::time::Duration) {
        self.ahead_secs
            .fetch_add(d.as_secs(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl aigate::proxy::Clock for TestClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
            + std::time::Duration::from_secs(
                self.ahead_secs.load(std::sync::atomic::Ordering::SeqCst),
            )
    }
}

pub struct Builder {
    users: Option<String>,
    clock: Option<Arc<TestClock>>,
    edits: Vec<(String, String)>,
    append: String,
    vendor_alpn: Vec<&'static [u8]>,
    allowed_destinations: Vec<String>,
    files: Vec<(String, String)>,
}

impl TestEnv {
    pub fn builder() -> Builder {
        Builder {
            users: None,
            clock: None,
            edits: Vec::new(),
            append: String::new(),
            vendor_alpn: vec![b"h2", b"http/1.1"],
            allowed_destinations: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl Builder {
    /// Replace a line of the shipped config.
    pub fn replace(mut self, from: &str, to: &str) -> Builder {
        self.edits.push((from.to_string(), to.to_string()));
        self
    }

    /// Add TOML at the end of the shipped config (more rules, say).
    pub fn append(mut self, toml: &str) -> Builder {
        self.append.push_str(toml);
        self
    }

    /// The users file (`users.toml` next to the config).
    pub fn users(mut self, toml: &str) -> Builder {
        self.users = Some(toml.to_string());
        self
    }

    pub fn clock(mut self, clock: Arc<TestClock>) -> Builder {
        self.clock = Some(clock);
        self
    }

    /// Open an internal destination (`gateway.allowed_destinations`): a CIDR, an address or
    /// `host:port`. A test that tunnels to a loopback server by address needs this; names in
    /// `[upstream.resolve]` (the vendor, `echo.internal.test`) are open already.
    pub fn allow_destination(mut self, entry: impl Into<String>) -> Builder {
        self.allowed_destinations.push(entry.into());
        self
    }

    /// An admin API token for `user` with `role`.
    pub fn admin_token(self, user: &str, role: &str, token: &str) -> Builder {
        self.append(&format!(
            "\n[[admin.tokens]]\nuser = \"{user}\"\nroles = [\"{role}\"]\nhash = \"{}\"\n",
            aigate::identify::user::hash_token(token)
        ))
    }

    /// A file next to the config (a secret the config names by path, say).
    pub fn file(mut self, name: &str, contents: &str) -> Builder {
        self.files.push((name.to_string(), contents.to_string()));
        self
    }

    /// Console sign-in with `idp`: its `[console.oidc]`, the client secret in a file, `extra`
    /// lines added to the section (roles, claims).
    pub fn oidc(self, idp: &Idp, extra: &str) -> Builder {
        self.file("oidc-client-secret", &format!("{IDP_CLIENT_SECRET}\n"))
            .append(&format!(
                "\n[console.oidc]\nissuer = \"{}\"\nclient_id = \"{IDP_CLIENT_ID}\"\nclient_secret_file = \"oidc-client-secret\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\n{extra}\n",
                idp.issuer
            ))
    }

    pub fn vendor_alpn(mut self, alpn: Vec<&'static [u8]>) -> Builder {
        self.vendor_alpn = alpn;
        self
    }

    pub async fn start(self) -> TestEnv {
        let upstream_ca = TestCa::new("test vendor CA");
        let (vendor_addr, vendor) = start_vendor(&upstream_ca, &self.vendor_alpn).await;
        let echo_addr = start_echo().await;
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("upstream-ca.pem");
        std::fs::write(&roots, &upstream_ca.cert_pem).unwrap();
        let mut text = config::DEFAULT_CONFIG.to_string();
        let mut resolve = String::from("[upstream.resolve]\n");
        for h in VENDOR_HOSTS {
            resolve.push_str(&format!("\"{h}\" = \"{vendor_addr}\"\n"));
        }
        resolve.push_str(&format!("\"echo.internal.test\" = \"{echo_addr}\"\n"));
        let mut edits = vec![
            (
                "listen = \"127.0.0.1:3128\"".to_string(),
                "listen = \"127.0.0.1:0\"".to_string(),
            ),
            (
                "listen = \"127.0.0.1:9180\"".to_string(),
                "listen = \"127.0.0.1:0\"".to_string(),
            ),
            (
                "state_dir = \"./aigate-data\"".to_string(),
                format!("state_dir = {:?}", dir.path().join("state")),
            ),
            (
                "extra_roots = []".to_string(),
                format!("extra_roots = [{roots:?}]"),
            ),
            ("[upstream.resolve]\n".to_string(), resolve),
            // Test clients are on loopback: anonymous unless a test names them (the shipped
            // attribution to the local account is tested on its own).
            (
                "local_account = true".to_string(),
                "local_account = false".to_string(),
            ),
        ];
        if !self.allowed_destinations.is_empty() {
            edits.push((
                "allowed_destinations = []".to_string(),
                format!("allowed_destinations = {:?}", self.allowed_destinations),
            ));
        }
        edits.extend(self.edits);
        for (from, to) in edits {
            assert!(text.contains(&from), "the shipped config has no {from:?}");
            text = text.replacen(&from, &to, 1);
        }
        text.push_str(&self.append);
        if let Some(users) = &self.users {
            std::fs::write(dir.path().join("users.toml"), users).unwrap();
        }
        for (name, contents) in &self.files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let config_path = dir.path().join("aigate.toml");
        std::fs::write(&config_path, &text).unwrap();
        let cfg = config::load(Some(&config_path)).unwrap_or_else(|e| panic!("{e}"));
        let gateway = match self.clock {
            Some(c) => App::start_with_clock(cfg, c).await.unwrap(),
            None => App::start(cfg).await.unwrap(),
        };
        TestEnv {
            gateway,
            vendor,
            vendor_addr,
            echo_addr,
            dir,
            config_path,
            upstream_ca,
        }
    }
}

impl TestEnv {
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.gateway.proxy_addr)
    }

    /// A request to the admin API with a bearer token, not through any proxy.
    pub fn admin_request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .request(method, format!("http://{}{path}", self.gateway.admin_addr))
            .bearer_auth(token)
    }

    /// GET on the admin API with a bearer token: (status, body).
    pub async fn admin_get(&self, path: &str, token: &str) -> (u16, String) {
        let resp = self
            .admin_request(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// A reqwest client through the gateway, trusting only the gateway's CA.
    pub fn client(&self, h1_only: bool) -> reqwest::Client {
        client_for(&self.gateway, "", h1_only)
    }
}

/// A reqwest client through `gw`; `cred` is `user:token@` or empty.
pub fn client_for(gw: &AppHandle, cred: &str, h1_only: bool) -> reqwest::Client {
    {
        let ca = reqwest::Certificate::from_pem(gw.ca_cert_pem().as_bytes()).unwrap();
        let mut b = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{cred}{}", gw.proxy_addr)).unwrap())
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .use_rustls_tls();
        if h1_only {
            b = b.http1_only();
        }
        b.build().unwrap()
    }
}

/// The gateway's id of the call a response answered (`x-aigate-request-id`, which every
/// forwarded or refused call carries): the key to its audit records.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers["x-aigate-request-id"].to_str().unwrap().to_string()
}

/// Every call in a gateway's audit log, one row each: a forwarded call's decision and
/// outcome joined as `audit query` joins them (a call still open shows its decision, with
/// `outcome_follows`). `raw_records_of` has the lines as written.
/// The Anthropic Python SDK's model call (its user agent and `x-stainless-lang`) through the
/// gateway with `body`: the response, and the request id the gateway gave the call.
pub async fn anthropic_sdk_call(
    client: &reqwest::Client,
    body: &str,
) -> (reqwest::Response, String) {
    let resp = client
        .post("https://api.anthropic.com/v1/messages")
        .header("user-agent", "Anthropic/Python 0.69.0")
        .header("x-stainless-lang", "python")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let id = request_id(resp.headers());
    (resp, id)
}

pub async fn records_of(gw: &AppHandle) -> Vec<serde_json::Value> {
    let mut calls = aigate::audit::calls::Calls::<aigate::audit::record::StoredRecord>::default();
    let raw = raw_records_of(gw).await;
    // Rows in the order calls started (their first record): a captured call's outcome is
    // written by the capture worker, possibly after records of calls that started later.
    let mut first_seq = std::collections::HashMap::new();
    for r in &raw {
        if let (Some(id), Some(seq)) = (r["id"].as_str(), r["seq"].as_u64()) {
            first_seq.entry(id.to_string()).or_insert(seq);
        }
    }
    let mut rows: Vec<serde_json::Value> = raw
        .into_iter()
        .filter_map(|v| calls.push(serde_json::from_value(v).unwrap()))
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    rows.extend(
        calls
            .finish()
            .into_iter()
            .map(|s| serde_json::to_value(s).unwrap()),
    );
    let started = |r: &serde_json::Value| {
        r["id"]
            .as_str()
            .and_then(|id| first_seq.get(id).copied())
            .unwrap_or(u64::MAX)
    };
    rows.sort_by_key(|r| started(r));
    rows
}

/// Every record in a gateway's audit log, as written.
pub async fn raw_records_of(gw: &AppHandle) -> Vec<serde_json::Value> {
    // A captured call's outcome is written by the capture worker, after its response ended.
    gw.settle_capture(std::time::Duration::from_secs(5)).await;
    written_records_of(gw).await
}

/// The records the audit writer has now, without waiting for capture workers (for a test that
/// holds them and expects nothing to be waiting on them).
pub async fn written_records_of(gw: &AppHandle) -> Vec<serde_json::Value> {
    assert!(gw.audit().flush().await, "audit log not written");
    let text = std::fs::read_to_string(gw.audit().path()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

impl TestEnv {
    /// Every audit record written so far, as JSON.
    pub async fn audit(&self) -> Vec<serde_json::Value> {
        records_of(&self.gateway).await
    }

    /// Wait until the audit log holds `n` finished calls (tunnel records arrive when the tunnel
    /// closes, a forwarded call's outcome when it ends).
    pub async fn audit_n(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let records = self.audit().await;
            if records
                .iter()
                .filter(|r| r["outcome_follows"] != true)
                .count()
                >= n
            {
                return records;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} audit records: {:#?}", self.audit().await);
    }

    /// A second gateway on the same vendor, with its own state directory and an edited config.
    pub async fn variant(&self, name: &str, edit: impl FnOnce(String) -> String) -> AppHandle {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let state = self.dir.path().join("state");
        let text = edit(text.replace(
            &format!("{state:?}"),
            &format!("{:?}", self.dir.path().join(name)),
        ));
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        App::start(config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.gateway.audit().path()).unwrap()
    }

    /// Open a CONNECT tunnel through the gateway by hand; returns the stream after `200`, or the
    /// status line if refused.
    pub async fn connect_raw(
        &self,
        target: &str,
        extra_headers: &str,
    ) -> Result<TcpStream, String> {
        connect_raw_at(self.gateway.proxy_addr, target, extra_headers).await
    }

    /// A TLS connection inside a CONNECT to `target`, trusting the vendor's own CA: what a client
    /// sees of a tunnel that aigate does not intercept.
    pub async fn tls_to_vendor_through(
        &self,
        target: &str,
        sni: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.tls_to_vendor_through_with(target, sni, true).await
    }

    /// As `tls_to_vendor_through`; `send_sni = false` leaves the server name out of the
    /// ClientHello (the certificate is still checked against `sni`).
    pub async fn tls_to_vendor_through_with(
        &self,
        target: &str,
        sni: &str,
        send_sni: bool,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = self
            .connect_raw(target, "")
            .await
            .map_err(std::io::Error::other)?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.upstream_ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.enable_sni = send_sni;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap(),
                tcp,
            )
            .await
    }

    /// A TLS connection to `sni` inside a CONNECT to `target`, trusting the gateway's CA.
    pub async fn tls_through(
        &self,
        target: &str,
        sni: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.tls_through_with(target, "", sni, alpn).await
    }

    /// As `tls_through`, with extra CONNECT headers (`Proxy-Authorization: …\r\n`).
    pub async fn tls_through_with(
        &self,
        target: &str,
        connect_headers: &str,
        sni: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tls_through_at(
            self.gateway.proxy_addr,
            self.gateway.ca_cert_pem(),
            target,
            connect_headers,
            sni,
            alpn,
        )
        .await
    }
}

impl TestEnv {
    /// One HTTP/1.1 request written byte for byte over TLS to an intercepted `host` (port 443):
    /// paths (`/v1/../api/…`) and header bytes (`0xff`) that HTTP client libraries normalise or
    /// refuse. `head` is the request line and headers without the blank line; `Host`,
    /// `Content-Length` and `Connection: close` are added. Returns the whole response as text.
    pub async fn raw_https(&self, host: &str, head: &[u8], body: &[u8]) -> String {
        let mut s = self
            .tls_through(&format!("{host}:443"), host, &[b"http/1.1"])
            .await
            .unwrap();
        let mut req = head.to_vec();
        req.extend_from_slice(
            format!(
                "\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(body);
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the gateway answers and closes")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A CONNECT tunnel through the proxy at `proxy` (a gateway in this process or a binary).
pub async fn connect_raw_at(
    proxy: SocketAddr,
    target: &str,
    extra_headers: &str,
) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra_headers}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(head)
    }
}

/// TLS to `sni` inside a CONNECT to `target` through the proxy at `proxy`, trusting `ca_pem`.
pub async fn tls_through_at(
    proxy: SocketAddr,
    ca_pem: &str,
    target: &str,
    connect_headers: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_raw_at(proxy, target, connect_headers)
        .await
        .map_err(std::io::Error::other)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    connector
        .connect(
            rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap(),
            tcp,
        )
        .await
}

use rustls_pki_types::pem::PemObject;

/// The one record with this request id.
pub fn by_id<'a>(records: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    let found: Vec<_> = records.iter().filter(|r| r["id"] == id).collect();
    assert_eq!(found.len(), 1, "exactly one record for {id}: {records:#?}");
    found[0]
}

/// A browser-less console client on the admin listener: no redirects followed, the session
/// cookie kept by hand (so tests can plant, drop or swap it), forms posted as a browser posts
/// them (`Origin` and `Sec-Fetch-Site` set unless a test changes them).
pub struct ConsoleClient {
    pub base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
}

/// What the console answered: status, headers, body.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The session cookie this answer sets, as `name=value`.
    pub fn set_cookie(&self) -> Option<String> {
        self.headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
    }

    /// The CSRF token of the first form on the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in:\n{}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl ConsoleClient {
    pub fn new(admin: SocketAddr) -> ConsoleClient {
        ConsoleClient::at(format!("http://{admin}"))
    }

    pub fn at(base: String) -> ConsoleClient {
        ConsoleClient {
            base,
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// A client of the caller's making (TLS roots, say).
    pub fn with_http(base: String, http: reqwest::Client) -> ConsoleClient {
        ConsoleClient {
            base,
            http,
            cookie: None,
        }
    }

    /// A GET whose connection errors are the caller's to check.
    pub async fn http_get_raw(&self, path: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.http.get(format!("{}{path}", self.base)).send().await
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let page = Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        };
        if let Some(c) = page.set_cookie() {
            self.cookie = (!c.ends_with('=')).then_some(c);
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// A form post from the console's own page.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, form, Some(&origin), Some("same-origin"))
            .await
    }

    /// A form post with the given `Origin` and `Sec-Fetch-Site` (None: header left out).
    pub async fn post_from(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
        fetch_site: Option<&str>,
    ) -> Page {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = fetch_site {
            req = req.header("sec-fetch-site", s);
        }
        self.send(req).await
    }

    /// Sign in with an admin token; panics unless it worked.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let page = self
            .post("/signin", &[("token", token), ("next", "/")])
            .await;
        assert_eq!(page.status, 303, "sign-in failed: {}", page.body);
        assert!(self.cookie.is_some());
        page
    }
}

/// A real headless Chromium, driven over WebDriver by its chromedriver (Debian's `chromium` and
/// `chromium-driver`; `.ci/run` installs them). Every page a test looks at is saved as
/// `target/console-screenshots/NAME.png` and checked with axe-core, which fails the test on a
/// serious or critical accessibility violation.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
    axe: Arc<String>,
}

/// axe-core, pinned; fetched with `npm pack` into `target/test-cache/` on first use (not
/// committed).
const AXE_VERSION: &str = "4.14.1";

/// The axe-core script, from the cache or npm.
fn axe_source() -> Arc<String> {
    static AXE: std::sync::OnceLock<Arc<String>> = std::sync::OnceLock::new();
    AXE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-cache")
            .join(format!("axe-core-{AXE_VERSION}"));
        let script = dir.join("package/axe.min.js");
        if !script.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let out = std::process::Command::new("npm")
                .args(["pack", &format!("axe-core@{AXE_VERSION}"), "--silent"])
                .current_dir(&dir)
                .output()
                .expect(
                    "npm is needed to fetch axe-core for the browser tests (.ci/run installs it)",
                );
            assert!(out.status.success(), "npm pack axe-core: {out:?}");
            let tgz = String::from_utf8(out.stdout).unwrap().trim().to_string();
            let ok = std::process::Command::new("tar")
                .args(["xzf", &tgz])
                .current_dir(&dir)
                .status()
                .unwrap();
            assert!(ok.success(), "cannot unpack {tgz}");
        }
        Arc::new(std::fs::read_to_string(&script).unwrap())
    })
    .clone()
}

pub const IDP_CLIENT_ID: &str = "aigate-console";
pub const IDP_CLIENT_SECRET: &str = "console-secret-0123456789abcdef0123";

/// A real OpenID provider: the certified `oidc-provider` npm package run by
/// tests/fixtures/oidc/provider.mjs on 127.0.0.1, installed once per machine by
/// tests/fixtures/oidc/install.sh. Killed when dropped.
pub struct Idp {
    pub issuer: String,
    child: std::process::Child,
}

/// Where install.sh put the provider (installed on first use, then reused).
fn idp_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/oidc/install.sh"
        );
        let out = std::process::Command::new("bash")
            .arg(script)
            .output()
            .expect("run tests/fixtures/oidc/install.sh");
        assert!(
            out.status.success(),
            "installing oidc-provider failed (node and npm are needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

impl Browser {
    pub async fn start() -> Browser {
        for tool in ["chromium", "chromedriver"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            assert!(
                found.status.success(),
                "{tool} is not installed: apt-get install chromium chromium-driver (.ci/run does)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-proxy-server",
                    "--window-size=1280,1000",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match fantoccini::ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        _profile: profile,
                        axe: axe_source(),
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let here = self.path().await;
        self.client
            .wait()
            .at_most(std::time::Duration::from_secs(10))
            .for_element(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on {here}: {e}"))
    }

    /// The element's text. Pages that refresh themselves (a request's live status) can replace
    /// the element between finding and reading it: a stale element is found again.
    pub async fn text(&self, css: &str) -> String {
        let mut last = None;
        for _ in 0..5 {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the text of {css} could not be read: {last:?}");
    }

    /// The element's text once it contains `want` (10 s at most). After a click that submits a
    /// form, the page before the answer can still be read for a moment: its notice of the last
    /// action would be read as this one's.
    pub async fn text_once_it_says(&self, css: &str, want: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text(css).await;
            if text.contains(want) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "{css} says {text:?}, not {want:?}, on {}",
            self.path().await
        );
    }

    /// The page as a person sees it: a screenshot in `target/console-screenshots/NAME.png`,
    /// and axe-core's audit, which must find nothing serious or critical.
    pub async fn check(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        self.client.execute(&self.axe, vec![]).await.unwrap();
        let violations = self
            .client
            .execute(
                "return axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.html)})));",
                vec![],
            )
            .await
            .unwrap();
        let bad: Vec<&serde_json::Value> = violations
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(bad.is_empty(), "{name}: axe-core found {bad:#?}");
    }

    /// Press keys in whatever has focus (`\u{e004}` Tab, `\u{e007}` Enter).
    pub async fn keys(&self, keys: &str) {
        let focused = self.client.active_element().await.unwrap();
        focused.send_keys(keys).await.unwrap();
    }

    /// The `id` (or name) of the element with focus.
    pub async fn focused(&self) -> String {
        let e = self.client.active_element().await.unwrap();
        e.attr("id")
            .await
            .unwrap()
            .or(e.attr("name").await.unwrap())
            .unwrap_or_default()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test does not leave chromedriver (and its Chromium) behind.
        let _ = self.driver.kill();
    }
}

/// A TCP load balancer in front of several replicas' admin listeners, on its own loopback
/// port: each new connection goes to the backend the test points it at ([`Balancer::to`]), as
/// a real balancer may send one browser's requests to any replica. Clients that should switch
/// replicas between requests must not keep connections (`pool_max_idle_per_host(0)`).
pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    current: Arc<std::sync::atomic::AtomicUsize>,
}

impl Balancer {
    pub async fn start() -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let current: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (b, c) = (backends.clone(), current.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let i = c.load(std::sync::atomic::Ordering::SeqCst);
                let Some(to) = b.lock().unwrap().get(i).copied() else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Balancer {
            addr,
            backends,
            current,
        }
    }

    /// The replicas behind it, in the order [`Balancer::to`] counts them.
    pub fn serve(&self, backends: &[SocketAddr]) {
        *self.backends.lock().unwrap() = backends.to_vec();
    }

    /// New connections go to backend `i` from now on.
    pub fn to(&self, i: usize) {
        self.current.store(i, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A web page on its own loopback port (another origin than the console): answers `html` to
/// every request. For the browser's CSRF test.
pub async fn serve_html(html: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let html = Bytes::from(html);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let html = html.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(Full::new(html))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

impl Idp {
    /// `tamper`: one of provider.mjs's OIDC_TAMPER attacks on the ID token, or `None`.
    pub async fn start(tamper: Option<&str>) -> Idp {
        Idp::start_on(tamper, 0).await
    }

    /// Named `host` in its issuer (it listens on 127.0.0.1 whatever the name): `localhost` puts
    /// it on another site than the console on 127.0.0.1, for the browser.
    pub async fn start_at(host: &str) -> Idp {
        Idp::start_with(None, 0, host).await
    }

    /// On a given port (0: any), for a provider that comes up after the gateway.
    pub async fn start_on(tamper: Option<&str>, port: u16) -> Idp {
        Idp::start_with(tamper, port, "127.0.0.1").await
    }

    async fn start_with(tamper: Option<&str>, port: u16, host: &str) -> Idp {
        use std::io::BufRead;
        let dir = tokio::task::spawn_blocking(idp_dir).await.unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/oidc/provider.mjs"
        );
        let mut cmd = std::process::Command::new("node");
        cmd.arg(script)
            .env("OIDC_PROVIDER_DIR", dir)
            .env("OIDC_CLIENT_ID", IDP_CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", IDP_CLIENT_SECRET)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_HOST", host)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(t) = tamper {
            cmd.env("OIDC_TAMPER", t);
        }
        let mut child = cmd
            .spawn()
            .expect("start node (tests/fixtures/oidc/provider.mjs)");
        let stdout = child.stdout.take().unwrap();
        // The first line names the issuer; the rest is drained for the provider's life (a
        // closed pipe would kill node at its next notice).
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), rx)
            .await
            .expect("the OpenID provider did not start within 60 s")
            .unwrap_or_default();
        let issuer = line
            .strip_prefix("issuer ")
            .unwrap_or_else(|| panic!("provider.mjs printed {line:?}"))
            .trim()
            .to_string();
        Idp { issuer, child }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
