//! The node's configuration: TOML file, command-line overrides, defaults.
//!
//! Unknown keys and bad values are refused at start with the key named
//! (`serde(deny_unknown_fields)` and validation in [`NodeConfig::validate`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Everything the daemon needs to start. See docs/CONFIG.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where streams live (`<data_dir>/streams/<name>/`).
    pub data_dir: PathBuf,
    /// Address every core accepts connections on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Executors (one per core); 0 means one per available CPU.
    pub cores: usize,
    pub log: LogSection,
    pub server: ServerSection,
    pub cluster: ClusterSection,
    pub auth: AuthSection,
    pub usage: UsageSection,
    pub anchor: AnchorSection,
    pub http: HttpSection,
}

/// The admin HTTP endpoint: metrics, health, readiness, status page (docs/OPERATIONS.md "Metrics").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Serve the admin endpoint at all.
    pub enabled: bool,
    /// Where it listens. Port 0 takes any free port (logged at start).
    pub listen: SocketAddr,
    /// Link of an anchor's block on the status page: `{chain_url}` becomes the chain's
    /// WebSocket URL (percent-encoded), `{block}` the block hash.
    pub block_explorer_url: String,
    /// The status page reloads itself this often; 0: never.
    pub status_refresh_s: u32,
}

/// The polkadot.js apps block explorer, pointed at the node's chain.
pub const BLOCK_EXPLORER_URL_DEFAULT: &str = "https://polkadot.js.org/apps/?rpc={chain_url}#/explorer/query/{block}";

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: true,
            listen: "127.0.0.1:7480".parse().expect("literal address"),
            block_explorer_url: BLOCK_EXPLORER_URL_DEFAULT.to_owned(),
            status_refresh_s: 10,
        }
    }
}

/// Anchoring eras on the Cere chain (docs/ANCHORING.md). Off unless `chain_url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnchorSection {
    /// WebSocket JSON-RPC endpoint of a Cere node (or chopsticks), e.g. `ws://127.0.0.1:9944`.
    pub chain_url: Option<String>,
    /// Length of an era.
    pub era_ms: u64,
    /// The DDC cluster id (H160, 40 hex digits) written into anchor records.
    pub cluster_id: String,
    /// How long one submission may take, from submit to confirmed events.
    pub submit_timeout_ms: u64,
    /// First wait after a failed submission; doubled after each failure.
    pub retry_initial_ms: u64,
    /// Longest wait between submissions.
    pub retry_max_ms: u64,
}

impl Default for AnchorSection {
    fn default() -> Self {
        AnchorSection {
            chain_url: None,
            era_ms: 600_000,
            cluster_id: "0x0000000000000000000000000000000000000001".into(),
            submit_timeout_ms: 120_000,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
        }
    }
}

impl AnchorSection {
    pub fn cluster_id_bytes(&self) -> Result<[u8; 20], String> {
        let digits = self.cluster_id.strip_prefix("0x").unwrap_or(&self.cluster_id);
        let bytes = hex::decode(digits).map_err(|e| format!("anchor.cluster_id {:?}: {e}", self.cluster_id))?;
        bytes
            .try_into()
            .map_err(|_| format!("anchor.cluster_id {:?}: must be 20 bytes (40 hex digits)", self.cluster_id))
    }
}

/// Connection authentication and authorization (docs/SECURITY.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Refuse connections that do not start with a handshake, node-to-node
    /// requests from connections that are not cluster members, and every
    /// request on a bucket the account may not use. Off by default:
    /// clients may still authenticate, and then every frame is tagged.
    pub required: bool,
    /// This node's key file when it runs alone (in a cluster, `cluster.node_key_file`).
    /// Unset: `<data_dir>/node.key`, created on first start.
    pub node_key_file: Option<PathBuf>,
    /// The bucket registry (owners, public flags, revoked grants); see docs/SECURITY.md.
    pub buckets_file: Option<PathBuf>,
    /// How often each core checks `buckets_file` for changes.
    pub buckets_reload_ms: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection { required: false, node_key_file: None, buckets_file: None, buckets_reload_ms: 1_000 }
    }
}

/// Usage accounting (docs/SECURITY.md "Usage").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSection {
    /// How often each core fdatasyncs its usage journal. Usage is written before
    /// each answer, so a killed process loses none; a power loss can lose this window.
    pub sync_interval_ms: u64,
    /// A core's journal is compacted into a snapshot when its log grows past this.
    pub journal_compact_bytes: u64,
}

impl Default for UsageSection {
    fn default() -> Self {
        UsageSection { sync_interval_ms: 1_000, journal_compact_bytes: 64 << 20 }
    }
}

/// Cluster mode. With `membership_file` empty the node runs alone (no replication, no coding).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The cluster file (members, k, n, replication_total, min_insync_replicas); see docs/OPERATIONS.md.
    pub membership_file: Option<PathBuf>,
    /// This node's ed25519 key file (32-byte seed, hex); its public key must be in the cluster file.
    pub node_key_file: Option<PathBuf>,
    /// Where the membership comes from: "file" (`membership_file`) or "chain" (the cluster
    /// `anchor.cluster_id` on `anchor.chain_url`, read at start).
    pub membership_source: MembershipSourceKind,
    /// A follower that has not caught up with the leader for this long leaves the in-sync set,
    /// and a produce stops waiting for it.
    pub replica_lag_max_ms: u64,
    /// Which full copies of a segment stay once all its shards are stored: "leader" (followers drop
    /// their replica, the leader keeps its copy) or "all".
    pub replica_retention: ReplicaRetention,
    /// How often the leader looks for sealed segments to erasure-code.
    pub coding_interval_ms: u64,
    /// How often the scrubber re-verifies local shards and the holders of led segments.
    pub scrub_interval_ms: u64,
    /// Upper bound on the bytes per second the scrubber and repair read and rebuild.
    pub repair_bytes_per_s: u64,
    /// Deadline of one node-to-node request.
    pub peer_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipSourceKind {
    #[default]
    File,
    Chain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRetention {
    Leader,
    All,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            membership_file: None,
            node_key_file: None,
            membership_source: MembershipSourceKind::File,
            replica_lag_max_ms: 3_000,
            replica_retention: ReplicaRetention::Leader,
            coding_interval_ms: 1_000,
            scrub_interval_ms: 300_000,
            repair_bytes_per_s: 64 << 20,
            peer_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub segment_bytes_max: u64,
    pub segment_age_max_ms: u64,
    pub index_interval_bytes: u64,
    pub write_buffer_bytes: usize,
    pub unflushed_bytes_max: usize,
    pub preallocate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Largest accepted frame payload; bigger frames get an error and the connection closes.
    pub frame_bytes_max: u32,
    /// Requests one connection may have in flight before the server stops reading from it.
    pub in_flight_max: usize,
    /// Upper bound on a fetch's `max_wait_ms`.
    pub fetch_wait_max_ms: u32,
    /// A frame's payload must arrive within this long of its header, or the
    /// connection is closed (slow senders cannot pin memory).
    pub frame_read_timeout_ms: u64,
    /// Request payload bytes one core holds in memory at once, across all its
    /// connections; readers wait (TCP backpressure) when it is spent. Bounds
    /// memory under floods of large frames.
    pub core_payload_bytes_max: u64,
    /// Registered DMA memory per executor (glommio `io_memory`); the sum must stay under `ulimit -l`.
    pub io_memory_bytes: usize,
    /// Client connections the node keeps open at once, split evenly over the cores. A
    /// connection past it is answered `Overloaded` and closed.
    pub connections_max: usize,
    /// Response bytes one core holds for all its connections until they are written.
    /// When it is spent, connections that stopped reading (writer stalled for a second)
    /// are closed to make room.
    pub core_response_bytes_max: u64,
    /// A connection whose answers make no progress into its socket for this long is
    /// closed (a client that stopped reading), whether or not memory is short.
    pub write_stall_timeout_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("ddc-data"),
            listen: "127.0.0.1:7400".parse().expect("literal address"),
            cores: 0,
            log: LogSection::default(),
            server: ServerSection::default(),
            cluster: ClusterSection::default(),
            auth: AuthSection::default(),
            usage: UsageSection::default(),
            anchor: AnchorSection::default(),
            http: HttpSection::default(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        let d = ddc_engine::LogConfig::new("unused");
        LogSection {
            segment_bytes_max: d.segment_bytes_max,
            segment_age_max_ms: d.segment_age_max_ms,
            index_interval_bytes: d.index_interval_bytes,
            write_buffer_bytes: d.write_buffer_bytes,
            unflushed_bytes_max: d.unflushed_bytes_max,
            preallocate: d.preallocate,
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            frame_bytes_max: ddc_formats::frame::FRAME_BYTES_MAX_DEFAULT,
            in_flight_max: 128,
            fetch_wait_max_ms: 30_000,
            frame_read_timeout_ms: 30_000,
            core_payload_bytes_max: 256 << 20,
            io_memory_bytes: 2 << 20,
            connections_max: 10_000,
            core_response_bytes_max: 64 << 20,
            write_stall_timeout_ms: 30_000,
        }
    }
}

impl NodeConfig {
    /// Parse a TOML file's text. A value of the wrong type or out of its
    /// type's range is refused with its full key (`cluster.replica_retention`),
    /// since toml's own message shows only the line it is on, which does not
    /// name the section; an unknown key is named by toml itself.
    pub fn from_toml(text: &str) -> anyhow::Result<NodeConfig> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let key = e.path().to_string();
            let error = e.into_inner();
            if key == "." {
                anyhow::anyhow!("{error}")
            } else {
                anyhow::anyhow!("key `{key}`: {error}")
            }
        })
    }

    /// Refuse values that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let check =
            |ok: bool, msg: &str| if ok { Ok(()) } else { Err(anyhow::anyhow!("invalid configuration: {msg}")) };
        check(self.log.segment_bytes_max >= 64 << 10, "log.segment_bytes_max must be at least 65536")?;
        check(self.log.segment_bytes_max <= 1 << 40, "log.segment_bytes_max must be at most 1 TiB")?;
        check(self.log.index_interval_bytes >= 512, "log.index_interval_bytes must be at least 512")?;
        check(
            self.log.write_buffer_bytes >= 4096 && self.log.write_buffer_bytes.is_multiple_of(4096),
            "log.write_buffer_bytes must be a positive multiple of 4096",
        )?;
        check(
            self.log.unflushed_bytes_max >= self.log.write_buffer_bytes,
            "log.unflushed_bytes_max must be at least log.write_buffer_bytes",
        )?;
        check(self.log.segment_age_max_ms >= 1000, "log.segment_age_max_ms must be at least 1000")?;
        check(self.server.frame_bytes_max >= 4096, "server.frame_bytes_max must be at least 4096")?;
        check(self.server.frame_bytes_max <= 64 << 20, "server.frame_bytes_max must be at most 67108864")?;
        check(
            self.server.core_payload_bytes_max >= u64::from(self.server.frame_bytes_max),
            "server.core_payload_bytes_max must be at least server.frame_bytes_max",
        )?;
        check(self.server.frame_read_timeout_ms >= 100, "server.frame_read_timeout_ms must be at least 100")?;
        check(self.server.in_flight_max >= 1, "server.in_flight_max must be at least 1")?;
        check(self.server.connections_max >= 1, "server.connections_max must be at least 1")?;
        check(
            self.server.core_response_bytes_max >= u64::from(self.server.frame_bytes_max) + 4096,
            "server.core_response_bytes_max must be at least server.frame_bytes_max + 4096 (one full answer)",
        )?;
        check(self.server.write_stall_timeout_ms >= 1000, "server.write_stall_timeout_ms must be at least 1000")?;
        // glommio allocates this much per core up front and panics when it cannot.
        check(self.server.io_memory_bytes <= 1 << 30, "server.io_memory_bytes must be at most 1073741824 (1 GiB)")?;
        check(self.cores <= 256, "cores must be at most 256")?;
        match self.cluster.membership_source {
            MembershipSourceKind::File => check(
                self.cluster.membership_file.is_some() == self.cluster.node_key_file.is_some(),
                "cluster.membership_file and cluster.node_key_file must be set together",
            )?,
            MembershipSourceKind::Chain => {
                check(
                    self.cluster.node_key_file.is_some() && self.cluster.membership_file.is_none(),
                    "cluster.membership_source = \"chain\" needs cluster.node_key_file and no cluster.membership_file",
                )?;
                check(self.anchor.chain_url.is_some(), "cluster.membership_source = \"chain\" needs anchor.chain_url")?;
            }
        }
        check(self.cluster.replica_lag_max_ms >= 100, "cluster.replica_lag_max_ms must be at least 100")?;
        check(self.cluster.coding_interval_ms >= 10, "cluster.coding_interval_ms must be at least 10")?;
        check(self.cluster.scrub_interval_ms >= 100, "cluster.scrub_interval_ms must be at least 100")?;
        check(self.cluster.repair_bytes_per_s >= 1 << 20, "cluster.repair_bytes_per_s must be at least 1048576")?;
        check(self.cluster.peer_timeout_ms >= 100, "cluster.peer_timeout_ms must be at least 100")?;
        check(self.auth.buckets_reload_ms >= 100, "auth.buckets_reload_ms must be at least 100")?;
        check(self.usage.sync_interval_ms >= 10, "usage.sync_interval_ms must be at least 10")?;
        check(self.usage.journal_compact_bytes >= 4096, "usage.journal_compact_bytes must be at least 4096")?;
        check(self.anchor.era_ms >= 1000, "anchor.era_ms must be at least 1000")?;
        check(self.anchor.submit_timeout_ms >= 1000, "anchor.submit_timeout_ms must be at least 1000")?;
        check(self.anchor.retry_initial_ms >= 10, "anchor.retry_initial_ms must be at least 10")?;
        check(
            self.anchor.retry_max_ms >= self.anchor.retry_initial_ms,
            "anchor.retry_max_ms must be at least anchor.retry_initial_ms",
        )?;
        if let Err(e) = self.anchor.cluster_id_bytes() {
            return Err(anyhow::anyhow!("invalid configuration: {e}"));
        }
        if let Some(url) = &self.anchor.chain_url {
            check(
                url.starts_with("ws://") || url.starts_with("wss://"),
                "anchor.chain_url must be a ws:// or wss:// URL",
            )?;
        }
        let explorer = &self.http.block_explorer_url;
        check(
            explorer.starts_with("https://") || explorer.starts_with("http://"),
            "http.block_explorer_url must be an http:// or https:// URL",
        )?;
        check(
            !explorer.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>')),
            "http.block_explorer_url must not contain spaces, control characters, quotes or angle brackets",
        )?;
        check(self.http.status_refresh_s <= 3600, "http.status_refresh_s must be at most 3600")?;
        if self.http.enabled {
            check(
                self.http.listen.port() == 0 || self.http.listen != self.listen,
                "http.listen must differ from listen",
            )?;
        }
        Ok(())
    }

    /// The node's key file: configured, or `<data_dir>/node.key` (created on first start).
    pub fn identity_file(&self) -> PathBuf {
        // In a cluster the node is the member its cluster key names; auth.node_key_file is for a node alone.
        match self.cluster.node_key_file.as_deref().or(self.auth.node_key_file.as_deref()) {
            Some(p) => p.to_path_buf(),
            None => self.data_dir.join("node.key"),
        }
    }

    /// Whether the key file is the one the node creates for itself.
    pub fn identity_is_generated(&self) -> bool {
        self.auth.node_key_file.is_none() && self.cluster.node_key_file.is_none()
    }

    /// The engine's view of this configuration.
    pub fn log_config(&self) -> ddc_engine::LogConfig {
        let mut c = ddc_engine::LogConfig::new(&self.data_dir);
        c.segment_bytes_max = self.log.segment_bytes_max;
        c.segment_age_max_ms = self.log.segment_age_max_ms;
        c.index_interval_bytes = self.log.index_interval_bytes;
        c.write_buffer_bytes = self.log.write_buffer_bytes;
        c.unflushed_bytes_max = self.log.unflushed_bytes_max;
        c.preallocate = self.log.preallocate;
        c.batch_bytes_max = self.server.frame_bytes_max as usize + ddc_formats::batch::BATCH_HEADER_BYTES;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let e = NodeConfig::from_toml("data_dirr = \"x\"").unwrap_err().to_string();
        assert!(e.contains("data_dirr"), "{e}");
        let e = NodeConfig::from_toml("[log]\nsegment_bytes_max = \"big\"").unwrap_err().to_string();
        assert!(e.contains("segment_bytes_max"), "{e}");
        let e = NodeConfig::from_toml("[cluster]\nreplica_retention = \"some\"").unwrap_err().to_string();
        assert!(e.contains("key `cluster.replica_retention`"), "{e}");
        let c = NodeConfig::from_toml("[log]\nsegment_bytes_max = 10").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("log.segment_bytes_max"));
        let c = NodeConfig::from_toml("cores = 2\n[server]\nin_flight_max = 4").unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.in_flight_max, 4);
        assert_eq!(c.listen.port(), 7400);
        assert_eq!(c.http.listen.port(), 7480);
        assert!(c.http.enabled);
    }

    #[test]
    fn http_keys_are_checked_by_name() {
        let e = NodeConfig::from_toml("[http]\nlisten = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = NodeConfig::from_toml("[http]\nport = 1").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let c = NodeConfig::from_toml("[http]\nblock_explorer_url = \"javascript:alert(1)\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("http.block_explorer_url"));
        let c = NodeConfig::from_toml("listen = \"127.0.0.1:9000\"\n[http]\nlisten = \"127.0.0.1:9000\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("http.listen"));
        let c = NodeConfig::from_toml("[http]\nstatus_refresh_s = 100000").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("http.status_refresh_s"));
        let c = NodeConfig::from_toml("[http]\nenabled = false\nlisten = \"127.0.0.1:0\"").unwrap();
        c.validate().unwrap();
        assert!(!c.http.enabled);
    }
}
