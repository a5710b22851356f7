//! The installation's fingerprint secret: 256 random bits in `<state_dir>/provenance/key`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Without this key the ledger's hashes cannot be tested against any text, so it is created
/// with mode 0600 and never logged.
#[derive(Clone)]
pub struct Key(pub(super) [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the provenance key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the provenance key {path} is not 64 hexadecimal characters; restore it from backup (the ledger cannot be read without it), or remove it to start a new ledger"
    )]
    Invalid { path: PathBuf },
    #[error("cannot create the provenance key {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Key {
    /// Where the key of a state directory lives.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("provenance").join("key")
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// Reads the state directory's key, creating it on first use. Two processes starting at
    /// once agree: the file is created exclusively, and the loser reads the winner's.
    pub fn load_or_create(state_dir: &Path) -> Result<Key, KeyError> {
        let path = Key::path(state_dir);
        match Key::load(&path) {
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                match Key::create(&path) {
                    Err(KeyError::Create { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Key::load(&path)
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Reads an existing key; never creates one (for the scan, which must not start a new,
    /// empty key next to an existing ledger).
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw = hex::decode(text.trim()).map_err(|_| KeyError::Invalid {
            path: path.to_path_buf(),
        })?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| KeyError::Invalid {
            path: path.to_path_buf(),
        })?;
        Ok(Key(bytes))
    }

    fn create(path: &Path) -> Result<Key, KeyError> {
        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| create_err(std::io::Error::other("no system randomness")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create_err)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(create_err)?;
        file.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(create_err)?;
        Ok(Key(bytes))
    }

    /// SipHash keys for the code and text channels: the two halves of the secret.
    pub(super) fn sip_keys(&self) -> ([u8; 16], [u8; 16]) {
        let mut code = [0u8; 16];
        let mut text = [0u8; 16];
        code.copy_from_slice(&self.0[..16]);
        text.copy_from_slice(&self.0[16..]);
        (code, text)
    }
}
