//! `ant brew`, `ant chat`, `ant files`, `ant usage` through the daemon.

use aniate_testkit::{
    FakeLlmConfig, Rule,
    stack::{Stack, StackOptions},
};
use serde_json::Value;

use crate::harness::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brews_chat_files_and_usage() {
    let fake = FakeLlmConfig {
        rules: vec![Rule { when_contains: "PIRATE".to_owned(), reply: "Arr, the treasure be buried.".to_owned() }],
        ..Default::default()
    };
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("brews@example.test", &[]).await;

    client.write("pirate.md", "PIRATE: talk like a pirate.\n");
    let created = client.ant(&["brew", "create", "Pirate Talk", "--prompt-file", "pirate.md", "-d", "Yo ho"]).await;
    assert!(created.ok().stdout.contains("pirate-talk"), "{}", created.stdout);
    let list = client.ant(&["brew", "list"]).await;
    assert!(list.ok().stdout.contains("pirate-talk") && list.stdout.contains("yours"), "{}", list.stdout);
    let show = client.ant(&["brew", "show", "pirate-talk"]).await;
    assert!(show.ok().stdout.contains("PIRATE: talk like a pirate."), "the owner sees the prompt: {}", show.stdout);

    // One question, as an argument and from stdin.
    let answer = client.ant(&["chat", "--brew", "pirate-talk", "where", "is", "the", "treasure?"]).await;
    assert_eq!(answer.ok().stdout.trim(), "Arr, the treasure be buried.");
    let request = stack.fake.requests().pop().unwrap();
    assert!(request.messages[0].content.starts_with("PIRATE"), "the brew's prompt applied server-side");
    assert_eq!(request.messages.last().unwrap().content, "where is the treasure?");
    let piped = client.ant_with_stdin(&["chat", "--brew", "pirate-talk"], "a question from stdin\n").await;
    assert_eq!(piped.ok().stdout.trim(), "Arr, the treasure be buried.");
    let streamed = client.ant(&["chat", "hello", "--json"]).await;
    let last: Value = serde_json::from_str(streamed.ok().stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done");
    client.ant(&["chat", "--brew", "nope", "hi"]).await.failed_with(1, "no brew `nope`");

    client.ant(&["brew", "edit", "pirate-talk", "--model", "another-model"]).await.ok();
    let json = client.ant(&["brew", "show", "pirate-talk", "--json"]).await;
    let brew: Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(brew["model"], "another-model");
    client.ant(&["brew", "create", "No Prompt"]).await.failed_with(2, "--prompt-file");
    client.ant(&["brew", "delete", "pirate-talk"]).await.ok();
    assert!(client.ant(&["brew", "list"]).await.ok().stdout.contains("No brews"));

    // Files.
    client.write("notes.txt", "remember the milk\n");
    let pushed = client.ant(&["files", "push", "notes.txt", "--json"]).await;
    let file: Value = serde_json::from_str(&pushed.ok().stdout).unwrap();
    assert_eq!((file["name"].as_str(), file["size"].as_u64()), (Some("notes.txt"), Some(18)));
    let ls = client.ant(&["files", "ls"]).await;
    assert!(ls.ok().stdout.contains("notes.txt"), "{}", ls.stdout);
    // Under the list: what is stored and what the plan allows (issue 13 item 3).
    assert!(ls.stdout.contains("in 1 of 1000 files (free plan)"), "{}", ls.stdout);
    client.ant(&["files", "push", "missing.txt"]).await.failed_with(1, "cannot read missing.txt");
    client.ant(&["files", "rm", &file["id"].to_string()]).await.ok();
    assert!(client.ant(&["files", "ls"]).await.ok().stdout.contains("No stored files"));
    client.ant(&["files", "rm", "999"]).await.failed_with(4, "no such file");

    // Usage counts the chats.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let usage = client.ant(&["usage", "--json"]).await;
    let usage: Value = serde_json::from_str(&usage.ok().stdout).unwrap();
    assert_eq!(usage["totals"]["requests"], 3);
    let table = client.ant(&["usage"]).await;
    assert!(table.ok().stdout.contains("chat:pirate-talk"), "{}", table.stdout);
}

/// The REPL on a real pseudo-terminal (`script`): answers stream, Ctrl-C stops an answer but
/// not the chat, Ctrl-D leaves, history is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_repl_on_a_terminal() {
    use std::time::Duration;

    use aniate_testkit::Outcome;
    use tokio::io::AsyncWriteExt;

    let fake = FakeLlmConfig {
        rules: vec![Rule { when_contains: "slow please".to_owned(), reply: "word ".repeat(400) }],
        default_reply: Some("quick answer".to_owned()),
        chunk_chars: 5,
        chunk_delay_ms: 10,
        ..Default::default()
    };
    let stack = Stack::start(StackOptions { fake, ..Default::default() }).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("repl@example.test", &[]).await;
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/pty_driver.py");
    let mut terminal = tokio::process::Command::new("python3");
    let ant = crate::harness::ant();
    terminal.args([driver, ant.as_str(), "chat"]);
    for (key, value) in &client.env {
        terminal.env(key, value);
    }
    let mut child = terminal
        .current_dir(&client.home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let screen_buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut pty_out = child.stdout.take().unwrap();
    let collector = {
        let screen_buffer = std::sync::Arc::clone(&screen_buffer);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pty_out.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                screen_buffer.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    let screen = || String::from_utf8_lossy(&screen_buffer.lock().unwrap()).into_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write_all(keys(b"a quick one\r").as_bytes()).await.unwrap();
    let (_, answered) =
        stack.fake.wait_until(Duration::from_secs(10), |r| r.len() == 1 && r[0].outcome == Outcome::Completed).await;
    assert!(answered);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin.write_all(keys(b"slow please\r").as_bytes()).await.unwrap();
    let (_, streaming) = stack.fake.wait_until(Duration::from_secs(10), |r| r.len() == 2 && r[1].chunks_sent > 3).await;
    assert!(streaming);
    stdin.write_all(keys(b"\x03").as_bytes()).await.unwrap();
    let (requests, cancelled) =
        stack.fake.wait_until(Duration::from_secs(5), |r| r.len() == 2 && r[1].outcome == Outcome::Cancelled).await;
    assert!(cancelled, "Ctrl-C cancelled the answer: {requests:?}\n{}", screen());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin.write_all(keys(b"after the stop\r").as_bytes()).await.unwrap();
    let (requests, third) =
        stack.fake.wait_until(Duration::from_secs(10), |r| r.len() == 3 && r[2].outcome == Outcome::Completed).await;
    assert!(third, "the chat went on after Ctrl-C: {requests:?}");
    // The conversation is carried: the first exchange, not the stopped one.
    let contents: Vec<&str> = requests[2].messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents[1..], ["a quick one", "quick answer", "after the stop"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin.write_all(keys(b"\x04").as_bytes()).await.unwrap();
    stdin.write_all(b"close\n").await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
    collector.await.unwrap();
    let screen = screen();
    assert!(screen.trim_end().ends_with("EXIT 0"), "{screen}");
    assert!(screen.contains("quick answer") && screen.contains("(stopped)"), "{screen}");
    let history = std::fs::read_to_string(client.home.join("chat_history")).unwrap();
    assert!(history.contains("a quick one") && history.contains("after the stop"), "{history}");
}

/// A line for the pty driver: these bytes, typed.
fn keys(bytes: &[u8]) -> String {
    format!("send {}\n", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// `ant usage` shows what runs cost at the server's catalogue prices (issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_shows_cost_from_the_catalogue() {
    let priced = aniate_testkit::FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("providers.toml");
    std::fs::write(
        &catalogue,
        format!(
            "[providers.groq]\nbase_url = \"{}\"\n[providers.groq.models.\"llama-3.1-8b-instant\"]\n\
             input_usd_per_mtok = 500.0\noutput_usd_per_mtok = 1500.0\n",
            priced.base_url()
        ),
    )
    .unwrap();
    let options = StackOptions {
        server_env: vec![("ANIATE_PROVIDERS".to_owned(), catalogue.display().to_string())],
        ..Default::default()
    };
    let stack = Stack::start(options).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("cost@example.test", &[]).await;
    client.ant(&["chat", "hello"]).await.ok();
    assert_eq!(priced.requests().len(), 1, "the catalogue's provider answered");

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let usage = client.ant(&["usage", "--json"]).await;
    let usage: Value = serde_json::from_str(&usage.ok().stdout).unwrap();
    let (prompt, completion) =
        (usage["totals"]["prompt_tokens"].as_u64().unwrap(), usage["totals"]["completion_tokens"].as_u64().unwrap());
    let cost = prompt * 500 + completion * 1500;
    assert_eq!(usage["totals"]["cost_micro_usd"], cost, "{usage}");
    assert_eq!(usage["by_model"][0]["provider"], "groq", "{usage}");
    let dollars = format!("${}.{:06}", cost / 1_000_000, cost % 1_000_000);
    let table = client.ant(&["usage"]).await;
    let stdout = &table.ok().stdout;
    assert!(stdout.contains(&format!("{dollars} this month")), "{stdout}");
    assert!(stdout.contains("groq/llama-3.1-8b-instant"), "{stdout}");
}
