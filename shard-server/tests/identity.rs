//! `ddc keygen`: account key files and SS58 addresses, through the real CLI.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::DDC_BIN;

#[test]
fn keygen_writes_a_private_key_and_prints_its_cere_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("me.key");
    let out = Command::new(DDC_BIN).arg("keygen").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let address = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let account = ddc_auth::account::Account::from_ss58(&address).expect("an SS58 address with prefix 54");
    assert_eq!(ddc_auth::account::Keypair::read(&path).unwrap().account(), account);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // --show prints the same address; a second keygen never overwrites.
    let shown = Command::new(DDC_BIN).args(["keygen", "--show"]).arg(&path).output().unwrap();
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), address);
    let again = Command::new(DDC_BIN).arg("keygen").arg(&path).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("File exists"));
    assert_eq!(ddc_auth::account::Keypair::read(&path).unwrap().account(), account);

    // A key file others can read is refused.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = Command::new(DDC_BIN).args(["keygen", "--show"]).arg(&path).output().unwrap();
    assert_eq!(loose.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&loose.stderr).contains("chmod 600"));
}
