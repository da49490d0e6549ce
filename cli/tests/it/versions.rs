//! Tool versions as a user sees them: a rollback is a newer version, so `ant update` picks it
//! up, and the tool runs with the rolled-back prompt.

use aniate_testkit::stack::{Stack, StackOptions};
use serde_json::{Value, json};

use crate::harness::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ant_update_picks_up_a_rollback() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let admin = stack.admin_token().await.unwrap();
    let tool = |description: &str, prompt: &str| json!({"slug": "haiku", "name": "Haiku", "description": description, "system_prompt": prompt});
    stack.push_tool(&admin, tool("Answers in a haiku", "VERSION-ONE-PROMPT")).await.unwrap();
    let client = Client::new(&stack, "u");
    client.ready("user@example.test", &["haiku"]).await;
    let installed = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(client.home.join("tools/haiku.json")).unwrap()).unwrap()
    };
    assert_eq!(installed()["version"], 1);

    stack.push_tool(&admin, tool("Answers in a limerick", "VERSION-TWO-PROMPT")).await.unwrap();
    client.ant(&["update"]).await.ok();
    assert_eq!(
        (installed()["version"].as_i64(), installed()["description"].as_str()),
        (Some(2), Some("Answers in a limerick"))
    );

    // The admin CLI rolls back to version 1: version 3, which `ant update` installs.
    let rolled = stack.admin(&["tools", "rollback", "haiku", "1"], "").unwrap();
    assert_eq!(rolled.trim(), "rolled back haiku to version 1 as version 3");
    let update = client.ant(&["update"]).await;
    assert!(update.ok().stdout.contains("v3"), "{}", update.stdout);
    assert_eq!(
        (installed()["version"].as_i64(), installed()["description"].as_str()),
        (Some(3), Some("Answers in a haiku"))
    );
    let market = client.ant(&["marketplace", "--json"]).await;
    let market: Value = serde_json::from_str(&market.ok().stdout).unwrap();
    let listed = market["tools"].as_array().unwrap().iter().find(|t| t["slug"] == "haiku").unwrap().clone();
    assert_eq!(listed["version"], 3, "{listed}");

    client.ant(&["haiku", "-i", "autumn"]).await.ok();
    let sent = stack.fake.requests().last().unwrap().messages[0].content.clone();
    assert!(sent.starts_with("VERSION-ONE-PROMPT"), "{sent}");
}
