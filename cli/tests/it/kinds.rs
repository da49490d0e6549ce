//! What `ant` does with each output kind: findings (text and SARIF), commands (never run
//! without a yes), text.

use aniate_testkit::{
    FakeLlmConfig, Rule,
    stack::{Stack, StackOptions},
};
use std::time::Duration;

use serde_json::Value;

use crate::harness::Client;

const REVIEW_REPLY: &str = "{\"line\": 2, \"severity\": \"error\", \"message\": \"subtracts instead of adding\", \"suggestion\": \"    return a + b\"}\n\
{\"line\": 1, \"severity\": \"hint\", \"message\": \"add a docstring\"}\n";

fn rules(marker_path: &str) -> Vec<Rule> {
    vec![
        Rule { when_contains: "numbered=\"true\"".to_owned(), reply: REVIEW_REPLY.to_owned() },
        Rule {
            when_contains: "make the marker".to_owned(),
            reply: format!("{{\"command\": \"touch {marker_path}\", \"explanation\": \"Creates the marker file.\"}}"),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_and_commands() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let fake = FakeLlmConfig { rules: rules(marker.to_str().unwrap()), ..Default::default() };
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("kinds@example.test", &["review", "shell"]).await;
    client.write("calc.py", "def add(a, b):\n    return a - b\n");

    let review = client.ant(&["review", "calc.py"]).await;
    review.ok();
    assert!(review.stdout.contains("calc.py:2: error: subtracts instead of adding"), "{}", review.stdout);
    assert!(review.stdout.contains("calc.py:1: hint: add a docstring"), "{}", review.stdout);
    assert!(review.stderr.contains("2 findings"), "{}", review.stderr);

    let sarif = client.ant(&["review", "calc.py", "--format", "sarif", "--fresh"]).await;
    let sarif: Value = serde_json::from_str(&sarif.ok().stdout).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let bug = results.iter().find(|r| r["level"] == "error").expect("the error finding");
    assert_eq!(bug["locations"][0]["physicalLocation"]["region"]["startLine"], 2);
    assert_eq!(bug["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "calc.py");
    assert_eq!(bug["message"]["text"], "subtracts instead of adding");

    // stdin is not a terminal here: the command is shown, never run.
    let shown = client.ant(&["shell", "-i", "make the marker"]).await;
    assert!(shown.ok().stdout.contains(&format!("touch {}", marker.display())), "{}", shown.stdout);
    assert!(shown.stderr.contains("--yes"), "{}", shown.stderr);
    assert!(!marker.exists(), "ran a command without a yes");
    // "y" on a stdin that is not a terminal is not a yes either.
    client.ant_with_stdin(&["shell", "-i", "make the marker", "--fresh"], "y\n").await.ok();
    assert!(!marker.exists());
    client.ant(&["shell", "-i", "make the marker", "--yes"]).await.ok();
    assert!(marker.exists(), "--yes runs it");
}

/// Issue 20 item 6: a fix of stdin does not tell the user to apply it to a file named `stdin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_of_stdin_says_how_to_use_it() {
    let fake =
        FakeLlmConfig { default_reply: Some("def add(a, b):\n    return a + b\n".to_owned()), ..Default::default() };
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("stdin@example.test", &["fix"]).await;
    let run = client.ant_with_stdin(&["fix", "-"], "def add(a, b):\n    return a - b\n").await;
    run.ok();
    assert!(run.stdout.contains("+    return a + b"), "{}", run.stdout);
    assert!(run.stderr.contains("The input came from stdin, so there is no file to apply it to"), "{}", run.stderr);
    assert!(!run.stderr.contains("stdin --apply"), "{}", run.stderr);
}

/// A text answer is printed as it streams, not when the run ends (`ant` writes what has come
/// whenever it would otherwise wait), and it ends with one newline: an answer that ends its last
/// line gets no blank line after it, one that does not gets its newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_answer_streams_as_it_comes_and_ends_with_one_newline() {
    use tokio::io::AsyncReadExt;

    let answer = "first line\nsecond line\n";
    let fake = FakeLlmConfig {
        default_reply: Some(answer.to_owned()),
        chunk_chars: 6,
        chunk_delay_ms: 400,
        ..Default::default()
    };
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("live@example.test", &["what"]).await;

    let mut child = client.command(&["what", "-i", "say two lines", "--fresh"]).spawn().expect("spawn ant");
    let mut stdout = child.stdout.take().unwrap();
    let mut printed = vec![0; 64];
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.read(&mut printed)).await.unwrap().unwrap();
    // Four chunks 400 ms apart: the first bytes show while the model is still answering.
    assert!(first > 0 && first < answer.len(), "printed at once: {:?}", String::from_utf8_lossy(&printed[..first]));
    assert!(child.try_wait().unwrap().is_none(), "the first bytes came only when the run ended");
    printed.truncate(first);
    stdout.read_to_end(&mut printed).await.unwrap();
    assert!(child.wait().await.unwrap().success());
    assert_eq!(String::from_utf8(printed).unwrap(), answer);

    stack.fake.set_config(FakeLlmConfig { default_reply: Some("no newline".to_owned()), ..Default::default() });
    let run = client.ant(&["what", "-i", "say it without a newline", "--fresh"]).await;
    assert_eq!(run.ok().stdout, "no newline\n");
}
