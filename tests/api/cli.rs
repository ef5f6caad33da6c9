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
