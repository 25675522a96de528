//! The `distill` binary the tests run: the `distill` example, which `cargo test` builds.

use std::path::PathBuf;

/// `target/<profile>/examples/distill`, beside this test's `deps/` directory.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples/distill");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it; to run this file alone, `cargo build --example distill` first",
        bin.display()
    );
    bin
}
