//! The `leadlex` command line: `serve`, `sandbox`, `spec`, `migrate` and the operators'
//! admin commands. `--json` prints exactly one JSON object on stdout.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::auth::KeyMode;
use crate::config::Settings;
use crate::keys::NewKeySpec;
use crate::metrics::Metrics;
use crate::ratelimit::Plan;
use crate::settler::Settler;
use crate::{admin, api, credits, db, sandbox, startup, telemetry};

#[derive(Debug, Parser)]
#[command(name = "leadlex", version, about = "Enrichment API gateway: who is behind this email or domain?")]
pub struct Cli {
    /// Database URL: sqlite://FILE (default: sqlite://leadlex.db) or postgres://…
    #[arg(long, global = true, env = "LEADLEX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "LEADLEX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server (SQLite: migrated first; PostgreSQL: run `leadlex migrate` first).
    ///
    /// On SQLite (the embedded default) it migrates the database itself. A PostgreSQL
    /// database is migrated only by `leadlex migrate` (a production schema never changes
    /// by surprise): `serve` refuses to start on one whose schema is behind, naming that
    /// command.
    Serve(ServeArgs),
    /// Run the sandbox vendors alone.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:9090")]
        bind: String,
        /// Artificial latency of every answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
    /// Print the OpenAPI spec, or write/check every committed contract file.
    Spec {
        /// YAML instead of JSON.
        #[arg(long)]
        yaml: bool,
        /// Write the spec and the vendor and configuration schemas into this directory.
        #[arg(long, value_name = "DIR", conflicts_with = "check")]
        write: Option<PathBuf>,
        /// Fail when a committed file in this directory differs from the code.
        #[arg(long, value_name = "DIR")]
        check: Option<PathBuf>,
    },
    /// Apply pending database migrations.
    Migrate,
    /// Print a new random seal key for `[secrets] seal_key` (`LEADLEX_SEAL_KEY`).
    SealKey,
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage credit balances.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Enrich a CSV file through a running server: submits it as a job (a header row
    /// naming `email`, `domain` and optionally `reference`), shows its progress, and
    /// writes the results as CSV when it is done. Ctrl-C leaves the job running.
    Enrich {
        /// The CSV file.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Where to write the results (default: FILE.results.csv).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Refuse answers less sure than this (0 to 1): those rows are a free `no_match`.
        #[arg(long)]
        min_confidence: Option<f64>,
        /// Fetch again cached data this many days old or older.
        #[arg(long)]
        max_age_days: Option<i64>,
        /// Skip the cache for every row.
        #[arg(long)]
        refresh: bool,
    },
    /// Follow or fetch a job of a running server.
    #[command(subcommand)]
    Job(JobCommand),
    /// Privacy requests: erase a subject everywhere.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Erase a person (`--email`) or a whole domain (`--domain`): every cached record of
    /// it is deleted, its data leaves every server's memory within `[privacy]
    /// refresh_ms`, and it goes on the global suppression list (as a keyed hash): it is
    /// never looked up again. Reports what it removed. Safe to run again.
    Erase {
        #[arg(long, conflicts_with = "domain", required_unless_present = "domain")]
        email: Option<String>,
        #[arg(long)]
        domain: Option<String>,
    },
}

/// Which server to call, with which key.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "LEADLEX_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API key with `write:enrich`.
    #[arg(long, env = "LEADLEX_KEY", hide_env_values = true)]
    pub key: String,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Follow a job until it is done, then write its results.
    Watch {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Where to write the results (default: ID.results.csv).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write the results of a job's items done so far, now.
    Results {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
        /// Where to write the results (default: ID.results.csv).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the bound address is logged).
    #[arg(long, env = "LEADLEX_BIND")]
    pub bind: Option<String>,
    /// Create a demo workspace with credits and print a ready key and curl line.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanArg {
    Starter,
    Pro,
    Org,
    Unmetered,
}

impl From<PlanArg> for Plan {
    fn from(p: PlanArg) -> Self {
        match p {
            PlanArg::Starter => Plan::Starter,
            PlanArg::Pro => Plan::Pro,
            PlanArg::Org => Plan::Org,
            PlanArg::Unmetered => Plan::Unmetered,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "starter")]
        plan: PlanArg,
        /// Initial credits (a ledger grant).
        #[arg(long, default_value_t = 0)]
        credits: i64,
        /// Override the plan's per-minute limit.
        #[arg(long)]
        per_minute: Option<i64>,
        /// Override the plan's daily limit.
        #[arg(long)]
        per_day: Option<i64>,
    },
    /// Change a workspace's plan or limit overrides (0 removes an override).
    Update {
        #[arg(long)]
        id: String,
        #[arg(long, value_enum)]
        plan: Option<PlanArg>,
        #[arg(long)]
        per_minute: Option<i64>,
        #[arg(long)]
        per_day: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its plaintext is printed this once.
    Create {
        #[arg(long)]
        workspace: String,
        /// `write:enrich`, `read:usage` or `admin:api_keys`; repeat for several.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z), in the future.
        #[arg(long)]
        expires_at: Option<String>,
        /// 1 to 120 characters.
        #[arg(long, default_value = "default")]
        name: String,
        /// Up to 500 characters.
        #[arg(long)]
        description: Option<String>,
        /// `standard` (the workspace's plan limits, shared), `high` (limits of its own:
        /// 5× the plan's per-minute limit; not on starter) or `unmetered` (org and
        /// unmetered plans only).
        #[arg(long, default_value = "standard")]
        tier: String,
        /// A test-mode key (`wbk_test_…`): answered by the sandbox, never charged, with
        /// small rate limits of its own (see docs/testing.md).
        #[arg(long)]
        test: bool,
    },
    /// Revoke a key.
    Revoke {
        #[arg(long)]
        id: String,
    },
    /// List a workspace's keys (never their plaintext).
    List {
        #[arg(long)]
        workspace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Add credits to a workspace.
    Grant {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        amount: i64,
    },
    /// Show a workspace's balance.
    Balance {
        #[arg(long)]
        workspace: String,
    },
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        settings.database.url = url.clone();
    }
    Ok(settings)
}

/// Reports how following a job ended; Ctrl-C exits with 130 (the job goes on).
fn followed(json_mode: bool, id: &str, outcome: crate::client::Followed) -> anyhow::Result<()> {
    match outcome {
        crate::client::Followed::Finished { out, rows } => {
            emit(json_mode, json!({"job": id, "out": out, "rows": rows}), || format!("{rows} results written to {}", out.display()));
            Ok(())
        }
        crate::client::Followed::Interrupted => std::process::exit(130),
    }
}

fn emit(json_mode: bool, value: serde_json::Value, human: impl FnOnce() -> String) {
    if json_mode {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = settings(&cli)?;
    match &cli.command {
        Command::Enrich { file, server, out, min_confidence, max_age_days, refresh } => {
            let quality = crate::lookup::input::Quality::new(*min_confidence, *max_age_days, Some(*refresh)).map_err(|problems| {
                anyhow::anyhow!(problems
                    .iter()
                    .map(|p| format!("--{}: {}", p.field.replace('_', "-"), p.message))
                    .collect::<Vec<_>>()
                    .join("; "))
            })?;
            let client = crate::client::Client::new(&server.server, &server.key)?;
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            let job = client.submit_csv(text, &quality).await?;
            eprintln!("job {} stored: {} items", job.id, job.total);
            let out = out.clone().unwrap_or_else(|| crate::client::default_out(Some(file), &job.id));
            followed(cli.json, &job.id, client.follow(&job.id, &out).await?)
        }
        Command::Job(JobCommand::Watch { id, server, out }) => {
            let client = crate::client::Client::new(&server.server, &server.key)?;
            let out = out.clone().unwrap_or_else(|| crate::client::default_out(None, id));
            followed(cli.json, id, client.follow(id, &out).await?)
        }
        Command::Job(JobCommand::Results { id, server, out }) => {
            let client = crate::client::Client::new(&server.server, &server.key)?;
            let out = out.clone().unwrap_or_else(|| crate::client::default_out(None, id));
            let rows = client.download(id, &out).await?;
            emit(cli.json, json!({"job": id, "out": out, "rows": rows}), || format!("{rows} results written to {}", out.display()));
            Ok(())
        }
        Command::Serve(args) => {
            telemetry::init(settings.server.json_logs);
            if let Some(bind) = &args.bind {
                settings.server.bind = bind.clone();
            }
            serve(settings, args.demo).await
        }
        Command::Sandbox { bind, latency_ms } => {
            telemetry::init(settings.server.json_logs);
            let sb = sandbox::Sandbox::spawn(bind, Duration::from_millis(*latency_ms)).await?;
            tracing::info!(addr = %sb.addr, "sandbox vendors listening: /vendor_a (PDL v5), /vendor_b (Clearbit)");
            startup::shutdown_signal().await;
            Ok(())
        }
        Command::Spec { yaml, write, check } => spec(*yaml, write.as_deref(), check.as_deref()),
        Command::SealKey => {
            let key = crate::seal::Sealer::generate_encoded();
            emit(cli.json, json!({"seal_key": key}), || key.clone());
            Ok(())
        }
        Command::Migrate => {
            let db = db::connect(&settings.database).await?;
            db::migrate(&db).await?;
            emit(cli.json, json!({"migrated": true}), || "migrations applied".into());
            Ok(())
        }
        Command::Workspace(cmd) => {
            let db = db::connect(&settings.database).await?;
            db::ensure_schema(&db).await?;
            match cmd {
                WorkspaceCommand::Create { name, plan, credits, per_minute, per_day } => {
                    let settler = Settler::spawn(&settings.database, Arc::new(Metrics::new())).await?;
                    let ws = admin::create_workspace(&db, &settler, name, (*plan).into(), *credits, *per_minute, *per_day).await?;
                    emit(cli.json, serde_json::to_value(&ws)?, || {
                        format!("workspace {} ({}, plan {}, {} credits)", ws.id, ws.name, ws.plan, ws.balance)
                    });
                }
                WorkspaceCommand::Update { id, plan, per_minute, per_day } => {
                    admin::update_workspace(&db, id, plan.map(Into::into), *per_minute, *per_day).await?;
                    emit(cli.json, json!({"id": id, "updated": true}), || format!("workspace {id} updated"));
                }
            }
            Ok(())
        }
        Command::Key(cmd) => {
            let db = db::connect(&settings.database).await?;
            db::ensure_schema(&db).await?;
            match cmd {
                KeyCommand::Create { workspace, permissions, expires_at, name, description, tier, test } => {
                    let mode = if *test { KeyMode::Test } else { KeyMode::Live };
                    let spec = NewKeySpec::from_text(name, description.as_deref(), permissions, tier, expires_at.as_deref(), mode)
                        .map_err(|problems| {
                            anyhow::anyhow!(problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))
                        })?;
                    let key = admin::create_key_with(&db, workspace, &spec).await?;
                    emit(cli.json, serde_json::to_value(&key)?, || {
                        format!("key {} created; store it now, it is not shown again:\n{}", key.id, key.key)
                    });
                }
                KeyCommand::Revoke { id } => {
                    admin::revoke_key(&db, id, std::time::Duration::from_secs(settings.jobs.retention_days * 86_400)).await?;
                    emit(cli.json, json!({"id": id, "revoked": true}), || format!("key {id} revoked"));
                }
                KeyCommand::List { workspace } => {
                    let keys = admin::list_keys(&db, workspace).await?;
                    emit(cli.json, json!({"keys": keys}), || {
                        keys.iter()
                            .map(|k| {
                                format!(
                                    "{}\t{}\t{}\t{}",
                                    k.id,
                                    k.prefix,
                                    k.permissions.join(","),
                                    if k.revoked_at.is_some() { "revoked" } else { "active" }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
            }
            Ok(())
        }
        Command::Privacy(PrivacyCommand::Erase { email, domain }) => {
            let subject = crate::privacy::DataSubject::parse(email.as_deref(), domain.as_deref()).map_err(|problems| {
                anyhow::anyhow!(problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))
            })?;
            let db = db::connect(&settings.database).await?;
            db::ensure_schema(&db).await?;
            let sealer = Arc::new(startup::sealer(&settings)?);
            // An operator's process caches nothing: servers empty theirs on the next refresh.
            let suppressions = crate::privacy::Suppressions::load(db, sealer, Vec::new()).await?;
            // Rows a server was writing at the moment of the first pass are gone in the
            // second: by then every server knows the subject and looks it up no more.
            let settle = Duration::from_millis(settings.privacy.refresh_ms.saturating_mul(2)) + Duration::from_millis(500);
            let report = crate::erasure::erase(&suppressions, &subject, crate::now_ms(), settle).await?;
            emit(cli.json, serde_json::to_value(&report)?, || {
                format!(
                    "erased the {}: {} cached record(s) deleted, {} stored answer(s) redacted, {} job item(s) redacted; {} the global suppression list",
                    report.kind,
                    report.cache_rows_deleted,
                    report.replays_redacted,
                    report.job_results_redacted,
                    if report.already_suppressed { "already on" } else { "added to" }
                )
            });
            Ok(())
        }
        Command::Credits(cmd) => {
            let db = db::connect(&settings.database).await?;
            db::ensure_schema(&db).await?;
            match cmd {
                CreditsCommand::Grant { workspace, amount } => {
                    let settler = Settler::spawn(&settings.database, Arc::new(Metrics::new())).await?;
                    let balance = credits::grant(&settler, workspace, *amount).await.context("granting credits")?;
                    emit(cli.json, json!({"balance": balance}), || format!("balance of {workspace}: {balance}"));
                }
                CreditsCommand::Balance { workspace } => {
                    let Some(balance) = credits::balance(&db, workspace).await? else { bail!("no such workspace") };
                    emit(cli.json, json!({"balance": balance}), || format!("balance of {workspace}: {balance}"));
                }
            }
            Ok(())
        }
    }
}

async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    tracing::info!(database = %db::redact(&settings.database.url), "starting leadlex");
    let app = startup::Application::build(settings).await?;
    let addr = app.addr();
    tracing::info!(%addr, "Swagger UI at http://{addr}/docs");
    println!("listening on http://{addr}");
    if demo {
        let (ws, key) = admin::demo(app.db(), app.settler()).await?;
        println!(
            "\nleadlex demo is ready.\n  workspace: {ws}\n  API key:   {key}\n             (every permission: {permissions})\n  Swagger UI: http://{addr}/docs (Authorize with the key)\n\n  curl -s -X POST http://{addr}/v1/email/enrich \\\n    -H \"Authorization: Bearer {key}\" \\\n    -H \"Content-Type: application/json\" \\\n    -d '{{\"email\": \"jane@acme.com\"}}'\n",
            key = key.key,
            permissions = key.permissions.join(", ")
        );
    }
    app.run_until_stopped(startup::shutdown_signal()).await?;
    Ok(())
}

fn spec(yaml: bool, write: Option<&std::path::Path>, check: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(dir) = write {
        for (path, text) in api::spec::committed_files() {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
            eprintln!("wrote {}", target.display());
        }
        return Ok(());
    }
    if let Some(dir) = check {
        let mut stale = Vec::new();
        for (path, text) in api::spec::committed_files() {
            let target = dir.join(path);
            if std::fs::read_to_string(&target).ok().as_deref() != Some(text.as_str()) {
                stale.push(target.display().to_string());
            }
        }
        if !stale.is_empty() {
            bail!("out of date (run `cargo run -- spec --write openapi`): {}", stale.join(", "));
        }
        return Ok(());
    }
    let text = if yaml { api::spec::openapi_yaml_text() } else { api::spec::openapi_json_text() };
    print_all(text.as_bytes())
}

/// Writes `bytes` to stdout; a reader that stopped reading (`leadlex spec | head`) is
/// not an error.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
