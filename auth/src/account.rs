//! Accounts and key files.
//!
//! An account is an ed25519 public key, as on the Cere chain, and is shown
//! in SS58 with the chain's prefix 54: base58 of `prefix || key || checksum`,
//! the checksum being the first two bytes of
//! BLAKE2b-512(`"SS58PRE" || prefix || key`).
//!
//! A key file holds the 32-byte ed25519 secret seed as 64 hex digits and a
//! newline, readable by its owner only (mode 0600). Nodes use the same format
//! (`ddc_cluster::membership::NodeKey`).

use std::fmt;
use std::path::Path;

use blake2::{Blake2b512, Digest};
use ed25519_dalek::Signer;

/// The Cere chain's SS58 address prefix.
pub const SS58_PREFIX_CERE: u8 = 54;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    #[error("not an SS58 address: {0}")]
    Ss58(String),
    #[error("SS58 address has prefix {found}, expected {expected} (Cere)")]
    WrongPrefix { found: u8, expected: u8 },
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("{0} is not a valid ed25519 public key")]
    BadPublicKey(String),
}

/// An account: an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Account(pub [u8; 32]);

fn ss58_checksum(data: &[u8]) -> [u8; 2] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(data);
    let out = h.finalize();
    [out[0], out[1]]
}

impl Account {
    /// The SS58 address with the Cere prefix (54).
    pub fn to_ss58(&self) -> String {
        let mut data = Vec::with_capacity(35);
        data.push(SS58_PREFIX_CERE);
        data.extend_from_slice(&self.0);
        let sum = ss58_checksum(&data);
        data.extend_from_slice(&sum);
        bs58::encode(data).into_string()
    }

    /// Parse an SS58 address with the Cere prefix.
    pub fn from_ss58(text: &str) -> Result<Account, AccountError> {
        let data = bs58::decode(text.trim()).into_vec().map_err(|e| AccountError::Ss58(e.to_string()))?;
        if data.len() != 35 {
            return Err(AccountError::Ss58(format!("{} bytes decoded, a one-byte-prefix account has 35", data.len())));
        }
        if data[0] != SS58_PREFIX_CERE {
            return Err(AccountError::WrongPrefix { found: data[0], expected: SS58_PREFIX_CERE });
        }
        if ss58_checksum(&data[..33]) != data[33..] {
            return Err(AccountError::Ss58("checksum mismatch".into()));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&data[1..33]);
        Ok(Account(key))
    }

    /// Parse either an SS58 address or 64 hex digits (optionally `0x`-prefixed).
    pub fn parse(text: &str) -> Result<Account, AccountError> {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        if digits.len() == 64 {
            if let Ok(bytes) = hex::decode(digits) {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                return Ok(Account(key));
            }
        }
        Account::from_ss58(text)
    }

    /// Check `signature` by this account over `message`, strictly: weak
    /// (small-order) keys and non-canonical signatures are refused, so nobody
    /// can sign for an account without its private key (the ordinary check
    /// accepts `R = identity, S = 0` for every message under the identity key).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else { return false };
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Account({})", self.to_ss58())
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ss58())
    }
}

/// An ed25519 key pair.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for Keypair {
    /// Shows the account only, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.account())
    }
}

impl Keypair {
    pub fn generate() -> Keypair {
        Keypair { signing: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair { signing: ed25519_dalek::SigningKey::from_bytes(&seed) }
    }

    pub fn account(&self) -> Account {
        Account(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Write a new key file, mode 0600; never overwrites an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), AccountError> {
        crate::key_file::write_new(path, &self.signing.to_bytes())
            .map_err(|reason| AccountError::KeyFile { path: path.display().to_string(), reason })
    }

    /// Read a key file, refusing one that others can read.
    pub fn read(path: &Path) -> Result<Keypair, AccountError> {
        let mut seed = crate::key_file::read(path)
            .map_err(|reason| AccountError::KeyFile { path: path.display().to_string(), reason })?;
        let key = Keypair::from_seed(seed);
        crate::key_file::wipe(&mut seed);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss58_round_trips_with_the_cere_prefix() {
        let k = Keypair::from_seed([7; 32]);
        let a = k.account();
        let text = a.to_ss58();
        assert_eq!(Account::from_ss58(&text).unwrap(), a);
        assert_eq!(Account::parse(&text).unwrap(), a);
        assert_eq!(Account::parse(&a.to_hex()).unwrap(), a);
        // A changed character breaks the checksum (or the base58 itself).
        let mut bad: Vec<char> = text.chars().collect();
        bad[10] = if bad[10] == 'a' { 'b' } else { 'a' };
        assert!(Account::from_ss58(&bad.into_iter().collect::<String>()).is_err());
    }

    #[test]
    fn known_vectors_prefix_54() {
        // Computed independently (Python: hashlib.blake2b and a base58 encoder):
        // base58(0x36 || key || blake2b-512("SS58PRE" || 0x36 || key)[..2]).
        assert_eq!(Account([0; 32]).to_ss58(), "6PWcxaEmkiEFSAr3ukWHPfMwuCisxu17Bnv6DujG1B7LCm3w");
        assert_eq!(Account([7; 32]).to_ss58(), "6PfqP6UbhuqXqAV61jzJ7S1fyR6VET8w6divCPRrpzeJUecL");
    }

    #[test]
    fn other_prefixes_are_refused() {
        let mut data = vec![42u8];
        data.extend_from_slice(&[1; 32]);
        let sum = ss58_checksum(&data);
        data.extend_from_slice(&sum);
        let generic = bs58::encode(data).into_string();
        assert!(matches!(Account::from_ss58(&generic), Err(AccountError::WrongPrefix { found: 42, .. })));
    }

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let k = Keypair::generate();
        let sig = k.sign(b"hello");
        assert!(k.account().verify(b"hello", &sig));
        assert!(!k.account().verify(b"hellO", &sig));
        assert!(!Keypair::generate().account().verify(b"hello", &sig));
    }

    #[test]
    fn the_identity_key_cannot_be_signed_for() {
        // R = identity point, S = 0 passes the ordinary check under the identity
        // public key for every message; the strict check refuses it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut forged = [0u8; 64];
        forged[0] = 1;
        assert!(!Account(identity).verify(b"any message", &forged));
    }

    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me.key");
        let k = Keypair::generate();
        k.write_new(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Keypair::read(&path).unwrap().account(), k.account());
        assert!(k.write_new(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Keypair::read(&path).unwrap_err().to_string().contains("chmod 600"));
    }
}
