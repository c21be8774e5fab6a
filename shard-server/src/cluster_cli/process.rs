//! Local server processes: starting one detached, recognising it by its
//! command line, and stopping it.
//!
//! A pid is only ever signalled while `/proc/<pid>/cmdline` shows a process
//! started with the expected `--config` file, so a pid the kernel has since
//! reused for something else is left alone. A zombie counts as gone: it holds
//! no port and no file any more, and nothing here may be its parent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

/// After SIGTERM timed out, how long SIGKILL may take to show.
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// Lines of a failed node's log shown in an error.
const LOG_TAIL_LINES: usize = 30;

/// Start `server_bin --config <config>` detached, in its own session, with
/// stdout and stderr appended to `log`. `label` names it in the log and in errors.
pub fn spawn_server(server_bin: &Path, config: &Path, log: &Path, label: &str) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    writeln!(log_file, "--- ddc cluster: starting {label} at unix time {} ---", since_epoch.as_secs())?;
    let mut command = Command::new(server_bin);
    command
        .arg("--config")
        .arg(config)
        .current_dir(config.parent().unwrap_or(Path::new("/")))
        // The log is a file: no terminal colour codes in it.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // setsid(2), which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // Its own session: no controlling terminal, so neither a Ctrl-C in
            // the terminal that ran `ddc` nor its hangup reaches the server.
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| format!("start {} for {label}", server_bin.display()))
}

/// The last lines of a log file, headed by its path.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!("--- last {} lines of {} ---\n{}", tail.len(), path.display(), tail.join("\n"))
}

/// How stopping one process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// No live server process under the recorded pid.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated { pid: u32, after: Duration },
    /// It exited after SIGKILL (sent at once, or after SIGTERM timed out).
    Killed { pid: u32, after_term: bool },
    /// It survived SIGKILL for [`KILL_WAIT`] (a process stuck in the kernel).
    StillRunning { pid: u32 },
}

impl std::fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopOutcome::NotRunning => write!(f, "was not running"),
            StopOutcome::Terminated { pid, after } => {
                write!(f, "pid {pid} stopped (SIGTERM) in {:.1}s", after.as_secs_f64())
            }
            StopOutcome::Killed { pid, after_term: true } => {
                write!(f, "pid {pid} did not stop on SIGTERM in time; killed (SIGKILL)")
            }
            StopOutcome::Killed { pid, after_term: false } => write!(f, "pid {pid} killed (SIGKILL)"),
            StopOutcome::StillRunning { pid } => write!(f, "pid {pid} is STILL RUNNING after SIGKILL"),
        }
    }
}

/// Send `signal` to each live server among `pids` (each with its config
/// file, to recognise it), wait up to `timeout` for them to go, then SIGKILL
/// the rest. The outcomes are in the order of `pids`.
pub fn stop_pids(pids: &[(u32, PathBuf)], signal: libc::c_int, timeout: Duration) -> Vec<StopOutcome> {
    let t0 = Instant::now();
    let mut outcomes: Vec<Option<StopOutcome>> = pids
        .iter()
        .map(|(pid, config)| {
            if !is_server_for(*pid, config) || send_signal(*pid, signal).is_err() {
                // Gone already, or gone between the check and the signal (ESRCH).
                Some(StopOutcome::NotRunning)
            } else {
                None
            }
        })
        .collect();
    let killed_at_once = signal == libc::SIGKILL;
    let wait = |outcomes: &mut Vec<Option<StopOutcome>>, until: Instant, done: &dyn Fn(u32) -> StopOutcome| loop {
        for (slot, (pid, config)) in pids.iter().enumerate() {
            if outcomes[slot].is_none() && !is_server_for(*pid, config) {
                outcomes[slot] = Some(done(*pid));
            }
        }
        if outcomes.iter().all(Option::is_some) || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    wait(&mut outcomes, t0 + timeout, &|pid| {
        if killed_at_once {
            StopOutcome::Killed { pid, after_term: false }
        } else {
            StopOutcome::Terminated { pid, after: t0.elapsed() }
        }
    });
    if outcomes.iter().any(Option::is_none) {
        for (slot, (pid, _)) in pids.iter().enumerate() {
            if outcomes[slot].is_none() {
                let _ = send_signal(*pid, libc::SIGKILL);
            }
        }
        wait(&mut outcomes, Instant::now() + KILL_WAIT, &|pid| StopOutcome::Killed {
            pid,
            after_term: !killed_at_once,
        });
    }
    pids.iter().zip(outcomes).map(|((pid, _), o)| o.unwrap_or(StopOutcome::StillRunning { pid: *pid })).collect()
}

fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Is `pid` a live (not zombie) process started with `--config <config>`?
///
/// The config path identifies the node: a recorded pid that the kernel has
/// given to another process since does not match, and is never signalled.
pub fn is_server_for(pid: u32, config: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state is the first field after the command name, which ends at the last ')'.
    let process_state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(process_state, None | Some("Z") | Some("X") | Some("x")) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let config = config.as_os_str().as_encoded_bytes();
    args.windows(2).any(|w| w[0] == b"--config" && w[1] == config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_ours_only_with_our_config() {
        let me = std::process::id();
        assert!(!is_server_for(me, Path::new("/nonexistent/config.toml")));
        assert!(!is_server_for(u32::MAX, Path::new("/x")));
    }
}
