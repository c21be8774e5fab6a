//! The DDC storage node daemon and its client tools.
//!
//! `shard-server` runs one glommio executor per core ([`node::run`]). Each
//! executor opens its share of the log ([`ddc_engine::Engine`]), accepts
//! connections on the shared port (SO_REUSEPORT spreads them across cores),
//! and serves requests for the streams it owns; requests for streams another
//! core owns are forwarded there ([`router`]). In cluster mode ([`cluster`])
//! requests first go to the node that serves the stream, over node-to-node
//! connections ([`peer`]). An admin HTTP endpoint ([`admin`]) on a thread of
//! its own serves metrics, health, readiness and a status page.
//!
//! **Boundary:** networking, configuration and process lifecycle live here;
//! storage lives in `ddc-engine`, byte layouts in `ddc-formats`.

pub mod access;
pub mod admin;
pub mod anchoring;
pub mod bench;
pub mod buckets;
pub mod cluster;
pub mod cluster_cli;
pub mod config;
pub mod conn;
pub mod connections;
pub mod dispatch;
pub mod node;
pub mod peer;
pub mod progress;
pub mod router;
pub mod usage;
pub mod usage_journal;
