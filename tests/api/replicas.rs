//! The production store: several real `leadlex serve` processes on one PostgreSQL
//! database and one Redis. Money and limits hold in total, across crashes (SIGKILL),
//! graceful shutdown (SIGTERM) and a database outage.

use std::{path::PathBuf, process::Stdio, time::Duration};

use futures::future::join_all;
use leadlex::{admin, auth::Permission, config::Settings, ratelimit::Plan};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{fresh_database, redis_url, sandbox_input, send, spawn_app_with, Backend, Resp};

/// A `leadlex serve` child process.
pub struct Replica {
    pub child: tokio::process::Child,
    pub base: String,
}

impl Replica {
    pub async fn start(database_url: &str, config: &PathBuf) -> Replica {
        Self::start_with_redis(database_url, config, Some(&redis_url())).await
    }

    /// A replica whose Redis is `redis` (`None`: what its configuration file says).
    pub async fn start_with_redis(database_url: &str, config: &PathBuf, redis: Option<&str>) -> Replica {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadlex"));
        command.env_remove("LEADLEX_REDIS_URL");
        if let Some(redis) = redis {
            command.env("LEADLEX_REDIS_URL", redis);
        }
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("LEADLEX_DATABASE_URL", database_url)
            .env("LEADLEX_CONFIG", config)
            .env("LEADLEX_SEAL_KEY", crate::helpers::TEST_SEAL_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("leadlex starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.to_string();
                }
            }
            panic!("leadlex exited before listening");
        })
        .await
        .expect("replica listens within 30 s");
        Replica { child, base }
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }
}

struct Cluster {
    db: DatabaseConnection,
    settler: leadlex::settler::Settler,
    database_url: String,
    config: PathBuf,
    replicas: Vec<Replica>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` replicas on a fresh PostgreSQL database (migrated once), sharing Redis.
    async fn start(n: usize, config: &str) -> Cluster {
        let (database_url, _) = fresh_database(Backend::Postgres).await;
        let mut settings = Settings::default();
        settings.database.url = database_url.clone();
        let db = leadlex::db::connect(&settings.database).await.unwrap();
        leadlex::db::migrate(&db).await.unwrap();
        let settler = leadlex::settler::Settler::spawn(&settings.database, Default::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("leadlex.toml");
        std::fs::write(&config_path, config).unwrap();
        let replicas = join_all((0..n).map(|_| Replica::start(&database_url, &config_path))).await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(0).build().unwrap();
        Cluster { db, settler, database_url, config: config_path, replicas, client, _dir: dir }
    }

    async fn funded(&self, plan: Plan, credits: i64, per_minute: Option<i64>, per_day: Option<i64>) -> (String, String) {
        let ws = admin::create_workspace(&self.db, &self.settler, "replicas", plan, credits, per_minute, per_day).await.unwrap().id;
        let perms = [Permission::WriteEnrich].into_iter().collect();
        (ws.clone(), admin::create_key(&self.db, &ws, "t", &perms, None).await.unwrap().key)
    }

    fn enrich(&self, replica: usize, key: &str, idem: Option<&str>, body: Value) -> reqwest::RequestBuilder {
        let mut b = self.client.post(format!("{}/v1/email/enrich", self.replicas[replica].base)).bearer_auth(key).json(&body);
        if let Some(idem) = idem {
            b = b.header("Idempotency-Key", idem);
        }
        b
    }

    async fn books(&self, ws: &str) -> (i64, usize) {
        let balance = leadlex::credits::balance(&self.db, ws).await.unwrap().unwrap();
        let ledger = leadlex::credits::ledger(&self.db, ws).await.unwrap();
        assert_eq!(ledger.iter().map(|r| r.delta).sum::<i64>(), balance, "the ledger sums to the balance");
        assert!(balance >= 0);
        (balance, ledger.iter().filter(|r| r.reason == "enrich").count())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            let _ = r.child.start_kill();
        }
        crate::helpers::drop_database_blocking(self.database_url.rsplit('/').next().unwrap().to_string());
    }
}

const FAST: &str = "[server]\nrequest_deadline_ms = 3000\n[idempotency]\nlease_margin_ms = 500\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_requests_on_fifty_credits_across_replicas() {
    let cluster = Cluster::start(2, FAST).await;
    let (ws, key) = cluster.funded(Plan::Unmetered, 50, None, None).await;
    let inputs: Vec<String> = (0..400).map(|n| sandbox_input(&format!("r{n}x{{i}}@acme.com"), |a, b| a || b)).collect();
    let results = join_all(
        inputs.iter().enumerate().map(|(i, email)| send(&cluster.client, cluster.enrich(i % 2, &key, None, json!({"email": email})))),
    )
    .await;
    let statuses: Vec<u16> = results.into_iter().map(|r| r.expect("answered").status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let broke = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, broke), (50, 350), "{statuses:?}");
    assert_eq!(cluster.books(&ws).await, (0, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_on_two_replicas_charges_once() {
    let cluster = Cluster::start(2, &format!("{FAST}[sandbox]\nlatency_ms = 300\n")).await;
    let (ws, key) = cluster.funded(Plan::Unmetered, 100, None, None).await;
    for n in 0..10 {
        let idem = uuid::Uuid::new_v4().to_string();
        let body = json!({"email": sandbox_input(&format!("idem{n}x{{i}}@acme.com"), |a, b| a || b)});
        let (a, b) = tokio::join!(
            send(&cluster.client, cluster.enrich(0, &key, Some(&idem), body.clone())),
            send(&cluster.client, cluster.enrich(1, &key, Some(&idem), body.clone())),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert!(statuses == [200, 200] || statuses == [200, 409], "{statuses:?}");
        if statuses == [200, 200] {
            assert_eq!(a.bytes, b.bytes, "the second answer is the replay");
        }
    }
    assert_eq!(cluster.books(&ws).await, (90, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_in_total_across_replicas() {
    let cluster = Cluster::start(3, FAST).await;
    let (_, starter) = cluster.funded(Plan::Starter, 1000, None, None).await;
    let body = json!({"domain": "acme.com"});
    let mut admitted = 0;
    for i in 0..21 {
        let r = send(&cluster.client, cluster.enrich(i % 3, &starter, None, body.clone())).await.unwrap();
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
        } else {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "starter: 10 per minute in total, not per replica");

    let (_, daily) = cluster.funded(Plan::Starter, 1000, Some(10_000), Some(15)).await;
    let results = join_all((0..30).map(|i| send(&cluster.client, cluster.enrich(i % 3, &daily, None, body.clone())))).await;
    let admitted = results.iter().filter(|r| r.as_ref().unwrap().status != 429).count();
    assert_eq!(admitted, 15, "the daily quota holds in total");
    let last: Vec<&Resp> = results.iter().map(|r| r.as_ref().unwrap()).filter(|r| r.status == 429).collect();
    assert!(last.iter().all(|r| r.header("x-ratelimit-remaining") == Some("0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_money() {
    let mut cluster = Cluster::start(2, &format!("{FAST}[sandbox]\nlatency_ms = 150\n")).await;
    let (ws, key) = cluster.funded(Plan::Unmetered, 1000, None, None).await;
    let jobs: Vec<(String, Value)> = (0..40)
        .map(|n| {
            let email = sandbox_input(&format!("kill{n}x{{i}}@acme.com"), |a, b| a || b);
            (uuid::Uuid::new_v4().to_string(), json!({"email": email}))
        })
        .collect();
    // Calls start 10 ms apart and take ~150 ms each: the replica is killed as soon as
    // the first one is answered (not at a fixed time: a cold or busy machine answers the
    // first call later), when some have been answered, some are with the vendor, some
    // are settling, and the rest have not started.
    let first_answer = tokio::sync::Notify::new();
    let (cluster_ref, key, first_answer_ref) = (&cluster, key.as_str(), &first_answer);
    let in_flight = join_all(jobs.iter().enumerate().map(|(i, (idem, body))| async move {
        tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
        let r = send(&cluster_ref.client, cluster_ref.enrich(0, key, Some(idem), body.clone())).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            first_answer_ref.notify_one();
        }
        r
    }));
    let killer = async {
        let _ = tokio::time::timeout(Duration::from_secs(10), first_answer.notified()).await;
        cluster.replicas[0].signal("-KILL");
    };
    let (first, ()) = tokio::join!(in_flight, killer);
    let cut = first.iter().filter(|r| r.is_err()).count();
    let answered = first.iter().filter(|r| r.as_ref().is_ok_and(|r| r.status == 200)).count();
    assert!(cut > 0 && answered > 0, "the kill landed mid-load: {answered} answered, {cut} cut");

    // Restart the dead replica; retry every call with its key until it is not 409.
    cluster.replicas[0] = Replica::start(&cluster.database_url, &cluster.config).await;
    let mut bodies = Vec::new();
    for (i, (idem, body)) in jobs.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let r = send(&cluster.client, cluster.enrich(i % 2, key, Some(idem), body.clone())).await.unwrap();
            if r.status == 409 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
            if let Ok(original) = &first[i] {
                if original.status == 200 {
                    assert_eq!(r.bytes, original.bytes, "a call answered before the kill is replayed");
                }
            }
            bodies.push(r);
            break;
        }
    }
    let (balance, charges) = cluster.books(&ws).await;
    assert_eq!(charges, 40, "every key charged exactly once");
    assert_eq!(balance, 960);
    use entity::idempotency_record as rec;
    let completed = rec::Entity::find().filter(rec::Column::State.eq("completed")).count(&cluster.db).await.unwrap();
    assert_eq!(completed, 40, "each charge has the stored response a retry gets back");
    let stuck = rec::Entity::find()
        .filter(rec::Column::State.eq("in_progress"))
        .filter(rec::Column::LockedUntil.lt(leadlex::now_ms()))
        .count(&cluster.db)
        .await
        .unwrap();
    assert_eq!(stuck, 0, "no claim stays in progress past its lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut cluster = Cluster::start(1, &format!("{FAST}[sandbox]\nlatency_ms = 1000\n")).await;
    let (ws, key) = cluster.funded(Plan::Unmetered, 10, None, None).await;
    let in_flight = send(&cluster.client, cluster.enrich(0, &key, None, json!({"email": "jane@acme.com"})));
    let term = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.replicas[0].signal("-TERM");
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&cluster.client, cluster.enrich(0, &key, None, json!({"domain": "acme.com"}))).await
    };
    let (finished, refused) = tokio::join!(in_flight, term);
    assert_eq!(finished.expect("the in-flight request finishes").status, 200);
    assert!(refused.is_err(), "no new request is accepted after SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(10), cluster.replicas[0].child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(cluster.books(&ws).await, (9, 1));
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
pub struct Proxy {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to the local PostgreSQL on `port` (0: a free one).
    pub async fn start(port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { break };
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, task: Some(task) }
    }

    /// Stops listening and cuts every open connection (the JoinSet aborts them).
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_503_and_recovers_by_itself() {
    let (direct_url, _) = fresh_database(Backend::Postgres).await;
    let name = direct_url.rsplit('/').next().unwrap().to_string();
    let mut proxy = Proxy::start(0).await;
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port);
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.database.url = proxied.clone();
        s.database.acquire_timeout_secs = 1;
    })
    .await;
    let (ws, key) = app.funded(10).await;
    let admin = app
        .key(
            &ws,
            &[
                leadlex::auth::Permission::AdminApiKeys,
                leadlex::auth::Permission::ReadUsage,
                leadlex::auth::Permission::AdminPrivacy,
                leadlex::auth::Permission::AdminWebhooks,
            ],
            None,
        )
        .await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    let ready = app.request(app.client.get(format!("{}/readyz", app.base))).await;
    assert_eq!(ready.status, 200);

    proxy.cut();
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.error_code(), "service_unavailable");
    assert!(r.header("retry-after").is_some());
    let ready = app.request(app.client.get(format!("{}/readyz", app.base))).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.error_code(), "service_unavailable");
    // Every key operation says the same (the key itself cannot be looked up).
    let keys = format!("{}/v1/api-keys", app.base);
    for req in [
        app.client.get(&keys),
        app.client.post(&keys).json(&json!({"name": "n", "permissions": ["write:enrich"]})),
        app.client.delete(format!("{keys}/key_0")),
        app.client.get(format!("{}/v1/usage", app.base)),
        app.client.get(format!("{}/v1/credits/ledger", app.base)),
        app.client.post(format!("{}/v1/email/enrich/bulk", app.base)).json(&json!({"items": [{"domain": "acme.com"}]})),
        app.client.post(format!("{}/v1/enrich/jobs", app.base)).json(&json!({"items": [{"domain": "acme.com"}]})),
        app.client.get(format!("{}/v1/enrich/jobs", app.base)),
        app.client.get(format!("{}/v1/enrich/jobs/job_0", app.base)),
        app.client.post(format!("{}/v1/enrich/jobs/job_0/cancel", app.base)),
        app.client.get(format!("{}/v1/enrich/jobs/job_0/results", app.base)),
        app.client.post(format!("{}/v1/suppressions", app.base)).json(&json!({"email": "a@b.co"})),
        app.client.get(format!("{}/v1/suppressions", app.base)),
        app.client.delete(format!("{}/v1/suppressions/sup_0", app.base)),
        app.client.post(format!("{}/v1/webhooks", app.base)).json(&json!({"url": "https://x.com", "events": ["credits.low"]})),
        app.client.get(format!("{}/v1/webhooks", app.base)),
        app.client.get(format!("{}/v1/webhooks/wh_0", app.base)),
        app.client.patch(format!("{}/v1/webhooks/wh_0", app.base)).json(&json!({"active": true})),
        app.client.delete(format!("{}/v1/webhooks/wh_0", app.base)),
        app.client.post(format!("{}/v1/webhooks/wh_0/rotate-secret", app.base)),
        app.client.post(format!("{}/v1/webhooks/wh_0/test", app.base)),
        app.client.get(format!("{}/v1/webhooks/wh_0/deliveries", app.base)),
        app.client.post(format!("{}/v1/webhooks/wh_0/deliveries/d/redeliver", app.base)),
    ] {
        let r = app.request(req.bearer_auth(&admin.key)).await;
        assert_eq!((r.status, r.error_code().as_str()), (503, "service_unavailable"));
    }

    let _proxy = Proxy::start(proxy.port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
        if r.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "recovers once the database is back: {}", r.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(app.request(app.client.get(format!("{}/readyz", app.base))).await.status, 200);
    assert_eq!(app.assert_books_balance(&ws).await, 8, "the outage charged nothing");
    crate::helpers::drop_database_blocking(name);
}
