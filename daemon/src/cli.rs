//! The command line of `aniated` (here rather than in its `main`, packaging/pypi/src/bin/aniated.rs, so `ant manpages` can render it).

use clap::Parser;

/// The Aniate daemon: keeps your login, installed tools and a warm connection to the server,
/// so `ant` and `ant-lsp` start instantly. `ant` starts it when needed; you rarely run it
/// yourself.
#[derive(Debug, Parser)]
#[command(name = "aniated", version)]
#[command(after_long_help = "Files live in ANIATE_HOME (default ~/.aniate): config.toml, credentials, tools/, \
aniated.sock, aniated.log, state.redb.

Environment: ANIATE_HOME, ANIATE_SOCKET (socket path), ANIATE_SERVER (server URL), ANIATE_TOKEN \
(token instead of the stored one), ANIATE_CA_CERT, ANIATE_LOG (log filter, e.g. debug).

Exit status: 0 after a clean stop, 1 on an error, 3 when another aniated already serves this home.

Debugging: ANIATE_LOG=debug aniated --foreground")]
pub struct Args {
    /// Also log to stderr (the log file is always written)
    #[arg(long)]
    pub foreground: bool,
    /// Serve one client over the Unix socket on stdin, then exit: a private daemon for one
    /// command (`ant --no-daemon` runs it). No socket file, no lock, no result cache; logs go to
    /// stderr, and only when ANIATE_LOG is set
    #[arg(long, conflicts_with = "foreground")]
    pub stdio: bool,
}
