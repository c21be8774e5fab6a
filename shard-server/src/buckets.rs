//! The buckets this node serves: who owns each, whether it is public, and
//! which grants were taken back.
//!
//! On the Cere chain buckets live in `DdcCustomers`; until the node reads
//! them from there (the anchoring issue), the registry is a TOML file shared
//! by every node of a cluster (`auth.buckets_file`, docs/SECURITY.md):
//!
//! ```toml
//! [[bucket]]
//! id = 7
//! owner = "6QsX..."          # SS58 (prefix 54) or 64 hex digits
//! public = false
//! revoked_grants = ["4f1c..."] # GrantId, 64 hex digits (`ddc grant show`)
//! ```
//!
//! Each core re-reads the file when its modification time, size or inode
//! changes (checked every `auth.buckets_reload_ms`), so revoking a grant
//! takes effect without a restart. A file that no longer parses is logged
//! and ignored: the last good registry stays in force.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use ddc_auth::account::Account;
use ddc_auth::grant::{Bucket, GrantId};
use serde::Deserialize;

/// One bucket and the grants on it that were revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    pub bucket: Bucket,
    pub revoked: HashSet<GrantId>,
}

/// Every bucket the node knows, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketRegistry {
    buckets: HashMap<u64, BucketEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    bucket: Vec<BucketFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketFormat {
    id: u64,
    owner: String,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    revoked_grants: Vec<String>,
}

impl BucketRegistry {
    /// Parse the registry file's text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<BucketRegistry, String> {
        let file: FileFormat = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        let mut buckets = HashMap::new();
        for (index, b) in file.bucket.into_iter().enumerate() {
            let at = format!("{origin}: bucket[{index}] (id {})", b.id);
            let owner = Account::parse(&b.owner).map_err(|e| format!("{at}: owner {:?}: {e}", b.owner))?;
            let mut revoked = HashSet::new();
            for id in &b.revoked_grants {
                revoked.insert(parse_grant_id(id).map_err(|e| format!("{at}: revoked_grants {id:?}: {e}"))?);
            }
            let entry = BucketEntry { bucket: Bucket { id: b.id, owner, public: b.public }, revoked };
            if buckets.insert(b.id, entry).is_some() {
                return Err(format!("{at}: bucket id {} is listed twice", b.id));
            }
        }
        Ok(BucketRegistry { buckets })
    }

    pub fn load(path: &Path) -> Result<BucketRegistry, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        BucketRegistry::parse(&text, &path.display().to_string())
    }

    pub fn get(&self, id: u64) -> Option<&BucketEntry> {
        self.buckets.get(&id)
    }
}

fn parse_grant_id(text: &str) -> Result<GrantId, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(digits).map_err(|e| e.to_string())?;
    let id: [u8; 32] = bytes.try_into().map_err(|_| "a grant id is 32 bytes (64 hex digits)".to_owned())?;
    Ok(GrantId(id))
}

/// What identifies a version of the file: modification time, size, inode.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len(), m.ino()))
}

/// One core's view of the registry, reloaded when the file changes.
pub struct Buckets {
    path: Option<PathBuf>,
    current: RefCell<Rc<BucketRegistry>>,
    stamp: Cell<Option<Stamp>>,
}

impl Buckets {
    /// Load `path` (None: no bucket is known, so an `auth.required` node
    /// refuses every bucketed request). A bad file refuses the start.
    pub fn open(path: Option<PathBuf>) -> Result<Buckets, String> {
        let (registry, stamp) = match &path {
            Some(p) => {
                let stamp = stamp(p).map_err(|e| format!("{}: {e}", p.display()))?;
                (BucketRegistry::load(p)?, Some(stamp))
            }
            None => (BucketRegistry::default(), None),
        };
        Ok(Buckets { path, current: RefCell::new(Rc::new(registry)), stamp: Cell::new(stamp) })
    }

    /// The registry in force.
    pub fn current(&self) -> Rc<BucketRegistry> {
        self.current.borrow().clone()
    }

    /// Re-read the file if it changed since the last load. Returns whether a
    /// new registry is in force.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let now = match stamp(path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "bucket registry unreadable; keeping the last one");
                return false;
            }
        };
        if self.stamp.get() == Some(now) {
            return false;
        }
        match BucketRegistry::load(path) {
            Ok(registry) => {
                *self.current.borrow_mut() = Rc::new(registry);
                self.stamp.set(Some(now));
                tracing::info!(path = %path.display(), "bucket registry reloaded");
                true
            }
            Err(e) => {
                // Remember the stamp so the error is logged once per change, not every poll.
                self.stamp.set(Some(now));
                tracing::error!(error = %e, "bucket registry does not parse; keeping the last good one");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddc_auth::account::Keypair;

    #[test]
    fn parses_and_refuses_with_the_place_named() {
        let owner = Keypair::generate().account();
        let id = "ab".repeat(32);
        let text = format!(
            "[[bucket]]\nid = 7\nowner = \"{}\"\npublic = true\nrevoked_grants = [\"{id}\"]\n\n[[bucket]]\nid = 8\nowner = \"{}\"\n",
            owner.to_ss58(),
            owner.to_hex()
        );
        let r = BucketRegistry::parse(&text, "b.toml").unwrap();
        let b7 = r.get(7).unwrap();
        assert_eq!(b7.bucket, Bucket { id: 7, owner, public: true });
        assert!(b7.revoked.contains(&GrantId([0xab; 32])));
        assert!(!r.get(8).unwrap().bucket.public);
        assert!(r.get(9).is_none());

        let twice =
            format!("[[bucket]]\nid = 1\nowner = \"{0}\"\n[[bucket]]\nid = 1\nowner = \"{0}\"\n", owner.to_hex());
        assert!(BucketRegistry::parse(&twice, "b.toml").unwrap_err().contains("listed twice"));
        let bad_owner = "[[bucket]]\nid = 1\nowner = \"nobody\"\n";
        assert!(BucketRegistry::parse(bad_owner, "b.toml").unwrap_err().contains("bucket[0] (id 1): owner"));
        let bad_id = format!("[[bucket]]\nid = 1\nowner = \"{}\"\nrevoked_grants = [\"12\"]\n", owner.to_hex());
        assert!(BucketRegistry::parse(&bad_id, "b.toml").unwrap_err().contains("revoked_grants"));
        let unknown = format!("[[bucket]]\nid = 1\nowner = \"{}\"\nowners = 2\n", owner.to_hex());
        assert!(BucketRegistry::parse(&unknown, "b.toml").unwrap_err().contains("owners"));
    }

    #[test]
    fn reloads_on_change_and_keeps_the_last_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buckets.toml");
        let owner = Keypair::generate().account().to_hex();
        std::fs::write(&path, format!("[[bucket]]\nid = 1\nowner = \"{owner}\"\n")).unwrap();
        let buckets = Buckets::open(Some(path.clone())).unwrap();
        assert!(!buckets.reload_if_changed(), "unchanged");
        let replace = |text: String| {
            let tmp = dir.path().join("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        replace(format!("[[bucket]]\nid = 2\nowner = \"{owner}\"\n"));
        assert!(buckets.reload_if_changed());
        assert!(buckets.current().get(1).is_none() && buckets.current().get(2).is_some());
        replace("[[bucket]]\nid = \"x\"\n".into());
        assert!(!buckets.reload_if_changed());
        assert!(buckets.current().get(2).is_some(), "a broken file leaves the last good registry");
        assert!(Buckets::open(Some(dir.path().join("absent"))).is_err());
    }
}
