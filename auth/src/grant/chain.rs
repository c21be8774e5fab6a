//! The grant chain: the links from a bucket owner to a requester, and its
//! encoding.

use super::{Grant, GrantFormatError, GRANT_BYTES, GRANT_CHAIN_HEADER_BYTES, GRANT_CHAIN_LINKS_MAX};

/// Grants from a bucket owner to a requester, owner's grant first; at most
/// [`GRANT_CHAIN_LINKS_MAX`] links. An empty chain stands for "no grant".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantChain(Vec<Grant>);

impl GrantChain {
    /// A chain with no grant.
    pub fn empty() -> GrantChain {
        GrantChain(Vec::new())
    }

    /// A chain of these links, in order; refuses more than
    /// [`GRANT_CHAIN_LINKS_MAX`]. The links are not checked against each
    /// other here; [`authorize`](super::authorize) does that.
    pub fn new(links: Vec<Grant>) -> Result<GrantChain, GrantFormatError> {
        if links.len() > GRANT_CHAIN_LINKS_MAX {
            return Err(GrantFormatError::TooManyLinks { links: links.len(), max: GRANT_CHAIN_LINKS_MAX });
        }
        Ok(GrantChain(links))
    }

    /// This chain with `grant` appended: how a delegate passes its rights on.
    pub fn extended(mut self, grant: Grant) -> Result<GrantChain, GrantFormatError> {
        if self.0.len() == GRANT_CHAIN_LINKS_MAX {
            return Err(GrantFormatError::TooManyLinks {
                links: GRANT_CHAIN_LINKS_MAX + 1,
                max: GRANT_CHAIN_LINKS_MAX,
            });
        }
        self.0.push(grant);
        Ok(self)
    }

    /// The links, owner's grant first.
    pub fn links(&self) -> &[Grant] {
        &self.0
    }

    /// The number of links.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the chain has no link.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The encoding: the link count (`u8`), three zero bytes, then each link's
    /// [`GRANT_BYTES`] in order.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.0.len() <= GRANT_CHAIN_LINKS_MAX, "GrantChain::new and extended bound the length");
        let mut out = Vec::with_capacity(GRANT_CHAIN_HEADER_BYTES + self.0.len() * GRANT_BYTES);
        out.push(self.0.len() as u8);
        out.extend_from_slice(&[0; GRANT_CHAIN_HEADER_BYTES - 1]);
        for grant in &self.0 {
            out.extend_from_slice(&grant.encode());
        }
        out
    }

    /// Decode a chain, refusing a count above [`GRANT_CHAIN_LINKS_MAX`], a
    /// length that does not match the count, nonzero reserved bytes and any
    /// link that [`Grant::decode`] refuses.
    pub fn decode(bytes: &[u8]) -> Result<GrantChain, GrantFormatError> {
        let Some((header, body)) = bytes.split_first_chunk::<GRANT_CHAIN_HEADER_BYTES>() else {
            return Err(GrantFormatError::ChainTooShort { actual: bytes.len() });
        };
        let links = usize::from(header[0]);
        if links > GRANT_CHAIN_LINKS_MAX {
            return Err(GrantFormatError::TooManyLinks { links, max: GRANT_CHAIN_LINKS_MAX });
        }
        for (offset, &value) in header.iter().enumerate().skip(1) {
            if value != 0 {
                return Err(GrantFormatError::NonZeroReserved { offset, value });
            }
        }
        let expected = GRANT_CHAIN_HEADER_BYTES + links * GRANT_BYTES;
        if bytes.len() != expected {
            return Err(GrantFormatError::ChainLength { links, expected, actual: bytes.len() });
        }
        let mut grants = Vec::with_capacity(links);
        for (index, chunk) in body.chunks_exact(GRANT_BYTES).enumerate() {
            let grant = Grant::decode(chunk)
                .map_err(|error| GrantFormatError::Link { link: index + 1, error: Box::new(error) })?;
            grants.push(grant);
        }
        assert_eq!(grants.len(), links);
        Ok(GrantChain(grants))
    }
}
