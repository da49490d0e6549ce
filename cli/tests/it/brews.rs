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
