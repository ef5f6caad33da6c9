//! The operators' CLI, run as the real binary against a fresh database.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{fresh_database, Backend};
use crate::on_both_backends;

fn leadlex(db: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["--database-url", db, "--json"])
        .args(args)
        .env_remove("LEADLEX_CONFIG")
        .output()
        .expect("binary runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints one object: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

on_both_backends!(admin_commands_manage_workspaces_keys_and_credits);

async fn admin_commands_manage_workspaces_keys_and_credits(backend: Backend) {
    let (db, _dir) = fresh_database(backend).await;
    let db = db.as_str();
    let out = tokio::task::spawn_blocking({
        let db = db.to_string();
        move || {
            let db = db.as_str();
            if backend == Backend::Postgres {
                // An admin command never migrates a production database by surprise.
                let refused = Command::new(env!("CARGO_BIN_EXE_leadlex"))
                    .args(["--database-url", db, "workspace", "create", "--name", "Early"])
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&refused.stderr);
                assert!(!refused.status.success(), "a command on an unmigrated PostgreSQL database fails");
                assert!(stderr.contains("leadlex migrate"), "and names the command that migrates: {stderr}");
            }
            assert_eq!(leadlex(db, &["migrate"])["migrated"], true);
            let ws = leadlex(db, &["workspace", "create", "--name", "Acme", "--plan", "pro", "--credits", "25"]);
            let id = ws["id"].as_str().unwrap().to_string();
            let key = leadlex(
                db,
                &[
                    "key",
                    "create",
                    "--workspace",
                    &id,
                    "--permission",
                    "write:enrich",
                    "--permission",
                    "read:usage",
                    "--expires-at",
                    "2099-01-01T00:00:00Z",
                    "--name",
                    "ci",
                ],
            );
            let plaintext = key["key"].as_str().unwrap();
            assert!(plaintext.starts_with("wbk_") && plaintext.starts_with(key["prefix"].as_str().unwrap()));
            assert_eq!(key["permissions"], serde_json::json!(["write:enrich", "read:usage"]));
            assert_eq!(key["expires_at"], "2099-01-01T00:00:00Z");
            assert_eq!(key["mode"], "live");
            let test = leadlex(db, &["key", "create", "--workspace", &id, "--permission", "write:enrich", "--test"]);
            assert!(test["key"].as_str().unwrap().starts_with("wbk_test_"), "{test}");
            assert_eq!(test["mode"], "test");
            assert_eq!(leadlex(db, &["credits", "grant", "--workspace", &id, "--amount", "5"])["balance"], 30);
            assert_eq!(leadlex(db, &["credits", "balance", "--workspace", &id])["balance"], 30);
            let updated = leadlex(db, &["workspace", "update", "--id", &id, "--plan", "org", "--per-day", "5"]);
            assert_eq!(updated["updated"], true);
            let key_id = key["id"].as_str().unwrap().to_string();
            assert_eq!(leadlex(db, &["key", "revoke", "--id", &key_id])["revoked"], true);
            let list = leadlex(db, &["key", "list", "--workspace", &id]);
            let listed = list.to_string();
            assert!(!listed.contains(plaintext), "list never shows the key");
            assert!(list["keys"][0]["revoked_at"].is_string());
            assert_eq!(list["keys"][1]["mode"], "test");
            id
        }
    })
    .await
    .unwrap();
    assert!(out.starts_with("ws_"));
    let mut settings = leadlex::config::Settings::default();
    settings.database.url = db.to_string();
    let conn = leadlex::db::connect(&settings.database).await.unwrap();
    use sea_orm::EntityTrait;
    let ws = entity::workspace::Entity::find_by_id(out.as_str()).one(&conn).await.unwrap().unwrap();
    assert_eq!((ws.plan.as_str(), ws.rate_limit_per_day), ("org", Some(5)), "workspace update took effect");
    conn.close().await.ok();
    let bad = Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["--database-url", db, "key", "create", "--workspace", &out, "--permission", "write:everything"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "unknown permissions are refused");
    // The rules of `POST /v1/api-keys`, from the domain: a name of 1 to 120 characters, a
    // tier the plan allows, an expiry in the future.
    let long = "n".repeat(121);
    for refused in [vec!["--name", long.as_str()], vec!["--expires-at", "2020-01-01T00:00:00Z"], vec!["--tier", "turbo"]] {
        let out_ = Command::new(env!("CARGO_BIN_EXE_leadlex"))
            .args(["--database-url", db, "key", "create", "--workspace", &out, "--permission", "write:enrich"])
            .args(&refused)
            .output()
            .unwrap();
        assert!(!out_.status.success(), "{refused:?} is refused");
        assert!(!String::from_utf8_lossy(&out_.stderr).is_empty(), "{refused:?} says why");
    }
    if backend == Backend::Postgres {
        crate::helpers::drop_database_blocking(db.rsplit('/').next().unwrap().to_string());
    }
}

on_both_backends!(enrich_a_csv_file_through_a_running_server, ctrl_c_leaves_the_job_running_and_says_how_to_resume);

/// `leadlex enrich FILE.csv` against a running server: the job is submitted, followed
/// and its results written beside the file; `leadlex job results` fetches them again.
async fn enrich_a_csv_file_through_a_running_server(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let (ws, key) = app.funded(100).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leads.csv");
    std::fs::write(&file, "email,reference\njane@acme.com,crm-1\nnot-an-email,crm-2\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["--json", "enrich", file.to_str().unwrap(), "--server", &app.base, "--key", &key])
        .env_remove("LEADLEX_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("items") && stderr.contains("completed"), "a progress line: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 2);
    let written = std::fs::read_to_string(dir.path().join("leads.results.csv")).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 3, "{written}");
    assert!(lines[0].starts_with("index,email,domain,reference,status"));
    assert!(lines[1].contains("jane@acme.com") && lines[1].contains("Jane Doe") && lines[1].contains(",200,"));
    assert!(lines[2].contains(",400,") && lines[2].contains("validation_error"));
    assert_eq!(app.assert_books_balance(&ws).await, 99);

    let id = report["job"].as_str().unwrap();
    let again = dir.path().join("again.csv");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["job", "results", id, "--server", &app.base, "--out", again.to_str().unwrap()])
        .env("LEADLEX_KEY", &key)
        .env_remove("LEADLEX_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(again).unwrap(), written);
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["enrich", file.to_str().unwrap(), "--server", &app.base, "--key", &format!("wbk_{}", "x".repeat(43))])
        .env_remove("LEADLEX_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid_key"), "says why");

    // Quality controls for every row: `--refresh` asks the vendors again (and charges);
    // a `--min-confidence` above Jane's answer (0.9) makes her row a free no_match.
    let run = |args: &'static [&'static str], out: std::path::PathBuf| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"));
        command
            .args(["--json", "enrich", file.to_str().unwrap(), "--server", &app.base, "--key", &key, "--out", out.to_str().unwrap()])
            .args(args)
            .env_remove("LEADLEX_CONFIG");
        command
    };
    let fresh = dir.path().join("fresh.csv");
    let out = run(&["--refresh"], fresh.clone()).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&fresh).unwrap().lines().nth(1).unwrap().contains("vendor_a"), "not cached");
    assert_eq!(app.assert_books_balance(&ws).await, 98);
    let strict = dir.path().join("strict.csv");
    let out = run(&["--min-confidence", "0.95"], strict.clone()).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&strict).unwrap().lines().nth(1).unwrap().contains(",404,"), "refused, free");
    assert_eq!(app.assert_books_balance(&ws).await, 98);
    let bad = run(&["--min-confidence", "2"], dir.path().join("bad.csv")).output().await.unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--min-confidence"), "says which flag");
}

/// Ctrl-C while following: the command stops (130), the job goes on, and the command
/// says how to follow it again.
async fn ctrl_c_leaves_the_job_running_and_says_how_to_resume(backend: Backend) {
    use tokio::io::AsyncReadExt;
    let app = crate::helpers::spawn_app_with(backend, |s| s.sandbox.latency_ms = 100).await;
    let ws = app.workspace(leadlex::ratelimit::Plan::Starter, 100).await;
    let key = app.key(&ws, &[leadlex::auth::Permission::WriteEnrich], None).await.key;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leads.csv");
    let rows: String = (0..40).map(|n| format!("someone{n}@company{n}.com\n")).collect();
    std::fs::write(&file, format!("email\n{rows}")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["enrich", file.to_str().unwrap(), "--server", &app.base, "--key", &key])
        .env_remove("LEADLEX_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    while !seen.contains("items ·") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), stderr.read(&mut buf)).await.expect("progress").unwrap();
        assert!(n > 0, "the command ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().unwrap().to_string()]).status().unwrap().success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    stderr.read_to_string(&mut seen).await.unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    let id = seen.split_whitespace().find(|w| w.starts_with("job_")).unwrap().to_string();
    assert!(seen.contains(&format!("leadlex job watch {id}")), "says how to resume: {seen}");
    let job = leadlex::jobs::get(&app.db, &leadlex::scope::Scope::live(&ws), &id).await.unwrap();
    assert!(job.status == "running" || job.status == "queued", "the job goes on: {job:?}");
    assert!(!dir.path().join("leads.results.csv").exists());
    // The printed command runs as printed (the key in LEADLEX_KEY, as it says).
    let printed = seen.lines().find(|l| l.trim_start().starts_with("leadlex job watch")).unwrap().trim().to_string();
    let args: Vec<&str> = printed.split_whitespace().skip(1).collect();
    let resumed = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(&args)
        .env_remove("LEADLEX_CONFIG")
        .env("LEADLEX_KEY", &key)
        .output();
    let resumed = tokio::time::timeout(std::time::Duration::from_secs(60), resumed).await.unwrap().unwrap();
    assert!(resumed.status.success(), "{printed}: {}", String::from_utf8_lossy(&resumed.stderr));
    assert!(dir.path().join("leads.results.csv").exists(), "the results were written where it said");
}

/// `serve --demo` prints a key that opens every door a newcomer tries in Swagger UI (it
/// holds every permission, and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_key_holds_every_permission() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/demo.db", dir.path().display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["--database-url", &db, "serve", "--demo", "--bind", "127.0.0.1:0"])
        .env_remove("LEADLEX_CONFIG")
        .env_remove("LEADLEX_REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut key, mut said) = (String::new(), String::new(), String::new());
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("listening on ") {
                base = url.to_string();
            }
            if let Some(k) = line.trim().strip_prefix("API key:") {
                key = k.trim().to_string();
            }
            if line.contains("every permission") {
                said = line;
                break;
            }
        }
    })
    .await
    .expect("the demo prints its key");
    assert!(said.contains("admin:webhooks") && said.contains("write:enrich"), "{said}");
    let http = reqwest::Client::new();
    for path in ["/v1/usage", "/v1/credits/ledger", "/v1/api-keys", "/v1/enrich/jobs", "/v1/suppressions", "/v1/webhooks"] {
        let r = http.get(format!("{base}{path}")).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r =
        http.post(format!("{base}/v1/email/enrich")).bearer_auth(&key).json(&serde_json::json!({"email": "jane@acme.com"})).send().await;
    assert_eq!(r.unwrap().status(), 200);
    let _ = child.kill().await;
}

/// `--json` promises one JSON object on stdout, failures included; `spec | head` is no
/// error.
#[test]
fn json_failures_and_closed_pipes() {
    let out = Command::new(env!("CARGO_BIN_EXE_leadlex"))
        .args(["--database-url", "sqlite:///nonexistent-dir/x.db", "--json", "credits", "balance", "--workspace", "ws_none"])
        .env_remove("LEADLEX_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("a JSON object on stdout");
    assert!(printed["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{printed}");
    let spec =
        Command::new("sh").arg("-c").arg(format!("'{}' spec | head -c 10 > /dev/null", env!("CARGO_BIN_EXE_leadlex"))).output().unwrap();
    assert!(!String::from_utf8_lossy(&spec.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&spec.stderr));
}
