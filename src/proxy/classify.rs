//! Which way a CONNECT goes: intercept (a vendor host), tunnel (anything else), or refuse. PURE.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::connect::Target;
use crate::catalog::AiHostGroup;
use crate::config::{Config, Vendor};
use crate::host::Host;
use crate::policy::Reason;

#[derive(Debug, Clone)]
pub enum Route {
    Intercept(Arc<Vendor>),
    Tunnel,
    /// A model API from the AI host catalog (monitored or blocked: intercepted groups are
    /// vendors and never get here).
    AiHost(Arc<AiHostGroup>),
    Refuse {
        reason: Reason,
        vendor: Option<Arc<str>>,
    },
}

/// Ports where a raw IP address is presumed to be an attempt to reach a web API unnamed.
const WEB_PORTS: [u16; 2] = [80, 443];

pub fn classify(config: &Config, target: &Target) -> Route {
    match &target.host {
        Host::Name(name) => match config.vendor_for(name) {
            Some(v) if target.port == 443 => Route::Intercept(v.clone()),
            Some(v) => Route::Refuse {
                reason: Reason::VendorPort,
                vendor: Some(v.id.clone()),
            },
            None => match config.ai_hosts.group_for(name) {
                Some(g) => Route::AiHost(g.clone()),
                None => Route::Tunnel,
            },
        },
        Host::Ip(ip) => {
            if ip_allowed(&config.allowed_ip_literals, ip) || !WEB_PORTS.contains(&target.port) {
                Route::Tunnel
            } else {
                Route::Refuse {
                    reason: Reason::IpLiteral,
                    vendor: None,
                }
            }
        }
    }
}

fn ip_allowed(allowed: &[IpNet], ip: &IpAddr) -> bool {
    allowed.iter().any(|n| n.contains(ip))
}
