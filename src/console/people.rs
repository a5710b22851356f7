//! `/people`: the directory as aigate sees it — who reports to whom (the chain that decides
//! who may grant), who holds which role, which admin tokens exist (never their hashes), and the
//! source-address map. Read-only: the users file and the config stay the source of truth, so
//! the page says where each part comes from.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::{Signed, page, role_name};
use crate::admin::AdminState;
use crate::admin::exemptions::READERS;
use crate::identify::user::{Directory, User};

pub async fn list(State(state): State<AdminState>, signed: Signed) -> Response {
    if let Err(refused) = signed.require(&state, READERS) {
        return refused;
    }
    let cfg = state.shared.config.load();
    let dir = &cfg.identity.directory;
    let mut users: Vec<&User> = dir.users().collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    let mut reports: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for u in &users {
        if let Some(m) = &u.manager {
            reports.entry(m.as_str()).or_default().push(&u.id);
        }
    }
    // The tops of the tree: people with no manager, or one the directory does not know.
    let tops: Vec<&str> = users
        .iter()
        .filter(|u| u.manager.as_deref().is_none_or(|m| dir.get(m).is_none()))
        .map(|u| &*u.id)
        .collect();
    let source = cfg
        .identity
        .users_file
        .as_ref()
        .map(|p| p.display().to_string());
    let body = html! {
        h1 { "People" }
        p class="muted" {
            "The directory as aigate sees it, read-only. "
            @match &source {
                Some(path) => { "It comes from " code { (path) } " (identity.users_file), reloaded when the file changes." }
                None => { "No users file is configured (identity.users_file): aigate knows no people by name." }
            }
        }
        h2 id="h-tree" { "Who reports to whom" }
        @if tops.is_empty() {
            p class="empty" { "Nobody in the directory." }
        } @else {
            div class="card" {
                (tree(&tops, &reports, dir, &mut BTreeSet::new()))
            }
        }
        h2 id="h-people" { "Directory" }
        @if users.is_empty() {
            p class="empty" { "Nobody in the directory." }
        } @else {
            table class="data" aria-labelledby="h-people" {
                thead {
                    tr {
                        th scope="col" { "User" }
                        th scope="col" { "Name" }
                        th scope="col" { "Manager" }
                        th scope="col" { "Reports" }
                        th scope="col" { "Groups" }
                        th scope="col" { "Roles" }
                        th scope="col" { "Default workflow" }
                    }
                }
                tbody {
                    @for u in &users {
                        tr {
                            td class="mono" { (u.id) }
                            td { (u.name) }
                            td class="mono" { (u.manager.as_deref().unwrap_or("—")) }
                            td class="num" { (reports.get(&*u.id).map_or(0, Vec::len)) }
                            td { (u.groups.join(", ")) }
                            td { (roles(&u.roles)) }
                            td class="mono" { (u.default_workflow.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
        h2 id="h-tokens" { "Admin tokens" }
        p class="muted" { "From admin.tokens in the config, besides directory users with roles. The hashes are not shown." }
        @if cfg.admin.tokens.is_empty() {
            p class="empty" { "None configured." }
        } @else {
            table class="data" aria-labelledby="h-tokens" {
                thead { tr { th scope="col" { "User" } th scope="col" { "Roles" } } }
                tbody {
                    @for t in &cfg.admin.tokens {
                        tr { td class="mono" { (t.user) } td { (roles(&t.roles)) } }
                    }
                }
            }
        }
        h2 id="h-sources" { "Source addresses" }
        p class="muted" { "identity.source_addresses: calls from these addresses without proxy credentials are attributed to the user; the most specific range wins." }
        @if cfg.identity.source_addresses.is_empty() {
            p class="empty" { "None configured." }
        } @else {
            table class="data" aria-labelledby="h-sources" {
                thead { tr { th scope="col" { "Addresses" } th scope="col" { "User" } } }
                tbody {
                    @for (net, user) in &cfg.identity.source_addresses {
                        tr { td class="mono" { (net) } td class="mono" { (user) } }
                    }
                }
            }
        }
    };
    page("People", &signed, body)
}

fn roles(list: &[crate::config::Role]) -> Markup {
    html! {
        @if list.is_empty() {
            span class="muted" { "—" }
        } @else {
            @for (i, r) in list.iter().enumerate() {
                @if i > 0 { " " }
                span class="badge b-upcoming" { (role_name(*r)) }
            }
        }
    }
}

/// Nested lists from the tops down. `seen` stops a cycle in a hand-edited file from recursing
/// forever.
fn tree<'a>(
    ids: &[&'a str],
    reports: &BTreeMap<&'a str, Vec<&'a str>>,
    dir: &Directory,
    seen: &mut BTreeSet<&'a str>,
) -> Markup {
    html! {
        ul class="tree" {
            @for id in ids {
                li {
                    span class="mono" { (id) }
                    @if let Some(u) = dir.get(id) {
                        @if !u.name.is_empty() && u.name != *id { " " span class="muted" { (u.name) } }
                        @for r in &u.roles { " " span class="badge b-upcoming" { (role_name(*r)) } }
                    }
                    @if seen.insert(id) {
                        @if let Some(under) = reports.get(id) {
                            (tree(under, reports, dir, seen))
                        }
                    }
                }
            }
        }
    }
}
