//! [`DaemonClient`]: how `ant` and `ant-lsp` talk to `aniated`, starting it when it is not
//! running and restarting it when it is older than the client.
//!
//! Start-up follows sccache's: connect; only if nothing listens, spawn the daemon (detached,
//! in its own process group so a Ctrl-C in the terminal does not reach it) and retry the
//! connection until it answers or the start timeout passes.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aniate_proto::ipc::{
    ClientFrame, ClientHello, DaemonFrame, DaemonHello, IpcError, IpcErrorCode, PROTOCOL, Reply, ReplyFrame, Request,
    RequestFrame,
};
use interprocess::local_socket::{
    GenericFilePath,
    tokio::{Stream, prelude::*},
};
use tokio::{
    io::{AsyncWriteExt, BufReader},
    sync::mpsc,
};

use crate::{
    frames::{SharedStream, read_frame, write_frame},
    home::Home,
    replies::Replies,
};

/// The exit status of an `aniated` that found another one running for its home.
pub const EXIT_ALREADY_RUNNING: i32 = 3;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `name/version`, sent in the hello.
    pub client: String,
    /// Start the daemon when it is not running.
    pub autostart: bool,
    /// The `aniated` to start; default: `ANIATE_DAEMON_EXE`, else next to the current
    /// executable, else `aniated` on `PATH`.
    pub daemon_exe: Option<PathBuf>,
    pub start_timeout: Duration,
    /// The server this client's requests go to (`ant --server`, `ANIATE_SERVER`), sent with
    /// each request; `None` leaves it to the daemon's configuration.
    pub server: Option<String>,
    /// The API token this client's requests use (`ANIATE_TOKEN`), sent with each request;
    /// `None` uses the daemon's stored login.
    pub token: Option<String>,
    /// How long a request may go without a reply before the daemon is taken to be stuck:
    /// `ANIATE_DAEMON_TIMEOUT_SECS`, default 120 (the server gives up on a silent model after
    /// 30 s, so a working daemon always says something sooner).
    pub reply_timeout: Duration,
}

impl ClientOptions {
    pub fn new(client: impl Into<String>) -> ClientOptions {
        ClientOptions {
            client: client.into(),
            autostart: true,
            daemon_exe: None,
            start_timeout: Duration::from_secs(10),
            server: std::env::var("ANIATE_SERVER").ok().filter(|url| !url.trim().is_empty()),
            token: crate::credentials::env_token(),
            reply_timeout: Duration::from_secs(
                std::env::var("ANIATE_DAEMON_TIMEOUT_SECS")
                    .ok()
                    .and_then(|secs| secs.trim().parse().ok())
                    .filter(|&secs| secs > 0)
                    .unwrap_or(120),
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("aniated is not running (no daemon at {0})")]
    NotRunning(String),
    #[error("could not start aniated: {0}")]
    Start(String),
    #[error("lost the connection to aniated: {0}")]
    Io(#[from] std::io::Error),
    #[error("aniated answered something unexpected: {0}")]
    Protocol(String),
    #[error("aniated{0} did not answer within 5 s; it may be stuck (`ant daemon logs` shows what it was doing)")]
    Stuck(String),
    /// The daemon is older than this client (its `aniated/VERSION`): it is to be restarted.
    #[error("aniated is older than this client ({0})")]
    Outdated(String),
    /// The daemon answered the hello with an error: a private `aniated --stdio` that could not
    /// start its engine (an unreadable CA certificate, say) says why this way.
    #[error("{}", .0.message)]
    Refused(IpcError),
}

impl ClientError {
    /// The same failure as an [`IpcError`], for uniform reporting.
    pub fn into_ipc(self) -> IpcError {
        if let ClientError::Refused(error) = self {
            return error;
        }
        IpcError::new(IpcErrorCode::Internal, self.to_string())
            .with_hint("`ant daemon logs` shows the daemon's log; `ANIATE_LOG=debug aniated` runs it in the foreground")
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Reply>>>>;

/// The sending half of a connection: the daemon's socket, or the socket pair of a private one.
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The id of the request sent with the hello ([`DaemonClient::connect_with_request`]).
const FIRST_ID: u64 = 1;

/// Replies a request may have waiting in this client before the reader waits for it to read.
const REPLY_CAPACITY: usize = 256;

/// A connection to the daemon; requests on it are multiplexed. Cheap to clone.
#[derive(Clone)]
pub struct DaemonClient {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// Stops the reply reader when the last clone goes, which closes the connection.
    _reader: Arc<AbortOnDrop>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    hello: DaemonHello,
    reply_timeout: Duration,
    server: Option<String>,
    token: Option<String>,
}

impl std::fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonClient").field("hello", &self.hello).field("server", &self.server).finish_non_exhaustive()
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Reply>>> {
    pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DaemonClient {
    /// Connects, starting (or restarting an older) daemon if needed.
    pub async fn connect(home: &Home, options: &ClientOptions) -> Result<DaemonClient, ClientError> {
        match DaemonClient::connect_once(home, options).await {
            Ok(client) if client.is_older_than_us() && options.autostart => {
                tracing::info!(daemon = %client.hello.daemon, "restarting an older daemon");
                client.shutdown_and_wait(home).await;
                DaemonClient::start_and_connect(home, options).await
            }
            Ok(client) => Ok(client),
            Err(ClientError::NotRunning(_)) if options.autostart => {
                DaemonClient::start_and_connect(home, options).await
            }
            Err(err) => Err(err),
        }
    }

    pub fn hello(&self) -> &DaemonHello {
        &self.hello
    }

    /// Connects to a running daemon, without starting one.
    pub async fn connect_once(home: &Home, options: &ClientOptions) -> Result<DaemonClient, ClientError> {
        DaemonClient::open(home, options, None).await.map(|(client, _)| client)
    }

    /// Connects as [`DaemonClient::connect`] does and sends `request` in the same write as the
    /// hello, so that its first reply comes one socket round trip sooner.
    ///
    /// The request is sent before the daemon's version is known: a daemon that turns out to be
    /// older may have begun it before this client closes that connection (which cancels it) and
    /// restarts the daemon, which then runs it. That suits requests that are safe to begin twice,
    /// such as tool runs; `ant` pipelines nothing else.
    pub async fn connect_with_request(
        home: &Home,
        options: &ClientOptions,
        request: Request,
    ) -> Result<(DaemonClient, Replies), ClientError> {
        let first = first_frame(options, request)?;
        let connected = match DaemonClient::open(home, options, Some(&first)).await {
            Ok((client, replies)) if client.is_older_than_us() && options.autostart => {
                tracing::info!(daemon = %client.hello.daemon, "restarting an older daemon");
                drop(replies);
                client.shutdown_and_wait(home).await;
                DaemonClient::start_and_open(home, options, Some(&first)).await
            }
            Err(ClientError::NotRunning(_)) if options.autostart => {
                DaemonClient::start_and_open(home, options, Some(&first)).await
            }
            other => other,
        };
        let (client, replies) = connected?;
        // `open` returns replies whenever it sent a first request.
        let replies = replies.ok_or_else(|| ClientError::Protocol("the first request was not sent".to_owned()))?;
        Ok((client, replies))
    }

    /// What [`DaemonClient::connect_with_request`] does once it has found the running daemon
    /// older than this client, for a client that found so itself ([`ClientError::Outdated`] from
    /// [`BlockingReplies::send`]): stops that daemon, starts a current one, and sends `request`
    /// to it with the hello.
    pub async fn restart_with_request(
        home: &Home,
        options: &ClientOptions,
        request: Request,
    ) -> Result<(DaemonClient, Replies), ClientError> {
        match DaemonClient::connect_once(home, options).await {
            // Restarted by another client in the meantime, or not ours to restart.
            Ok(client) if !client.is_older_than_us() || !options.autostart => {
                drop(client);
                return DaemonClient::connect_with_request(home, options, request).await;
            }
            Ok(client) => {
                tracing::info!(daemon = %client.hello.daemon, "restarting an older daemon");
                client.shutdown_and_wait(home).await;
            }
            Err(ClientError::NotRunning(_)) => {}
            Err(err) => return Err(err),
        }
        let first = first_frame(options, request)?;
        let (client, replies) = DaemonClient::start_and_open(home, options, Some(&first)).await?;
        let replies = replies.ok_or_else(|| ClientError::Protocol("the first request was not sent".to_owned()))?;
        Ok((client, replies))
    }

    /// Connects to a running daemon and exchanges hellos; `first`, a serialized request frame
    /// with id [`FIRST_ID`], goes out with the hello, and its replies come back with the client.
    async fn open(
        home: &Home,
        options: &ClientOptions,
        first: Option<&[u8]>,
    ) -> Result<(DaemonClient, Option<Replies>), ClientError> {
        let name = home
            .socket
            .as_path()
            .to_fs_name::<GenericFilePath>()
            .map_err(|err| ClientError::Protocol(format!("bad socket path: {err}")))?;
        let stream = match Stream::connect(name).await {
            Ok(stream) => stream,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                return Err(ClientError::NotRunning(home.socket.display().to_string()));
            }
            Err(err) => return Err(ClientError::Io(err)),
        };
        let stream = Arc::new(stream);
        let reader = BufReader::new(SharedStream(Arc::clone(&stream)));
        // A daemon that dies as we connect (killed, or stopping) resets the connection or
        // closes it before its hello: that is "not running", and the caller may start one.
        let gone = || ClientError::NotRunning(home.socket.display().to_string());
        let stuck = || stuck(home);
        DaemonClient::greet(reader, Box::new(SharedStream(stream)), options, first, gone, stuck, lost()).await
    }

    /// `ant --no-daemon`: starts `aniated --stdio`, a daemon private to this client that serves
    /// it over a socket pair and exits when the client goes away, and sends `request` with the
    /// hello. It shares nothing with the running daemon but the home's files: not its socket,
    /// lock, cache or connections. Its stderr is this process's. As with the daemon, the server
    /// and token go with each request, not into the daemon's configuration.
    #[cfg(unix)]
    pub async fn private(
        home: &Home,
        options: &ClientOptions,
        request: Option<Request>,
    ) -> Result<(DaemonClient, Option<Replies>), ClientError> {
        let first = request.map(|request| first_frame(options, request)).transpose()?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let exe = daemon_exe(options);
        let mut command = std::process::Command::new(&exe);
        command
            .arg("--stdio")
            .env("ANIATE_HOME", &home.root)
            .stdin(std::os::fd::OwnedFd::from(theirs))
            .stdout(std::process::Stdio::null());
        {
            // A Ctrl-C in the terminal is this client's to handle: it cancels the request.
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        tracing::debug!(exe = %exe.display(), "starting a private aniated");
        let mut child =
            command.spawn().map_err(|err| ClientError::Start(format!("cannot run {}: {err}", exe.display())))?;
        // Our copy of the child's end goes with `command`: once the child is gone, reads see the end.
        drop(command);
        let stream = ours.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(ours))?;
        let (recv, send) = stream.into_split();
        let pid = child.id();
        let gone = || ClientError::Start(format!("{} --stdio (pid {pid}) exited before it answered", exe.display()));
        let stuck = || ClientError::Start(format!("{} --stdio (pid {pid}) did not answer within 5 s", exe.display()));
        let lost = IpcError::new(
            IpcErrorCode::Internal,
            format!("the private aniated (pid {pid}) closed the connection mid-request (it may have crashed)"),
        )
        .with_hint("ANIATE_LOG=debug shows what it did");
        let greeted =
            DaemonClient::greet(BufReader::new(recv), Box::new(send), options, first.as_deref(), gone, stuck, lost)
                .await
                .and_then(|(client, replies)| match client.hello.protocol {
                    PROTOCOL => Ok((client, replies)),
                    other => Err(ClientError::Protocol(format!(
                        "{} speaks protocol {other}, this client {PROTOCOL}: install matching versions",
                        client.hello.daemon
                    ))),
                });
        if greeted.is_err() {
            // Not left behind, whatever state it is in; once it has answered, the end of the
            // connection ends it.
            let _ = child.kill();
            let _ = child.wait();
        }
        greeted
    }

    /// Exchanges hellos over a new connection; `first`, a serialized request frame with id
    /// [`FIRST_ID`], goes out with the hello, and its replies come back with the client. `gone`
    /// is the error for a connection that ends before the daemon's hello, `stuck` for one
    /// that stays silent, and `lost` what the requests still waiting get when it ends later.
    async fn greet<R: tokio::io::AsyncBufRead + Unpin + Send + 'static>(
        mut reader: R,
        mut send: Writer,
        options: &ClientOptions,
        first: Option<&[u8]>,
        gone: impl Fn() -> ClientError + Send + Sync,
        stuck: impl FnOnce() -> ClientError + Send,
        lost: IpcError,
    ) -> Result<(DaemonClient, Option<Replies>), ClientError> {
        let opening = opening(options, first)?;
        let pending: Pending = Arc::default();
        let first_replies = first.map(|_| {
            let (tx, rx) = Replies::channel(REPLY_CAPACITY);
            lock(&pending).insert(FIRST_ID, tx);
            rx
        });
        // A daemon that refuses (a private one whose engine did not open) says why and exits
        // without reading: then the write fails, and its answer is still there to be read.
        let sent = match send.write_all(&opening).await {
            Ok(()) => send.flush().await,
            Err(err) => Err(err),
        };
        let mut line = Vec::new();
        let first = tokio::time::timeout(Duration::from_secs(5), read_frame::<DaemonFrame, _>(&mut reader, &mut line));
        let daemon_hello = match first.await {
            Ok(Ok(Some(DaemonFrame::Hello(hello)))) => {
                sent.map_err(|_| gone())?;
                hello
            }
            Ok(Ok(Some(DaemonFrame::Reply(ReplyFrame { event: Reply::Error(error), .. })))) => {
                return Err(ClientError::Refused(error));
            }
            Ok(Ok(None) | Err(crate::frames::FrameError::Io(_))) => return Err(gone()),
            Ok(Ok(other)) => return Err(ClientError::Protocol(format!("expected a hello, got {other:?}"))),
            Ok(Err(err)) => return Err(ClientError::Protocol(err.to_string())),
            Err(_) => return Err(stuck()),
        };
        let reader_task = tokio::spawn(read_replies(reader, Arc::clone(&pending), lost));
        let client = DaemonClient {
            writer: Arc::new(tokio::sync::Mutex::new(send)),
            _reader: Arc::new(AbortOnDrop(reader_task.abort_handle())),
            pending,
            next_id: Arc::new(AtomicU64::new(FIRST_ID + u64::from(first_replies.is_some()))),
            hello: daemon_hello,
            reply_timeout: options.reply_timeout,
            server: options.server.clone(),
            token: options.token.clone(),
        };
        let replies = first_replies.map(|replies| client.watch(FIRST_ID, replies));
        Ok((client, replies))
    }

    /// Sends a request; its replies arrive on the returned [`Replies`]. Dropping them before
    /// the final reply cancels the request in the daemon.
    pub async fn request(&self, request: Request) -> Result<Replies, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, replies) = Replies::channel(REPLY_CAPACITY);
        lock(&self.pending).insert(id, tx);
        let frame = RequestFrame { id, request, server: self.server.clone(), token: self.token.clone() };
        if let Err(err) = self.send(ClientFrame::Request(frame)).await {
            lock(&self.pending).remove(&id);
            return Err(err);
        }
        Ok(self.watch(id, replies))
    }

    /// The replies of request `id`, given up on after the reply timeout, and cancelled in the
    /// daemon when dropped early.
    fn watch(&self, id: u64, replies: Replies) -> Replies {
        let client = self.clone();
        let replies = replies.with_silence_limit(self.reply_timeout, silent(&self.hello, self.reply_timeout));
        replies.on_cancel(move || {
            lock(&client.pending).remove(&id);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = client.send(ClientFrame::Request(RequestFrame::new(0, Request::Cancel { id }))).await;
                });
            }
        })
    }

    async fn send(&self, frame: ClientFrame) -> Result<(), ClientError> {
        let mut writer = self.writer.lock().await;
        write_frame(&mut *writer, &frame).await?;
        writer.flush().await?;
        Ok(())
    }

    fn is_older_than_us(&self) -> bool {
        is_older_than_us(&self.hello)
    }

    /// Asks the daemon to stop and waits (up to 5 s) until its socket is gone.
    pub async fn shutdown_and_wait(self, home: &Home) {
        if let Ok(replies) = self.request(Request::Shutdown).await {
            let _ = tokio::time::timeout(Duration::from_secs(2), replies.result::<serde_json::Value>()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // The socket goes first; the home's lock when the process ends, after it has synced the
        // cache. A daemon started before then would find the lock taken and give way to a
        // daemon that is about to be gone.
        while (home.socket.exists() || lock_is_held(home)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start_and_connect(home: &Home, options: &ClientOptions) -> Result<DaemonClient, ClientError> {
        DaemonClient::start_and_open(home, options, None).await.map(|(client, _)| client)
    }

    async fn start_and_open(
        home: &Home,
        options: &ClientOptions,
        first: Option<&[u8]>,
    ) -> Result<(DaemonClient, Option<Replies>), ClientError> {
        let mut child = spawn_daemon(home, options)?;
        let deadline = Instant::now() + options.start_timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            match DaemonClient::open(home, options, first).await {
                Ok(connected) => return Ok(connected),
                Err(ClientError::NotRunning(_)) => {}
                Err(err) => return Err(err),
            }
            if let Ok(Some(status)) = child.try_wait() {
                if status.code() != Some(EXIT_ALREADY_RUNNING) {
                    return Err(ClientError::Start(format!(
                        "aniated exited at start ({status}); see {}",
                        home.log_path().display()
                    )));
                }
                // Another daemon held the home: one that another client just started (keep
                // connecting to it), or one that was stopping; once that one is gone, start ours.
                if !lock_is_held(home) {
                    child = spawn_daemon(home, options)?;
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Start(format!(
                    "aniated did not answer within {} s; see {}",
                    options.start_timeout.as_secs(),
                    home.log_path().display()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }
}

/// Whether the daemon that sent `hello` is older than this client (or speaks another protocol).
fn is_older_than_us(hello: &DaemonHello) -> bool {
    let ours = parse_version(aniate_proto::VERSION);
    let theirs = hello.daemon.strip_prefix("aniated/").map(parse_version);
    hello.protocol != PROTOCOL || theirs.is_none_or(|theirs| theirs < ours)
}

/// The kernel took the connection, but the daemon never read it.
fn stuck(home: &Home) -> ClientError {
    let pid = std::fs::read_to_string(home.lock_path()).ok().map(|pid| pid.trim().to_owned());
    ClientError::Stuck(pid.filter(|pid| !pid.is_empty()).map(|pid| format!(" (pid {pid})")).unwrap_or_default())
}

/// What a request still waiting gets when the daemon's connection ends.
fn lost() -> IpcError {
    IpcError::new(IpcErrorCode::Internal, "aniated closed the connection mid-request (it may have crashed)")
        .with_hint("the next command starts a fresh daemon; `ant daemon logs` shows what happened")
}

/// What a request gets when the daemon that sent `hello` says nothing for `limit`.
fn silent(hello: &DaemonHello, limit: Duration) -> IpcError {
    let (pid, secs) = (hello.pid, limit.as_secs());
    IpcError::new(IpcErrorCode::Internal, format!("aniated (pid {pid}) sent nothing for {secs} s"))
        .with_hint(format!("it may be stuck: `kill {pid}` stops it, and the next command starts a fresh one"))
}

/// A connection's first write: the hello, and `first` (a request frame) after it.
fn opening(options: &ClientOptions, first: Option<&[u8]>) -> Result<Vec<u8>, ClientError> {
    let hello = ClientFrame::Hello(ClientHello { protocol: PROTOCOL, client: options.client.clone() });
    let mut opening = serde_json::to_vec(&hello).map_err(std::io::Error::other)?;
    opening.push(b'\n');
    opening.extend_from_slice(first.unwrap_or_default());
    Ok(opening)
}

/// `request` as the first request frame of a connection, sent with the hello.
fn first_frame(options: &ClientOptions, request: Request) -> Result<Vec<u8>, ClientError> {
    let frame = RequestFrame { id: FIRST_ID, request, server: options.server.clone(), token: options.token.clone() };
    let mut first = serde_json::to_vec(&ClientFrame::Request(frame)).map_err(std::io::Error::other)?;
    first.push(b'\n');
    Ok(first)
}

/// Connects to the Unix socket at `path` without waiting for the daemon to accept: when its
/// queue of connections is full (a daemon that stopped accepting), an error of kind
/// `WouldBlock` at once, as the async client's connect gives, rather than a wait with no end.
#[cfg(unix)]
fn connect_now(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&socket2::SockAddr::unix(path)?)?;
    socket.set_nonblocking(false)?;
    Ok(socket.into())
}

/// One request to a running daemon over blocking I/O, with no async runtime: what `ant` runs a
/// tool with, which would otherwise start a runtime for nothing but this one exchange. The
/// request goes in the same write as the hello, as [`DaemonClient::connect_with_request`] sends
/// it; its replies are read as they come, and dropping this closes the connection, which
/// cancels the request in the daemon.
#[cfg(unix)]
#[derive(Debug)]
pub struct BlockingReplies {
    reader: std::io::BufReader<Watched>,
    line: Vec<u8>,
    finished: bool,
    /// What a silence of the reply timeout becomes.
    silent: IpcError,
}

/// How often a blocking read looks at its cancel flag: a Ctrl-C that lands just before a read
/// begins (rather than during one, which ends it at once) is seen this late.
#[cfg(unix)]
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// The daemon's socket, read until data comes, `silence` passes (an error of kind `TimedOut`)
/// or `cancel` is set (kind `Interrupted`).
#[cfg(unix)]
#[derive(Debug)]
struct Watched {
    stream: std::os::unix::net::UnixStream,
    silence: Duration,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(unix)]
impl std::io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::ErrorKind;

        let deadline = Instant::now() + self.silence;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ErrorKind::Interrupted.into());
            }
            match self.stream.read(buf) {
                // A signal (with a read timeout set, Linux does not restart the read).
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(ErrorKind::TimedOut.into());
                    }
                }
                read => return read,
            }
        }
    }
}

#[cfg(unix)]
impl BlockingReplies {
    /// Connects to the running daemon and sends `request` with the hello. Setting `cancel`
    /// (from a signal handler, say) ends the wait for the hello or for a reply within
    /// [`CANCEL_CHECK`], and the replies with a `cancelled` error.
    ///
    /// [`ClientError::NotRunning`] when no daemon answers, and [`ClientError::Outdated`] when
    /// the one that answers is older than this client: [`DaemonClient::connect_with_request`]
    /// starts or restarts it (a request the older one may have begun is cancelled as this
    /// connection closes). Other errors are those that function reports.
    pub fn send(
        home: &Home,
        options: &ClientOptions,
        request: Request,
        cancel: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<BlockingReplies, ClientError> {
        use std::io::{ErrorKind, Write};

        let opening = opening(options, Some(&first_frame(options, request)?))?;
        let gone = || ClientError::NotRunning(home.socket.display().to_string());
        let mut stream = match connect_now(&home.socket) {
            Ok(stream) => stream,
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable
                ) =>
            {
                return Err(gone());
            }
            // The daemon's queue of connections is full: it has not accepted any for a while.
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Err(stuck(home)),
            Err(err) => return Err(ClientError::Io(err)),
        };
        stream.set_read_timeout(Some(CANCEL_CHECK))?;
        // A daemon that stopped reading (a request of up to 1 MiB fills the socket's buffer)
        // gets as long to read it as to say hello.
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let sent = stream.write_all(&opening);
        if let Err(err) = &sent
            && matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
        {
            return Err(stuck(home));
        }
        let watched = Watched { stream, silence: Duration::from_secs(5), cancel };
        let mut reader = std::io::BufReader::new(watched);
        let mut line = Vec::new();
        let hello = match crate::frames::read_frame_blocking::<DaemonFrame, _>(&mut reader, &mut line) {
            Ok(Some(DaemonFrame::Hello(hello))) => {
                sent.map_err(|_| gone())?;
                hello
            }
            Ok(Some(DaemonFrame::Reply(ReplyFrame { event: Reply::Error(error), .. }))) => {
                return Err(ClientError::Refused(error));
            }
            Err(crate::frames::FrameError::Io(err)) if err.kind() == ErrorKind::TimedOut => return Err(stuck(home)),
            Err(crate::frames::FrameError::Io(err)) if err.kind() == ErrorKind::Interrupted => {
                return Err(ClientError::Io(err));
            }
            Ok(None) | Err(crate::frames::FrameError::Io(_)) => return Err(gone()),
            Ok(Some(other)) => return Err(ClientError::Protocol(format!("expected a hello, got {other:?}"))),
            Err(err) => return Err(ClientError::Protocol(err.to_string())),
        };
        if is_older_than_us(&hello) {
            return Err(ClientError::Outdated(hello.daemon));
        }
        reader.get_mut().silence = options.reply_timeout;
        Ok(BlockingReplies { reader, line, finished: false, silent: silent(&hello, options.reply_timeout) })
    }

    /// Whether a whole reply is already here, so that the next call of `next` returns it
    /// without waiting (see [`Replies::has_ready`]).
    pub fn has_ready(&self) -> bool {
        !self.finished && self.reader.buffer().contains(&b'\n')
    }
}

#[cfg(unix)]
impl Iterator for BlockingReplies {
    type Item = Reply;

    /// The next reply, waiting for it; `None` after the final one. A connection that ends, goes
    /// silent for the reply timeout or is cancelled gives an error as its final reply.
    fn next(&mut self) -> Option<Reply> {
        while !self.finished {
            let reply = match crate::frames::read_frame_blocking::<DaemonFrame, _>(&mut self.reader, &mut self.line) {
                Ok(Some(DaemonFrame::Reply(frame))) if frame.id == FIRST_ID => frame.event,
                Ok(Some(_)) => continue,
                Err(crate::frames::FrameError::Io(err)) if err.kind() == std::io::ErrorKind::TimedOut => {
                    Reply::Error(self.silent.clone())
                }
                Err(crate::frames::FrameError::Io(err)) if err.kind() == std::io::ErrorKind::Interrupted => {
                    Reply::Error(IpcError::new(IpcErrorCode::Cancelled, "cancelled"))
                }
                Ok(None) | Err(_) => Reply::Error(lost()),
            };
            self.finished = reply.is_final();
            return Some(reply);
        }
        None
    }
}

/// Dispatches reply frames to their requests; when the daemon goes away, every pending
/// request gets `lost`.
async fn read_replies<R: tokio::io::AsyncBufRead + Unpin>(mut reader: R, pending: Pending, lost: IpcError) {
    let mut line = Vec::new();
    loop {
        match read_frame::<DaemonFrame, _>(&mut reader, &mut line).await {
            Ok(Some(DaemonFrame::Reply(frame))) => {
                let sender = {
                    let mut pending = lock(&pending);
                    if frame.event.is_final() { pending.remove(&frame.id) } else { pending.get(&frame.id).cloned() }
                };
                if let Some(sender) = sender {
                    let _ = sender.send(frame.event).await;
                }
            }
            Ok(Some(DaemonFrame::Hello(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let senders: Vec<_> = lock(&pending).drain().map(|(_, sender)| sender).collect();
    for sender in senders {
        let _ = sender.send(Reply::Error(lost.clone())).await;
    }
}

/// Whether a daemon holds the home's lock (it does from start until its process ends).
fn lock_is_held(home: &Home) -> bool {
    let file = match std::fs::File::open(home.lock_path()) {
        Ok(file) => file,
        Err(err) => return err.kind() != std::io::ErrorKind::NotFound,
    };
    // Taken here for an instant, and released when `file` is dropped.
    matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

fn daemon_exe(options: &ClientOptions) -> PathBuf {
    if let Some(exe) = &options.daemon_exe {
        return exe.clone();
    }
    if let Some(exe) = std::env::var_os("ANIATE_DAEMON_EXE").filter(|v| !v.is_empty()) {
        return PathBuf::from(exe);
    }
    let name = if cfg!(windows) { "aniated.exe" } else { "aniated" };
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(name))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn spawn_daemon(home: &Home, options: &ClientOptions) -> Result<std::process::Child, ClientError> {
    let exe = daemon_exe(options);
    let mut command = std::process::Command::new(&exe);
    command
        .env("ANIATE_HOME", &home.root)
        .env("ANIATE_SOCKET", &home.socket)
        // The daemon outlives this command: its token and `--server` go with each request, not
        // into the daemon for the commands after it (where `--server` would also decide which
        // server a token file from before origins is bound to).
        .env_remove("ANIATE_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    tracing::debug!(exe = %exe.display(), "starting aniated");
    command.spawn().map_err(|err| ClientError::Start(format!("cannot run {}: {err}", exe.display())))
}

fn parse_version(version: &str) -> (u64, u64, u64) {
    let mut parts = version.split(['.', '-', '+']).map(|part| part.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use aniate_proto::ipc::RunToolParams;

    use super::*;

    /// A private daemon that refuses writes its error and exits before reading the hello: the
    /// client's write then fails, and the refusal must still be what it reports (it was a race
    /// that a clean-clone CI run lost: "exited before it answered").
    #[cfg(unix)]
    #[tokio::test]
    async fn a_refusal_written_before_the_hello_is_read_is_reported() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let error = IpcError::new(IpcErrorCode::Internal, "cannot read CA certificate /nonexistent/ca.pem");
        let mut frame =
            serde_json::to_vec(&DaemonFrame::Reply(ReplyFrame { id: 0, event: Reply::Error(error) })).unwrap();
        frame.push(b'\n');
        theirs.write_all(&frame).await.unwrap();
        drop(theirs);
        let (recv, send) = ours.into_split();
        let lost = IpcError::new(IpcErrorCode::Internal, "lost");
        let gone = || ClientError::Start("exited before it answered".to_owned());
        let stuck = || ClientError::Start("did not answer".to_owned());
        let options = ClientOptions::new("test");
        let greeted =
            DaemonClient::greet(BufReader::new(recv), Box::new(send), &options, None, gone, stuck, lost).await;
        match greeted {
            Err(ClientError::Refused(error)) => {
                assert!(error.message.contains("cannot read CA certificate"), "{error:?}")
            }
            Err(other) => panic!("expected the refusal, got {other}"),
            Ok(_) => panic!("expected the refusal, got a client"),
        }
    }

    /// A daemon of one connection for [`BlockingReplies`]: reads the opening, answers `hello`
    /// (its version) and then `replies` (raw frames), and holds the connection until the client
    /// closes it.
    #[cfg(unix)]
    fn one_connection_daemon(home: &Home, daemon: &str, replies: &'static str) -> std::thread::JoinHandle<Vec<u8>> {
        use std::io::{BufRead, Read, Write};

        let listener = std::os::unix::net::UnixListener::bind(&home.socket).unwrap();
        let hello = format!("{{\"hello\":{{\"protocol\":{PROTOCOL},\"daemon\":\"{daemon}\",\"pid\":7}}}}\n");
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut opening = Vec::new();
            for _ in 0..2 {
                reader.read_until(b'\n', &mut opening).unwrap();
            }
            (&stream).write_all(hello.as_bytes()).unwrap();
            (&stream).write_all(replies.as_bytes()).unwrap();
            let _ = reader.read_to_end(&mut Vec::new());
            opening
        })
    }

    /// `ant`'s blocking client sends the run with the hello, reads its replies, and ends them
    /// with an error when the daemon goes silent for the reply timeout or the run is cancelled;
    /// it leaves a daemon that is missing or older to the async client, which starts one.
    #[cfg(unix)]
    #[test]
    fn blocking_replies_come_and_end() {
        use std::sync::atomic::AtomicBool;

        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let mut options = ClientOptions::new("test");
        options.reply_timeout = Duration::from_secs(1);
        let run = || Request::RunTool(RunToolParams { tool: "what".to_owned(), ..Default::default() });
        let no_cancel = || Arc::new(AtomicBool::new(false));
        let sent = BlockingReplies::send(&home, &options, run(), no_cancel());
        assert!(matches!(sent, Err(ClientError::NotRunning(_))), "{sent:?}");

        let meta = "{\"reply\":{\"id\":1,\"event\":\"delta\",\"data\":{\"text\":\"hi\"}}}\n";
        let daemon = one_connection_daemon(&home, &format!("aniated/{}", aniate_proto::VERSION), meta);
        let mut replies = BlockingReplies::send(&home, &options, run(), no_cancel()).unwrap();
        assert!(matches!(replies.next(), Some(Reply::Delta(delta)) if delta.text == "hi"));
        let silent_from = Instant::now();
        let Some(Reply::Error(error)) = replies.next() else { panic!("the silence is an error") };
        assert!(silent_from.elapsed() >= Duration::from_secs(1), "{:?}", silent_from.elapsed());
        assert_eq!(error.message, "aniated (pid 7) sent nothing for 1 s");
        assert!(replies.next().is_none());
        drop(replies);
        let opening = String::from_utf8(daemon.join().unwrap()).unwrap();
        assert!(opening.starts_with("{\"hello\":") && opening.contains("\"run_tool\""), "{opening}");
        std::fs::remove_file(&home.socket).unwrap();

        let cancel = no_cancel();
        let _daemon = one_connection_daemon(&home, &format!("aniated/{}", aniate_proto::VERSION), "");
        let mut replies = BlockingReplies::send(&home, &options, run(), Arc::clone(&cancel)).unwrap();
        let cancelled_at = Instant::now();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            cancel.store(true, Ordering::Relaxed);
        });
        let Some(Reply::Error(error)) = replies.next() else { panic!("a cancel ends the replies") };
        assert_eq!(error.code, IpcErrorCode::Cancelled);
        let waited = cancelled_at.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_millis(400), "{waited:?}");
        setter.join().unwrap();
        drop(replies);
        std::fs::remove_file(&home.socket).unwrap();

        let _older = one_connection_daemon(&home, "aniated/0.0.1", "");
        let sent = BlockingReplies::send(&home, &options, run(), no_cancel());
        assert!(matches!(&sent, Err(ClientError::Outdated(daemon)) if daemon == "aniated/0.0.1"), "{sent:?}");
    }

    /// A daemon that stopped accepting connections (its queue full) is reported stuck at once,
    /// not waited for: a blocking connect would wait with no end, and Ctrl-C could not stop it.
    #[cfg(unix)]
    #[test]
    fn a_daemon_that_accepts_nothing_is_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::write(home.lock_path(), "4242").unwrap();
        let listener = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        listener.bind(&socket2::SockAddr::unix(&home.socket).unwrap()).unwrap();
        // A queue of one connection, which the first client fills.
        listener.listen(0).unwrap();
        let _queued = std::os::unix::net::UnixStream::connect(&home.socket).unwrap();
        let run = Request::RunTool(RunToolParams { tool: "what".to_owned(), ..Default::default() });
        let started = Instant::now();
        let sent = BlockingReplies::send(&home, &ClientOptions::new("test"), run, Arc::default());
        assert!(matches!(&sent, Err(ClientError::Stuck(pid)) if pid == " (pid 4242)"), "{sent:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("0.1.0") < parse_version("0.1.1"));
        assert!(parse_version("0.9.0") < parse_version("0.10.0"));
        assert_eq!(parse_version("1.2.3-beta"), (1, 2, 3));
    }
}
