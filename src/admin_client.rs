//! `aigate exemption …`, `aigate provenance scan` and `findings`: a small client of the admin
//! API, for people at a terminal and CI jobs.

use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::cli::CliError;

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// One runtime and one connection pool for all of a command's calls: `provenance scan` makes
/// one lookup per document, and a new connection each time would be most of its cost.
pub struct AdminClient {
    base: String,
    token: String,
    runtime: tokio::runtime::Runtime,
    client: Client<Https, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base: &str, token: String) -> Result<AdminClient, CliError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
        let tls = crate::tls::upstream::client_config(&crate::config::UpstreamConfig {
            extra_roots: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(10),
            response_timeout: std::time::Duration::from_secs(60),
            resolve: Vec::new(),
        })
        .map_err(anyhow::Error::from)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = {
            // The pool's idle timer needs the runtime entered when the client is built.
            let _entered = runtime.enter();
            Client::builder(TokioExecutor::new()).build(https)
        };
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            runtime,
            client,
        })
    }

    /// The API's address, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call; a non-2xx answer becomes an error carrying the server's message.
    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let body = body.map(|b| ("application/json", Bytes::from(b.to_string())));
        self.runtime.block_on(self.send(method, path, body))
    }

    /// A POST of a body that is not JSON (the scan's binary fingerprints); the answer is JSON.
    pub fn post_bytes(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Value, CliError> {
        let (status, value) = self.post_bytes_answer(path, content_type, body)?;
        refused_unless_success(status, value)
    }

    /// [`AdminClient::post_bytes`], with the answer's status whatever it is: the caller tells
    /// a gateway that cannot read the body (400, 415) from one that refuses the caller.
    pub fn post_bytes_answer(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Value), CliError> {
        let (status, bytes) = self.post_bytes_raw(path, content_type, body)?;
        Ok((status, value_of(&bytes)))
    }

    /// A POST of a binary body whose answer is binary too when it succeeds (the scan's
    /// `may-hold`): the status and the body's bytes, whatever they are.
    pub fn post_bytes_raw(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), CliError> {
        let body = Some((content_type, Bytes::from(body)));
        self.runtime
            .block_on(self.exchange_raw(Method::POST, path, body))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Value, CliError> {
        let (status, value) = self.exchange(method, path, body).await?;
        refused_unless_success(status, value)
    }

    /// One request and its answer (JSON, or the text as `{"error": …}`); an error only when
    /// there is no answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, Value), CliError> {
        let (status, bytes) = self.exchange_raw(method, path, body).await?;
        Ok((status, value_of(&bytes)))
    }

    async fn exchange_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let payload = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| CliError::Usage(format!("--admin {:?}: {e}", self.base)))?;
        let resp = self.client.request(req).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin API at {}: {e}; check --admin or AIGATE_ADMIN",
                self.base
            )
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// An answer's JSON, or its text as `{"error": …}`.
pub fn value_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(bytes) }))
}

/// A 2xx answer's body; any other becomes an error carrying the server's message.
pub fn refused_unless_success(status: StatusCode, value: Value) -> Result<Value, CliError> {
    if status.is_success() {
        return Ok(value);
    }
    let message = value["error"].as_str().unwrap_or("no message").to_string();
    Err(match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            CliError::Usage(format!("refused ({status}): {message}"))
        }
        _ => CliError::Runtime(anyhow::anyhow!("refused ({status}): {message}")),
    })
}

fn fmt_time(v: &Value) -> String {
    v.as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
        .map(|t: SystemTime| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "-".into())
}

fn subject(v: &Value) -> String {
    if let Some(u) = v["subject"]["user"].as_str() {
        format!("user:{u}")
    } else if let Some(g) = v["subject"]["group"].as_str() {
        format!("group:{g}")
    } else {
        "-".into()
    }
}

/// A table of exemptions, aligned, with every cell escaped by `crate::table`: a reason or a
/// ticket is text a person typed, and must not move the cursor or forge a row (issue 15).
pub fn table(items: &[Value]) -> String {
    let header: Vec<String> = [
        "ID",
        "SUBJECT",
        "TOOLS",
        "WORKFLOWS",
        "STARTS",
        "EXPIRES",
        "ACTIVE",
        "TICKET",
        "REASON",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "all".into())
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            vec![
                e["id"].as_str().unwrap_or("-").to_string(),
                subject(e),
                list(&e["tools"]),
                list(&e["workflows"]),
                fmt_time(&e["starts_at"]),
                fmt_time(&e["expires_at"]),
                if e["active"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
                e["ticket"].as_str().unwrap_or("-").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let mut out = Vec::new();
    // Writing into memory cannot fail.
    let _ = crate::table::write(&mut out, &header, &rows);
    String::from_utf8_lossy(&out).into_owned()
}
