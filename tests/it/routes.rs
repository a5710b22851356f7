//! Every route to a model (issue 14): the managed clouds and relays are intercepted, the rival
//! tools are recognised on each of them, and a deny answers in the shape of the request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use crate::common::{TestEnv, by_id};

const CLAUDE_UA: &str = "claude-cli/2.1.197 (external, sdk-cli)";
const CODEX_UA: &str = "codex_exec/0.171.0 (Ubuntu 24.4.0; x86_64) xterm-256color";

/// A call as Claude Code makes it on any route: its user agent, `x-app`, its session header
/// and beta flag.
fn claude_code(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    rb.header("user-agent", CLAUDE_UA)
        .header("x-app", "cli")
        .header(
            "x-claude-code-session-id",
            "5b0c6a7e-0000-4000-8000-000000000000",
        )
        .header("anthropic-beta", "claude-code-20250219,oauth-2025-04-20")
}

fn codex(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    rb.header("user-agent", CODEX_UA)
        .header("originator", "codex_exec")
}

/// Sends `rb`, expects aigate's deny (400 for Codex, its `deny_status`; 403 for the others) and
/// returns (body, the request's audit record).
async fn denied(
    env: &TestEnv,
    rb: reqwest::RequestBuilder,
) -> (serde_json::Value, serde_json::Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    assert!(status == 403 || status == 400, "{status}");
    assert_eq!(resp.headers()["x-aigate-decision"], "block");
    let id = crate::common::request_id(resp.headers());
    let body: serde_json::Value = resp.json().await.unwrap();
    let records = env.audit().await;
    let r = by_id(&records, &id).clone();
    let want = if r["tool"] == "codex-cli" { 400 } else { 403 };
    assert_eq!(status, want, "{r}");
    assert_eq!(r["status"], want);
    (body, r)
}

fn anthropic_message(body: &serde_json::Value) -> &str {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    // Claude Code's code for a policy refusal, on Bedrock and Vertex as on Anthropic's API.
    assert_eq!(
        body["error"]["details"]["error_code"], "dlp_request_denied",
        "{body}"
    );
    body["error"]["message"].as_str().unwrap()
}

fn openai_message(body: &serde_json::Value) -> &str {
    assert_eq!(body["error"]["type"], "permission_denied", "{body}");
    assert_eq!(body["error"]["code"], "aigate_blocked", "{body}");
    body["error"]["message"].as_str().unwrap()
}

/// Claude Code with CLAUDE_CODE_USE_BEDROCK=1: InvokeModel on the regional runtime host.
#[tokio::test]
async fn claude_code_on_bedrock_is_claude_code_and_blocked_in_anthropic_shape() {
    let env = TestEnv::builder().start().await;
    let client = env.client(false);
    let rb = claude_code(client.post(
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream",
    ))
    .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
    .json(&json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []}));
    let (body, r) = denied(&env, rb).await;
    let msg = anthropic_message(&body);
    assert!(
        msg.contains("aigate blocked this call to Amazon Bedrock: Claude Code"),
        "{msg}"
    );
    assert_eq!(r["vendor"], "aws-bedrock");
    assert_eq!(r["tool"], "claude-code");
    assert_eq!(r["tool_confidence"], "high");
    assert_eq!(r["model"], "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
    assert_eq!(r["reason"], "rule_matched");
    assert!(
        env.vendor.requests().is_empty(),
        "the vendor must not see it"
    );
}

/// Claude Code with CLAUDE_CODE_USE_VERTEX=1: rawPredict on an Anthropic publisher model.
#[tokio::test]
async fn claude_code_on_vertex_is_blocked_in_anthropic_shape_and_gemini_paths_in_google_shape() {
    let env = TestEnv::builder().start().await;
    let client = env.client(false);
    let rb = claude_code(client.post(
        "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict",
    ))
    .json(&json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": []}));
    let (body, r) = denied(&env, rb).await;
    assert!(anthropic_message(&body).contains("Google Vertex AI"));
    assert_eq!(r["vendor"], "google-vertex");
    assert_eq!(r["tool"], "claude-code");
    assert_eq!(r["model"], "claude-sonnet-4-5@20250929");

    // The global endpoint, a Gemini model: Google's own error shape.
    let rb = codex(client.post(
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent",
    ))
    .json(&json!({"contents": []}));
    let (body, r) = denied(&env, rb).await;
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED", "{body}");
    assert_eq!(body["error"]["code"], 400, "Codex's deny_status");
    assert_eq!(r["tool"], "codex-cli");
    assert_eq!(r["vendor"], "google-vertex");
    assert!(env.vendor.requests().is_empty());
}

/// Foundry serves Anthropic and OpenAI APIs on one resource host; so do the relays.
#[tokio::test]
async fn multi_api_hosts_answer_a_deny_in_the_shape_of_the_request() {
    let env = TestEnv::builder().start().await;
    let client = env.client(false);
    let body = json!({"model": "m", "max_tokens": 5, "messages": []});

    let (b, r) = denied(
        &env,
        claude_code(client.post("https://my-res.services.ai.azure.com/anthropic/v1/messages"))
            .json(&body),
    )
    .await;
    anthropic_message(&b);
    assert_eq!(
        (r["vendor"].as_str(), r["tool"].as_str()),
        (Some("azure-ai"), Some("claude-code"))
    );

    let (b, r) = denied(
        &env,
        codex(client.post("https://my-res.services.ai.azure.com/openai/v1/responses")).json(&body),
    )
    .await;
    openai_message(&b);
    assert_eq!(
        (r["vendor"].as_str(), r["tool"].as_str()),
        (Some("azure-ai"), Some("codex-cli"))
    );

    let (b, r) = denied(
        &env,
        claude_code(client.post("https://openrouter.ai/api/v1/messages")).json(&body),
    )
    .await;
    assert!(anthropic_message(&b).contains("OpenRouter"));
    assert_eq!(
        (r["vendor"].as_str(), r["tool"].as_str()),
        (Some("openrouter"), Some("claude-code"))
    );

    let (b, r) = denied(
        &env,
        codex(client.post("https://openrouter.ai/api/v1/chat/completions")).json(&body),
    )
    .await;
    openai_message(&b);
    assert_eq!(r["tool"], "codex-cli");
    assert!(env.vendor.requests().is_empty());
}

/// A call no rule blocks still goes through on these routes, path and signature untouched.
#[tokio::test]
async fn other_calls_on_a_route_are_forwarded_and_recorded_with_the_route() {
    let env = TestEnv::builder().start().await;
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke";
    let resp = env
        .client(true)
        .post(format!(
            "https://bedrock-runtime.us-east-1.amazonaws.com{path}"
        ))
        .header("user-agent", "Boto3/1.40.0 md/Botocore#1.40.0")
        .json(&json!({"anthropic_version": "bedrock-2023-05-31", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = crate::common::request_id(resp.headers());
    let seen = env.vendor.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, path);
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(r["vendor"], "aws-bedrock");
    assert_eq!(r["tool"], "unknown");
    assert_eq!(r["host"], "bedrock-runtime.us-east-1.amazonaws.com");
}

/// Domain fronting on a shared front end (issue 14): CONNECT to a Google host that is not
/// intercepted, then TLS without SNI (the front end would route by the hidden `Host`), or with
/// the SNI of an intercepted host. Both are refused; a tunnel that names its target still works.
#[tokio::test]
async fn fronting_through_a_shared_front_end_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::builder().start().await;

    // Named honestly: tunnelled, and the vendor's own certificate reaches the client.
    let mut ok = env
        .tls_to_vendor_through("www.googleapis.com:443", "www.googleapis.com")
        .await
        .unwrap();
    ok.write_all(
        b"GET /discovery/v1/apis HTTP/1.1\r\nHost: www.googleapis.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    ok.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    drop(ok);
    let r = &env.audit_n(1).await[0];
    assert_eq!(
        (r["action"].as_str(), r["reason"].as_str()),
        (Some("allow"), Some("not_vendor")),
        "{r}"
    );

    // No SNI: refused before a byte reaches the front end.
    let no_sni = env
        .tls_to_vendor_through_with(
            "www.googleapis.com:443",
            "generativelanguage.googleapis.com",
            false,
        )
        .await;
    assert!(
        no_sni.is_err(),
        "a ClientHello without SNI must not reach a shared front end"
    );
    let records = env.audit_n(2).await;
    let r = &records[1];
    assert_eq!(r["action"], "block", "{r}");
    assert_eq!(r["reason"], "sni_mismatch");
    assert_eq!(r["error"], "sni_missing");
    assert_eq!(r["host"], "www.googleapis.com");

    // SNI of the intercepted host inside a tunnel to its neighbour.
    let other = env
        .tls_to_vendor_through(
            "www.googleapis.com:443",
            "generativelanguage.googleapis.com",
        )
        .await;
    assert!(other.is_err());
    let records = env.audit_n(3).await;
    assert_eq!(records[2]["reason"], "sni_mismatch");
    assert_eq!(
        records[2]["error"],
        "sni_mismatch: generativelanguage.googleapis.com"
    );
    assert_eq!(
        env.vendor.requests().len(),
        1,
        "only the honest tunnel reached it"
    );
}

/// Away from a shared front end, a ClientHello without SNI is not refused (some clients
/// connect by address-like names); the rule is scoped to `fronts`.
#[tokio::test]
async fn no_sni_elsewhere_is_tunnelled() {
    let env = TestEnv::builder().start().await;
    // The echo server answers the ClientHello with itself, so the handshake fails on the client,
    // but the gateway let it through.
    let _ = env
        .tls_to_vendor_through_with("echo.internal.test:7000", "echo.internal.test", false)
        .await;
    let r = &env.audit_n(1).await[0];
    assert_eq!(r["reason"], "not_vendor", "{r}");
    assert_ne!(r["action"], "block", "{r}");
}

/// Signs a Bedrock request with botocore's SigV4 (the signer the AWS CLI and boto3 use), the
/// workflow tag among the signed headers as the AWS SDKs sign it.
const SIGN_PY: &str = r#"
import json, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, body = sys.argv[1], sys.argv[2]
req = AWSRequest(method="POST", url=url, data=body.encode(), headers={
    "content-type": "application/json", "x-aigate-workflow": "docs", "accept": "application/json"})
SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "bedrock", "us-east-1").add_auth(req)
print(json.dumps(dict(req.headers.items())))
"#;

/// Verifies what the vendor received as AWS would: botocore recomputes the signature over the
/// signed headers, path and body as they arrived, at the request's own timestamp.
const VERIFY_PY: &str = r#"
import base64, json, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
d = json.load(sys.stdin)
h = d["headers"]
auth = h["authorization"]
signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
sig = auth.split("Signature=")[1].strip()
missing = [k for k in signed if k != "host" and k not in h]
req = AWSRequest(method=d["method"], url="https://" + h.get("host", d["host"]) + d["path"],
                 data=base64.b64decode(d["body"]), headers={k: h[k] for k in signed if k in h and k != "host"})
req.context["timestamp"] = h["x-amz-date"]
a = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "bedrock", "us-east-1")
cr = a.canonical_request(req)
ok = a.signature(a.string_to_sign(req, cr), req) == sig
print(json.dumps({"ok": ok and not missing, "missing": missing, "signed": signed}))
"#;

/// SigV4 round trip (issue 14): a signed Bedrock call whose signature covers the workflow tag
/// still verifies after the gateway, because a signed header is never removed; the record says
/// the tag was kept. Without the rule the gateway strips the tag and Bedrock would answer 403.
#[tokio::test]
async fn a_sigv4_signed_bedrock_call_still_verifies_after_the_gateway() {
    use base64::Engine as _;
    let env = TestEnv::builder().start().await;
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke";
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[]}"#;
    let signed = std::process::Command::new("python3")
        .args(["-c", SIGN_PY, &format!("https://{host}{path}"), body])
        .output()
        .expect("python3 with botocore is needed for the SigV4 test");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let headers: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&signed.stdout).unwrap();
    assert!(
        headers["Authorization"].contains("x-aigate-workflow"),
        "{headers:?}"
    );

    for h1_only in [true, false] {
        let mut rb = env
            .client(h1_only)
            .post(format!("https://{host}{path}"))
            .header("user-agent", "Boto3/1.40.0 md/Botocore#1.40.0")
            .body(body);
        for (k, v) in &headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let id = crate::common::request_id(resp.headers());

        let seen = env.vendor.requests().pop().unwrap();
        let received: std::collections::BTreeMap<&str, &str> = seen
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        let input = json!({
            "method": seen.method,
            "path": seen.path,
            "host": host,
            "headers": received,
            "body": base64::engine::general_purpose::STANDARD.encode(&seen.body),
        });
        let mut verify = std::process::Command::new("python3")
            .args(["-c", VERIFY_PY])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            verify
                .stdin
                .take()
                .unwrap()
                .write_all(input.to_string().as_bytes())
                .unwrap();
        }
        let out = verify.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verdict["ok"], true, "h1_only={h1_only}: {verdict} {input}");

        let records = env.audit().await;
        let r = by_id(&records, &id);
        assert_eq!(r["workflow"], "docs");
        assert_eq!(r["signed_headers_kept"], json!(["x-aigate-workflow"]));
    }
}

/// An unsigned request still loses the workflow tag before the vendor.
#[tokio::test]
async fn an_unsigned_workflow_tag_is_still_removed() {
    let env = TestEnv::builder().start().await;
    let resp = env
        .client(false)
        .post("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke")
        .header("x-aigate-workflow", "docs")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = env.vendor.requests();
    assert!(seen[0].headers.get("x-aigate-workflow").is_none());
    let r = &env.audit_n(1).await[0];
    assert!(r.get("signed_headers_kept").is_none(), "{r}");
}

/// GitHub Copilot's CLI shows nothing of a 403's body ("Access denied by policy settings" and a
/// link to GitHub's settings), but prints the message of a 400: the shipped `github-copilot`
/// vendor denies with `deny_status = 400`, in OpenAI's shape, and the record says so.
#[tokio::test]
async fn a_blocked_copilot_call_is_answered_with_the_vendors_deny_status() {
    let env = TestEnv::builder()
        .append(
            "\n[[rules]]\nname = \"no-copilot\"\naction = \"block\"\ntools = [\"copilot-cli\"]\n",
        )
        .start()
        .await;
    let resp = env
        .client(false)
        .get("https://api.githubcopilot.com/models")
        .header(
            "user-agent",
            "copilot/1.0.102 (client/github/cli linux v24.11.1) term/unknown",
        )
        .header("copilot-integration-id", "copilot-developer-cli")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-aigate-decision"], "block");
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let id = crate::common::request_id(resp.headers());
    let body: serde_json::Value = resp.json().await.unwrap();
    let msg = openai_message(&body);
    assert!(
        msg.contains("aigate blocked this call to GitHub Copilot"),
        "{msg}"
    );
    let records = env.audit().await;
    let r = by_id(&records, &id);
    assert_eq!(r["tool"], "copilot-cli");
    assert_eq!(r["status"], 400);
    assert!(env.vendor.requests().is_empty());
}
