//! Test harness: spawns the real server in-process on port 0 with a fresh database
//! (a new SQLite file, or a new PostgreSQL database) and the sandbox vendors, and offers
//! typed helpers to create workspaces and keys and to call the API.
//!
//! PostgreSQL is reached at `LEADLEX_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`). Logs are shown with `TEST_LOG=1`.

use std::{collections::BTreeSet, sync::Once, time::Duration};

use leadlex::{
    admin::{self, KeyCreated},
    auth::Permission,
    config::Settings,
    credits,
    ratelimit::Plan,
    startup::Application,
};
use reqwest::header::HeaderMap;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend for each named `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}

static TRACING: Once = Once::new();

fn init_logs() {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            leadlex::telemetry::init(false);
        }
    });
}

pub fn postgres_base_url() -> String {
    std::env::var("LEADLEX_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, empty database URL for `backend`, and what keeps it alive.
pub async fn fresh_database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}/leadlex.db", dir.path().display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let base = postgres_base_url();
            let admin = Database::connect(format!("{base}/postgres")).await.expect("PostgreSQL is reachable");
            let name = format!("leadlex_t_{}", uuid::Uuid::new_v4().simple());
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
            admin.close().await.ok();
            (format!("{base}/{name}"), None)
        }
    }
}

/// A migrated database for tests that run the real binary (`replicas::Replica`), with a
/// connection and a settler for the test's own setup, and a folder for configuration
/// files; a PostgreSQL database is dropped when it goes.
pub struct ProcessStore {
    pub url: String,
    pub db: DatabaseConnection,
    pub settler: leadlex::settler::Settler,
    pub dir: tempfile::TempDir,
    pg_database: Option<String>,
    _keep: Option<tempfile::TempDir>,
}

impl ProcessStore {
    pub async fn new(backend: Backend) -> Self {
        let (url, keep) = fresh_database(backend).await;
        let mut settings = Settings::default();
        settings.database.url = url.clone();
        let db = leadlex::db::connect(&settings.database).await.unwrap();
        leadlex::db::migrate(&db).await.unwrap();
        let settler = leadlex::settler::Settler::spawn(&settings.database, Default::default()).await.unwrap();
        let pg_database = (backend == Backend::Postgres).then(|| url.rsplit('/').next().unwrap().to_string());
        Self { url, db, settler, dir: tempfile::tempdir().unwrap(), pg_database, _keep: keep }
    }

    /// A workspace on `plan` with `credits`, and a key of it with `permissions`.
    pub async fn funded(&self, plan: Plan, credits: i64, permissions: &[Permission]) -> (String, String) {
        let ws = leadlex::admin::create_workspace(&self.db, &self.settler, "t", plan, credits, None, None).await.unwrap().id;
        let key = leadlex::admin::create_key(&self.db, &ws, "t", &permissions.iter().copied().collect(), None).await.unwrap().key;
        (ws, key)
    }

    /// Writes a configuration file; its path.
    pub fn config(&self, toml: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("leadlex.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }
}

impl Drop for ProcessStore {
    fn drop(&mut self) {
        if let Some(name) = self.pg_database.take() {
            drop_database_blocking(name);
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub db: DatabaseConnection,
    /// What the server was built with (a replica is built with the same).
    pub settings: Settings,
    /// The server's writer of balances, for grants.
    pub settler: leadlex::settler::Settler,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The PostgreSQL database to drop when the test ends.
    pg_database: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.code` of an envelope, after checking the envelope's shape.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let err = &body["error"];
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "envelope has a message: {body}");
        assert_eq!(err["request_id"].as_str(), self.header("x-request-id"), "the body's request_id is the X-Request-ID header");
        err["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}")).to_string()
    }

    pub fn assert_rate_limit_headers(&self) {
        for h in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            let v = self.header(h).unwrap_or_else(|| panic!("{h} missing on a {} response", self.status));
            v.parse::<u64>().unwrap_or_else(|_| panic!("{h} is not an integer: {v}"));
        }
    }
}

/// Sends a request and checks the response against the committed spec; `Err` only when
/// no HTTP response came back (connection refused or reset).
pub async fn send(client: &reqwest::Client, builder: reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
    let req = builder.build().expect("request builds");
    let (method, path) = (req.method().to_string(), req.url().path().to_string());
    let resp = client.execute(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?.to_vec();
    crate::spec_check::check(&method, &path, status, &headers, &bytes);
    Ok(Resp { status, headers, bytes })
}

/// The Redis the tests share (`LEADLEX_TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("LEADLEX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The seal key of test servers on PostgreSQL (32 bytes, base64url).
pub const TEST_SEAL_KEY: &str = "dGVzdC1zZWFsLWtleS0zMi1ieXRlcy1sb25nLW9rISE";

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// A fresh database with only the first `migrations` migrations applied: the schema of
/// a previous release (its url, the directory that holds it on SQLite, a connection).
pub async fn previous_release_database(
    backend: Backend,
    migrations: u32,
) -> (String, Option<tempfile::TempDir>, sea_orm::DatabaseConnection) {
    use migration::MigratorTrait;
    let (url, dir) = fresh_database(backend).await;
    let db = leadlex::db::connect(&leadlex::config::DatabaseSettings { url: url.clone(), ..Default::default() }).await.unwrap();
    migration::Migrator::up(&db, Some(migrations)).await.unwrap();
    (url, dir, db)
}

/// What a previous release stored for a workspace, written straight into a database
/// whose schema is that release's (no settler: today's writes tables it lacks): the
/// workspace row at `balance` and the ledger rows `(delta, reason, created_at)` that
/// add up to it.
pub async fn previous_release_workspace(db: &sea_orm::DatabaseConnection, id: &str, balance: i64, ledger: &[(i64, &str, i64)]) {
    use sea_orm::{ActiveModelTrait, Set};
    let created_at = ledger.first().map(|r| r.2).unwrap_or_else(leadlex::now_ms);
    entity::workspace::ActiveModel {
        id: Set(id.into()),
        name: Set("old".into()),
        plan: Set("unmetered".into()),
        rate_limit_per_minute: Set(None),
        rate_limit_per_day: Set(None),
        credit_balance: Set(balance),
        created_at: Set(created_at),
    }
    .insert(db)
    .await
    .unwrap();
    let mut after = 0;
    for &(delta, reason, at) in ledger {
        after += delta;
        entity::credit_ledger::ActiveModel {
            workspace_id: Set(id.into()),
            delta: Set(delta),
            balance_after: Set(after),
            reason: Set(reason.into()),
            created_at: Set(at),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
    }
    assert_eq!(after, balance, "the ledger adds up to the balance");
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let (database_url, dir) = fresh_database(backend).await;
    let mut settings = Settings::default();
    settings.database.url = database_url.clone();
    settings.database.max_connections = 8;
    settings.server.bind = "127.0.0.1:0".into();
    // Revocations and top-ups take effect at once (the key cache is tested on its own).
    settings.hot_caches.known_keys.ttl_ms = 0;
    settings.hot_caches.empty_workspaces.ttl_ms = 0;
    // What a PostgreSQL deployment must configure (SQLite generates one by itself).
    if backend == Backend::Postgres {
        settings.secrets.seal_key = Some(leadlex::config::Secret::new(TEST_SEAL_KEY));
    }
    configure(&mut settings);
    if backend == Backend::Postgres {
        // As `leadlex migrate` would: the server itself never migrates PostgreSQL.
        let db = leadlex::db::connect(&settings.database).await.expect("PostgreSQL is reachable");
        leadlex::db::migrate(&db).await.expect("migrations run");
        db.close().await.ok();
    }
    let pg_database = (backend == Backend::Postgres).then(|| database_url.rsplit('/').next().unwrap().to_string());
    start(settings, pg_database, dir).await
}

/// Builds and starts a server on `settings`; drops `pg_database` when it ends.
async fn start(settings: Settings, pg_database: Option<String>, dir: Option<tempfile::TempDir>) -> TestApp {
    let app = Application::build(settings.clone()).await.expect("application builds");
    let base = format!("http://{}", app.addr());
    let db = app.db().clone();
    let settler = app.settler().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        db,
        settings,
        settler,
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        shutdown: Some(tx),
        pg_database,
        _dir: dir,
    }
}

impl TestApp {
    /// A second server on this one's database and settings (a replica).
    pub async fn replica(&self) -> TestApp {
        start(self.settings.clone(), None, None).await
    }

    /// A second server on this one's database, its settings changed by `configure`.
    pub async fn replica_with(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        configure(&mut settings);
        start(settings, None, None).await
    }

    /// Runs the real binary against this server's database and seal key; its `--json`
    /// answer.
    pub fn cli(&self, args: &[&str]) -> Value {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_leadlex"));
        command.args(["--database-url", &self.settings.database.url, "--json"]).args(args).env_remove("LEADLEX_CONFIG");
        if let Some(key) = &self.settings.secrets.seal_key {
            command.env("LEADLEX_SEAL_KEY", key.expose());
        }
        let out = command.output().expect("binary runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(name) = self.pg_database.take() {
            drop_database_blocking(name);
        }
    }
}

/// Drops a test database (forcing its connections closed), from a thread of its own so
/// that it works inside `Drop`.
pub fn drop_database_blocking(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if let Ok(admin) = Database::connect(format!("{}/postgres", postgres_base_url())).await {
                let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                admin.close().await.ok();
            }
        });
    })
    .join();
}

impl TestApp {
    pub async fn workspace(&self, plan: Plan, credits: i64) -> String {
        admin::create_workspace(&self.db, &self.settler, "test", plan, credits, None, None).await.unwrap().id
    }

    /// A standard key; one with an expiry in the past (which no one can create) gets it
    /// written afterwards.
    pub async fn key(&self, workspace: &str, permissions: &[Permission], expires_at_ms: Option<i64>) -> KeyCreated {
        use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, QueryFilter};
        let perms: BTreeSet<Permission> = permissions.iter().copied().collect();
        let past = expires_at_ms.filter(|at| *at <= leadlex::now_ms());
        let created =
            admin::create_key(&self.db, workspace, "test", &perms, if past.is_some() { None } else { expires_at_ms }).await.unwrap();
        if let Some(at) = past {
            entity::api_key::Entity::update_many()
                .col_expr(entity::api_key::Column::ExpiresAt, Expr::value(at))
                .filter(entity::api_key::Column::Id.eq(created.id.as_str()))
                .exec(&self.db)
                .await
                .unwrap();
        }
        created
    }

    /// A test-mode key (`wbk_test_…`) holding `permissions`, created over the API as a
    /// customer would, by `admin` (a key holding `admin:api_keys` and those permissions).
    pub async fn test_key(&self, admin: &str, permissions: &[&str]) -> String {
        let made = self
            .request(
                self.client
                    .post(format!("{}/v1/api-keys", self.base))
                    .bearer_auth(admin)
                    .json(&serde_json::json!({"name": "ci", "permissions": permissions, "mode": "test"})),
            )
            .await;
        assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.bytes));
        let key = made.json()["data"]["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("wbk_test_"), "{key}");
        key
    }

    /// An unmetered workspace with `credits` and a `write:enrich` key.
    pub async fn funded(&self, credits: i64) -> (String, String) {
        self.funded_on(Plan::Unmetered, credits).await
    }

    pub async fn funded_on(&self, plan: Plan, credits: i64) -> (String, String) {
        let ws = self.workspace(plan, credits).await;
        let key = self.key(&ws, &[Permission::WriteEnrich], None).await;
        (ws, key.key)
    }

    /// Sends a request and checks the response against the committed spec.
    pub async fn request(&self, builder: reqwest::RequestBuilder) -> Resp {
        send(&self.client, builder).await.expect("request sent")
    }

    /// Sends each request, with `key` as its bearer (none: no `Authorization`), and
    /// asserts that each is answered `status` with the error `code`.
    pub async fn assert_each(
        &self,
        requests: impl IntoIterator<Item = reqwest::RequestBuilder>,
        key: Option<&str>,
        (status, code): (u16, &str),
    ) {
        for req in requests {
            let req = match key {
                Some(key) => req.bearer_auth(key),
                None => req,
            };
            let what =
                req.try_clone().and_then(|r| r.build().ok()).map(|r| format!("{} {}", r.method(), r.url().path())).unwrap_or_default();
            let r = self.request(req).await;
            assert_eq!((r.status, r.error_code().as_str()), (status, code), "{what}");
        }
    }

    /// A key with `permissions` of a fresh starter workspace that has spent its minute
    /// (asking `GET probe`): every call it makes now is `429`.
    pub async fn throttled_key(&self, permissions: &[Permission], probe: &str) -> String {
        let starter = self.workspace(Plan::Starter, 10).await;
        let key = self.key(&starter, permissions, None).await.key;
        while self.request(self.client.get(format!("{}{probe}", self.base)).bearer_auth(&key)).await.status != 429 {}
        key
    }

    pub fn post_enrich(&self, key: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/v1/email/enrich", self.base)).bearer_auth(key)
    }

    pub async fn enrich(&self, key: &str, body: Value) -> Resp {
        self.request(self.post_enrich(key).json(&body)).await
    }

    pub async fn enrich_idem(&self, key: &str, idem: &str, body: Value) -> Resp {
        self.request(self.post_enrich(key).header("Idempotency-Key", idem).json(&body)).await
    }

    pub async fn balance(&self, workspace: &str) -> i64 {
        credits::balance(&self.db, workspace).await.unwrap().unwrap()
    }

    /// Checks the money invariants and returns the balance.
    pub async fn assert_books_balance(&self, workspace: &str) -> i64 {
        let balance = self.balance(workspace).await;
        let ledger = credits::ledger(&self.db, workspace).await.unwrap();
        let sum: i64 = ledger.iter().map(|r| r.delta).sum();
        assert!(balance >= 0, "balance is never negative");
        assert_eq!(sum, balance, "the ledger sums to the balance");
        // The usage counters say what the ledger says, day by day (UTC).
        let mut by_day: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
        for row in &ledger {
            let day = by_day.entry(leadlex::time::utc_day_start(row.created_at)).or_default();
            match row.reason.as_str() {
                "enrich" => day.0 -= row.delta,
                _ => day.1 += row.delta,
            }
        }
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let counted: std::collections::BTreeMap<i64, (i64, i64)> = entity::credit_usage_day::Entity::find()
            .filter(entity::credit_usage_day::Column::WorkspaceId.eq(workspace))
            .all(&self.db)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.day, (d.charged, d.granted)))
            .collect();
        assert_eq!(counted, by_day, "the usage counters add up the ledger per day: (charged, granted)");
        balance
    }

    /// Holds `idempotency_key` for a request with `fingerprint`, as a call still running
    /// would (its claim leased for 30 s).
    pub async fn hold_claim(&self, workspace: &str, idempotency_key: &str, fingerprint: &str) {
        let idem =
            leadlex::idempotency::Idempotent { key: idempotency_key, lease: Duration::from_secs(30), ttl: Duration::from_secs(3600) };
        let scope = leadlex::scope::Scope::live(workspace);
        let begun = leadlex::idempotency::begin(&self.db, &scope, idem, fingerprint, None, leadlex::now_ms()).await.unwrap();
        assert!(matches!(begun, leadlex::idempotency::Begun::Fresh(_)));
    }

    /// Every vendor call the server made so far (its `/metrics`).
    pub async fn vendor_calls(&self) -> u64 {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines().filter(|l| l.starts_with("leadlex_vendor_calls_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    }

    /// How many enrich debits the ledger holds.
    pub async fn charges(&self, workspace: &str) -> usize {
        credits::ledger(&self.db, workspace).await.unwrap().iter().filter(|r| r.reason == "enrich").count()
    }
}

/// Finds a sandbox input by who knows it: `template` gets `{i}` replaced until `pred`
/// holds for (vendor_a knows, vendor_b knows).
pub fn sandbox_input(template: &str, pred: impl Fn(bool, bool) -> bool) -> String {
    use leadlex::lookup::vendors::VendorName;
    use leadlex::sandbox::data::knows;
    (0..10_000)
        .map(|i| template.replace("{i}", &i.to_string()))
        .find(|s| pred(knows(VendorName::VendorA, s), knows(VendorName::VendorB, s)))
        .expect("an input exists")
}

/// A domain only vendor_a knows, etc.
pub fn domain_known_by(a: bool, b: bool) -> String {
    sandbox_input("company{i}.com", |ka, kb| ka == a && kb == b)
}

/// A base URL nobody listens on (a port that was free a moment ago): connections are
/// refused.
pub fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

/// A mock vendor (People Data Labs format) that knows everyone as the same person,
/// `full_name`; the test can count what it is asked.
pub async fn person_vendor(full_name: &str) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    let person = serde_json::json!({"status": 200, "likelihood": 8, "data": {"full_name": full_name, "job_title": "CFO"}});
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(person))
        .mount(&server)
        .await;
    server
}

/// One live vendor (the People Data Labs format) at `base_url`, answering within
/// `timeout_ms`: the waterfall of a server whose vendor a test controls.
pub fn one_vendor(base_url: String, timeout_ms: u64) -> Vec<leadlex::config::VendorSettings> {
    vec![leadlex::config::VendorSettings {
        name: leadlex::lookup::vendors::VendorName::VendorA,
        base_url,
        api_key: leadlex::config::Secret::new("live-vendor-key"),
        timeout_ms,
    }]
}

/// A server whose one live vendor is `vendor`.
pub async fn spawn_app_with_vendor(backend: Backend, vendor: &wiremock::MockServer) -> TestApp {
    let base = vendor.uri();
    spawn_app_with(backend, move |s| s.vendors = one_vendor(base, 2_000)).await
}
