//! `--json` output: one JSON document for one-shot commands, NDJSON (one compact object per
//! line) for a streamed tool run, so `ant fix app.py --json | jq -c 'select(.event == "done")'`
//! works.
//!
//! The documents are the IPC types themselves (`aniate_proto::ipc`), so their shape is the one
//! the protocol documents.

use std::io::{self, Write};

use aniate_proto::ipc::{IpcError, Reply};
use serde::Serialize;

/// Writes `value` as one pretty JSON document and a newline.
pub fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Writes `value` as one compact JSON line (NDJSON).
pub fn write_json_line<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Writes one event of a tool run as an NDJSON line: `{"event":"delta","data":{"text":"…"}}`.
/// Flushes, so that a consumer sees each event as it comes.
pub fn write_reply_line(out: &mut dyn Write, reply: &Reply) -> io::Result<()> {
    write_json_line(out, reply)?;
    out.flush()
}

/// The `--json` form of an error: `{"error":{"code":"not_installed","message":"…","hint":"…"}}`,
/// the same envelope the HTTP API uses.
pub fn error_document(error: &IpcError) -> serde_json::Value {
    serde_json::json!({ "error": error })
}

#[cfg(test)]
mod tests {
    use aniate_proto::{event::Delta, ipc::IpcErrorCode};

    use super::*;

    fn written(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn documents_are_pretty_and_lines_are_compact() {
        let value = serde_json::json!({"a": [1, 2]});
        assert_eq!(written(|out| write_json(out, &value)), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n");
        assert_eq!(written(|out| write_json_line(out, &value)), "{\"a\":[1,2]}\n");
    }

    #[test]
    fn replies_are_ndjson_events() {
        let reply = Reply::Delta(Delta { text: "line\n".into() });
        assert_eq!(
            written(|out| write_reply_line(out, &reply)),
            "{\"event\":\"delta\",\"data\":{\"text\":\"line\\n\"}}\n"
        );
    }

    #[test]
    fn errors_use_the_api_envelope() {
        let error =
            IpcError::new(IpcErrorCode::NotInstalled, "fix is not installed").with_hint("run `ant install fix`");
        assert_eq!(
            error_document(&error),
            serde_json::json!({"error": {"code": "not_installed", "message": "fix is not installed", "hint": "run `ant install fix`"}})
        );
    }
}
