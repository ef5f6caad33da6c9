//! Structured logs, read from a real `leadlex serve` with JSON logs: every line of a
//! request carries its request id, the key appears only as its display prefix, and no
//! plaintext key (the caller's, or one created over the API, replayed or not) nor the
//! seal key is ever written.

use std::{process::Stdio, time::Duration};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::helpers::{fresh_database, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_never_the_key() {
    let (url, _dir) = fresh_database(Backend::Sqlite).await;
    let mut settings = leadlex::config::Settings::default();
    settings.database.url = url.clone();
    let db = leadlex::db::connect(&settings.database).await.unwrap();
    leadlex::db::migrate(&db).await.unwrap();
    let settler = leadlex::settler::Settler::spawn(&settings.database, Default::default()).await.unwrap();
    let ws = leadlex::admin::create_workspace(&db, &settler, "logs", leadlex::ratelimit::Plan::Pro, 5, None, None).await.unwrap().id;
    let perms = [leadlex::auth::Permission::WriteEnrich, leadlex::auth::Permission::AdminApiKeys].into_iter().collect();
    let key = leadlex::admin::create_key(&db, &ws, "t", &perms, None).await.unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("LEADLEX_DATABASE_URL", &url)
        .env("LEADLEX_JSON_LOGS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = stdout.next_line().await.unwrap().expect("listening line");
        if let Some(b) = line.strip_prefix("listening on ") {
            break b.to_string();
        }
    };
    let request_id = "trace-logs-0123456789abcdef";
    let client = reqwest::Client::new();
    let r = crate::helpers::send(
        &client,
        client
            .post(format!("{base}/v1/email/enrich"))
            .bearer_auth(&key.key)
            .header("X-Request-ID", request_id)
            .json(&json!({"email": "jane@acme.com"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    // The key endpoints: a key created (and its creation replayed), listed, revoked.
    let idem = uuid::Uuid::new_v4().to_string();
    let mut secrets = vec![key.key.clone()];
    for attempt in 0..2 {
        let created = crate::helpers::send(
            &client,
            client
                .post(format!("{base}/v1/api-keys"))
                .bearer_auth(&key.key)
                .header("Idempotency-Key", &idem)
                .json(&json!({"name": "logged", "permissions": ["write:enrich"]})),
        )
        .await
        .unwrap();
        assert_eq!(created.status, 201);
        assert_eq!(created.header("idempotent-replayed").is_some(), attempt == 1, "the second one is the replay");
        secrets.push(created.json()["data"]["key"].as_str().unwrap().to_string());
    }
    let new_id = {
        let listed =
            crate::helpers::send(&client, client.get(format!("{base}/v1/api-keys?search=logged")).bearer_auth(&key.key)).await.unwrap();
        listed.json()["data"]["api_keys"][0]["id"].as_str().unwrap().to_string()
    };
    let revoked = crate::helpers::send(&client, client.delete(format!("{base}/v1/api-keys/{new_id}")).bearer_auth(&key.key)).await.unwrap();
    assert_eq!(revoked.status, 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.start_kill().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();

    for secret in &secrets {
        assert!(!stderr.contains(secret.as_str()), "a plaintext key is never logged");
    }
    let seal_key = std::fs::read_to_string(format!("{}.seal-key", leadlex::db::sqlite_path(&url).unwrap())).unwrap();
    assert!(!stderr.contains(seal_key.trim()), "nor the seal key");
    let lines: Vec<Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "JSON log lines: {stderr}");
    let ours: Vec<&Value> = lines.iter().filter(|l| l.to_string().contains(request_id)).collect();
    let served = ours.iter().find(|l| l["fields"]["message"] == "served").expect("a served line for the request");
    assert_eq!(served["fields"]["status"], 200);
    assert_eq!(served["span"]["key"], key.prefix.as_str(), "the key's display prefix names the caller");
}
