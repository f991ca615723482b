//! Configuration errors shared by every builder in the crate.

use std::error::Error as StdError;

/// A builder or configuration was given input it cannot use.
///
/// Every builder in the crate reports invalid input through this type from its `build()` method,
/// so a misconfiguration is found at start-up, never while serving a request.
///
/// # Example
///
/// ```
/// use tower_redis_http::{ConfigError, store::Stores};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let stores = Stores::builder().build();
/// let err = stores.get("verify_codes").unwrap_err();
/// assert!(matches!(err, ConfigError::UnknownAlias { .. }));
/// assert_eq!(
///     err.to_string(),
///     "unknown store alias `verify_codes`; configured aliases: (none)"
/// );
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A store alias was looked up that no configuration defines.
    #[error("unknown store alias `{alias}`; configured aliases: {}", list_or_none(.known))]
    UnknownAlias {
        /// The alias that was asked for.
        alias: String,
        /// The aliases that are configured, sorted.
        known: Vec<String>,
    },
    /// A store location could not be understood.
    #[error("invalid store location `{location}`: {reason}")]
    InvalidLocation {
        /// The location as given, with any password redacted.
        location: String,
        /// What is wrong with it.
        reason: String,
        /// The parser's own error, when there is one.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// A numeric or textual option is outside the range it accepts.
    #[error("invalid value for `{option}`: {reason}")]
    InvalidOption {
        /// The option's name, as written in code or configuration.
        option: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A configuration document could not be parsed.
    #[error("invalid store configuration")]
    Parse {
        /// The deserializer's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}
