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
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("ddc-data"),
            listen: "127.0.0.1:7400".parse().expect("literal address"),
            cores: 0,
            log: LogSection::default(),
            server: ServerSection::default(),
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
        }
    }
}

impl NodeConfig {
    /// Parse a TOML file's text.
    pub fn from_toml(text: &str) -> anyhow::Result<NodeConfig> {
        Ok(toml::from_str(text)?)
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
        check(self.cores <= 256, "cores must be at most 256")?;
        Ok(())
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
        let c = NodeConfig::from_toml("[log]\nsegment_bytes_max = 10").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("log.segment_bytes_max"));
        let c = NodeConfig::from_toml("cores = 2\n[server]\nin_flight_max = 4").unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.in_flight_max, 4);
        assert_eq!(c.listen.port(), 7400);
    }
}
