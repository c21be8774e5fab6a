//! Who is in the cluster, and the code parameters it runs with.
//!
//! The membership comes from a [`MembershipSource`]. The embedded default is a
//! TOML cluster file ([`TomlFile`]); a later source reads the same facts from
//! the Cere chain (DdcClusters / DdcNodes). A node's id is its ed25519 public
//! key, as on the chain.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ddc_auth::account::Keypair;
use serde::Deserialize;

/// A node's ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Parse 64 hex digits (an optional `0x` prefix is accepted).
    pub fn from_hex(text: &str) -> Result<NodeId, MembershipError> {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        let bytes = hex::decode(digits).map_err(|e| MembershipError::Invalid(format!("node id {text:?}: {e}")))?;
        let id = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| MembershipError::Invalid(format!("node id {text:?} is not 32 bytes")))?;
        Ok(NodeId(id))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One member node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Where the node accepts client and node-to-node connections.
    pub address: SocketAddr,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The chain's cluster id (informational until anchoring uses it).
    pub cluster_id: String,
    /// Data shards a sealed segment is cut into (k; Cere's `erasure_coding_required`).
    pub erasure_coding_required: u8,
    /// Data plus parity shards (n; Cere's `erasure_coding_total`).
    pub erasure_coding_total: u8,
    /// Copies of an open segment's data, the leader's included (Cere's `replication_total`).
    pub replication_total: u8,
    /// Copies, the leader's included, that must hold a batch durably before a produce
    /// with acks=all is acknowledged; below it, produces are refused.
    pub min_insync_replicas: u8,
    /// Sorted by id.
    pub nodes: Vec<Member>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("cannot read cluster file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cluster file {path}: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("invalid cluster membership: {0}")]
    Invalid(String),
}

/// Where the membership comes from.
pub trait MembershipSource {
    /// The current membership, validated.
    fn load(&self) -> Result<Membership, MembershipError>;
    /// Where it comes from, for logs.
    fn describe(&self) -> String;
}

/// The chain's defaults (DdcClusters cluster params).
pub const ERASURE_CODING_REQUIRED_DEFAULT: u8 = 4;
pub const ERASURE_CODING_TOTAL_DEFAULT: u8 = 6;
pub const REPLICATION_TOTAL_DEFAULT: u8 = 3;
pub const MIN_INSYNC_REPLICAS_DEFAULT: u8 = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    #[serde(default = "default_cluster_id")]
    cluster_id: String,
    #[serde(default = "default_k")]
    erasure_coding_required: u8,
    #[serde(default = "default_n")]
    erasure_coding_total: u8,
    #[serde(default = "default_r")]
    replication_total: u8,
    #[serde(default = "default_min_insync")]
    min_insync_replicas: u8,
    nodes: Vec<NodeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    id: String,
    address: SocketAddr,
}

fn default_cluster_id() -> String {
    "0x0000000000000000000000000000000000000001".to_owned()
}
fn default_k() -> u8 {
    ERASURE_CODING_REQUIRED_DEFAULT
}
fn default_n() -> u8 {
    ERASURE_CODING_TOTAL_DEFAULT
}
fn default_r() -> u8 {
    REPLICATION_TOTAL_DEFAULT
}
fn default_min_insync() -> u8 {
    MIN_INSYNC_REPLICAS_DEFAULT
}

impl Membership {
    /// Parse and validate a cluster file's text.
    pub fn from_toml(text: &str) -> Result<Membership, MembershipError> {
        let file: ClusterFile =
            toml::from_str(text).map_err(|e| MembershipError::Parse { path: PathBuf::new(), error: e.to_string() })?;
        let mut nodes = Vec::with_capacity(file.nodes.len());
        for n in &file.nodes {
            nodes.push(Member { id: NodeId::from_hex(&n.id)?, address: n.address });
        }
        nodes.sort_by_key(|m| m.id);
        let m = Membership {
            cluster_id: file.cluster_id,
            erasure_coding_required: file.erasure_coding_required,
            erasure_coding_total: file.erasure_coding_total,
            replication_total: file.replication_total,
            min_insync_replicas: file.min_insync_replicas,
            nodes,
        };
        m.validate()?;
        Ok(m)
    }

    /// The cluster file text for this membership (what `ddc cluster up` writes).
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "# DDC cluster membership. Node ids are ed25519 public keys (hex).\n\
             cluster_id = \"{}\"\n\
             erasure_coding_required = {}\n\
             erasure_coding_total = {}\n\
             replication_total = {}\n\
             min_insync_replicas = {}\n",
            self.cluster_id,
            self.erasure_coding_required,
            self.erasure_coding_total,
            self.replication_total,
            self.min_insync_replicas
        );
        for n in &self.nodes {
            out.push_str(&format!("\n[[nodes]]\nid = \"{}\"\naddress = \"{}\"\n", n.id, n.address));
        }
        out
    }

    /// Check the parameters fit together and the members are distinct.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let bad = |m: String| Err(MembershipError::Invalid(m));
        let nodes = self.nodes.len();
        let (k, n, r) = (self.erasure_coding_required, self.erasure_coding_total, self.replication_total);
        if nodes == 0 {
            return bad("the cluster has no nodes".into());
        }
        if k == 0 || k >= n {
            return bad(format!(
                "erasure_coding_required ({k}) must be at least 1 and below erasure_coding_total ({n})"
            ));
        }
        if usize::from(n) > nodes {
            return bad(format!(
                "erasure_coding_total ({n}) exceeds the {nodes} nodes: every shard of a segment needs its own node"
            ));
        }
        if r == 0 || usize::from(r) > nodes {
            return bad(format!("replication_total ({r}) must be between 1 and the number of nodes ({nodes})"));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > r {
            return bad(format!(
                "min_insync_replicas ({}) must be between 1 and replication_total ({r})",
                self.min_insync_replicas
            ));
        }
        let ids: BTreeSet<_> = self.nodes.iter().map(|m| m.id).collect();
        if ids.len() != nodes {
            return bad("a node id is listed twice".into());
        }
        let addrs: BTreeSet<_> = self.nodes.iter().map(|m| m.address).collect();
        if addrs.len() != nodes {
            return bad("a node address is listed twice".into());
        }
        Ok(())
    }

    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.nodes.iter().find(|m| &m.id == id)
    }
}

/// The embedded default source: a TOML cluster file.
pub struct TomlFile {
    pub path: PathBuf,
}

impl TomlFile {
    pub fn new(path: impl AsRef<Path>) -> TomlFile {
        TomlFile { path: path.as_ref().to_owned() }
    }
}

impl MembershipSource for TomlFile {
    fn load(&self) -> Result<Membership, MembershipError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|error| MembershipError::Read { path: self.path.clone(), error })?;
        Membership::from_toml(&text).map_err(|e| match e {
            MembershipError::Parse { error, .. } => MembershipError::Parse { path: self.path.clone(), error },
            MembershipError::Invalid(m) => {
                MembershipError::Parse { path: self.path.clone(), error: format!("invalid membership: {m}") }
            }
            other => other,
        })
    }

    fn describe(&self) -> String {
        format!("cluster file {}", self.path.display())
    }
}

/// A node's ed25519 key pair, kept in a key file like any account's (ddc_auth::key_file).
pub struct NodeKey {
    pub keypair: Keypair,
}

impl NodeKey {
    pub fn generate() -> NodeKey {
        NodeKey { keypair: Keypair::generate() }
    }

    pub fn id(&self) -> NodeId {
        NodeId(self.keypair.account().0)
    }

    /// Write a new key file readable only by its owner (ddc_auth::key_file); fails if it exists.
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        self.keypair.write_new(path).map_err(std::io::Error::other)
    }

    /// Read a key file, refusing one that others can read.
    pub fn read(path: &Path) -> Result<NodeKey, MembershipError> {
        Ok(NodeKey { keypair: Keypair::read(path).map_err(|e| MembershipError::Invalid(e.to_string()))? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(nodes: usize, extra: &str) -> String {
        let mut t = extra.to_owned();
        for i in 0..nodes {
            t.push_str(&format!("\n[[nodes]]\nid = \"{:064x}\"\naddress = \"127.0.0.1:{}\"\n", i + 1, 7401 + i));
        }
        t
    }

    #[test]
    fn defaults_are_the_chain_defaults() {
        let m = Membership::from_toml(&file(6, "")).unwrap();
        assert_eq!((m.erasure_coding_required, m.erasure_coding_total, m.replication_total), (4, 6, 3));
        assert_eq!(m.min_insync_replicas, 2);
        assert_eq!(Membership::from_toml(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn refuses_what_cannot_work() {
        for (nodes, extra, needle) in [
            (5, "", "exceeds the 5 nodes"),
            (6, "erasure_coding_required = 6\n", "below erasure_coding_total"),
            (6, "replication_total = 7\n", "replication_total (7)"),
            (6, "min_insync_replicas = 4\n", "min_insync_replicas (4)"),
            (6, "bogus = 1\n", "unknown field"),
        ] {
            let e = Membership::from_toml(&file(nodes, extra)).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let dup = file(6, "").replace("127.0.0.1:7402", "127.0.0.1:7401");
        assert!(Membership::from_toml(&dup).unwrap_err().to_string().contains("address is listed twice"));
    }

    #[test]
    fn key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::generate();
        key.write_new(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(NodeKey::read(&path).unwrap().id(), key.id());
        assert!(key.write_new(&path).is_err(), "an existing key is never overwritten");
    }
}
