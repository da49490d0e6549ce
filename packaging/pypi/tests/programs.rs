//! The three client programs this package builds answer `--version` and `--help`.
//!
//! Besides checking them, this test makes `cargo nextest run --workspace` (and `cargo test
//! --workspace`) build `ant`, `aniated` and `ant-lsp` before any test runs, which the other
//! crates' end-to-end tests rely on: cargo builds a package's binaries for its integration tests.

use std::process::Command;

fn run(program: &str, arg: &str) -> (bool, String) {
    let output = Command::new(program).arg(arg).env_remove("ANIATE_HOME").output().expect("run the program");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn every_program_answers_version_and_help() {
    let version = env!("CARGO_PKG_VERSION");
    for (program, name) in [
        (env!("CARGO_BIN_EXE_ant"), "ant"),
        (env!("CARGO_BIN_EXE_aniated"), "aniated"),
        (env!("CARGO_BIN_EXE_ant-lsp"), "ant-lsp"),
    ] {
        let (ok, out) = run(program, "--version");
        assert!(ok, "{name} --version failed");
        assert_eq!(out.lines().next(), Some(format!("{name} {version}").as_str()), "{name}");
        let (ok, help) = run(program, "--help");
        assert!(ok, "{name} --help failed");
        assert!(help.len() > 200, "{name} --help teaches: {help}");
    }
}
