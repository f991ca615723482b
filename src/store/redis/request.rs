//! Commands as values: what a store call sends, built once and sent as it is on every attempt.

use redis::{Cmd, FromRedisValue, Pipeline, RedisResult};

use super::lua::{Conn, LuaCall};

// The `&mut` forms take what redis-rs's builders return (`redis::cmd("GET").arg(key)`),
// leaving an empty builder behind rather than copying the arguments.

/// One request to Redis: a command, a pipeline (a transaction when atomic) or a script call.
/// The transport sends the same value again when the command's retry rule allows.
pub(super) enum Request {
    Command(Cmd),
    Pipeline(Pipeline),
    Script(LuaCall),
}

impl Request {
    /// Sends the request on `conn` and decodes the reply: what the transport calls on each
    /// attempt (`|conn| request.send(conn)`).
    pub(super) async fn send<T: FromRedisValue>(&self, mut conn: Conn) -> RedisResult<T> {
        match self {
            Self::Command(cmd) => cmd.query_async(&mut conn).await,
            Self::Pipeline(pipe) => pipe.query_async(&mut conn).await,
            Self::Script(call) => call.invoke(&mut conn).await,
        }
    }
}

impl From<Cmd> for Request {
    fn from(cmd: Cmd) -> Self {
        Self::Command(cmd)
    }
}

impl From<&mut Cmd> for Request {
    fn from(cmd: &mut Cmd) -> Self {
        Self::Command(cmd.take())
    }
}

impl From<Pipeline> for Request {
    fn from(pipe: Pipeline) -> Self {
        Self::Pipeline(pipe)
    }
}

impl From<&mut Pipeline> for Request {
    fn from(pipe: &mut Pipeline) -> Self {
        Self::Pipeline(std::mem::replace(pipe, redis::pipe()))
    }
}

impl From<LuaCall> for Request {
    fn from(call: LuaCall) -> Self {
        Self::Script(call)
    }
}

impl From<&mut LuaCall> for Request {
    fn from(call: &mut LuaCall) -> Self {
        Self::Script(call.take())
    }
}
