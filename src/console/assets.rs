//! Static files, compiled into the binary: the stylesheet, the vendored htmx and the icon.
//! Nothing is fetched from another origin (the CSP allows only `'self'`), and there is no
//! build step: the files are served as they are in `src/console/assets/`.
//!
//! Their URLs carry a hash of their bytes (`?v=…`), so they can be cached for a year: a new
//! binary with a changed file links a new URL.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// htmx 2.0.11, `dist/htmx.min.js` from `npm pack htmx.org@2.0.11` (BSD-2-Clause,
/// `assets/htmx.LICENSE`). Its SHA-256 is pinned by a test: replace the file and the pin
/// together.
pub const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");

/// (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    ("htmx.min.js", "text/javascript; charset=utf-8", HTMX),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// Each file's version: the first 12 hex digits of its SHA-256.
static VERSIONS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, _, bytes)| (*name, hex::encode(&Sha256::digest(bytes)[..6])))
        .collect()
});

/// The URL of an asset, with its version.
pub fn url(name: &str) -> String {
    let version = VERSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, v)| v.as_str());
    format!("/console/assets/{name}?v={version}")
}

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let mut resp = (StatusCode::OK, *bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sha256sum dist/htmx.min.js` of htmx.org 2.0.11 as npm serves it.
    const HTMX_SHA256: &str = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717";

    #[test]
    fn vendored_htmx_is_the_pinned_release() {
        assert_eq!(hex::encode(Sha256::digest(HTMX)), HTMX_SHA256);
    }

    #[test]
    fn urls_carry_the_content_version() {
        let u = url("console.css");
        assert!(u.starts_with("/console/assets/console.css?v="), "{u}");
        assert_eq!(u.len(), "/console/assets/console.css?v=".len() + 12);
    }
}
