//! Which addresses the gateway may dial. PURE: plain data in, a verdict out.
//!
//! A forward proxy that dials whatever a client names is a way into the network it sits in: the
//! gateway host's own loopback services (the admin API among them), cloud metadata at
//! 169.254.169.254, and every private range behind it. So addresses in the internal ranges below
//! are refused unless config opens them (`gateway.allowed_destinations`) or names them itself
//! (`upstream.resolve`). The check runs on the address about to be dialled, after resolution, so
//! a name that resolves to an internal address (`localhost`, DNS rebinding) is refused too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::host::HostPattern;

/// What config opens besides the public internet.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// `gateway.allowed_destinations` entries that are CIDRs or bare addresses: any port.
    pub nets: Vec<IpNet>,
    /// `gateway.allowed_destinations` entries that are `host:port`: that name (or address) on
    /// that port, whatever the name resolves to.
    pub endpoints: Vec<Endpoint>,
    /// Addresses config names itself (`upstream.resolve`): allowed on their own port.
    pub implicit: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Name(HostPattern, u16),
    Addr(IpAddr, u16),
}

/// A refused destination: the address that would have been dialled and the range it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub addr: SocketAddr,
    pub range: Range,
}

/// The internal ranges refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Unspecified,
    Loopback,
    /// 169.254/16, fe80::/10; cloud metadata services live here.
    LinkLocal,
    /// RFC 1918.
    Private,
    /// 100.64/10, carrier-grade NAT (RFC 6598).
    SharedCgnat,
    /// fc00::/7 (AWS's metadata service answers at fd00:ec2::254).
    UniqueLocal,
    /// fec0::/10, deprecated but still routed by some stacks.
    SiteLocal,
    Multicast,
    /// 240/4 and the broadcast address.
    Reserved,
}

impl Range {
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Unspecified => "unspecified",
            Range::Loopback => "loopback",
            Range::LinkLocal => "link-local",
            Range::Private => "private",
            Range::SharedCgnat => "carrier-grade NAT",
            Range::UniqueLocal => "unique-local",
            Range::SiteLocal => "site-local",
            Range::Multicast => "multicast",
            Range::Reserved => "reserved",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is a {} address; internal destinations are refused unless gateway.allowed_destinations lists them",
            self.addr,
            self.range.as_str()
        )
    }
}

impl std::error::Error for Denied {}

/// The internal range `ip` is in, if any. IPv6 forms that carry an IPv4 address (mapped
/// `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are judged by that IPv4
/// address, so `[::ffff:127.0.0.1]` is loopback.
pub fn internal_range(ip: IpAddr) -> Option<Range> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<Range> {
    let [a, b, ..] = ip.octets();
    match (a, b) {
        (0, _) => Some(Range::Unspecified),
        (127, _) => Some(Range::Loopback),
        (169, 254) => Some(Range::LinkLocal),
        (10, _) => Some(Range::Private),
        (172, 16..=31) => Some(Range::Private),
        (192, 168) => Some(Range::Private),
        (100, 64..=127) => Some(Range::SharedCgnat),
        (224..=239, _) => Some(Range::Multicast),
        (240..=255, _) => Some(Range::Reserved),
        _ => None,
    }
}

fn v6_range(ip: Ipv6Addr) -> Option<Range> {
    if ip.is_unspecified() {
        return Some(Range::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Range::Loopback);
    }
    let s = ip.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6];
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || compatible || nat64 {
        return v4_range(embedded);
    }
    match s[0] {
        0xfe80..=0xfebf => Some(Range::LinkLocal),
        0xfec0..=0xfeff => Some(Range::SiteLocal),
        0xfc00..=0xfdff => Some(Range::UniqueLocal),
        0xff00..=0xffff => Some(Range::Multicast),
        _ => None,
    }
}

impl Destinations {
    /// Whether the gateway may dial `addr`, which `name` (the host the client asked for, `None`
    /// for an address literal) resolved to. Order: config's own addresses, the allow-list, then
    /// the internal ranges; anything else is the public internet and allowed.
    pub fn check(&self, name: Option<&str>, addr: SocketAddr) -> Result<(), Denied> {
        let ip = addr.ip().to_canonical();
        let Some(range) = internal_range(ip) else {
            return Ok(());
        };
        let canonical = SocketAddr::new(ip, addr.port());
        let opened = self
            .implicit
            .iter()
            .any(|a| SocketAddr::new(a.ip().to_canonical(), a.port()) == canonical)
            || self.nets.iter().any(|n| n.contains(&ip))
            || self.endpoints.iter().any(|e| match e {
                Endpoint::Name(pattern, port) => {
                    *port == addr.port() && name.is_some_and(|n| pattern.matches(n))
                }
                Endpoint::Addr(a, port) => *port == addr.port() && a.to_canonical() == ip,
            });
        if opened {
            Ok(())
        } else {
            Err(Denied { addr, range })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let cases: &[(&str, Option<Range>)] = &[
            ("0.0.0.0", Some(Range::Unspecified)),
            ("127.0.0.1", Some(Range::Loopback)),
            ("127.255.0.9", Some(Range::Loopback)),
            ("169.254.169.254", Some(Range::LinkLocal)),
            ("10.1.2.3", Some(Range::Private)),
            ("172.16.0.1", Some(Range::Private)),
            ("172.31.255.255", Some(Range::Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Range::Private)),
            ("100.64.0.1", Some(Range::SharedCgnat)),
            ("100.127.255.255", Some(Range::SharedCgnat)),
            ("100.128.0.1", None),
            ("224.0.0.251", Some(Range::Multicast)),
            ("255.255.255.255", Some(Range::Reserved)),
            ("8.8.8.8", None),
            ("160.79.104.10", None),
            ("::", Some(Range::Unspecified)),
            ("::1", Some(Range::Loopback)),
            ("fe80::1", Some(Range::LinkLocal)),
            ("febf::1", Some(Range::LinkLocal)),
            ("fec0::1", Some(Range::SiteLocal)),
            ("fd00:ec2::254", Some(Range::UniqueLocal)),
            ("fc00::1", Some(Range::UniqueLocal)),
            ("ff02::1", Some(Range::Multicast)),
            ("::ffff:127.0.0.1", Some(Range::Loopback)),
            ("::ffff:169.254.169.254", Some(Range::LinkLocal)),
            ("::ffff:10.0.0.1", Some(Range::Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Range::Loopback)),
            ("64:ff9b::a00:1", Some(Range::Private)),
            ("64:ff9b::808:808", None),
            ("2607:6bc0::10", None),
        ];
        for (ip, want) in cases {
            assert_eq!(internal_range(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    #[test]
    fn checks() {
        let d = Destinations {
            nets: vec!["10.20.0.0/16".parse().unwrap()],
            endpoints: vec![
                Endpoint::Name(HostPattern::parse("git.corp.example").unwrap(), 443),
                Endpoint::Name(HostPattern::parse("*.svc.example").unwrap(), 8080),
                Endpoint::Addr("192.168.1.5".parse().unwrap(), 22),
            ],
            implicit: vec![sa("127.0.0.1:8443")],
        };
        let cases: &[(Option<&str>, &str, Result<(), Range>)] = &[
            (Some("api.example.com"), "8.8.8.8:443", Ok(())),
            (Some("localhost"), "127.0.0.1:9180", Err(Range::Loopback)),
            (None, "169.254.169.254:80", Err(Range::LinkLocal)),
            (None, "[::ffff:127.0.0.1]:80", Err(Range::Loopback)),
            (Some("api.anthropic.com"), "127.0.0.1:8443", Ok(())),
            (None, "[::ffff:127.0.0.1]:8443", Ok(())),
            (
                Some("api.anthropic.com"),
                "127.0.0.1:8444",
                Err(Range::Loopback),
            ),
            (None, "10.20.3.4:5432", Ok(())),
            (None, "10.21.3.4:5432", Err(Range::Private)),
            (Some("git.corp.example"), "10.9.9.9:443", Ok(())),
            (Some("git.corp.example"), "10.9.9.9:22", Err(Range::Private)),
            (Some("evil.example"), "10.9.9.9:443", Err(Range::Private)),
            (Some("a.svc.example"), "100.64.1.1:8080", Ok(())),
            (None, "192.168.1.5:22", Ok(())),
            (None, "192.168.1.5:23", Err(Range::Private)),
            (None, "[fd00:ec2::254]:80", Err(Range::UniqueLocal)),
        ];
        for (name, addr, want) in cases {
            let got = d.check(*name, sa(addr)).map_err(|e| e.range);
            assert_eq!(got, *want, "{name:?} {addr}");
        }
        assert_eq!(
            Destinations::default()
                .check(None, sa("127.0.0.1:1"))
                .unwrap_err()
                .to_string(),
            "127.0.0.1:1 is a loopback address; internal destinations are refused unless gateway.allowed_destinations lists them"
        );
    }
}
