//! A local Cere chain for integration tests: the real runtime from the chain spec
//! `cere-dev-54113`, run by chopsticks (pinned in `anchor/chain-test/`), reached over
//! JSON-RPC on 127.0.0.1.
//!
//! Include with `#[path = "support/chopsticks.rs"] mod chopsticks;`. Each
//! [`Chopsticks`] is its own chain in memory (about 300 MB of RSS, 6-12 s to start);
//! nothing is written to the repository except `anchor/chain-test/node_modules` and,
//! while `npm ci` runs, the lock directory `anchor/chain-test/.install-lock` (both
//! ignored by git).
//!
//! ```ignore
//! let Some(chain) = Chopsticks::start() else { return }; // no chain spec: skip
//! chain.fund(&public_key, 1_000 * 10_000_000_000);
//! assert_eq!(chain.free_balance(&public_key), Some(1_000 * 10_000_000_000));
//! ```
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use serde_json::{json, Value};

/// `twox128("System") ++ twox128("Account")`, the prefix of every `System.Account`
/// key; checked against the running chain by `state_getKeysPaged`.
const SYSTEM_ACCOUNT_PREFIX: [u8; 32] = [
    0x26, 0xaa, 0x39, 0x4e, 0xea, 0x56, 0x30, 0xe0, 0x7c, 0x48, 0xae, 0x0c, 0x95, 0x58, 0xce, 0xf7, //
    0xb9, 0x9d, 0x88, 0x0e, 0xc6, 0x81, 0x79, 0x9c, 0x0c, 0xf3, 0x0e, 0x88, 0x86, 0x37, 0x1d, 0xa9,
];

/// Startup takes 6-12 s on an idle 2-core machine; leave room for a busy one.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// A block in Instant mode takes about a second; `npm ci` is not done under this.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
const LISTENING: &str = "RPC listening on http://127.0.0.1:";

/// A running chopsticks process; killed on drop.
pub struct Chopsticks {
    /// `ws://127.0.0.1:<port>`, for clients that subscribe (e.g. `author_submitAndWatchExtrinsic`).
    pub ws_url: String,
    /// Serves both HTTP POST JSON-RPC and WebSocket.
    pub port: u16,
    /// chopsticks' stdout and stderr.
    pub log_path: PathBuf,
    child: Child,
    /// Held open so chopsticks (preloaded with `exit-with-parent.cjs`) sees end-of-file
    /// and exits when this process dies without running `Drop`.
    _stdin: ChildStdin,
    /// The working directory of chopsticks and home of its log; removed on drop.
    dir: tempfile::TempDir,
}

/// `frame_system::AccountInfo<u32, pallet_balances::AccountData<u128>>` as the 54113
/// runtime's metadata declares it: four u32 then four u128, SCALE little-endian, 80
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInfo {
    pub nonce: u32,
    pub consumers: u32,
    pub providers: u32,
    pub sufficients: u32,
    pub free: u128,
    pub reserved: u128,
    pub frozen: u128,
    pub flags: u128,
}

impl AccountInfo {
    pub const ENCODED_BYTES: usize = 4 * 4 + 4 * 16;
    /// `ExtraFlags::new_logic`, set on every account created by the current balances pallet.
    pub const FLAGS_NEW_LOGIC: u128 = 1 << 127;

    /// What the balances pallet would hold for a fresh account given `free`.
    pub fn fresh(free: u128) -> AccountInfo {
        AccountInfo {
            nonce: 0,
            consumers: 0,
            providers: 1,
            sufficients: 0,
            free,
            reserved: 0,
            frozen: 0,
            flags: Self::FLAGS_NEW_LOGIC,
        }
    }

    pub fn encode(&self) -> [u8; Self::ENCODED_BYTES] {
        let mut out = [0u8; Self::ENCODED_BYTES];
        let mut at = 0;
        for word in [self.nonce, self.consumers, self.providers, self.sufficients] {
            out[at..at + 4].copy_from_slice(&word.to_le_bytes());
            at += 4;
        }
        for amount in [self.free, self.reserved, self.frozen, self.flags] {
            out[at..at + 16].copy_from_slice(&amount.to_le_bytes());
            at += 16;
        }
        assert_eq!(at, Self::ENCODED_BYTES);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<AccountInfo> {
        if bytes.len() != Self::ENCODED_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u128_at = |i: usize| u128::from_le_bytes(bytes[i..i + 16].try_into().expect("16 bytes"));
        Some(AccountInfo {
            nonce: u32_at(0),
            consumers: u32_at(4),
            providers: u32_at(8),
            sufficients: u32_at(12),
            free: u128_at(16),
            reserved: u128_at(32),
            frozen: u128_at(48),
            flags: u128_at(64),
        })
    }
}

/// The storage key of `System.Account(account)`: the prefix, then the map's
/// `Blake2_128Concat` hasher (blake2b-128 of the key, then the key itself).
pub fn system_account_key(account: &[u8; 32]) -> [u8; 80] {
    let mut key = [0u8; 80];
    key[..32].copy_from_slice(&SYSTEM_ACCOUNT_PREFIX);
    key[32..48].copy_from_slice(&Blake2b::<U16>::digest(account));
    key[48..].copy_from_slice(account);
    key
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x").unwrap_or(text).as_bytes();
    let byte = |pair: &[u8]| match pair.len() {
        2 => u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok(),
        _ => None,
    };
    digits.chunks(2).map(byte).collect()
}

/// `<repo>/anchor`: the including crate is a member of the workspace at `<repo>`.
fn anchor_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../anchor")
}

/// `DDC_CHAIN_SPEC`, else the spec beside the repository in `shared/`.
pub fn chain_spec_path() -> PathBuf {
    match std::env::var_os("DDC_CHAIN_SPEC") {
        Some(path) => PathBuf::from(path),
        None => anchor_dir().join("../../shared/chain/cere-dev-54113.raw.json"),
    }
}

impl Chopsticks {
    /// Starts a fresh chain. `None`, after saying so on stderr, when the chain spec is
    /// absent; panics with chopsticks' log on any other failure.
    pub fn start() -> Option<Chopsticks> {
        Chopsticks::start_on(0)
    }

    /// [`Chopsticks::start`] on a given port (0: any free port): a chain that
    /// comes back where a killed one was. A new chain: genesis state again.
    pub fn start_on(port: u16) -> Option<Chopsticks> {
        let spec = chain_spec_path();
        if !spec.is_file() {
            eprintln!("skipping: {} not found (set DDC_CHAIN_SPEC)", spec.display());
            return None;
        }
        let package = anchor_dir().join("chain-test");
        ensure_installed(&package);

        let dir = tempfile::Builder::new().prefix("chopsticks-").tempdir().expect("temp dir for chopsticks");
        let log_path = dir.path().join("chopsticks.log");
        let log = std::fs::File::create(&log_path).expect("create chopsticks log");
        // Port 0: the kernel picks a free port and chopsticks logs it, so parallel
        // tests never race for one (chopsticks would otherwise slide to port+1..+9).
        let mut child = Command::new("node")
            .arg("--require")
            .arg(package.join("exit-with-parent.cjs"))
            .arg(package.join("node_modules/@acala-network/chopsticks/chopsticks.cjs"))
            .arg("--genesis")
            .arg(&spec)
            .args(["--build-block-mode", "Instant", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn node (is Node.js installed?): {error}"));
        let stdin = child.stdin.take().expect("piped stdin");

        let started = Instant::now();
        let wanted = port;
        let port = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(port) = listening_port(&text) {
                // chopsticks slides to port+1.. when the port is taken; a fixed port must be exact.
                assert!(wanted == 0 || port == wanted, "chopsticks listens on {port}, not {wanted}");
                break port;
            }
            if let Some(status) = child.try_wait().expect("poll chopsticks") {
                panic!("chopsticks exited ({status}) before listening; log {}:\n{text}", log_path.display());
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chopsticks not listening after {START_TIMEOUT:?}; log {}:\n{text}", log_path.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let chain = Chopsticks { ws_url: format!("ws://127.0.0.1:{port}"), port, log_path, child, _stdin: stdin, dir };
        let name = chain.rpc("system_chain", json!([]));
        assert_eq!(name, json!("cere_dev"), "unexpected chain; log:\n{}", chain.log());

        // Block #1 is built at startup, and fails about one time in ten: with no
        // Timestamp.Now in genesis, chopsticks reads the wall clock once for the BABE
        // slot and again for the timestamp inherent, and when a 6 s slot boundary
        // falls between the two the runtime panics ("Timestamp slot must match
        // `CurrentSlot`") and the head stays at #0. From #1 on both come from storage.
        for _ in 0..5 {
            if chain.head_number() >= 1 {
                return Some(chain);
            }
            let _ = chain.rpc_result("dev_newBlock", json!([]));
        }
        panic!("chopsticks could not build block #1; log:\n{}", chain.log());
    }

    /// The chopsticks process id (to pause it with SIGSTOP, as an outage).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// chopsticks' output so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// One JSON-RPC call over HTTP POST; panics on a JSON-RPC error.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        match self.rpc_result(method, params.clone()) {
            Ok(result) => result,
            Err(error) => panic!("{method}({params}) failed: {error}"),
        }
    }

    /// One JSON-RPC call over HTTP POST: `Ok(result)` or `Err(error object)`. Panics
    /// only when chopsticks cannot be reached or answers something that is not JSON-RPC.
    pub fn rpc_result(&self, method: &str, params: Value) -> Result<Value, Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        // HTTP/1.0 so that Node answers without chunked encoding and closes the
        // connection: the body is everything after the headers.
        let request = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|error| panic!("connect to chopsticks on port {}: {error}", self.port));
        stream.set_read_timeout(Some(RPC_TIMEOUT)).expect("set read timeout");
        stream.set_write_timeout(Some(RPC_TIMEOUT)).expect("set write timeout");
        stream.write_all(request.as_bytes()).unwrap_or_else(|error| panic!("send {method}: {error}"));
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap_or_else(|error| panic!("read {method} response: {error}"));
        let response = String::from_utf8(response).expect("HTTP response is UTF-8");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP body: {response}"));
        assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{method}: {head}\n{body}");
        let mut reply: Value = serde_json::from_str(body).unwrap_or_else(|error| panic!("{method}: {error}: {body}"));
        if let Some(error) = reply.get_mut("error") {
            return Err(error.take());
        }
        match reply.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => panic!("{method}: neither result nor error: {body}"),
        }
    }

    /// Builds one block now (Instant mode already builds one per extrinsic).
    pub fn dev_new_block(&self) {
        self.rpc("dev_newBlock", json!([]));
    }

    pub fn head_number(&self) -> u32 {
        let header = self.rpc("chain_getHeader", json!([]));
        let number = header["number"].as_str().unwrap_or_else(|| panic!("header without number: {header}"));
        u32::from_str_radix(number.trim_start_matches("0x"), 16).expect("hex block number")
    }

    /// Raw storage at the head, `None` when the key is absent.
    pub fn storage(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.rpc("state_getStorage", json!([to_hex(key)])) {
            Value::Null => None,
            Value::String(hex) => {
                Some(from_hex(&hex).unwrap_or_else(|| panic!("bad hex from state_getStorage: {hex}")))
            }
            other => panic!("state_getStorage returned {other}"),
        }
    }

    pub fn account_info(&self, account: &[u8; 32]) -> Option<AccountInfo> {
        let bytes = self.storage(&system_account_key(account))?;
        Some(
            AccountInfo::decode(&bytes).unwrap_or_else(|| panic!("System.Account is not 80 bytes: {}", to_hex(&bytes))),
        )
    }

    pub fn free_balance(&self, account: &[u8; 32]) -> Option<u128> {
        self.account_info(account).map(|info| info.free)
    }

    /// Sets `account`'s free balance to `amount` plancks (1 CERE = 10^10; the
    /// existential deposit is 10^10) by writing `System.Account` at the head. An
    /// existing account keeps its nonce and reference counts. Total issuance is not
    /// adjusted, which no test of ours reads.
    pub fn fund(&self, account: &[u8; 32], amount: u128) {
        let info = match self.account_info(account) {
            Some(existing) => AccountInfo { free: amount, ..existing },
            None => AccountInfo::fresh(amount),
        };
        let key = system_account_key(account);
        self.rpc("dev_setStorage", json!([[[to_hex(&key), to_hex(&info.encode())]]]));
        assert_eq!(self.account_info(account), Some(info), "dev_setStorage did not take; log:\n{}", self.log());
    }

    /// `system_accountNextIndex`: the nonce the next extrinsic from `account` must use.
    pub fn next_nonce(&self, account: &[u8; 32]) -> u32 {
        let nonce = self.rpc("system_accountNextIndex", json!([to_hex(account)]));
        nonce.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or_else(|| panic!("bad nonce {nonce}"))
    }
}

impl Drop for Chopsticks {
    fn drop(&mut self) {
        // Nothing to flush: the chain lives in memory.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(LISTENING)? + LISTENING.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `npm ci` in `anchor/chain-test` unless done for the current package-lock.json.
/// Once per process, and across processes (parallel test binaries, nextest,
/// `scripts/chopsticks.sh`) under the `.install-lock` directory.
fn ensure_installed(package: &Path) {
    static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        return;
    }
    let marker = package.join("node_modules/.ddc-installed");
    let lock_file = package.join("package-lock.json");
    let current = || {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        matches!((modified(&marker), modified(&lock_file)), (Some(done), Some(lock)) if done >= lock)
    };
    if !current() {
        let _lock = InstallLock::take(&package.join(".install-lock"));
        if !current() {
            eprintln!("installing chopsticks: npm ci in {} (about 30 s)", package.display());
            let started = Instant::now();
            // --ignore-scripts skips sqlite3's native build, needed only for --db.
            let output = Command::new("npm")
                .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(package)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|error| panic!("run npm (is Node.js installed?): {error}"));
            assert!(
                output.status.success(),
                "npm ci in {} failed ({}):\n{}\n{}",
                package.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            std::fs::write(&marker, b"").expect("write install marker");
            eprintln!("installed chopsticks in {:.0?}", started.elapsed());
        }
    }
    *installed = true;
}

/// A lock directory: `mkdir` is atomic, and a directory older than 15 minutes was
/// left by a killed install.
struct InstallLock(PathBuf);

impl InstallLock {
    fn take(path: &Path) -> InstallLock {
        let started = Instant::now();
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return InstallLock(path.to_path_buf()),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|modified| SystemTime::now().duration_since(modified).ok());
                    if age.is_some_and(|age| age > Duration::from_secs(15 * 60)) {
                        let _ = std::fs::remove_dir(path);
                    }
                    assert!(started.elapsed() < Duration::from_secs(20 * 60), "{} held for 20 minutes", path.display());
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(error) => panic!("create {}: {error}", path.display()),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
