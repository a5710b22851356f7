//! Property tests for the parsers that face hostile input: whatever the bytes, they answer
//! (Ok or a clear Err) and never panic, and what they accept is stable.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use aigate::audit::chain::{self, ChainHead, GENESIS};
use aigate::audit::{AuditRecord, Kind};
use aigate::host::normalise;
use aigate::identify::identify_tool;
use aigate::identify::normalise as rn;
use aigate::identify::tools::RequestFacts;
use aigate::proxy::connect::parse_target;

fn shipped() -> aigate::config::Config {
    aigate::config::load(None).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn host_normalisation_is_total_and_idempotent(raw in "\\PC{0,80}") {
        if let Ok(host) = normalise(&raw) {
            let again = normalise(&host.to_string()).unwrap();
            prop_assert_eq!(again, host);
        }
    }

    #[test]
    fn host_spellings_agree(name in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){1,3}") {
        let upper = name.to_uppercase();
        let dotted = format!("{name}.");
        // Either all spellings are the same host, or all are refused (a bad punycode label).
        prop_assert_eq!(normalise(&upper).ok(), normalise(&name).ok());
        prop_assert_eq!(normalise(&dotted).ok(), normalise(&name).ok());
    }

    #[test]
    fn connect_targets_round_trip(raw in "\\PC{0,80}") {
        if let Ok(t) = parse_target(&raw) {
            let again = parse_target(&format!("{}:{}", t.host, t.port)).unwrap();
            prop_assert_eq!(again, t);
        }
    }

    #[test]
    fn config_validation_never_panics(text in "\\PC{0,400}") {
        let _ = aigate::config::load_str(&text, "fuzz", Path::new("."));
    }

    #[test]
    fn config_validation_never_panics_on_toml_shapes(
        key in "[a-z_]{1,12}",
        value in prop_oneof!["\\PC{0,20}".prop_map(|s| format!("{s:?}")), any::<i64>().prop_map(|n| n.to_string()), Just("[]".to_string()), Just("true".to_string())],
        section in prop_oneof![Just("gateway"), Just("ca"), Just("upstream"), Just("audit"), Just("identity"), Just("policy"), Just("admin"), Just("log"), Just("[rules]"), Just("[vendors]"), Just("[tools]")],
    ) {
        let text = format!("[{section}]\n{key} = {value}\n");
        let _ = aigate::config::load_str(&text, "fuzz", Path::new("."));
    }

    #[test]
    fn tool_matching_never_panics(
        ua in "\\PC{0,60}",
        headers in proptest::collection::vec(("[a-z-]{1,20}", "[ -~]{0,40}"), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        path in "/\\PC{0,40}",
    ) {
        let cfg = shipped();
        let mut map = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&ua) {
            map.insert(http::header::USER_AGENT, v);
        }
        for (n, v) in &headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n.as_bytes()), http::HeaderValue::from_str(v)) {
                map.append(n, v);
            }
        }
        for vendor in ["anthropic", "openai", "google", "github-copilot"] {
            let m = identify_tool(&cfg.tools, &RequestFacts { vendor, path: &path, headers: &map, body_prefix: &body, body_later: &[] });
            prop_assert!(m.evidence.len() <= 8);
        }
    }

    #[test]
    fn the_request_normaliser_is_total(bytes in prop::collection::vec(any::<u8>(), 0..2000), text in "\\PC{0,120}") {
        for enc in ["gzip", "br", "zstd", "deflate", "identity", "gzip, br", "x-unknown"] {
            if let Ok(out) = rn::decode_body(enc, &bytes, 4096) {
                prop_assert!(out.len() <= 4096.max(bytes.len()), "{enc}: {}", out.len());
            }
        }
        let _ = rn::fold_json_escapes(&bytes);
        let p = rn::path(&text);
        prop_assert!(p.starts_with('/') && !p.contains("//"), "{p}");
        if !text.contains('%') {
            prop_assert_eq!(rn::path(&p), p.clone(), "resolving twice changes nothing");
        }
        if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
            let _ = rn::header_text(&v);
            let _ = rn::header_matches(&v, &regex::Regex::new("^cli$").unwrap());
        }
    }

    #[test]
    fn a_compressed_body_cut_anywhere_decodes_to_a_prefix(
        body in "\\PC{0,3000}",
        cut in any::<prop::sample::Index>(),
    ) {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body.as_bytes()).unwrap();
        let gz = e.finish().unwrap();
        let zs = zstd::encode_all(body.as_bytes(), 3).unwrap();
        for (enc, full) in [("gzip", gz), ("zstd", zs)] {
            let at = cut.index(full.len() + 1);
            let out = rn::decode_body(enc, &full[..at], 1 << 20);
            if let Ok(out) = out {
                prop_assert!(body.as_bytes().starts_with(&out), "{enc} cut at {at}");
            }
            let whole = rn::decode_body(enc, &full, 1 << 20).unwrap();
            prop_assert_eq!(whole.as_ref(), body.as_bytes());
        }
    }

    #[test]
    fn audit_lines_never_panic_the_verifier(line in "\\PC{0,200}") {
        let _ = chain::check_line(&ChainHead::default(), &line);
        let _ = chain::verify(format!("{line}\n").as_bytes());
    }

    #[test]
    fn any_change_to_a_sealed_line_is_caught(user in "[a-z]{1,12}", pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let rec = AuditRecord::new("r1".into(), Kind::Request, "127.0.0.1:1".into(), Arc::from(user.as_str()), "api.anthropic.com".into(), 443);
        let mut out = Vec::new();
        chain::seal(&rec, 1, GENESIS, &mut out).unwrap();
        out.pop(); // the newline
        let i = pos.index(out.len());
        prop_assume!(out[i] != byte);
        let mut tampered = out.clone();
        tampered[i] = byte;
        let text = String::from_utf8_lossy(&tampered).to_string();
        prop_assert!(chain::check_line(&ChainHead::default(), &text).is_err(), "undetected change at {} in {}", i, text);
        let original = String::from_utf8(out).unwrap();
        prop_assert!(chain::check_line(&ChainHead::default(), &original).is_ok());
    }
}
