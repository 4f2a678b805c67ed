//! A local Redis Cluster for the end-to-end tests, as `scripts/redis-cluster.sh` starts one
//! (keep the two alike): Debian's `redis-server` in cluster mode, three masters with one
//! replica each by default (and optional spare replicas), on free loopback ports, no persistence, `cluster-node-timeout`
//! 1000 ms, full coverage not required (a slot without a master fails alone). Every node is
//! a child process killed when the [`Cluster`] is dropped.
//!
//! ```no_run
//! let dir = cada_e2e::TempDir::new("cluster");
//! let mut c = cada_e2e::redis_cluster::Cluster::start(&dir.0);
//! let url = c.url(); // redis+cluster://127.0.0.1:P1,…: give it to --replay-store
//! let slot = 1234;
//! let old = c.master_of(slot);
//! c.kill(old);
//! let new = c.wait_for_new_master(slot, old); // its replica, promoted
//! ```
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Proc};

/// How the cluster is made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Masters (each gets one replica): 3 or more.
    pub masters: usize,
    /// `cluster-node-timeout` in milliseconds: a master unreachable this long is failed
    /// over.
    pub node_timeout_ms: u64,
    /// More replicas beyond one per master (redis-cli gives them to masters): after a
    /// failover Redis moves one to the master left without a replica (about 5 s later).
    pub spares: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            masters: 3,
            node_timeout_ms: 1000,
            spares: 0,
        }
    }
}

/// One node of the cluster.
pub struct Node {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its cluster bus port.
    pub bus_port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

/// One line of `CLUSTER NODES`, read.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// Whether it is a master (and not marked failed).
    pub master: bool,
    /// Whether the cluster marks it failed (`fail` or `fail?`).
    pub failed: bool,
    /// The id of its master, for a replica.
    pub master_id: Option<String>,
    /// The slot ranges it serves (inclusive).
    pub slots: Vec<(u16, u16)>,
}

/// A running local cluster (killed on drop).
pub struct Cluster {
    /// Every node, masters first as created.
    pub nodes: Vec<Node>,
    options: Options,
}

/// How long the helpers wait for the cluster to reach a state.
const PATIENCE: Duration = Duration::from_secs(30);

impl Cluster {
    /// Three masters with one replica each, node timeout 1000 ms, data under `dir`.
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, Options::default())
    }

    /// A cluster made as `options` say, data under `dir`.
    pub fn start_with(dir: &Path, options: Options) -> Cluster {
        assert!(options.masters >= 3, "a cluster needs three masters");
        let mut nodes = Vec::new();
        let mut taken = Vec::new();
        let mut fresh = || loop {
            let p = free_port();
            if !taken.contains(&p) {
                taken.push(p);
                return p;
            }
        };
        for _ in 0..options.masters * 2 + options.spares {
            let port = fresh();
            let bus_port = fresh();
            nodes.push(Node {
                port,
                bus_port,
                dir: dir.join(format!("node-{port}")),
                proc: None,
            });
        }
        let mut c = Cluster { nodes, options };
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        for n in &c.nodes {
            wait_ping(n.port);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &c.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed with redis-server (scripts/test.sh)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let replicas = options.masters + options.spares;
        c.wait_until(
            "every node sees the cluster ok, every replica linked",
            |c| {
                c.ports()
                    .iter()
                    .all(|p| c.cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
                    && c.nodes_info()
                        .iter()
                        .filter(|n| !n.master && n.master_id.is_some() && !n.failed)
                        .count()
                        >= replicas
                    && c.replicas_in_sync()
            },
        );
        c
    }

    fn spawn(&mut self, i: usize) {
        let n = &self.nodes[i];
        std::fs::create_dir_all(&n.dir).expect("node dir");
        let log = std::fs::File::create(n.dir.join("redis.log")).expect("node log");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &n.port.to_string(),
                "--cluster-port",
                &n.bus_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                &self.options.node_timeout_ms.to_string(),
                "--cluster-require-full-coverage",
                "no",
                "--cluster-replica-validity-factor",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                // A replica's first sync starts at once (the default waits 5 s, and WAIT
                // counts no acknowledgement from a replica before it).
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--cluster-config-file")
            .arg(n.dir.join("nodes.conf"))
            .arg("--dir")
            .arg(&n.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/test.sh");
        let port = n.port;
        self.nodes[i].proc = Some(Proc {
            child,
            name: format!("redis-server :{port}"),
        });
    }

    /// The seed URL of every node, for `--replay-store`.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Every node's client port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the nodes running now.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis-cli -p PORT ARGS…`: its output (empty if the node does not answer).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// `CLUSTER NODES` as a running node sees it.
    pub fn nodes_info(&self) -> Vec<NodeInfo> {
        for p in self.live_ports() {
            let text = self.cli(p, &["cluster", "nodes"]);
            if !text.is_empty() {
                return text.lines().filter_map(parse_node_line).collect();
            }
        }
        Vec::new()
    }

    /// The port of the master serving `slot` (as a running node sees it; a failed master
    /// counts as long as no other node serves the slot).
    pub fn master_of(&self, slot: u16) -> u16 {
        let nodes = self.nodes_info();
        let serving = |n: &&NodeInfo| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot));
        nodes
            .iter()
            .filter(serving)
            .find(|n| !n.failed)
            .or_else(|| nodes.iter().find(serving))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// The ports of the replicas of the master on `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let nodes = self.nodes_info();
        let Some(id) = nodes.iter().find(|n| n.port == port).map(|n| n.id.clone()) else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
            .collect()
    }

    /// A slot the master on `port` serves.
    pub fn a_slot_of(&self, port: u16) -> u16 {
        self.nodes_info()
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.slots.first())
            .map(|(a, _)| *a)
            .unwrap_or_else(|| panic!("node {port} serves no slot"))
    }

    /// `CLUSTER KEYSLOT key`, asked of the cluster.
    pub fn keyslot(&self, key: &str) -> u16 {
        let p = self.live_ports()[0];
        self.cli(p, &["cluster", "keyslot", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"));
        if let Some(mut p) = n.proc.take() {
            p.kill();
        }
    }

    /// Starts the node on `port` again (same nodes file: it rejoins, as a replica if it
    /// was replaced; empty, since nothing is persisted).
    pub fn restart(&mut self, port: u16) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"));
        assert!(self.nodes[i].proc.is_none(), "node {port} is running");
        self.spawn(i);
        wait_ping(port);
    }

    /// Waits until a running node other than `old` serves `slot` as master, and returns its
    /// port (after a failover: the promoted replica).
    pub fn wait_for_new_master(&self, slot: u16, old: u16) -> u16 {
        let mut found = 0;
        self.wait_until(&format!("a new master for slot {slot}"), |c| {
            let live = c.live_ports();
            found = c
                .nodes_info()
                .iter()
                .find(|n| {
                    n.port != old
                        && !n.failed
                        && live.contains(&n.port)
                        && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
                })
                .map_or(0, |n| n.port);
            found != 0
                && live
                    .iter()
                    .all(|p| c.cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
        });
        found
    }

    /// Moves `slot` (with its keys) to the master on `to` the way `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE of every key, then SETSLOT NODE on every
    /// master. A client with the old slot map is answered MOVED afterwards.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.master_of(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let to_id = self.cli(to, &["cluster", "myid"]);
        let s = slot.to_string();
        if self
            .cli(from, &["cluster", "nodes"])
            .contains(&format!("[{slot}->-"))
        {
            // begin_migration ran already.
        } else {
            self.begin_migration(slot, to);
        }
        loop {
            let keys = self.cli(from, &["cluster", "getkeysinslot", &s, "100"]);
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["migrate", "127.0.0.1"];
            let to_s = to.to_string();
            args.extend_from_slice(&[&to_s, "", "0", "5000", "KEYS"]);
            args.extend(keys.lines());
            let out = self.cli(from, &args);
            assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
        }
        for n in self.nodes_info().iter().filter(|n| n.master && !n.failed) {
            let out = self.cli(n.port, &["cluster", "setslot", &s, "node", &to_id]);
            assert_eq!(out, "OK", "SETSLOT NODE on {}", n.port);
        }
        self.wait_until(&format!("every node sees slot {slot} on {to}"), |c| {
            c.live_ports().iter().all(|p| {
                c.cli(*p, &["cluster", "nodes"])
                    .lines()
                    .filter_map(parse_node_line)
                    .any(|n| n.port == to && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            })
        });
    }

    /// The first half of a resharding: `slot` IMPORTING on `to`, MIGRATING on its master.
    /// Until [`Cluster::migrate_slot`] ends it, a key of the slot that the old master does
    /// not hold is answered ASK (served by `to` after ASKING).
    pub fn begin_migration(&self, slot: u16, to: u16) {
        let from = self.master_of(slot);
        let from_id = self.cli(from, &["cluster", "myid"]);
        let to_id = self.cli(to, &["cluster", "myid"]);
        let s = slot.to_string();
        let a = self.cli(to, &["cluster", "setslot", &s, "importing", &from_id]);
        assert_eq!(a, "OK", "SETSLOT IMPORTING");
        let b = self.cli(from, &["cluster", "setslot", &s, "migrating", &to_id]);
        assert_eq!(b, "OK", "SETSLOT MIGRATING");
    }

    /// Whether every running master's replicas are online and have caught up with it
    /// (`INFO replication` of the master: each `slaveN` line `state=online` at the
    /// master's `master_repl_offset`).
    pub fn replicas_in_sync(&self) -> bool {
        let live = self.live_ports();
        self.nodes_info()
            .iter()
            .filter(|n| n.master && !n.failed && live.contains(&n.port))
            .all(|m| {
                let info = self.cli(m.port, &["info", "replication"]);
                let Some(offset) = info.lines().find_map(|l| {
                    l.strip_prefix("master_repl_offset:")
                        .map(|v| v.trim().to_owned())
                }) else {
                    return false;
                };
                let want = self
                    .replicas_of(m.port)
                    .iter()
                    .filter(|r| live.contains(r))
                    .count();
                let online = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .filter(|l| l.contains(&format!("offset={offset},")))
                    .count();
                online >= want
            })
    }

    /// Polls `done` until it holds (at most 30 s, then panics naming `what`).
    pub fn wait_until(&self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach: {what} (node logs under {})",
                self.nodes[0]
                    .dir
                    .parent()
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads one `CLUSTER NODES` line.
fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let port = f[1].split(['@']).next()?.rsplit(':').next()?.parse().ok()?;
    let flags = f[2];
    let failed = flags.split(',').any(|x| x == "fail" || x == "fail?");
    let master = flags.split(',').any(|x| x == "master");
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    Some(NodeInfo {
        id: f[0].to_owned(),
        port,
        master,
        failed,
        master_id: (f[3] != "-").then(|| f[3].to_owned()),
        slots,
    })
}

/// Waits until the node on `port` answers PING.
fn wait_ping(port: u16) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"PING\r\n");
            let mut b = [0u8; 7];
            if s.read_exact(&mut b).is_ok() && &b == b"+PONG\r\n" {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-server :{port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
