//! `ant daemon install-service` / `uninstall-service`: the daemon as a service of the user,
//! under systemd (socket-activated: the daemon starts on the first connection) or launchd.
//!
//! The unit files are the ones in `packaging/`, with this machine's paths filled in. Every step
//! is printed, and `--no-start` only writes (or removes) the files and prints the commands.

use std::path::{Path, PathBuf};

use aniated::home::Home;
use anyhow::Context;

use crate::exit::{Exit, Failure};

const SOCKET_UNIT: &str = include_str!("../units/aniated.socket");
const SERVICE_UNIT: &str = include_str!("../units/aniated.service");
const LAUNCHD_PLIST: &str = include_str!("../units/com.aniate.aniated.plist");
const LAUNCHD_LABEL: &str = "com.aniate.aniated";

/// The `aniated` that the service runs: the one next to this `ant`.
fn daemon_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let daemon = exe.with_file_name(if cfg!(windows) { "aniated.exe" } else { "aniated" });
    if !daemon.is_file() {
        return Err(anyhow::Error::new(Failure::new(
            Exit::Error,
            format!("aniated is not next to ant (looked for {})", daemon.display()),
        )));
    }
    Ok(std::fs::canonicalize(&daemon).unwrap_or(daemon))
}

fn systemd_dir() -> anyhow::Result<PathBuf> {
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(config).join("systemd/user"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

fn launch_agents_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context("HOME is not set")?;
    Ok(PathBuf::from(home).join("Library/LaunchAgents"))
}

fn write(path: &Path, text: &str, steps: &mut String) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    aniated::fsutil::write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    steps.push_str(&format!("wrote {}\n", path.display()));
    Ok(())
}

/// Runs `program args`, or only lists it with `no_start`, as a step still to run (`to start it`
/// when installing, `to stop it` when uninstalling).
fn run(program: &str, args: &[&str], no_start: bool, steps: &mut String) -> anyhow::Result<()> {
    let line = format!("{program} {}", args.join(" "));
    if no_start {
        let verb = if args.iter().any(|arg| ["disable", "bootout"].contains(arg)) { "stop" } else { "start" };
        steps.push_str(&format!("to {verb} it: {line}\n"));
        return Ok(());
    }
    let status =
        std::process::Command::new(program).args(args).status().with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        return Err(anyhow::Error::new(Failure::new(Exit::Error, format!("`{line}` failed ({status})"))));
    }
    steps.push_str(&format!("ran {line}\n"));
    Ok(())
}

pub fn install(home: &Home, no_start: bool) -> anyhow::Result<String> {
    let daemon = daemon_exe()?;
    let mut steps = String::new();
    home.ensure().map_err(|err| anyhow::Error::new(Failure::new(Exit::Error, err.to_string())))?;
    if cfg!(target_os = "macos") {
        let plist = LAUNCHD_PLIST
            .replace("@ANIATED@", &daemon.display().to_string())
            .replace("@ANIATE_HOME@", &home.root.display().to_string());
        let path = launch_agents_dir()?.join(format!("{LAUNCHD_LABEL}.plist"));
        write(&path, &plist, &mut steps)?;
        let domain = format!("gui/{}", user_id()?);
        run("launchctl", &["bootstrap", &domain, &path.display().to_string()], no_start, &mut steps)?;
    } else {
        let dir = systemd_dir()?;
        let socket = SOCKET_UNIT.replace("%h/.aniate/aniated.sock", &home.socket.display().to_string());
        let service = SERVICE_UNIT
            .replace("%h/.local/bin/aniated", &daemon.display().to_string())
            .replace("ANIATE_HOME=%h/.aniate", &format!("ANIATE_HOME={}", home.root.display()));
        write(&dir.join("aniated.socket"), &socket, &mut steps)?;
        write(&dir.join("aniated.service"), &service, &mut steps)?;
        run("systemctl", &["--user", "daemon-reload"], no_start, &mut steps)?;
        run("systemctl", &["--user", "enable", "--now", "aniated.socket"], no_start, &mut steps)?;
    }
    if !no_start {
        steps.push_str("aniated now runs as a service; `ant daemon status` shows it\n");
    }
    Ok(steps)
}

pub fn uninstall(no_start: bool) -> anyhow::Result<String> {
    let mut steps = String::new();
    let remove = |path: &Path, steps: &mut String| -> anyhow::Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => steps.push_str(&format!("removed {}\n", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot remove {}", path.display())),
        }
        Ok(())
    };
    if cfg!(target_os = "macos") {
        let domain = format!("gui/{}/{LAUNCHD_LABEL}", user_id()?);
        run("launchctl", &["bootout", &domain], no_start, &mut steps)?;
        remove(&launch_agents_dir()?.join(format!("{LAUNCHD_LABEL}.plist")), &mut steps)?;
    } else {
        run("systemctl", &["--user", "disable", "--now", "aniated.socket", "aniated.service"], no_start, &mut steps)?;
        let dir = systemd_dir()?;
        remove(&dir.join("aniated.socket"), &mut steps)?;
        remove(&dir.join("aniated.service"), &mut steps)?;
        run("systemctl", &["--user", "daemon-reload"], no_start, &mut steps)?;
    }
    if steps.is_empty() {
        steps.push_str("no service was installed\n");
    }
    Ok(steps)
}

fn user_id() -> anyhow::Result<String> {
    let output = std::process::Command::new("id").arg("-u").output().context("cannot run `id -u`")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
