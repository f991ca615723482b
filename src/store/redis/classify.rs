//! How a Redis failure is sorted: its store error kind, what it says of the connection, and whether a command may be sent again.

use std::time::Duration;

use redis::RedisError;

use crate::store::{StoreError, StoreErrorKind};

/// What the server said when it refused a new connection's `SELECT`, if that is how the
/// connection failed (redis-rs reports it as "refused to switch database").
pub(super) fn refused_select(err: &RedisError) -> Option<String> {
    Some(err.to_string())
        .filter(|text| text.contains("refused to switch database"))
        .map(|text| {
            text.rsplit_once(": ")
                .map_or(text.clone(), |(_, detail)| detail.to_owned())
        })
}

/// Whether a command may be sent a second time when the first attempt found the connection
/// dropped: only if running it twice has the effect of running it once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    OnDroppedConnection,
    Never,
}

/// Whether Redis refused a write because the server is a replica (`READONLY`, also inside a
/// script's error): the connection reaches a demoted master.
pub(super) fn is_demoted(err: &RedisError) -> bool {
    err.code() == Some("READONLY")
        || err
            .detail()
            .is_some_and(|detail| detail.contains("READONLY"))
}

/// The refusal inside a transaction Redis refused as a whole (`EXECABORT`): a queued command
/// answered `READONLY` (a demoted master), `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN` (a
/// cluster's topology change). Nothing in the transaction ran, so it is the same refusal as
/// the plain error, and is handled as one; any other error is returned as it is.
pub(super) fn refusal_inside(err: RedisError) -> RedisError {
    if !matches!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
    ) {
        return err;
    }
    let refusal = err.clone().into_server_errors().and_then(|errors| {
        errors.iter().find_map(|(_, inner)| {
            let inner = RedisError::from(inner.clone());
            let refused = is_demoted(&inner)
                || matches!(
                    inner.retry_method(),
                    redis::RetryMethod::MovedRedirect
                        | redis::RetryMethod::AskRedirect
                        | redis::RetryMethod::RefreshSlotsAndRetry
                        | redis::RetryMethod::WaitAndRetry
                );
            refused.then_some(inner)
        })
    });
    refusal.unwrap_or(err)
}

pub(super) fn breaks_connection(err: &RedisError) -> bool {
    err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || err.is_timeout()
        || err.is_io_error()
}

pub(super) fn classify(command: &'static str, err: RedisError) -> StoreError {
    let kind = if err.is_timeout() {
        StoreErrorKind::Timeout
    } else if breaks_connection(&err) || is_demoted(&err) {
        StoreErrorKind::Connection
    } else if err.code() == Some("OOM") {
        StoreErrorKind::CapacityExceeded
    } else if err.code() == Some("INVALIDVALUE")
        // a value read as an index, or the reverse: the memory store's kind for it too; inside
        // a transaction's replies it comes without a code of its own
        || err.code() == Some("WRONGTYPE")
        || err.to_string().contains("WRONGTYPE")
        || err
            .detail()
            .is_some_and(|detail| detail.contains("not an integer") || detail.contains("overflow"))
    {
        StoreErrorKind::InvalidValue
    } else if err.code().is_some() {
        StoreErrorKind::Server
    } else {
        StoreErrorKind::Connection
    };
    StoreError::with_source(kind, format!("Redis {command} failed"), err)
}

pub(super) fn unexpected_reply(command: &'static str, detail: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Server,
        format!("Redis {command} gave an unexpected reply: {detail}"),
    )
}

/// The replicas a master's `INFO replication` counts.
pub(super) fn connected_replicas(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) fn to_duration_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The error of a read that outlasted its deadline, as redis-rs reports its own timeouts.
pub(super) fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use redis::RedisError;

    use super::{breaks_connection, classify, is_demoted};
    use crate::store::StoreErrorKind;

    /// The error redis-rs makes of an error reply.
    fn reply(text: &str) -> RedisError {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
            .expect("an error reply parses")
            .extract_error()
            .expect_err("an error reply is an error")
    }

    fn io(kind: std::io::ErrorKind) -> RedisError {
        RedisError::from(std::io::Error::from(kind))
    }

    #[test]
    fn sorts_each_failure_into_its_kind() {
        use std::io::ErrorKind as Io;
        // (error, kind, whether the connection is to be dropped, whether a demoted master)
        let cases = [
            (io(Io::TimedOut), StoreErrorKind::Timeout, true, false),
            (
                io(Io::ConnectionReset),
                StoreErrorKind::Connection,
                true,
                false,
            ),
            (io(Io::BrokenPipe), StoreErrorKind::Connection, true, false),
            (
                io(Io::ConnectionRefused),
                StoreErrorKind::Connection,
                true,
                false,
            ),
            (
                reply("READONLY You can't write against a read only replica."),
                StoreErrorKind::Connection,
                false,
                true,
            ),
            (
                reply("ERR Error running script: @user_script:1: READONLY You can't write"),
                StoreErrorKind::Connection,
                false,
                true,
            ),
            (
                reply("OOM command not allowed when used memory > 'maxmemory'."),
                StoreErrorKind::CapacityExceeded,
                false,
                false,
            ),
            (
                reply("WRONGTYPE Operation against a key holding the wrong kind of value"),
                StoreErrorKind::InvalidValue,
                false,
                false,
            ),
            (
                reply("ERR value is not an integer or out of range"),
                StoreErrorKind::InvalidValue,
                false,
                false,
            ),
            (
                reply("ERR increment or decrement would overflow"),
                StoreErrorKind::InvalidValue,
                false,
                false,
            ),
            (
                reply("NOSCRIPT No matching script. Please use EVAL."),
                StoreErrorKind::Server,
                false,
                false,
            ),
            (
                reply("ERR unknown command 'FOO'"),
                StoreErrorKind::Server,
                false,
                false,
            ),
        ];
        for (err, kind, breaks, demoted) in cases {
            let text = err.to_string();
            assert_eq!(
                breaks_connection(&err),
                breaks,
                "breaks the connection: {text}"
            );
            assert_eq!(is_demoted(&err), demoted, "a demoted master: {text}");
            assert_eq!(classify("TEST", err).kind(), kind, "{text}");
        }
    }
}
