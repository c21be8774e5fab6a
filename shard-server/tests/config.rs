//! `shard-server --config FILE` refuses a file it cannot use: the real
//! process exits non-zero before it listens, and its stderr names the key.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, SERVER_BIN};

/// Run `shard-server --config` on this TOML; returns (exit code, stderr).
/// A server that starts serving instead of refusing fails the test.
fn refused(toml: &str) -> (i32, String) {
    let dir = tempfile::Builder::new().prefix("ddc-config-").tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, toml).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(SERVER_BIN)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--http-listen", "127.0.0.1:0", "--cores", "1"])
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn shard-server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shard-server accepted {toml:?} and kept running:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!stderr.contains("shard-server ready"), "started with {toml:?}:\n{stderr}");
    (status.code().expect("exited, not killed by a signal"), stderr)
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let (code, stderr) = refused("data_dir = \"d\"\n\n[server]\nframe_bytes_maximum = 1048576\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("server.frame_bytes_maximum"), "{stderr}");
    assert!(stderr.contains("unknown field `frame_bytes_maximum`"), "{stderr}");

    let (code, stderr) = refused("cores = 1\nlisten_address = \"127.0.0.1:1\"\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown field `listen_address`"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_type_is_refused_with_its_full_key() {
    // The line alone says `replica_retention`; the message must name the section too.
    let (code, stderr) = refused("[cluster]\nreplica_retention = \"some\"\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("key `cluster.replica_retention`"), "{stderr}");
    assert!(stderr.contains("expected `leader` or `all`"), "{stderr}");

    let (code, stderr) = refused("server = { in_flight_max = -1 }\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("key `server.in_flight_max`"), "{stderr}");
}

#[test]
fn a_value_out_of_range_is_refused_by_name() {
    let (code, stderr) = refused("[log]\nsegment_bytes_max = 10\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("log.segment_bytes_max must be at least 65536"), "{stderr}");

    // Once a panic deep in glommio's allocator; now refused before any core starts.
    let (code, stderr) = refused("[server]\nio_memory_bytes = 1099511627776\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("server.io_memory_bytes must be at most"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `packaging/node.toml`, the example a deployment starts from, starts a real
/// node as it is (only the data directory and port are replaced by flags, as
/// the flags override the file).
#[test]
fn the_packaged_example_configuration_starts() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/node.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let config = shard_server::config::NodeConfig::from_toml(&text).unwrap();
    config.validate().unwrap();
    // Its segments must be codable with Cere's k = 4 (the check `ClusterSetup::load` makes at start).
    let shard_bytes = config.log.segment_bytes_max.div_ceil(4) + 2 * 32768 + 4096;
    assert!(shard_bytes <= u64::from(config.server.frame_bytes_max), "{shard_bytes}");

    let dir = tempfile::Builder::new().prefix("ddc-example-").tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(SERVER_BIN)
        .arg("--config")
        .arg(&example)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &addr, "--http-listen", "127.0.0.1:0", "--cores", "1"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + common::START_TIMEOUT;
    let answered = loop {
        let ping = ddc_formats::client::Client::connect(addr.as_str()).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            c.ping()
        });
        if ping.is_ok() || Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break ping.is_ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(answered, "the example configuration did not serve:\n{log}");
    assert_eq!(status.code(), Some(0), "{log}");
    // --log-json, as the unit runs it, is tested in tests/logging.rs.
}
