//! What each command does: the glue between the parsed command line, the daemon (or a private
//! one with `--no-daemon`), and the renderers.
//!
//! Data goes to stdout, messages and progress to stderr. Errors are returned as
//! [`Failure`]s carrying the exit code of the CLI contract.

use std::{
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use aniate_proto::{
    api::{Assistant, AssistantCreate, AssistantPatch, FileMeta, UsageReport, Visibility},
    event::Done,
    ipc::{
        InstallResult, IpcError, LoginParams, MarketplaceResult, Reply, Request, RunToolParams, StatusResult,
        ToolsListResult, UninstallResult, UpdateResult, WhoamiResult,
    },
    tool::{OutputKind, ToolMeta, ToolResult},
};
use aniated::{
    client::{ClientError, ClientOptions, DaemonClient},
    config::Config,
    home::Home,
    replies::Replies,
};
use anyhow::Context;

use crate::{
    args::{
        BrewCommand, Cli, Command, ConfigCommand, DaemonCommand, FilesCommand, GlobalArgs, LoginArgs, RunArgs,
        RunFormat, SignupArgs,
    },
    exit::{Exit, Failure},
    files,
    render::{
        self,
        command::{Guard, RunDecision},
        style,
    },
};

/// Where a command's requests go: the daemon, or with `--no-daemon` a private one
/// (`aniated --stdio`). Either way they carry this command's server and token.
pub(crate) struct Backend(DaemonClient);

impl Backend {
    pub(crate) async fn request(&self, request: Request) -> anyhow::Result<Replies> {
        self.0.request(request).await.map_err(|err| anyhow::Error::new(err.into_ipc()))
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, request: Request) -> anyhow::Result<T> {
        Ok(self.request(request).await?.result::<T>().await?)
    }
}

/// Output settings shared by every command.
struct Out {
    json: bool,
    colored: bool,
    colored_err: bool,
    quiet: bool,
    width: usize,
}

impl Out {
    fn new(global: &GlobalArgs) -> Out {
        let no_color = std::env::var_os("NO_COLOR");
        Out {
            json: global.json,
            colored: style::use_color(global.color, std::io::stdout().is_terminal(), no_color.as_deref()),
            colored_err: style::use_color(global.color, std::io::stderr().is_terminal(), no_color.as_deref()),
            quiet: global.quiet,
            width: render::table::terminal_width(std::env::var_os("COLUMNS").as_deref()),
        }
    }

    fn print(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    fn json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        render::json::write_json(&mut std::io::stdout().lock(), value)?;
        Ok(())
    }

    /// A message for people, on stderr; silent with `--quiet` or `--json`.
    fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprint!("{text}");
        }
    }
}

/// Runs the command; the exit code is `Ok` or comes from the returned error.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    match command {
        command @ Command::Run(_) => match start(Cli { global, command }) {
            Started::Done(result) => result,
            Started::Async(rest) => Box::pin(finish(rest)).await,
        },
        Command::Completions { shell } => {
            crate::args::write_completions(shell, &mut std::io::stdout().lock());
            Ok(())
        }
        Command::Config(config) => config_command(&global, config),
        Command::Manpages { dir } => {
            let written = crate::manpages::write_all(&dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
            println!("wrote {written} man pages to {}", dir.display());
            Ok(())
        }
        Command::Daemon(daemon) => daemon_command(&global, daemon).await,
        Command::Version => version_command(&global).await,
        other => {
            let out = Out::new(&global);
            let backend = connect(&global).await?;
            account_or_registry(&out, &backend, other).await
        }
    }
}

fn home() -> anyhow::Result<Home> {
    Home::from_env().map_err(|err| anyhow::Error::new(Failure::new(Exit::Error, err.to_string())))
}

/// The daemon (started if needed), or a private one with `--no-daemon`. Every request
/// carries this command's server (`--server`, `ANIATE_SERVER`, else `config.toml`) and its
/// `ANIATE_TOKEN`, so a daemon started for another server or account serves this command
/// as asked.
async fn connect(global: &GlobalArgs) -> anyhow::Result<Backend> {
    let (home, options) = client_options(global)?;
    if global.no_daemon {
        return Ok(private(&home, &options, None).await?.0);
    }
    match DaemonClient::connect(&home, &options).await {
        Ok(client) => Ok(Backend(client)),
        Err(err) => Err(daemon_failure(err)),
    }
}

/// As [`connect`] with `home` and `options`, and sends `request`: to a daemon in the same write
/// as the hello ([`DaemonClient::connect_with_request`]), which saves a round trip on the socket.
/// A daemon already found `outdated` is restarted first.
async fn connect_with_request(
    global: &GlobalArgs,
    home: &Home,
    options: &ClientOptions,
    request: Request,
    outdated: bool,
) -> anyhow::Result<(Backend, Replies)> {
    if global.no_daemon {
        let (backend, replies) = private(home, options, Some(request)).await?;
        let replies = replies.ok_or_else(|| anyhow::anyhow!("the private aniated was not sent the request"))?;
        return Ok((backend, replies));
    }
    let connected = match outdated {
        true => DaemonClient::restart_with_request(home, options, request).await,
        false => DaemonClient::connect_with_request(home, options, request).await,
    };
    match connected {
        Ok((client, replies)) => Ok((Backend(client), replies)),
        Err(err) => Err(daemon_failure(err)),
    }
}

/// The home, and the options every connection of this command uses.
fn client_options(global: &GlobalArgs) -> anyhow::Result<(Home, ClientOptions)> {
    let home = home()?;
    let (config, _) = Config::load(&home);
    let server = global.server_url().map(str::to_owned).unwrap_or_else(|| config.server_url());
    // Plain HTTP off this machine is refused by the daemon unless allowed; allowed, it is
    // warned about at every command.
    if let Ok(Some(warning)) = aniated::config::check_transport(&server, config.allow_insecure_http()) {
        let colored =
            style::use_color(global.color, std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
        eprint!("{}", render::message::render_warning(&warning, None, colored));
    }
    let mut options = ClientOptions::new(format!("ant/{}", aniate_proto::VERSION));
    options.server = Some(server);
    Ok((home, options))
}

/// `--no-daemon`: a daemon of this command's own (`aniated --stdio`, see
/// [`DaemonClient::private`]), with its own connection to the server, and `request` sent with
/// the hello. `ant` itself links no HTTP client and no TLS: that is the daemon's.
#[cfg(unix)]
async fn private(
    home: &Home,
    options: &ClientOptions,
    request: Option<Request>,
) -> anyhow::Result<(Backend, Option<Replies>)> {
    match DaemonClient::private(home, options, request).await {
        Ok((client, replies)) => Ok((Backend(client), replies)),
        // It started, and says why it cannot serve (its own hint included).
        Err(ClientError::Refused(error)) => Err(ipc_failure(error)),
        Err(err) => Err(anyhow::Error::new(Failure::new(Exit::Error, err.to_string()).with_hint(
            "`--no-daemon` runs `aniated --stdio` (ANIATE_DAEMON_EXE, else the aniated next to ant, \
             else on PATH); ANIATE_LOG=debug shows what it does",
        ))),
    }
}

#[cfg(not(unix))]
async fn private(
    _home: &Home,
    _options: &ClientOptions,
    _request: Option<Request>,
) -> anyhow::Result<(Backend, Option<Replies>)> {
    Err(anyhow::Error::new(Failure::new(Exit::Error, "--no-daemon is not supported on this system yet")))
}

fn daemon_failure(err: ClientError) -> anyhow::Error {
    // `--no-daemon` runs the same aniated: no way out when that is what cannot start.
    let hint = match err {
        ClientError::Start(_) => "`ant daemon logs` shows the daemon's log",
        _ => "`ant daemon logs` shows the daemon's log; `ant --no-daemon …` works without it",
    };
    anyhow::Error::new(Failure::new(Exit::Error, err.into_ipc().message).with_hint(hint))
}

pub(crate) fn ipc_failure(error: IpcError) -> anyhow::Error {
    let mut failure = Failure::new(Exit::from_ipc(error.code), error.message);
    if let Some(hint) = error.hint {
        failure = failure.with_hint(hint);
    }
    anyhow::Error::new(failure)
}

async fn account_or_registry(out: &Out, backend: &Backend, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => {
            let params = login_params(&args)?;
            let who: WhoamiResult = backend.call(Request::Login(params)).await.map_err(reipc)?;
            if out.json {
                return out.json(&who);
            }
            out.print(&format!("Logged in as {} on {}\n", who.me.email, who.server))
        }
        Command::Signup(args) => {
            let (email, password) = signup_credentials(&args)?;
            let who: WhoamiResult = backend.call(Request::Signup { email, password }).await.map_err(reipc)?;
            if out.json {
                return out.json(&who);
            }
            out.print(&format!("Welcome! Signed up and logged in as {} on {}\n", who.me.email, who.server))
        }
        Command::Logout { all: true } => {
            let _: serde_json::Value = backend.call(Request::LogoutAll).await.map_err(reipc)?;
            if out.json {
                return out.json(&serde_json::json!({"logged_out": true, "all": true}));
            }
            out.print("Logged out everywhere: every token of this account is revoked\n")
        }
        Command::Logout { all: false } => {
            let _: serde_json::Value = backend.call(Request::Logout).await.map_err(reipc)?;
            if out.json {
                return out.json(&serde_json::json!({"logged_out": true}));
            }
            out.print("Logged out\n")
        }
        Command::Whoami => {
            let who: WhoamiResult = backend.call(Request::Whoami).await.map_err(reipc)?;
            if out.json {
                return out.json(&who);
            }
            out.print(&render::table::render_whoami(&who))
        }
        Command::Marketplace => {
            let market: MarketplaceResult = backend.call(Request::Marketplace).await.map_err(reipc)?;
            if out.json {
                return out.json(&market);
            }
            out.print(&render::table::render_marketplace(&market.tools, out.width, out.colored))
        }
        Command::Install { slugs } => {
            let installed: InstallResult = backend.call(Request::Install { slugs }).await.map_err(reipc)?;
            if out.json {
                return out.json(&installed);
            }
            out.print(&render::table::render_install(&installed))
        }
        Command::Uninstall { slug } => {
            let removed: UninstallResult = backend.call(Request::Uninstall { slug }).await.map_err(reipc)?;
            if out.json {
                return out.json(&removed);
            }
            out.print(&render::table::render_uninstall(&removed))
        }
        Command::List => {
            let list: ToolsListResult = backend.call(Request::ToolsList).await.map_err(reipc)?;
            if out.json {
                return out.json(&list);
            }
            out.print(&render::table::render_installed(&list.tools, out.width, out.colored))
        }
        Command::Update => {
            let update: UpdateResult = backend.call(Request::Update).await.map_err(reipc)?;
            if out.json {
                return out.json(&update);
            }
            out.print(&render::table::render_update(&update))
        }
        Command::Brew(command) => brew_command(out, backend, command).await,
        Command::Chat(args) => crate::chat::run(out.json, out.colored, backend, args).await,
        Command::Files(command) => files_command(out, backend, command).await,
        Command::Usage => {
            let usage: UsageReport = backend.call(Request::Usage).await.map_err(reipc)?;
            if out.json {
                return out.json(&usage);
            }
            out.print(&render::account::render_usage(&usage, out.width, out.colored))
        }
        Command::Run(_)
        | Command::Completions { .. }
        | Command::Config(_)
        | Command::Daemon(_)
        | Command::Version
        | Command::Manpages { .. } => {
            unreachable!("handled before connecting")
        }
    }
}

async fn brew_command(out: &Out, backend: &Backend, command: BrewCommand) -> anyhow::Result<()> {
    match command {
        BrewCommand::List => {
            let brews: Vec<Assistant> = backend.call(Request::BrewList).await.map_err(reipc)?;
            if out.json {
                return out.json(&brews);
            }
            out.print(&render::account::render_brews(&brews, out.width, out.colored))
        }
        BrewCommand::Show { brew } => {
            let brew: Assistant = backend.call(Request::BrewShow { id: brew }).await.map_err(reipc)?;
            if out.json {
                return out.json(&brew);
            }
            out.print(&render::account::render_brew(&brew, out.colored))
        }
        BrewCommand::Create { name, slug, description, prompt_file, model, global } => {
            let system_prompt = match prompt_file {
                Some(path) => read_prompt_file(&path)?,
                None => edit_in_editor(PROMPT_TEMPLATE)?,
            };
            let create = AssistantCreate {
                name,
                slug,
                description,
                system_prompt,
                model,
                visibility: global.then_some(Visibility::Global),
                fallbacks: None,
            };
            let brew: Assistant = backend.call(Request::BrewCreate(create)).await.map_err(reipc)?;
            if out.json {
                return out.json(&brew);
            }
            out.print(&format!("created brew {}; chat with it: ant chat --brew {}\n", brew.slug, brew.slug))
        }
        BrewCommand::Edit { brew, name, description, prompt_file, model } => {
            let system_prompt = match prompt_file {
                Some(path) => Some(read_prompt_file(&path)?),
                None if name.is_none() && description.is_none() && model.is_none() => {
                    let current: Assistant =
                        backend.call(Request::BrewShow { id: brew.clone() }).await.map_err(reipc)?;
                    let prompt = current.system_prompt.ok_or_else(|| {
                        anyhow::Error::new(Failure::new(Exit::Error, "only its owner can edit this brew"))
                    })?;
                    let edited = edit_in_editor(&prompt)?;
                    if edited == prompt {
                        out.note("No changes\n");
                        return Ok(());
                    }
                    Some(edited)
                }
                None => None,
            };
            let patch = AssistantPatch { name, description, system_prompt, model, visibility: None, fallbacks: None };
            let updated: Assistant = backend.call(Request::BrewEdit { id: brew, patch }).await.map_err(reipc)?;
            if out.json {
                return out.json(&updated);
            }
            out.print(&format!("updated brew {}\n", updated.slug))
        }
        BrewCommand::Delete { brew } => {
            let _: serde_json::Value = backend.call(Request::BrewDelete { id: brew.clone() }).await.map_err(reipc)?;
            if out.json {
                return out.json(&serde_json::json!({"deleted": brew}));
            }
            out.print(&format!("deleted brew {brew}\n"))
        }
    }
}

const PROMPT_TEMPLATE: &str = "You are a helpful assistant for software developers.\n";

fn read_prompt_file(path: &str) -> anyhow::Result<String> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("cannot read the prompt from stdin")?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|err| anyhow::Error::new(Failure::new(Exit::Error, format!("cannot read {path}: {err}"))))?
    };
    if text.trim().is_empty() {
        return Err(anyhow::Error::new(Failure::new(Exit::Error, "the prompt is empty")));
    }
    Ok(text)
}

/// `$VISUAL`, else `$EDITOR`, else `vi`; a variable set but empty counts as unset.
fn chosen_editor(var: impl Fn(&str) -> Option<String>) -> String {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(var)
        .find(|editor| !editor.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

/// Opens `initial` in `$VISUAL` or `$EDITOR` (default `vi`) and returns what was saved.
fn edit_in_editor(initial: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(usage("no terminal for an editor; pass the prompt with --prompt-file FILE (or - for stdin)"));
    }
    let editor = chosen_editor(|name| std::env::var(name).ok());
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let path = dir.path().join("brew-prompt.md");
    std::fs::write(&path, initial)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot start the editor `{editor}`"))?;
    if !status.success() {
        return Err(anyhow::Error::new(Failure::new(
            Exit::Error,
            format!("the editor exited with {status}; nothing saved"),
        )));
    }
    let text = std::fs::read_to_string(&path)?;
    if text.trim().is_empty() {
        return Err(anyhow::Error::new(Failure::new(Exit::Error, "the prompt is empty; nothing saved")));
    }
    Ok(text)
}

async fn files_command(out: &Out, backend: &Backend, command: FilesCommand) -> anyhow::Result<()> {
    match command {
        FilesCommand::Push { file, name } => {
            let path = Path::new(&file);
            let meta = std::fs::metadata(path)
                .map_err(|err| anyhow::Error::new(Failure::new(Exit::Error, format!("cannot read {file}: {err}"))))?;
            if meta.is_dir() {
                return Err(anyhow::Error::new(Failure::new(Exit::Error, format!("{file} is a directory"))));
            }
            let absolute = std::fs::canonicalize(path)?;
            let request = Request::FilesPush { path: absolute.display().to_string(), name };
            let stored: FileMeta = backend.call(request).await.map_err(reipc)?;
            if out.json {
                return out.json(&stored);
            }
            out.print(&format!(
                "stored {} as file {} ({}); run a tool on it with its id\n",
                stored.name,
                stored.id,
                files::format_size(stored.size as usize)
            ))
        }
        FilesCommand::Ls => {
            let stored: Vec<FileMeta> = backend.call(Request::FilesList).await.map_err(reipc)?;
            if out.json {
                return out.json(&stored);
            }
            // The quota line is a courtesy: a server that cannot say leaves it out.
            let usage: Option<UsageReport> = backend.call(Request::Usage).await.ok();
            let mut text = render::account::render_files(&stored, out.width, out.colored);
            if let Some(usage) = usage {
                text.push_str(&render::account::render_storage(&usage));
            }
            out.print(&text)
        }
        FilesCommand::Rm { id } => {
            let _: serde_json::Value = backend.call(Request::FilesRm { id }).await.map_err(reipc)?;
            if out.json {
                return out.json(&serde_json::json!({"deleted": id}));
            }
            out.print(&format!("deleted file {id}\n"))
        }
    }
}

/// Turns an [`IpcError`] inside an `anyhow::Error` into a [`Failure`] with its exit code.
pub(crate) fn reipc(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<IpcError>() {
        Ok(error) => ipc_failure(error),
        Err(err) => err,
    }
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure::new(Exit::Usage, message))
}

fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).with_context(|| format!("cannot read the {what} from stdin"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    read_stdin_line("answer")
}

fn login_params(args: &LoginArgs) -> anyhow::Result<LoginParams> {
    if let Some(token) = &args.token {
        return Ok(LoginParams::Token { token: token.clone() });
    }
    if let Ok(token) = std::env::var("ANIATE_TOKEN")
        && !token.trim().is_empty()
        && args.email.is_none()
    {
        return Ok(LoginParams::Token { token });
    }
    let interactive = std::io::stdin().is_terminal();
    let email = match &args.email {
        Some(email) => email.clone(),
        None if interactive => prompt("Email: ")?,
        None => return Err(usage("`ant login` needs a terminal; use --token T, or --email E --password-stdin")),
    };
    let password = if args.password_stdin {
        read_stdin_line("password")?
    } else if interactive {
        rpassword::prompt_password("Password: ").context("cannot read the password")?
    } else {
        return Err(usage("no terminal to ask for the password; use --password-stdin"));
    };
    Ok(LoginParams::Password { email, password })
}

fn signup_credentials(args: &SignupArgs) -> anyhow::Result<(String, String)> {
    let email = args.email.clone();
    if args.password_stdin {
        return Ok((email, read_stdin_line("password")?));
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage("no terminal to ask for the password; use --password-stdin"));
    }
    let password =
        rpassword::prompt_password("Choose a password (8+ characters): ").context("cannot read the password")?;
    let again = rpassword::prompt_password("Repeat it: ").context("cannot read the password")?;
    if password != again {
        return Err(anyhow::Error::new(Failure::new(Exit::Error, "the passwords differ")));
    }
    Ok((email, password))
}

fn config_command(global: &GlobalArgs, command: ConfigCommand) -> anyhow::Result<()> {
    let out = Out::new(global);
    let home = home()?;
    let (mut config, warning) = Config::load(&home);
    if let Some(warning) = warning {
        eprint!("{}", render::message::render_warning(&warning, None, out.colored_err));
    }
    let bad = |message: String| anyhow::Error::new(Failure::new(Exit::Error, message));
    match command {
        ConfigCommand::Get { key } => {
            let value = config.get(key.as_str()).map_err(bad)?;
            if out.json {
                return out.json(&serde_json::json!({ key.as_str(): value }));
            }
            match value {
                Some(value) => out.print(&format!("{value}\n")),
                None if key.as_str() == "server" => out.print(&format!("{}\n", config.server_url())),
                None => Err(anyhow::Error::new(Failure::new(Exit::Error, format!("{} is not set", key.as_str())))),
            }
        }
        ConfigCommand::Set { key, value } => {
            config.set(key.as_str(), &value).map_err(bad)?;
            home.ensure().map_err(|err| bad(err.to_string()))?;
            config.save(&home)?;
            out.note(&format!("{} = {}\n", key.as_str(), value));
            Ok(())
        }
        ConfigCommand::List => {
            let pairs: Vec<(String, Option<String>)> =
                aniated::config::KEYS.iter().map(|key| (key.to_string(), config.get(key).ok().flatten())).collect();
            if out.json {
                let map: serde_json::Map<String, serde_json::Value> =
                    pairs.into_iter().map(|(k, v)| (k, v.map_or(serde_json::Value::Null, Into::into))).collect();
                return out.json(&map);
            }
            let mut text = String::new();
            for (key, value) in pairs {
                text.push_str(&format!("{key} = {}\n", value.unwrap_or_else(|| "(default)".to_owned())));
            }
            out.print(&text)
        }
    }
}

async fn daemon_command(global: &GlobalArgs, command: DaemonCommand) -> anyhow::Result<()> {
    let out = Out::new(global);
    let home = home()?;
    let options = ClientOptions::new(format!("ant/{}", aniate_proto::VERSION));
    let running = || async {
        match DaemonClient::connect_once(&home, &options).await {
            Ok(client) => Ok(Some(client)),
            Err(ClientError::NotRunning(_)) => Ok(None),
            Err(err) => Err(daemon_failure(err)),
        }
    };
    match command {
        DaemonCommand::Start => {
            let client = DaemonClient::connect(&home, &options).await.map_err(daemon_failure)?;
            if out.json {
                return out.json(client.hello());
            }
            out.print(&format!("aniated is running (pid {}, {})\n", client.hello().pid, client.hello().daemon))
        }
        DaemonCommand::Stop => match running().await? {
            Some(client) => {
                let pid = client.hello().pid;
                client.shutdown_and_wait(&home).await;
                out.print(&format!("stopped aniated (pid {pid})\n"))
            }
            None => out.print("aniated is not running\n"),
        },
        DaemonCommand::Restart => {
            if let Some(client) = running().await? {
                client.shutdown_and_wait(&home).await;
            }
            let client = DaemonClient::connect(&home, &options).await.map_err(daemon_failure)?;
            out.print(&format!("aniated is running (pid {})\n", client.hello().pid))
        }
        DaemonCommand::Status => match running().await? {
            Some(client) => {
                let status: StatusResult = Backend(client).call(Request::Status).await.map_err(reipc)?;
                if out.json {
                    return out.json(&status);
                }
                out.print(&render::table::render_status(&status, out.colored))
            }
            None => {
                if out.json {
                    out.json(&serde_json::json!({"running": false}))?;
                } else {
                    out.print("aniated is not running (it starts with the next command that needs it)\n")?;
                }
                Err(anyhow::Error::new(Failure::new(Exit::Error, "")))
            }
        },
        DaemonCommand::Logs { follow, lines } => print_logs(&home.log_path(), lines, follow).await,
        DaemonCommand::InstallService { no_start } => {
            if !no_start {
                // The service will own the socket; a daemon started on demand must make way.
                if let Some(client) = running().await? {
                    client.shutdown_and_wait(&home).await;
                }
            }
            let steps = crate::service::install(&home, no_start)?;
            out.print(&steps)
        }
        DaemonCommand::UninstallService { no_start } => out.print(&crate::service::uninstall(no_start)?),
    }
}

/// `ant version`: this client's version, and the daemon's and the server's when a daemon runs
/// (none is started for it; the server's is what the daemon last heard from it).
async fn version_command(global: &GlobalArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let home = home()?;
    let options = ClientOptions::new(format!("ant/{}", aniate_proto::VERSION));
    let status = if home.socket.exists() {
        let ask = async {
            let client = DaemonClient::connect_once(&home, &options).await.ok()?;
            Backend(client).call::<StatusResult>(Request::Status).await.ok()
        };
        tokio::time::timeout(Duration::from_secs(2), ask).await.ok().flatten()
    } else {
        None
    };
    if out.json {
        let daemon = status.as_ref().map(
            |status| serde_json::json!({"version": status.version, "protocol": status.protocol, "pid": status.pid}),
        );
        let server =
            status.as_ref().map(|status| serde_json::json!({"url": status.server, "version": status.server_version}));
        return out.json(&serde_json::json!({"ant": aniate_proto::VERSION, "aniated": daemon, "server": server}));
    }
    let mut text = format!("ant {}\n", aniate_proto::VERSION);
    match status {
        Some(status) => {
            text.push_str(&format!("aniated {} (pid {})\n", status.version, status.pid));
            match status.server_version {
                Some(version) => text.push_str(&format!("ant-server {version} at {}\n", status.server)),
                None => text.push_str(&format!("ant-server at {} (not reached yet)\n", status.server)),
            }
        }
        None => text.push_str("aniated is not running (it starts with the next command that needs it)\n"),
    }
    out.print(&text)
}

async fn print_logs(path: &Path, lines: usize, follow: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut stdout = std::io::stdout().lock();
    for line in &all[start..] {
        writeln!(stdout, "{line}")?;
    }
    stdout.flush()?;
    drop(stdout);
    if !follow {
        if all.is_empty() {
            eprintln!("no daemon log yet at {}", path.display());
        }
        return Ok(());
    }
    let mut offset = text.len() as u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Ok(bytes) = std::fs::read(path) else { continue };
        if (bytes.len() as u64) < offset {
            offset = 0; // rotated
        }
        let new = &bytes[offset as usize..];
        if !new.is_empty() {
            std::io::stdout().write_all(new)?;
            std::io::stdout().flush()?;
            offset = bytes.len() as u64;
        }
    }
}

/// Reads an installed tool's metadata from `tools/<slug>.json`: no daemon, no network.
fn installed_tool(home: &Home, slug: &str) -> anyhow::Result<ToolMeta> {
    let path = home.tool_path(slug);
    let not_installed = || {
        let mut failure = Failure::new(Exit::NoTool, format!("tool `{slug}` is not installed"));
        failure = match crate::args::suggest_builtin(slug) {
            Some(suggestion) => failure.with_hint(format!("did you mean `ant {suggestion}`?")),
            None => failure.with_hint(format!("run `ant install {slug}` (`ant marketplace` lists the tools)")),
        };
        anyhow::Error::new(failure)
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(not_installed()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&bytes).map_err(|err| {
        anyhow::Error::new(
            Failure::new(Exit::NoTool, format!("{} is corrupt: {err}", path.display()))
                .with_hint(format!("reinstall it: `ant install {slug}`")),
        )
    })
}

/// A tool run read and checked, ready to be sent: nothing here waits for the daemon.
pub struct PreparedRun {
    global: GlobalArgs,
    args: RunArgs,
    out: Out,
    tool: ToolMeta,
    params: RunToolParams,
    /// The input's name for messages (`stdin` for `-`).
    display_name: String,
    home: Home,
    options: ClientOptions,
    /// The running daemon was found older than `ant`: it is to be restarted.
    daemon_outdated: bool,
    /// Set by a Ctrl-C once the blocking path has begun (it stays registered when the run goes
    /// on through the async client, which looks at it too).
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Reads a tool run's metadata and input, and checks them, before anything is sent.
fn prepare_run(global: GlobalArgs, args: RunArgs) -> anyhow::Result<PreparedRun> {
    let out = Out::new(&global);
    let (home, options) = client_options(&global)?;
    let tool = installed_tool(&home, &args.slug)?;
    let input = match &args.file {
        Some(path) => Some(
            files::read_input(path, files::MAX_INPUT_BYTES, &mut std::io::stdin().lock())
                .map_err(|err| anyhow::Error::new(Failure::new(Exit::Error, err.to_string())))?,
        ),
        None => None,
    };
    if tool.requires_file && input.is_none() {
        return Err(usage(format!("`{}` needs a file: ant {} FILE (or - for stdin)", tool.slug, tool.slug)));
    }
    if input.is_none() && args.instructions.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return Err(usage(format!("`{}` needs a file or -i \"your question\"", tool.slug)));
    }
    let display_name =
        input.as_ref().map(|input| input.display_name().to_owned()).unwrap_or_else(|| "stdin".to_owned());
    let params = RunToolParams {
        tool: tool.slug.clone(),
        filename: input.as_ref().and_then(|input| input.filename.clone()),
        language: args.language.clone().or_else(|| input.as_ref().and_then(|input| input.language.clone())),
        content: input.map(|input| input.content).unwrap_or_default(),
        instructions: args.instructions.clone(),
        fresh: args.fresh,
    };
    let cancel = std::sync::Arc::default();
    Ok(PreparedRun { global, args, out, tool, params, display_name, home, options, daemon_outdated: false, cancel })
}

/// What [`start`] did: the command run through, or what is left for [`finish`].
pub enum Started {
    Done(anyhow::Result<()>),
    Async(Rest),
}

/// What is left to do once [`start`] has done what it can without an async runtime.
pub enum Rest {
    /// Any command but a tool run.
    Command(Cli),
    /// A tool run that needs the async client: to start or restart the daemon, or with
    /// `--no-daemon`.
    Run(Box<PreparedRun>),
}

/// Starts the command, and runs it through if it needs no async runtime: a tool run through a
/// daemon that is running and current goes over blocking I/O
/// ([`aniated::client::BlockingReplies`]), since a runtime built for that one exchange would be
/// most of `ant`'s own cost on the way to the daemon. Anything else is left to [`finish`].
pub fn start(cli: Cli) -> Started {
    let Cli { global, command } = cli;
    let words = match command {
        Command::Run(words) => words,
        command => return Started::Async(Rest::Command(Cli { global, command })),
    };
    let run = match crate::args::parse_run_args(&words) {
        Ok(run) => run,
        Err(err) => {
            // `ant fix --help` is not an error.
            let exit = Exit::for_clap_error(&err);
            let _ = err.print();
            return Started::Done(Err(anyhow::Error::new(Failure::new(exit, ""))));
        }
    };
    let global = global.merged_with(&run.global);
    let prepared = match prepare_run(global, run) {
        Ok(prepared) => prepared,
        Err(err) => return Started::Done(Err(err)),
    };
    #[cfg(unix)]
    if !prepared.global.no_daemon {
        return run_tool_blocking(prepared);
    }
    Started::Async(Rest::Run(Box::new(prepared)))
}

/// Runs what [`start`] left.
pub async fn finish(rest: Rest) -> anyhow::Result<()> {
    match rest {
        Rest::Command(cli) => run(cli).await,
        Rest::Run(prepared) => run_tool(*prepared).await,
    }
}

/// A tool run through the running daemon over blocking I/O; the run back, to go through the
/// async client, when the daemon is not running or is older than `ant`.
#[cfg(unix)]
fn run_tool_blocking(mut run: PreparedRun) -> Started {
    use std::sync::{Arc, atomic::Ordering};

    use aniated::client::BlockingReplies;

    let cancel = Arc::clone(&run.cancel);
    // From here on a Ctrl-C ends the wait for the daemon and is reported as one. The handler
    // stays for the rest of the process: a run handed to the async client looks at the flag too.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&cancel));
    let request = Request::RunTool(run.params.clone());
    let mut replies = match BlockingReplies::send(&run.home, &run.options, request, Arc::clone(&cancel)) {
        Ok(replies) => replies,
        Err(_) if cancel.load(Ordering::Relaxed) => return Started::Done(Err(interrupted(false))),
        Err(err @ (ClientError::NotRunning(_) | ClientError::Outdated(_))) => {
            run.daemon_outdated = matches!(err, ClientError::Outdated(_));
            return Started::Async(Rest::Run(Box::new(run)));
        }
        Err(err) => return Started::Done(Err(daemon_failure(err))),
    };
    let mut view = RunView::new(&run);
    let result = loop {
        if !replies.has_ready()
            && let Err(err) = view.write_out()
        {
            break Err(err.into());
        }
        let reply = replies.next();
        if cancel.load(Ordering::Relaxed) {
            // Closing the connection cancels the run in the daemon.
            drop(replies);
            break view.interrupted();
        }
        let Some(reply) = reply else { break view.ended() };
        if let Some(result) = view.on_reply(reply) {
            break result;
        }
    };
    Started::Done(result)
}

/// A tool run through the async client: the daemon (started or restarted if need be), or a
/// private one with `--no-daemon`.
async fn run_tool(run: PreparedRun) -> anyhow::Result<()> {
    let mut interrupt = crate::interrupt::Interrupt::new();
    // A Ctrl-C caught by the blocking path's handler before this one was listening.
    let cancelled = || run.cancel.load(std::sync::atomic::Ordering::Relaxed);
    if cancelled() {
        return Err(interrupted(false));
    }
    let request = Request::RunTool(run.params.clone());
    // Kept until the run ends: it is the connection the replies come over.
    let (_backend, mut replies) =
        connect_with_request(&run.global, &run.home, &run.options, request, run.daemon_outdated)
            .await
            .map_err(reipc)?;
    if cancelled() {
        return Err(interrupted(false));
    }
    let mut view = RunView::new(&run);
    loop {
        if !replies.has_ready() {
            view.write_out()?;
        }
        let reply = tokio::select! {
            reply = replies.next() => reply,
            () = interrupt.recv() => {
                drop(replies);
                return view.interrupted();
            }
        };
        let Some(reply) = reply else { return view.ended() };
        if let Some(result) = view.on_reply(reply) {
            return result;
        }
    }
}

/// The error of a run ended by Ctrl-C.
fn interrupted(progress: bool) -> anyhow::Error {
    if progress {
        eprintln!();
    }
    anyhow::Error::new(Failure::new(Exit::Interrupted, "interrupted"))
}

/// What a tool run shows as its replies come, whichever client they come through.
struct RunView<'a> {
    run: &'a PreparedRun,
    /// A text answer, printed as it streams.
    live_text: bool,
    /// A progress line on stderr while an answer that is printed at the end comes in.
    progress: bool,
    /// The answer so far, when it is printed at the end.
    text: String,
    received: usize,
    /// What is to be printed on stdout, written out once no further reply is ready: one write
    /// for the replies that came in together, and none held back while the next is awaited.
    printed: Vec<u8>,
    /// Whether the text printed so far ends a line (a live answer gets a newline at the end).
    line_ended: bool,
}

impl<'a> RunView<'a> {
    fn new(run: &'a PreparedRun) -> RunView<'a> {
        let out = &run.out;
        let live_text = run.tool.output == OutputKind::Text && !out.json;
        RunView {
            run,
            live_text,
            progress: !out.json && !out.quiet && !live_text && std::io::stderr().is_terminal(),
            text: String::new(),
            received: 0,
            printed: Vec::new(),
            line_ended: true,
        }
    }

    /// Writes what is waiting to be printed, in one write.
    fn write_out(&mut self) -> std::io::Result<()> {
        if self.printed.is_empty() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&self.printed)?;
        stdout.flush()?;
        self.printed.clear();
        Ok(())
    }

    /// Takes the next reply; the run's result once it is over.
    fn on_reply(&mut self, reply: Reply) -> Option<anyhow::Result<()>> {
        match self.take(reply) {
            Ok(None) => None,
            Ok(Some(result)) => Some(result),
            Err(err) => Some(Err(err.into())),
        }
    }

    fn take(&mut self, reply: Reply) -> std::io::Result<Option<anyhow::Result<()>>> {
        let (run, out) = (self.run, &self.run.out);
        if out.json {
            render::json::write_json_line(&mut self.printed, &reply)?;
            if !matches!(reply, Reply::Done(_) | Reply::Error(_)) {
                return Ok(None);
            }
            self.write_out()?;
            return Ok(Some(match reply {
                Reply::Error(error) => Err(anyhow::Error::new(Failure::new(Exit::from_ipc(error.code), ""))),
                // A refused result is a failed run: nothing to apply, and scripts must notice.
                Reply::Done(done) if done.done.result_rejected.is_some() => {
                    Err(anyhow::Error::new(Failure::new(Exit::Error, "")))
                }
                _ => Ok(()),
            }));
        }
        match reply {
            Reply::Meta(_) | Reply::Result(_) => Ok(None),
            Reply::Delta(delta) => {
                self.received += delta.text.len();
                if self.live_text {
                    let clean = render::style::sanitize_text(&delta.text);
                    if !clean.is_empty() {
                        self.line_ended = clean.ends_with('\n');
                    }
                    self.printed.extend_from_slice(clean.as_bytes());
                } else {
                    self.text.push_str(&delta.text);
                    if self.progress {
                        eprint!("\r{} {} … {}", run.tool.slug, run.display_name, files::format_size(self.received));
                    }
                }
                Ok(None)
            }
            Reply::Done(done) => {
                if self.live_text && self.received > 0 && !self.line_ended {
                    self.printed.push(b'\n');
                }
                self.write_out()?;
                if self.progress {
                    eprint!("\r\x1b[2K");
                }
                if done.cached {
                    out.note("(cached answer; --fresh asks again)\n");
                }
                let original = &run.params.content;
                Ok(Some(finish_run(out, &run.args, &run.tool, &run.display_name, original, &self.text, done.done)))
            }
            Reply::Error(error) => {
                self.write_out()?;
                if self.progress {
                    eprint!("\r\x1b[2K");
                }
                Ok(Some(Err(ipc_failure(error))))
            }
        }
    }

    /// The run's end at a Ctrl-C.
    fn interrupted(&mut self) -> anyhow::Result<()> {
        self.write_out()?;
        Err(interrupted(self.progress))
    }

    /// The run's end when the replies stopped before its result.
    fn ended(&mut self) -> anyhow::Result<()> {
        self.write_out()?;
        Err(anyhow::Error::new(Failure::new(Exit::Error, "the answer ended without a result")))
    }
}

fn finish_run(
    out: &Out,
    args: &RunArgs,
    tool: &ToolMeta,
    display_name: &str,
    original: &str,
    text: &str,
    done: Done,
) -> anyhow::Result<()> {
    match (tool.output, done.result) {
        (OutputKind::Text, _) => Ok(()),
        (OutputKind::Code, result) => {
            let Some(ToolResult::Code(corrected)) = result else {
                // Not a file (or cut off, or empty): the answer is shown for what it is, text,
                // and the file is not touched, --apply or not.
                let answer = render::style::sanitize_text(text);
                out.print(&answer)?;
                if !answer.is_empty() && !answer.ends_with('\n') {
                    out.print("\n")?;
                }
                let why =
                    done.result_rejected.map_or("the answer has no corrected file", |rejected| rejected.describe());
                let code = done.result_rejected.map_or(String::new(), |rejected| format!(" ({rejected})"));
                return Err(anyhow::Error::new(
                    Failure::new(Exit::Error, format!("{display_name} was left unchanged: {why}{code}")).with_hint(
                        format!(
                            "the answer is above, as text; ask again with `ant {} {} --fresh`",
                            tool.slug,
                            args.file.as_deref().unwrap_or("-")
                        ),
                    ),
                ));
            };
            let diff = render::diff::unified_diff(display_name, original, &corrected, out.colored);
            if diff.is_empty() {
                out.note("No changes\n");
                return Ok(());
            }
            out.print(&diff)?;
            out.note(&format!("{}\n", render::diff::change_summary(original, &corrected)));
            match (&args.apply, &args.file) {
                (true, Some(path)) if path != "-" => {
                    let path = Path::new(path);
                    if !files::is_unchanged(path, original)? {
                        return Err(anyhow::Error::new(Failure::new(
                            Exit::Error,
                            format!("{} changed while the tool ran; not applying", path.display()),
                        )));
                    }
                    let backup = files::write_atomic_with_backup(path, &corrected)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    out.note(&format!("Applied to {} (backup: {})\n", path.display(), backup.display()));
                }
                (true, _) => out.note("--apply needs a file, not stdin; the fix is above\n"),
                (false, Some(path)) if path != "-" => {
                    out.note(&format!("Apply it with: ant {} {path} --apply\n", tool.slug));
                }
                (false, _) => out.note(&format!(
                    "The input came from stdin, so there is no file to apply it to: run `ant {} FILE --apply` on the file itself\n",
                    tool.slug
                )),
            }
            Ok(())
        }
        (OutputKind::Findings, result) => {
            let findings = match result {
                Some(ToolResult::Findings(findings)) => findings,
                _ => Vec::new(),
            };
            let adjusted = done.findings_adjusted.map(|adjusted| render::findings::adjusted_summary(&adjusted));
            if args.format == RunFormat::Sarif {
                out.print(&render::sarif::render_sarif(&tool.slug, Some(&tool.description), display_name, &findings))?;
                out.note(&adjusted.unwrap_or_default());
                return Ok(());
            }
            out.print(&render::findings::render_findings(display_name, &findings, out.colored))?;
            out.note(&format!("{}\n", render::findings::findings_summary(&findings)));
            out.note(&adjusted.unwrap_or_default());
            Ok(())
        }
        (OutputKind::Command, result) => {
            let Some(ToolResult::Command(suggestion)) = result else {
                return Err(anyhow::Error::new(Failure::new(Exit::Error, "the model did not propose a command")));
            };
            out.print(&render::command::render_command(&suggestion, out.colored))?;
            if suggestion.command.trim().is_empty() {
                return Ok(());
            }
            let guard = Guard::of(&suggestion);
            let run = match render::command::run_decision(
                guard,
                args.yes,
                args.yes_dangerous,
                std::io::stdin().is_terminal(),
            ) {
                RunDecision::Run => true,
                RunDecision::Ask => render::command::confirm(
                    render::command::RUN_PROMPT,
                    &mut std::io::stdin().lock(),
                    &mut std::io::stderr(),
                )?,
                RunDecision::AskFirstWord => render::command::confirm_word(
                    render::command::first_word(&suggestion.command),
                    &mut std::io::stdin().lock(),
                    &mut std::io::stderr(),
                )?,
                RunDecision::PrintOnly => {
                    let flag = if guard == Guard::Normal { "--yes" } else { "--yes-dangerous" };
                    out.note(&format!("Not running it: stdin is not a terminal (pass {flag} to run it)\n"));
                    false
                }
                RunDecision::Refuse => {
                    let why = match guard {
                        Guard::Hidden => "it has hidden characters, so what you see is not what would run",
                        _ => "it is marked dangerous, and --yes does not run dangerous commands",
                    };
                    return Err(anyhow::Error::new(
                        Failure::new(Exit::Error, format!("not running the command: {why}"))
                            .with_hint("read it above; --yes-dangerous runs it anyway"),
                    ));
                }
            };
            if !run {
                return Ok(());
            }
            let shell = std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".to_owned());
            let status = std::process::Command::new(shell)
                .arg("-c")
                .arg(&suggestion.command)
                .status()
                .context("cannot start the shell")?;
            if status.success() {
                Ok(())
            } else {
                Err(anyhow::Error::new(Failure::new(Exit::Error, format!("the command exited with {status}"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_visual_counts_as_unset() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
        };
        assert_eq!(chosen_editor(env(&[("VISUAL", ""), ("EDITOR", "nano")])), "nano");
        assert_eq!(chosen_editor(env(&[("VISUAL", "code -w"), ("EDITOR", "nano")])), "code -w");
        assert_eq!(chosen_editor(env(&[("VISUAL", " ")])), "vi");
        assert_eq!(chosen_editor(env(&[])), "vi");
    }
}
