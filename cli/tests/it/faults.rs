//! Model provider faults as the user sees them: every fault ends the run within the server's
//! timeouts with a message that says what went wrong and exit code 5 (server or provider
//! unavailable), the answer's text received before a mid-stream fault is still shown, and the
//! next run works.

use std::time::{Duration, Instant};

use aniate_testkit::{
    FakeLlmConfig, Fault,
    stack::{Stack, StackOptions},
};

use crate::harness::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults_reach_the_user_as_clear_errors() {
    let server_env = [("ANIATE_FIRST_TOKEN_TIMEOUT_MS", "500"), ("ANIATE_STREAM_IDLE_TIMEOUT_MS", "500")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
    let fake =
        FakeLlmConfig { default_reply: Some("partial answer text ".repeat(10)), chunk_chars: 20, ..Default::default() };
    let stack = Stack::start(StackOptions { fake, server_env, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("faults@example.test", &["what"]).await;

    for (n, (fault, says, partial)) in [
        (Fault::Http500, "HTTP 500", false),
        (Fault::Http429 { retry_after_secs: 7 }, "retry in 7 s", false),
        (Fault::StallBeforeFirstByte, "did not start answering in time", false),
        (Fault::StallAfterChunks { chunks: 3 }, "stopped", true),
        (Fault::DisconnectAfterChunks { chunks: 3 }, "closed", true),
        (Fault::GarbageAfterChunks { chunks: 3 }, "malformed", true),
    ]
    .into_iter()
    .enumerate()
    {
        stack.fake.set_fault(fault.clone());
        let started = Instant::now();
        let run = client.ant(&["what", "-i", &format!("fault {n}"), "--fresh"]).await;
        let took = started.elapsed();
        run.failed_with(5, says);
        assert_eq!(run.stderr.matches("retry in").count(), usize::from(says.contains("retry")), "{}", run.stderr);
        assert!(took < Duration::from_secs(10), "{fault:?} took {took:?}");
        assert_eq!(run.stdout.contains("partial answer text"), partial, "{fault:?}: {}", run.stdout);
    }
    stack.fake.set_fault(Fault::None);
    client.ant(&["what", "-i", "all good again", "--fresh"]).await.ok();
}
