//! One core's share of the log: the streams this core owns.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use ddc_formats::name::validate_stream_name;

use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::recovery::open_stream;
use crate::stats::EngineStats;
use crate::storage::Storage;
use crate::stream::{now_ms, Stream};

/// Which core owns a stream: a stable hash of its name, so ownership is the
/// same on every start with the same core count. FNV-1a 64 with a final
/// avalanche (splitmix64), so names that differ in one character spread
/// evenly (CRC-32 does not: "bench-0".."bench-3" all land on one of 2 cores).
pub fn owner_core(name: &str, cores: usize) -> usize {
    assert!(cores > 0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % cores as u64) as usize
}

/// The streams owned by one executor. Not `Send`: it lives on its core.
pub struct Engine<S: Storage> {
    storage: S,
    config: Rc<LogConfig>,
    core: usize,
    cores: usize,
    streams: RefCell<BTreeMap<String, Rc<Stream<S>>>>,
    /// Streams whose recovery failed, with the reason; they refuse every request.
    unrecoverable: RefCell<BTreeMap<String, String>>,
    /// Every stream's counters, for readers on other threads.
    stats: Arc<EngineStats>,
}

impl<S: Storage> Engine<S> {
    /// Recover every stream this core owns.
    pub async fn open(storage: S, config: LogConfig, core: usize, cores: usize) -> Result<Rc<Engine<S>>> {
        assert!(core < cores);
        let config = Rc::new(config);
        let streams_dir = config.streams_dir();
        storage
            .init(&config.data_dir)
            .await
            .map_err(|e| EngineError::io(format!("prepare {}", config.data_dir.display()), &e))?;
        storage
            .create_dir_all(&streams_dir)
            .await
            .map_err(|e| EngineError::io(format!("create {}", streams_dir.display()), &e))?;
        // The streams directory's own entry must survive a crash too.
        storage
            .sync_dir(&config.data_dir)
            .await
            .map_err(|e| EngineError::io(format!("fsync {}", config.data_dir.display()), &e))?;
        let engine = Engine {
            storage,
            config: config.clone(),
            core,
            cores,
            streams: RefCell::new(BTreeMap::new()),
            unrecoverable: RefCell::new(BTreeMap::new()),
            stats: Arc::new(EngineStats::default()),
        };
        let names = engine
            .storage
            .list_dir(&streams_dir)
            .await
            .map_err(|e| EngineError::io(format!("list {}", streams_dir.display()), &e))?;
        for name in names {
            if validate_stream_name(&name).is_err() || owner_core(&name, cores) != core {
                continue;
            }
            match open_stream(&name, &engine.storage, &config).await {
                Ok(stream) => {
                    tracing::info!(core, stream = %name, next_offset = stream.high_watermark(), "recovered stream");
                    engine.stats.register(stream.stats().clone());
                    engine.streams.borrow_mut().insert(name, stream);
                }
                Err(e) => {
                    tracing::error!(core, stream = %name, error = %e, "stream could not be recovered; it refuses requests");
                    engine.unrecoverable.borrow_mut().insert(name, e.to_string());
                }
            }
        }
        Ok(Rc::new(engine))
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// How many cores (engines) the node runs; streams are spread over them by [`owner_core`].
    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The counters of every stream this engine holds, shareable with other threads.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// Streams whose recovery failed, with the reason.
    pub fn unrecoverable(&self) -> Vec<(String, String)> {
        self.unrecoverable.borrow().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn check_owned(&self, name: &str) -> Result<()> {
        validate_stream_name(name).map_err(|e| EngineError::InvalidStreamName(e.to_string()))?;
        assert_eq!(owner_core(name, self.cores), self.core, "stream {name} routed to the wrong core");
        if let Some(reason) = self.unrecoverable.borrow().get(name) {
            return Err(EngineError::Corrupted {
                stream: name.to_owned(),
                segment_base: 0,
                position: 0,
                end: 0,
                reason: format!("stream failed recovery: {reason}"),
            });
        }
        Ok(())
    }

    /// An existing stream.
    pub fn stream(&self, name: &str) -> Result<Rc<Stream<S>>> {
        self.check_owned(name)?;
        self.streams.borrow().get(name).cloned().ok_or_else(|| EngineError::UnknownStream(name.to_owned()))
    }

    /// The stream, created (in memory; on disk at its first flush) if missing.
    pub fn stream_or_create(&self, name: &str) -> Result<(Rc<Stream<S>>, bool)> {
        self.check_owned(name)?;
        if let Some(s) = self.streams.borrow().get(name) {
            return Ok((s.clone(), false));
        }
        let stream = Stream::create(name.to_owned(), self.storage.clone(), self.config.clone());
        self.stats.register(stream.stats().clone());
        self.streams.borrow_mut().insert(name.to_owned(), stream.clone());
        tracing::info!(core = self.core, stream = %name, "created stream");
        Ok((stream, true))
    }

    /// Create a stream durably (its directory exists on disk when this returns).
    pub async fn create_stream(&self, name: &str) -> Result<bool> {
        let (stream, created) = self.stream_or_create(name)?;
        stream.make_durable().await?;
        Ok(created)
    }

    /// Names of this core's streams, including ones that failed recovery.
    pub fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = self.streams.borrow().keys().cloned().collect();
        names.extend(self.unrecoverable.borrow().keys().cloned());
        names.sort();
        names
    }

    /// Periodic housekeeping: roll segments past their age, persist recovery points.
    pub async fn tick(&self) {
        let now = now_ms();
        let streams: Vec<_> = self.streams.borrow().values().cloned().collect();
        for stream in streams {
            stream.roll_if_aged(now);
            if let Err(e) = stream.write_recovery_point().await {
                tracing::warn!(stream = %stream.name, error = %e, "could not write recovery point");
            }
        }
    }

    /// Flush and close every stream.
    pub async fn close(&self) {
        let streams: Vec<_> = self.streams.borrow().values().cloned().collect();
        for stream in streams {
            stream.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner_core;

    #[test]
    fn ownership_is_stable_and_spread() {
        // Golden values: changing the hash moves streams between cores on upgrade.
        assert_eq!((0..8).map(|i| owner_core(&format!("bench-{i}"), 2)).collect::<Vec<_>>(), [0, 1, 0, 0, 0, 0, 0, 1]);
        let on_zero = (0..1000).filter(|i| owner_core(&format!("s{i}"), 2) == 0).count();
        assert!((400..600).contains(&on_zero), "{on_zero}");
    }
}
