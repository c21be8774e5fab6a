//! Identity and access: who an account is (an ed25519 key, shown in SS58 as
//! on the Cere chain), key files, signed grants to buckets, and the
//! client-side encryption of record payloads.
//!
//! **Boundary:** pure code, no I/O runtime and no network; the node and the
//! client call it. Key files are the only files it touches.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod account;
pub mod encryption;
pub mod grant;
pub mod handshake;
pub mod key_file;
pub mod usage;
