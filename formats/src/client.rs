//! A blocking reference client for the wire protocol (plain `std::net`).
//!
//! One [`Client`] is one TCP connection. The simple calls ([`Client::produce`],
//! [`Client::fetch`], ...) send one request and wait for its response.
//! Pipelining is explicit: [`Client::send`] returns the request id at once and
//! [`Client::recv`] returns the next response, whichever request it answers.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;

use crate::batch::{batches, encode_records};
use crate::frame::{FrameHeader, FRAME_HEADER_BYTES};
use crate::message::{decode_response, encode_request_frame, Request, Response, StreamInfo};
use crate::wire::{AckLevel, ErrorCode};
use crate::FormatError;

/// Largest response frame the client accepts.
pub const RESPONSE_BYTES_MAX: u32 = (64 << 20) + (1 << 20);

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("bad response from server: {0}")]
    Format(#[from] FormatError),
    #[error("server refused the request ({code:?}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Records fetched from a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetched {
    /// `(offset, record)` for each record at or after the requested offset.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Offset to ask for next.
    pub next_offset: u64,
    pub high_watermark: u64,
}

/// One connection to a shard server.
pub struct Client {
    stream: TcpStream,
    fbb: FlatBufferBuilder<'static>,
    out: Vec<u8>,
    next_request_id: u64,
    frame_bytes_max: u32,
}

impl Client {
    pub fn connect<A: ToSocketAddrs>(addr: A) -> Result<Client, ClientError> {
        Client::from_stream(TcpStream::connect(addr)?)
    }

    /// Connect, giving up after `timeout` (an unreachable address otherwise
    /// blocks for the kernel's SYN retries, minutes).
    pub fn connect_timeout(addr: &std::net::SocketAddr, timeout: Duration) -> Result<Client, ClientError> {
        Client::from_stream(TcpStream::connect_timeout(addr, timeout)?)
    }

    /// A client over an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Result<Client, ClientError> {
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            fbb: FlatBufferBuilder::with_capacity(64 * 1024),
            out: Vec::with_capacity(64 * 1024),
            next_request_id: 1,
            // A fetch response holds at least one whole batch, which may be as
            // large as the server's largest request frame (up to 64 MiB).
            frame_bytes_max: RESPONSE_BYTES_MAX,
        })
    }

    /// Bound how long a blocking read may wait (None: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        Ok(self.stream.set_read_timeout(timeout)?)
    }

    /// Send a request without waiting; returns its request id.
    pub fn send(&mut self, request: &Request<'_>) -> Result<u64, ClientError> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.out.clear();
        encode_request_frame(&mut self.fbb, id, request, &mut self.out);
        self.stream.write_all(&self.out)?;
        Ok(id)
    }

    /// Write bytes as they are (for tests that send hostile input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.stream.write_all(bytes)?)
    }

    /// Receive the next response, whichever request it answers.
    pub fn recv(&mut self) -> Result<(u64, Response), ClientError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.stream.read_exact(&mut header)?;
        let parsed = FrameHeader::decode(&header, self.frame_bytes_max)?;
        let mut payload = vec![0u8; parsed.payload_len as usize];
        self.stream.read_exact(&mut payload)?;
        parsed.verify_payload(&header, &payload)?;
        Ok(decode_response(&payload)?)
    }

    /// Send one request and wait for its response; a server error becomes `Err`.
    pub fn call(&mut self, request: &Request<'_>) -> Result<Response, ClientError> {
        let id = self.send(request)?;
        let (got, response) = self.recv()?;
        if got != id && got != 0 {
            return Err(ClientError::Unexpected(format!("response for request {got}, expected {id}")));
        }
        match response {
            Response::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Ok(other),
        }
    }

    /// Append records to a stream with durable acknowledgment; returns the first record's offset.
    pub fn produce(&mut self, stream: &str, records: &[&[u8]]) -> Result<u64, ClientError> {
        let body = encode_records(records.iter().copied());
        let count = u32::try_from(records.len()).map_err(|_| ClientError::Unexpected("too many records".into()))?;
        self.produce_body(stream, &body, count, AckLevel::Durable)
    }

    /// Append an encoded batch body (see [`crate::batch::encode_records`]).
    pub fn produce_body(
        &mut self,
        stream: &str,
        body: &[u8],
        record_count: u32,
        ack: AckLevel,
    ) -> Result<u64, ClientError> {
        match self.call(&Request::Produce { stream, records: body, record_count, ack })? {
            Response::Produce { base_offset, .. } => Ok(base_offset),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetch raw batches starting with the one that holds `offset`.
    pub fn fetch_raw(
        &mut self,
        stream: &str,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<(Vec<u8>, u64), ClientError> {
        match self.call(&Request::Fetch { stream, offset, max_bytes, max_wait_ms })? {
            Response::Fetch { batches, high_watermark, .. } => Ok((batches, high_watermark)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Fetch records at or after `offset`, verifying every batch checksum.
    pub fn fetch(
        &mut self,
        stream: &str,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<Fetched, ClientError> {
        let (raw, high_watermark) = self.fetch_raw(stream, offset, max_bytes, max_wait_ms)?;
        let mut fetched = Fetched { records: Vec::new(), next_offset: offset, high_watermark };
        for batch in batches(&raw) {
            let batch = batch?;
            for (o, record) in batch.records() {
                if o >= offset {
                    fetched.records.push((o, record.to_vec()));
                }
            }
            fetched.next_offset = fetched.next_offset.max(batch.header.next_offset());
        }
        Ok(fetched)
    }

    pub fn create_stream(&mut self, stream: &str) -> Result<bool, ClientError> {
        match self.call(&Request::CreateStream { stream })? {
            Response::CreateStream { created } => Ok(created),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn list_streams(&mut self) -> Result<Vec<String>, ClientError> {
        match self.call(&Request::ListStreams)? {
            Response::ListStreams { streams } => Ok(streams),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn stream_info(&mut self, stream: &str) -> Result<StreamInfo, ClientError> {
        match self.call(&Request::StreamInfo { stream })? {
            Response::StreamInfo(info) => Ok(info),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Round trip; returns the server's version string.
    pub fn ping(&mut self) -> Result<String, ClientError> {
        match self.call(&Request::Ping { nonce: 1 })? {
            Response::Ping { server_version, .. } => Ok(server_version),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
