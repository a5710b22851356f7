//! Which request headers the client signed (AWS SigV4 and the like).
//!
//! Bedrock clients sign their requests, headers included: the AWS SDKs sign every header but a
//! short list (user agent, trace id, hop-by-hop), so Claude Code's `ANTHROPIC_CUSTOM_HEADERS`
//! workflow tag ends up in `SignedHeaders`. Removing or changing a signed header breaks the
//! signature and Bedrock answers 403 (issue 14). The gateway asks this module before it removes
//! one of its own headers, and leaves a signed one in place. PURE.

use http::{HeaderMap, HeaderName, header};

/// The header names a SigV4 signature covers: `SignedHeaders=` in `Authorization`
/// (`AWS4-HMAC-SHA256 Credential=…, SignedHeaders=host;x-amz-date, Signature=…`), or
/// `X-Amz-SignedHeaders` in the query of a presigned URL. Lower case, as SigV4 writes them.
pub fn signed_headers(headers: &HeaderMap, query: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for v in headers.get_all(header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else { continue };
        let Some((scheme, params)) = v.trim().split_once(' ') else {
            continue;
        };
        if !scheme.to_ascii_uppercase().starts_with("AWS4-") {
            continue;
        }
        for param in params.split(',') {
            if let Some((k, list)) = param.trim().split_once('=')
                && k.trim().eq_ignore_ascii_case("signedheaders")
            {
                out.extend(list.split(';').map(|h| h.trim().to_ascii_lowercase()));
            }
        }
    }
    for pair in query.unwrap_or("").split('&') {
        if let Some((k, list)) = pair.split_once('=')
            && k.eq_ignore_ascii_case("x-amz-signedheaders")
        {
            // `;` may arrive as %3B.
            let list = list.replace("%3B", ";").replace("%3b", ";");
            out.extend(list.split(';').map(|h| h.trim().to_ascii_lowercase()));
        }
    }
    out.retain(|h| !h.is_empty());
    out
}

/// Whether `name` is among the signed headers of this request.
pub fn is_signed(headers: &HeaderMap, query: Option<&str>, name: &HeaderName) -> bool {
    signed_headers(headers, query)
        .iter()
        .any(|h| h == name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn sigv4_signed_headers_from_authorization_and_query() {
        let wf = HeaderName::from_static("x-aigate-workflow");
        let h = auth(
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;X-Aigate-Workflow;x-amz-date, Signature=abc",
        );
        assert_eq!(
            signed_headers(&h, None),
            ["content-type", "host", "x-aigate-workflow", "x-amz-date"]
        );
        assert!(is_signed(&h, None, &wf));
        let unsigned = auth(
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        );
        assert!(!is_signed(&unsigned, None, &wf));
        // Other schemes sign nothing we know of.
        assert!(!is_signed(
            &auth("Bearer SignedHeaders=x-aigate-workflow"),
            None,
            &wf
        ));
        assert!(signed_headers(&HeaderMap::new(), None).is_empty());
        // Presigned URL.
        assert!(is_signed(
            &HeaderMap::new(),
            Some("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host%3Bx-aigate-workflow"),
            &wf
        ));
    }
}
