//! Sending a command within the deadline: the lease, the pool, the retry the command allows, a stall.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::RedisError;

use crate::store::{StoreError, StoreErrorKind};

use super::classify::{Retry, breaks_connection, classify, is_demoted, refusal_inside};
use super::cluster::ClusterLinks;
use super::lua::Conn;
use super::outage::Outage;
use super::pool::{Handle, LEASE, Lease, ServerLinks};

/// Where the store's commands go: one server (through a pool) or a cluster.
#[derive(Clone)]
pub(super) enum Links {
    Server(ServerLinks),
    Cluster(Arc<ClusterLinks>),
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(links) => f.debug_tuple("Server").field(&links.pool.state()).finish(),
            Self::Cluster(links) => f.debug_tuple("Cluster").field(links).finish(),
        }
    }
}

/// The one way a command reaches Redis: within the deadline, retried only where the command's
/// [`Retry`] allows, its failure classified and counted, on one server or a cluster.
#[derive(Clone)]
pub(super) struct Transport {
    pub(super) links: Links,
    pub(super) outage: Arc<Outage>,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
}

impl Transport {
    /// A new lease: a multiplexed handle from bb8 (within `deadline`), which later calls share
    /// while it is fresh and unbroken (see [`leased`](Self::leased)).
    pub(super) async fn lease_from_pool(
        &self,
        links: &ServerLinks,
        deadline: tokio::time::Instant,
    ) -> Result<Handle, StoreError> {
        let handle = tokio::time::timeout_at(deadline, self.checkout_from_pool(links))
            .await
            .map_err(|_| {
                links
                    .reachability
                    .recent_failure(self.connect_timeout)
                    .unwrap_or_else(|| {
                        StoreError::new(
                            StoreErrorKind::Timeout,
                            "no Redis connection could be had within the command timeout",
                        )
                    })
            })??;
        if let Ok(mut lease) = links.lease.write() {
            *lease = Some(Lease {
                conn: handle.conn.clone(),
                broken: Arc::clone(&handle.broken),
                opened_at: handle.opened_at,
                taken_at: Instant::now(),
            });
        }
        Ok(handle)
    }

    pub(super) fn leased(links: &ServerLinks) -> Option<Handle> {
        let lease = links.lease.read().ok()?;
        let lease = lease.as_ref()?;
        if lease.broken.load(Ordering::Relaxed)
            || lease.taken_at.elapsed() > LEASE
            || links.reachability.is_suspect(lease.opened_at)
        {
            return None;
        }
        Some(Handle {
            conn: lease.conn.clone(),
            broken: Arc::clone(&lease.broken),
            opened_at: lease.opened_at,
        })
    }

    /// A handle from bb8, skipping connections flagged broken or suspect of having been
    /// dropped with another one (dropping their guard hands them back to bb8, which discards
    /// them).
    pub(super) async fn checkout_from_pool(
        &self,
        links: &ServerLinks,
    ) -> Result<Handle, StoreError> {
        // While the latest connection attempt failed recently and no connection is open,
        // waiting for bb8 would only wait out the timeout. bb8 keeps retrying in the
        // background, and each failure renews the record; the first success clears it.
        if links.pool.state().idle_connections == 0
            && let Some(err) = links.reachability.recent_failure(self.connect_timeout)
        {
            return Err(err);
        }
        loop {
            let pooled = links.pool.get().await.map_err(|err| match err {
                bb8::RunError::User(err) => {
                    match links.reachability.recent_failure(self.connect_timeout) {
                        Some(failure) if failure.kind() == StoreErrorKind::Unsupported => failure,
                        _ => classify("connect", err),
                    }
                }
                bb8::RunError::TimedOut => {
                    match links.reachability.recent_failure(self.connect_timeout) {
                        Some(err) => err,
                        None => StoreError::new(
                            StoreErrorKind::Timeout,
                            "no Redis connection could be had within the connect timeout",
                        ),
                    }
                }
            })?;
            if pooled.broken.load(Ordering::Relaxed)
                || links.reachability.is_suspect(pooled.opened_at)
            {
                pooled.broken.store(true, Ordering::Relaxed);
                continue;
            }
            return Ok(Handle {
                conn: pooled.conn.clone(),
                broken: Arc::clone(&pooled.broken),
                opened_at: pooled.opened_at,
            });
        }
    }

    /// Sends `command` within the command timeout: on one server over the lease (or a
    /// pooled connection), flagging a connection that broke or went silent and retrying once
    /// on a new one where `retry` allows; on a cluster to the node of its slot, following
    /// redirects. Every failure is classified and counted, and an outage of the whole store
    /// logged. The master's acknowledgement is the answer: waiting for a replica is the
    /// store's business (see `RedisStore::run`).
    ///
    /// One deadline, the command timeout, bounds the whole call from checkout to reply,
    /// retry included. On the usual path (a leased connection) that bound is the connection's
    /// own response timeout, with no timer of its own: a second timer per call cost about a
    /// tenth of the throughput (see `benches/store_ratio.rs`). Only a call that has to go to
    /// the pool (a new lease, a retry) arms a timer for what is left of the deadline.
    pub(super) async fn send<T, F, Fut>(
        &self,
        name: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = crate::observe::TIMES_STORE_CALLS.then(Instant::now);
        let result = match &self.links {
            Links::Server(links) => {
                if links.stall.stalled.load(Ordering::Relaxed) {
                    Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!(
                            "Redis {name} not sent: Redis stopped answering within the command timeout; calls fail at once until it answers a ping"
                        ),
                    ))
                } else {
                    self.send_to_server(links, name, retry, command).await
                }
            }
            Links::Cluster(links) => links.run(name, retry, self.command_timeout, command).await,
        };
        if let Some(started) = started {
            crate::observe::store_call(name, started.elapsed());
        }
        if let Err(err) = &result {
            crate::observe::store_error(name, err.kind().label());
        }
        match &result {
            Ok(_) => {
                if self.outage.failing.load(Ordering::Relaxed) {
                    self.outage.recovered();
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    StoreErrorKind::Timeout | StoreErrorKind::Connection
                ) =>
            {
                self.outage.failed();
            }
            Err(_) => {}
        }
        result
    }

    /// A call on `handle` went unanswered for the command timeout: the connection is
    /// flagged broken, and the server is taken as stalled unless the connection was known bad
    /// before (flagged by another call, or opened before a drop was seen). A timeout on a
    /// connection already replaced says nothing about the server, which answers on the new
    /// one: a `CLIENT KILL` whose close never reached one waiting call must fail that call
    /// only, not every call until a ping answers.
    pub(super) fn timed_out(&self, links: &ServerLinks, handle: &Handle) {
        let known_bad = handle.broken.swap(true, Ordering::Relaxed)
            || links.reachability.is_suspect(handle.opened_at);
        if !known_bad {
            self.stalled(links);
        }
    }

    /// A call timed out: calls fail at once from now on, while one task pings until the server
    /// answers (see [`Stall`]).
    pub(super) fn stalled(&self, links: &ServerLinks) {
        links.stall.stalled.store(true, Ordering::Relaxed);
        if links.stall.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // nobody to ping: the next call finds out
            links.stall.stalled.store(false, Ordering::Relaxed);
            links.stall.probing.store(false, Ordering::Relaxed);
            return;
        };
        let transport = self.clone();
        runtime.spawn(async move {
            let Links::Server(links) = &transport.links else {
                return;
            };
            // ends when the server answers, when the trouble becomes another (a refused
            // connection has its own fail-fast), or when this task holds the last handle
            loop {
                let ping =
                    transport
                        .send_to_server(
                            links,
                            "PING",
                            Retry::OnDroppedConnection,
                            |mut conn| async move {
                                redis::cmd("PING").query_async::<()>(&mut conn).await
                            },
                        )
                        .await;
                let still_stalled = ping.is_err_and(|err| err.kind() == StoreErrorKind::Timeout);
                if !still_stalled || Arc::strong_count(&links.stall) == 1 {
                    break;
                }
                // a ping refused at once (the pool's own fail-fast) must not spin
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            links.stall.stalled.store(false, Ordering::Relaxed);
            links.stall.probing.store(false, Ordering::Relaxed);
        });
    }

    /// [`send`](Self::send) on one server.
    pub(super) async fn send_to_server<T, F, Fut>(
        &self,
        links: &ServerLinks,
        name: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.command_timeout);
        let mut tries_left = if retry == Retry::OnDroppedConnection {
            2
        } else {
            1
        };
        let mut refused_once = false;
        loop {
            tries_left -= 1;
            let (handle, result) = match Self::leased(links) {
                Some(handle) => {
                    let result = command(Conn::Server(handle.conn.clone())).await;
                    (handle, result)
                }
                None => {
                    let handle = match self.lease_from_pool(links, deadline).await {
                        Ok(handle) => handle,
                        Err(err) => {
                            if err.kind() == StoreErrorKind::Timeout {
                                // no connection within the deadline: nothing answered
                                self.stalled(links);
                            }
                            return Err(err);
                        }
                    };
                    let attempt = command(Conn::Server(handle.conn.clone()));
                    match tokio::time::timeout_at(deadline, attempt).await {
                        Ok(result) => (handle, result),
                        Err(_) => {
                            self.timed_out(links, &handle);
                            return Err(StoreError::new(
                                StoreErrorKind::Timeout,
                                format!("Redis {name} took longer than the command timeout"),
                            ));
                        }
                    }
                }
            };
            let err = match result {
                Ok(value) => return Ok(value),
                // a transaction refused as a whole shows why inside its EXECABORT
                Err(err) => refusal_inside(err),
            };
            if is_demoted(&err) {
                // The server this connection reaches is a replica now (a failover behind a
                // managed "primary endpoint" or a moved DNS name): every connection opened
                // before may reach it too, and writing through them would fail forever.
                // Redis refused the command without running it, so sending it once more, on
                // a new connection, cannot run it twice, whatever the command.
                handle.broken.store(true, Ordering::Relaxed);
                links.reachability.dropped_before(Instant::now());
                if !refused_once {
                    refused_once = true;
                    tries_left = tries_left.max(1);
                    tracing::debug!(command = name, error = %err, "Redis answered READONLY; retrying on a new connection");
                    continue;
                }
                return Err(classify(name, err));
            }
            if err.is_timeout() {
                // A connection that stays silent past the timeout may be half-open (a peer
                // gone without a reset); replacing it costs one reconnect, keeping it may
                // cost every later call a timeout.
                self.timed_out(links, &handle);
            } else if breaks_connection(&err) {
                handle.broken.store(true, Ordering::Relaxed);
                if err.is_connection_dropped() {
                    // Every connection opened before the drop was seen may have gone with
                    // it; a healthy one among them costs one reconnect, a dead one a retry.
                    links.reachability.dropped_before(Instant::now());
                    if tries_left > 0 {
                        tracing::debug!(command = name, error = %err, "Redis connection dropped; retrying on a new one");
                        continue;
                    }
                }
            }
            return Err(classify(name, err));
        }
    }
}
