//! Client-side encryption through the real `ddc` CLI and a real node: records produced with
//! `--key` come back byte-exact with the key, as ciphertext without it, and not at all with
//! another key; and the node's data directory never holds the plaintext.

mod common;

use std::path::{Path, PathBuf};

use common::Node;
use ddc_auth::encryption::{decrypt_record, encrypt_record, BucketKey, RECORD_OVERHEAD_BYTES};

/// Lines that cannot occur by chance in anything the node writes: each carries `marker`.
fn distinctive_lines(marker: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| match i % 4 {
            0 => format!("{marker} record {i}: pay {} to alice", i * 7),
            1 => format!("{marker} record {i} {}", "long payload ".repeat(50 + i)),
            2 => format!("{marker} record {i}: tab\tand bytes ä ö ü"),
            _ => format!("{marker} record {i}"),
        })
        .collect()
}

fn input_of(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Create a bucket key file through the CLI; returns its path and the key id it printed.
fn bucket_key(node: &Node, dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let id = node.ddc_ok(&["bucket-key", path_str(&path)], b"").trim().to_owned();
    assert_eq!(id.len(), 16, "a key id is 16 hex digits: {id:?}");
    assert_eq!(BucketKey::read(&path).unwrap().id().to_string(), id);
    (path, id)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    assert!(!needle.is_empty());
    files_under(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

#[test]
fn encrypted_round_trip_and_the_node_stores_only_ciphertext() {
    let mut node = Node::start();
    // Keys and inputs live outside the node's data directory, which is scanned below.
    let keys = tempfile::tempdir().unwrap();
    let (key_file, key_id) = bucket_key(&node, keys.path(), "orders.bucket-key");
    let (other_key_file, other_key_id) = bucket_key(&node, keys.path(), "other.bucket-key");
    assert_ne!(key_id, other_key_id);

    // `bucket-key` never overwrites, and --show prints the id of an existing file.
    let again = node.ddc(&["bucket-key", path_str(&key_file)], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"));
    assert_eq!(node.ddc_ok(&["bucket-key", "--show", path_str(&key_file)], b"").trim(), key_id);

    let secret_marker = "ENCRYPTED-e2e-4f1c9b7a-never-on-disk";
    let plain_marker = "PLAIN-e2e-83d2e6c1-stored-as-is";
    let mut secret = distinctive_lines(secret_marker, 40);
    secret.insert(3, String::new()); // an empty record too
    let plain = distinctive_lines(plain_marker, 10);
    let secret_input = input_of(&secret);

    // Produce through the CLI with the key, in several requests.
    let out = node.ddc(&["produce", "secret-orders", "--key", path_str(&key_file), "--batch", "7"], &secret_input);
    assert!(out.status.success(), "ddc produce --key: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("produced {} records", secret.len())));
    node.ddc_ok(&["produce", "plain-orders"], &input_of(&plain));

    // With the key: the plaintext, byte for byte; --from/--count/--offsets still work.
    let out = node.ddc(&["consume", "secret-orders", "--key", path_str(&key_file)], b"");
    assert!(out.status.success(), "ddc consume --key: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, secret_input);
    let some = node.ddc_ok(
        &["consume", "secret-orders", "--key", path_str(&key_file), "--from", "5", "--count", "2", "--offsets"],
        b"",
    );
    assert_eq!(some, format!("5\t{}\n6\t{}\n", secret[5], secret[6]));

    // Without the key: the ciphertext, as the node stores it; each record is 49 bytes longer
    // than its plaintext and opens with the key through the library.
    let out = node.ddc(&["consume", "secret-orders"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!contains(&out.stdout, secret_marker.as_bytes()), "ciphertext shows the plaintext");
    let ciphertext_bytes: usize = secret.iter().map(|l| l.len() + RECORD_OVERHEAD_BYTES + 1).sum();
    assert_eq!(out.stdout.len(), ciphertext_bytes);
    let key = BucketKey::read(&key_file).unwrap();
    let stored = common::read_all(&mut node.client(), "secret-orders");
    assert_eq!(stored.len(), secret.len());
    for (record, line) in stored.iter().zip(&secret) {
        assert_eq!(decrypt_record(&key, "secret-orders", record).unwrap(), line.as_bytes());
    }

    // Another key: exit 1, naming the offset and both key ids.
    let out = node.ddc(&["consume", "secret-orders", "--key", path_str(&other_key_file)], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("offset 0"), "{stderr}");
    assert!(stderr.contains(&format!("record encrypted with key {key_id}, you have {other_key_id}")), "{stderr}");

    // A record copied into another stream does not open there; the records before it still print.
    let mut client = node.client();
    let own = encrypt_record(&key, "copied-orders", b"sealed for copied-orders");
    client.produce("copied-orders", &[own.as_slice(), stored[1].as_slice(), b"not encrypted"]).unwrap();
    let out = node.ddc(&["consume", "copied-orders", "--key", path_str(&key_file)], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(out.stdout, b"sealed for copied-orders\n");
    assert!(stderr.contains("offset 1 of copied-orders") && stderr.contains("another stream"), "{stderr}");
    let out = node.ddc(&["consume", "copied-orders", "--key", path_str(&key_file), "--from", "2"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("offset 2 of copied-orders") && stderr.contains("too short"), "{stderr}");

    // An unencrypted stream read with a key fails on its first record instead of printing it.
    let out = node.ddc(&["consume", "plain-orders", "--key", path_str(&key_file)], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(!contains(&out.stdout, plain_marker.as_bytes()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offset 0"));

    // Stop the node (SIGTERM: everything it holds reaches its files), then scan every file.
    assert!(node.terminate().success(), "{}", node.log());
    let files = files_under(&node.data_dir);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "log")), "no segment file in {files:?}");
    // The scan finds what is there: the unencrypted stream's records are on disk.
    let found = files_containing(&node.data_dir, plain_marker.as_bytes());
    assert!(!found.is_empty(), "the scan does not find the unencrypted records in {files:?}");
    assert!(!files_containing(&node.data_dir, plain[1].as_bytes()).is_empty());
    // The encrypted stream's plaintext is nowhere: neither the marker nor any whole line.
    let found = files_containing(&node.data_dir, secret_marker.as_bytes());
    assert!(found.is_empty(), "plaintext of encrypted records found in {found:?}");
    for line in secret.iter().filter(|l| !l.is_empty()) {
        assert!(files_containing(&node.data_dir, line.as_bytes()).is_empty(), "plaintext {line:?} found on disk");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
