//! PEM material for TLS to Redis.

use std::path::PathBuf;

use crate::ConfigError;

/// PEM data for TLS to Redis (a CA certificate, a client certificate, or its private key),
/// from a file or in memory. A file is read when the store is built.
///
/// # Example
///
/// ```
/// use tower_redis_http::store::Pem;
///
/// let ca = Pem::file("/etc/redis/ca.pem");
/// let key = Pem::data(std::env::var("REDIS_CLIENT_KEY").unwrap_or_default());
/// assert_eq!(format!("{ca:?}"), r#"Pem::File("/etc/redis/ca.pem")"#);
/// assert!(!format!("{key:?}").contains("PRIVATE KEY"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Pem {
    /// A PEM file.
    File(PathBuf),
    /// PEM text held in memory (from a secret store, say).
    Data(Vec<u8>),
}

impl Pem {
    /// PEM in the file at `path`.
    ///
    /// # Example
    ///
    /// ```
    /// let ca = tower_redis_http::store::Pem::file("/etc/redis/ca.pem");
    /// ```
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// PEM text held in memory.
    ///
    /// # Example
    ///
    /// ```
    /// let ca = tower_redis_http::store::Pem::data("-----BEGIN CERTIFICATE-----\n...");
    /// ```
    pub fn data(pem: impl Into<Vec<u8>>) -> Self {
        Self::Data(pem.into())
    }

    /// The PEM bytes, for the builder option `option`.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn read(&self, option: &'static str) -> Result<Vec<u8>, ConfigError> {
        match self {
            Self::Data(pem) => Ok(pem.clone()),
            Self::File(path) => std::fs::read(path).map_err(|err| ConfigError::InvalidOption {
                option,
                reason: format!("cannot read `{}`: {err}", path.display()),
            }),
        }
    }
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "Pem::File({path:?})"),
            // never the bytes: they may be a private key
            Self::Data(pem) => write!(f, "Pem::Data(<{} bytes>)", pem.len()),
        }
    }
}
