//! Helpers for tests that run a local cluster with `ddc cluster up` (this
//! build's `ddc` and `shard-server`): free ports, the `ddc` command, and a
//! guard that kills the cluster's servers when the test ends.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use rand::Rng;

use super::{run_with_timeout, DDC_BIN, SERVER_BIN};

/// Run `ddc args...` with this build's `shard-server` (90 s at most).
pub fn ddc(args: &[&str]) -> Output {
    let mut cmd = Command::new(DDC_BIN);
    cmd.args(args).env_remove("DDC_SERVER").env("DDC_SHARD_SERVER", SERVER_BIN);
    run_with_timeout(cmd, b"", Duration::from_secs(90))
}

/// [`ddc`], failing the test unless it exits 0.
pub fn ddc_ok(args: &[&str]) -> Output {
    let out = ddc(args);
    assert!(
        out.status.success(),
        "ddc {args:?}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `count` consecutive loopback ports below the ephemeral range (so no client
/// socket of another test takes one meanwhile) where nothing listens, and the
/// nodes' admin HTTP ports (80 higher) free too.
pub fn free_base_port(count: u16) -> u16 {
    let mut rng = rand::thread_rng();
    loop {
        let base: u16 = rng.gen_range(20_000..30_000);
        let free = (base..base + count).chain(base + 80..base + 80 + count).all(|port| {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            TcpListener::bind(address).is_ok()
                && TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err()
        });
        if free {
            return base;
        }
    }
}

/// SIGKILLs every server of the cluster in this directory still running when
/// the test ends, pass or fail, so that no test leaves a process behind.
pub struct KillOnDrop(pub PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.0.join("cluster-state.json")) else { return };
        let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else { return };
        for node in state["nodes"].as_array().into_iter().flatten() {
            let Some(pid) = node["pid"].as_u64() else { continue };
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*self.0.to_string_lossy()));
            if ours {
                // SAFETY: kill(2) on a pid whose command line names our temporary directory.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}
