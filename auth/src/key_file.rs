//! Files holding a 32-byte secret (an ed25519 seed or a bucket key): 64 hex
//! digits and a newline, readable by the owner only (mode 0600). Writing
//! never replaces an existing file; reading refuses a file that others can
//! read. Temporary copies of the secret are wiped.

use std::path::Path;

/// Write a new secret file, mode 0600, fsynced. Fails if the file exists.
pub fn write_new(path: &Path, secret: &[u8; 32]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = hex::encode(secret).into_bytes();
    text.push(b'\n');
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()));
    wipe(&mut text);
    written.map_err(|e| e.to_string())
}

/// Read a secret file, refusing one that its group or others can read.
pub fn read(path: &Path) -> Result<[u8; 32], String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("mode {:o} lets others read the secret key; chmod 600 it", mode & 0o777));
    }
    let mut text = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut secret = [0u8; 32];
    let decoded = hex::decode_to_slice(text.trim_ascii(), &mut secret);
    wipe(&mut text);
    match decoded {
        Ok(()) => Ok(secret),
        Err(_) => {
            wipe(&mut secret);
            Err("does not hold a key (64 hex digits and a newline)".into())
        }
    }
}

/// Overwrite secret bytes with zeros in a way the compiler may not elide as a dead store.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: `byte` is a valid, aligned, exclusive reference to an initialized u8.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}
