//! Links `ant` as a position-dependent executable on Linux (issue 15).
//!
//! `ant` starts for every command, and a position-independent executable pays at each start for
//! the dynamic loader to relocate every pointer in its data (about 15,000 in a release build) and
//! to copy the pages they are on: a third of the instructions of `ant --version`, and 30 % of its
//! page faults. Linked at a fixed address, the linker resolves them once. The shared libraries,
//! the stack and the heap are still placed at random; only `ant`'s own code and data are not.
//! `aniated` and `ant-lsp` start once and run long, so they stay position-independent.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bin=ant=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
