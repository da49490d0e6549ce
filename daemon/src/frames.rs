//! NDJSON framing for the local socket: one JSON object per line, at most
//! [`MAX_FRAME_BYTES`](aniate_proto::ipc::MAX_FRAME_BYTES).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use aniate_proto::ipc::MAX_FRAME_BYTES;
use interprocess::local_socket::tokio::Stream;
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than {MAX_FRAME_BYTES} bytes")]
    TooLarge,
    #[error("malformed frame: {0}")]
    Malformed(serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A local socket stream shared by a reading and a writing task (`&Stream` reads and writes).
/// The connection closes when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SharedStream(pub Arc<Stream>);

impl tokio::io::AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SharedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &*self.0).poll_shutdown(cx)
    }
}

/// Reads one frame; `None` at a clean end of stream. Never buffers more than the limit.
pub async fn read_frame<T: DeserializeOwned, R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    line.clear();
    loop {
        let (used, scanned) = scan(reader.fill_buf().await?, line)?;
        reader.consume(used);
        if let Some(frame) = frame_of(scanned, line) {
            return frame;
        }
    }
}

/// [`read_frame`] with blocking reads, for a client without an async runtime.
pub fn read_frame_blocking<T: DeserializeOwned, R: std::io::BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    line.clear();
    loop {
        let (used, scanned) = scan(reader.fill_buf()?, line)?;
        reader.consume(used);
        if let Some(frame) = frame_of(scanned, line) {
            return frame;
        }
    }
}

/// Where [`scan`] left a frame.
enum Scanned {
    /// Its newline is still to come.
    Partial,
    /// At its newline.
    Line,
    /// At the end of the stream.
    End,
}

/// Moves what `available` (a read's bytes, empty at the end of the stream) holds of the current
/// frame into `line`: how many bytes it took, and where that leaves the frame.
fn scan(available: &[u8], line: &mut Vec<u8>) -> Result<(usize, Scanned), FrameError> {
    let (take, used, scanned) = match available.iter().position(|&b| b == b'\n') {
        Some(end) => (end, end + 1, Scanned::Line),
        None if available.is_empty() => (0, 0, Scanned::End),
        None => (available.len(), available.len(), Scanned::Partial),
    };
    if line.len() + take > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge);
    }
    line.extend_from_slice(&available[..take]);
    Ok((used, scanned))
}

/// What the reader returns once [`scan`] has left `line` so: `None` to read on (a frame not yet
/// complete, or a blank line, a keep-alive from a hand-written client, now skipped).
fn frame_of<T: DeserializeOwned>(scanned: Scanned, line: &mut Vec<u8>) -> Option<Result<Option<T>, FrameError>> {
    match scanned {
        Scanned::Partial => None,
        Scanned::End if line.is_empty() => Some(Ok(None)),
        // A last frame without its newline still counts.
        Scanned::Line | Scanned::End if !line.iter().all(u8::is_ascii_whitespace) => {
            Some(serde_json::from_slice(line).map(Some).map_err(FrameError::Malformed))
        }
        Scanned::Line | Scanned::End => {
            line.clear();
            None
        }
    }
}

/// Writes one frame and its newline (not flushed: callers batch).
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(writer: &mut W, frame: &T) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &serde_json::json!({"a": 1})).await.unwrap();
        wire.extend_from_slice(b"\n  \n");
        write_frame(&mut wire, &serde_json::json!({"b": "x\ny"})).await.unwrap();
        wire.extend_from_slice(b"{\"c\":3}");
        let mut reader = tokio::io::BufReader::with_capacity(7, wire.as_slice());
        let mut line = Vec::new();
        let mut frames = Vec::new();
        while let Some(frame) = read_frame::<serde_json::Value, _>(&mut reader, &mut line).await.unwrap() {
            frames.push(frame);
        }
        assert_eq!(
            frames,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"b": "x\ny"}), serde_json::json!({"c": 3})]
        );

        let huge = vec![b'x'; MAX_FRAME_BYTES + 10];
        let mut reader = tokio::io::BufReader::new(huge.as_slice());
        let result = read_frame::<serde_json::Value, _>(&mut reader, &mut line).await;
        assert!(matches!(result, Err(FrameError::TooLarge)));
        let mut reader = tokio::io::BufReader::new(&b"{not json}\n"[..]);
        assert!(matches!(
            read_frame::<serde_json::Value, _>(&mut reader, &mut line).await,
            Err(FrameError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: arbitrary bytes on the socket end in frames or errors, never a panic, and
    //! never a buffer past the frame limit; real frames round-trip.

    use aniate_proto::ipc::{ClientFrame, Request, RequestFrame, RunToolParams};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // PROPTEST_CASES=N runs more (docs/reliability.md has the long runs).
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)))]

        #[test]
        fn arbitrary_bytes_are_frames_or_errors(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut reader = tokio::io::BufReader::with_capacity(64, bytes.as_slice());
                let mut line = Vec::new();
                for _ in 0..100 {
                    match read_frame::<ClientFrame, _>(&mut reader, &mut line).await {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            });
        }

        /// The blocking reader (`ant`'s tool runs) reads what the async one reads, frame for
        /// frame and error for error.
        #[test]
        fn blocking_and_async_readers_agree(
            pieces in prop::collection::vec(prop_oneof![
                Just(b"{\"a\":1}\n".to_vec()),
                Just(b"  \n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"{\"b\":".to_vec()),
                prop::collection::vec(any::<u8>(), 0..40),
            ], 0..12),
            capacity in 1usize..64,
        ) {
            let bytes = pieces.concat();
            let described = |frame: Result<Option<serde_json::Value>, FrameError>| match frame {
                Ok(frame) => Ok(frame),
                Err(err) => Err(err.to_string()),
            };
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let from_async = runtime.block_on(async {
                let mut reader = tokio::io::BufReader::with_capacity(capacity, bytes.as_slice());
                let mut line = Vec::new();
                let mut frames = Vec::new();
                for _ in 0..20 {
                    let frame = described(read_frame(&mut reader, &mut line).await);
                    let end = !matches!(frame, Ok(Some(_)));
                    frames.push(frame);
                    if end { break; }
                }
                frames
            });
            let mut reader = std::io::BufReader::with_capacity(capacity, bytes.as_slice());
            let mut line = Vec::new();
            let mut from_blocking = Vec::new();
            for _ in 0..20 {
                let frame = described(read_frame_blocking(&mut reader, &mut line));
                let end = !matches!(frame, Ok(Some(_)));
                from_blocking.push(frame);
                if end { break; }
            }
            prop_assert_eq!(from_async, from_blocking);
        }

        #[test]
        fn run_requests_round_trip(id in any::<u64>(), tool in "[a-z]{1,12}", content in "\\PC{0,300}", instructions in proptest::option::of("\\PC{0,100}")) {
            let frame = ClientFrame::Request(RequestFrame::new(
                id,
                Request::RunTool(RunToolParams { tool, content, instructions, ..Default::default() }),
            ));
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let back = runtime.block_on(async {
                let mut wire = Vec::new();
                write_frame(&mut wire, &frame).await.unwrap();
                let mut reader = tokio::io::BufReader::new(wire.as_slice());
                read_frame::<ClientFrame, _>(&mut reader, &mut Vec::new()).await.unwrap()
            });
            prop_assert_eq!(back, Some(frame));
        }
    }
}
