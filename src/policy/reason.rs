//! Stable reason codes. They appear in the audit log (`reason`), in the deny response
//! (`x-aigate-reason` and the message) and in metrics labels. Renaming one is a breaking change of
//! the audit schema: document it in docs/audit-schema.md.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A policy rule matched; the record's `rule` names it.
    RuleMatched,
    /// No rule matched; the default action applied.
    DefaultAction,
    /// An exemptable block yielded to an active exemption; the record's `exemption` names it.
    Exempted,
    /// The target is not a vendor host: tunnelled untouched.
    NotVendor,
    /// The target serves a model API listed in the AI host catalog, which aigate does not
    /// inspect: tunnelled and flagged (`action = monitor`), or refused (`action = block`). The
    /// record's `ai_host` names the catalog group.
    AiHost,
    /// CONNECT to a raw IP address on a web port that is not listed in config.
    IpLiteral,
    /// CONNECT to a vendor host on a port other than 443.
    VendorPort,
    /// The TLS SNI differs from the CONNECT host (domain fronting).
    SniMismatch,
    /// A `Host` / `:authority` differs from the CONNECT host (fronting, h2 coalescing).
    HostMismatch,
    /// A plain-HTTP request to a vendor host: it would bypass interception.
    PlainHttpVendor,
    /// The decision was revised while the body streamed: a body signal after the peek
    /// (`gateway.body_peek_bytes`) identified a tool that the policy blocks. The upstream
    /// request was cancelled before its last byte; `rule` names the rule that blocks it.
    LateBodySignal,
    /// An upgrade other than WebSocket (`h2c`, …) that would leave HTTP semantics.
    UpgradeRefused,
    /// The CONNECT target or request could not be parsed.
    BadRequest,
    /// The request body's `Content-Encoding` could not be undone for identification: an
    /// encoding aigate does not read, bytes that are not that encoding, or a body that expands
    /// past the decompression limit (a bomb). The record's `error` says which. Refused, because
    /// a body aigate cannot read hides its signals (issue 14).
    BodyUndecodable,
    /// The client's TLS handshake with the gateway failed on the gateway's side: it sent
    /// something that is not TLS after CONNECT, stalled past `handshake_timeout`, or no
    /// certificate could be minted. A client that ends the handshake itself is `ClientClosedTls`.
    TlsHandshake,
    /// The client ended its own TLS handshake with the gateway: it closed or reset the
    /// connection, or sent an alert (`unknown_ca`, `bad_certificate`: it does not trust the
    /// aigate CA). Recorded with `action = abandoned`: aigate refused nothing.
    ClientClosedTls,
    /// Proxy authentication was required and missing.
    ProxyAuth,
    /// A proxy credential that matches nobody; the record's `user` is the name it tried.
    ProxyAuthWrong,
    /// Too many connections, overall or from this client address.
    ConnectionLimit,
    /// The destination resolved to an internal address (loopback, link-local, private, …) that
    /// `gateway.allowed_destinations` does not open.
    DestinationDenied,
    /// The client's address is not in `gateway.allowed_clients`.
    ClientDenied,
    /// The audit log cannot be written and config says fail closed.
    AuditUnavailable,
    /// Admin API: an exemption was granted (`kind = admin`).
    ExemptionGranted,
    /// Admin API: an exemption was revoked (`kind = admin`).
    ExemptionRevoked,
    /// An engineer asked for an exemption from a deny message's link (`kind = admin`; the
    /// request whole in `admin.request`).
    ExemptionRequested,
    /// A manager, approver or admin approved a request; `exemption` names the exemption it
    /// created (whose own `exemption_granted` record comes just before).
    ExemptionRequestApproved,
    /// A request was denied, with the decider's comment in `admin.request.comment`.
    ExemptionRequestDenied,
    /// A request nobody answered within `console.request_ttl` expired.
    ExemptionRequestExpired,
    /// Admin API: a call without a valid token (401) or without the role for it (403).
    AdminDenied,
    /// Admin API: refusals of unauthenticated callers over the per-window share of records,
    /// counted and written as one summary per client ("N refusals from X between T1 and T2",
    /// `admin.refusals`).
    AdminRefusalsSummarized,
    /// Proxy port: refusals of a client nobody identified (`client_denied`, a 407, a request
    /// hyper refused, a connection over the limits) over the per-window share of records,
    /// counted and written as one summary per client (audit/refusals.rs).
    ProxyRefusalsSummarized,
    /// Console: someone signed in (`kind = admin`, `user` who, `admin.via` how: `token`, `link`
    /// for the one-time link, `oidc`).
    ConsoleSignedIn,
    /// Console: a sign-in was refused: an unknown token, a used or expired one-time link, too
    /// many attempts from the address, or a cross-site form post; `error` says which. For OIDC,
    /// `admin.check` names the check that failed (docs/console.md).
    ConsoleSigninRefused,
    /// Console: someone signed out; their session was deleted.
    ConsoleSignedOut,
    /// The request claimed a workflow tag that is not in the catalog (or is not a tag at all).
    /// With `unknown_workflow = "block"` it decides; otherwise it is the record's
    /// `workflow_reason` and the call is decided as `untagged`.
    WorkflowUnknown,
    /// The request claimed a catalogued tag this user (and none of their groups) may claim.
    /// Decides or explains as `WorkflowUnknown` does.
    WorkflowNotPermitted,
    /// No rule matched an unknown tool in a protected workflow: `policy.unknown_tool` applied.
    UnknownTool,
    /// A rule blocks the tool, but this call is one of the vendor's start-up side calls
    /// (`[[vendors]] side_calls`: read-only, GET or HEAD, an exact path): forwarded with
    /// `action = monitor`, the rule in `rule`, so that the tool reaches its model call and
    /// prints that call's deny (issue 16).
    SideCall,
    /// On start the audit log ended in a torn line (the gateway died mid-write); the line was
    /// cut off and is kept in this record (`kind = admin`, `admin.torn_line`).
    AuditRecovered,
    /// A signed checkpoint of the audit chain (`kind = admin`, `admin.checkpoint`).
    AuditCheckpoint,
    /// The first record of an audit file after rotation, or after the log was found moved or
    /// deleted while the gateway ran (`kind = admin`, `admin.file`).
    AuditFileStart,
    /// On start, the log was missing or shorter than its last checkpoint: `admin.gap` names
    /// the missing range.
    ChainGap,
    /// Admin API or console: findings of `aigate provenance scan --record` were queued for
    /// review (`kind = admin`, `admin.findings`: the ids added and those seen again).
    ProvenanceFindingsRecorded,
    /// A reviewer confirmed a provenance finding: the file or record must be removed or
    /// rewritten (`kind = admin`, `admin.finding` the finding as decided).
    ProvenanceFindingConfirmed,
    /// A reviewer cleared a provenance finding as a false positive, with the reason in
    /// `admin.finding.reason`.
    ProvenanceFindingCleared,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RuleMatched => "rule_matched",
            Reason::DefaultAction => "default_action",
            Reason::Exempted => "exempted",
            Reason::NotVendor => "not_vendor",
            Reason::AiHost => "ai_host",
            Reason::IpLiteral => "ip_literal",
            Reason::VendorPort => "vendor_port",
            Reason::SniMismatch => "sni_mismatch",
            Reason::HostMismatch => "host_mismatch",
            Reason::PlainHttpVendor => "plain_http_vendor",
            Reason::LateBodySignal => "late_body_signal",
            Reason::UpgradeRefused => "upgrade_refused",
            Reason::BadRequest => "bad_request",
            Reason::BodyUndecodable => "body_undecodable",
            Reason::TlsHandshake => "tls_handshake",
            Reason::ClientClosedTls => "client_closed_tls",
            Reason::ProxyAuth => "proxy_auth",
            Reason::ProxyAuthWrong => "proxy_auth_wrong",
            Reason::ConnectionLimit => "connection_limit",
            Reason::DestinationDenied => "destination_denied",
            Reason::ClientDenied => "client_denied",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::ExemptionGranted => "exemption_granted",
            Reason::ExemptionRevoked => "exemption_revoked",
            Reason::ExemptionRequested => "exemption_requested",
            Reason::ExemptionRequestApproved => "exemption_request_approved",
            Reason::ExemptionRequestDenied => "exemption_request_denied",
            Reason::ExemptionRequestExpired => "exemption_request_expired",
            Reason::AdminDenied => "admin_denied",
            Reason::AdminRefusalsSummarized => "admin_refusals_summarized",
            Reason::ProxyRefusalsSummarized => "proxy_refusals_summarized",
            Reason::ConsoleSignedIn => "console_signed_in",
            Reason::ConsoleSigninRefused => "console_signin_refused",
            Reason::ConsoleSignedOut => "console_signed_out",
            Reason::AuditRecovered => "audit_recovered",
            Reason::AuditCheckpoint => "audit_checkpoint",
            Reason::AuditFileStart => "audit_file_start",
            Reason::ChainGap => "chain_gap",
            Reason::ProvenanceFindingsRecorded => "provenance_findings_recorded",
            Reason::ProvenanceFindingConfirmed => "provenance_finding_confirmed",
            Reason::ProvenanceFindingCleared => "provenance_finding_cleared",
            Reason::WorkflowUnknown => "workflow_unknown",
            Reason::WorkflowNotPermitted => "workflow_not_permitted",
            Reason::UnknownTool => "unknown_tool",
            Reason::SideCall => "side_call",
        }
    }

    /// One sentence for the engineer who was blocked.
    pub fn explanation(self) -> &'static str {
        match self {
            Reason::RuleMatched => "a policy rule matched this call",
            Reason::DefaultAction => "no policy rule matched and the default action applies",
            Reason::Exempted => "an exemption covers this call",
            Reason::NotVendor => "the host is not an AI vendor host",
            Reason::AiHost => {
                "the host serves an AI model API that the gateway cannot inspect (AI host catalog)"
            }
            Reason::IpLiteral => "connections to raw IP addresses on web ports are not allowed",
            Reason::VendorPort => "AI vendor hosts may only be reached on port 443",
            Reason::SniMismatch => "the TLS server name differs from the CONNECT host",
            Reason::HostMismatch => "the request's host differs from the host of its connection",
            Reason::PlainHttpVendor => "AI vendor hosts may only be reached over HTTPS",
            Reason::LateBodySignal => {
                "a blocked tool's signal appeared later in the request body; the request was stopped before the vendor received all of it"
            }
            Reason::UpgradeRefused => "this protocol upgrade is not allowed through the gateway",
            Reason::BadRequest => "the request could not be parsed",
            Reason::BodyUndecodable => {
                "the request body's Content-Encoding is unsupported, corrupt or expands past the gateway's decompression limit; send it uncompressed or as gzip, br, zstd or deflate"
            }
            Reason::TlsHandshake => {
                "the TLS handshake with the gateway failed; check that the client trusts the aigate CA"
            }
            Reason::ClientClosedTls => {
                "the client ended its TLS handshake with the gateway; if it sent unknown_ca or bad_certificate, it does not trust the aigate CA"
            }
            Reason::ProxyAuth => "proxy authentication is required",
            Reason::ProxyAuthWrong => "the proxy credentials were not accepted",
            Reason::ConnectionLimit => "too many connections",
            Reason::DestinationDenied => {
                "the destination is an internal address the gateway does not reach for clients"
            }
            Reason::ClientDenied => "this client address may not use the gateway",
            Reason::AuditUnavailable => {
                "the audit log cannot be written, so calls are refused until it recovers"
            }
            Reason::ExemptionGranted => "an exemption was granted",
            Reason::ExemptionRevoked => "an exemption was revoked",
            Reason::ExemptionRequested => "an exemption was requested",
            Reason::ExemptionRequestApproved => "an exemption request was approved",
            Reason::ExemptionRequestDenied => "an exemption request was denied",
            Reason::ExemptionRequestExpired => "an exemption request expired unanswered",
            Reason::AdminDenied => "the admin API refused the caller",
            Reason::AdminRefusalsSummarized => {
                "the admin API refused this client more often than it gets records of its own; counted here"
            }
            Reason::ProxyRefusalsSummarized => {
                "the proxy refused this unidentified client more often than it gets records of its own; counted here"
            }
            Reason::ConsoleSignedIn => "someone signed in to the console",
            Reason::ConsoleSigninRefused => "a console sign-in was refused",
            Reason::ConsoleSignedOut => "someone signed out of the console",
            Reason::AuditRecovered => "the audit log was recovered from a torn write",
            Reason::AuditCheckpoint => "a signed checkpoint of the audit log",
            Reason::AuditFileStart => "a new audit log file was started",
            Reason::ChainGap => "records are missing from the audit log",
            Reason::WorkflowUnknown => {
                "the workflow tag is not one the workflow catalog lists; check its spelling, or ask IT which tags exist"
            }
            Reason::WorkflowNotPermitted => {
                "you may not claim this workflow tag; IT's workflow catalog says who may"
            }
            Reason::UnknownTool => {
                "no signature recognises this client, and the policy decides unknown tools in protected workflows"
            }
            Reason::ProvenanceFindingsRecorded => "provenance scan findings were queued for review",
            Reason::ProvenanceFindingConfirmed => {
                "a reviewer confirmed a provenance finding: the file or record must be removed or rewritten"
            }
            Reason::ProvenanceFindingCleared => {
                "a reviewer cleared a provenance finding as a false positive"
            }
            Reason::SideCall => {
                "a start-up side call of a blocked tool was let through so that the tool reaches its model call, which is refused"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
