//! [`RedisStore`](super::RedisStore) on a Redis Cluster: the client, and how a call survives a
//! failover, a migration, an unreachable or a stalled node. The operations that touch keys in
//! more than one hash slot are in `multi_slot` and `sweep`, over the transport.
//!
//! Read bottom-up: `nodes` (the slot map and stalled nodes), `redirect` (`MOVED`, `ASK`, and
//! addresses that cannot be reached), `links` (a call sent, re-sent and bounded).
//!
//! # What holds on a cluster
//!
//! Every operation on one key, and every script, runs on the node of its key's slot, atomic as
//! on one server. The cache keeps an entry, its Vary list, its lock and its URL's index under
//! one `{hash tag}`, so its scripts stay single steps. Three operations cannot, since their
//! keys live in other slots by design, and run as several steps instead:
//!
//! - **Token indexes** (`index_add`, `index_members`, `index_delete_all`): a user's index and
//!   the token keys it lists live in different slots (a token is looked up by itself alone).
//!   A token is stored before it is indexed and an index only drops members whose keys are
//!   gone, so no live token is ever missing from its user's index; `index_delete_all` deletes
//!   the members it read, then removes exactly those from the index, so a token issued while
//!   it runs stays listed (and revocable) rather than escaping.
//! - **`bump_version`** moves a value between two versions of a key, two slots: `DUMP`,
//!   `RESTORE`, `DEL`, as Django's own `incr_version` does in three steps; of concurrent moves
//!   one reports the move. A write to the old version in between is lost, as in Django.
//! - **`set_many`** is atomic per hash slot: one `MULTI` per slot, all sent at once.
//!
//! **Pattern deletion** (the cache's `invalidate_matching`) runs `SCAN` master by master: a
//! cluster has no keyspace-wide cursor. A slot that moves while it runs can carry keys from a
//! master not yet swept to one already swept. So a sweep reads every master's own account of
//! itself (its slots, config epoch and migration markers) before and after, sweeps a master
//! that migrates a slot before the one that imports it, and sweeps again when the accounts
//! changed, when a master it did not sweep serves slots (one failed, or one the listing node
//! had not heard of), or when slots migrate to a node it did not sweep; at most three passes,
//! each command within the command timeout. A cluster whose slots still move after the third
//! fails the call with [`StoreErrorKind::Connection`](super::StoreErrorKind::Connection), whose
//! message says how many keys were deleted and that matching keys may remain: never a success
//! that left keys behind. See `sweep.rs` for why an unchanged account means no key slipped past.
//!
//! # Failover
//!
//! redis-rs re-sends a command whose connection dropped, which would count a rate-limit hit or
//! take a flag twice. The store turns the client's own retries off and retries itself, by what
//! the error says about the command: refused unrun (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `READONLY`, a refused connection) is sent again once the client has learned
//! the new slot map, whatever the command; a dropped connection is retried only for commands
//! whose second run changes nothing (see [`RedisStore`]'s list). All within the command
//! timeout.
//!
//! A `MOVED` or an `ASK` (a slot in the middle of a migration, the key on the importing node
//! or on none yet) is followed at once: the command is sent to the node it names (after
//! `ASKING` in the same write for an `ASK`), scripts and transactions included; a refusal
//! inside a transaction's `EXECABORT` counts as the plain one. The slot map does not change
//! until the migration ends, so sending the command again to the slot's owner would only meet
//! the same `ASK` until the timeout.
//!
//! A call follows at most five `MOVED` and `ASK` replies: a slot that moved costs one, a
//! migration one or two more. More mean nodes that disagree on who serves the slot (each
//! naming the other), and the call fails with
//! [`StoreErrorKind::Connection`](super::StoreErrorKind::Connection) saying so, instead of
//! bouncing between them until the timeout.
//!
//! # Nodes that cannot be reached
//!
//! Nodes tell clients their addresses (`CLUSTER SLOTS`, `MOVED`, `ASK`). A node behind NAT or
//! in a container can announce one that clients cannot reach (`cluster-announce-ip`,
//! `cluster-announce-port`, `cluster-announce-hostname`), and the client then holds no
//! connection to it. A call the cluster sends to such a node is checked at once: the store
//! opens a TCP connection to the address, within the connect timeout and the call's deadline.
//! Refused, or silent for the whole connect timeout, the call fails with an error that names
//! the address and those settings (`Connection` when refused, `Timeout` when silent), and calls
//! sent there within the next connect timeout fail at once with the same. An address that
//! answers is a node the client has not connected to yet (one that serves no slot yet), and
//! the call is sent again, as before, until its deadline.
//!
//! # Nodes that stop answering
//!
//! A node that stops answering (stalled, paused, a silent network) costs its keys one command
//! timeout, not one per call, as one server does (see [`RedisStore`]): after a call's first
//! attempt timed out, calls for any key of that node fail at once with `Timeout` while one
//! task pings the node; the first answer ends it, a moment after the node is back. Calls for
//! the other nodes go on. redis-rs does not say where it sent a command, so the store reads
//! the slot from the commands a call sends (a dry run, only while a node is stalled or after
//! a timeout) and finds the node in a slot map of its own (`CLUSTER SLOTS`, loaded once in the
//! background, and again by each probe, from the stalled master's replica). Before the first
//! map is in, a timeout stops its one slot, and calls wait for the probe's map, about one
//! round trip, to tell whether they are for that node.

mod links;
mod nodes;
mod redirect;

pub(super) use self::links::{ClusterLinks, cluster_conn, dry_run_slot, master_of, timed_out};
