//! Requests and responses as Rust values, and their flatbuffers encoding.
//!
//! [`decode_request`] runs the flatbuffers verifier before touching any field
//! and borrows from the payload (a produce's records are not copied).
//! Responses are owned values: they are built once and sent.

use flatbuffers::FlatBufferBuilder;

use crate::frame::{encode_frame_into, FRAME_HEADER_BYTES};
use crate::wire::{self, AckLevel, Body, ErrorCode};
use crate::FormatError;

/// A request as the client sent it, borrowing from the frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Produce {
        stream: &'a str,
        records: &'a [u8],
        record_count: u32,
        ack: AckLevel,
    },
    Fetch {
        stream: &'a str,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    CreateStream {
        stream: &'a str,
    },
    ListStreams,
    StreamInfo {
        stream: &'a str,
    },
    Ping {
        nonce: u64,
    },
    Seal {
        stream: &'a str,
    },
    /// Node to node: leader-durable batches for a follower, exactly as stored.
    Replicate {
        stream: &'a str,
        base_offset: u64,
        batches: &'a [u8],
        leader: &'a [u8],
        /// Offsets below it are erasure-coded with every shard stored.
        coded_offset: u64,
    },
    /// Node to node: store a shard (header bytes per docs/FORMATS.md, then body).
    PutShard {
        header: &'a [u8],
        body: &'a [u8],
    },
    GetShard {
        stream: &'a str,
        base_offset: u64,
        index: u8,
    },
    ListShards {
        stream: Option<&'a str>,
        verify: bool,
    },
    Repair {
        stream: Option<&'a str>,
    },
    /// A grant chain (ddc_auth::grant::GrantChain encoding) for the rest of the connection.
    PresentGrants {
        chain: &'a [u8],
    },
    /// A consumer's signed acknowledgment (ddc_auth::usage::ConsumerAck encoding).
    UsageAck {
        ack: &'a [u8],
    },
    /// The usage this node accounted for one bucket, or all of them.
    Usage {
        bucket: Option<u64>,
    },
    /// An anchor proof: of the segment holding `offset` of `stream`, or (no stream) of
    /// `bucket`'s latest anchored usage.
    Proof {
        stream: Option<&'a str>,
        offset: u64,
        bucket: u64,
    },
}

impl Request<'_> {
    /// The stream a request names, if any (decides which core serves it).
    pub fn stream(&self) -> Option<&str> {
        match self {
            Request::Produce { stream, .. }
            | Request::Fetch { stream, .. }
            | Request::CreateStream { stream }
            | Request::StreamInfo { stream }
            | Request::Seal { stream }
            | Request::Replicate { stream, .. }
            | Request::GetShard { stream, .. } => Some(stream),
            Request::ListShards { stream, .. } | Request::Repair { stream } => *stream,
            // The stream is inside the shard header; the server decodes it to route.
            Request::PutShard { .. }
            | Request::ListStreams
            | Request::Ping { .. }
            | Request::PresentGrants { .. }
            | Request::UsageAck { .. }
            | Request::Usage { .. }
            | Request::Proof { .. } => None,
        }
    }
}

/// One shard as a holder reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// The shard's header bytes (docs/FORMATS.md "Shards").
    pub header: Vec<u8>,
    pub healthy: bool,
    pub detail: String,
}

/// What one repair pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub segments_checked: u64,
    pub shards_missing: u64,
    pub shards_corrupt: u64,
    pub shards_rebuilt: u64,
    pub errors: Vec<String>,
}

impl RepairReport {
    pub fn add(&mut self, other: RepairReport) {
        self.segments_checked += other.segments_checked;
        self.shards_missing += other.shards_missing;
        self.shards_corrupt += other.shards_corrupt;
        self.shards_rebuilt += other.shards_rebuilt;
        self.errors.extend(other.errors);
    }
}

/// One segment as reported by `StreamInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: u64,
    pub next_offset: u64,
    pub size_bytes: u64,
    pub sealed: bool,
    pub root: Option<[u8; 32]>,
}

/// A stream as reported by `StreamInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub stream: String,
    pub first_offset: u64,
    pub next_offset: u64,
    pub high_watermark: u64,
    pub segments: Vec<SegmentInfo>,
    pub core: u16,
    pub fenced_reason: Option<String>,
}

/// A response, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Produce {
        base_offset: u64,
        record_count: u32,
    },
    Fetch {
        batches: Vec<u8>,
        high_watermark: u64,
        log_start_offset: u64,
    },
    CreateStream {
        created: bool,
    },
    ListStreams {
        streams: Vec<String>,
    },
    StreamInfo(StreamInfo),
    Ping {
        nonce: u64,
        server_version: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Seal {
        sealed_base_offset: Option<u64>,
    },
    Replicate {
        next_offset: u64,
    },
    PutShard,
    GetShard {
        header: Vec<u8>,
        body: Vec<u8>,
    },
    ListShards {
        shards: Vec<ShardEntry>,
    },
    Repair(RepairReport),
    /// What the presented chain gives this connection's account.
    PresentGrants {
        bucket: u64,
        operations: u16,
        expires_ms: u64,
    },
    UsageAck,
    /// A signed usage report (ddc_auth::usage::UsageReport encoding).
    Usage {
        report: Vec<u8>,
    },
    /// An anchor proof (ddc_anchor::era::AnchorProof encoding).
    Proof {
        proof: Vec<u8>,
    },
}

fn malformed(e: flatbuffers::InvalidFlatbuffer) -> FormatError {
    FormatError::Malformed(e.to_string())
}

fn missing(what: &'static str) -> FormatError {
    FormatError::Invalid { what: "message", reason: format!("{what} is missing") }
}

/// The request id of a payload that passes the flatbuffers verifier, even if
/// its body is not a valid request (so an error can name the request).
pub fn peek_request_id(payload: &[u8]) -> Option<u64> {
    wire::root_as_message(payload).ok().map(|m| m.request_id())
}

/// Verify and decode a request payload. Returns the request id and the request.
pub fn decode_request(payload: &[u8]) -> Result<(u64, Request<'_>), FormatError> {
    decode_request_envelope(payload).map(|(id, _, r)| (id, r))
}

/// [`decode_request`], also returning the envelope's `forwarded` flag.
pub fn decode_request_envelope(payload: &[u8]) -> Result<(u64, bool, Request<'_>), FormatError> {
    let message = wire::root_as_message(payload).map_err(malformed)?;
    let id = message.request_id();
    let forwarded = message.forwarded();
    let request = match message.body_type() {
        Body::ProduceRequest => {
            let r = message.body_as_produce_request().ok_or_else(|| missing("body"))?;
            Request::Produce {
                stream: r.stream(),
                records: r.records().bytes(),
                record_count: r.record_count(),
                ack: r.ack(),
            }
        }
        Body::FetchRequest => {
            let r = message.body_as_fetch_request().ok_or_else(|| missing("body"))?;
            Request::Fetch {
                stream: r.stream(),
                offset: r.offset(),
                max_bytes: r.max_bytes(),
                max_wait_ms: r.max_wait_ms(),
            }
        }
        Body::CreateStreamRequest => {
            let r = message.body_as_create_stream_request().ok_or_else(|| missing("body"))?;
            Request::CreateStream { stream: r.stream() }
        }
        Body::ListStreamsRequest => Request::ListStreams,
        Body::StreamInfoRequest => {
            let r = message.body_as_stream_info_request().ok_or_else(|| missing("body"))?;
            Request::StreamInfo { stream: r.stream() }
        }
        Body::PingRequest => {
            let r = message.body_as_ping_request().ok_or_else(|| missing("body"))?;
            Request::Ping { nonce: r.nonce() }
        }
        Body::SealRequest => {
            let r = message.body_as_seal_request().ok_or_else(|| missing("body"))?;
            Request::Seal { stream: r.stream() }
        }
        Body::ReplicateRequest => {
            let r = message.body_as_replicate_request().ok_or_else(|| missing("body"))?;
            Request::Replicate {
                stream: r.stream(),
                base_offset: r.base_offset(),
                batches: r.batches().map(|b| b.bytes()).unwrap_or_default(),
                leader: r.leader().map(|b| b.bytes()).unwrap_or_default(),
                coded_offset: r.coded_offset(),
            }
        }
        Body::PutShardRequest => {
            let r = message.body_as_put_shard_request().ok_or_else(|| missing("body"))?;
            Request::PutShard { header: r.header().bytes(), body: r.body().bytes() }
        }
        Body::GetShardRequest => {
            let r = message.body_as_get_shard_request().ok_or_else(|| missing("body"))?;
            Request::GetShard { stream: r.stream(), base_offset: r.base_offset(), index: r.index() }
        }
        Body::ListShardsRequest => {
            let r = message.body_as_list_shards_request().ok_or_else(|| missing("body"))?;
            Request::ListShards { stream: r.stream(), verify: r.verify() }
        }
        Body::RepairRequest => {
            let r = message.body_as_repair_request().ok_or_else(|| missing("body"))?;
            Request::Repair { stream: r.stream() }
        }
        Body::PresentGrantsRequest => {
            let r = message.body_as_present_grants_request().ok_or_else(|| missing("body"))?;
            Request::PresentGrants { chain: r.chain().bytes() }
        }
        Body::UsageAckRequest => {
            let r = message.body_as_usage_ack_request().ok_or_else(|| missing("body"))?;
            Request::UsageAck { ack: r.ack().bytes() }
        }
        Body::UsageRequest => {
            let r = message.body_as_usage_request().ok_or_else(|| missing("body"))?;
            Request::Usage { bucket: (!r.all()).then_some(r.bucket()) }
        }
        Body::ProofRequest => {
            let r = message.body_as_proof_request().ok_or_else(|| missing("body"))?;
            Request::Proof { stream: r.stream(), offset: r.offset(), bucket: r.bucket() }
        }
        other => {
            return Err(FormatError::Invalid {
                what: "message",
                reason: format!("body type {} is not a request", other.0),
            })
        }
    };
    if let Request::Produce { ack, .. } = request {
        if ack != AckLevel::Durable && ack != AckLevel::WrittenNotSynced {
            return Err(FormatError::Invalid { what: "produce", reason: format!("unknown ack level {}", ack.0) });
        }
    }
    Ok((id, forwarded, request))
}

/// Verify and decode a response payload.
pub fn decode_response(payload: &[u8]) -> Result<(u64, Response), FormatError> {
    let message = wire::root_as_message(payload).map_err(malformed)?;
    let id = message.request_id();
    let response = match message.body_type() {
        Body::ProduceResponse => {
            let r = message.body_as_produce_response().ok_or_else(|| missing("body"))?;
            Response::Produce { base_offset: r.base_offset(), record_count: r.record_count() }
        }
        Body::FetchResponse => {
            let r = message.body_as_fetch_response().ok_or_else(|| missing("body"))?;
            Response::Fetch {
                batches: r.batches().map(|b| b.bytes().to_vec()).unwrap_or_default(),
                high_watermark: r.high_watermark(),
                log_start_offset: r.log_start_offset(),
            }
        }
        Body::CreateStreamResponse => {
            let r = message.body_as_create_stream_response().ok_or_else(|| missing("body"))?;
            Response::CreateStream { created: r.created() }
        }
        Body::ListStreamsResponse => {
            let r = message.body_as_list_streams_response().ok_or_else(|| missing("body"))?;
            Response::ListStreams {
                streams: r.streams().map(|v| v.iter().map(str::to_owned).collect()).unwrap_or_default(),
            }
        }
        Body::StreamInfoResponse => {
            let r = message.body_as_stream_info_response().ok_or_else(|| missing("body"))?;
            let mut segments = Vec::new();
            for s in r.segments().iter().flat_map(|v| v.iter()) {
                let root = match s.root() {
                    Some(bytes) => Some(<[u8; 32]>::try_from(bytes.bytes()).map_err(|_| FormatError::Invalid {
                        what: "segment info",
                        reason: "root is not 32 bytes".into(),
                    })?),
                    None => None,
                };
                segments.push(SegmentInfo {
                    base_offset: s.base_offset(),
                    next_offset: s.next_offset(),
                    size_bytes: s.size_bytes(),
                    sealed: s.sealed(),
                    root,
                });
            }
            Response::StreamInfo(StreamInfo {
                stream: r.stream().unwrap_or_default().to_owned(),
                first_offset: r.first_offset(),
                next_offset: r.next_offset(),
                high_watermark: r.high_watermark(),
                segments,
                core: r.core(),
                fenced_reason: r.fenced_reason().map(str::to_owned),
            })
        }
        Body::PingResponse => {
            let r = message.body_as_ping_response().ok_or_else(|| missing("body"))?;
            Response::Ping { nonce: r.nonce(), server_version: r.server_version().unwrap_or_default().to_owned() }
        }
        Body::ErrorResponse => {
            let r = message.body_as_error_response().ok_or_else(|| missing("body"))?;
            Response::Error { code: r.code(), message: r.message().unwrap_or_default().to_owned() }
        }
        Body::SealResponse => {
            let r = message.body_as_seal_response().ok_or_else(|| missing("body"))?;
            Response::Seal { sealed_base_offset: r.sealed().then_some(r.sealed_base_offset()) }
        }
        Body::ReplicateResponse => {
            let r = message.body_as_replicate_response().ok_or_else(|| missing("body"))?;
            Response::Replicate { next_offset: r.next_offset() }
        }
        Body::PutShardResponse => Response::PutShard,
        Body::GetShardResponse => {
            let r = message.body_as_get_shard_response().ok_or_else(|| missing("body"))?;
            Response::GetShard {
                header: r.header().map(|b| b.bytes().to_vec()).unwrap_or_default(),
                body: r.body().map(|b| b.bytes().to_vec()).unwrap_or_default(),
            }
        }
        Body::ListShardsResponse => {
            let r = message.body_as_list_shards_response().ok_or_else(|| missing("body"))?;
            let shards = r
                .shards()
                .iter()
                .flat_map(|v| v.iter())
                .map(|e| ShardEntry {
                    header: e.header().map(|b| b.bytes().to_vec()).unwrap_or_default(),
                    healthy: e.healthy(),
                    detail: e.detail().unwrap_or_default().to_owned(),
                })
                .collect();
            Response::ListShards { shards }
        }
        Body::RepairResponse => {
            let r = message.body_as_repair_response().ok_or_else(|| missing("body"))?;
            Response::Repair(RepairReport {
                segments_checked: r.segments_checked(),
                shards_missing: r.shards_missing(),
                shards_corrupt: r.shards_corrupt(),
                shards_rebuilt: r.shards_rebuilt(),
                errors: r.errors().map(|v| v.iter().map(str::to_owned).collect()).unwrap_or_default(),
            })
        }
        Body::PresentGrantsResponse => {
            let r = message.body_as_present_grants_response().ok_or_else(|| missing("body"))?;
            Response::PresentGrants { bucket: r.bucket(), operations: r.operations(), expires_ms: r.expires_ms() }
        }
        Body::UsageAckResponse => Response::UsageAck,
        Body::UsageResponse => {
            let r = message.body_as_usage_response().ok_or_else(|| missing("body"))?;
            Response::Usage { report: r.report().map(|b| b.bytes().to_vec()).unwrap_or_default() }
        }
        Body::ProofResponse => {
            let r = message.body_as_proof_response().ok_or_else(|| missing("body"))?;
            Response::Proof { proof: r.proof().map(|b| b.bytes().to_vec()).unwrap_or_default() }
        }
        other => {
            return Err(FormatError::Invalid {
                what: "message",
                reason: format!("body type {} is not a response", other.0),
            })
        }
    };
    Ok((id, response))
}

/// Build a request's flatbuffers payload in `fbb` (reset first) and return it framed.
pub fn encode_request_frame(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    request: &Request<'_>,
    out: &mut Vec<u8>,
) {
    encode_request_frame_envelope(fbb, request_id, false, request, out)
}

/// [`encode_request_frame`] with the envelope's `forwarded` flag.
pub fn encode_request_frame_envelope(
    fbb: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    forwarded: bool,
    request: &Request<'_>,
    out: &mut Vec<u8>,
) {
    fbb.reset();
    let (body_type, body) = match *request {
        Request::Produce { stream, records, record_count, ack } => {
            let records = fbb.create_vector(records);
            let stream = fbb.create_string(stream);
            let r = wire::ProduceRequest::create(
                fbb,
                &wire::ProduceRequestArgs { stream: Some(stream), records: Some(records), record_count, ack },
            );
            (Body::ProduceRequest, r.as_union_value())
        }
        Request::Fetch { stream, offset, max_bytes, max_wait_ms } => {
            let stream = fbb.create_string(stream);
            let r = wire::FetchRequest::create(
                fbb,
                &wire::FetchRequestArgs { stream: Some(stream), offset, max_bytes, max_wait_ms },
            );
            (Body::FetchRequest, r.as_union_value())
        }
        Request::CreateStream { stream } => {
            let stream = fbb.create_string(stream);
            let r = wire::CreateStreamRequest::create(fbb, &wire::CreateStreamRequestArgs { stream: Some(stream) });
            (Body::CreateStreamRequest, r.as_union_value())
        }
        Request::ListStreams => {
            let r = wire::ListStreamsRequest::create(fbb, &wire::ListStreamsRequestArgs {});
            (Body::ListStreamsRequest, r.as_union_value())
        }
        Request::StreamInfo { stream } => {
            let stream = fbb.create_string(stream);
            let r = wire::StreamInfoRequest::create(fbb, &wire::StreamInfoRequestArgs { stream: Some(stream) });
            (Body::StreamInfoRequest, r.as_union_value())
        }
        Request::Ping { nonce } => {
            let r = wire::PingRequest::create(fbb, &wire::PingRequestArgs { nonce });
            (Body::PingRequest, r.as_union_value())
        }
        Request::Seal { stream } => {
            let stream = fbb.create_string(stream);
            let r = wire::SealRequest::create(fbb, &wire::SealRequestArgs { stream: Some(stream) });
            (Body::SealRequest, r.as_union_value())
        }
        Request::Replicate { stream, base_offset, batches, leader, coded_offset } => {
            let batches = fbb.create_vector(batches);
            let leader = fbb.create_vector(leader);
            let stream = fbb.create_string(stream);
            let r = wire::ReplicateRequest::create(
                fbb,
                &wire::ReplicateRequestArgs {
                    stream: Some(stream),
                    base_offset,
                    batches: Some(batches),
                    leader: Some(leader),
                    coded_offset,
                },
            );
            (Body::ReplicateRequest, r.as_union_value())
        }
        Request::PutShard { header, body } => {
            let body = fbb.create_vector(body);
            let header = fbb.create_vector(header);
            let r = wire::PutShardRequest::create(
                fbb,
                &wire::PutShardRequestArgs { header: Some(header), body: Some(body) },
            );
            (Body::PutShardRequest, r.as_union_value())
        }
        Request::GetShard { stream, base_offset, index } => {
            let stream = fbb.create_string(stream);
            let r = wire::GetShardRequest::create(
                fbb,
                &wire::GetShardRequestArgs { stream: Some(stream), base_offset, index },
            );
            (Body::GetShardRequest, r.as_union_value())
        }
        Request::ListShards { stream, verify } => {
            let stream = stream.map(|s| fbb.create_string(s));
            let r = wire::ListShardsRequest::create(fbb, &wire::ListShardsRequestArgs { stream, verify });
            (Body::ListShardsRequest, r.as_union_value())
        }
        Request::Repair { stream } => {
            let stream = stream.map(|s| fbb.create_string(s));
            let r = wire::RepairRequest::create(fbb, &wire::RepairRequestArgs { stream });
            (Body::RepairRequest, r.as_union_value())
        }
        Request::PresentGrants { chain } => {
            let chain = fbb.create_vector(chain);
            let r = wire::PresentGrantsRequest::create(fbb, &wire::PresentGrantsRequestArgs { chain: Some(chain) });
            (Body::PresentGrantsRequest, r.as_union_value())
        }
        Request::UsageAck { ack } => {
            let ack = fbb.create_vector(ack);
            let r = wire::UsageAckRequest::create(fbb, &wire::UsageAckRequestArgs { ack: Some(ack) });
            (Body::UsageAckRequest, r.as_union_value())
        }
        Request::Usage { bucket } => {
            let r = wire::UsageRequest::create(
                fbb,
                &wire::UsageRequestArgs { bucket: bucket.unwrap_or(0), all: bucket.is_none() },
            );
            (Body::UsageRequest, r.as_union_value())
        }
        Request::Proof { stream, offset, bucket } => {
            let stream = stream.map(|s| fbb.create_string(s));
            let r = wire::ProofRequest::create(fbb, &wire::ProofRequestArgs { stream, offset, bucket });
            (Body::ProofRequest, r.as_union_value())
        }
    };
    let message = wire::Message::create(fbb, &wire::MessageArgs { request_id, body_type, body: Some(body), forwarded });
    fbb.finish(message, None);
    encode_frame_into(fbb.finished_data(), out);
    debug_assert!(out.len() >= FRAME_HEADER_BYTES);
}

/// Build a response frame and append it to `out`.
pub fn encode_response_frame(fbb: &mut FlatBufferBuilder<'_>, request_id: u64, response: &Response, out: &mut Vec<u8>) {
    fbb.reset();
    build_response(fbb, request_id, response);
    encode_frame_into(fbb.finished_data(), out);
}

/// A whole frame held in `buf[start..]`.
#[derive(Debug)]
pub struct OwnedFrame {
    pub buf: Vec<u8>,
    pub start: usize,
}

impl OwnedFrame {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Build a response frame without copying the message: the flatbuffer is
/// built back to front in `reuse` (zeroed first; only its allocation is reused) and the
/// frame header goes into the free space in front of it.
pub fn encode_response_owned(request_id: u64, response: &Response, mut reuse: Vec<u8>) -> OwnedFrame {
    let payload_hint = match response {
        Response::Fetch { batches, .. } => batches.len(),
        Response::GetShard { header, body } => header.len() + body.len(),
        Response::ListShards { shards } => shards.iter().map(|e| e.header.len() + e.detail.len() + 64).sum(),
        _ => 0,
    };
    let needed = payload_hint + 1024;
    // The builder leaves alignment padding untouched, so the buffer must be
    // zero: stale bytes of an earlier response must never reach the wire.
    reuse.clear();
    reuse.resize(needed, 0);
    let mut fbb = FlatBufferBuilder::from_vec(reuse);
    build_response(&mut fbb, request_id, response);
    let (mut buf, head) = fbb.collapse();
    if head >= FRAME_HEADER_BYTES {
        let start = head - FRAME_HEADER_BYTES;
        let (front, payload) = buf.split_at_mut(head);
        let mut header = [0u8; FRAME_HEADER_BYTES];
        crate::frame::encode_header(payload, &mut header);
        front[start..].copy_from_slice(&header);
        OwnedFrame { buf, start }
    } else {
        let mut out = Vec::with_capacity(buf.len() - head + FRAME_HEADER_BYTES);
        encode_frame_into(&buf[head..], &mut out);
        OwnedFrame { buf: out, start: 0 }
    }
}

fn build_response(fbb: &mut FlatBufferBuilder<'_>, request_id: u64, response: &Response) {
    let (body_type, body) = match response {
        Response::Produce { base_offset, record_count } => {
            let r = wire::ProduceResponse::create(
                fbb,
                &wire::ProduceResponseArgs { base_offset: *base_offset, record_count: *record_count },
            );
            (Body::ProduceResponse, r.as_union_value())
        }
        Response::Fetch { batches, high_watermark, log_start_offset } => {
            let batches = fbb.create_vector(batches);
            let r = wire::FetchResponse::create(
                fbb,
                &wire::FetchResponseArgs {
                    batches: Some(batches),
                    high_watermark: *high_watermark,
                    log_start_offset: *log_start_offset,
                },
            );
            (Body::FetchResponse, r.as_union_value())
        }
        Response::CreateStream { created } => {
            let r = wire::CreateStreamResponse::create(fbb, &wire::CreateStreamResponseArgs { created: *created });
            (Body::CreateStreamResponse, r.as_union_value())
        }
        Response::ListStreams { streams } => {
            let names: Vec<_> = streams.iter().map(|s| fbb.create_string(s)).collect();
            let streams = fbb.create_vector(&names);
            let r = wire::ListStreamsResponse::create(fbb, &wire::ListStreamsResponseArgs { streams: Some(streams) });
            (Body::ListStreamsResponse, r.as_union_value())
        }
        Response::StreamInfo(info) => {
            let segments: Vec<_> = info
                .segments
                .iter()
                .map(|s| {
                    let root = s.root.map(|r| fbb.create_vector(&r));
                    wire::SegmentInfo::create(
                        fbb,
                        &wire::SegmentInfoArgs {
                            base_offset: s.base_offset,
                            next_offset: s.next_offset,
                            size_bytes: s.size_bytes,
                            sealed: s.sealed,
                            root,
                        },
                    )
                })
                .collect();
            let segments = fbb.create_vector(&segments);
            let stream = fbb.create_string(&info.stream);
            let fenced_reason = info.fenced_reason.as_deref().map(|s| fbb.create_string(s));
            let r = wire::StreamInfoResponse::create(
                fbb,
                &wire::StreamInfoResponseArgs {
                    stream: Some(stream),
                    first_offset: info.first_offset,
                    next_offset: info.next_offset,
                    high_watermark: info.high_watermark,
                    segments: Some(segments),
                    core: info.core,
                    fenced_reason,
                },
            );
            (Body::StreamInfoResponse, r.as_union_value())
        }
        Response::Ping { nonce, server_version } => {
            let v = fbb.create_string(server_version);
            let r = wire::PingResponse::create(fbb, &wire::PingResponseArgs { nonce: *nonce, server_version: Some(v) });
            (Body::PingResponse, r.as_union_value())
        }
        Response::Error { code, message } => {
            let m = fbb.create_string(message);
            let r = wire::ErrorResponse::create(fbb, &wire::ErrorResponseArgs { code: *code, message: Some(m) });
            (Body::ErrorResponse, r.as_union_value())
        }
        Response::Seal { sealed_base_offset } => {
            let r = wire::SealResponse::create(
                fbb,
                &wire::SealResponseArgs {
                    sealed_base_offset: sealed_base_offset.unwrap_or(0),
                    sealed: sealed_base_offset.is_some(),
                },
            );
            (Body::SealResponse, r.as_union_value())
        }
        Response::Replicate { next_offset } => {
            let r = wire::ReplicateResponse::create(fbb, &wire::ReplicateResponseArgs { next_offset: *next_offset });
            (Body::ReplicateResponse, r.as_union_value())
        }
        Response::PutShard => {
            let r = wire::PutShardResponse::create(fbb, &wire::PutShardResponseArgs {});
            (Body::PutShardResponse, r.as_union_value())
        }
        Response::GetShard { header, body } => {
            let body = fbb.create_vector(body);
            let header = fbb.create_vector(header);
            let r = wire::GetShardResponse::create(
                fbb,
                &wire::GetShardResponseArgs { header: Some(header), body: Some(body) },
            );
            (Body::GetShardResponse, r.as_union_value())
        }
        Response::ListShards { shards } => {
            let entries: Vec<_> = shards
                .iter()
                .map(|e| {
                    let header = fbb.create_vector(&e.header);
                    let detail = fbb.create_string(&e.detail);
                    wire::ShardEntry::create(
                        fbb,
                        &wire::ShardEntryArgs { header: Some(header), healthy: e.healthy, detail: Some(detail) },
                    )
                })
                .collect();
            let shards = fbb.create_vector(&entries);
            let r = wire::ListShardsResponse::create(fbb, &wire::ListShardsResponseArgs { shards: Some(shards) });
            (Body::ListShardsResponse, r.as_union_value())
        }
        Response::Repair(report) => {
            let errors: Vec<_> = report.errors.iter().map(|e| fbb.create_string(e)).collect();
            let errors = fbb.create_vector(&errors);
            let r = wire::RepairResponse::create(
                fbb,
                &wire::RepairResponseArgs {
                    segments_checked: report.segments_checked,
                    shards_missing: report.shards_missing,
                    shards_corrupt: report.shards_corrupt,
                    shards_rebuilt: report.shards_rebuilt,
                    errors: Some(errors),
                },
            );
            (Body::RepairResponse, r.as_union_value())
        }
        &Response::PresentGrants { bucket, operations, expires_ms } => {
            let r = wire::PresentGrantsResponse::create(
                fbb,
                &wire::PresentGrantsResponseArgs { bucket, operations, expires_ms },
            );
            (Body::PresentGrantsResponse, r.as_union_value())
        }
        Response::UsageAck => {
            let r = wire::UsageAckResponse::create(fbb, &wire::UsageAckResponseArgs {});
            (Body::UsageAckResponse, r.as_union_value())
        }
        Response::Usage { report } => {
            let report = fbb.create_vector(report);
            let r = wire::UsageResponse::create(fbb, &wire::UsageResponseArgs { report: Some(report) });
            (Body::UsageResponse, r.as_union_value())
        }
        Response::Proof { proof } => {
            let proof = fbb.create_vector(proof);
            let r = wire::ProofResponse::create(fbb, &wire::ProofResponseArgs { proof: Some(proof) });
            (Body::ProofResponse, r.as_union_value())
        }
    };
    let message =
        wire::Message::create(fbb, &wire::MessageArgs { request_id, body_type, body: Some(body), forwarded: false });
    fbb.finish(message, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_frame;

    fn round_trip_request(req: Request<'_>) {
        let mut fbb = FlatBufferBuilder::new();
        let mut out = Vec::new();
        encode_request_frame(&mut fbb, 77, &req, &mut out);
        let (payload, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
        let (id, back) = decode_request(payload).unwrap();
        assert_eq!(id, 77);
        assert_eq!(back, req);
    }

    #[test]
    fn requests_round_trip() {
        round_trip_request(Request::Produce {
            stream: "s",
            records: &[1, 0, 0, 0, 9],
            record_count: 1,
            ack: AckLevel::Durable,
        });
        round_trip_request(Request::Fetch { stream: "s", offset: 5, max_bytes: 100, max_wait_ms: 3 });
        round_trip_request(Request::CreateStream { stream: "x" });
        round_trip_request(Request::ListStreams);
        round_trip_request(Request::StreamInfo { stream: "y" });
        round_trip_request(Request::Ping { nonce: 9 });
        round_trip_request(Request::Seal { stream: "s" });
        round_trip_request(Request::Replicate {
            stream: "s",
            base_offset: 4,
            batches: &[1, 2],
            leader: &[7; 32],
            coded_offset: 3,
        });
        round_trip_request(Request::PutShard { header: &[1; 512], body: &[2; 100] });
        round_trip_request(Request::GetShard { stream: "s", base_offset: 8, index: 3 });
        round_trip_request(Request::ListShards { stream: None, verify: true });
        round_trip_request(Request::ListShards { stream: Some("t"), verify: false });
        round_trip_request(Request::Repair { stream: None });
        round_trip_request(Request::Repair { stream: Some("r") });
        round_trip_request(Request::PresentGrants { chain: &[1, 0, 0, 0, 9] });
        round_trip_request(Request::UsageAck { ack: &[7; 184] });
        round_trip_request(Request::Usage { bucket: Some(0) });
        round_trip_request(Request::Usage { bucket: Some(u64::MAX) });
        round_trip_request(Request::Usage { bucket: None });
        round_trip_request(Request::Proof { stream: Some("b1.s"), offset: 7, bucket: 0 });
        round_trip_request(Request::Proof { stream: None, offset: 0, bucket: 9 });
    }

    #[test]
    fn forwarded_flag_round_trips() {
        let mut fbb = FlatBufferBuilder::new();
        for flag in [false, true] {
            let mut out = Vec::new();
            encode_request_frame_envelope(&mut fbb, 3, flag, &Request::Ping { nonce: 1 }, &mut out);
            let (payload, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
            assert_eq!(decode_request_envelope(payload).unwrap().1, flag);
        }
    }

    #[test]
    fn responses_round_trip() {
        let all = vec![
            Response::Produce { base_offset: 3, record_count: 2 },
            Response::Fetch { batches: vec![1, 2, 3], high_watermark: 9, log_start_offset: 0 },
            Response::CreateStream { created: true },
            Response::ListStreams { streams: vec!["a".into(), "b".into()] },
            Response::StreamInfo(StreamInfo {
                stream: "s".into(),
                first_offset: 0,
                next_offset: 10,
                high_watermark: 10,
                segments: vec![SegmentInfo {
                    base_offset: 0,
                    next_offset: 10,
                    size_bytes: 4096,
                    sealed: true,
                    root: Some([3; 32]),
                }],
                core: 1,
                fenced_reason: None,
            }),
            Response::Ping { nonce: 1, server_version: "v".into() },
            Response::Error { code: ErrorCode::UnknownStream, message: "no".into() },
            Response::Seal { sealed_base_offset: None },
            Response::Seal { sealed_base_offset: Some(0) },
            Response::Replicate { next_offset: 12 },
            Response::PutShard,
            Response::GetShard { header: vec![1; 512], body: vec![2; 77] },
            Response::ListShards {
                shards: vec![ShardEntry { header: vec![3; 512], healthy: false, detail: "bitrot".into() }],
            },
            Response::PresentGrants { bucket: 7, operations: 3, expires_ms: u64::MAX },
            Response::UsageAck,
            Response::Usage { report: vec![4; 300] },
            Response::Proof { proof: vec![5; 400] },
            Response::Repair(RepairReport {
                segments_checked: 3,
                shards_missing: 1,
                shards_corrupt: 2,
                shards_rebuilt: 3,
                errors: vec!["x".into()],
            }),
        ];
        let mut fbb = FlatBufferBuilder::new();
        for r in all {
            let mut out = Vec::new();
            encode_response_frame(&mut fbb, 5, &r, &mut out);
            let (payload, _) = decode_frame(&out, u32::MAX).unwrap().unwrap();
            assert_eq!(decode_response(payload).unwrap(), (5, r.clone()));
            for reuse in [Vec::new(), vec![7u8; 10], vec![9u8; 1 << 16]] {
                let owned = encode_response_owned(5, &r, reuse);
                assert_eq!(owned.bytes(), &out[..], "owned encoding differs");
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode_request(&junk);
            let _ = decode_response(&junk);
        }
    }
}
