#![no_main]
//! Tool-signature matching on arbitrary headers, paths and bodies with the shipped signatures.
use std::sync::OnceLock;

static CONFIG: OnceLock<aigate::config::Config> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cfg = CONFIG.get_or_init(|| aigate::config::load(None).expect("the shipped config is valid"));
    // Layout: lines of "name: value" headers, a blank line, then the body; the first line is the path.
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let path = lines.next().unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n.trim().as_bytes()), http::HeaderValue::from_str(v.trim())) {
                headers.append(n, v);
            }
        }
    }
    for vendor in ["anthropic", "openai", "google", "github-copilot"] {
        let facts = aigate::identify::tools::RequestFacts { vendor, path, headers: &headers, body_prefix: body.as_bytes() };
        let _ = aigate::identify::identify_tool(&cfg.tools, &facts);
    }
    let _ = aigate::identify::model::from_body(body.as_bytes());
    let _ = aigate::identify::model::from_path(path);
});
