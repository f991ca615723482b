//! Lua scripts sent by digest, and the connection either Redis topology hands a command.
//!
//! redis-rs's `Script` reloads a script the server has forgotten with `SCRIPT LOAD`, which a
//! cluster client sends to every node: one node down (a failed master not yet forgotten)
//! fails the reload, and with it the request, on every node. [`LuaCall`] sends `EVAL` with
//! the body instead, to the one node the script's first key lives on: that runs the script
//! and caches it there, in the same round trip, whatever the other nodes are doing.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
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
/// or the cluster client, which routes each command to the node of its key.
#[derive(Clone)]
pub(super) enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
