//! The programs this workspace ships answer `--version` and `--help`, and every place that
//! states the version states the workspace's, `[workspace.package] version` in Cargo.toml: each
//! crate's manifest, both wheels (their version is dynamic, so maturin takes the crate's), every
//! program's `--version`, the OpenAPI document's `info.version` and the server's `/healthz`.
//! `packaging/pypi/smoke-test.sh` checks the built wheels' file names and programs the same way.
//!
//! Besides checking them, this test makes `cargo nextest run --workspace` (and `cargo test
//! --workspace`) build `ant`, `aniated` and `ant-lsp` before any test runs, which the other
//! crates' end-to-end tests rely on: cargo builds a package's binaries for its integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use aniate_testkit::stack::{Stack, StackOptions, workspace_bin};

fn run(program: &Path, arg: &str) -> (bool, String) {
    let output = Command::new(program).arg(arg).env_remove("ANIATE_HOME").output().expect("run the program");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    text.parse().unwrap_or_else(|err| panic!("parse {}: {err}", path.display()))
}

/// `[workspace.package] version` of the root Cargo.toml: the one place the version is written.
fn workspace_version() -> String {
    let root = read_toml(&repo_root().join("Cargo.toml"));
    root["workspace"]["package"]["version"].as_str().expect("[workspace.package] version").to_owned()
}

#[test]
fn every_program_answers_version_and_help() {
    let version = env!("CARGO_PKG_VERSION");
    for (program, name) in [
        (env!("CARGO_BIN_EXE_ant"), "ant"),
        (env!("CARGO_BIN_EXE_aniated"), "aniated"),
        (env!("CARGO_BIN_EXE_ant-lsp"), "ant-lsp"),
    ] {
        let (ok, out) = run(Path::new(program), "--version");
        assert!(ok, "{name} --version failed");
        assert_eq!(out.lines().next(), Some(format!("{name} {version}").as_str()), "{name}");
        let (ok, help) = run(Path::new(program), "--help");
        assert!(ok, "{name} --help failed");
        assert!(help.len() > 200, "{name} --help teaches: {help}");
    }
}

#[test]
fn every_crate_and_both_wheels_take_the_workspace_version() {
    let root = repo_root();
    let workspace = read_toml(&root.join("Cargo.toml"));
    let members = workspace["workspace"]["members"].as_array().expect("[workspace] members");
    assert!(members.len() >= 7, "members: {members:?}");
    for member in members {
        let manifest = root.join(member.as_str().expect("a member path")).join("Cargo.toml");
        let package = &read_toml(&manifest)["package"];
        let inherited = package.get("version").and_then(|v| v.get("workspace")).and_then(toml::Value::as_bool);
        assert_eq!(inherited, Some(true), "{} must say `version.workspace = true`", manifest.display());
    }
    for (pyproject, crate_manifest) in [
        ("packaging/pypi/pyproject.toml", "packaging/pypi/Cargo.toml"),
        ("packaging/pypi-server/pyproject.toml", "server/Cargo.toml"),
    ] {
        let path = root.join(pyproject);
        let doc = read_toml(&path);
        let project = doc["project"].as_table().expect("[project]");
        assert!(project.get("version").is_none(), "{pyproject} must not write a version of its own");
        let dynamic = project["dynamic"].as_array().expect("project.dynamic");
        assert!(dynamic.iter().any(|v| v.as_str() == Some("version")), "{pyproject}: the version must be dynamic");
        // maturin takes a dynamic version from the crate the package builds, which inherits it.
        let manifest_path = doc["tool"]["maturin"]["manifest-path"].as_str().expect("tool.maturin.manifest-path");
        let resolved = path.parent().unwrap().join(manifest_path).canonicalize().expect("the manifest exists");
        assert_eq!(resolved, root.join(crate_manifest).canonicalize().unwrap(), "{pyproject} builds {crate_manifest}");
    }
    assert_eq!(env!("CARGO_PKG_VERSION"), workspace_version());
}

#[tokio::test(flavor = "multi_thread")]
async fn programs_openapi_and_healthz_agree_on_the_workspace_version() {
    let version = workspace_version();
    let mut programs: Vec<(PathBuf, &str)> = vec![
        (env!("CARGO_BIN_EXE_ant").into(), "ant"),
        (env!("CARGO_BIN_EXE_aniated").into(), "aniated"),
        (env!("CARGO_BIN_EXE_ant-lsp").into(), "ant-lsp"),
    ];
    programs.push((workspace_bin("ant-server"), "ant-server"));
    for (program, name) in &programs {
        let (ok, out) = run(program, "--version");
        assert!(ok, "{name} --version failed");
        assert_eq!(out.trim_end(), format!("{name} {version}"), "{name} --version");
    }

    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let health: serde_json::Value =
        stack.http.get(format!("{}/healthz", stack.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["version"], version.as_str(), "/healthz: {health}");
    let openapi: serde_json::Value =
        stack.http.get(format!("{}/openapi.json", stack.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(openapi["info"]["version"], version.as_str(), "/openapi.json info: {}", openapi["info"]);
}
