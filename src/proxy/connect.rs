//! Parse a CONNECT target (`host:port`, `[v6]:port`) into a normalised host and port. PURE.

use crate::host::{Host, HostError, normalise};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("CONNECT target needs host:port")]
    MissingPort,
    #[error("CONNECT target has a bad port")]
    BadPort,
    #[error(transparent)]
    Host(#[from] HostError),
}

/// `authority` is the request-target of a CONNECT, e.g. `api.anthropic.com:443`.
pub fn parse_target(authority: &str) -> Result<Target, TargetError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(TargetError::MissingPort)?;
        let port = after.strip_prefix(':').ok_or(TargetError::MissingPort)?;
        (&authority[..v6.len() + 2], port)
    } else {
        authority.rsplit_once(':').ok_or(TargetError::MissingPort)?
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BadPort);
    }
    let port: u16 = port.parse().map_err(|_| TargetError::BadPort)?;
    if port == 0 {
        return Err(TargetError::BadPort);
    }
    Ok(Target {
        host: normalise(host)?,
        port,
    })
}

/// Split a `Host` header or `:authority` into host and optional port.
pub fn parse_authority(authority: &str) -> Result<(Host, Option<u16>), TargetError> {
    match parse_target(authority) {
        Ok(t) => Ok((t.host, Some(t.port))),
        Err(TargetError::MissingPort) => Ok((normalise(authority)?, None)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("API.Anthropic.com.:443").unwrap();
        assert_eq!(
            (t.host.to_string(), t.port),
            ("api.anthropic.com".into(), 443)
        );
        let t = parse_target("[::1]:8443").unwrap();
        assert_eq!((t.host.to_string(), t.port), ("[::1]".into(), 8443));
        assert_eq!(
            parse_target("2130706433:443").unwrap().host.to_string(),
            "127.0.0.1"
        );
        assert_eq!(
            parse_target("api.anthropic.com"),
            Err(TargetError::MissingPort)
        );
        assert_eq!(
            parse_target("api.anthropic.com:"),
            Err(TargetError::BadPort)
        );
        assert_eq!(
            parse_target("api.anthropic.com:99999"),
            Err(TargetError::BadPort)
        );
        assert_eq!(
            parse_target("api.anthropic.com:0"),
            Err(TargetError::BadPort)
        );
        assert_eq!(
            parse_target("api.anthropic.com:+443"),
            Err(TargetError::BadPort)
        );
        assert!(parse_target(":443").is_err());
    }

    #[test]
    fn authorities() {
        assert_eq!(
            parse_authority("api.openai.com").unwrap(),
            (normalise("api.openai.com").unwrap(), None)
        );
        assert_eq!(parse_authority("api.openai.com:443").unwrap().1, Some(443));
    }
}
