//! The account that runs aigate, as the user of its loopback clients (`identity.local_account`).
//!
//! On a fresh machine nobody has written a users file or set up proxy authentication, so every
//! call would be `anonymous`, and an anonymous call can never be exempted: the newcomer's first
//! blocked Claude Code would lead nowhere. A gateway that listens on loopback serves the processes
//! of its own machine, which on a workstation are its owner's. So loopback clients are that
//! account, by a source-address mapping that an explicit one overrides. On a shared host, turn
//! it off (every local account would be attributed to one person).

/// The name of the account this process runs as: its passwd entry, else `$USER`/`$LOGNAME`,
/// else `uid-N`.
pub fn name() -> String {
    let uid = current_uid();
    if let Some(uid) = uid {
        if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
            if let Some(name) = name_in_passwd(&passwd, uid) {
                return name;
            }
        }
    }
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var) {
            let v = v.trim();
            if !v.is_empty() {
                return v.to_string();
            }
        }
    }
    uid.map_or_else(|| "local-account".to_string(), |u| format!("uid-{u}"))
}

#[cfg(unix)]
fn current_uid() -> Option<u32> {
    Some(rustix::process::getuid().as_raw())
}

#[cfg(not(unix))]
fn current_uid() -> Option<u32> {
    None
}

fn name_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id: u32 = fields.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passwd_entry_names_the_uid() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(name_in_passwd(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(name_in_passwd(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_in_passwd(passwd, 7), None);
    }

    #[test]
    fn this_process_has_a_name() {
        assert!(!name().is_empty());
    }
}
