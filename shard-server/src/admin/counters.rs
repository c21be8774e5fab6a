//! Per-core event counters: connections, refusals, answers, repair.
//!
//! Each core owns one [`CoreCounters`] (behind an `Arc` so the admin thread
//! can read it) and only that core writes it, with relaxed atomic adds: no
//! lock and no shared cache line between cores on the request path. The admin
//! thread reads every core's counters at scrape time and sums them.

use std::sync::atomic::{AtomicU64, Ordering};

use ddc_formats::message::{RepairReport, Response};
use ddc_formats::wire::ErrorCode;
use ddc_formats::FormatError;

/// Why a frame was refused before it reached a request handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRefusal {
    /// Its header announced more than `server.frame_bytes_max`.
    Oversized,
    /// Its header was not a frame header (magic, version, reserved bytes): garbage.
    BadHeader,
    /// Its payload did not match the header's checksum.
    Checksum,
    /// Its payload did not arrive in time (`server.frame_read_timeout_ms`) or the connection dropped mid-frame.
    Incomplete,
    /// An intact frame whose payload is not a valid request (flatbuffers verifier, unknown message).
    InvalidMessage,
}

impl FrameRefusal {
    pub const ALL: [FrameRefusal; 5] = [
        FrameRefusal::Oversized,
        FrameRefusal::BadHeader,
        FrameRefusal::Checksum,
        FrameRefusal::Incomplete,
        FrameRefusal::InvalidMessage,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FrameRefusal::Oversized => "oversized",
            FrameRefusal::BadHeader => "bad_header",
            FrameRefusal::Checksum => "checksum",
            FrameRefusal::Incomplete => "incomplete",
            FrameRefusal::InvalidMessage => "invalid_message",
        }
    }

    /// The refusal a frame header decoding error stands for.
    pub fn of_header_error(e: &FormatError) -> FrameRefusal {
        match e {
            FormatError::FrameTooLarge { .. } => FrameRefusal::Oversized,
            _ => FrameRefusal::BadHeader,
        }
    }
}

/// Why a connection or request was refused on authentication or authorization grounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The connection's handshake failed (bad signature, wrong node, no ClientAuth in time).
    Handshake,
    /// `auth.required` and the connection did not start with a handshake.
    HandshakeRequired,
    /// A frame on an authenticated connection failed its session tag.
    SessionTag,
    /// A request answered `PermissionDenied`.
    PermissionDenied,
    /// A request answered `Unauthenticated`.
    Unauthenticated,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 5] = [
        AuthFailure::Handshake,
        AuthFailure::HandshakeRequired,
        AuthFailure::SessionTag,
        AuthFailure::PermissionDenied,
        AuthFailure::Unauthenticated,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Handshake => "handshake_failed",
            AuthFailure::HandshakeRequired => "handshake_required",
            AuthFailure::SessionTag => "session_tag",
            AuthFailure::PermissionDenied => "permission_denied",
            AuthFailure::Unauthenticated => "unauthenticated",
        }
    }
}

/// Error codes counted one by one; larger codes share the last slot.
pub const ERROR_CODE_SLOTS: usize = 32;

/// One core's counters. Written only by that core.
#[derive(Debug)]
pub struct CoreCounters {
    pub connections_accepted: AtomicU64,
    pub connections_closed: AtomicU64,
    /// Refused at `server.connections_max` (answered `Overloaded`).
    pub connections_refused: AtomicU64,
    /// Closed because their client stopped reading the answers.
    pub connections_evicted: AtomicU64,
    frames_refused: [AtomicU64; FrameRefusal::ALL.len()],
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    /// Error answers by code (index = the code's number).
    error_responses: [AtomicU64; ERROR_CODE_SLOTS],
    pub repair_passes: AtomicU64,
    pub repair_segments_checked: AtomicU64,
    pub repair_shards_missing: AtomicU64,
    pub repair_shards_corrupt: AtomicU64,
    pub repair_shards_rebuilt: AtomicU64,
    pub repair_errors: AtomicU64,
    pub scrub_passes: AtomicU64,
    pub scrub_damaged_found: AtomicU64,
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

impl Default for CoreCounters {
    fn default() -> Self {
        CoreCounters {
            connections_accepted: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
            frames_refused: zeros(),
            auth_failures: zeros(),
            error_responses: zeros(),
            repair_passes: AtomicU64::new(0),
            repair_segments_checked: AtomicU64::new(0),
            repair_shards_missing: AtomicU64::new(0),
            repair_shards_corrupt: AtomicU64::new(0),
            repair_shards_rebuilt: AtomicU64::new(0),
            repair_errors: AtomicU64::new(0),
            scrub_passes: AtomicU64::new(0),
            scrub_damaged_found: AtomicU64::new(0),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl CoreCounters {
    pub fn frame_refused(&self, why: FrameRefusal) {
        add(&self.frames_refused[why as usize], 1);
    }

    pub fn auth_failed(&self, why: AuthFailure) {
        add(&self.auth_failures[why as usize], 1);
    }

    /// Count an answer about to be sent: error answers by code, and the refusals
    /// among them that are authentication or authorization failures.
    pub fn answered(&self, response: &Response) {
        if let Response::Error { code, .. } = response {
            add(&self.error_responses[usize::from(code.0).min(ERROR_CODE_SLOTS - 1)], 1);
            match *code {
                ErrorCode::PermissionDenied => self.auth_failed(AuthFailure::PermissionDenied),
                ErrorCode::Unauthenticated => self.auth_failed(AuthFailure::Unauthenticated),
                _ => {}
            }
        }
    }

    /// One scrub pass over the local shards found `damaged` of them damaged.
    pub fn scrubbed(&self, damaged: u64) {
        add(&self.scrub_passes, 1);
        add(&self.scrub_damaged_found, damaged);
    }

    /// Add one repair pass's findings.
    pub fn repaired(&self, report: &RepairReport) {
        add(&self.repair_passes, 1);
        add(&self.repair_segments_checked, report.segments_checked);
        add(&self.repair_shards_missing, report.shards_missing);
        add(&self.repair_shards_corrupt, report.shards_corrupt);
        add(&self.repair_shards_rebuilt, report.shards_rebuilt);
        add(&self.repair_errors, report.errors.len() as u64);
    }

    pub fn frames_refused(&self, why: FrameRefusal) -> u64 {
        self.frames_refused[why as usize].load(Ordering::Relaxed)
    }

    pub fn auth_failures(&self, why: AuthFailure) -> u64 {
        self.auth_failures[why as usize].load(Ordering::Relaxed)
    }

    /// Error answers per code number (the last slot also holds larger codes).
    pub fn error_responses(&self) -> [u64; ERROR_CODE_SLOTS] {
        std::array::from_fn(|i| self.error_responses[i].load(Ordering::Relaxed))
    }
}

/// A relaxed read, for the renderers.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_errors_land_in_their_slots() {
        let c = CoreCounters::default();
        c.frame_refused(FrameRefusal::Checksum);
        c.answered(&Response::Error { code: ErrorCode::PermissionDenied, message: String::new() });
        c.answered(&Response::Error { code: ErrorCode(999), message: String::new() });
        c.answered(&Response::Ping { nonce: 1, server_version: String::new() });
        assert_eq!(c.frames_refused(FrameRefusal::Checksum), 1);
        assert_eq!(c.frames_refused(FrameRefusal::Oversized), 0);
        assert_eq!(c.auth_failures(AuthFailure::PermissionDenied), 1);
        let errors = c.error_responses();
        assert_eq!(errors[usize::from(ErrorCode::PermissionDenied.0)], 1);
        assert_eq!(errors[ERROR_CODE_SLOTS - 1], 1);
        assert_eq!(errors.iter().sum::<u64>(), 2);
    }
}
