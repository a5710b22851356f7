//! The page layout every console page shares: header, navigation, the signed-in user and
//! sign-out, then the page's own body. No inline script or style (the CSP forbids them): the
//! stylesheet and htmx come from `assets.rs`, and htmx is configured from a `<meta>` tag.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::{Signed, assets, csrf_field};

/// The sections in the navigation: (label, path). Each owner builds its page at its path.
const NAV: &[(&str, &str)] = &[
    ("Overview", "/"),
    ("Audit", "/audit"),
    ("Requests", "/requests"),
    ("Exemptions", "/exemptions"),
    ("People", "/people"),
    ("Provenance", "/provenance"),
];

/// htmx without `eval` (hx-on, js: expressions) or injected `<style>`: both would need CSP
/// exceptions.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            meta name="referrer" content="no-referrer";
            title { (title) " · aigate" }
            link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
            link rel="stylesheet" href=(assets::url("console.css"));
            script src=(assets::url("htmx.min.js")) defer {}
        }
    }
}

/// Which navigation entry the page at `path` belongs to.
fn section(path: &str) -> &'static str {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    NAV.iter()
        .filter(|(_, p)| *p != "/")
        .find(|(_, p)| path == *p || path.starts_with(&format!("{p}/")))
        .map_or(if path == "/" { "/" } else { "" }, |(_, p)| p)
}

/// A page for a signed-in person, status 200.
pub fn page(title: &str, signed: &Signed, body: Markup) -> Response {
    page_with_status(StatusCode::OK, title, signed, body)
}

/// A page for a signed-in person with another status: a form shown again with its error
/// (400), a refusal (403).
pub fn page_with_status(
    status: StatusCode,
    title: &str,
    signed: &Signed,
    body: Markup,
) -> Response {
    let current = section(&signed.path);
    let roles: Vec<&str> = signed
        .caller
        .roles
        .iter()
        .map(|r| super::role_name(*r))
        .collect();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "aigate" }
                    nav aria-label="Console" {
                        ul {
                            @for (label, path) in NAV {
                                li {
                                    @if *path == current {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div class="who" {
                        span class="user" { (signed.caller.user) }
                        @if !roles.is_empty() {
                            span class="roles" { (roles.join(", ")) }
                        }
                        form method="post" action="/signout" {
                            (csrf_field(signed))
                            button type="submit" class="link" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// A page for someone not signed in (sign-in, a used link, a rate limit).
pub fn bare_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body class="bare" {
                header class="top" {
                    span class="brand" { "aigate" }
                }
                main id="main" { (body) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::section;

    #[test]
    fn the_navigation_marks_the_section() {
        assert_eq!(section("/"), "/");
        assert_eq!(section("/exemptions?show=all"), "/exemptions");
        assert_eq!(section("/audit/0190-abc"), "/audit");
        assert_eq!(section("/r/abc"), "");
        assert_eq!(section("/auditx"), "");
        assert_eq!(section("/provenance"), "/provenance");
    }
}
