//! Client-side encrypted records (ddc-auth `encryption`): `decrypt_record`
//! with the fixed bucket key (`fixed::bucket_key()`) and stream
//! (`fixed::STREAM`) on arbitrary bytes.
//!
//! The fuzzer cannot forge a Poly1305 tag, so only the seeds (records sealed
//! with that key for that stream) open; everything else must be refused with
//! an error, never a panic.
//!
//! Invariants checked:
//! - `decrypt_record` never panics, whatever the bytes and the key;
//! - a record that opens is exactly `RECORD_OVERHEAD_BYTES` longer than its
//!   plaintext and names the key; it does not open for another stream or
//!   under another key, nor with its last byte (part of the tag) changed;
//! - `encrypt_record` of that plaintext opens to the same plaintext.
#![no_main]

use ddc_auth::encryption::{decrypt_record, encrypt_record, BucketKey, EncryptionError, RECORD_OVERHEAD_BYTES};
use ddc_fuzz::fixed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = fixed::bucket_key();
    let other_key = BucketKey::from_bytes([0x43; 32]);
    if let Ok(plaintext) = decrypt_record(&other_key, fixed::STREAM, data) {
        panic!("a record opened under a key no seed uses: {} bytes of plaintext", plaintext.len());
    }

    let Ok(plaintext) = decrypt_record(&key, fixed::STREAM, data) else { return };
    assert_eq!(plaintext.len() + RECORD_OVERHEAD_BYTES, data.len());
    assert_eq!(data[1..9], key.id().0);
    assert!(matches!(decrypt_record(&key, "b7.invoices", data), Err(EncryptionError::Authentication { .. })));
    assert!(matches!(decrypt_record(&other_key, fixed::STREAM, data), Err(EncryptionError::WrongKey { .. })));
    let mut changed = data.to_vec();
    *changed.last_mut().expect("a record that opens is not empty") ^= 1;
    assert!(decrypt_record(&key, fixed::STREAM, &changed).is_err());

    let again = encrypt_record(&key, fixed::STREAM, &plaintext);
    assert_eq!(again.len(), data.len());
    assert_eq!(decrypt_record(&key, fixed::STREAM, &again).ok(), Some(plaintext));
});
