//! Stored files: upload, dedupe on disk, ownership, limits, use in a tool run, nothing left
//! half-written.

use serde_json::{Value, json};

use crate::harness::{Backend, Harness, ServerOptions, assert_error, db_tests};

db_tests!(files_are_stored_once_and_owned, a_tool_runs_on_a_stored_file);

fn blobs(h: &Harness) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let root = h.dir.path().join("data/files");
    for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            found.push(blob.path());
        }
    }
    found
}

async fn files_are_stored_once_and_owned(backend: Backend) {
    let options = ServerOptions::default().env("ANIATE_MAX_FILE_BYTES", "1000");
    let Some(h) = Harness::start_with(backend, options).await else { return };
    let ada = h.signup("files@example.test").await;
    let bob = h.signup("bob@example.test").await;
    let upload = |token: &str, name: &str, body: Vec<u8>| {
        h.http
            .post(h.url(&format!("/files?name={name}")))
            .bearer_auth(token)
            .header("content-type", "text/x-python")
            .body(body)
            .send()
    };
    let first = upload(&ada, "app.py", b"print('hi')\n".to_vec()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!((first["name"].as_str(), first["size"].as_u64()), (Some("app.py"), Some(12)));
    assert_eq!(first["content_type"], "text/x-python");
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);
    let second: Value = upload(&bob, "copy.py", b"print('hi')\n".to_vec()).await.unwrap().json().await.unwrap();
    assert_eq!(first["sha256"], second["sha256"]);
    assert_eq!(blobs(&h).len(), 1, "identical content is stored once");

    let listed: Vec<Value> = h.http.get(h.url("/files")).bearer_auth(&ada).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1);
    let id = first["id"].as_i64().unwrap();
    let content = h.http.get(h.url(&format!("/files/{id}/content"))).bearer_auth(&ada).send().await.unwrap();
    assert_eq!(content.headers()["content-type"], "text/x-python");
    assert_eq!(content.text().await.unwrap(), "print('hi')\n");
    for path in [format!("/files/{id}"), format!("/files/{id}/content")] {
        assert_error(h.http.get(h.url(&path)).bearer_auth(&bob).send().await.unwrap(), 404, "not_found").await;
    }
    assert_error(
        h.http.delete(h.url(&format!("/files/{id}"))).bearer_auth(&bob).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    // Refused uploads leave no content and no row.
    assert_error(upload(&ada, "big.bin", vec![b'x'; 1001]).await.unwrap(), 413, "payload_too_large").await;
    assert_error(upload(&ada, "..", b"x".to_vec()).await.unwrap(), 422, "invalid_field").await;
    assert_error(upload(&ada, "a%2Fb", b"x".to_vec()).await.unwrap(), 422, "invalid_field").await;
    let nameless = h.http.post(h.url("/files")).bearer_auth(&ada).body("x").send().await.unwrap();
    assert_error(nameless, 422, "invalid_field").await;
    assert_eq!(blobs(&h).len(), 1);
    assert_eq!(h.query_strings("SELECT COUNT(*) FROM files").await[0][0].as_deref(), Some("2"));

    // Deleting one owner's row keeps the content the other still names; the last delete removes it.
    assert_eq!(h.http.delete(h.url(&format!("/files/{id}"))).bearer_auth(&ada).send().await.unwrap().status(), 204);
    assert_eq!(blobs(&h).len(), 1);
    let bob_id = second["id"].as_i64().unwrap();
    assert_eq!(h.http.delete(h.url(&format!("/files/{bob_id}"))).bearer_auth(&bob).send().await.unwrap().status(), 204);
    assert!(blobs(&h).is_empty());
}

/// Whether this test runs as root, and so can try things as `nobody`.
fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Whether `nobody` can read `path` (a file's content, or a dir's listing).
fn nobody_reads(path: &std::path::Path) -> bool {
    let program = if path.is_dir() { "ls" } else { "cat" };
    let output = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", program])
        .arg(path)
        .output()
        .expect("run runuser");
    output.status.success()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Issue 13, item 1: the database (with its `-wal` and `-shm`, which hold prompts and password
/// hashes) and stored files are the server's user's alone, and a start fixes files an older
/// version left readable by others. Checked as `nobody`, with every dir above them open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_files_are_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let Some(h) = Harness::start(Backend::Sqlite).await else { return };
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = h.signup("private@example.test").await;
    let uploaded = h
        .http
        .post(h.url("/files?name=secret.txt"))
        .bearer_auth(&token)
        .body("the uploader's secret\n")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let data = h.dir.path().join("data");
    let db = h.dir.path().join("it.db");
    let wal = h.dir.path().join("it.db-wal");
    let shm = h.dir.path().join("it.db-shm");
    let blob = blobs(&h).pop().expect("a stored blob");
    let shard = blob.parent().unwrap().to_owned();
    let check = |when: &str| {
        for path in [&data, &data.join("files"), &shard] {
            assert_eq!(mode(path), 0o700, "{when}: {}", path.display());
        }
        for path in [&db, &wal, &shm, &blob] {
            assert_eq!(mode(path), 0o600, "{when}: {}", path.display());
        }
        if is_root() {
            for path in [&db, &wal, &shm, &blob, &data] {
                assert!(!nobody_reads(path), "{when}: nobody reads {}", path.display());
            }
        }
    };
    check("created");
    if is_root() {
        let control = h.dir.path().join("control.txt");
        std::fs::write(&control, "x").unwrap();
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(nobody_reads(&control), "nobody reads a world-readable file in the same dir");
    } else {
        eprintln!("not root: checking modes only, not reads as nobody");
    }

    // As an older version left them: open to everyone. The next start closes them, and says so.
    for path in [&data, &data.join("files"), &shard] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for path in [&db, &wal, &shm, &blob] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (_second, _base) = h.extra_server("second", &[]);
    check("after a restart");
    let log = std::fs::read_to_string(h.dir.path().join("second.log")).unwrap();
    assert!(log.contains("took group and other permissions off"), "{log}");
}

async fn a_tool_runs_on_a_stored_file(backend: Backend) {
    let Some(h) = Harness::start(backend).await else { return };
    let token = h.signup("run@example.test").await;
    let other = h.signup("other@example.test").await;
    let file: Value = h
        .http
        .post(h.url("/files?name=calc.py"))
        .bearer_auth(&token)
        .body("def add(a, b):\n    return a - b\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = file["id"].as_i64().unwrap();
    let run = h.run(&token, "fix", json!({"file_id": id}), false).await;
    assert_eq!(run.status(), 200);
    run.text().await.unwrap();
    let sent = &h.fake.requests()[0].messages[1].content;
    assert!(sent.contains("<file name=\"calc.py\">") && sent.contains("return a - b"), "{sent}");
    assert_error(h.run(&other, "fix", json!({"file_id": id}), false).await, 404, "not_found").await;
    let binary: Value = h
        .http
        .post(h.url("/files?name=blob.bin"))
        .bearer_auth(&token)
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_error(h.run(&token, "fix", json!({"file_id": binary["id"]}), false).await, 422, "invalid_field").await;
}
