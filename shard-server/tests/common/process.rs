//! One `shard-server` process started from a config file in its own directory,
//! restartable, with one log file per start (`server-<n>.log`). The cluster
//! harnesses (`cluster.rs`, `peer_faults/harness.rs`) build their nodes on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ddc_formats::client::Client;

use super::SERVER_BIN;

pub struct ServerProcess {
    /// Where the node listens.
    pub addr: SocketAddr,
    /// The node's directory: its config, logs and `data/`.
    pub dir: PathBuf,
    /// `<dir>/config.toml`, written by the harness before the first start.
    pub config: PathBuf,
    pub child: Option<Child>,
    starts: usize,
}

impl ServerProcess {
    pub fn new(addr: SocketAddr, dir: PathBuf) -> ServerProcess {
        ServerProcess { addr, config: dir.join("config.toml"), dir, child: None, starts: 0 }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Every start's log, oldest first.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.dir.join(format!("server-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("server-{}.log", self.starts))).unwrap();
        let child = Command::new(SERVER_BIN)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn shard-server");
        self.child = Some(child);
    }

    /// Wait until the node answers a ping (or, with `auth.required`, refuses an
    /// unauthenticated one, which also shows it serves); fail if it exits.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("node {} exited during start: {status}\n{}", self.addr, self.log());
            }
            if let Ok(mut c) = Client::connect(self.addr) {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                match c.ping() {
                    Ok(_) => return,
                    Err(e) if e.to_string().contains("requires authentication") => return,
                    Err(_) => {}
                }
            }
            assert!(Instant::now() < deadline, "node {} did not answer\n{}", self.addr, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Add the healthy shard indexes of a `ListShards` answer to `out`, per segment base.
pub fn add_healthy_shards(
    out: &mut std::collections::BTreeMap<u64, Vec<u8>>,
    shards: &[ddc_formats::message::ShardEntry],
) {
    for e in shards {
        let h = ddc_formats::shard::ShardHeader::decode(&e.header).unwrap();
        let healthy = out.entry(h.base_offset).or_default();
        if e.healthy && !healthy.contains(&h.index) {
            healthy.push(h.index);
        }
    }
}
