//! TLS on both legs: `authority` mints the certificates clients see, `upstream` is how we check
//! the vendor's.

pub mod authority;
pub mod upstream;

pub use authority::{CertificateAuthority, TlsSetupError};

/// The one crypto provider for the whole process (ring: builds with a C compiler only).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
