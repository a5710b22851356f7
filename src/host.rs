//! Host names as the gateway compares them.
//!
//! Every host that reaches a decision (a CONNECT target, a `Host` header, an SNI name, a pattern
//! from config) goes through [`normalise`] first, so `API.Anthropic.com.`, `api.anthropic.com` and
//! the punycode of an internationalised spelling all compare equal. IP literals are recognised in
//! every form a resolver accepts (`inet_aton` forms included: `2130706433`, `0x7f.1`, `0177.0.0.1`),
//! because a proxy that only knows dotted quads lets the other spellings through unclassified.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A normalised host: a lower-case ASCII DNS name without trailing dot, or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("host is longer than 253 characters")]
    TooLong,
    #[error("host is not a valid DNS name or IP address: {0}")]
    Invalid(String),
    #[error(
        "bad wildcard in {0}: a \"*\" stands for part of one label, once per label, not in the last two labels, and \"*.\" only leads a pattern"
    )]
    Wildcard(String),
}

/// Normalise a host as written by a client or in config (no port, IPv6 may be in brackets).
pub fn normalise(raw: &str) -> Result<Host, HostError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(canonical_ip(IpAddr::V6(ip))))
            .map_err(|_| HostError::Invalid(raw.to_string()));
    }
    if let Ok(ip) = raw.parse::<Ipv6Addr>() {
        return Ok(Host::Ip(canonical_ip(IpAddr::V6(ip))));
    }
    let without_dot = raw.strip_suffix('.').unwrap_or(raw);
    if without_dot.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(ip) = parse_inet_aton(without_dot) {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    // IDNA: lower-cases, maps Unicode to punycode, and rejects what cannot be a DNS name.
    let ascii = idna::domain_to_ascii_strict(without_dot)
        .or_else(|_| idna::domain_to_ascii(without_dot))
        .map_err(|_| HostError::Invalid(raw.to_string()))?;
    if ascii.is_empty() {
        return Err(HostError::Empty);
    }
    if ascii.len() > 253 {
        return Err(HostError::TooLong);
    }
    // IDNA mapping can turn a Unicode spelling into an IP literal (fullwidth digits, ignored
    // code points such as U+034F): check again, or `127\u{34f}.0.0.1` would pass as a name and
    // dodge the IP-literal rules. Found by the connect_target fuzz target.
    if let Some(ip) = parse_inet_aton(&ascii) {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let valid = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid {
        return Err(HostError::Invalid(raw.to_string()));
    }
    Ok(Host::Name(ascii))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 address in disguise.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The forms glibc's `inet_aton` accepts: 1 to 4 parts, each decimal, `0x` hex or `0` octal,
/// the last part filling the remaining bytes.
fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(parse_aton_part(part)?);
    }
    let (last, init) = values.split_last()?;
    let mut addr: u32 = 0;
    for (i, v) in init.iter().enumerate() {
        if *v > 0xff {
            return None;
        }
        addr |= (*v as u32) << (24 - 8 * i);
    }
    let remaining_bits = 32 - 8 * init.len() as u32;
    if remaining_bits < 32 && *last >= (1u64 << remaining_bits) {
        return None;
    }
    if *last > u32::MAX as u64 {
        return None;
    }
    addr |= *last as u32;
    Some(Ipv4Addr::from(addr))
}

fn parse_aton_part(part: &str) -> Option<u64> {
    if part.is_empty() || part.len() > 12 {
        return None;
    }
    if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        if hex.is_empty() {
            return Some(0);
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if part.len() > 1 && part.starts_with('0') {
        return u64::from_str_radix(&part[1..], 8).ok();
    }
    if part.bytes().all(|b| b.is_ascii_digit()) {
        return part.parse().ok();
    }
    None
}

/// A vendor host pattern from config: an exact name, `*.suffix` (which matches strict subdomains
/// of the suffix, not the suffix itself), or a name with `*` inside labels, such as
/// `*-aiplatform.googleapis.com` or `bedrock-runtime.*.amazonaws.com`. Regional endpoints of the
/// managed clouds need the last form: `*.googleapis.com` would intercept every Google API.
///
/// A `*` inside a name stands for one or more characters of a single label, never a dot, so
/// `bedrock-runtime.*.amazonaws.com` does not match `bedrock-runtime.a.b.amazonaws.com`, and the
/// last two labels must be written out, so no pattern reaches across registrable domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Suffix(String),
    Labels(Vec<LabelPattern>),
}

/// One label of a [`HostPattern::Labels`] pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelPattern {
    Literal(String),
    /// `prefix*suffix`: the `*` covers at least one character.
    Wild {
        prefix: String,
        suffix: String,
    },
}

impl LabelPattern {
    fn matches(&self, label: &str) -> bool {
        match self {
            LabelPattern::Literal(l) => l == label,
            LabelPattern::Wild { prefix, suffix } => {
                label.len() > prefix.len() + suffix.len()
                    && label.starts_with(prefix.as_str())
                    && label.ends_with(suffix.as_str())
            }
        }
    }
}

impl fmt::Display for LabelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelPattern::Literal(l) => f.write_str(l),
            LabelPattern::Wild { prefix, suffix } => write!(f, "{prefix}*{suffix}"),
        }
    }
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        let invalid = || HostError::Wildcard(raw.to_string());
        if let Some(rest) = raw.strip_prefix("*.") {
            // `*.a.*.com` would mix "any depth" with "one label": refused as ambiguous.
            if rest.contains('*') {
                return Err(invalid());
            }
            return match normalise(rest)? {
                Host::Name(n) => Ok(HostPattern::Suffix(n)),
                Host::Ip(_) => Err(HostError::Invalid(raw.to_string())),
            };
        }
        if !raw.contains('*') {
            return match normalise(raw)? {
                Host::Name(n) => Ok(HostPattern::Exact(n)),
                Host::Ip(_) => Err(HostError::Invalid(raw.to_string())),
            };
        }
        // Normalise the pattern with each `*` standing in for a letter, then put them back: the
        // literal parts go through the same case folding and IDNA as the hosts they meet.
        let trimmed = raw.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        let labels: Vec<&str> = trimmed.split('.').collect();
        if labels.len() < 3 || labels[labels.len() - 2..].iter().any(|l| l.contains('*')) {
            return Err(invalid());
        }
        let mut out = Vec::with_capacity(labels.len());
        for label in labels {
            let stars = label.matches('*').count();
            if stars == 0 {
                out.push(LabelPattern::Literal(
                    literal_label(label).ok_or_else(invalid)?,
                ));
                continue;
            }
            if stars > 1 {
                return Err(invalid());
            }
            let (prefix, suffix) = label.split_once('*').ok_or_else(invalid)?;
            let fold = |part: &str| -> Result<String, HostError> {
                if part.is_empty() {
                    Ok(String::new())
                } else {
                    literal_label(part).ok_or_else(invalid)
                }
            };
            out.push(LabelPattern::Wild {
                prefix: fold(prefix)?,
                suffix: fold(suffix)?,
            });
        }
        Ok(HostPattern::Labels(out))
    }

    /// The written-out end of the pattern (`googleapis.com` for `*-aiplatform.googleapis.com`):
    /// every host it matches ends with it, which is what a `NO_PROXY` entry is compared with.
    pub fn literal_tail(&self) -> String {
        match self {
            HostPattern::Exact(n) | HostPattern::Suffix(n) => n.clone(),
            HostPattern::Labels(labels) => {
                let start = labels
                    .iter()
                    .rposition(|l| matches!(l, LabelPattern::Wild { .. }))
                    .map_or(0, |i| i + 1);
                labels[start..]
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            }
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(n) => n == host,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
            }
            HostPattern::Labels(pattern) => {
                let mut labels = host.split('.');
                pattern
                    .iter()
                    .all(|p| labels.next().is_some_and(|l| p.matches(l)))
                    && labels.next().is_none()
            }
        }
    }
}

/// One literal label (or part of one) as a host spells it: lower case, plain DNS characters.
/// Unicode is refused here rather than mapped, since a part of a label has no IDNA form.
fn literal_label(part: &str) -> Option<String> {
    let ok = !part.is_empty()
        && part.len() <= 63
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| part.to_ascii_lowercase())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
            HostPattern::Labels(labels) => {
                for (i, l) in labels.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{l}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn spellings_of_one_name_compare_equal() {
        let want = Host::Name("api.anthropic.com".into());
        for s in [
            "api.anthropic.com",
            "API.Anthropic.COM",
            "api.anthropic.com.",
            " api.anthropic.com ",
        ] {
            assert_eq!(normalise(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn unicode_names_become_punycode() {
        assert_eq!(
            normalise("bücher.example").unwrap(),
            Host::Name("xn--bcher-kva.example".into())
        );
        assert_eq!(
            normalise("XN--BCHER-KVA.example").unwrap(),
            Host::Name("xn--bcher-kva.example".into())
        );
    }

    #[test]
    fn ip_literals_in_every_form() {
        for s in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0x7f.1",
            "0177.0.0.1",
            "127.1",
            "[::ffff:127.0.0.1]",
            "::ffff:7f00:1",
        ] {
            assert_eq!(normalise(s).unwrap(), ip("127.0.0.1"), "{s}");
        }
        assert_eq!(normalise("[2001:db8::1]").unwrap(), ip("2001:db8::1"));
        assert_eq!(normalise("2001:db8::1").unwrap(), ip("2001:db8::1"));
    }

    #[test]
    fn unicode_spellings_of_ip_literals_are_ip_literals() {
        for s in [
            "127\u{34f}.0.0.1",
            "\u{ff11}\u{ff12}\u{ff17}\u{3002}0\u{3002}0\u{3002}1",
            "4\u{34f}4",
        ] {
            assert!(
                matches!(normalise(s), Ok(Host::Ip(_)) | Err(_)),
                "{s:?} -> {:?}",
                normalise(s)
            );
        }
        assert_eq!(normalise("127\u{34f}.0.0.1").unwrap(), ip("127.0.0.1"));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(normalise("").is_err());
        assert!(normalise(".").is_err());
        assert!(normalise("a..b").is_err());
        assert!(normalise("a b.com").is_err());
        assert!(normalise("[zz]").is_err());
        assert!(normalise(&"a".repeat(300)).is_err());
    }

    #[test]
    fn patterns() {
        let p = HostPattern::parse("*.googleapis.com").unwrap();
        assert!(p.matches("generativelanguage.googleapis.com"));
        assert!(!p.matches("googleapis.com"));
        assert!(!p.matches("evilgoogleapis.com"));
        let e = HostPattern::parse("API.openai.com.").unwrap();
        assert!(e.matches("api.openai.com"));
        assert!(HostPattern::parse("*.1.2.3").is_err() || HostPattern::parse("1.2.3.4").is_err());
    }

    #[test]
    fn label_wildcards_match_one_label_and_nothing_more() {
        let vertex = HostPattern::parse("*-aiplatform.googleapis.com").unwrap();
        assert!(vertex.matches("us-central1-aiplatform.googleapis.com"));
        assert!(vertex.matches("europe-west4-aiplatform.googleapis.com"));
        for h in [
            "aiplatform.googleapis.com",
            "-aiplatform.googleapis.com",
            "x.us-central1-aiplatform.googleapis.com",
            "us-central1-aiplatform.googleapis.com.evil.com",
            "us-central1-aiplatform.evilgoogleapis.com",
            "us-central1-aiplatformx.googleapis.com",
            "www.googleapis.com",
        ] {
            assert!(!vertex.matches(h), "{h}");
        }
        let bedrock = HostPattern::parse("Bedrock-Runtime.*.amazonaws.com.").unwrap();
        assert_eq!(bedrock.to_string(), "bedrock-runtime.*.amazonaws.com");
        assert!(bedrock.matches("bedrock-runtime.us-east-1.amazonaws.com"));
        for h in [
            "bedrock-runtime.amazonaws.com",
            "bedrock-runtime.a.b.amazonaws.com",
            "bedrock-runtime-fips.us-east-1.amazonaws.com",
            "x.bedrock-runtime.us-east-1.amazonaws.com",
            "s3.us-east-1.amazonaws.com",
        ] {
            assert!(!bedrock.matches(h), "{h}");
        }
        let p = HostPattern::parse("*-aiplatform.p.googleapis.com").unwrap();
        assert!(p.matches("us-aiplatform.p.googleapis.com"));
        assert!(!p.matches("us-aiplatform.googleapis.com"));
    }

    #[test]
    fn wildcards_that_would_over_match_are_refused() {
        for raw in [
            "*.*.example.com",
            "a.*.com",
            "bedrock.*",
            "*.com*",
            "a**b.example.com",
            "a*b*c.example.com",
            "*",
            "*.example.*",
            "*\u{e9}.example.com",
            "a*.b c.example.com",
        ] {
            assert!(HostPattern::parse(raw).is_err(), "{raw}");
        }
        // `*.suffix` keeps its meaning: any depth of subdomain.
        let s = HostPattern::parse("*.openai.azure.com").unwrap();
        assert!(s.matches("my-res.openai.azure.com"));
        assert!(!s.matches("openai.azure.com"));
    }
}
