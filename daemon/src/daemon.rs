//! The daemon proper: one instance per `ANIATE_HOME` (a lock file), a local socket only its
//! user can use (mode 0600 and a peer-uid check), and a connection handler that multiplexes
//! requests and cancels them when their client goes away.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use aniate_proto::ipc::{
    ClientFrame, DaemonFrame, DaemonHello, IpcError, IpcErrorCode, PROTOCOL, Reply, ReplyFrame, Request,
};
use interprocess::local_socket::{
    GenericFilePath, ListenerOptions,
    tokio::{Listener, Stream, prelude::*},
};
use tokio::{
    io::{AsyncWriteExt, BufReader, BufWriter},
    sync::mpsc,
    task::AbortHandle,
};

use futures_util::future::Either;

use crate::{
    engine::{Engine, REPLY_CAPACITY, RequestContext},
    frames::{FrameError, SharedStream, read_frame, write_frame},
    home::Home,
    replies::Replies,
};

/// The daemon's claim on its home: held for its whole life.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another aniated is already running for {home} (pid {pid})")]
    AlreadyRunning { home: String, pid: String },
    #[error("cannot prepare {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io { path: path.display().to_string(), source }
}

/// How the daemon got its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketOrigin {
    /// It bound the socket itself, and removes it when it stops.
    Bound,
    /// systemd (or another supervisor) passed it in (`LISTEN_FDS`); the supervisor keeps it.
    Inherited,
}

/// Takes the home's lock and returns the listener: the one systemd passed in through socket
/// activation (`LISTEN_PID`/`LISTEN_FDS`, fd 3) if any, else a socket of its own.
pub fn bind_or_inherit(home: &Home) -> Result<(Listener, Lock, SocketOrigin), StartError> {
    #[cfg(unix)]
    {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() > 0 {
            let lock = take_lock(home)?;
            let inherited = fds.take_unix_listener(0).map_err(io_error(&home.socket))?;
            if let Some(std_listener) = inherited {
                std_listener.set_nonblocking(true).map_err(io_error(&home.socket))?;
                let fd = std::os::fd::OwnedFd::from(std_listener);
                let uds = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(fd)
                    .map_err(io_error(&home.socket))?;
                let mut listener = Listener::from(uds);
                // The socket file is systemd's: leave it when we stop.
                interprocess::local_socket::traits::tokio::Listener::do_not_reclaim_name_on_drop(&mut listener);
                tracing::info!("using the socket passed in by the service manager");
                return Ok((listener, lock, SocketOrigin::Inherited));
            }
        }
    }
    let (listener, lock) = bind(home)?;
    Ok((listener, lock, SocketOrigin::Bound))
}

fn take_lock(home: &Home) -> Result<Lock, StartError> {
    use std::io::Write;
    home.ensure()
        .map_err(|err| StartError::Io { path: home.root.display().to_string(), source: std::io::Error::other(err) })?;
    let lock_path = home.lock_path();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    crate::fsutil::make_private(&lock_path).map_err(io_error(&lock_path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&lock_path).unwrap_or_default().trim().to_owned();
            return Err(StartError::AlreadyRunning { home: home.root.display().to_string(), pid });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(io_error(&lock_path)(err)),
    }
    file.set_len(0).map_err(io_error(&lock_path))?;
    write!(file, "{}", std::process::id()).map_err(io_error(&lock_path))?;
    Ok(Lock { _file: file })
}

/// Takes the home's lock (one daemon per home), replaces a stale socket left by a crashed
/// daemon, and listens on the socket with mode 0600.
pub fn bind(home: &Home) -> Result<(Listener, Lock), StartError> {
    let lock = take_lock(home)?;
    // We hold the lock, so no live daemon owns a socket at this path: whatever is there is stale.
    match std::fs::remove_file(&home.socket) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&home.socket)(err)),
        _ => {}
    }
    if let Some(parent) = home.socket.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let name = home.socket.as_path().to_fs_name::<GenericFilePath>().map_err(io_error(&home.socket))?;
    let options = ListenerOptions::new().name(name);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    let listener = options.create_tokio().map_err(io_error(&home.socket))?;
    #[cfg(unix)]
    {
        // Belt and braces: the mode must hold whatever the platform did with it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(&home.socket))?;
    }
    Ok((listener, lock))
}

/// Accepts connections until `shutdown` resolves or a client sends `shutdown`; then stops
/// accepting, cancels what is still running, and removes the socket.
pub async fn run(engine: Engine, listener: Listener, origin: SocketOrigin, shutdown: impl Future<Output = ()>) {
    let owner_uid = socket_owner_uid(&engine.home().socket);
    let connections = tokio_util_task_set();
    let mut shutdown = std::pin::pin!(shutdown);
    let requested = engine.clone();
    let mut requested = std::pin::pin!(requested.shutdown_requested());
    tracing::info!(socket = %engine.home().socket.display(), "aniated {} listening", aniate_proto::VERSION);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut requested => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    if !peer_allowed(&stream, owner_uid) {
                        continue;
                    }
                    let engine = engine.clone();
                    let mut connections = connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    connections.retain(|connection| !connection.is_finished());
                    connections.push(tokio::spawn(serve_connection(stream, engine)).abort_handle());
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::info!("shutting down");
    // Aborting a connection drops its requests' replies, which cancels them up to the provider.
    for connection in connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
        connection.abort();
    }
    drop(listener);
    if origin == SocketOrigin::Bound {
        let _ = std::fs::remove_file(&engine.home().socket);
    }
    engine.flush();
    tracing::info!("stopped");
}

fn tokio_util_task_set() -> Arc<Mutex<Vec<AbortHandle>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[cfg(unix)]
fn socket_owner_uid(socket: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(socket).ok().map(|meta| meta.uid())
}

#[cfg(not(unix))]
fn socket_owner_uid(_socket: &std::path::Path) -> Option<u32> {
    None
}

/// Only the user who owns the socket may talk to the daemon.
fn peer_allowed(stream: &Stream, owner_uid: Option<u32>) -> bool {
    #[cfg(unix)]
    {
        let peer = stream.peer_creds().ok().and_then(|creds| creds.euid());
        match (peer, owner_uid) {
            (Some(peer), Some(owner)) if u64::from(peer) == u64::from(owner) => true,
            (peer, owner) => {
                tracing::warn!(?peer, ?owner, "refused a connection from another user");
                false
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (stream, owner_uid);
        true
    }
}

/// `aniated --stdio`: serves the one client at the other end of the Unix socket that is this
/// process's stdin, then returns when that client goes away. `ant --no-daemon` starts it so,
/// over a socket pair of its own: a daemon private to one command, with no lock, no socket file
/// and no peer check (only the process that made the pair holds its other end).
#[cfg(unix)]
pub async fn serve_stdio(engine: Engine) -> Result<(), String> {
    let (recv, send) = stdin_socket()?.into_split();
    serve(BufReader::new(recv), send, engine.clone()).await;
    engine.flush();
    Ok(())
}

/// `aniated --stdio` that cannot serve (its engine did not open): says why to its client, as
/// an error where the hello would be, so that `ant` reports the cause as its own error.
#[cfg(unix)]
pub async fn refuse_stdio(error: IpcError) -> Result<(), String> {
    let mut socket = stdin_socket()?;
    let frame = DaemonFrame::Reply(ReplyFrame { id: 0, event: Reply::Error(error) });
    write_frame(&mut socket, &frame).await.map_err(|err| format!("cannot answer on stdin: {err}"))?;
    socket.flush().await.map_err(|err| format!("cannot answer on stdin: {err}"))
}

/// The Unix socket on this process's stdin.
#[cfg(unix)]
fn stdin_socket() -> Result<tokio::net::UnixStream, String> {
    use std::os::{fd::AsFd, unix::fs::FileTypeExt};
    let not_a_socket = "`aniated --stdio` serves the Unix socket on its stdin, which `ant --no-daemon` \
        gives it; this stdin is not a socket";
    let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(|err| format!("cannot use stdin: {err}"))?;
    let file = std::fs::File::from(fd);
    let is_socket = file.metadata().is_ok_and(|meta| meta.file_type().is_socket());
    if !is_socket {
        return Err(not_a_socket.to_owned());
    }
    let socket = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(file));
    socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(socket))
        .map_err(|err| format!("cannot use stdin: {err}"))
}

/// Serves one client of the socket.
async fn serve_connection(stream: Stream, engine: Engine) {
    let stream = Arc::new(stream);
    serve(BufReader::new(SharedStream(Arc::clone(&stream))), SharedStream(stream), engine).await;
}

/// Serves one client: the hello, then requests, each in a task of its own whose replies are
/// written back as they come. When the client goes away, its requests are cancelled.
async fn serve<R, W>(mut reader: R, send: W, engine: Engine)
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<DaemonFrame>(256);
    let writer = tokio::spawn(async move {
        let mut writer = BufWriter::new(send);
        while let Some(frame) = out_rx.recv().await {
            if write_frame(&mut writer, &frame).await.is_err() {
                return;
            }
            // Batch what is already queued, then flush once.
            while let Ok(frame) = out_rx.try_recv() {
                if write_frame(&mut writer, &frame).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    let in_flight: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    let mut line = Vec::new();
    let mut greeted = false;
    loop {
        let frame = match read_frame::<ClientFrame, _>(&mut reader, &mut line).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::Io(_)) => break,
            Err(err) => {
                tracing::warn!(cause = %err, "closing a connection that sent a bad frame");
                let error = IpcError::new(IpcErrorCode::BadRequest, err.to_string());
                let _ = out_tx.send(DaemonFrame::Reply(ReplyFrame { id: 0, event: Reply::Error(error) })).await;
                break;
            }
        };
        match frame {
            ClientFrame::Hello(hello) => {
                tracing::debug!(client = %hello.client, protocol = hello.protocol, "client connected");
                greeted = true;
                let reply = DaemonHello {
                    protocol: PROTOCOL,
                    daemon: format!("aniated/{}", aniate_proto::VERSION),
                    pid: std::process::id(),
                };
                if out_tx.send(DaemonFrame::Hello(reply)).await.is_err() {
                    break;
                }
            }
            ClientFrame::Request(_) if !greeted => {
                let error = IpcError::new(IpcErrorCode::BadRequest, "send a hello frame first");
                let _ = out_tx.send(DaemonFrame::Reply(ReplyFrame { id: 0, event: Reply::Error(error) })).await;
                break;
            }
            ClientFrame::Request(frame) => {
                let id = frame.id;
                if let Request::Cancel { id: target } = frame.request {
                    let cancelled = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&target);
                    if let Some(task) = &cancelled {
                        task.abort();
                        let error = IpcError::new(IpcErrorCode::Cancelled, "cancelled");
                        let _ = out_tx
                            .send(DaemonFrame::Reply(ReplyFrame { id: target, event: Reply::Error(error) }))
                            .await;
                    }
                    let result = Reply::Result(serde_json::Value::Bool(cancelled.is_some()));
                    let _ = out_tx.send(DaemonFrame::Reply(ReplyFrame { id, event: result })).await;
                    continue;
                }
                tracing::debug!(id, method = frame.request.method(), "request");
                let context = RequestContext { server: frame.server, token: frame.token };
                let out = out_tx.clone();
                let registry = Arc::clone(&in_flight);
                let engine = engine.clone();
                let mut registry_guard = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // The request's work and the relay of its replies share one task: a reply reaches
                // the writer without waking another task first.
                let task = tokio::spawn(async move {
                    let (tx, mut replies) = Replies::channel(REPLY_CAPACITY);
                    let work = engine.respond(frame.request, context, tx);
                    let relay = async {
                        while let Some(reply) = replies.next().await {
                            let last = reply.is_final();
                            if out.send(DaemonFrame::Reply(ReplyFrame { id, event: reply })).await.is_err() || last {
                                break;
                            }
                        }
                    };
                    match futures_util::future::select(std::pin::pin!(work), std::pin::pin!(relay)).await {
                        // The work is done: relay what it left in the channel.
                        Either::Left(((), relay)) => relay.await,
                        // The final reply is out (or the client gone): nothing more to do.
                        Either::Right(((), _work)) => {}
                    }
                    registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                });
                registry_guard.insert(id, task.abort_handle());
            }
        }
    }
    // The client is gone: cancel what it left running.
    for (_, task) in in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain() {
        task.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}
