//! Issuing, listing and revoking tokens: what login and logout handlers call.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TokenKeys;
use crate::hex::hex_into;
use crate::store::{AnyStore, Durability, Store, StoreError, StoreErrorKind, Ttl, value};

/// Random bytes per token: 256 bits, above the 160 that Django REST framework's
/// `token_hex(20)` gives.
const TOKEN_BYTES: usize = 32;

/// Why issuing or revoking a token failed.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::TokenError;
/// use tower_redis_http::store::{StoreError, StoreErrorKind};
///
/// let err = TokenError::from(StoreError::new(StoreErrorKind::Timeout, "slow"));
/// assert!(err.to_string().starts_with("token store failed"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The store failed.
    #[error("token store failed")]
    Store(#[from] StoreError),
    /// The principal could not be encoded as JSON.
    #[error("principal could not be encoded")]
    Encode(#[from] value::ValueError),
    /// The operating system's random number generator failed.
    #[error("no randomness for a token")]
    Random(#[source] getrandom::Error),
    /// The configured TTL is zero, so a token would expire as it is issued.
    #[error("token TTL is zero")]
    ZeroTtl,
    /// A [`Tokens::revoke_all`] of the user ran while the token was being issued: the token
    /// was taken back, as the revocation covers every login before it ended.
    #[error("the user's tokens were revoked while this one was issued")]
    RevokedWhileIssued,
}

/// A live token of a user, as [`Tokens::list`] reports it.
///
/// # Example
///
/// ```
/// use tower_redis_http::auth::{TokenKeys, Tokens};
/// use tower_redis_http::store::MemoryStore;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tokens = Tokens::new(MemoryStore::new(), |user_id: &u64| user_id.to_string());
/// let token = tokens.issue(&7).await?;
/// let live = tokens.list("7").await?;
/// assert_eq!(live[0].id, token);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The token, or its SHA-256 when tokens are hashed at rest.
    pub id: String,
    /// How long the token lives on, `None` if it never expires.
    pub expires_in: Option<Duration>,
}

/// Issues and revokes tokens in the store the [`TokenAuthLayer`](super::TokenAuthLayer)
/// reads: the API behind login and logout handlers.
///
/// - [`issue`](Self::issue): a token of 256 bits from the operating system's CSPRNG, hex
///   (URL-safe), stored with the principal's JSON and a TTL (72 hours by default), and added to
///   the user's index.
/// - [`revoke`](Self::revoke) one token; [`revoke_all`](Self::revoke_all) of a user;
///   [`list`](Self::list) a user's live tokens.
///
/// The index holds a user's token keys and is pruned of expired ones whenever it is written
/// or read. A token is stored before it is indexed, and `revoke_all` deletes what the index
/// names in one atomic step, so a concurrent login either is revoked or stays listed: no live
/// token escapes the index.
///
/// # Example
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tower_redis_http::auth::Tokens;
/// use tower_redis_http::store::{MemoryStore, Store};
///
/// #[derive(Serialize, Deserialize)]
/// struct User { id: u64, username: String }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let tokens = Tokens::new(store.clone(), |user: &User| user.id.to_string());
/// let token = tokens.issue(&User { id: 1, username: "alice".into() }).await?;
/// assert_eq!(token.len(), 64);
/// assert!(store.get(&token).await?.is_some());
///
/// assert!(tokens.revoke(&token).await?);
/// assert!(store.get(&token).await?.is_none());
/// # Ok(()) }
/// ```
pub struct Tokens<P> {
    store: AnyStore,
    keys: TokenKeys,
    ttl: Duration,
    index_prefix: Arc<str>,
    durability: Durability,
    user_id: Arc<dyn Fn(&P) -> String + Send + Sync>,
    _principal: PhantomData<fn(&P)>,
}

impl<P> Clone for Tokens<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            keys: self.keys.clone(),
            ttl: self.ttl,
            index_prefix: Arc::clone(&self.index_prefix),
            durability: self.durability,
            user_id: Arc::clone(&self.user_id),
            _principal: PhantomData,
        }
    }
}

impl<P> std::fmt::Debug for Tokens<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("store", &self.store)
            .field("keys", &self.keys)
            .field("ttl", &self.ttl)
            .field("index_prefix", &self.index_prefix)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl<P> Tokens<P>
where
    P: Serialize + DeserializeOwned,
{
    /// Tokens in `store`, indexed per user by `user_id(&principal)`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Tokens;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let tokens = Tokens::new(MemoryStore::new(), |user_id: &u64| user_id.to_string());
    /// ```
    pub fn new(
        store: impl Into<AnyStore>,
        user_id: impl Fn(&P) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            store: store.into(),
            keys: TokenKeys::default(),
            ttl: Duration::from_secs(72 * 3600),
            index_prefix: Arc::from("tokens_of:"),
            durability: Durability::ReplicaIfAny,
            user_id: Arc::new(user_id),
            _principal: PhantomData,
        }
    }

    /// How long an issued token lives. Defaults to 72 hours.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Where tokens are kept; must match the layer's. Defaults to [`TokenKeys::new`].
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::{TokenKeys, TokenStorage, Tokens};
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// let tokens = Tokens::new(MemoryStore::new(), |id: &u64| id.to_string())
    ///     .keys(TokenKeys::new().storage(TokenStorage::Sha256));
    /// ```
    #[must_use]
    pub fn keys(mut self, keys: TokenKeys) -> Self {
        self.keys = keys;
        self
    }

    /// The key prefix of per-user indexes. Defaults to `tokens_of:`.
    #[must_use]
    pub fn index_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.index_prefix = prefix.into();
        self
    }

    /// What a revocation ([`revoke`](Self::revoke), [`revoke_all`](Self::revoke_all)) must
    /// reach before it returns. Defaults to [`Durability::ReplicaIfAny`]: replication is
    /// asynchronous, and a revocation the master took but lost in a failover before any
    /// replica had it would bring the token back. A revocation no replica acknowledged within
    /// the command timeout fails with [`StoreErrorKind::NotReplicated`] (the token is revoked
    /// on the master; revoke again). On a Redis Cluster the wait covers every master the
    /// revocation wrote to.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Tokens;
    /// use tower_redis_http::store::{Durability, MemoryStore};
    ///
    /// let tokens = Tokens::new(MemoryStore::new(), |id: &u64| id.to_string())
    ///     .durability(Durability::Replica);
    /// ```
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    fn index(&self, user_id: &str) -> String {
        format!("{}{user_id}", self.index_prefix)
    }

    /// Where [`revoke_all`](Self::revoke_all) marks a user's revocation, for the logins under
    /// way to see.
    fn revocation(&self, user_id: &str) -> String {
        format!("revoked:{}{user_id}", self.index_prefix)
    }

    /// Issues a new token for `principal` and returns it.
    ///
    /// # Errors
    ///
    /// [`TokenError`] when the store fails, the principal does not encode, the OS has no
    /// randomness, or the TTL is zero.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Tokens;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = Tokens::new(MemoryStore::new(), |id: &u64| id.to_string());
    /// let token = tokens.issue(&42).await?;
    /// assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    /// # Ok(()) }
    /// ```
    pub async fn issue(&self, principal: &P) -> Result<String, TokenError> {
        if self.ttl.is_zero() {
            return Err(TokenError::ZeroTtl);
        }
        let mut random = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut random).map_err(TokenError::Random)?;
        let mut token = String::with_capacity(TOKEN_BYTES * 2);
        hex_into(&random, &mut token);

        let key = self.keys.key(&token);
        let encoded = value::encode(principal)?;
        let user_id = (self.user_id)(principal);
        let index = self.index(&user_id);
        let revocation = self.revocation(&user_id);
        // Stored before indexed, and the user's revocation mark read before and after: a
        // revoke_all marks before it reads the index, so it either finds this token in the
        // index and deletes it, or changed the mark this login reads last, and the login
        // takes its token back. No token issued across a revoke_all outlives it.
        let mark = self.store.get(&revocation).await?;
        self.store.set(&key, encoded, self.ttl.into()).await?;
        self.store.index_add(&index, &key).await?;
        if self.store.get(&revocation).await? != mark {
            self.store.delete(&key).await?;
            self.store.index_remove(&index, &key).await?;
            return Err(TokenError::RevokedWhileIssued);
        }
        Ok(token)
    }

    /// Revokes `token`, telling whether it was live.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`] when the store fails.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Tokens;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = Tokens::new(MemoryStore::new(), |id: &u64| id.to_string());
    /// let token = tokens.issue(&1).await?;
    /// assert!(tokens.revoke(&token).await?);
    /// assert!(!tokens.revoke(&token).await?);
    /// # Ok(()) }
    /// ```
    pub async fn revoke(&self, token: &str) -> Result<bool, TokenError> {
        let key = self.keys.key(token);
        let store = self.store.durable(self.durability);
        let Some(stored) = store.take(&key).await? else {
            return Ok(false);
        };
        // A principal that no longer decodes leaves its index entry to be pruned later.
        if let Ok(principal) = value::decode::<P>(&stored) {
            store
                .index_remove(&self.index(&(self.user_id)(&principal)), &key)
                .await?;
        }
        Ok(true)
    }

    /// Revokes every live token of the user `user_id`, returning how many there were: every
    /// token issued before it ends, those of logins under way included (their `issue` fails
    /// with [`TokenError::RevokedWhileIssued`]).
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of a failed call.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Tokens;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = Tokens::new(MemoryStore::new(), |id: &u64| id.to_string());
    /// tokens.issue(&1).await?;
    /// tokens.issue(&1).await?;
    /// assert_eq!(tokens.revoke_all("1").await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn revoke_all(&self, user_id: &str) -> Result<u64, StoreError> {
        // marked first: a login under way that indexes its token after the index is read
        // below sees the new mark and takes its token back (see `issue`)
        let mut mark = [0u8; 16];
        getrandom::fill(&mut mark)
            .map_err(|err| StoreError::with_source(StoreErrorKind::Server, "no randomness", err))?;
        let store = self.store.durable(self.durability);
        store
            .set(
                &self.revocation(user_id),
                Bytes::from(crate::hex::hex_digest(&mark)),
                self.ttl.into(),
            )
            .await?;
        store.index_delete_all(&self.index(user_id)).await
    }

    /// The live tokens of the user `user_id`.
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of a failed call.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_redis_http::auth::Tokens;
    /// use tower_redis_http::store::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tokens = Tokens::new(MemoryStore::new(), |id: &u64| id.to_string());
    /// tokens.issue(&1).await?;
    /// assert_eq!(tokens.list("1").await?.len(), 1);
    /// assert!(tokens.list("2").await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, user_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let scheme_prefix = self.store.key_scheme().make(" ").ok();
        let scheme_prefix = scheme_prefix.as_deref().map(|p| &p[..p.len() - 1]);
        Ok(self
            .store
            .index_members(&self.index(user_id))
            .await?
            .into_iter()
            .map(|(full_key, ttl)| {
                let key = scheme_prefix
                    .and_then(|prefix| full_key.strip_prefix(prefix))
                    .unwrap_or(&full_key);
                TokenInfo {
                    id: self.keys.id_of(key).to_owned(),
                    expires_in: match ttl {
                        Ttl::Expires(left) => Some(left),
                        Ttl::Persistent | Ttl::Missing => None,
                    },
                }
            })
            .collect())
    }
}
