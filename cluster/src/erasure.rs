//! Reed-Solomon coding of sealed segments into shards, and back. Pure
//! functions over byte buffers: no I/O, no clock, no placement.
//!
//! A [`Code`] of `k` data and `n - k` parity shards cuts a segment into
//! stripes of `k * stripe_bytes` bytes (the last one zero-padded). Stripe `s`
//! gives data shard `j` the segment bytes `[s*k*S + j*S, +S)` and each parity
//! shard the Reed-Solomon parity of those `k` chunks; a shard's body is its
//! chunk of stripe 0, then of stripe 1, and so on. The code is systematic:
//! the data shards, read stripe by stripe, are the segment itself. Layout and
//! the exact GF(2^8) code in docs/FORMATS.md, "Shards (erasure-coded sealed
//! segments)"; the shard file header is `ddc_formats::shard`.
//!
//! Why stripes rather than `k` contiguous pieces of the segment: the codec's
//! working set per call is `n * stripe_bytes`, which stays in the CPU's L2
//! cache, and a body can be hashed while its stripe is still in cache. See
//! [`STRIPE_BYTES_DEFAULT`] for the measured choice.
//!
//! **Invariant:** every function here either returns bytes that are exactly
//! what the guarantees in its documentation say, or an [`ErasureError`];
//! outside bytes (shard bodies and headers read from disk or a peer) never
//! make it panic. The caller owns verifying bodies against their headers,
//! unless it uses [`Code::assemble_verified`], which does all of it.
//!
//! ```
//! use ddc_cluster::erasure::{Code, STRIPE_BYTES_DEFAULT};
//! let code = Code::new(4, 6, STRIPE_BYTES_DEFAULT).unwrap();
//! let segment = vec![7u8; 300_000];
//! let mut shards: Vec<Option<Vec<u8>>> = code.encode(&segment).unwrap().into_iter().map(Some).collect();
//! shards[0] = None; // any two of the six may be lost
//! shards[5] = None;
//! assert_eq!(code.reconstruct(&shards, segment.len() as u64).unwrap(), segment);
//! ```

use ddc_formats::shard::{body_bytes_for, ShardHeader};
use ddc_formats::FormatError;
use reed_solomon_erasure::galois_8::ReedSolomon;

/// Default bytes of one shard's chunk per stripe: 32 KiB. Of 8 to 256 KiB it
/// was the fastest, or within 6% of the fastest, for `encode_with_hashes` and
/// `reconstruct` with both 4+2 and 10+4. From 128 KiB on, a 10+4 stripe
/// (`n * stripe_bytes`) no longer fits in L2, and coding slows down by 10% or
/// more (docs/PERFORMANCE.md, "Erasure coding"; `DDC_BENCH_PAIRED=9
/// DDC_BENCH_SWEEP=1 cargo bench -p ddc-benches --bench erasure`). Smaller
/// stripes also waste less padding on small segments, because every shard
/// body is at least one chunk.
pub const STRIPE_BYTES_DEFAULT: u32 = 32 << 10;

/// Why coding or reconstruction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    #[error("invalid erasure code k={k} n={n} stripe_bytes={stripe_bytes}: {reason}")]
    InvalidCode { k: u8, n: u8, stripe_bytes: u32, reason: &'static str },
    #[error("an empty segment is never erasure coded")]
    EmptySegment,
    #[error("segment of {segment_bytes} bytes does not fit in memory on this platform")]
    TooLarge { segment_bytes: u64 },
    #[error("expected one slot per shard ({expected}), got {actual}")]
    ShardCount { expected: usize, actual: usize },
    #[error("shard {index} body is {actual} bytes, expected {expected}")]
    ShardLength { index: usize, expected: u64, actual: u64 },
    #[error("shard {index} body of {actual} bytes is not a whole, non-zero number of {stripe_bytes}-byte chunks")]
    RaggedBody { index: usize, actual: u64, stripe_bytes: u32 },
    #[error("shard index {index} is not below n={n}")]
    IndexOutOfRange { index: u8, n: u8 },
    #[error("{present} usable shards of {n}, need at least k={k}")]
    TooFewShards { present: usize, k: u8, n: u8 },
    #[error("shard header does not fit the segment: {0}")]
    Header(FormatError),
    #[error(
        "segment BLAKE3 root mismatch: expected {}, got {}",
        blake3::Hash::from_bytes(*.expected).to_hex(),
        blake3::Hash::from_bytes(*.actual).to_hex()
    )]
    RootMismatch { expected: [u8; 32], actual: [u8; 32] },
}

/// A Reed-Solomon code over GF(2^8): `k` data shards, `n - k` parity shards,
/// `stripe_bytes` per shard per stripe. Any `k` of the `n` shards of a
/// segment rebuild it. Cheap to clone; build one per configuration and reuse
/// it (it caches decode matrices).
#[derive(Debug, Clone)]
pub struct Code {
    k: u8,
    n: u8,
    stripe_bytes: u32,
    rs: ReedSolomon,
}

/// A segment rebuilt by [`Code::assemble_verified`], and what was wrong with
/// the shards it was offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The segment's bytes; their BLAKE3 equals the expected root.
    pub segment: Vec<u8>,
    /// Indexes (from their headers) of shards whose body failed
    /// [`ShardHeader::verify_body`]: damaged, to be repaired.
    pub corrupt: Vec<u8>,
    /// Positions in the offered slice of shards not used because their header
    /// describes another segment or another code, or repeats an index
    /// already used.
    pub foreign: Vec<usize>,
}

impl Code {
    /// A code of `k` data shards out of `n`, with `stripe_bytes` per chunk.
    /// Requires `1 <= k < n` (at least one parity shard; `n <= 255` follows
    /// from the type) and `stripe_bytes >= 1`.
    pub fn new(k: u8, n: u8, stripe_bytes: u32) -> Result<Code, ErasureError> {
        let invalid = |reason| Err(ErasureError::InvalidCode { k, n, stripe_bytes, reason });
        if k == 0 {
            return invalid("k must be at least 1");
        }
        if n <= k {
            return invalid("n must exceed k (at least one parity shard)");
        }
        if stripe_bytes == 0 {
            return invalid("stripe_bytes must be at least 1");
        }
        if usize::try_from(u64::from(k) * u64::from(stripe_bytes)).is_err() {
            return invalid("k * stripe_bytes does not fit in memory on this platform");
        }
        let rs = match ReedSolomon::new(usize::from(k), usize::from(n - k)) {
            Ok(rs) => rs,
            Err(_) => return invalid("refused by the Reed-Solomon library"),
        };
        Ok(Code { k, n, stripe_bytes, rs })
    }

    /// Data shards.
    pub fn k(&self) -> u8 {
        self.k
    }

    /// All shards, data and parity.
    pub fn n(&self) -> u8 {
        self.n
    }

    /// Bytes of one shard's chunk per stripe.
    pub fn stripe_bytes(&self) -> u32 {
        self.stripe_bytes
    }

    /// Bytes of each shard body for a segment of `segment_bytes` bytes
    /// (`ddc_formats::shard::body_bytes_for`).
    pub fn body_bytes(&self, segment_bytes: u64) -> Result<u64, ErasureError> {
        if segment_bytes == 0 {
            return Err(ErasureError::EmptySegment);
        }
        body_bytes_for(segment_bytes, self.k, self.stripe_bytes)
            .filter(|&b| usize::try_from(b.saturating_mul(u64::from(self.k))).is_ok())
            .ok_or(ErasureError::TooLarge { segment_bytes })
    }

    /// The `n` shard bodies of `segment`: index `0..k` data, `k..n` parity,
    /// each [`Code::body_bytes`] long. Concatenating the data shards' chunks
    /// stripe by stripe gives `segment` followed by zero padding. An empty
    /// segment is refused.
    pub fn encode(&self, segment: &[u8]) -> Result<Vec<Vec<u8>>, ErasureError> {
        self.encode_stripes(segment, None)
    }

    /// [`Code::encode`], plus a ready-to-write header for each body, with the
    /// body's BLAKE3 computed while its stripe is still in cache. It also
    /// checks that `segment` hashes to `segment_root` (in the same pass), so
    /// bytes damaged since the segment was sealed are never coded into shards
    /// that would look valid. Fails if the header fields break a rule of
    /// [`ShardHeader::check`] (for example an invalid stream name).
    pub fn encode_with_hashes(
        &self,
        stream: &str,
        base_offset: u64,
        next_offset: u64,
        segment: &[u8],
        segment_root: [u8; 32],
    ) -> Result<Vec<(ShardHeader, Vec<u8>)>, ErasureError> {
        let segment_bytes = segment.len() as u64;
        let body_bytes = self.body_bytes(segment_bytes)?;
        let mut header = ShardHeader {
            stream: stream.to_owned(),
            base_offset,
            next_offset,
            segment_bytes,
            segment_root,
            k: self.k,
            n: self.n,
            index: 0,
            stripe_bytes: self.stripe_bytes,
            body_bytes,
            body_hash: [0; 32],
        };
        header.check().map_err(ErasureError::Header)?;
        // One hasher per shard, then one for the whole segment.
        let mut hashers = vec![blake3::Hasher::new(); usize::from(self.n) + 1];
        let bodies = self.encode_stripes(segment, Some(&mut hashers))?;
        let actual = *hashers[usize::from(self.n)].finalize().as_bytes();
        if actual != segment_root {
            return Err(ErasureError::RootMismatch { expected: segment_root, actual });
        }
        let shards: Vec<(ShardHeader, Vec<u8>)> = bodies
            .into_iter()
            .zip(&hashers)
            .enumerate()
            .map(|(index, (body, hasher))| {
                header.index = index as u8;
                header.body_hash = *hasher.finalize().as_bytes();
                (header.clone(), body)
            })
            .collect();
        debug_assert!(shards.iter().all(|(h, b)| h.verify_body(b).is_ok()));
        Ok(shards)
    }

    /// The segment of `segment_bytes` bytes, from any `k` of its shard
    /// bodies: `shards[i]` is shard `i`'s body or `None`, `shards.len() == n`.
    /// Bodies must already be verified (a wrong body gives a wrong segment;
    /// [`Code::assemble_verified`] checks everything). With every data shard
    /// present it only copies; otherwise it decodes, per stripe, just the
    /// missing data chunks. Fails with [`ErasureError::TooFewShards`] when
    /// fewer than `k` are present.
    pub fn reconstruct<B: AsRef<[u8]>>(
        &self,
        shards: &[Option<B>],
        segment_bytes: u64,
    ) -> Result<Vec<u8>, ErasureError> {
        let body_bytes = self.check_shards(shards, segment_bytes)?;
        let (k, s) = (usize::from(self.k), self.stripe_bytes as usize);
        let stripes = body_bytes / s;
        let segment_len = segment_bytes as usize; // body_bytes * k fits usize, and segment_bytes is below it.
        let mut out: Vec<u8> = Vec::with_capacity(stripes * k * s);
        let data: Vec<Option<&[u8]>> = shards[..k].iter().map(|b| b.as_ref().map(|b| b.as_ref())).collect();
        let missing_data = data.iter().filter(|d| d.is_none()).count();
        // The first present parity shards that stand in for the missing data
        // ones; the codec reads exactly k present shards.
        let parity: Vec<(usize, &[u8])> = shards[k..]
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (k + i, b.as_ref())))
            .take(missing_data)
            .collect();
        let mut parity_scratch = vec![0u8; parity.len() * s];
        for stripe in 0..stripes {
            let at = stripe * s;
            let stripe_start = out.len();
            for chunk in &data {
                match chunk {
                    Some(body) => out.extend_from_slice(&body[at..at + s]),
                    None => out.resize(out.len() + s, 0),
                }
            }
            if missing_data == 0 {
                continue;
            }
            // The codec takes present shards mutably; parity bodies are the
            // caller's, so the chunks it needs are copied into scratch.
            for ((_, body), scratch) in parity.iter().zip(parity_scratch.chunks_exact_mut(s)) {
                scratch.copy_from_slice(&body[at..at + s]);
            }
            let mut slots: Vec<(&mut [u8], bool)> = Vec::with_capacity(usize::from(self.n));
            for (chunk, present) in out[stripe_start..].chunks_exact_mut(s).zip(&data) {
                slots.push((chunk, present.is_some()));
            }
            let mut scratch = parity_scratch.chunks_exact_mut(s);
            let mut next_parity = parity.iter().map(|&(index, _)| index).peekable();
            for index in k..usize::from(self.n) {
                if next_parity.next_if_eq(&index).is_some() {
                    slots.push((scratch.next().unwrap_or_default(), true));
                } else {
                    slots.push((&mut [][..], false));
                }
            }
            self.rs.reconstruct_data(&mut slots).expect("k present chunks of equal length: checked above");
        }
        out.truncate(segment_len);
        debug_assert_eq!(out.len() as u64, segment_bytes);
        Ok(out)
    }

    /// Shard `index`'s body, rebuilt from the others (data or parity, for
    /// repair): `shards` as for [`Code::reconstruct`], except that
    /// `shards[index]` is ignored, so a body known to be bad may be left in.
    /// The others must be verified; at least `k` of them present.
    pub fn reconstruct_shard<B: AsRef<[u8]>>(&self, shards: &[Option<B>], index: u8) -> Result<Vec<u8>, ErasureError> {
        if index >= self.n {
            return Err(ErasureError::IndexOutOfRange { index, n: self.n });
        }
        let target = usize::from(index);
        let others: Vec<Option<&[u8]>> = shards
            .iter()
            .enumerate()
            .map(|(i, b)| if i == target { None } else { b.as_ref().map(|b| b.as_ref()) })
            .collect();
        let body_bytes = self.check_bodies(&others)?;
        let (n, s) = (usize::from(self.n), self.stripe_bytes as usize);
        let mut out = vec![0u8; body_bytes];
        // Present chunks are copied into scratch because the codec takes them
        // mutably; missing ones other than the target are rebuilt there too
        // (the codec rebuilds every missing shard of a stripe).
        let mut scratch = vec![0u8; (n - 1) * s];
        for (at, out_chunk) in (0..body_bytes).step_by(s).zip(out.chunks_exact_mut(s)) {
            let mut slots: Vec<(&mut [u8], bool)> = Vec::with_capacity(n);
            let mut scratch_chunks = scratch.chunks_exact_mut(s);
            let mut out_chunk = Some(out_chunk);
            for (i, body) in others.iter().enumerate() {
                if i == target {
                    slots.push((out_chunk.take().unwrap_or_default(), false));
                    continue;
                }
                let chunk = scratch_chunks.next().unwrap_or_default();
                match body {
                    Some(body) => {
                        chunk.copy_from_slice(&body[at..at + s]);
                        slots.push((chunk, true));
                    }
                    None => slots.push((chunk, false)),
                }
            }
            let rebuilt = if target < usize::from(self.k) {
                self.rs.reconstruct_data(&mut slots)
            } else {
                self.rs.reconstruct(&mut slots)
            };
            rebuilt.expect("k present chunks of equal length: checked above");
        }
        Ok(out)
    }

    /// The segment whose BLAKE3 root is `segment_root`, from shards read from
    /// disk or peers, trusting nothing: a shard is used only if its header
    /// names this code (`k`, `n`, `stripe_bytes`) and this root, agrees with
    /// the other used headers on the segment (stream, offsets, size), and its
    /// body passes [`ShardHeader::verify_body`]. Every offered body is
    /// verified (offer `k` for a read, all `n` for a scrub). The rebuilt
    /// segment is checked against `segment_root` before it is returned.
    pub fn assemble_verified<B: AsRef<[u8]>>(
        &self,
        segment_root: [u8; 32],
        shards: &[(ShardHeader, B)],
    ) -> Result<Assembled, ErasureError> {
        let mut slots: Vec<Option<&[u8]>> = vec![None; usize::from(self.n)];
        let mut corrupt = Vec::new();
        let mut foreign = Vec::new();
        let mut reference: Option<&ShardHeader> = None;
        for (position, (header, body)) in shards.iter().enumerate() {
            let fits_code = header.k == self.k
                && header.n == self.n
                && header.stripe_bytes == self.stripe_bytes
                && header.segment_root == segment_root
                && header.check().is_ok();
            let same_segment = reference.is_none_or(|r| {
                r.stream == header.stream
                    && r.base_offset == header.base_offset
                    && r.next_offset == header.next_offset
                    && r.segment_bytes == header.segment_bytes
            });
            let slot = slots.get(usize::from(header.index));
            if !fits_code || !same_segment || !matches!(slot, Some(None)) {
                foreign.push(position);
                continue;
            }
            reference.get_or_insert(header);
            match header.verify_body(body.as_ref()) {
                Ok(()) => slots[usize::from(header.index)] = Some(body.as_ref()),
                Err(_) => corrupt.push(header.index),
            }
        }
        let present = slots.iter().filter(|s| s.is_some()).count();
        let Some(reference) = reference else {
            return Err(ErasureError::TooFewShards { present, k: self.k, n: self.n });
        };
        let segment = self.reconstruct(&slots, reference.segment_bytes)?;
        let actual = *blake3::hash(&segment).as_bytes();
        if actual != segment_root {
            return Err(ErasureError::RootMismatch { expected: segment_root, actual });
        }
        Ok(Assembled { segment, corrupt, foreign })
    }

    /// Cut `segment` into stripes and code each into the `n` bodies, which
    /// grow by one chunk per stripe. With `hashers` (`n + 1` of them), feed
    /// each shard's chunk to its hasher and the segment's bytes to the last,
    /// while the stripe is in cache.
    fn encode_stripes(
        &self,
        segment: &[u8],
        mut hashers: Option<&mut [blake3::Hasher]>,
    ) -> Result<Vec<Vec<u8>>, ErasureError> {
        let body_bytes = self.body_bytes(segment.len() as u64)? as usize;
        let (k, n, s) = (usize::from(self.k), usize::from(self.n), self.stripe_bytes as usize);
        debug_assert!(hashers.as_ref().is_none_or(|h| h.len() == n + 1));
        let stripe_data_bytes = k * s;
        // The last, partial stripe is coded from a zero-padded copy; full
        // stripes straight from `segment`.
        let full = segment.len() / stripe_data_bytes * stripe_data_bytes;
        let tail: Option<Vec<u8>> = (full < segment.len()).then(|| {
            let mut tail = segment[full..].to_vec();
            tail.resize(stripe_data_bytes, 0);
            tail
        });
        let mut bodies: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(body_bytes)).collect();
        let stripes = segment[..full].chunks_exact(stripe_data_bytes).chain(tail.as_deref());
        for (stripe, source) in stripes.enumerate() {
            let at = stripe * s;
            let inputs: Vec<&[u8]> = source.chunks_exact(s).collect();
            let (data, parity) = bodies.split_at_mut(k);
            for (body, input) in data.iter_mut().zip(&inputs) {
                body.extend_from_slice(input);
            }
            // Growing the parity bodies zeroes a chunk that is in cache and
            // about to be overwritten; cheaper than zeroing whole bodies up front.
            let mut outputs: Vec<&mut [u8]> = parity
                .iter_mut()
                .map(|body| {
                    body.resize(at + s, 0);
                    &mut body[at..]
                })
                .collect();
            self.rs.encode_sep(&inputs, &mut outputs).expect("k inputs and n-k outputs of one chunk each");
            if let Some(hashers) = hashers.as_deref_mut() {
                let (shard_hashers, segment_hasher) = hashers.split_at_mut(n);
                for (hasher, chunk) in
                    shard_hashers.iter_mut().zip(inputs.iter().copied().chain(outputs.iter().map(|o| &**o)))
                {
                    hasher.update(chunk);
                }
                let real = (segment.len() - stripe * stripe_data_bytes).min(stripe_data_bytes);
                segment_hasher[0].update(&source[..real]);
            }
        }
        debug_assert!(bodies.iter().all(|b| b.len() == body_bytes));
        Ok(bodies)
    }

    /// Check a full set of slots and return the body length they share.
    fn check_shards<B: AsRef<[u8]>>(&self, shards: &[Option<B>], segment_bytes: u64) -> Result<usize, ErasureError> {
        let expected = self.body_bytes(segment_bytes)?;
        let bodies: Vec<Option<&[u8]>> = shards.iter().map(|b| b.as_ref().map(|b| b.as_ref())).collect();
        let actual = self.check_bodies(&bodies)?;
        if actual as u64 != expected {
            let index = bodies.iter().position(|b| b.is_some()).unwrap_or(0);
            return Err(ErasureError::ShardLength { index, expected, actual: actual as u64 });
        }
        Ok(actual)
    }

    /// `bodies` has `n` slots, at least `k` present, all of one length that
    /// is a whole, non-zero number of stripes; return that length.
    fn check_bodies(&self, bodies: &[Option<&[u8]>]) -> Result<usize, ErasureError> {
        let n = usize::from(self.n);
        if bodies.len() != n {
            return Err(ErasureError::ShardCount { expected: n, actual: bodies.len() });
        }
        let present = bodies.iter().filter(|b| b.is_some()).count();
        if present < usize::from(self.k) {
            return Err(ErasureError::TooFewShards { present, k: self.k, n: self.n });
        }
        let s = self.stripe_bytes as usize;
        let mut len = None;
        for (index, body) in bodies.iter().enumerate() {
            let Some(body) = body else { continue };
            let expected = *len.get_or_insert(body.len());
            if body.len() != expected {
                return Err(ErasureError::ShardLength { index, expected: expected as u64, actual: body.len() as u64 });
            }
            if body.is_empty() || body.len() % s != 0 {
                return Err(ErasureError::RaggedBody {
                    index,
                    actual: body.len() as u64,
                    stripe_bytes: self.stripe_bytes,
                });
            }
        }
        len.ok_or(ErasureError::TooFewShards { present, k: self.k, n: self.n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::seq::index::sample;
    use rand::{Rng, RngCore, SeedableRng};

    /// Small chunks so that a few hundred bytes already span several stripes.
    const S: u32 = 16;

    fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        rng.fill_bytes(&mut out);
        out
    }

    /// Segment sizes around the stripe edges: 1 byte, a chunk +- 1, a
    /// stripe +- 1, and several stripes with a ragged tail.
    fn segment_lens(code: &Code) -> Vec<usize> {
        let (s, k) = (code.stripe_bytes() as usize, usize::from(code.k()));
        let mut lens = vec![1, s - 1, s, s + 1, k * s - 1, k * s, k * s + 1, 3 * k * s + 5];
        lens.sort_unstable();
        lens.dedup();
        lens.retain(|&l| l > 0);
        lens
    }

    /// Every subset of `0..n` with at most `max` members.
    fn subsets_up_to(n: usize, max: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|m| m.count_ones() as usize <= max)
            .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
            .collect()
    }

    fn without(bodies: &[Vec<u8>], missing: &[usize]) -> Vec<Option<Vec<u8>>> {
        bodies.iter().enumerate().map(|(i, b)| (!missing.contains(&i)).then(|| b.clone())).collect()
    }

    /// Encode, then check every erasure set in `missing_sets`: the segment and
    /// every missing shard come back byte for byte.
    fn check_code(code: &Code, rng: &mut StdRng, missing_sets: &[Vec<usize>]) {
        let (k, n, s) = (usize::from(code.k()), usize::from(code.n()), code.stripe_bytes() as usize);
        for len in segment_lens(code) {
            let segment = random_bytes(rng, len);
            let bodies = code.encode(&segment).unwrap();
            assert_eq!(bodies.len(), n);
            let body_bytes = code.body_bytes(len as u64).unwrap() as usize;
            assert!(bodies.iter().all(|b| b.len() == body_bytes));
            // Systematic: data chunks, stripe by stripe, are the segment then zeros.
            let mut joined = Vec::new();
            for at in (0..body_bytes).step_by(s) {
                for body in &bodies[..k] {
                    joined.extend_from_slice(&body[at..at + s]);
                }
            }
            assert_eq!(&joined[..len], &segment[..], "{k}+{} len {len}", n - k);
            assert!(joined[len..].iter().all(|&b| b == 0));
            for missing in missing_sets {
                let shards = without(&bodies, missing);
                let rebuilt = code.reconstruct(&shards, len as u64).unwrap();
                assert!(rebuilt == segment, "{k}+{} len {len} missing {missing:?}", n - k);
                for &index in missing {
                    let shard = code.reconstruct_shard(&shards, index as u8).unwrap();
                    assert!(shard == bodies[index], "{k}+{} len {len} missing {missing:?} shard {index}", n - k);
                }
            }
        }
    }

    #[test]
    fn small_codes_survive_every_erasure_set_they_can() {
        let mut rng = StdRng::seed_from_u64(1);
        for (k, n) in [(1u8, 2u8), (2, 3), (4, 6), (3, 5)] {
            let code = Code::new(k, n, S).unwrap();
            check_code(&code, &mut rng, &subsets_up_to(usize::from(n), usize::from(n - k)));
        }
    }

    #[test]
    fn ten_plus_four_survives_sampled_erasure_sets() {
        let mut rng = StdRng::seed_from_u64(2);
        let code = Code::new(10, 14, S).unwrap();
        let mut sets = subsets_up_to(14, 2);
        for size in [3, 4] {
            for _ in 0..12 {
                let mut set = sample(&mut rng, 14, size).into_vec();
                set.sort_unstable();
                sets.push(set);
            }
        }
        // All four parity shards lost, and all four from the data.
        sets.push(vec![10, 11, 12, 13]);
        sets.push(vec![0, 3, 6, 9]);
        check_code(&code, &mut rng, &sets);
    }

    #[test]
    fn odd_stripe_sizes_and_the_default() {
        let mut rng = StdRng::seed_from_u64(3);
        for s in [1, 7, 1000, STRIPE_BYTES_DEFAULT] {
            let code = Code::new(3, 5, s).unwrap();
            check_code(&code, &mut rng, &[vec![], vec![0, 2], vec![1, 4], vec![3]]);
        }
    }

    #[test]
    fn parity_is_the_libraries_reed_solomon_of_each_stripe() {
        // Our stripe layout must be plain Reed-Solomon per stripe: code each
        // stripe on its own with the library and compare.
        let mut rng = StdRng::seed_from_u64(4);
        let code = Code::new(4, 6, S).unwrap();
        let segment = random_bytes(&mut rng, 5 * 4 * S as usize + 3);
        let bodies = code.encode(&segment).unwrap();
        let rs = ReedSolomon::new(4, 2).unwrap();
        let s = S as usize;
        let mut padded = segment.clone();
        padded.resize(bodies[0].len() * 4, 0);
        for (stripe, source) in padded.chunks(4 * s).enumerate() {
            let mut chunks: Vec<Vec<u8>> = source.chunks(s).map(<[u8]>::to_vec).collect();
            chunks.extend([vec![0; s], vec![0; s]]);
            rs.encode(&mut chunks).unwrap();
            for (i, chunk) in chunks.iter().enumerate() {
                assert_eq!(&bodies[i][stripe * s..][..s], &chunk[..], "stripe {stripe} shard {i}");
            }
        }
    }

    #[test]
    fn golden_shards_pin_the_format() {
        // Shards already written must stay readable: a change here means the
        // stripe layout or the library's coding matrix changed.
        let segment: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let code = Code::new(4, 6, 64).unwrap();
        let hashes: Vec<String> =
            code.encode(&segment).unwrap().iter().map(|b| blake3::hash(b).to_hex().to_string()).collect();
        assert_eq!(hashes, GOLDEN_4_6_64);
    }

    /// BLAKE3 of each body, from the first build (reed-solomon-erasure 6.0.0).
    const GOLDEN_4_6_64: [&str; 6] = [
        "a6531abdce6de5e24b52903588f6ad045054249c2cc26a5cfc44329744a1e754",
        "e1396d8ea55115a3a9f65aef98967eb6db95856d398d4d4a8ed7b3ea68161eb9",
        "c8d40f94b584a1deef40f7beb7577b492ca1e8de1bcf7568059b616b4276705a",
        "d5bd303f5608988fa1a1b0fde562064e28ea71b9c67856e9b71c18e6907af2c3",
        "dc493a4adcffb96bac3197bc36092b12f4585d75539e635bfa195f8b1920a112",
        "5fff8eb1fd0dfdaa1477970f78fcda03907f8b2d7fac715b32b2bdc911073edd",
    ];

    #[test]
    fn too_many_missing_is_a_clear_error() {
        let mut rng = StdRng::seed_from_u64(5);
        for (k, n) in [(1u8, 2u8), (4, 6), (10, 14)] {
            let code = Code::new(k, n, S).unwrap();
            let segment = random_bytes(&mut rng, 333);
            let bodies = code.encode(&segment).unwrap();
            let missing: Vec<usize> = (0..=usize::from(n - k)).collect();
            let shards = without(&bodies, &missing);
            let err = code.reconstruct(&shards, 333).unwrap_err();
            assert_eq!(err, ErasureError::TooFewShards { present: usize::from(k) - 1, k, n });
            assert!(err.to_string().contains(&format!("need at least k={k}")), "{err}");
            // Rebuilding a present shard from the others needs k others too.
            let keep = usize::from(n - k) + 1;
            assert!(
                keep == usize::from(n)
                    || matches!(code.reconstruct_shard(&shards, keep as u8), Err(ErasureError::TooFewShards { .. }))
            );
            assert!(matches!(code.reconstruct_shard(&shards, 0), Err(ErasureError::TooFewShards { .. })));
        }
    }

    #[test]
    fn refuses_bad_inputs() {
        assert_eq!(
            Code::new(0, 2, S).unwrap_err().to_string(),
            "invalid erasure code k=0 n=2 stripe_bytes=16: k must be at least 1"
        );
        assert!(matches!(Code::new(4, 4, S), Err(ErasureError::InvalidCode { .. })));
        assert!(matches!(Code::new(5, 4, S), Err(ErasureError::InvalidCode { .. })));
        assert!(matches!(Code::new(4, 6, 0), Err(ErasureError::InvalidCode { .. })));
        assert!(Code::new(254, 255, 1).is_ok());
        let code = Code::new(4, 6, S).unwrap();
        assert_eq!(code.encode(&[]), Err(ErasureError::EmptySegment));
        let bodies = code.encode(&[9u8; 100]).unwrap();
        let shards = without(&bodies, &[]);
        assert_eq!(code.reconstruct(&shards, 0), Err(ErasureError::EmptySegment));
        // A segment size that implies a different body length.
        assert!(matches!(code.reconstruct(&shards, 1000), Err(ErasureError::ShardLength { .. })));
        assert_eq!(code.reconstruct(&shards, 65).unwrap(), vec![9u8; 65]);
        assert_eq!(code.reconstruct(&shards[..5], 100), Err(ErasureError::ShardCount { expected: 6, actual: 5 }));
        let mut short = shards.clone();
        short[3].as_mut().unwrap().pop();
        assert_eq!(
            code.reconstruct(&short, 100),
            Err(ErasureError::ShardLength { index: 3, expected: 32, actual: 31 })
        );
        let ragged: Vec<Option<Vec<u8>>> = shards.iter().map(|b| b.as_ref().map(|b| b[..31].to_vec())).collect();
        assert!(matches!(code.reconstruct_shard(&ragged, 0), Err(ErasureError::RaggedBody { index: 1, .. })));
        assert_eq!(code.reconstruct_shard(&shards, 6), Err(ErasureError::IndexOutOfRange { index: 6, n: 6 }));
    }

    type Coded = (Vec<u8>, [u8; 32], Vec<(ShardHeader, Vec<u8>)>);

    /// A random segment of `len` bytes, its root, and its shards with headers.
    fn coded(code: &Code, rng: &mut StdRng, len: usize) -> Coded {
        let segment = random_bytes(rng, len);
        let root = *blake3::hash(&segment).as_bytes();
        let shards = code.encode_with_hashes("orders", 100, 142, &segment, root).unwrap();
        (segment, root, shards)
    }

    #[test]
    fn encode_with_hashes_writes_headers_that_read_back() {
        let mut rng = StdRng::seed_from_u64(6);
        let code = Code::new(4, 6, S).unwrap();
        let (segment, root, shards) = coded(&code, &mut rng, 1001);
        let plain = code.encode(&segment).unwrap();
        for (i, (header, body)) in shards.iter().enumerate() {
            assert_eq!(body, &plain[i]);
            let decoded = ShardHeader::decode(&header.encode()).unwrap();
            assert_eq!(&decoded, header);
            assert_eq!(usize::from(decoded.index), i);
            assert_eq!((decoded.k, decoded.n, decoded.stripe_bytes), (4, 6, S));
            assert_eq!((decoded.segment_bytes, decoded.segment_root), (1001, root));
            decoded.verify_body(body).unwrap();
        }
        // A root that does not match the bytes: nothing is coded.
        let mut wrong = root;
        wrong[0] ^= 1;
        let err = code.encode_with_hashes("orders", 100, 142, &segment, wrong).unwrap_err();
        assert!(matches!(err, ErasureError::RootMismatch { actual, .. } if actual == root));
        // Header rules are checked before any work.
        assert!(matches!(code.encode_with_hashes("a/b", 100, 142, &segment, root), Err(ErasureError::Header(_))));
        assert!(matches!(code.encode_with_hashes("orders", 142, 100, &segment, root), Err(ErasureError::Header(_))));
        assert_eq!(code.encode_with_hashes("orders", 1, 2, &[], root), Err(ErasureError::EmptySegment));
    }

    #[test]
    fn assemble_verified_excludes_corrupt_bodies() {
        let mut rng = StdRng::seed_from_u64(7);
        let code = Code::new(4, 6, S).unwrap();
        let (segment, root, shards) = coded(&code, &mut rng, 777);
        let all = code.assemble_verified(root, &shards).unwrap();
        assert_eq!(all, Assembled { segment: segment.clone(), corrupt: vec![], foreign: vec![] });
        // Up to n - k corrupt bodies, data or parity: found, left out, and the segment still right.
        for bad in subsets_up_to(6, 2) {
            let mut damaged = shards.clone();
            for &i in &bad {
                let at = rng.gen_range(0..damaged[i].1.len());
                damaged[i].1[at] ^= 1 << rng.gen_range(0..8);
            }
            let out = code.assemble_verified(root, &damaged).unwrap();
            assert_eq!(out.segment, segment, "corrupt {bad:?}");
            assert_eq!(out.corrupt.iter().map(|&i| usize::from(i)).collect::<Vec<_>>(), bad);
        }
        // A truncated body is corrupt too; three bad of six is too many.
        let mut damaged = shards.clone();
        damaged[0].1.pop();
        damaged[2].1[5] ^= 1;
        damaged[5].1[0] ^= 1;
        assert_eq!(code.assemble_verified(root, &damaged), Err(ErasureError::TooFewShards { present: 3, k: 4, n: 6 }));
        // Only k offered: enough.
        assert_eq!(code.assemble_verified(root, &shards[2..]).unwrap().segment, segment);
    }

    #[test]
    fn assemble_verified_ignores_shards_of_other_segments_and_codes() {
        let mut rng = StdRng::seed_from_u64(8);
        let code = Code::new(4, 6, S).unwrap();
        let (segment, root, shards) = coded(&code, &mut rng, 500);
        let (_, _, other) = coded(&code, &mut rng, 500);
        let other_code = Code::new(3, 6, S).unwrap().encode_with_hashes("orders", 100, 142, &segment, root).unwrap();
        let mut renamed = shards[1].clone();
        renamed.0.stream = "invoices".into();
        // The first usable header sets the segment; later ones must agree with it.
        let offered = vec![
            other[0].clone(),      // another segment's root
            other_code[1].clone(), // this segment, another code
            shards[0].clone(),
            renamed,           // another stream
            shards[0].clone(), // a repeat
            shards[2].clone(),
            shards[3].clone(),
            shards[4].clone(),
        ];
        let out = code.assemble_verified(root, &offered).unwrap();
        assert_eq!(out.segment, segment);
        assert_eq!(out.foreign, vec![0, 1, 3, 4]);
        assert!(out.corrupt.is_empty());
        assert!(matches!(code.assemble_verified(root, &other), Err(ErasureError::TooFewShards { present: 0, .. })));
        let none: &[(ShardHeader, Vec<u8>)] = &[];
        assert!(matches!(code.assemble_verified(root, none), Err(ErasureError::TooFewShards { present: 0, .. })));
    }

    #[test]
    fn the_root_check_catches_a_consistently_forged_shard() {
        // A data shard whose body was changed and whose header hash was
        // recomputed to match passes verify_body; only the root can tell.
        let mut rng = StdRng::seed_from_u64(9);
        let code = Code::new(4, 6, S).unwrap();
        let (_, root, mut shards) = coded(&code, &mut rng, 900);
        shards[1].1[3] ^= 0x80;
        shards[1].0.body_hash = *blake3::hash(&shards[1].1).as_bytes();
        let err = code.assemble_verified(root, &shards).unwrap_err();
        assert!(matches!(err, ErasureError::RootMismatch { expected, .. } if expected == root));
        assert!(err.to_string().starts_with("segment BLAKE3 root mismatch: expected "), "{err}");
        // Leaving the forged shard out, the others still make the segment.
        shards.remove(1);
        assert!(code.assemble_verified(root, &shards).is_ok());
    }
}
