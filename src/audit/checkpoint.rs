//! Signed checkpoints: what lets `audit verify` prove a log is complete, not only unedited.
//!
//! The hash chain alone stops an edit in the middle, but not someone who cuts the tail, deletes
//! the file, or appends records with recomputed hashes. A checkpoint is a record that says "the
//! chain reached seq S with hash H at time T", signed with an Ed25519 key the writer alone holds
//! (CloudTrail's digest files, inside the log). Its public half is pinned by IT
//! (`aigate audit verify --key PUB`), so a forger without the private key cannot produce a log
//! that passes. The newest checkpoint is also kept outside the log, in a state file beside it
//! (and, with `storage.audit`, in the PostgreSQL table, where checkpoint records are shipped
//! like any other), so a shortened or missing log is named: "the log ends at seq 950 but
//! checkpoint 1000 exists".

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{AuditRecord, Kind};
use crate::policy::Reason;

/// The key file aigate generates in the state directory when `audit.signing_key` is not set.
pub const DEFAULT_KEY_FILE: &str = "audit-signing.key";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the audit signing key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the audit signing key {path} is not an Ed25519 private key in PKCS#8 PEM ({why}); generate one with `openssl genpkey -algorithm ed25519 -out {path}`, or remove audit.signing_key to let aigate generate one in the state directory"
    )]
    Invalid { path: PathBuf, why: String },
    #[error("cannot create the audit signing key {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not an Ed25519 public key in PEM (\"-----BEGIN PUBLIC KEY-----\"); export it with `aigate audit key export`"
    )]
    PublicKey { path: String },
}

/// The private half, held by the writer.
pub struct Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("Signer")
            .field("key_id", &self.public.id())
            .finish()
    }
}

impl Signer {
    /// Load the key at `path`; when `generate` (the default location in the state directory)
    /// and there is none, create one, readable by its owner only.
    pub fn load_or_create(path: &Path, generate: bool) -> Result<Signer, KeyError> {
        match std::fs::read(path) {
            Ok(pem) => Signer::from_pem(path, &pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => Signer::create(path),
            Err(source) => Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn from_pem(path: &Path, pem: &[u8]) -> Result<Signer, KeyError> {
        let invalid = |why: String| KeyError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| invalid(e.to_string()))?;
        // `maybe_unchecked` also takes PKCS#8 v1, which `openssl genpkey` writes.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| invalid(e.to_string()))?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(pair.public_key().as_ref());
        Ok(Signer {
            pair,
            public: PublicKey(raw),
        })
    }

    fn create(path: &Path) -> Result<Signer, KeyError> {
        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| create_err(std::io::Error::other("no system randomness")))?;
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
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
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(create_err)?;
        Signer::from_pem(path, pem.as_bytes())
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Sign the chain's position.
    pub fn sign(&self, seq: u64, hash: &str, time: &str, replica: Option<&str>) -> Checkpoint {
        let message = message(seq, hash, time, replica);
        Checkpoint {
            seq,
            hash: hash.to_string(),
            time: time.to_string(),
            key_id: self.public.id(),
            public_key: B64.encode(self.public.0),
            signature: B64.encode(self.pair.sign(message.as_bytes()).as_ref()),
        }
    }
}

/// The public half: what IT pins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// A PEM file (`-----BEGIN PUBLIC KEY-----`, as `aigate audit key export` and
    /// `openssl pkey -pubout` write it).
    pub fn from_pem(pem: &[u8], path: &str) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::PublicKey {
            path: path.to_string(),
        };
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|_| bad())?;
        let der: &[u8] = der.as_ref();
        let raw = der.strip_prefix(&SPKI_PREFIX[..]).ok_or_else(bad)?;
        Ok(PublicKey(raw.try_into().map_err(|_| bad())?))
    }

    fn from_base64(s: &str) -> Option<PublicKey> {
        B64.decode(s).ok()?.try_into().ok().map(PublicKey)
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem_encode("PUBLIC KEY", &der)
    }

    /// A short fingerprint, in every checkpoint: which key signed it.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The exact bytes signed. Versioned, so a later format cannot be confused with this one.
fn message(seq: u64, hash: &str, time: &str, replica: Option<&str>) -> String {
    format!(
        "aigate audit checkpoint v1\nseq={seq}\nhash={hash}\ntime={time}\nreplica={}\n",
        replica.unwrap_or_default()
    )
}

/// A signed statement: the chain reached `seq` with `hash` at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub key_id: String,
    /// Base64 of the raw 32-byte key. Convenience only: a forger can put their own here, which
    /// is why `verify --key` pins the key instead of trusting this.
    pub public_key: String,
    /// Base64 Ed25519 signature over `message(seq, hash, time, replica)`.
    pub signature: String,
}

/// How a checkpoint's signature stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// Valid, by the pinned key (or by the key the checkpoint names, when none is pinned).
    Valid,
    /// Valid, but by another key than the pinned one.
    OtherKey,
    Invalid,
}

impl Checkpoint {
    pub fn check(&self, pinned: Option<&PublicKey>, replica: Option<&str>) -> Signature {
        let Some(named) = PublicKey::from_base64(&self.public_key) else {
            return Signature::Invalid;
        };
        let key = pinned.unwrap_or(&named);
        let Ok(signature) = B64.decode(&self.signature) else {
            return Signature::Invalid;
        };
        let message = message(self.seq, &self.hash, &self.time, replica);
        match UnparsedPublicKey::new(&ED25519, key.0).verify(message.as_bytes(), &signature) {
            Ok(()) => Signature::Valid,
            Err(_) if pinned.is_some_and(|p| *p != named) => Signature::OtherKey,
            Err(_) => Signature::Invalid,
        }
    }
}

/// Why a checkpoint was written (`admin.cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `audit.checkpoint_every` records since the last one.
    Count,
    /// `audit.checkpoint_interval` since the last one, with records in between.
    Interval,
    /// The last record of a file before rotation.
    Rotation,
    /// The gateway is stopping: the last record it writes.
    Shutdown,
}

/// The checkpoint record: `kind = admin`, `reason = audit_checkpoint`.
pub fn record(cp: &Checkpoint, cause: Cause) -> AuditRecord {
    let mut r = AuditRecord::new(
        crate::proxy::new_id(),
        Kind::Admin,
        String::new(),
        "aigate".into(),
        String::new(),
        0,
    );
    r.time.clone_from(&cp.time);
    r.reason = Reason::AuditCheckpoint;
    r.admin = Some(serde_json::json!({ "checkpoint": cp, "cause": cause }));
    r
}

/// The checkpoint a record carries, if it is one.
pub fn of_record(r: &AuditRecord) -> Option<Checkpoint> {
    if r.reason != Reason::AuditCheckpoint {
        return None;
    }
    let cp = r.admin.as_ref()?.get("checkpoint")?;
    serde_json::from_value(cp.clone()).ok()
}

/// The newest checkpoint, kept outside the log: what the log must reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub checkpoint: Checkpoint,
    /// The checkpoint record's own place in the chain (`checkpoint.seq + 1`), and its hash: a
    /// log found missing at start continues the chain from here.
    pub record_seq: u64,
    pub record_hash: String,
    pub replica: Option<String>,
}

/// The state file beside a log: `audit.jsonl` keeps its newest checkpoint in
/// `audit.checkpoint.json`.
pub fn state_path(log: &Path) -> PathBuf {
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    log.with_file_name(format!("{stem}.checkpoint.json"))
}

/// A state file, or a checkpoint record's line as the SIEM holds it.
pub fn load_saved(path: &Path) -> Result<Option<Saved>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            if let Ok(saved) = serde_json::from_slice::<Saved>(&bytes) {
                return Ok(Some(saved));
            }
            saved_from_line(&bytes).map(Some).ok_or_else(|| {
                format!(
                    "{}: neither a checkpoint state file nor a checkpoint record's line",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The checkpoint a stored line carries (from the SIEM, or the PostgreSQL table), with its own
/// place in the chain.
pub fn saved_from_line(line: &[u8]) -> Option<Saved> {
    let r = serde_json::from_slice::<super::record::StoredRecord>(line.trim_ascii()).ok()?;
    Some(Saved {
        checkpoint: of_record(&r.record)?,
        record_seq: r.seq,
        record_hash: r.hash,
        replica: r.record.replica.as_deref().map(str::to_string),
    })
}

/// Replace the state file in one step (write beside it, then rename), so a crash leaves the
/// old or the new checkpoint, never half of one.
pub fn store_saved(path: &Path, saved: &Saved, sync: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?)?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(&dir.path().join("k"), true).unwrap();
        let other = Signer::load_or_create(&dir.path().join("o"), true).unwrap();
        let cp = signer.sign(7, &"ab".repeat(32), "2026-01-01T00:00:00.000Z", None);
        assert_eq!(cp.check(None, None), Signature::Valid);
        assert_eq!(cp.check(Some(signer.public()), None), Signature::Valid);
        assert_eq!(cp.check(Some(other.public()), None), Signature::OtherKey);
        // The replica is signed too: a checkpoint cannot be moved to another replica's chain.
        assert_eq!(cp.check(None, Some("r2")), Signature::Invalid);
        let mut moved = cp.clone();
        moved.seq = 8;
        assert_eq!(moved.check(None, None), Signature::Invalid);
        // A forger's own key, named in the record, passes only when nothing is pinned.
        let mut forged = other.sign(8, &cp.hash, &cp.time, None);
        forged.key_id.clone_from(&cp.key_id);
        assert_eq!(
            forged.check(Some(signer.public()), None),
            Signature::OtherKey
        );
    }

    #[test]
    fn the_key_is_generated_once_owner_only_and_its_public_half_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        let a = Signer::load_or_create(&path, true).unwrap();
        let b = Signer::load_or_create(&path, true).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let pem = a.public().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            PublicKey::from_pem(pem.as_bytes(), "k.pub").unwrap(),
            *a.public()
        );
        // A configured key that is missing is an error, not a new key.
        let err = Signer::load_or_create(&dir.path().join("absent"), false).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::write(dir.path().join("junk"), "not a key").unwrap();
        let err = Signer::load_or_create(&dir.path().join("junk"), false).unwrap_err();
        assert!(err.to_string().contains("openssl genpkey"), "{err}");
    }
}
