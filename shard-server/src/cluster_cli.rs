//! The cluster tools behind `ddc cluster ...`, `ddc repair` and `ddc seal`.
//!
//! - [`local`] (with [`process`]): a cluster of real `shard-server` processes on this machine,
//!   laid out under one directory (`ddc cluster up/down/start-node/stop-node`).
//! - [`status`]: asks every member whether it is up and which shards it holds,
//!   and says per sealed segment how redundant it still is (`ddc cluster status`).
//! - [`repair`]: asks every member to repair the segments it leads (`ddc repair`),
//!   and seals a stream's open segment on request (`ddc seal`).
//!
//! **Boundary:** these are clients. They talk to nodes only through the wire
//! protocol (the blocking [`Client`]) and to local processes only through
//! their pids and files; no server logic lives here.
//!
//! Every request has a deadline: a node that does not answer is reported as
//! such and never blocks a command for long. The blocking client has no
//! connect timeout, so [`connect`] first probes the address with one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ddc_cluster::membership::{Membership, MembershipSource, NodeId, NodeKey, TomlFile};
use ddc_formats::client::{Client, ClientError};

pub mod local;
pub mod process;
pub mod repair;
pub mod status;

/// `ddc cluster status` exit code: every member is up and every sealed
/// segment is fully redundant.
pub const EXIT_HEALTHY: i32 = 0;
/// `ddc cluster status` exit code: something is degraded (a node down, a
/// shard missing or corrupt, shard state unknown) but every segment seen is
/// still readable (at least `k` healthy shards).
pub const EXIT_DEGRADED: i32 = 3;
/// `ddc cluster status` exit code: a segment has fewer than `k` healthy
/// shards, or no member answered at all.
pub const EXIT_UNREADABLE: i32 = 4;

/// How long a status ping may take before the node counts as down.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a command finds the cluster: a directory made by `ddc cluster up`,
/// or any cluster file.
#[derive(Debug, Clone)]
pub enum ClusterSource {
    /// A directory laid out by `ddc cluster up` (`<dir>/cluster.toml`, `<dir>/node-<i>/`).
    DataDir(PathBuf),
    /// A cluster file (docs/OPERATIONS.md, "The cluster file").
    File(PathBuf),
}

/// One member as the tools show it.
#[derive(Debug, Clone)]
pub struct ClusterMember {
    /// `node-<i>` for a local cluster, `#<i>` (position in the cluster file, sorted by id) otherwise.
    pub label: String,
    pub id: NodeId,
    pub address: SocketAddr,
}

/// The cluster a command works on: its membership and the members in display order.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub membership: Membership,
    pub members: Vec<ClusterMember>,
}

impl ClusterSource {
    /// Read and validate the cluster file; for a local cluster, name each
    /// member after the `node-<i>` directory whose key it has.
    pub fn load(&self) -> anyhow::Result<Cluster> {
        let (file, dir) = match self {
            ClusterSource::DataDir(dir) => (dir.join(local::CLUSTER_FILE), Some(dir)),
            ClusterSource::File(file) => (file.clone(), None),
        };
        if dir.is_some() && !file.exists() {
            anyhow::bail!("{} does not exist: is this a directory made by `ddc cluster up`?", file.display());
        }
        let membership = TomlFile::new(&file).load()?;
        let mut labels: BTreeMap<NodeId, (usize, String)> = BTreeMap::new();
        if let Some(dir) = dir {
            for index in 0..membership.nodes.len() {
                let key_file = local::Layout::at(dir).key_file(index);
                if let Ok(key) = NodeKey::read(&key_file) {
                    labels.insert(key.id(), (index, format!("node-{index}")));
                }
            }
        }
        let mut members: Vec<(usize, ClusterMember)> = membership
            .nodes
            .iter()
            .enumerate()
            .map(|(position, m)| {
                let (order, label) = labels.get(&m.id).cloned().unwrap_or_else(|| (usize::MAX, format!("#{position}")));
                (order, ClusterMember { label, id: m.id, address: m.address })
            })
            .collect();
        // Local members in node-<i> order; any other member after them, in file order.
        members.sort_by_key(|(order, _)| *order);
        Ok(Cluster { membership, members: members.into_iter().map(|(_, m)| m).collect() })
    }
}

impl Cluster {
    pub fn member(&self, id: &NodeId) -> Option<&ClusterMember> {
        self.members.iter().find(|m| &m.id == id)
    }
}

/// Connect to `address`, giving up after `connect_timeout`; reads on the
/// returned client time out after `read_timeout` (`None`: never).
///
/// [`Client::connect`] has no timeout of its own (a black-holed address
/// would hang it for minutes), so this uses [`Client::connect_timeout`].
pub fn connect(
    address: SocketAddr,
    connect_timeout: Duration,
    read_timeout: Option<Duration>,
) -> Result<Client, ClientError> {
    let client = Client::connect_timeout(&address, connect_timeout)?;
    client.set_read_timeout(read_timeout)?;
    Ok(client)
}

/// Ping `address` with a deadline of `timeout` for the connect and for the
/// answer; returns the client (still open) and the server's version.
pub fn ping(address: SocketAddr, timeout: Duration) -> Result<(Client, String), ClientError> {
    let mut client = connect(address, timeout, Some(timeout))?;
    let version = client.ping()?;
    Ok((client, version))
}

/// A client error in words; a read or connect that timed out becomes "no
/// answer within `waited`" instead of the OS's "Resource temporarily unavailable".
pub fn explain(e: &ClientError, waited: Option<Duration>) -> String {
    if let ClientError::Io(io) = e {
        if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            return match waited {
                Some(d) => format!("no answer within {d:?}"),
                None => "timed out".to_owned(),
            };
        }
    }
    e.to_string()
}

/// Write a new node key file at `path` (mode 0600; an existing file is never
/// overwritten) and return the node's id, for the cluster file.
pub fn keygen(path: &Path) -> anyhow::Result<NodeId> {
    let key = NodeKey::generate();
    key.write_new(path).with_context(|| format!("write a new key file at {}", path.display()))?;
    Ok(key.id())
}

/// The id (public key) of the node whose key file is `path`.
pub fn node_id(path: &Path) -> anyhow::Result<NodeId> {
    Ok(NodeKey::read(path)?.id())
}

/// `path` made absolute against the current directory (no symlinks resolved).
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("make {} absolute", path.display()))
}

/// A plain-text table: left-aligned columns two spaces apart, no trailing blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        debug_assert_eq!(row.len(), header.len());
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = w - cell.chars().count();
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Shard indexes as `1,4,5`, or `-` when there are none.
pub fn index_list(indexes: &[u8]) -> String {
    if indexes.is_empty() {
        return "-".to_owned();
    }
    indexes.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["".into(), "".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n\n");
        assert_eq!(index_list(&[]), "-");
        assert_eq!(index_list(&[1, 4]), "1,4");
    }
}
