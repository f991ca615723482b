//! Lua scripts sent by digest, and the connection either Redis topology hands a command.
//!
//! redis-rs's `Script` reloads a script the server has forgotten with `SCRIPT LOAD`, which a
//! cluster client sends to every node: one node down (a failed master not yet forgotten)
//! fails the reload, and with it the request, on every node. [`LuaCall`] sends `EVAL` with
//! the body instead, to the one node the script's first key lives on: that runs the script
//! and caches it there, in the same round trip, whatever the other nodes are doing.

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ToRedisArgs, Value};

/// A Lua script: its body and the SHA-1 digest Redis caches it under.
pub(super) struct Lua {
    digest: String,
    source: &'static str,
}

impl Lua {
    pub(super) fn new(source: &'static str) -> Self {
        Self {
            digest: redis::Script::new(source).get_hash().to_owned(),
            source,
        }
    }

    /// A call of this script with `key` as its first key.
    pub(super) fn key(&'static self, key: impl ToRedisArgs) -> LuaCall {
        LuaCall {
            lua: self,
            keys: key.to_redis_args(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Lua`] script: its keys and arguments.
pub(super) struct LuaCall {
    lua: &'static Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall {
    /// This call, leaving one without keys or arguments in its place.
    pub(super) fn take(&mut self) -> Self {
        Self {
            lua: self.lua,
            keys: std::mem::take(&mut self.keys),
            args: std::mem::take(&mut self.args),
        }
    }

    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Runs the script by digest, and by body when the server has not cached it (a restart,
    /// a `SCRIPT FLUSH`, a promoted replica).
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self
            .command("EVALSHA", &self.lua.digest)
            .query_async(conn)
            .await
        {
            Err(err) if err.code() == Some("NOSCRIPT") => {
                crate::observe::script_reload();
                self.command("EVAL", self.lua.source)
                    .query_async(conn)
                    .await
            }
            result => result,
        }
    }

    fn command(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// The connection a store call runs its commands on: a multiplexed connection to one server,
/// or the cluster client, which routes each command to the node of its key, or sends it to
/// the node an `ASK` named.
#[derive(Clone)]
pub(super) enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// After a `MOVED` or an `ASK`: every command goes to `node`; after an `ASK` each request
    /// is preceded by `ASKING` (on the same connection, in the same write), which lets a node
    /// serve a slot it is importing.
    Redirected {
        conn: ClusterConnection,
        node: SingleNodeRoutingInfo,
        asking: bool,
    },
    /// Sends nothing: keeps the commands a call would send and fails it at once, so that the
    /// cluster client can tell which slot a call is for (redis-rs does not say).
    Dry(Arc<Mutex<Vec<Cmd>>>),
}

impl Conn {
    /// The cluster connection under this one, if it is one.
    pub(super) fn cluster(self) -> Option<ClusterConnection> {
        match self {
            Self::Server(_) | Self::Dry(_) => None,
            Self::Cluster(conn) | Self::Redirected { conn, .. } => Some(conn),
        }
    }
}

/// What a [`Conn::Dry`] answers.
fn dry_run(sent: &Mutex<Vec<Cmd>>, cmds: impl Iterator<Item = Cmd>) -> redis::RedisError {
    if let Ok(mut sent) = sent.lock() {
        sent.extend(cmds);
    }
    redis::RedisError::from((redis::ErrorKind::Client, "a dry run sends nothing"))
}

/// `pipeline`'s commands after an `ASKING`, as a plain pipeline: a transaction's `MULTI` and
/// `EXEC` are written out, after the `ASKING`, since one inside the transaction would come too
/// late for the commands it queues. The replies wanted are then one further on.
fn after_asking(pipeline: &Pipeline) -> Pipeline {
    let mut asking = redis::pipe();
    asking.add_command(redis::cmd("ASKING"));
    if pipeline.is_transaction() {
        asking.add_command(redis::cmd("MULTI"));
    }
    for cmd in pipeline.cmd_iter() {
        asking.add_command(cmd.clone());
    }
    if pipeline.is_transaction() {
        asking.add_command(redis::cmd("EXEC"));
    }
    asking
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Dry(sent) => {
                let err = dry_run(sent, std::iter::once(cmd.clone()));
                Box::pin(std::future::ready(Err(err)))
            }
            Self::Redirected {
                conn,
                node,
                asking: false,
            } => Box::pin(async move {
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(node.clone());
                conn.route_command(cmd.clone(), routing).await
            }),
            Self::Redirected {
                conn,
                node,
                asking: true,
            } => Box::pin(async move {
                let mut asking = redis::pipe();
                asking.add_command(redis::cmd("ASKING"));
                asking.add_command(cmd.clone());
                let mut replies = conn.route_pipeline(asking, 1, 1, node.clone()).await?;
                replies.pop().ok_or_else(no_reply)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Dry(sent) => {
                let err = dry_run(sent, pipeline.cmd_iter().cloned());
                Box::pin(std::future::ready(Err(err)))
            }
            Self::Redirected {
                conn,
                node,
                asking: false,
            } => Box::pin(async move {
                conn.route_pipeline(pipeline.clone(), offset, count, node.clone())
                    .await
            }),
            Self::Redirected {
                conn,
                node,
                asking: true,
            } => Box::pin(async move {
                let asking = after_asking(pipeline);
                let mut replies = conn
                    .route_pipeline(asking, offset + 1, count, node.clone())
                    .await?;
                // a refused transaction's EXEC is an error (EXECABORT) where the caller
                // expects the replies' array: give it as the error it is
                if pipeline.is_transaction() {
                    let exec = replies.pop().ok_or_else(no_reply)?;
                    return Ok(vec![exec.extract_error()?]);
                }
                Ok(replies)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) | Self::Redirected { conn, .. } => conn.get_db(),
            Self::Dry(_) => 0,
        }
    }
}

fn no_reply() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "Redis Cluster sent no reply after ASKING",
    ))
}
