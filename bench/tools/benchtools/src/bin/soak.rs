//! Soak client (bench/soak.sh): N client connections held open through an HTTP CONNECT proxy for
//! the whole run, with mixed traffic on them at a moderate total rate.
//!
//! Every slot opens one kept connection (CONNECT api.vendor.test:443, TLS trusting only the MITM
//! CA, HTTP/1.1 keep-alive) and holds it until the end. Operations, by weight (`--mix`), add up to
//! `--rps` in all: each slot runs the requests on its kept connection (json, blocked, sse, drawn by
//! weight) at its share of that rate, and its tunnels on a schedule of their own, each at intervals
//! of 0.5x..1.5x its mean (so a kept connection never waits long: with 10,000 connections at 2,000/s
//! at most ~8 s + one SSE stream, well under aigate's 30 s header_timeout for idle keep-alive):
//!   json     POST /v1/messages, `Anthropic/Python` user agent     -> 200, 1024-byte body, monitor
//!   blocked  POST /v1/messages, `claude-cli/...` user agent, no workflow tag -> 403, block
//!   sse      POST /v1/messages?stream=1&n=N&ms=M (Anthropic/Python) -> 200, N events, clean end
//!   tunnel   a fresh connection: CONNECT tunnel.vendor.test:443 (not a vendor: tunnelled byte for
//!            byte), TLS to the upstream itself (upstream CA; the name the upstream presents is
//!            checked as api.vendor.test), one JSON request with `connection: close`, read to EOF
//! A broken kept connection is counted and re-opened. At the end (`--duration`, counted from the
//! start of the ramp) no new operation starts, operations in flight finish, then every connection
//! is closed and a JSON summary is printed on stdout. Progress lines go to stderr.
//!
//!   soak --proxy 127.0.0.1:8110 --conns 10000 --ramp 500 --duration 1800 --rps 2000
//!        --mix json=60,blocked=20,sse=10,tunnel=10 --mitm-ca ca/mitm-ca.pem
//!        --upstream-ca ca/upstream-ca.pem --body-file conf/request.json
//!        [--host api.vendor.test] [--tunnel-host tunnel.vendor.test] [--sse-n 20] [--sse-ms 100]
//!        [--ids FILE] [--progress 10] [--drain 120]
//! `--ids FILE`: one line per response head received: kind, x-aigate-request-id, status, answered
//! (1 = the whole response arrived), to match against the audit log by id.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_rustls::rustls::{self, pki_types::ServerName};

const KINDS: [&str; 4] = ["json", "blocked", "sse", "tunnel"];
const JSON: usize = 0;
const BLOCKED: usize = 1;
const SSE: usize = 2;
const TUNNEL: usize = 3;
const SDK_UA: &str = "Anthropic/Python 0.69.0";
const CLAUDE_UA: &str = "claude-cli/2.1.12 (external, cli)";

struct Cfg {
    proxy: String,
    host: String,
    tunnel_host: String,
    conns: usize,
    ramp: f64,
    duration: Duration,
    period: Duration,
    weights: [u64; 4],
    sse_n: u64,
    sse_ms: u64,
    body: Bytes,
    tls_kept: Arc<rustls::ClientConfig>,
    tls_tunnel: Arc<rustls::ClientConfig>,
    req_timeout: Duration,
}

#[derive(Default)]
struct KindStats { sent: AtomicU64, answered: AtomicU64, ok: AtomicU64 }

#[derive(Default)]
struct Stats {
    kinds: [KindStats; 4],
    /// "kind: error" -> count (transport errors: not answered; check errors: answered, not ok)
    errors: Mutex<BTreeMap<String, u64>>,
    /// kept connections: opening failures by error, and closes found before use
    conn_errors: Mutex<BTreeMap<String, u64>>,
    opened: AtomicU64,
    live: AtomicI64,
    peak_live: AtomicI64,
    lost: AtomicU64,
    finished: AtomicU64,
    tunnels_open: AtomicI64,
}

impl Stats {
    fn err(&self, kind: usize, e: &str) {
        *self.errors.lock().unwrap().entry(format!("{}: {}", KINDS[kind], e)).or_default() += 1;
    }
    fn conn_err(&self, e: &str) { *self.conn_errors.lock().unwrap().entry(e.to_string()).or_default() += 1; }
    fn answered(&self) -> [u64; 4] { std::array::from_fn(|i| self.kinds[i].answered.load(Relaxed)) }
}

/// SplitMix64: enough randomness for think times and the mix, no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f64(&mut self) -> f64 { (self.next() >> 11) as f64 / (1u64 << 53) as f64 }
    fn pick(&mut self, w: &[u64; 4]) -> usize {
        let total: u64 = w.iter().sum();
        let mut r = self.next() % total;
        for (i, &x) in w.iter().enumerate() {
            if r < x { return i; }
            r -= x;
        }
        3
    }
}

/// Accepts the upstream's certificate for a fixed name (the tunnel's SNI differs from the name on
/// the upstream's only certificate); chain, signatures and validity are still checked.
#[derive(Debug)]
struct FixedName { inner: Arc<rustls::client::WebPkiServerVerifier>, name: ServerName<'static> }
impl rustls::client::danger::ServerCertVerifier for FixedName {
    fn verify_server_cert(&self, ee: &rustls::pki_types::CertificateDer<'_>, im: &[rustls::pki_types::CertificateDer<'_>],
        _name: &ServerName<'_>, ocsp: &[u8], now: rustls::pki_types::UnixTime) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(ee, im, &self.name, ocsp, now)
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &rustls::pki_types::CertificateDer<'_>, d: &rustls::DigitallySignedStruct)
        -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> { self.inner.verify_tls12_signature(m, c, d) }
    fn verify_tls13_signature(&self, m: &[u8], c: &rustls::pki_types::CertificateDer<'_>, d: &rustls::DigitallySignedStruct)
        -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> { self.inner.verify_tls13_signature(m, c, d) }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> { self.inner.supported_verify_schemes() }
}

fn roots(path: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for c in rustls_pemfile::certs(&mut pem.as_slice()) { roots.add(c.expect("pem")).expect("add root"); }
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> { Arc::new(rustls::crypto::ring::default_provider()) }

fn unix_now() -> f64 { SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() }

type Ids = Option<mpsc::UnboundedSender<(usize, String, u16, bool)>>;

fn id_of(h: &hyper::HeaderMap) -> String {
    h.get("x-aigate-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string()
}

/// TCP to the proxy, CONNECT host:443, and the proxy's answer head: (status, request id).
async fn connect_proxy(proxy: &str, host: &str) -> Result<(TcpStream, String), String> {
    let mut s = TcpStream::connect(proxy).await.map_err(|e| format!("tcp: {}", e.kind()))?;
    let _ = s.set_nodelay(true);
    let req = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("connect-write: {}", e.kind()))?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut tmp).await.map_err(|e| format!("connect-read: {}", e.kind()))?;
        if n == 0 { return Err("connect: eof".into()); }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > 16384 { return Err("connect: header too long".into()); }
    }
    let head = String::from_utf8_lossy(&buf);
    let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
    if status != "200" { return Err(format!("connect: status {status}")); }
    let id = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("x-aigate-request-id").then(|| v.trim().to_string())
    }).unwrap_or_else(|| "-".into());
    Ok((s, id))
}

/// A kept connection: its request sender, the task driving it (its result: how it ended), when
/// its last response ended and what that was.
struct Kept { sender: SendRequest<Full<Bytes>>, task: tokio::task::JoinHandle<Result<(), String>>, last: Instant, last_kind: &'static str }

async fn open_kept(cfg: &Cfg) -> Result<Kept, String> {
    let (s, _) = connect_proxy(&cfg.proxy, &cfg.host).await?;
    let sn = ServerName::try_from(cfg.host.clone()).map_err(|e| format!("sni: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(cfg.tls_kept.clone()).connect(sn, s).await.map_err(|e| format!("tls: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("h1: {e}"))?;
    let task = tokio::spawn(async move { conn.await.map_err(|e| e.to_string()) });
    Ok(Kept { sender, task, last: Instant::now(), last_kind: "none" })
}

/// Why an operation failed, and whether the kept connection is unusable afterwards.
struct Fail { what: String, answered: bool, conn_dead: bool }
fn fail(what: impl Into<String>, answered: bool, conn_dead: bool) -> Fail { Fail { what: what.into(), answered, conn_dead } }

/// One request on the kept connection. Ok: answered as expected.
async fn on_kept(cfg: &Cfg, k: &mut Kept, kind: usize, ids: &Ids) -> Result<(), Fail> {
    let path = if kind == SSE { format!("/v1/messages?stream=1&n={}&ms={}", cfg.sse_n, cfg.sse_ms) } else { "/v1/messages".into() };
    let mut b = Request::post(path.as_str())
        .header("host", cfg.host.as_str())
        .header("content-type", "application/json")
        .header("x-api-key", "sk-bench-0000000000000000")
        .header("anthropic-version", "2023-06-01");
    b = if kind == BLOCKED {
        b.header("user-agent", CLAUDE_UA).header("x-app", "cli")
    } else {
        b.header("user-agent", SDK_UA).header("x-stainless-lang", "python")
    };
    if kind == SSE { b = b.header("accept", "text/event-stream"); }
    let req = b.body(Full::new(cfg.body.clone())).unwrap();
    let resp = k.sender.send_request(req).await.map_err(|e| fail(format!("req: {e}"), false, true))?;
    let status = resp.status().as_u16();
    let id = id_of(resp.headers());
    let decision = resp.headers().get("x-aigate-decision").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let mut body = resp.into_body();
    let (mut size, mut events, mut prev_last) = (0usize, 0u64, 0u8);
    while let Some(fr) = body.frame().await {
        let fr = match fr {
            Ok(f) => f,
            Err(e) => {
                if let Some(tx) = ids { let _ = tx.send((kind, id.clone(), status, false)); }
                return Err(fail(format!("body: {e}"), false, true));
            }
        };
        if let Some(d) = fr.data_ref() {
            if d.is_empty() { continue; }
            size += d.len();
            let mut n = d.windows(2).filter(|w| w == b"\n\n").count() as u64;
            if prev_last == b'\n' && d[0] == b'\n' { n += 1; }
            prev_last = d[d.len() - 1];
            events += n;
        }
    }
    if let Some(tx) = ids { let _ = tx.send((kind, id, status, true)); }
    let (want_status, want_decision) = if kind == BLOCKED { (403, "block") } else { (200, "monitor") };
    if status != want_status { return Err(fail(format!("status {status}"), true, false)); }
    if decision != want_decision { return Err(fail(format!("decision {decision}"), true, false)); }
    match kind {
        JSON if size != 1024 => Err(fail(format!("body {size} bytes"), true, false)),
        SSE if events != cfg.sse_n => Err(fail(format!("{events} events"), true, false)),
        _ => Ok(()),
    }
}

/// Body of a whole HTTP/1.1 response read to EOF: (status, body).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no response head")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    let rest = &raw[end + 4..];
    let header = |name: &str| head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    });
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let (mut body, mut at) = (Vec::new(), 0usize);
        loop {
            let nl = rest[at..].windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")? + at;
            let hex = String::from_utf8_lossy(&rest[at..nl]);
            let n = usize::from_str_radix(hex.split(';').next().unwrap_or("").trim(), 16).map_err(|_| "bad chunk size")?;
            at = nl + 2;
            if n == 0 { return Ok((status, body)); }
            if rest.len() < at + n + 2 { return Err("truncated chunk".into()); }
            body.extend_from_slice(&rest[at..at + n]);
            at += n + 2;
        }
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if rest.len() < n => Err(format!("truncated body {} of {n}", rest.len())),
        Some(n) => Ok((status, rest[..n].to_vec())),
        None => Ok((status, rest.to_vec())),
    }
}

/// One tunnel: its own connection, one request, read to the upstream's close, then closed.
async fn tunnel_once(cfg: &Cfg, ids: &Ids) -> Result<(), Fail> {
    let (s, id) = connect_proxy(&cfg.proxy, &cfg.tunnel_host).await.map_err(|e| fail(e, false, false))?;
    let sn = ServerName::try_from(cfg.tunnel_host.clone()).map_err(|e| fail(format!("sni: {e}"), false, false))?;
    let mut tls = tokio_rustls::TlsConnector::from(cfg.tls_tunnel.clone()).connect(sn, s).await
        .map_err(|e| fail(format!("tls: {e}"), false, false))?;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nx-api-key: sk-bench-0000000000000000\r\n\
         anthropic-version: 2023-06-01\r\nuser-agent: {SDK_UA}\r\nx-stainless-lang: python\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        cfg.tunnel_host, cfg.body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(&cfg.body);
    tls.write_all(&out).await.map_err(|e| fail(format!("write: {}", e.kind()), false, false))?;
    let mut raw = Vec::with_capacity(2048);
    let read = tls.read_to_end(&mut raw).await;
    // Close our side only after the upstream closed (its close_notify + FIN came through the tunnel).
    drop(tls);
    let done = parse_response(&raw);
    if let Some(tx) = ids {
        let status = done.as_ref().map(|r| r.0).unwrap_or(0);
        let _ = tx.send((TUNNEL, id, status, read.is_ok() && done.is_ok()));
    }
    if let Err(e) = read { return Err(fail(format!("read: {e}"), false, false)); }
    let (status, body) = done.map_err(|e| fail(e, false, false))?;
    if status != 200 { return Err(fail(format!("status {status}"), true, false)); }
    if body.len() != 1024 { return Err(fail(format!("body {} bytes", body.len()), true, false)); }
    Ok(())
}

/// Resolves once `rx` holds true (at once if it already does).
async fn until_set(rx: &mut watch::Receiver<bool>) { let _ = rx.wait_for(|v| *v).await.map(|_| ()); }

async fn slot(n: usize, cfg: Arc<Cfg>, st: Arc<Stats>, mut stop: watch::Receiver<bool>, mut close: watch::Receiver<bool>, ids: Ids) {
    let mut rng = Rng(0x5eed_0000_0000 ^ (n as u64).wrapping_mul(0x9E37_79B9));
    let mut kept: Option<Kept> = None;
    // Mean intervals of this slot's two schedules (a weight of 0: practically never).
    let total: u64 = cfg.weights.iter().sum();
    let kept_w = [cfg.weights[JSON], cfg.weights[BLOCKED], cfg.weights[SSE], 0];
    let kept_total: u64 = kept_w.iter().sum();
    let never = Duration::from_secs(10_000_000);
    let share = |w: u64| if w == 0 { never } else { cfg.period.mul_f64(total as f64 / w as f64) };
    let (p_kept, p_tunnel) = (share(kept_total), share(cfg.weights[TUNNEL]));
    let mut next_kept = Instant::now() + p_kept.mul_f64(rng.f64());
    let mut next_tunnel = Instant::now() + p_tunnel.mul_f64(rng.f64());
    let drop_kept = |kept: &mut Option<Kept>, st: &Stats| {
        if let Some(k) = kept.take() { k.task.abort(); st.live.fetch_sub(1, Relaxed); }
    };
    loop {
        if *stop.borrow() { break; }
        if kept.is_none() {
            match timeout(Duration::from_secs(30), open_kept(&cfg)).await {
                Ok(Ok(k)) => {
                    kept = Some(k);
                    st.opened.fetch_add(1, Relaxed);
                    let v = st.live.fetch_add(1, Relaxed) + 1;
                    st.peak_live.fetch_max(v, Relaxed);
                }
                r => {
                    let e = match r { Ok(Err(e)) => e, _ => "open timed out".into() };
                    st.conn_err(&format!("open: {e}"));
                    tokio::select! { _ = sleep(Duration::from_secs(1)) => {}, _ = until_set(&mut stop) => {} }
                    continue;
                }
            }
        }
        let tunnel_due = next_tunnel < next_kept;
        tokio::select! { _ = sleep_until(next_kept.min(next_tunnel)) => {}, _ = until_set(&mut stop) => break }
        // Closed while we were thinking: count it (how it ended, how long it had been idle, what
        // its last operation was), re-open, then go on at once.
        if !tunnel_due && kept.as_ref().is_some_and(|k| k.sender.is_closed() || k.task.is_finished()) {
            let k = kept.as_mut().unwrap();
            let idle = k.last.elapsed().as_secs_f64();
            let how = if k.task.is_finished() {
                match (&mut k.task).await { Ok(Ok(())) => "ended cleanly (peer closed)".to_string(), Ok(Err(e)) => e, Err(e) => format!("task: {e}") }
            } else { "sender closed, task running".to_string() };
            let (last_kind, bucket) = (k.last_kind, if idle < 10.0 { "<10s" } else if idle < 30.0 { "10-30s" } else { ">=30s" });
            st.conn_err(&format!("kept connection closed while idle: {how}; idle {bucket}; last op {last_kind}"));
            eprintln!("kept connection of slot {n} closed while idle: {how}; idle {idle:.1}s; last op {last_kind}; t={:.1}", unix_now());
            st.lost.fetch_add(1, Relaxed);
            drop_kept(&mut kept, &st);
            continue;
        }
        let kind = if tunnel_due {
            next_tunnel = Instant::now() + p_tunnel.mul_f64(0.5 + rng.f64());
            TUNNEL
        } else {
            next_kept = Instant::now() + p_kept.mul_f64(0.5 + rng.f64());
            rng.pick(&kept_w)
        };
        st.kinds[kind].sent.fetch_add(1, Relaxed);
        let limit = if kind == SSE { cfg.req_timeout + Duration::from_millis(cfg.sse_n * cfg.sse_ms) } else { cfg.req_timeout };
        let r = if kind == TUNNEL {
            st.tunnels_open.fetch_add(1, Relaxed);
            let r = timeout(limit, tunnel_once(&cfg, &ids)).await;
            st.tunnels_open.fetch_sub(1, Relaxed);
            r
        } else {
            let k = kept.as_mut().unwrap();
            let r = timeout(limit, on_kept(&cfg, k, kind, &ids)).await;
            (k.last, k.last_kind) = (Instant::now(), KINDS[kind]);
            r
        };
        match r {
            Ok(Ok(())) => {
                st.kinds[kind].answered.fetch_add(1, Relaxed);
                st.kinds[kind].ok.fetch_add(1, Relaxed);
            }
            Ok(Err(f)) => {
                st.err(kind, &f.what);
                if f.answered { st.kinds[kind].answered.fetch_add(1, Relaxed); }
                if f.conn_dead { drop_kept(&mut kept, &st); }
            }
            Err(_) => {
                st.err(kind, "timeout");
                if kind != TUNNEL { drop_kept(&mut kept, &st); }
            }
        }
    }
    st.finished.fetch_add(1, Relaxed);
    until_set(&mut close).await;
    if let Some(k) = kept {
        drop(k.sender); // hyper closes the connection: TLS close_notify, then FIN
        let _ = timeout(Duration::from_secs(10), k.task).await;
        st.live.fetch_sub(1, Relaxed);
    }
}

fn snapshot(st: &Stats) -> serde_json::Value {
    let kinds: serde_json::Map<String, serde_json::Value> = KINDS.iter().enumerate().map(|(i, k)| {
        let s = &st.kinds[i];
        (k.to_string(), serde_json::json!({"sent": s.sent.load(Relaxed), "answered": s.answered.load(Relaxed), "ok": s.ok.load(Relaxed)}))
    }).collect();
    serde_json::Value::Object(kinds)
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut a: HashMap<String, String> = HashMap::new();
    let mut i = 1;
    while i + 1 < argv.len() { a.insert(argv[i].trim_start_matches("--").to_string(), argv[i + 1].clone()); i += 2; }
    if i < argv.len() || a.is_empty() {
        eprintln!("usage: see the head of bench/tools/benchtools/src/bin/soak.rs");
        std::process::exit(2);
    }
    let get = |k: &str, d: &str| a.get(k).cloned().unwrap_or_else(|| d.to_string());
    let conns: usize = get("conns", "1000").parse().expect("--conns");
    let rps: f64 = get("rps", "2000").parse().expect("--rps");
    let mut weights = [60u64, 20, 10, 10];
    for part in get("mix", "json=60,blocked=20,sse=10,tunnel=10").split(',') {
        let (k, v) = part.split_once('=').expect("--mix kind=weight,...");
        let idx = KINDS.iter().position(|x| *x == k).unwrap_or_else(|| panic!("--mix: unknown kind {k}"));
        weights[idx] = v.parse().expect("--mix weight");
    }
    assert!(weights.iter().sum::<u64>() > 0, "--mix: all weights 0");
    let host = get("host", "api.vendor.test");

    let mut kept_tls = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap()
        .with_root_certificates(roots(&get("mitm-ca", "ca/mitm-ca.pem"))).with_no_client_auth();
    kept_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(&get("upstream-ca", "ca/upstream-ca.pem"))), provider())
        .build().expect("verifier");
    let mut tunnel_tls = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap()
        .dangerous().with_custom_certificate_verifier(Arc::new(FixedName { inner: verifier, name: ServerName::try_from(host.clone()).unwrap() }))
        .with_no_client_auth();
    tunnel_tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let cfg = Arc::new(Cfg {
        proxy: get("proxy", "127.0.0.1:8110"),
        tunnel_host: get("tunnel-host", "tunnel.vendor.test"),
        host,
        conns,
        ramp: get("ramp", "500").parse().expect("--ramp"),
        duration: Duration::from_secs_f64(get("duration", "120").parse().expect("--duration")),
        period: Duration::from_secs_f64(conns as f64 / rps),
        weights,
        sse_n: get("sse-n", "20").parse().expect("--sse-n"),
        sse_ms: get("sse-ms", "100").parse().expect("--sse-ms"),
        body: match a.get("body-file") { Some(p) => Bytes::from(std::fs::read(p).expect("body-file")), None => Bytes::from_static(b"{\"model\":\"bench-model-2026\",\"max_tokens\":16}") },
        tls_kept: Arc::new(kept_tls),
        tls_tunnel: Arc::new(tunnel_tls),
        req_timeout: Duration::from_secs(60),
    });
    let progress = Duration::from_secs_f64(get("progress", "10").parse().expect("--progress"));
    let drain = Duration::from_secs_f64(get("drain", "120").parse().expect("--drain"));

    // Request ids, one line per response head, written by one task.
    let (ids, ids_task) = match a.get("ids") {
        Some(path) => {
            let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String, u16, bool)>();
            let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("--ids"));
            let h = tokio::task::spawn_blocking(move || {
                while let Some((k, id, status, done)) = rx.blocking_recv() {
                    let _ = writeln!(f, "{}\t{id}\t{status}\t{}", KINDS[k], u8::from(done));
                }
                let _ = f.flush();
            });
            (Some(tx), Some(h))
        }
        None => (None, None),
    };

    let st = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (close_tx, close_rx) = watch::channel(false);
    let t0 = Instant::now();
    let start_unix = unix_now();
    let deadline = t0 + cfg.duration;
    let ramp_done_unix = Arc::new(Mutex::new(None::<f64>));
    let min_after_ramp = Arc::new(AtomicI64::new(i64::MAX));

    // Progress: every second a sample (for the minimum held after the ramp), a line every `progress`.
    let mon = {
        let (st, cfg, rd, mn) = (st.clone(), cfg.clone(), ramp_done_unix.clone(), min_after_ramp.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), st.answered().iter().sum::<u64>());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut since = Duration::ZERO;
            loop {
                tick.tick().await;
                let live = st.live.load(Relaxed);
                if rd.lock().unwrap().is_some() && Instant::now() < deadline { mn.fetch_min(live, Relaxed); }
                since += Duration::from_secs(1);
                if since < progress { continue; }
                since = Duration::ZERO;
                let now = Instant::now();
                let total: u64 = st.answered().iter().sum();
                let rate = (total - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, total);
                let errors: u64 = st.errors.lock().unwrap().values().sum();
                eprintln!("{}", serde_json::json!({
                    "t": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0, "unix": unix_now(), "live": live,
                    "peak": st.peak_live.load(Relaxed), "tunnels_open": st.tunnels_open.load(Relaxed),
                    "answered_per_s": rate.round(), "kinds": snapshot(&st), "errors": errors,
                    "conn_errors": st.conn_errors.lock().unwrap().values().sum::<u64>(), "target": cfg.conns,
                }));
            }
        })
    };

    // Ramp: one slot (one kept connection) every 1/ramp s.
    let mut handles = Vec::with_capacity(conns);
    for k in 0..conns {
        let at = t0 + Duration::from_secs_f64(k as f64 / cfg.ramp);
        if at >= deadline { break; }
        sleep_until(at).await;
        handles.push(tokio::spawn(slot(k, cfg.clone(), st.clone(), stop_rx.clone(), close_rx.clone(), ids.clone())));
    }
    // The ramp is done when every slot has had its chance to connect.
    let ramp_end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < ramp_end && (st.live.load(Relaxed) as usize) < handles.len() && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    let ramp_s = t0.elapsed().as_secs_f64();
    *ramp_done_unix.lock().unwrap() = Some(unix_now());
    eprintln!("ramp done: {} slots, {} connections live after {:.1}s", handles.len(), st.live.load(Relaxed), ramp_s);

    sleep_until(deadline).await;
    let stop_unix = unix_now();
    let live_at_stop = st.live.load(Relaxed);
    let _ = stop_tx.send(true);
    eprintln!("stop: {live_at_stop} connections live; letting operations in flight finish");
    let drain_end = Instant::now() + drain;
    while (st.finished.load(Relaxed) as usize) < handles.len() && Instant::now() < drain_end {
        sleep(Duration::from_millis(100)).await;
    }
    let unfinished = handles.len() - st.finished.load(Relaxed) as usize;
    let live_before_close = st.live.load(Relaxed);
    let _ = close_tx.send(true);
    for h in handles { let _ = timeout(Duration::from_secs(30), h).await; }
    mon.abort();
    drop(ids);
    if let Some(h) = ids_task { let _ = h.await; }
    let end_unix = unix_now();

    let answered: u64 = st.answered().iter().sum();
    let min_live = match min_after_ramp.load(Relaxed) { i64::MAX => serde_json::Value::Null, v => v.into() };
    let ramp_done = *ramp_done_unix.lock().unwrap();
    let elapsed = stop_unix - start_unix;
    let mut out = serde_json::json!({
        "conns": conns, "ramp_per_s": cfg.ramp, "duration_s": cfg.duration.as_secs_f64(), "rps_target": rps,
        "mix": KINDS.iter().zip(cfg.weights).map(|(k, w)| (k.to_string(), w)).collect::<BTreeMap<_, _>>(),
        "sse": {"n": cfg.sse_n, "ms": cfg.sse_ms},
        "start_unix": start_unix, "ramp_done_unix": ramp_done, "ramp_s": ramp_s,
        "stop_unix": stop_unix, "end_unix": end_unix,
        "slots": conns.min((cfg.duration.as_secs_f64() * cfg.ramp).ceil() as usize),
        "live_peak": st.peak_live.load(Relaxed),
        "live_min_after_ramp": min_live,
        "live_at_stop": live_at_stop, "live_before_close": live_before_close, "live_after_close": st.live.load(Relaxed),
        "unfinished_at_close": unfinished,
        "connections_opened": st.opened.load(Relaxed), "connections_lost": st.lost.load(Relaxed),
        "kinds": snapshot(&st), "answered": answered, "answered_per_s": answered as f64 / elapsed,
        "errors": st.errors.lock().unwrap().clone(), "conn_errors": st.conn_errors.lock().unwrap().clone(),
    });
    out["errors_total"] = serde_json::json!(st.errors.lock().unwrap().values().sum::<u64>());
    println!("{out}");
}
