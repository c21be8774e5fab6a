//! Cluster logic that does no I/O of its own: who the members are, where a
//! stream's replicas and a sealed segment's shards live, and the
//! Reed-Solomon coding of sealed segments.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod erasure;
pub mod membership;
pub mod placement;
