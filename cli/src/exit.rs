//! Exit codes, per the CLI contract: 0 ok, 1 error, 2 usage error, 3 not logged in or refused
//! auth, 4 tool not installed or unknown, 5 server or provider unavailable, 130 interrupted.
//!
//! Errors travel as `anyhow::Error`; [`Exit::for_error`] finds the code in the error's chain:
//! a [`Failure`] says it directly, an [`IpcError`] maps by its code, a clap error is a usage
//! error, and a broken pipe (`ant list | head -1`) is success, as in ripgrep.

use std::{fmt, io, process::ExitCode};

use aniate_proto::ipc::{IpcError, IpcErrorCode};

/// How `ant` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    Ok,
    /// Any other error, including bad input refused locally.
    Error,
    /// The command line was wrong.
    Usage,
    /// Not logged in, or the server refused the token.
    Auth,
    /// The tool is not installed, or the server has no such tool.
    NoTool,
    /// The server or the model provider is unavailable (or rate limiting).
    Unavailable,
    /// Ctrl-C, or the request was cancelled.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Auth => 3,
            Exit::NoTool => 4,
            Exit::Unavailable => 5,
            Exit::Interrupted => 130,
        }
    }

    /// The exit for an error code from the daemon, per [`IpcErrorCode::exit_code`].
    pub fn from_ipc(code: IpcErrorCode) -> Exit {
        match code.exit_code() {
            0 => Exit::Ok,
            2 => Exit::Usage,
            3 => Exit::Auth,
            4 => Exit::NoTool,
            5 => Exit::Unavailable,
            130 => Exit::Interrupted,
            _ => Exit::Error,
        }
    }

    /// `--help` and `--version` exit 0; every other clap error is a usage error.
    pub fn for_clap_error(err: &clap::Error) -> Exit {
        if err.exit_code() == 0 { Exit::Ok } else { Exit::Usage }
    }

    /// The exit for an error: the first [`Failure`], [`IpcError`], clap error or broken pipe in
    /// its chain decides; anything else is [`Exit::Error`].
    pub fn for_error(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if let Some(failure) = cause.downcast_ref::<Failure>() {
                return failure.exit;
            }
            if let Some(ipc) = cause.downcast_ref::<IpcError>() {
                return Exit::from_ipc(ipc.code);
            }
            if let Some(clap) = cause.downcast_ref::<clap::Error>() {
                return Exit::for_clap_error(clap);
            }
            if let Some(io) = cause.downcast_ref::<io::Error>() {
                match io.kind() {
                    io::ErrorKind::BrokenPipe => return Exit::Ok,
                    io::ErrorKind::Interrupted => return Exit::Interrupted,
                    _ => {}
                }
            }
        }
        Exit::Error
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// An error that knows its exit code and, maybe, what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure { exit, message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The hint of the first [`Failure`] or [`IpcError`] in the error's chain.
pub fn hint_of(err: &anyhow::Error) -> Option<&str> {
    err.chain().find_map(|cause| {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.hint.as_deref();
        }
        cause.downcast_ref::<IpcError>().and_then(|ipc| ipc.hint.as_deref())
    })
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::args::Cli;

    #[test]
    fn codes_follow_the_contract() {
        let codes: Vec<u8> =
            [Exit::Ok, Exit::Error, Exit::Usage, Exit::Auth, Exit::NoTool, Exit::Unavailable, Exit::Interrupted]
                .into_iter()
                .map(Exit::code)
                .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 130]);
        assert_eq!(ExitCode::from(Exit::NoTool), ExitCode::from(4));
    }

    #[test]
    fn ipc_codes_map_to_exits() {
        for (code, exit) in [
            (IpcErrorCode::BadRequest, Exit::Error),
            (IpcErrorCode::NotLoggedIn, Exit::Auth),
            (IpcErrorCode::NotInstalled, Exit::NoTool),
            (IpcErrorCode::UnknownTool, Exit::NoTool),
            (IpcErrorCode::ServerUnavailable, Exit::Unavailable),
            (IpcErrorCode::Provider, Exit::Unavailable),
            (IpcErrorCode::RateLimited, Exit::Unavailable),
            (IpcErrorCode::Refused, Exit::Error),
            (IpcErrorCode::Cancelled, Exit::Interrupted),
            (IpcErrorCode::PromptProtected, Exit::Error),
            (IpcErrorCode::Storage, Exit::Error),
            (IpcErrorCode::Internal, Exit::Error),
            (IpcErrorCode::Unknown, Exit::Error),
        ] {
            assert_eq!(Exit::from_ipc(code), exit, "{code:?}");
            assert_eq!(Exit::from_ipc(code).code(), code.exit_code(), "{code:?}");
        }
    }

    #[test]
    fn clap_errors() {
        let help = Cli::try_parse_from(["ant", "--help"]).unwrap_err();
        assert_eq!(Exit::for_clap_error(&help), Exit::Ok);
        let version = Cli::try_parse_from(["ant", "--version"]).unwrap_err();
        assert_eq!(Exit::for_clap_error(&version), Exit::Ok);
        let bad = Cli::try_parse_from(["ant", "install"]).unwrap_err();
        assert_eq!(Exit::for_clap_error(&bad), Exit::Usage);
        let nothing = Cli::try_parse_from(["ant"]).unwrap_err();
        assert_eq!(Exit::for_clap_error(&nothing), Exit::Usage);
        let run_help = crate::args::parse_run_args(&["fix".to_owned(), "--help".to_owned()]).unwrap_err();
        assert_eq!(Exit::for_error(&anyhow::Error::new(run_help)), Exit::Ok);
        let custom = Cli::command().error(clap::error::ErrorKind::ValueValidation, "bad");
        assert_eq!(Exit::for_error(&anyhow::Error::new(custom)), Exit::Usage);
    }

    #[test]
    fn errors_find_their_exit_in_the_chain() {
        let ipc = IpcError::new(IpcErrorCode::NotInstalled, "fix is not installed").with_hint("run `ant install fix`");
        let err = anyhow::Error::new(ipc).context("running fix");
        assert_eq!(Exit::for_error(&err), Exit::NoTool);
        assert_eq!(hint_of(&err), Some("run `ant install fix`"));

        let err = anyhow::Error::new(Failure::new(Exit::Auth, "not logged in").with_hint("run `ant login`"));
        assert_eq!(Exit::for_error(&err), Exit::Auth);
        assert_eq!(err.to_string(), "not logged in");
        assert_eq!(hint_of(&err), Some("run `ant login`"));

        let pipe: Result<(), io::Error> = Err(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(Exit::for_error(&pipe.context("writing the table").unwrap_err()), Exit::Ok);
        assert_eq!(
            Exit::for_error(&anyhow::Error::new(io::Error::from(io::ErrorKind::Interrupted))),
            Exit::Interrupted
        );

        let plain = anyhow::anyhow!("something broke");
        assert_eq!(Exit::for_error(&plain), Exit::Error);
        assert_eq!(hint_of(&plain), None);
    }
}
