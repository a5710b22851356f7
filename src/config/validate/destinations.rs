//! `gateway.allowed_destinations` and `gateway.allowed_clients`: who may use the gateway, and
//! which internal addresses it may reach for them.

use std::net::SocketAddr;

use ipnet::IpNet;

use super::{Problems, parse_net, q};
use crate::config::raw::RawGateway;
use crate::destination::{Destinations, Endpoint};
use crate::host::{Host, HostPattern, normalise};

pub(super) fn destinations(
    p: &mut Problems,
    raw: &RawGateway,
    resolve: &[(String, SocketAddr)],
) -> Destinations {
    let mut out = Destinations {
        implicit: resolve.iter().map(|(_, a)| *a).collect(),
        ..Destinations::default()
    };
    for (i, s) in raw.allowed_destinations.iter().flatten().enumerate() {
        if let Some(net) = parse_net(s) {
            out.nets.push(net);
            continue;
        }
        match endpoint(s) {
            Ok(e) => out.endpoints.push(e),
            Err(why) => p.push(
                format!("gateway.allowed_destinations[{i}]"),
                q(s),
                format!("{why}; write a CIDR, an address or host:port, e.g. \"10.20.0.0/16\", \"10.1.2.3\", \"git.corp.example:443\" or \"*.svc.corp.example:8080\""),
            ),
        }
    }
    out
}

/// `host:port`, `*.suffix:port` or `[v6]:port`; the error says what is wrong with it.
fn endpoint(s: &str) -> Result<Endpoint, &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(if s.contains('/') {
            "not a valid CIDR"
        } else {
            "a host name needs a port (names are opened port by port)"
        });
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("the port must be a number from 1 to 65535")?;
    let pattern = || HostPattern::parse(host).map_err(|_| "not a valid host name or address");
    if host.starts_with("*.") {
        return Ok(Endpoint::Name(pattern()?, port));
    }
    match normalise(host).map_err(|_| "not a valid host name or address")? {
        Host::Ip(ip) => Ok(Endpoint::Addr(ip, port)),
        Host::Name(_) => Ok(Endpoint::Name(pattern()?, port)),
    }
}

pub(super) fn allowed_clients(p: &mut Problems, raw: &RawGateway) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, s) in raw.allowed_clients.iter().flatten().enumerate() {
        match parse_net(s) {
            Some(n) => out.push(n),
            None => p.push(
                format!("gateway.allowed_clients[{i}]"),
                q(s),
                "not an IP address or CIDR; write e.g. \"10.20.0.0/16\" or \"127.0.0.1\"",
            ),
        }
    }
    if raw.allowed_clients.as_ref().is_some_and(|c| c.is_empty()) {
        p.push(
            "gateway.allowed_clients",
            Some("[]".into()),
            "an empty list would refuse every client; name the client networks, or remove the key to accept any client",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{DEFAULT_CONFIG, load_str};

    fn with(edits: &[(&str, &str)]) -> crate::config::Config {
        let mut text = DEFAULT_CONFIG.to_string();
        for (from, to) in edits {
            assert!(text.contains(from), "{from}");
            text = text.replacen(from, to, 1);
        }
        load_str(&text, "test", Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The open-proxy warning: a listener other hosts can reach (any spelling of "every
    /// address", a LAN address) with neither client networks nor proxy authentication.
    #[test]
    fn open_proxy_warnings() {
        let listen = "listen = \"127.0.0.1:3128\"";
        let cases = [
            ("listen = \"127.0.0.1:3128\"", None, false),
            ("listen = \"[::1]:3128\"", None, false),
            ("listen = \"127.0.0.2:3128\"", None, false),
            ("listen = \"0.0.0.0:3128\"", None, true),
            ("listen = \"[::]:3128\"", None, true),
            ("listen = \"10.1.2.3:3128\"", None, true),
            (
                "listen = \"0.0.0.0:3128\"",
                Some(("# allowed_clients = [", "allowed_clients = [")),
                false,
            ),
            (
                "listen = \"0.0.0.0:3128\"",
                Some(("require_auth = false", "require_auth = true")),
                false,
            ),
        ];
        for (l, extra, warns) in cases {
            let mut edits = vec![(listen, l)];
            edits.extend(extra);
            let cfg = with(&edits);
            assert_eq!(!cfg.warnings().is_empty(), warns, "{l} {extra:?}");
        }
    }

    #[test]
    fn allowed_destinations_parse_into_nets_endpoints_and_implicit_addresses() {
        let cfg = with(&[
            (
                "allowed_destinations = []",
                "allowed_destinations = [\"10.20.0.0/16\", \"10.1.2.3\", \"git.corp.example:443\", \"*.svc.corp.example:8080\", \"[fd00::5]:22\"]",
            ),
            (
                "[upstream.resolve]\n",
                "[upstream.resolve]\n\"api.anthropic.com\" = \"127.0.0.1:8443\"\n",
            ),
        ]);
        let d = &cfg.destinations;
        assert_eq!(d.nets.len(), 2);
        assert_eq!(d.endpoints.len(), 3);
        assert_eq!(d.implicit, vec!["127.0.0.1:8443".parse().unwrap()]);
        let ok = |name: Option<&str>, addr: &str| d.check(name, addr.parse().unwrap()).is_ok();
        assert!(ok(None, "10.20.9.9:1"));
        assert!(ok(None, "10.1.2.3:5432"));
        assert!(ok(Some("git.corp.example"), "10.9.9.9:443"));
        assert!(ok(Some("a.svc.corp.example"), "10.9.9.9:8080"));
        assert!(!ok(Some("svc.corp.example"), "10.9.9.9:8080"));
        assert!(ok(None, "[fd00::5]:22"));
        assert!(ok(Some("api.anthropic.com"), "127.0.0.1:8443"));
        assert!(!ok(None, "127.0.0.1:8444"));
    }
}
