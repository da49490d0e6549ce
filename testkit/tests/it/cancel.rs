//! The fake must record a client leaving as `Cancelled` within a few milliseconds, whatever
//! it was doing: streaming with delays, stalled before the first byte, stalled mid-stream.
//! Product tests build "the provider request was cancelled within 100 ms" on this.

use std::time::{Duration, Instant};

use aniate_testkit::{FakeLlm, FakeLlmConfig, Fault, Outcome, RecordedRequest};

use crate::client::{Conn, chat_body};

/// The bound product tests rely on.
const CANCEL_WITHIN: Duration = Duration::from_millis(100);

/// Drops the client connection and returns how long the fake took to record the cancel.
async fn drop_and_time_cancel(fake: &FakeLlm, conn: Conn) -> (Duration, RecordedRequest) {
    let dropped_at = Instant::now();
    drop(conn);
    let (requests, held) = fake
        .wait_until(Duration::from_secs(2), |requests| {
            requests.last().is_some_and(|request| request.outcome != Outcome::InProgress)
        })
        .await;
    let elapsed = dropped_at.elapsed();
    eprintln!("cancel recorded {elapsed:?} after the client dropped");
    assert!(held, "request never settled: {requests:?}");
    let request = requests.last().unwrap().clone();
    assert_eq!(request.outcome, Outcome::Cancelled, "{request:?}");
    (elapsed, request)
}

async fn start_request(fake: &FakeLlm, stream: bool) -> Conn {
    let mut conn = Conn::connect(fake.addr()).await;
    conn.send("POST", "/v1/chat/completions", Some(&chat_body("cancel me", stream)), &[]).await;
    conn
}

async fn wait_for_request(fake: &FakeLlm) {
    let (_, held) = fake.wait_until(Duration::from_secs(2), |requests| !requests.is_empty()).await;
    assert!(held);
}

#[tokio::test]
async fn cancel_mid_stream_between_delayed_chunks() {
    let fake = FakeLlm::start(FakeLlmConfig {
        default_reply: Some("y".repeat(400)),
        chunk_chars: 4,
        chunk_delay_ms: 30,
        ..FakeLlmConfig::default()
    })
    .await
    .unwrap();
    let mut conn = start_request(&fake, true).await;
    conn.read_until_count(b"\"content\"", 2).await;
    let (elapsed, request) = drop_and_time_cancel(&fake, conn).await;
    assert!(elapsed < CANCEL_WITHIN, "cancel took {elapsed:?}");
    assert!((2..100).contains(&request.chunks_sent), "{request:?}");
    let ended_at_ms = request.ended_at_ms.unwrap();
    assert!(ended_at_ms >= request.received_at_ms);
    // No more chunks after the cancel.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(fake.requests()[0], request);
}

#[tokio::test]
async fn cancel_while_stalled_before_first_byte() {
    let fake =
        FakeLlm::start(FakeLlmConfig { fault: Fault::StallBeforeFirstByte, ..FakeLlmConfig::default() }).await.unwrap();
    for stream in [true, false] {
        let conn = start_request(&fake, stream).await;
        wait_for_request(&fake).await;
        // Let the fake settle into its stall.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fake.requests().last().unwrap().outcome, Outcome::InProgress);
        let (elapsed, request) = drop_and_time_cancel(&fake, conn).await;
        assert!(elapsed < CANCEL_WITHIN, "cancel took {elapsed:?} (stream: {stream})");
        assert_eq!(request.chunks_sent, 0);
        fake.clear_requests();
    }
}

#[tokio::test]
async fn cancel_while_stalled_after_chunks() {
    let fake = FakeLlm::start(FakeLlmConfig {
        default_reply: Some("z".repeat(100)),
        chunk_chars: 10,
        fault: Fault::StallAfterChunks { chunks: 2 },
        ..FakeLlmConfig::default()
    })
    .await
    .unwrap();
    let mut conn = start_request(&fake, true).await;
    conn.read_until_count(b"\"content\"", 2).await;
    // The stall really is a stall: nothing more arrives.
    let more = tokio::time::timeout(Duration::from_millis(50), conn.read_more()).await;
    assert!(more.is_err(), "bytes after the stall: {:?}", String::from_utf8_lossy(&conn.buf));
    assert_eq!(fake.requests()[0].outcome, Outcome::InProgress);
    let (elapsed, request) = drop_and_time_cancel(&fake, conn).await;
    assert!(elapsed < CANCEL_WITHIN, "cancel took {elapsed:?}");
    assert_eq!(request.chunks_sent, 2);
}

#[tokio::test]
async fn client_that_stops_reading_a_big_stream_is_cancelled_not_completed() {
    // Far more than the socket buffers hold, so the fake is blocked writing when the
    // client leaves; the write must then fail rather than the stream count as complete.
    let fake = FakeLlm::start(FakeLlmConfig {
        default_reply: Some("w".repeat(8 * 1024 * 1024)),
        chunk_chars: 4096,
        ..FakeLlmConfig::default()
    })
    .await
    .unwrap();
    let mut conn = start_request(&fake, true).await;
    conn.read_until_count(b"\"content\"", 1).await;
    let (_, held) = fake
        .wait_until(Duration::from_secs(2), |requests| {
            // Wait until the fake is stuck on a full socket buffer.
            requests.first().is_some_and(|request| request.chunks_sent > 10)
        })
        .await;
    assert!(held);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (elapsed, request) = drop_and_time_cancel(&fake, conn).await;
    assert!(elapsed < CANCEL_WITHIN, "cancel took {elapsed:?}");
    assert!(request.chunks_sent < 2048, "{request:?}");
}

#[tokio::test]
async fn shutdown_cancels_requests_in_progress() {
    let fake =
        FakeLlm::start(FakeLlmConfig { fault: Fault::StallBeforeFirstByte, ..FakeLlmConfig::default() }).await.unwrap();
    let state = fake.state().clone();
    let _conn = start_request(&fake, true).await;
    wait_for_request(&fake).await;
    fake.shutdown().await;
    assert_eq!(state.requests()[0].outcome, Outcome::Cancelled);
}
