//! The command line of `ant`, as clap derive types.
//!
//! Built-in commands are variants of [`Command`]. Tools are dynamic (an admin can push one at any
//! time), so anything that is not a built-in command lands in [`Command::Run`] through clap's
//! external subcommand support, and [`parse_run_args`] parses it with a second, small parser
//! ([`RunArgs`]). That way `ant fix app.py -i "keep it short" --apply` works, and `ant fix --help`
//! prints the help of a tool run.
//!
//! Global flags live in [`GlobalArgs`]. Both parsers accept them, because flags written after a
//! tool's slug never reach the top-level parser: `ant fix app.py --json` puts `--json` in
//! [`RunArgs::global`]; [`GlobalArgs::merged_with`] combines the two.

use std::io::Write;

use aniate_proto::tool::is_valid_slug;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum, error::ErrorKind};

/// Copy-paste examples shown by `ant --help`.
const EXAMPLES: &str = "\
Run an installed tool with `ant SLUG [FILE|-] [-i TEXT]`; `ant SLUG --help` tells more.

Examples:
  ant login                                  Log in (asks for your email and password)
  ant marketplace                            See the tools on the server
  ant install fix review shell what          Install tools
  ant fix app.py                             Show the fix for app.py as a diff
  ant fix app.py -i \"keep it short\" --apply  Apply the fix (the original is kept as app.py.orig)
  git diff | ant review -                    Review what is on stdin
  ant review src/main.rs --format sarif      Findings as SARIF, for code-scanning tools
  ant shell -i \"find files over 1 GB\"        Propose a command, and ask before running it
  ant what -i \"what is a monad?\"             Ask a question
  ant list                                   The installed tools
  ant update                                 Update the installed tools
  ant daemon status                          Is the background daemon running?
  ant completions zsh > ~/.zfunc/_ant        Shell completions

Environment:
  ANIATE_HOME                 where ant keeps its files (default ~/.aniate)
  ANIATE_SERVER               the server URL, like --server
  ANIATE_TOKEN                an API token to use instead of the stored one (for CI)
  ANIATE_LOG                  the daemon's log filter, e.g. debug
  ANIATE_CA_CERT              a PEM CA certificate to trust for the server (like ca_cert in config)
  ANIATE_SOCKET               the daemon's socket path (default ANIATE_HOME/aniated.sock)
  ANIATE_DAEMON_EXE           the aniated program to start (default: next to ant, then PATH)
  ANIATE_DAEMON_TIMEOUT_SECS  give up on a daemon silent mid-request after this long (default 120)
  NO_COLOR                    set to turn colours off

Exit codes:
  0 ok, 1 error, 2 usage error, 3 not logged in, 4 tool not installed or unknown,
  5 server or provider unavailable, 130 interrupted";

/// Examples shown by `ant SLUG --help`.
const RUN_EXAMPLES: &str = "\
What the flags do depends on the tool's output kind (see `ant list`):
  text      the answer is printed as it streams
  code      a diff against FILE is shown; --apply writes it (the original is kept as FILE.orig);
            an answer that is not a corrected FILE is shown as text and never applied
  findings  findings are printed as file:line: severity: message; --format sarif gives SARIF
  command   the command is shown and run only after you say yes, or with --yes; one marked
            dangerous runs only after you type its first word, or with --yes-dangerous

Examples:
  ant fix app.py
  ant fix app.py -i \"keep it short\" --apply
  cat app.py | ant fix - --language python
  ant review src/main.rs --format sarif > review.sarif
  ant shell -i \"list the 10 largest files here\"
  ant what -i \"what does `set -euo pipefail` do?\"";

/// `ant`: the Aniate command line.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "ant",
    version,
    about = "Aniate: AI developer tools from your terminal",
    long_about = "Aniate: AI developer tools from your terminal.\n\n\
        Browse the tools with `ant marketplace`, install them with `ant install`, and run one with \
        `ant SLUG [FILE]`. A background daemon (aniated) keeps your login and a warm connection to \
        the server; ant starts it when needed.",
    after_help = "Run an installed tool with `ant SLUG [FILE|-] [-i TEXT]`; see `ant SLUG --help`.\n\
        Examples, environment and exit codes: `ant --help`.",
    after_long_help = EXAMPLES,
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Machine-readable output: one JSON document, or NDJSON for a streamed answer
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not use or start the aniated daemon: run a private one for this command only
    /// (the `--stdio` mode of `aniated`), with its own connection to the server and no cache
    #[arg(long, global = true)]
    pub no_daemon: bool,
    /// `--server` or `ANIATE_SERVER`; may be empty, unlike [`GlobalArgs::server_url`].
    #[arg(
        long,
        global = true,
        env = "ANIATE_SERVER",
        value_name = "URL",
        help = "The Aniate server, e.g. https://aniate.example.com (overrides config.toml)"
    )]
    pub server: Option<String>,
    /// When to use colours; `auto` means on a terminal and when NO_COLOR is unset
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Print only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl GlobalArgs {
    /// The server URL from `--server` or `ANIATE_SERVER`, if one is given and not empty.
    pub fn server_url(&self) -> Option<&str> {
        self.server.as_deref().map(str::trim).filter(|server| !server.is_empty())
    }

    /// Combines these flags with `later` ones, written after a tool's slug: a flag set in either
    /// place counts, and where both give a value, the later one wins.
    pub fn merged_with(self, later: &GlobalArgs) -> GlobalArgs {
        GlobalArgs {
            json: self.json || later.json,
            no_daemon: self.no_daemon || later.no_daemon,
            server: later.server_url().map(str::to_owned).or(self.server),
            color: if later.color == ColorChoice::Auto { self.color } else { later.color },
            quiet: self.quiet || later.quiet,
        }
    }
}

/// `--color`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set
    #[default]
    Auto,
    /// Always colour, even when piped
    Always,
    /// Never colour
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Log in: asks for your email and password, or takes a token
    #[command(after_long_help = "Examples:\n  ant login\n  ant login --token \"$ANIATE_TOKEN\"\n  \
        printf '%s' \"$PASSWORD\" | ant login --email me@example.com --password-stdin")]
    Login(LoginArgs),
    /// Create an account and log in
    #[command(after_long_help = "Examples:\n  ant signup --email me@example.com\n  \
        printf '%s' \"$PASSWORD\" | ant signup --email me@example.com --password-stdin")]
    Signup(SignupArgs),
    /// Log out: revoke and forget the stored token
    Logout {
        /// Revoke every token of the account, on every machine, not only this one
        #[arg(long)]
        all: bool,
    },
    /// Show who you are logged in as, and on which server
    Whoami,
    /// List every tool on the server, with what is installed
    #[command(visible_alias = "market")]
    Marketplace,
    /// Install tools by slug
    #[command(after_long_help = "Example:\n  ant install fix review")]
    Install {
        /// The tools to install, e.g. `fix review`
        #[arg(required = true, value_name = "SLUG")]
        slugs: Vec<String>,
    },
    /// Remove an installed tool
    Uninstall {
        /// The tool to remove
        #[arg(value_name = "SLUG")]
        slug: String,
    },
    /// List the installed tools
    #[command(visible_alias = "ls")]
    List,
    /// Update the installed tools to the server's versions
    Update,
    /// Manage the background daemon (aniated)
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Read and change settings in config.toml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Your brews: personal assistants with a prompt and a model of your choice
    #[command(subcommand)]
    Brew(BrewCommand),
    /// Chat with a brew or the default assistant: a REPL, or one question
    #[command(
        after_long_help = "Examples:\n  ant chat                          # a conversation (Ctrl-C stops an answer, Ctrl-D leaves)\n  \
        ant chat --brew rust-reviewer\n  ant chat \"what is a monad?\"\n  git log -5 | ant chat \"summarise these commits\""
    )]
    Chat(ChatArgs),
    /// Files stored on the server, to run tools on later
    #[command(subcommand)]
    Files(FilesCommand),
    /// Your usage this month and what your plan leaves
    Usage,
    /// Show the versions of ant, of the daemon if it runs, and of the server it talks to
    #[command(after_long_help = "`ant --version` prints ant's own version only; this also asks a running daemon \
        (it never starts one) for its version and the server's.\n\nExamples:\n  ant version\n  ant version --json")]
    Version,
    /// Print shell completions
    #[command(
        after_long_help = "Examples:\n  ant completions bash > ~/.local/share/bash-completion/completions/ant\n  \
        ant completions zsh > ~/.zfunc/_ant\n  ant completions fish > ~/.config/fish/completions/ant.fish"
    )]
    Completions {
        /// The shell to print completions for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for ant (and its subcommands) and aniated into a directory
    #[command(hide = true)]
    Manpages {
        /// Where to write the `.1` files
        dir: std::path::PathBuf,
    },
    /// Run an installed tool: `ant SLUG [FILE|-] [-i TEXT]` (see `ant SLUG --help`)
    #[command(external_subcommand)]
    Run(Vec<String>),
}

/// `ant brew …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum BrewCommand {
    /// Your brews and the global ones
    #[command(alias = "ls")]
    List,
    /// One brew, with its prompt if it is yours
    Show {
        /// Slug or id
        brew: String,
    },
    /// Create a brew; the prompt comes from --prompt-file, or your $EDITOR
    #[command(after_long_help = "Examples:\n  ant brew create \"Rust Reviewer\" --prompt-file reviewer.md\n  \
        ant brew create \"SQL Helper\" --model llama-3.3-70b-versatile   # opens $EDITOR for the prompt")]
    Create {
        /// A name, e.g. "Rust Reviewer"; the slug is made from it unless --slug
        name: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long, short)]
        description: Option<String>,
        /// Read the system prompt from this file (`-` for stdin)
        #[arg(long, value_name = "FILE")]
        prompt_file: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// Publish it to every user (admins only)
        #[arg(long)]
        global: bool,
    },
    /// Change a brew of yours; without --prompt-file, opens the prompt in $EDITOR
    Edit {
        /// Slug or id
        brew: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, short)]
        description: Option<String>,
        #[arg(long, value_name = "FILE")]
        prompt_file: Option<String>,
        #[arg(long)]
        model: Option<String>,
    },
    /// Delete a brew of yours
    #[command(alias = "rm")]
    Delete {
        /// Slug or id
        brew: String,
    },
}

/// `ant chat`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ChatArgs {
    /// Chat with this brew (slug or id) instead of the default assistant
    #[arg(long, short)]
    pub brew: Option<String>,
    /// One question; without it, a REPL on a terminal, or the question from stdin
    pub question: Vec<String>,
}

/// `ant files …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum FilesCommand {
    /// Upload a file (up to the server's limit, 10 MiB by default)
    Push {
        file: String,
        /// Store it under another name
        #[arg(long)]
        name: Option<String>,
    },
    /// Your stored files
    #[command(alias = "list")]
    Ls,
    /// Delete a stored file
    Rm { id: i64 },
}

/// `ant login`: interactive without flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LoginArgs {
    /// Log in with an API token instead of a password
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["email", "password_stdin"])]
    pub token: Option<String>,
    /// Your email; asked for when missing
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// Read the password from stdin (one line) instead of asking for it
    #[arg(long, requires = "email")]
    pub password_stdin: bool,
}

/// `ant signup`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SignupArgs {
    /// The email of the new account
    #[arg(long, value_name = "EMAIL")]
    pub email: String,
    /// Read the password from stdin (one line) instead of asking for it twice
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon in the background (ant also starts it when needed)
    Start,
    /// Stop the daemon
    Stop,
    /// Stop the daemon, then start it again
    Restart,
    /// Show whether the daemon runs, and its state
    Status,
    /// Show the daemon's log
    Logs {
        /// Keep printing new lines as they are written
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to show
        #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
        lines: usize,
    },
    /// Run the daemon as a service of your user: systemd (socket-activated) or launchd
    #[command(after_long_help = "On Linux this writes aniated.socket and aniated.service to \
        ~/.config/systemd/user/ and runs `systemctl --user enable --now aniated.socket`; on macOS it writes \
        ~/Library/LaunchAgents/com.aniate.aniated.plist and runs `launchctl bootstrap`. It prints each step.")]
    InstallService {
        /// Only write the files; print the commands that would enable them
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and remove the service installed by install-service
    UninstallService {
        /// Only remove the files; print the commands that would disable them
        #[arg(long)]
        no_start: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ConfigCommand {
    /// Print one setting
    Get {
        #[arg(value_enum)]
        key: ConfigKey,
    },
    /// Change one setting; an empty VALUE removes it
    Set {
        #[arg(value_enum)]
        key: ConfigKey,
        value: String,
    },
    /// Print every setting
    List,
}

/// The settings of `config.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ConfigKey {
    /// The Aniate server's URL
    #[value(name = "server")]
    Server,
    /// A PEM file with an extra CA certificate to trust (self-hosted HTTPS)
    #[value(name = "ca_cert")]
    CaCert,
    /// How often the daemon checks for tool updates, in seconds
    #[value(name = "update_check_secs")]
    UpdateCheckSecs,
    /// How long the daemon keeps a tool's answer for the same input, in seconds
    #[value(name = "cache_ttl_secs")]
    CacheTtlSecs,
    /// Allow plain http:// to a server off this machine (true/false; default false): the token
    /// then crosses the network in clear text, and every command warns
    #[value(name = "allow_insecure_http")]
    AllowInsecureHttp,
}

impl ConfigKey {
    pub const ALL: [ConfigKey; 5] = [
        ConfigKey::Server,
        ConfigKey::CaCert,
        ConfigKey::UpdateCheckSecs,
        ConfigKey::CacheTtlSecs,
        ConfigKey::AllowInsecureHttp,
    ];

    /// The key as written in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKey::Server => "server",
            ConfigKey::CaCert => "ca_cert",
            ConfigKey::UpdateCheckSecs => "update_check_secs",
            ConfigKey::CacheTtlSecs => "cache_ttl_secs",
            ConfigKey::AllowInsecureHttp => "allow_insecure_http",
        }
    }
}

/// `ant SLUG ...`: running an installed tool. Parsed by [`parse_run_args`].
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "ant-run",
    about = "Run an installed tool",
    override_usage = "ant SLUG [FILE|-] [OPTIONS]",
    after_long_help = RUN_EXAMPLES
)]
pub struct RunArgs {
    /// The tool's slug; set by [`parse_run_args`], not parsed.
    #[arg(skip)]
    pub slug: String,
    /// The file to work on; `-` reads stdin
    #[arg(value_name = "FILE")]
    pub file: Option<String>,
    /// What you want, in your words
    #[arg(short, long, value_name = "TEXT")]
    pub instructions: Option<String>,
    /// Write the fix to FILE, keeping the original as FILE.orig (`code` tools)
    #[arg(long)]
    pub apply: bool,
    /// Ask the server again instead of using a cached answer
    #[arg(long)]
    pub fresh: bool,
    /// How to print findings: `sarif` is for code-scanning tools (`findings` tools)
    #[arg(long, value_enum, default_value_t = RunFormat::Text, value_name = "FORMAT")]
    pub format: RunFormat,
    /// Run the proposed command without asking (`command` tools); not one marked dangerous
    #[arg(short, long)]
    pub yes: bool,
    /// Run the proposed command without asking, even one marked dangerous or with hidden characters
    #[arg(long)]
    pub yes_dangerous: bool,
    /// The file's language, when its extension does not tell, e.g. `python`
    #[arg(long, value_name = "LANGUAGE")]
    pub language: Option<String>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// `--format` of a tool run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, ValueEnum)]
pub enum RunFormat {
    /// Human-readable
    #[default]
    Text,
    /// SARIF 2.1.0 JSON (`findings` tools only)
    Sarif,
}

/// The clap command for running `slug`; `description` (the tool's, from its local metadata)
/// replaces the generic about text in `ant SLUG --help`.
pub fn run_command(slug: &str, description: Option<&str>) -> clap::Command {
    let command = RunArgs::command()
        .bin_name(format!("ant {slug}"))
        .override_usage(format!("ant {slug} [FILE|-] [OPTIONS]"))
        // The top-level parser reads ANIATE_SERVER; here only a `--server` typed after the slug
        // counts, so that it can override an earlier `--server` but the environment cannot.
        .mut_arg("server", |arg| arg.env(None));
    match description {
        Some(description) => command.about(description.to_owned()),
        None => command,
    }
}

/// Parses the words of [`Command::Run`]: the tool's slug, then its arguments.
///
/// A `--help` comes back as an error of kind [`ErrorKind::DisplayHelp`], as with any clap parse;
/// `error.exit()` or [`crate::exit::Exit::for_clap_error`] handle it.
pub fn parse_run_args(slug_and_args: &[String]) -> Result<RunArgs, clap::Error> {
    parse_run_args_described(slug_and_args, None)
}

/// [`parse_run_args`] with the tool's description for `--help`, when the tool is known locally.
pub fn parse_run_args_described(slug_and_args: &[String], description: Option<&str>) -> Result<RunArgs, clap::Error> {
    let Some((slug, args)) = slug_and_args.split_first() else {
        return Err(Cli::command().error(ErrorKind::MissingSubcommand, "a command or a tool's slug is required"));
    };
    if !is_valid_slug(slug) {
        let mut message = format!(
            "`{slug}` is not a command or a tool; tool slugs are lowercase letters, digits and `-` (see `ant list`)"
        );
        if let Some(builtin) = suggest_builtin(slug) {
            message.push_str(&format!("\n\n  tip: a similar command exists: `ant {builtin}`"));
        }
        return Err(Cli::command().error(ErrorKind::InvalidSubcommand, message));
    }
    if let Some(run) = parse_plain_run_args(slug, args) {
        return Ok(run);
    }
    let mut command = run_command(slug, description);
    let argv = std::iter::once(format!("ant {slug}")).chain(args.iter().cloned());
    let mut matches = command.try_get_matches_from_mut(argv)?;
    let mut run = RunArgs::from_arg_matches_mut(&mut matches).map_err(|err| err.format(&mut command))?;
    run.slug = slug.clone();
    Ok(run)
}

/// The arguments of a tool run read without clap, when they are of the plain kind almost every
/// run has (`FILE --fresh -i TEXT …`): each flag at most once, as its own word, with its value as
/// the next. Anything else, from `--help` and `--lang=python` to a mistake, is `None`, for clap
/// to parse or explain. Building clap's parser of a run is most of `ant`'s own work on a run's
/// way to the daemon (0.13 ms of it, in a release build); where this answers, it answers what
/// clap would (`plain_run_args_parse_as_clap_does`).
fn parse_plain_run_args(slug: &str, args: &[String]) -> Option<RunArgs> {
    fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
        slot.is_none().then(|| *slot = Some(value))
    }
    let (mut file, mut instructions, mut language, mut server, mut format, mut color) =
        (None, None, None, None, None, None);
    let (mut apply, mut fresh, mut yes, mut yes_dangerous, mut json, mut no_daemon, mut quiet) =
        (None, None, None, None, None, None, None);
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "-" || !word.starts_with('-') {
            set(&mut file, word.clone())?;
            continue;
        }
        let flag = match word.as_str() {
            "--apply" => &mut apply,
            "--fresh" => &mut fresh,
            "-y" | "--yes" => &mut yes,
            "--yes-dangerous" => &mut yes_dangerous,
            "--json" => &mut json,
            "--no-daemon" => &mut no_daemon,
            "-q" | "--quiet" => &mut quiet,
            option => {
                let value = words.next().filter(|value| !value.starts_with('-'))?.clone();
                match option {
                    "-i" | "--instructions" => set(&mut instructions, value)?,
                    "--language" => set(&mut language, value)?,
                    "--server" => set(&mut server, value)?,
                    "--format" => set(&mut format, RunFormat::from_str(&value, false).ok()?)?,
                    "--color" => set(&mut color, ColorChoice::from_str(&value, false).ok()?)?,
                    _ => return None,
                }
                continue;
            }
        };
        set(flag, true)?;
    }
    Some(RunArgs {
        slug: slug.to_owned(),
        file,
        instructions,
        apply: apply.is_some(),
        fresh: fresh.is_some(),
        format: format.unwrap_or_default(),
        yes: yes.is_some(),
        yes_dangerous: yes_dangerous.is_some(),
        language,
        global: GlobalArgs {
            json: json.is_some(),
            no_daemon: no_daemon.is_some(),
            server,
            color: color.unwrap_or_default(),
            quiet: quiet.is_some(),
        },
    })
}

/// What `ant`'s command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `ant --version` or `ant -V`: print ant's own version.
    Version,
    /// Anything else, parsed.
    Cli(Cli),
}

/// The built-in command names and aliases. They are the names in clap's tree of [`Command`], listed
/// here so that telling a tool's slug from a command does not build that tree;
/// `tests::builtin_names_are_listed` keeps the two the same.
const BUILTIN_NAMES: &[&str] = &[
    "login",
    "signup",
    "logout",
    "whoami",
    "marketplace",
    "market",
    "install",
    "uninstall",
    "list",
    "ls",
    "update",
    "daemon",
    "config",
    "brew",
    "chat",
    "files",
    "usage",
    "version",
    "completions",
    "manpages",
    "help",
];

/// Parses `ant`'s arguments (`args` without the program name; `server_env` is `ANIATE_SERVER`).
///
/// The two commands that must start fastest skip building clap's tree of every built-in command,
/// which is most of a short command's own work (issue 15): `--version`, and a tool run whose first
/// word is the tool's slug, `ant SLUG …`, which clap would pass through whole as [`Command::Run`]
/// anyway. Both give what the full parser gives (`tests::fast_paths_agree_with_clap`); anything
/// else, errors and help included, goes through the full parser.
pub fn parse_invocation(
    args: Vec<std::ffi::OsString>,
    server_env: Option<std::ffi::OsString>,
) -> Result<Invocation, clap::Error> {
    if let [only] = args.as_slice()
        && (only == "--version" || only == "-V")
    {
        return Ok(Invocation::Version);
    }
    if let Some(cli) = parse_tool_run(&args, server_env) {
        return Ok(Invocation::Cli(cli));
    }
    match Cli::try_parse_from(std::iter::once(std::ffi::OsString::from("ant")).chain(args)) {
        Ok(cli) => Ok(Invocation::Cli(cli)),
        Err(err) if err.kind() == ErrorKind::DisplayVersion => Ok(Invocation::Version),
        Err(err) => Err(err),
    }
}

/// `ant SLUG …` as the full parser reads it, or `None` when the line is anything else (or not
/// UTF-8, which the full parser reports).
fn parse_tool_run(args: &[std::ffi::OsString], server_env: Option<std::ffi::OsString>) -> Option<Cli> {
    let slug = args.first()?.to_str()?;
    if !is_valid_slug(slug) || BUILTIN_NAMES.contains(&slug) {
        return None;
    }
    let words = args.iter().map(|arg| arg.to_str().map(str::to_owned)).collect::<Option<Vec<_>>>()?;
    let server = match server_env {
        Some(server) => Some(server.into_string().ok()?),
        None => None,
    };
    Some(Cli { global: GlobalArgs { server, ..GlobalArgs::default() }, command: Command::Run(words) })
}

/// A built-in command close to `word`, for a "did you mean" hint when `ant WORD` names neither a
/// command nor an installed tool (e.g. `ant instal`).
pub fn suggest_builtin(word: &str) -> Option<String> {
    if BUILTIN_NAMES.contains(&word) {
        return None;
    }
    let word = word.to_lowercase();
    BUILTIN_NAMES
        .iter()
        .filter(|name| **name != "help")
        .map(|name| (edit_distance(&word, name), name))
        .filter(|(distance, name)| *distance <= 2.min(name.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| (*name).to_owned())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Writes the completion script of `shell` for `ant`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "ant", out);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A tool run's arguments as clap parses them, never through [`parse_plain_run_args`].
    fn clap_run_args(words: &[String]) -> Result<RunArgs, String> {
        let mut command = run_command("what", None);
        let argv = std::iter::once("ant what".to_owned()).chain(words.iter().cloned());
        let mut matches = command.try_get_matches_from_mut(argv).map_err(|err| err.kind().to_string())?;
        let mut run = RunArgs::from_arg_matches_mut(&mut matches).map_err(|err| err.to_string())?;
        run.slug = "what".to_owned();
        Ok(run)
    }

    const FLAGS: &[&str] =
        &["--fresh", "--apply", "-y", "--yes", "--yes-dangerous", "--json", "--no-daemon", "-q", "--quiet"];
    const OPTIONS: &[&str] = &["-i", "--instructions", "--language", "--server", "--format", "--color"];
    /// Values good and bad for every option, and files.
    const VALUES: &[&str] = &[
        "sarif",
        "text",
        "Sarif",
        "always",
        "never",
        "auto",
        "app.py",
        "-",
        "",
        "why is it slow?",
        "python",
        "https://x.test",
        "-x",
        "--fresh",
    ];
    /// Forms only clap reads, and mistakes.
    const ODD: &[&str] =
        &["--", "-h", "--help", "-V", "--bogus", "--fresh=true", "-qy", "--language=python", "-ipython", "--instr"];

    /// A run's arguments, mostly well formed (a flag, an option and its value, a file), now and
    /// then odd.
    fn run_words() -> impl Strategy<Value = Vec<String>> {
        let pick = |words: &'static [&'static str]| proptest::sample::select(words).prop_map(|w| vec![w.to_owned()]);
        let option = (proptest::sample::select(OPTIONS), proptest::sample::select(VALUES))
            .prop_map(|(option, value)| vec![option.to_owned(), value.to_owned()]);
        let item = prop_oneof![4 => pick(FLAGS), 4 => option, 2 => pick(VALUES), 1 => pick(ODD), 1 => pick(OPTIONS)];
        proptest::collection::vec(item, 0..6).prop_map(|items| items.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// Wherever the plain parser answers, clap answers the same.
        #[test]
        fn plain_run_args_parse_as_clap_does(words in run_words()) {
            if let Some(plain) = parse_plain_run_args("what", &words) {
                prop_assert_eq!(Ok(plain), clap_run_args(&words), "{:?}", words);
            }
        }
    }

    /// The runs people type are read without clap, and read right.
    #[test]
    fn plain_runs_skip_clap() {
        for line in [
            "",
            "app.py",
            "app.py --fresh",
            "- --json",
            "-i why? --language python --fresh",
            "app.py --apply -y -q --color never --server https://x.test",
            "app.py --format sarif --no-daemon --yes-dangerous",
            "--instructions what --json --quiet",
        ] {
            let words: Vec<String> = line.split(' ').filter(|w| !w.is_empty()).map(str::to_owned).collect();
            let plain = parse_plain_run_args("what", &words);
            assert!(plain.is_some(), "{line}");
            assert_eq!(plain.map(Ok), Some(clap_run_args(&words)), "{line}");
        }
        let clap_only = ["--help", "app.py --language=python", "-qy", "-- app.py", "a.py b.py", "--fresh --fresh"];
        for line in clap_only {
            let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
            assert_eq!(parse_plain_run_args("what", &words), None, "{line}");
        }
    }

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(std::iter::once("ant").chain(args.iter().copied())) {
            Ok(cli) => cli,
            Err(err) => panic!("{args:?}: {err}"),
        }
    }

    fn command(args: &[&str]) -> Command {
        parse(args).command
    }

    fn parse_err(args: &[&str]) -> ErrorKind {
        match Cli::try_parse_from(std::iter::once("ant").chain(args.iter().copied())) {
            Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
            Err(err) => err.kind(),
        }
    }

    fn run(args: &[&str]) -> RunArgs {
        let Command::Run(words) = command(args) else { panic!("{args:?} is not a run") };
        match parse_run_args(&words) {
            Ok(run) => run,
            Err(err) => panic!("{args:?}: {err}"),
        }
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    /// The names of the built-in commands, aliases included, as clap's tree has them.
    fn builtin_names() -> Vec<String> {
        let cli = Cli::command();
        let mut names = Vec::new();
        for sub in cli.get_subcommands() {
            names.push(sub.get_name().to_owned());
            names.extend(sub.get_all_aliases().map(str::to_owned));
        }
        names
    }

    #[test]
    fn builtin_names_are_listed() {
        let mut listed: Vec<String> = BUILTIN_NAMES.iter().map(|name| (*name).to_owned()).collect();
        let mut built = builtin_names();
        if !built.iter().any(|name| name == "help") {
            built.push("help".to_owned());
        }
        listed.sort();
        built.sort();
        assert_eq!(listed, built);
    }

    fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(std::ffi::OsString::from).collect()
    }

    #[test]
    fn fast_paths_agree_with_clap() {
        let server_env = std::env::var_os("ANIATE_SERVER");
        let runs: &[&[&str]] = &[
            &["what"],
            &["what", "small.py"],
            &["fix", "app.py", "-i", "keep it short", "--apply", "--json"],
            &["review", "-", "--format", "sarif", "--server", "http://b"],
            &["fix", "--help"],
            &["my-tool-2", "--no-such-flag"],
        ];
        for args in runs {
            let fast = parse_tool_run(&os(args), server_env.clone());
            assert_eq!(fast.as_ref(), Some(&parse(args)), "{args:?}");
            assert_eq!(parse_invocation(os(args), server_env.clone()).ok(), fast.map(Invocation::Cli), "{args:?}");
        }
        // Not tool runs: built-in commands and their aliases, flags first, bad slugs, nothing.
        let others: &[&[&str]] =
            &[&["install", "fix"], &["ls"], &["help"], &["--json", "what"], &["Fix"], &["fix.py"], &[]];
        for args in others {
            assert_eq!(parse_tool_run(&os(args), server_env.clone()), None, "{args:?}");
        }
        assert_eq!(parse_invocation(os(&["ls"]), server_env.clone()).ok(), Some(Invocation::Cli(parse(&["ls"]))));
        for version in [&["--version"][..], &["-V"], &["--json", "--version"]] {
            assert_eq!(
                parse_invocation(os(version), server_env.clone()).ok(),
                Some(Invocation::Version),
                "{version:?}"
            );
        }
        assert_eq!(
            parse_invocation(os(&["install"]), server_env).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn a_tool_run_reads_the_server_from_the_environment() {
        let Some(cli) = parse_tool_run(&os(&["what"]), Some("http://env".into())) else { panic!("not a run") };
        assert_eq!(cli.global.server.as_deref(), Some("http://env"));
        assert_eq!(cli.command, Command::Run(strings(&["what"])));
        // Not UTF-8: left to the full parser, which says so.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let bad = std::ffi::OsString::from_vec(vec![0xff, 0xfe]);
            assert_eq!(parse_tool_run(&os(&["what"]), Some(bad.clone())), None);
            assert_eq!(parse_tool_run(&[std::ffi::OsString::from("what"), bad], None), None);
        }
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
        RunArgs::command().debug_assert();
        run_command("fix", Some("Fixes a file")).debug_assert();
    }

    #[test]
    fn login_forms() {
        assert_eq!(command(&["login"]), Command::Login(LoginArgs { token: None, email: None, password_stdin: false }));
        assert_eq!(
            command(&["login", "--token", "T"]),
            Command::Login(LoginArgs { token: Some("T".into()), email: None, password_stdin: false })
        );
        assert_eq!(
            command(&["login", "--email", "e@x.org", "--password-stdin"]),
            Command::Login(LoginArgs { token: None, email: Some("e@x.org".into()), password_stdin: true })
        );
        assert_eq!(parse_err(&["login", "--password-stdin"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse_err(&["login", "--token", "T", "--email", "e@x.org"]), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn signup_forms() {
        assert_eq!(
            command(&["signup", "--email", "e@x.org"]),
            Command::Signup(SignupArgs { email: "e@x.org".into(), password_stdin: false })
        );
        assert_eq!(
            command(&["signup", "--email", "e@x.org", "--password-stdin"]),
            Command::Signup(SignupArgs { email: "e@x.org".into(), password_stdin: true })
        );
        assert_eq!(parse_err(&["signup"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn simple_commands_and_aliases() {
        assert_eq!(command(&["logout"]), Command::Logout { all: false });
        assert_eq!(command(&["logout", "--all"]), Command::Logout { all: true });
        assert_eq!(command(&["whoami"]), Command::Whoami);
        assert_eq!(command(&["marketplace"]), Command::Marketplace);
        assert_eq!(command(&["market"]), Command::Marketplace);
        assert_eq!(command(&["list"]), Command::List);
        assert_eq!(command(&["ls"]), Command::List);
        assert_eq!(command(&["update"]), Command::Update);
    }

    #[test]
    fn install_and_uninstall() {
        assert_eq!(command(&["install", "fix"]), Command::Install { slugs: strings(&["fix"]) });
        assert_eq!(command(&["install", "fix", "review"]), Command::Install { slugs: strings(&["fix", "review"]) });
        assert_eq!(parse_err(&["install"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(command(&["uninstall", "fix"]), Command::Uninstall { slug: "fix".into() });
        assert_eq!(parse_err(&["uninstall"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse_err(&["uninstall", "a", "b"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn daemon_commands() {
        assert_eq!(command(&["daemon", "start"]), Command::Daemon(DaemonCommand::Start));
        assert_eq!(command(&["daemon", "stop"]), Command::Daemon(DaemonCommand::Stop));
        assert_eq!(command(&["daemon", "restart"]), Command::Daemon(DaemonCommand::Restart));
        assert_eq!(command(&["daemon", "status"]), Command::Daemon(DaemonCommand::Status));
        assert_eq!(command(&["daemon", "logs"]), Command::Daemon(DaemonCommand::Logs { follow: false, lines: 50 }));
        assert_eq!(
            command(&["daemon", "logs", "-f", "-n", "10"]),
            Command::Daemon(DaemonCommand::Logs { follow: true, lines: 10 })
        );
        assert_eq!(
            command(&["daemon", "logs", "--follow", "--lines", "3"]),
            Command::Daemon(DaemonCommand::Logs { follow: true, lines: 3 })
        );
        assert_eq!(parse_err(&["daemon", "logs", "-n", "many"]), ErrorKind::ValueValidation);
        assert_eq!(parse_err(&["daemon"]), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    }

    #[test]
    fn config_commands() {
        assert_eq!(
            command(&["config", "get", "server"]),
            Command::Config(ConfigCommand::Get { key: ConfigKey::Server })
        );
        assert_eq!(
            command(&["config", "set", "ca_cert", "/etc/ca.pem"]),
            Command::Config(ConfigCommand::Set { key: ConfigKey::CaCert, value: "/etc/ca.pem".into() })
        );
        assert_eq!(
            command(&["config", "set", "cache_ttl_secs", ""]),
            Command::Config(ConfigCommand::Set { key: ConfigKey::CacheTtlSecs, value: String::new() })
        );
        assert_eq!(command(&["config", "list"]), Command::Config(ConfigCommand::List));
        assert_eq!(parse_err(&["config", "get", "password"]), ErrorKind::InvalidValue);
        for key in ConfigKey::ALL {
            let parsed = command(&["config", "get", key.as_str()]);
            assert_eq!(parsed, Command::Config(ConfigCommand::Get { key }));
        }
    }

    #[test]
    fn completions_for_every_shell() {
        for (name, shell) in [
            ("bash", clap_complete::Shell::Bash),
            ("zsh", clap_complete::Shell::Zsh),
            ("fish", clap_complete::Shell::Fish),
            ("elvish", clap_complete::Shell::Elvish),
            ("powershell", clap_complete::Shell::PowerShell),
        ] {
            assert_eq!(command(&["completions", name]), Command::Completions { shell });
            let mut script = Vec::new();
            write_completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("marketplace"), "{name}");
        }
        assert_eq!(parse_err(&["completions", "tcsh"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn global_flags_anywhere() {
        let cli =
            parse(&["--json", "--no-daemon", "--server", "http://localhost:8787", "--color", "never", "-q", "list"]);
        assert_eq!(
            cli.global,
            GlobalArgs {
                json: true,
                no_daemon: true,
                server: Some("http://localhost:8787".into()),
                color: ColorChoice::Never,
                quiet: true
            }
        );
        let cli = parse(&["list", "--json", "--color=always"]);
        assert!(cli.global.json);
        assert_eq!(cli.global.color, ColorChoice::Always);
        assert_eq!(parse(&["whoami"]).global.color, ColorChoice::Auto);
        assert_eq!(parse(&["--server", " ", "whoami"]).global.server_url(), None);
        assert_eq!(parse(&["--server", "http://a ", "whoami"]).global.server_url(), Some("http://a"));
        assert_eq!(parse_err(&["--color", "sometimes", "list"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn no_command_shows_help() {
        assert_eq!(parse_err(&[]), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
        assert_eq!(parse_err(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(parse_err(&["--version"]), ErrorKind::DisplayVersion);
    }

    #[test]
    fn long_help_teaches_with_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("ant fix app.py -i \"keep it short\" --apply"), "{help}");
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("The Aniate server, e.g. https://aniate.example.com"), "{help}");
        assert!(!help.contains("server_url"), "{help}");
        let short = Cli::command().render_help().to_string();
        assert!(short.contains("Run an installed tool with `ant SLUG [FILE|-] [-i TEXT]`"), "{short}");
    }

    #[test]
    fn running_a_tool_with_everything() {
        let run = run(&["fix", "app.py", "-i", "keep it short", "--apply"]);
        assert_eq!(
            run,
            RunArgs {
                slug: "fix".into(),
                file: Some("app.py".into()),
                instructions: Some("keep it short".into()),
                apply: true,
                fresh: false,
                format: RunFormat::Text,
                yes: false,
                yes_dangerous: false,
                language: None,
                global: GlobalArgs::default(),
            }
        );
    }

    #[test]
    fn running_a_tool_in_other_shapes() {
        let review = run(&["review", "-", "--format", "sarif", "--fresh", "--language", "rust"]);
        assert_eq!(review.slug, "review");
        assert_eq!(review.file.as_deref(), Some("-"));
        assert_eq!(review.format, RunFormat::Sarif);
        assert!(review.fresh);
        assert_eq!(review.language.as_deref(), Some("rust"));

        let shell = run(&["shell", "--instructions", "find big files", "--yes"]);
        assert_eq!(shell.file, None);
        assert_eq!(shell.instructions.as_deref(), Some("find big files"));
        assert!(shell.yes);
        assert!(!shell.yes_dangerous);
        let dangerous = run(&["shell", "-i", "wipe it", "--yes-dangerous"]);
        assert!(dangerous.yes_dangerous && !dangerous.yes);

        let what = run(&["what", "-y", "-i", "hi"]);
        assert!(what.yes);

        let bare = run(&["what"]);
        assert_eq!(bare.slug, "what");
        assert_eq!(bare.file, None);
        assert_eq!(bare.instructions, None);
    }

    #[test]
    fn global_flags_after_the_slug_are_merged() {
        let cli =
            parse(&["--server", "http://a", "fix", "app.py", "--json", "--color", "never", "--server", "http://b"]);
        let Command::Run(words) = &cli.command else { panic!("not a run") };
        let run = parse_run_args(words).unwrap();
        assert_eq!(run.file.as_deref(), Some("app.py"));
        let merged = cli.global.clone().merged_with(&run.global);
        assert!(merged.json);
        assert_eq!(merged.color, ColorChoice::Never);
        assert_eq!(merged.server.as_deref(), Some("http://b"));

        let cli = parse(&["--color", "always", "-q", "what"]);
        let Command::Run(words) = &cli.command else { panic!("not a run") };
        let merged = cli.global.clone().merged_with(&parse_run_args(words).unwrap().global);
        assert_eq!(merged.color, ColorChoice::Always);
        assert!(merged.quiet);
        assert!(!merged.json);
    }

    #[test]
    fn run_help_is_the_run_parsers() {
        let err = parse_run_args(&strings(&["fix", "--help"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        let help = err.to_string();
        assert!(help.contains("Usage: ant fix [FILE|-] [OPTIONS]"), "{help}");
        assert!(help.contains("--apply"), "{help}");
        assert!(help.contains("command   the command is shown"), "{help}");

        let err = parse_run_args_described(&strings(&["fix", "-h"]), Some("Fixes bugs in one file")).unwrap_err();
        assert!(err.to_string().contains("Fixes bugs in one file"), "{err}");
    }

    #[test]
    fn bad_run_arguments_are_usage_errors() {
        let err = parse_run_args(&strings(&["fix", "a.py", "b.py"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        let err = parse_run_args(&strings(&["fix", "--format", "xml"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let err = parse_run_args(&strings(&["fix", "--bogus"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        let err = parse_run_args(&strings(&["fix", "-i"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let err = parse_run_args(&[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingSubcommand);
    }

    #[test]
    fn invalid_slugs_are_refused_with_a_tip() {
        let err = parse_run_args(&strings(&["Fix", "app.py"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSubcommand);
        assert!(err.to_string().contains("`Fix` is not a command or a tool"), "{err}");
        let err = parse_run_args(&strings(&["../x"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSubcommand);
        let err = parse_run_args(&strings(&["Install"])).unwrap_err();
        assert!(err.to_string().contains("`ant install`"), "{err}");
    }

    #[test]
    fn builtin_suggestions() {
        assert_eq!(suggest_builtin("instal").as_deref(), Some("install"));
        assert_eq!(suggest_builtin("marketplce").as_deref(), Some("marketplace"));
        assert_eq!(suggest_builtin("wohami").as_deref(), Some("whoami"));
        assert_eq!(suggest_builtin("fix"), None);
        assert_eq!(suggest_builtin("list"), None);
        assert_eq!(suggest_builtin(""), None);
        assert!(builtin_names().contains(&"ls".to_owned()));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("é", "e"), 1);
    }
}
