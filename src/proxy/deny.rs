//! Every response the gateway makes up itself, in one place: policy denials in the vendor's own
//! error shape (so the engineer's CLI prints our message instead of a network error), and
//! upstream failures mapped to 502/504.
//!
//! Denials are 403, never 429 or 5xx: the SDKs retry those, and a retry loop hides the message.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::config::ErrorFormat;
use crate::identify::workflow::Untrusted;
use crate::policy::{Decision, Reason, Rule};
use crate::tls::upstream::ProxyBody;

// Names built once: inserting by `&str` would allocate a copy of the name on every response.
pub const DECISION_HEADER: HeaderName = HeaderName::from_static("x-aigate-decision");
pub const REASON_HEADER: HeaderName = HeaderName::from_static("x-aigate-reason");
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-aigate-request-id");

/// Why forwarding failed; decides 502 vs 504 and the audit `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No TCP connection (refused, unreachable, DNS).
    Connect,
    /// The vendor's certificate or handshake failed.
    Tls,
    /// No response headers in time.
    Timeout,
    /// The connection broke while sending or receiving.
    Reset,
}

impl UpstreamFailure {
    pub fn code(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "upstream_connect",
            UpstreamFailure::Tls => "upstream_tls",
            UpstreamFailure::Timeout => "upstream_timeout",
            UpstreamFailure::Reset => "upstream_reset",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "aigate could not connect to the vendor",
            UpstreamFailure::Tls => "aigate could not verify the vendor's TLS certificate",
            UpstreamFailure::Timeout => "the vendor did not answer in time",
            UpstreamFailure::Reset => "the connection to the vendor broke",
        }
    }
}

/// What the deny message needs besides the decision.
pub struct DenyContext<'a> {
    pub request_id: &'a str,
    pub tool_name: &'a str,
    pub tool: &'a str,
    pub workflow: &'a str,
    pub user: &'a str,
    pub vendor_name: &'a str,
    pub exemption_url: &'a str,
    /// The rule that decided, so the message says what it is about (a tool, a vendor, a
    /// workflow, people), not what some other rule would be about.
    pub rule: Option<&'a Rule>,
    /// The workflow tag the client claimed and why it did not count, so an engineer whose
    /// `x-aigate-workflow` was ignored learns that, not only that `untagged` is blocked.
    pub claim: Option<(&'a str, Untrusted)>,
    /// The request link (`{console}/r/{id}`) and the state of an open request for the same
    /// user, tool and workflow (`requests::deny_extras`); empty when `exemption_url` is set.
    pub link: Option<&'a str>,
    pub request_status: Option<&'a str>,
}

/// The sentence an engineer reads in their terminal.
pub fn message(decision: &Decision, ctx: &DenyContext<'_>) -> String {
    let mut m = format!("aigate blocked this call to {}: ", ctx.vendor_name);
    match (decision.reason, &decision.rule) {
        (Reason::RuleMatched | Reason::LateBodySignal, Some(rule)) => {
            m.push_str(&forbidden(ctx));
            m.push_str(&format!(" (rule \"{rule}\""));
            if let Some(d) = &decision.description {
                m.push_str(": ");
                m.push_str(d);
            }
            m.push_str(").");
        }
        (Reason::DefaultAction, _) => m.push_str(&format!(
            "no policy rule allows {} in workflow \"{}\" (default action: block).",
            ctx.tool_name, ctx.workflow
        )),
        (reason, _) => {
            m.push_str(reason.explanation());
            m.push('.');
        }
    }
    if let Some((tag, why)) = ctx.claim {
        m.push_str(&format!(
            " Your workflow tag \"{tag}\" was not accepted: {}.",
            match why {
                Untrusted::Unknown =>
                    "it is not in the workflow catalog (`aigate explain` lists the catalog)",
                Untrusted::NotPermitted =>
                    "you are not among the people who may claim it; ask IT to add you",
            }
        ));
    }
    // The reason code stays out of the sentence (it is in `x-aigate-reason` and the record):
    // an engineer reads words, a reviewer greps codes.
    // The link is followed by a space, never by punctuation a terminal would take into it,
    // and the whole message is one line (clients print it as it is).
    if decision.exemptable {
        if !ctx.exemption_url.is_empty() {
            m.push_str(&format!(
                " To request a time-boxed exemption, ask your manager via {}",
                fill_url(ctx.exemption_url, decision, ctx)
            ));
        } else if let Some(link) = ctx.link {
            if ctx.user == crate::identify::user::ANONYMOUS {
                m.push_str(&format!(
                    " aigate does not know who you are, so nothing can be exempted for you; {link} says what IT must set up."
                ));
            } else {
                m.push_str(&format!(
                    " To request a time-boxed exemption, open {link} in a browser."
                ));
            }
        } else {
            m.push_str(" To use it anyway, ask your manager for a time-boxed exemption and quote the request id.");
        }
        if let Some(status) = ctx.request_status {
            m.push(' ');
            m.push_str(status);
        }
    } else if matches!(
        decision.reason,
        Reason::RuleMatched | Reason::LateBodySignal
    ) {
        m.push_str(" This rule allows no exemptions; contact IT if you believe this is wrong.");
    }
    m.push_str(&format!(" Request id: {}.", ctx.request_id));
    m
}

/// What the deciding rule forbids, from the conditions it actually has: the tool when it names
/// tools, the vendor's calls when it names only vendors, then the model, workflow and people
/// conditions it adds. A rule on a whole vendor never talks about a workflow.
fn forbidden(ctx: &DenyContext<'_>) -> String {
    let Some(rule) = ctx.rule else {
        return "a policy rule does not allow this call".to_string();
    };
    let mut m = if rule.tools.is_some() {
        format!("{} is not allowed", ctx.tool_name)
    } else if rule.vendors.is_some() {
        format!("calls to {} are not allowed", ctx.vendor_name)
    } else {
        "this call is not allowed".to_string()
    };
    if rule.models.is_some() {
        m.push_str(" with this model");
    }
    if rule.workflows.is_some() {
        m.push_str(&format!(" in workflow \"{}\"", ctx.workflow));
    }
    if rule.users.is_some() || rule.groups.is_some() {
        m.push_str(&format!(" for user \"{}\"", ctx.user));
    }
    m
}

fn fill_url(template: &str, decision: &Decision, ctx: &DenyContext<'_>) -> String {
    template
        .replace("{tool}", &percent_encode(ctx.tool))
        .replace("{workflow}", &percent_encode(ctx.workflow))
        .replace(
            "{rule}",
            &percent_encode(decision.rule.as_deref().unwrap_or("")),
        )
        .replace("{user}", &percent_encode(ctx.user))
        .replace("{request_id}", &percent_encode(ctx.request_id))
}

/// Percent-encode everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error shape a request's client parses, from the API the request speaks, else the vendor's
/// own. Relays, Foundry, Bedrock and Vertex serve several APIs on one host: a Claude Code call to
/// Foundry's `/anthropic/v1/messages` parses Anthropic errors, a Codex call to the same host's
/// `/openai/v1/responses` parses OpenAI's, and a message in the wrong shape is printed as an
/// opaque blob or not at all.
pub fn format_for(vendor_default: ErrorFormat, path: &str) -> ErrorFormat {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last = segments.last().copied().unwrap_or("");
    let anthropic = segments.windows(2).any(|w| w == ["v1", "messages"])
        // Bedrock InvokeModel: /model/{id}/invoke, /model/{id}/invoke-with-response-stream.
        || (segments.len() >= 3
            && segments[0] == "model"
            && matches!(last, "invoke" | "invoke-with-response-stream"))
        // Vertex AI: …/publishers/anthropic/models/{model}:rawPredict (or :streamRawPredict).
        || segments
            .windows(2)
            .any(|w| w == ["publishers", "anthropic"]);
    if anthropic {
        return ErrorFormat::Anthropic;
    }
    let openai = matches!(last, "responses" | "completions" | "embeddings")
        || segments.contains(&"responses")
        || segments.windows(2).any(|w| w == ["chat", "completions"]);
    if openai {
        return ErrorFormat::OpenAi;
    }
    vendor_default
}

/// The Anthropic API's error code for a request its organisation's policy refused, which Claude
/// Code prints as what it is rather than as a failed login.
pub const POLICY_DENIED_CODE: &str = "dlp_request_denied";

/// The body a vendor's SDK parses, carrying `message`.
pub fn vendor_body(format: ErrorFormat, status: StatusCode, message: &str) -> serde_json::Value {
    let denied = status == StatusCode::FORBIDDEN || status == StatusCode::MISDIRECTED_REQUEST;
    body(format, status, denied, message)
}

/// `denied`: aigate refused the call (whatever status the vendor's clients need to show it).
fn body(format: ErrorFormat, status: StatusCode, denied: bool, message: &str) -> serde_json::Value {
    match format {
        // Claude Code reads a 401 or 403 as a bad login ("Failed to authenticate", "Please run
        // /login") on every route (Anthropic, Bedrock, Vertex), unless the body carries the error
        // code of the Anthropic API's own organisation-policy refusal: then it prints `API Error:`
        // and our message, and does not retry (checked against the real client in
        // tests/clients/; docs/clients.md "What a blocked engineer sees").
        ErrorFormat::Anthropic if denied => json!({
            "type": "error",
            "error": {
                "type": "permission_error",
                "message": message,
                "details": { "error_code": POLICY_DENIED_CODE },
            }
        }),
        ErrorFormat::Anthropic => json!({
            "type": "error",
            "error": {
                "type": if status == StatusCode::GATEWAY_TIMEOUT { "timeout_error" } else { "api_error" },
                "message": message,
            }
        }),
        ErrorFormat::OpenAi => json!({
            "error": {
                "message": message,
                "type": if denied { "permission_denied" } else { "server_error" },
                "param": null,
                "code": if denied { "aigate_blocked" } else { "aigate_upstream_error" },
            }
        }),
        ErrorFormat::Google => json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "status": if denied { "PERMISSION_DENIED" } else if status == StatusCode::GATEWAY_TIMEOUT { "DEADLINE_EXCEEDED" } else { "UNAVAILABLE" },
            }
        }),
    }
}

pub fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    decision: &'static str,
    reason: Reason,
    request_id: &str,
) -> Response<ProxyBody> {
    let bytes = Bytes::from(body.to_string());
    let mut resp = Response::new(Full::new(bytes).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The Stainless SDKs (Anthropic, OpenAI) honour this: a policy answer is final, while an
    // upstream or audit outage may be retried.
    if status.is_client_error() {
        h.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    annotate(h, decision, reason, request_id);
    resp
}

/// Add the decision headers to any response we pass back.
pub fn annotate(h: &mut http::HeaderMap, decision: &'static str, reason: Reason, request_id: &str) {
    h.insert(DECISION_HEADER, HeaderValue::from_static(decision));
    h.insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
}

/// The status of a policy deny: the tool's `deny_status` (Codex retries a 403 five times but not a
/// 400), else its vendor's (Copilot hides a 403's body), else 403.
pub fn status_for(
    cfg: &crate::config::Config,
    tool: &str,
    vendor: &crate::config::Vendor,
) -> StatusCode {
    cfg.tools
        .iter()
        .find(|t| &*t.id == tool)
        .and_then(|t| t.deny_status)
        .unwrap_or(vendor.deny_status)
}

/// A denial of an intercepted request.
pub fn deny(
    format: ErrorFormat,
    status: StatusCode,
    decision: &Decision,
    ctx: &DenyContext<'_>,
) -> Response<ProxyBody> {
    let msg = message(decision, ctx);
    json_response(
        status,
        &body(format, status, status.is_client_error(), &msg),
        "block",
        decision.reason,
        ctx.request_id,
    )
}

/// An intercepted request whose upstream address is internal and not opened by config
/// (`proxy::dial`), in the vendor's error shape so its client shows the message.
pub fn destination_denied(
    format: ErrorFormat,
    text: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let status = StatusCode::FORBIDDEN;
    json_response(
        status,
        &vendor_body(format, status, text),
        "block",
        Reason::DestinationDenied,
        request_id,
    )
}

/// A failed forward.
pub fn upstream_failure(
    format: ErrorFormat,
    failure: UpstreamFailure,
    reason: Reason,
    request_id: &str,
) -> Response<ProxyBody> {
    let msg = format!(
        "{} ({}). Request id: {request_id}.",
        failure.describe(),
        failure.code()
    );
    let status = failure.status();
    json_response(
        status,
        &vendor_body(format, status, &msg),
        "error",
        reason,
        request_id,
    )
}

/// A call the policy allowed whose decision record could not be written by a fail-closed
/// gateway: it is not sent upstream (503: the client may retry once the log is writable).
pub fn audit_unwritten(format: Option<ErrorFormat>, request_id: &str) -> Response<ProxyBody> {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let msg = format!(
        "aigate: the audit log cannot be written, so the call was not sent to the vendor (audit_unavailable). Request id: {request_id}."
    );
    match format {
        Some(f) => json_response(
            status,
            &vendor_body(f, status, &msg),
            "block",
            Reason::AuditUnavailable,
            request_id,
        ),
        None => proxy_response(status, Reason::AuditUnavailable, request_id, &msg),
    }
}

/// A plain-text answer on the proxy leg itself (CONNECT refusals, 407, malformed requests),
/// where there is no vendor format to speak.
pub fn proxy_response(
    status: StatusCode,
    reason: Reason,
    request_id: &str,
    text: &str,
) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    annotate(
        h,
        if status.is_success() {
            "allow"
        } else {
            "block"
        },
        reason,
        request_id,
    );
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"aigate\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::Action;

    fn ctx() -> DenyContext<'static> {
        DenyContext {
            request_id: "r-1",
            tool_name: "Claude Code",
            tool: "claude-code",
            workflow: "untagged",
            user: "alice smith",
            vendor_name: "Anthropic",
            exemption_url: "https://it.example/ex?tool={tool}&rule={rule}&user={user}&req={request_id}",
            rule: None,
            claim: None,
            link: None,
            request_status: None,
        }
    }

    fn rule(tools: bool, vendors: bool, workflows: bool) -> Rule {
        let some = |on: bool, v: &str| on.then(|| vec![v.to_string()]);
        Rule {
            name: Arc::from("ban"),
            description: None,
            action: Action::Block,
            exemptable: false,
            tools: some(tools, "claude-code"),
            vendors: some(vendors, "anthropic"),
            workflows: some(workflows, "untagged"),
            users: None,
            groups: None,
            models: None,
        }
    }

    /// Issue 18: a rule that blocks a whole vendor said "not allowed in workflow "untagged"", and
    /// every message showed engineers the raw code "Reason: rule_matched".
    #[test]
    fn the_message_is_worded_from_what_decided() {
        let d = Decision {
            action: Action::Block,
            reason: Reason::RuleMatched,
            rule: Some(Arc::from("ban")),
            description: None,
            exemption: None,
            exemptable: false,
        };
        let said = |r: Rule| {
            let mut c = ctx();
            c.request_id = "r-2";
            c.rule = Some(&r);
            message(&d, &c)
        };
        assert_eq!(
            said(rule(false, true, false)),
            "aigate blocked this call to Anthropic: calls to Anthropic are not allowed (rule \"ban\"). This rule allows no exemptions; contact IT if you believe this is wrong. Request id: r-2."
        );
        assert!(said(rule(true, false, false)).starts_with(
            "aigate blocked this call to Anthropic: Claude Code is not allowed (rule \"ban\")."
        ),);
        assert!(
            said(rule(false, true, true)).starts_with(
                "aigate blocked this call to Anthropic: calls to Anthropic are not allowed in workflow \"untagged\" (rule"
            ),
        );
        let mut people = rule(false, false, false);
        people.groups = Some(vec!["contractors".into()]);
        assert!(said(people).contains(": this call is not allowed for user \"alice smith\" (rule"),);
        let refused = message(&Decision::refused(Reason::PlainHttpVendor), &ctx());
        assert_eq!(
            refused,
            "aigate blocked this call to Anthropic: AI vendor hosts may only be reached over HTTPS. Request id: r-1."
        );
        assert!(!said(rule(true, true, true)).contains("rule_matched"));
    }

    #[test]
    fn message_names_rule_reason_exemption_and_id() {
        let d = Decision {
            action: Action::Block,
            reason: Reason::RuleMatched,
            rule: Some(Arc::from("ban")),
            description: Some(Arc::from("rival tools stay out of our code")),
            exemption: None,
            exemptable: true,
        };
        let r = rule(true, false, true);
        let mut c = ctx();
        c.rule = Some(&r);
        assert_eq!(
            message(&d, &c),
            "aigate blocked this call to Anthropic: Claude Code is not allowed in workflow \"untagged\" (rule \"ban\": rival tools stay out of our code). To request a time-boxed exemption, ask your manager via https://it.example/ex?tool=claude-code&rule=ban&user=alice%20smith&req=r-1 Request id: r-1."
        );
    }

    /// Issue 16: the link to aigate's own request page, on the message's one line and followed
    /// by a space; the state of an open request after it. A company portal set explicitly wins.
    #[test]
    fn the_request_link_and_the_request_state_are_in_the_message() {
        let d = Decision {
            action: Action::Block,
            reason: Reason::RuleMatched,
            rule: Some(Arc::from("ban")),
            description: None,
            exemption: None,
            exemptable: true,
        };
        let r = rule(true, false, false);
        let mut c = ctx();
        c.rule = Some(&r);
        c.exemption_url = "";
        c.link = Some("http://127.0.0.1:9180/r/abcdefghijklmnop");
        c.request_status = Some("Your request rq-x is waiting for bob since 10:02 UTC.");
        assert_eq!(
            message(&d, &c),
            "aigate blocked this call to Anthropic: Claude Code is not allowed (rule \"ban\"). To request a time-boxed exemption, open http://127.0.0.1:9180/r/abcdefghijklmnop in a browser. Your request rq-x is waiting for bob since 10:02 UTC. Request id: r-1."
        );
        c.user = "anonymous";
        c.request_status = None;
        assert!(message(&d, &c).contains(" aigate does not know who you are, so nothing can be exempted for you; http://127.0.0.1:9180/r/abcdefghijklmnop says what IT must set up."));
        c.exemption_url = "https://it.example/ex?req={request_id}";
        assert!(
            message(&d, &c)
                .contains("ask your manager via https://it.example/ex?req=r-1 Request id")
        );
    }

    #[test]
    fn a_deny_takes_the_shape_of_the_request() {
        use ErrorFormat::{Anthropic, Google, OpenAi};
        for (default, path, want) in [
            // Relays and Foundry: one host, several APIs.
            (OpenAi, "/v1/messages", Anthropic),
            (OpenAi, "/api/v1/messages?beta=true", Anthropic),
            (OpenAi, "/anthropic/v1/messages/count_tokens", Anthropic),
            (OpenAi, "/api/v1/chat/completions", OpenAi),
            (Anthropic, "/openai/v1/responses", OpenAi),
            (Anthropic, "/v1/chat/completions", OpenAi),
            (
                Google,
                "/v1/projects/p/locations/global/endpoints/openapi/chat/completions",
                OpenAi,
            ),
            (
                Anthropic,
                "/openai/deployments/gpt-5/chat/completions?api-version=2025-01-01",
                OpenAi,
            ),
            // Bedrock InvokeModel and Mantle.
            (
                OpenAi,
                "/model/anthropic.claude-sonnet-4-5-v1%3A0/invoke",
                Anthropic,
            ),
            (
                Google,
                "/model/us.anthropic.claude-opus-4/invoke-with-response-stream",
                Anthropic,
            ),
            (Anthropic, "/v1/responses", OpenAi),
            // Vertex AI: Anthropic models, and Gemini in Google's own shape.
            (
                Google,
                "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5:streamRawPredict",
                Anthropic,
            ),
            (
                Google,
                "/v1/projects/p/locations/global/publishers/anthropic/models/count-tokens:rawPredict",
                Anthropic,
            ),
            (
                Google,
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent",
                Google,
            ),
            (
                Google,
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                Google,
            ),
            // Nothing recognisable: the vendor's own.
            (Anthropic, "/api/claude_code/settings", Anthropic),
            (OpenAi, "/backend-api/codex/models", OpenAi),
            (Google, "/", Google),
            (Google, "", Google),
            // Not fooled by lookalike segments.
            (Google, "/v1/messagesx", Google),
            (Google, "/model/invoke", Google),
        ] {
            assert_eq!(format_for(default, path), want, "{path}");
        }
    }

    #[test]
    fn vendor_shapes() {
        let a = vendor_body(ErrorFormat::Anthropic, StatusCode::FORBIDDEN, "m");
        assert_eq!(
            a,
            json!({"type":"error","error":{"type":"permission_error","message":"m","details":{"error_code":"dlp_request_denied"}}})
        );
        let o = vendor_body(ErrorFormat::OpenAi, StatusCode::FORBIDDEN, "m");
        assert_eq!(
            o,
            json!({"error":{"message":"m","type":"permission_denied","param":null,"code":"aigate_blocked"}})
        );
        let g = vendor_body(ErrorFormat::Google, StatusCode::FORBIDDEN, "m");
        assert_eq!(
            g,
            json!({"error":{"code":403,"message":"m","status":"PERMISSION_DENIED"}})
        );
    }
}
