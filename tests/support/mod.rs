//! Test support: an isolated `redis-server` per test, and polling helpers.
//!
//! Each [`TestRedis`] runs its own server on a free loopback port with persistence off, and
//! kills and reaps it when dropped, so tests never depend on a server already running or on
//! what an earlier test left behind.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` owned by one test.
#[derive(Debug)]
pub struct TestRedis {
    binary: String,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    /// The TLS port, for a server started with [`TestRedis::start_tls`].
    tls_port: Option<u16>,
    /// The cluster bus port, for a node of a [`TestCluster`].
    bus_port: Option<u16>,
    /// A configuration file's text, written to the scratch directory and given first (a
    /// sentinel rewrites its configuration file, so it needs one).
    config: Option<String>,
}

impl TestRedis {
    /// Starts a server on a free port.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed (the message names the package), or the server
    /// does not answer PING within 10 seconds.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments, e.g. `["--requirepass", "pw"]`;
    /// `{dir}` in an argument stands for the server's scratch directory.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_binary("redis-server", extra_args)
    }

    /// Starts the server binary at `binary` (a name looked up in `PATH`, or a path).
    pub fn start_binary(binary: &str, extra_args: &[&str]) -> Self {
        Self::start_configured(binary, None, extra_args)
    }

    /// Starts a sentinel on a free port watching the master `service` at `master_port`,
    /// which it declares down after 1 s of silence (`quorum` sentinels must agree).
    pub fn start_sentinel(service: &str, master_port: u16, quorum: u32) -> Self {
        Self::start_sentinel_with(service, master_port, quorum, "")
    }

    /// A sentinel (quorum 1) that asks its clients for `password`, watching a master whose
    /// password is `master-pw`.
    pub fn start_with_sentinel_password(master_port: u16, password: &str) -> Self {
        let extra = format!(
            "sentinel auth-pass {} master-pw\nrequirepass {password}\n",
            TestSentinels::SERVICE
        );
        Self::start_sentinel_with(TestSentinels::SERVICE, master_port, 1, &extra)
    }

    /// A sentinel (quorum 1) that speaks TLS on [`tls_url`](Self::tls_url) (its plain port
    /// stays open) and reaches the master it watches, at `master_tls_port`, over TLS.
    pub fn start_tls_sentinel(master_tls_port: u16) -> Self {
        let certificates = TestCertificates::get();
        let path = |name: &str| certificates.path(name).to_string_lossy().into_owned();
        let extra = format!(
            "tls-port {{tls_port}}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n",
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
        );
        Self::start_sentinel_with(TestSentinels::SERVICE, master_tls_port, 1, &extra)
    }

    /// The TLS port of a server started with [`start_tls`](Self::start_tls).
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("a server started with TLS")
    }

    /// A sentinel with `extra` lines in its configuration file.
    fn start_sentinel_with(service: &str, master_port: u16, quorum: u32, extra: &str) -> Self {
        let config = format!(
            "sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n\
             sentinel down-after-milliseconds {service} 1000\n\
             sentinel failover-timeout {service} 3000\n\
             sentinel parallel-syncs {service} 1\n{extra}"
        );
        Self::start_configured("redis-server", Some(&config), &["--sentinel"])
    }

    /// Starts a server on a free port. `{tls_port}` and `{bus_port}` in `config` or
    /// `extra_args` stand for further free ports, chosen anew with the server's own port on
    /// each attempt.
    fn start_configured(binary: &str, config: Option<&str>, extra_args: &[&str]) -> Self {
        static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-redis-http-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let mentions = |placeholder: &str| {
            config.is_some_and(|config| config.contains(placeholder))
                || extra_args.iter().any(|arg| arg.contains(placeholder))
        };
        let (wants_tls_port, wants_bus_port) = (mentions("{tls_port}"), mentions("{bus_port}"));
        // Another process can bind a port between `free_port` and the server's bind; try a
        // few, each time with every port chosen anew.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let tls_port = wants_tls_port.then(free_port);
            let bus_port = wants_bus_port.then(free_port);
            let fill = |text: &str| {
                let mut text = text.replace("{dir}", &dir.to_string_lossy());
                if let Some(tls_port) = tls_port {
                    text = text.replace("{tls_port}", &tls_port.to_string());
                }
                if let Some(bus_port) = bus_port {
                    text = text.replace("{bus_port}", &bus_port.to_string());
                }
                text
            };
            let mut server = Self {
                binary: binary.to_owned(),
                port,
                dir: dir.clone(),
                extra_args: extra_args.iter().map(|arg| fill(arg)).collect(),
                child: None,
                tls_port,
                bus_port,
                config: config.map(fill),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Starts a server that also speaks TLS, with the test CA's server certificate, on
    /// [`tls_url`](Self::tls_url); the plain port stays open for the test's own commands.
    /// With `client_auth`, TLS clients must show a certificate the test CA signed.
    pub fn start_tls(client_auth: bool) -> Self {
        Self::start_tls_with(client_auth, &[])
    }

    /// [`start_tls`](Self::start_tls) with extra command-line arguments.
    pub fn start_tls_with(client_auth: bool, extra_args: &[&str]) -> Self {
        let certificates = TestCertificates::get();
        let path = |name: &str| certificates.path(name).to_string_lossy().into_owned();
        let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
        let auth = if client_auth { "yes" } else { "no" };
        let mut args = vec![
            "--tls-port",
            "{tls_port}",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            auth,
        ];
        args.extend_from_slice(extra_args);
        Self::start_with(&args)
    }

    /// `rediss://127.0.0.1:<tls port>`, for a server started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    fn spawn(&mut self) -> Result<(), String> {
        // created here, not once: a failed attempt's drop removes it
        std::fs::create_dir_all(&self.dir).map_err(|err| format!("scratch directory: {err}"))?;
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            let file = self.dir.join("node.conf");
            std::fs::write(&file, config).map_err(|err| format!("configuration file: {err}"))?;
            command.arg(file);
        }
        let mut child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                if err.kind() == std::io::ErrorKind::NotFound {
                    panic!(
                        "redis-server is not installed; the integration tests start their own. \
                         Install the `redis-server` package (`apt-get install redis-server`), \
                         or run ./scripts/test.sh, which does."
                    )
                }
                panic!("could not run redis-server: {err}")
            });
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
                return Err(format!(
                    "redis-server exited with {status} (port {} taken?)",
                    self.port
                ));
            }
            if self.ping() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no PONG on port {} within {STARTUP_DEADLINE:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        // Any answer shows the server is up; one with `requirepass` answers `-NOAUTH`.
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The scratch directory (for unix sockets).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Stops the server process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// Kills the server, dropping every connection and all data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a new one on the same port, as a Redis restart does.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // the old socket may linger for a moment
                Err(err) if Instant::now() > deadline => panic!("restart failed: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Runs one command over a fresh connection, returning the reply in a readable form
    /// (bulk strings as text, integers as digits, nil as `(nil)`, arrays one item a line).
    /// Independent of the crate under test, so tests can check what it wrote.
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to test redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).expect("send command");
        let mut reader = BufReader::new(stream);
        read_reply(&mut reader)
    }
}

impl TestRedis {
    /// Whether this master's replicas have acknowledged everything it has written (a `WAIT`
    /// on a fresh connection waits for nothing: it has written nothing).
    pub fn replicas_caught_up(&self) -> bool {
        let info = self.command(&["INFO", "replication"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::to_owned)
        };
        let Some(written) = field("master_repl_offset:").and_then(|n| n.trim().parse::<u64>().ok())
        else {
            return false;
        };
        let replicas: Vec<u64> = info
            .lines()
            .filter(|line| line.starts_with("slave") && line.contains("state=online"))
            .filter_map(|line| {
                line.split(',')
                    .find_map(|part| part.strip_prefix("offset="))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        !replicas.is_empty() && replicas.iter().all(|&acknowledged| acknowledged >= written)
    }
}

fn read_reply(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read reply");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => rest.to_owned(),
        "-" => format!("ERR:{rest}"),
        "$" => {
            let Ok(len) = rest.parse::<usize>() else {
                return "(nil)".to_owned();
            };
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf).expect("read bulk string");
            buf.truncate(len);
            String::from_utf8_lossy(&buf).into_owned()
        }
        "*" => {
            let count: i64 = rest.parse().expect("array length");
            (0..count.max(0))
                .map(|_| read_reply(reader))
                .collect::<Vec<_>>()
                .join("\n")
        }
        other => panic!("unexpected reply type {other:?}"),
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // SIGKILL also ends a paused (SIGSTOPped) server.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// A master, its replica, and three sentinels watching them as [`TestSentinels::SERVICE`]
/// (quorum 2, a master declared down after 1 s).
pub struct TestSentinels {
    pub master: TestRedis,
    pub replica: TestRedis,
    pub sentinels: Vec<TestRedis>,
}

impl TestSentinels {
    pub const SERVICE: &'static str = "mymaster";

    pub fn start() -> Self {
        let master = TestRedis::start();
        let port = master.port().to_string();
        let replica = TestRedis::start_with(&["--replicaof", "127.0.0.1", &port]);
        let sentinels = (0..3)
            .map(|_| TestRedis::start_sentinel(Self::SERVICE, master.port(), 2))
            .collect();
        Self {
            master,
            replica,
            sentinels,
        }
    }

    /// The sentinels' `host:port` addresses.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port()))
            .collect()
    }

    /// Waits until every sentinel knows the replica and the two other sentinels, which a
    /// failover needs, and the replica is in sync; `false` when that takes longer than
    /// `deadline`.
    pub fn wait_until_ready(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            let ready = self.sentinels.iter().all(|sentinel| {
                let master = sentinel.command(&["SENTINEL", "MASTER", Self::SERVICE]);
                let field = |name: &str| {
                    let mut lines = master.lines();
                    while let Some(line) = lines.next() {
                        if line == name {
                            return lines.next().and_then(|n| n.parse::<u32>().ok());
                        }
                    }
                    None
                };
                field("num-slaves") >= Some(1) && field("num-other-sentinels") >= Some(2)
            });
            // and the replica has finished its first sync: it acknowledges writes from then on
            if ready
                && self
                    .replica
                    .command(&["INFO", "replication"])
                    .contains("master_link_status:up")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The port of the server the sentinels name master now.
    pub fn master_port(&self) -> Option<u16> {
        let reply =
            self.sentinels[0].command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::SERVICE]);
        reply.lines().nth(1)?.parse().ok()
    }
}

/// Raw commands to a test deployment, independent of the crate under test, so that cases
/// can check what it wrote: one server, or a whole cluster.
pub trait RawRedis: std::fmt::Debug + Send + Sync {
    /// Runs one command, returning the reply as [`TestRedis::command`] does.
    fn command(&self, args: &[&str]) -> String;
}

impl RawRedis for TestRedis {
    fn command(&self, args: &[&str]) -> String {
        TestRedis::command(self, args)
    }
}

/// A Redis Cluster of three masters, each with one replica, on free ports; every node with an
/// explicit cluster bus port (the default, port + 10000, may be another test's free port) and
/// a node timeout of 1 s, so that a killed master is replaced in about 2.5 s.
#[derive(Debug)]
pub struct TestCluster {
    pub nodes: Vec<TestRedis>,
    /// Ports nodes announce in place of their own (`announced`, `nodes` index).
    announced: std::sync::Mutex<Vec<(u16, usize)>>,
}

impl TestCluster {
    /// Starts six nodes and joins them, the first three masters of a third of the slots each.
    ///
    /// # Panics
    ///
    /// When a node does not start, or the cluster is not serving every slot with synced
    /// replicas within 20 s.
    pub fn start() -> Self {
        Self::start_nodes(false)
    }

    /// A cluster whose nodes also speak TLS, to clients and to each other (the test CA's
    /// server certificate); a TLS client is told the nodes' TLS ports.
    pub fn start_tls() -> Self {
        Self::start_nodes(true)
    }

    /// The seed node URLs of a cluster started with [`start_tls`](Self::start_tls).
    pub fn tls_seeds(&self) -> Vec<String> {
        self.nodes.iter().take(3).map(TestRedis::tls_url).collect()
    }

    fn start_nodes(tls: bool) -> Self {
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            let start = |args: &[&str]| {
                if tls {
                    // nodes and replicas show each other the client certificate: the cluster
                    // bus and replication authenticate both ends
                    let certificates = TestCertificates::get();
                    let path = |name: &str| certificates.path(name).to_string_lossy().into_owned();
                    let (cert, key) = (path("client.pem"), path("client.key"));
                    let mut args = args.to_vec();
                    args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                    args.extend([
                        "--tls-client-cert-file",
                        &cert,
                        "--tls-client-key-file",
                        &key,
                    ]);
                    TestRedis::start_tls_with(false, &args)
                } else {
                    TestRedis::start_with(args)
                }
            };
            nodes.push(start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "{dir}/nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-port",
                "{bus_port}",
                // a replica's first sync starts at once instead of after 5 s
                "--repl-diskless-sync-delay",
                "0",
            ]));
        }
        let cluster = Self {
            nodes,
            announced: std::sync::Mutex::default(),
        };
        for (i, node) in cluster.nodes.iter().enumerate() {
            // distinct epochs, as redis-cli gives, so that no collision has to be resolved
            node.command(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]);
        }
        for (node, range) in cluster
            .nodes
            .iter()
            .zip([(0, 5460), (5461, 10922), (10923, 16383)])
        {
            let reply = node.command(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &range.0.to_string(),
                &range.1.to_string(),
            ]);
            assert_eq!(reply, "OK", "ADDSLOTSRANGE");
        }
        // every node meets every other at once, rather than learning of them by gossip; on a
        // loaded machine a handshake can time out, so the meetings are repeated every 2 s
        // until everyone knows everyone (a repeated MEET is harmless)
        let meet_everyone = || {
            for (i, from) in cluster.nodes.iter().enumerate() {
                for node in cluster.nodes.iter().skip(i + 1) {
                    // a TLS cluster's nodes know each other by their TLS ports
                    let port = node.tls_port.unwrap_or(node.port());
                    let bus = node.bus_port.expect("a cluster node has a bus port");
                    let reply = from.command(&[
                        "CLUSTER",
                        "MEET",
                        "127.0.0.1",
                        &port.to_string(),
                        &bus.to_string(),
                    ]);
                    assert_eq!(reply, "OK", "CLUSTER MEET");
                }
            }
        };
        meet_everyone();
        let until = Instant::now() + Duration::from_secs(20);
        let everyone_met = || {
            cluster.nodes.iter().all(|node| {
                let known = node.command(&["CLUSTER", "NODES"]);
                known.lines().count() == 6 && !known.contains("handshake")
            })
        };
        let mut met_at = Instant::now();
        while !everyone_met() {
            assert!(
                Instant::now() < until,
                "the cluster's nodes did not meet: {}",
                cluster.nodes[0].command(&["CLUSTER", "NODES"])
            );
            if met_at.elapsed() > Duration::from_secs(2) {
                meet_everyone();
                met_at = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..3 {
            let master = cluster.nodes[i].command(&["CLUSTER", "MYID"]);
            loop {
                let reply = cluster.nodes[i + 3].command(&["CLUSTER", "REPLICATE", &master]);
                if reply == "OK" {
                    break;
                }
                // the replica may not know the master's id yet
                assert!(Instant::now() < until, "CLUSTER REPLICATE: {reply}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            cluster.wait_until_healthy(until.saturating_duration_since(Instant::now())),
            "the cluster did not come up"
        );
        cluster
    }

    /// The seed node URLs a store is built from.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().take(3).map(TestRedis::url).collect()
    }

    fn live_nodes(&self) -> impl Iterator<Item = &TestRedis> {
        self.nodes.iter().filter(|node| node.child.is_some())
    }

    /// The running nodes that are masters now.
    pub fn masters(&self) -> Vec<&TestRedis> {
        self.live_nodes().filter(|node| is_master(node)).collect()
    }

    /// The index in [`nodes`](Self::nodes) of the master that serves `key` now.
    ///
    /// # Panics
    ///
    /// When no running master serves it.
    pub fn master_of(&self, key: &str) -> usize {
        self.serving_master_of(key)
            .expect("a running master serves every slot")
    }

    /// The index of the running master that serves `key` by its own account, if one does.
    pub fn serving_master_of(&self, key: &str) -> Option<usize> {
        let slot: u16 = self
            .command(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("a slot");
        self.nodes
            .iter()
            .position(|node| node.child.is_some() && is_master(node) && serves(node, slot))
    }

    /// Waits until every live node sees the cluster serving every slot (`cluster_state:ok`)
    /// and every master has a synced replica; `false` after `deadline`.
    pub fn wait_until_healthy(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            let ok = self.live_nodes().all(|node| {
                node.command(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            let synced = self.live_nodes().all(|node| {
                let info = node.command(&["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            if ok && synced {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Makes node `node` tell clients (`CLUSTER SLOTS`, `MOVED`, `ASK`) that it listens on
    /// `port` (`cluster-announce-port`), its cluster bus unchanged, as a node behind NAT or
    /// in a container announces an address of its own; returns once every live node tells
    /// the same.
    ///
    /// # Panics
    ///
    /// When the nodes do not all tell the new port within 20 s.
    pub fn announce_port(&self, node: usize, port: u16) {
        let reply = self.nodes[node].command(&[
            "CONFIG",
            "SET",
            "cluster-announce-port",
            &port.to_string(),
        ]);
        assert_eq!(reply, "OK", "CONFIG SET cluster-announce-port");
        self.announced
            .lock()
            .expect("announced lock")
            .push((port, node));
        let id = self.nodes[node].command(&["CLUSTER", "MYID"]);
        let announced = format!(" 127.0.0.1:{port}@");
        let until = Instant::now() + Duration::from_secs(20);
        while !self.live_nodes().all(|other| {
            other
                .command(&["CLUSTER", "NODES"])
                .lines()
                .any(|line| line.starts_with(&id) && line.contains(&announced))
        }) {
            assert!(
                Instant::now() < until,
                "the nodes did not learn node {node}'s announced port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A relay in front of each master, which the master announces as its address: a store
    /// then reaches every master through its relay (at `relays[i]` for `nodes[i]`), while the
    /// test's own commands and the cluster bus go straight to the nodes.
    pub fn masters_behind_relays(&self) -> Vec<TestRelay> {
        (0..3)
            .map(|node| {
                let relay = TestRelay::start(self.nodes[node].port());
                self.announce_port(node, relay.port());
                relay
            })
            .collect()
    }

    /// Waits until every live node sees the cluster serving every slot; `false` after
    /// `deadline`.
    pub fn wait_until_serving(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if self.live_nodes().all(|node| {
                node.command(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            }) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// Whether `node` is a master now (asked with `INFO`, which cases that count commands allow).
fn is_master(node: &TestRedis) -> bool {
    node.command(&["INFO", "replication"])
        .contains("role:master")
}

/// Whether `node` serves `slot`, by its own `CLUSTER NODES` (its `myself` line, whatever
/// address it announces).
fn serves(node: &TestRedis, slot: u16) -> bool {
    node.command(&["CLUSTER", "NODES"]).lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.len() > 8
            && fields[2].contains("myself")
            && fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
            })
    })
}

impl RawRedis for TestCluster {
    /// Keyed commands go to the node that serves the key (following `MOVED`); `KEYS`,
    /// `DBSIZE`, `FLUSHALL` and `INFO commandstats` cover every master, `CONFIG` every node.
    fn command(&self, args: &[&str]) -> String {
        let name = args[0].to_ascii_uppercase();
        match name.as_str() {
            "KEYS" => self
                .masters()
                .iter()
                .map(|node| node.command(args))
                .filter(|reply| !reply.is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
            "DBSIZE" => self
                .masters()
                .iter()
                .map(|node| node.command(args).parse::<u64>().expect("DBSIZE"))
                .sum::<u64>()
                .to_string(),
            "FLUSHALL" | "FLUSHDB" => {
                for node in self.masters() {
                    node.command(args);
                }
                "OK".to_owned()
            }
            "CONFIG" => {
                for node in self.live_nodes() {
                    node.command(args);
                }
                "OK".to_owned()
            }
            "INFO"
                if args
                    .get(1)
                    .is_some_and(|section| section.eq_ignore_ascii_case("commandstats")) =>
            {
                let mut calls: Vec<(String, u64)> = Vec::new();
                for node in self.masters() {
                    for line in node.command(args).lines() {
                        let Some((stat, rest)) = line.split_once(":calls=") else {
                            continue;
                        };
                        // what replicas send their master on their own (acknowledgements, the
                        // sync), not what a case's store sent
                        if matches!(stat, "cmdstat_replconf" | "cmdstat_psync" | "cmdstat_sync") {
                            continue;
                        }
                        let n: u64 = rest
                            .split(',')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        match calls.iter_mut().find(|(name, _)| name == stat) {
                            Some((_, total)) => *total += n,
                            None => calls.push((stat.to_owned(), n)),
                        }
                    }
                }
                calls
                    .iter()
                    .map(|(stat, n)| format!("{stat}:calls={n},"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ => {
                let mut node = self.live_nodes().next().expect("a live node");
                let mut reply = node.command(args);
                for _ in 0..5 {
                    // ERR:MOVED 3999 127.0.0.1:6381
                    let Some(moved) = reply.strip_prefix("ERR:MOVED ") else {
                        break;
                    };
                    let port: u16 = moved
                        .rsplit(':')
                        .next()
                        .and_then(|port| port.parse().ok())
                        .expect("MOVED names host:port");
                    let announced = self
                        .announced
                        .lock()
                        .expect("announced lock")
                        .iter()
                        .rev()
                        .find(|(announced, _)| *announced == port)
                        .map(|&(_, i)| &self.nodes[i]);
                    node = announced
                        .or_else(|| self.nodes.iter().find(|node| node.port() == port))
                        .expect("MOVED to a node of this cluster");
                    reply = node.command(args);
                }
                reply
            }
        }
    }
}

/// Certificates for TLS test servers, made once per test process with the `openssl` command
/// line tool: a CA, a server certificate for `127.0.0.1` and `localhost`, and a client
/// certificate, both signed by the CA.
pub struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    /// The process's certificates, made on first use.
    ///
    /// # Panics
    ///
    /// When `openssl` is missing (the message names the package) or fails.
    pub fn get() -> &'static Self {
        static MADE: std::sync::OnceLock<TestCertificates> = std::sync::OnceLock::new();
        MADE.get_or_init(Self::make)
    }

    /// The file `name` (`ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`,
    /// and `other-ca.pem`, a CA that signed nothing here).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn make() -> Self {
        const PREFIX: &str = "tower-redis-http-test-certs-";
        // a static is never dropped, so each process leaves its certificates behind: the
        // next one removes those of processes that are gone
        // (where /proc tells which processes live; elsewhere they are left)
        let proc = std::path::Path::new("/proc/self").exists();
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir())
            && proc
        {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(PREFIX)) else {
                    continue;
                };
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the test certificates");
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|err| {
                    if err.kind() == std::io::ErrorKind::NotFound {
                        panic!(
                            "openssl is not installed; the TLS tests make their certificates \
                             with it. Install the `openssl` package, or run ./scripts/test.sh, \
                             which does."
                        )
                    }
                    panic!("could not run openssl: {err}")
                });
            assert!(
                output.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (pem, key_file, subject) = (
                format!("{ca}.pem"),
                format!("{ca}.key"),
                format!("/CN=tower-redis-http {ca}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(key);
            args.extend([
                "-keyout", &key_file, "-out", &pem, "-days", "2", "-subj", &subject,
            ]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&args);
        }
        for (name, usage, alt) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ),
            (
                "client",
                "clientAuth",
                "subjectAltName=DNS:tower-redis-http-client",
            ),
        ] {
            let (csr, key_file, pem, ext) = (
                format!("{name}.csr"),
                format!("{name}.key"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let subject = format!("/CN={name}");
            let mut args = vec!["req"];
            args.extend(key);
            args.extend(["-keyout", &key_file, "-out", &csr, "-subj", &subject]);
            openssl(&args);
            std::fs::write(
                dir.join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n{alt}\n"
                ),
            )
            .expect("write the certificate extensions");
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Self { dir }
    }
}

/// A loopback port nothing listens on, from below the kernel's ephemeral range: a port from
/// that range, freed again, can become the local end of any outgoing connection before the
/// server binds it (a test opens thousands). Ports are handed out in turn from a start that
/// differs between processes, so that tests of one process never get the same port twice.
fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = (10_000, ephemeral_range_start().max(10_001));
    let span = usize::from(high - low);
    let start = std::process::id() as usize * 977;
    loop {
        let candidate = low + ((start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
}

/// A loopback port nothing listens on (see [`free_port`]).
pub fn unused_port() -> u16 {
    free_port()
}

/// The first port the kernel hands out for outgoing connections (32768 unless configured).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A store on `server` with a near cache (the default settings), serving.
pub async fn near_store(server: &TestRedis) -> tower_redis_http::store::RedisStore {
    let store = tower_redis_http::store::RedisStore::builder(server.url())
        .command_timeout(Duration::from_secs(5))
        .near_cache(tower_redis_http::store::NearCache::new())
        .build()
        .await
        .expect("build a store with a near cache on the test server");
    wait_until_near_cache_serves(&store).await;
    store
}

/// Waits until `store`'s near cache has its tracking connection.
///
/// # Panics
///
/// When it has none within 5 s, or the store has no near cache.
pub async fn wait_until_near_cache_serves(store: &tower_redis_http::store::RedisStore) {
    let serving = eventually(Duration::from_secs(5), || async {
        store
            .near_cache_usage()
            .expect("a store with a near cache")
            .serving
    })
    .await;
    assert!(
        serving,
        "the near cache's tracking connection did not come up"
    );
}

/// The number of calls Redis counted for `command` (from `INFO commandstats`), 0 if none.
pub fn command_calls(redis: &dyn RawRedis, command: &str) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("calls is a number"))
}

/// Polls `check` until it returns true or `deadline` passes; returns whether it did.
#[must_use = "assert what it returns"]
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store the layers' behavioural cases run on: a `redis-server` of the case's own, or the
/// embedded memory store. One case definition, `async fn case(backend: &Backend)`, runs on
/// both through [`on_each_backend!`].
#[derive(Debug)]
pub enum Backend {
    Redis {
        /// The server the store writes to (for TLS, also open on a plain port for the
        /// case's own commands; for Sentinel, the master).
        server: TestRedis,
        store: tower_redis_http::store::RedisStore,
        /// A sentinel the store asks, kept running for the case.
        sentinel: Option<Box<TestRedis>>,
    },
    /// A store on a Redis Cluster of its own.
    Cluster {
        cluster: Box<TestCluster>,
        store: tower_redis_http::store::RedisStore,
    },
    Memory(tower_redis_http::store::MemoryStore),
}

impl Backend {
    /// A Redis store on a server started for the case. Its commands may take long: on a
    /// loaded test machine a slow reply must not turn into a failure policy.
    pub async fn redis() -> Self {
        let server = TestRedis::start();
        let store = tower_redis_http::store::RedisStore::builder(server.url())
            .command_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("build a store on the test server");
        Self::Redis {
            server,
            store,
            sentinel: None,
        }
    }

    /// A Redis store with a near cache, serving before the case starts.
    pub async fn redis_near() -> Self {
        let server = TestRedis::start();
        let store = near_store(&server).await;
        Self::Redis {
            server,
            store,
            sentinel: None,
        }
    }

    /// A Redis store speaking TLS (`rediss://`, the test CA trusted).
    pub async fn redis_tls() -> Self {
        let server = TestRedis::start_tls(false);
        let store = tower_redis_http::store::RedisStore::builder(server.tls_url())
            .tls_root_certificate(tower_redis_http::store::Pem::file(
                TestCertificates::get().path("ca.pem"),
            ))
            .command_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("build a TLS store on the test server");
        Self::Redis {
            server,
            store,
            sentinel: None,
        }
    }

    /// A Redis store that finds its master through a sentinel.
    pub async fn redis_sentinel() -> Self {
        let server = TestRedis::start();
        let sentinel = TestRedis::start_sentinel(TestSentinels::SERVICE, server.port(), 1);
        let address = format!("127.0.0.1:{}", sentinel.port());
        let store =
            tower_redis_http::store::RedisStore::sentinel([address], TestSentinels::SERVICE)
                .command_timeout(Duration::from_secs(5))
                .build()
                .await
                .expect("build a store through the test sentinel");
        Self::Redis {
            server,
            store,
            sentinel: Some(Box::new(sentinel)),
        }
    }

    /// A store on a 6-node Redis Cluster started for the case.
    pub async fn redis_cluster() -> Self {
        let cluster = TestCluster::start();
        let store = tower_redis_http::store::RedisStore::cluster(cluster.seeds())
            .command_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("build a store on the test cluster");
        Self::Cluster {
            cluster: Box::new(cluster),
            store,
        }
    }

    pub fn memory() -> Self {
        Self::Memory(tower_redis_http::store::MemoryStore::new())
    }

    /// The store, for a layer or for the case's own reads and writes.
    pub fn store(&self) -> tower_redis_http::store::AnyStore {
        match self {
            Self::Redis { store, .. } | Self::Cluster { store, .. } => store.clone().into(),
            Self::Memory(store) => store.clone().into(),
        }
    }

    /// Where the response cache keeps its entries: the store itself on Redis, the cache share
    /// of the memory store (`MemoryStore::for_cache`).
    pub fn cache_store(&self) -> tower_redis_http::store::AnyStore {
        match self {
            Self::Redis { store, .. } | Self::Cluster { store, .. } => store.clone().into(),
            Self::Memory(store) => store.for_cache().into(),
        }
    }

    /// Whether the store keeps a near cache (reads of hot keys skip Redis).
    pub fn has_near_cache(&self) -> bool {
        matches!(self, Self::Redis { store, .. } if store.near_cache_usage().is_some())
    }

    /// Whether the store holds nothing at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Redis { server, .. } => server.command(&["DBSIZE"]).trim() == "0",
            Self::Cluster { cluster, .. } => cluster.command(&["DBSIZE"]).trim() == "0",
            Self::Memory(store) => {
                let usage = store.usage();
                usage.entries + usage.rate_limit_keys + usage.cache_entries == 0
            }
        }
    }

    /// The server, for what only Redis can show (round trips, raw keys).
    pub fn server(&self) -> Option<&dyn RawRedis> {
        match self {
            Self::Redis { server, .. } => Some(server),
            Self::Cluster { cluster, .. } => Some(&**cluster),
            Self::Memory(_) => None,
        }
    }

    /// Lets `duration` pass for the store: the memory store's clock (tokio's) is paused and
    /// advanced, which needs a current-thread runtime; Redis keeps real time, so the case
    /// sleeps there.
    pub async fn advance(&self, duration: Duration) {
        match self {
            Self::Redis { .. } | Self::Cluster { .. } => tokio::time::sleep(duration).await,
            Self::Memory(_) => {
                tokio::time::pause();
                tokio::time::advance(duration).await;
                tokio::time::resume();
            }
        }
    }
}

/// One `#[tokio::test]` per case and backend, in modules `on_redis` (`on_redis_near` with a
/// near cache, `on_redis_tls`, ...) and `on_memory`: each case
/// is an `async fn(&Backend)` of the module that invokes this. Cases that need worker threads
/// (`multi_thread: case, ...`) go to `threaded_on_redis` and `threaded_on_memory`; they cannot
/// [`advance`](Backend::advance) the memory store's clock.
#[macro_export]
macro_rules! on_each_backend {
    // the two kinds of store alone, on worker threads: for slow cases, whose subject is the
    // layer's flow rather than how each topology reaches Redis
    (on_redis_and_memory: $($case:ident),* $(,)?) => {
        $crate::on_each_backend!(@module threaded_on_redis, { $crate::support::Backend::redis().await },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
        $crate::on_each_backend!(@module threaded_on_memory, { $crate::support::Backend::memory() },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
    };
    (multi_thread: $($case:ident),* $(,)?) => {
        $crate::on_each_backend!(@module threaded_on_redis, { $crate::support::Backend::redis().await },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
        $crate::on_each_backend!(@module threaded_on_redis_near, { $crate::support::Backend::redis_near().await },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
        $crate::on_each_backend!(@module threaded_on_redis_tls, { $crate::support::Backend::redis_tls().await },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
        $crate::on_each_backend!(@module threaded_on_redis_sentinel, { $crate::support::Backend::redis_sentinel().await },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
        $crate::on_each_backend!(@module threaded_on_redis_cluster, { $crate::support::Backend::redis_cluster().await },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
        $crate::on_each_backend!(@module threaded_on_memory, { $crate::support::Backend::memory() },
            (flavor = "multi_thread", worker_threads = 4); $($case),*);
    };
    (@module $module:ident, $make:block, $flavor:tt; $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test $flavor]
                async fn $case() {
                    let backend = $make;
                    super::$case(&backend).await;
                }
            )*
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::on_each_backend!(@module on_redis, { $crate::support::Backend::redis().await }, (); $($case),*);
        $crate::on_each_backend!(@module on_redis_near, { $crate::support::Backend::redis_near().await }, (); $($case),*);
        $crate::on_each_backend!(@module on_redis_tls, { $crate::support::Backend::redis_tls().await }, (); $($case),*);
        $crate::on_each_backend!(@module on_redis_sentinel, { $crate::support::Backend::redis_sentinel().await }, (); $($case),*);
        $crate::on_each_backend!(@module on_redis_cluster, { $crate::support::Backend::redis_cluster().await }, (); $($case),*);
        $crate::on_each_backend!(@module on_memory, { $crate::support::Backend::memory() }, (); $($case),*);
    };
}

/// A TCP relay in front of a server that can make the connections it carries go silent
/// (half-open: sockets stay open, no byte reaches the client), as a peer gone without a reset
/// or a lost `FIN` would, while connections opened after that go through. Plain threads, so
/// it runs whatever the test's runtime does.
#[derive(Debug)]
pub struct TestRelay {
    port: u16,
    /// Connections numbered below this are silent.
    silent_below: std::sync::Arc<AtomicUsize>,
    /// How many connections were accepted.
    opened: std::sync::Arc<AtomicUsize>,
    /// The port new connections are relayed to.
    upstream: std::sync::Arc<AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests held back on their way to the server.
    hold: std::sync::Arc<Hold>,
}

/// What a [`TestRelay`] holds back: requests from a client that contain the needle, until
/// released, so that a test can run something else at an exact point between two of a
/// client's commands.
#[derive(Debug, Default)]
struct Hold {
    state: std::sync::Mutex<HoldState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct HoldState {
    /// The bytes that make a request wait, when armed.
    needle: Option<Vec<u8>>,
    /// Whether the needle holds one request only (it is disarmed when one matches).
    once: bool,
    /// How many requests wait now.
    waiting: usize,
    /// How many requests have been held so far.
    arrived: usize,
    /// How many times the waiting requests were let go.
    releases: usize,
}

impl Hold {
    /// Blocks the relaying thread while `chunk` (with the end of the one before, so that a
    /// needle split between two reads is seen) holds the needle, until the next release.
    fn wait_if_matching(&self, before: &[u8], chunk: &[u8]) {
        let mut state = self.state.lock().unwrap();
        let seen: Vec<u8> = before.iter().chain(chunk).copied().collect();
        let holds = state.needle.as_ref().is_some_and(|needle| {
            seen.windows(needle.len())
                .any(|window| window == needle.as_slice())
        });
        if !holds {
            return;
        }
        if state.once {
            state.needle = None;
        }
        let releases = state.releases;
        state.waiting += 1;
        state.arrived += 1;
        self.changed.notify_all();
        while state.releases == releases {
            state = self.changed.wait(state).unwrap();
        }
        state.waiting -= 1;
    }
}

impl TestRelay {
    /// A relay on a free loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let silent_below = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let upstream = Arc::new(AtomicUsize::new(usize::from(upstream)));
        let hold = Arc::new(Hold::default());
        let (silent, stopping, count, target, holding) = (
            Arc::clone(&silent_below),
            Arc::clone(&stop),
            Arc::clone(&opened),
            Arc::clone(&upstream),
            Arc::clone(&hold),
        );
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        // an idle accept loop; not a test's synchronisation
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(_) => break,
                };
                let port = u16::try_from(target.load(Ordering::SeqCst)).expect("a port");
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let id = count.fetch_add(1, Ordering::SeqCst);
                for (mut from, mut to, from_client) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    let silent = Arc::clone(&silent);
                    let hold = Arc::clone(&holding);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        let mut tail: Vec<u8> = Vec::new();
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if from_client {
                                hold.wait_if_matching(&tail, &buf[..n]);
                                tail = buf[n.saturating_sub(256)..n].to_vec();
                            }
                            if id < silent.load(Ordering::SeqCst) {
                                // swallowed: the other end hears nothing, not even a close
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        if id >= silent.load(Ordering::SeqCst) {
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        }
                    });
                }
            }
        });
        Self {
            port,
            silent_below,
            opened,
            upstream,
            stop,
            hold,
        }
    }

    /// The next request from a client whose bytes contain `pattern` is held back (not sent
    /// on to the server, nor anything after it on that connection) until
    /// [`release`](Self::release).
    pub fn hold_request_containing(&self, pattern: &[u8]) {
        let mut state = self.hold.state.lock().unwrap();
        state.needle = Some(pattern.to_vec());
        state.once = true;
    }

    /// From now on, every request that contains `needle` waits in the relay, unsent, until
    /// [`let_go`](Self::let_go) or [`release`](Self::release).
    pub fn hold(&self, needle: &[u8]) {
        let mut state = self.hold.state.lock().unwrap();
        state.needle = Some(needle.to_vec());
        state.once = false;
    }

    /// Waits until a request is held; `false` after `deadline`.
    pub fn wait_until_holding(&self, deadline: Duration) -> bool {
        let state = self.hold.state.lock().unwrap();
        let (state, _) = self
            .hold
            .changed
            .wait_timeout_while(state, deadline, |state| state.waiting == 0)
            .unwrap();
        state.waiting > 0
    }

    /// How many requests wait in the relay now.
    pub fn held(&self) -> usize {
        self.hold.state.lock().unwrap().waiting
    }

    /// How many requests the relay has held so far, let go or not.
    pub fn held_so_far(&self) -> usize {
        self.hold.state.lock().unwrap().arrived
    }

    /// Sends the requests held now on, and holds later ones still.
    pub fn let_go(&self) {
        self.hold.state.lock().unwrap().releases += 1;
        self.hold.changed.notify_all();
    }

    /// Sends the requests held now on, and holds none from now on.
    pub fn release(&self) {
        self.hold.state.lock().unwrap().needle = None;
        self.let_go();
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The relay's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every connection open now goes silent both ways and stays open; later ones go through.
    pub fn silence_open_connections(&self) {
        self.silent_below
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Connections opened from now on reach `127.0.0.1:port` (a failover behind one
    /// endpoint); open ones stay where they are.
    pub fn retarget(&self, port: u16) {
        self.upstream.store(usize::from(port), Ordering::SeqCst);
    }

    /// How many connections the relay has accepted.
    pub fn connections(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // a test that failed while a request was held must not leave its thread blocked
        self.release();
    }
}
