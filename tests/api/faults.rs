//! Outages as an operator meets them, with real processes and paid load: a PostgreSQL
//! server of the test's own restarted (`pg_ctl restart -m fast`: the clients see
//! `57P01` and broken connections), connections cut mid-transaction by a proxy, a Redis
//! of the test's own shut down, and SQLite's file system full or read-only. Under eight
//! clients retrying with `Idempotency-Key`s, each case asserts: no `500`, `Retry-After`
//! on every `503`, `/readyz` answering within its bound and saying the truth, recovery
//! without a restart, and the books (each key charged at most once, exactly the keys
//! whose last answer is a `200`; balance = grants − charges; ledger = balance). Every
//! loop is bounded in time and count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadlex::{auth::Permission, config::Settings, ratelimit::Plan};
use sea_orm::DatabaseConnection;
use serde_json::{json, Value};

use crate::replicas::Replica;

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Every status answered, by status.
    statuses: BTreeMap<u16, usize>,
    /// 503s without `Retry-After`.
    without_retry_after: usize,
    /// Each `Idempotency-Key` used, with its body.
    keys: Vec<(String, Value)>,
    /// 500s, with their bodies.
    internal: Vec<String>,
}

/// Readiness as a prober saw it: `(status, body)` of each probe, `None` when it did not
/// answer within a second.
type Probes = Arc<Mutex<Vec<Option<(u16, String)>>>>;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
}

/// Eight clients calling `POST /v1/email/enrich` on `base` for `how_long` (each at most
/// 250 calls, 25 a second), each call with a key of its own, retried with the same key
/// after a 409 or 503 (at most 20 times).
async fn paid_load(base: String, key: String, how_long: Duration) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let deadline = tokio::time::Instant::now() + how_long;
    let clients = (0..8).map(|c| {
        let (base, key, seen) = (base.clone(), key.clone(), seen.clone());
        tokio::spawn(async move {
            let http = client();
            for n in 0..250 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                let idem = uuid::Uuid::new_v4().to_string();
                let body = json!({"email": format!("person{}@company{}.com", c * 10_000 + n, n % 50)});
                seen.lock().unwrap().keys.push((idem.clone(), body.clone()));
                for _ in 0..20 {
                    let sent = http
                        .post(format!("{base}/v1/email/enrich"))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", &idem)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(resp) = sent else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let status = resp.status().as_u16();
                    let retry_after = resp.headers().contains_key("retry-after");
                    let text = resp.text().await.unwrap_or_default();
                    {
                        let mut seen = seen.lock().unwrap();
                        *seen.statuses.entry(status).or_default() += 1;
                        if status == 503 && !retry_after {
                            seen.without_retry_after += 1;
                        }
                        if status == 500 {
                            seen.internal.push(text);
                        }
                    }
                    if status != 503 && status != 409 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    });
    futures::future::join_all(clients).await;
    Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
}

/// Probes `/readyz` every 200 ms until `stop`, each with a one-second timeout (what an
/// orchestrator allows).
fn probe_readiness(base: String, stop: Arc<tokio::sync::Notify>) -> (Probes, tokio::task::JoinHandle<()>) {
    let probes: Probes = Default::default();
    let seen = probes.clone();
    let task = tokio::spawn(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
        for _ in 0..500 {
            let answer = match http.get(format!("{base}/readyz")).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    Some((status, r.text().await.unwrap_or_default()))
                }
                Err(_) => None,
            };
            seen.lock().unwrap().push(answer);
            tokio::select! {
                _ = stop.notified() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    (probes, task)
}

/// Sends every key of the load once more, and checks the books: each key charged at most
/// once, exactly the keys whose answer is now a `200` (a replay, or the call run now),
/// and the ledger summing to the balance.
async fn assert_books(base: &str, key: &str, db: &DatabaseConnection, ws: &str, granted: i64, seen: &Seen) {
    let keys = Arc::new(seen.keys.clone());
    let tasks = (0..8).map(|t| {
        let (keys, base, key) = (keys.clone(), base.to_string(), key.to_string());
        tokio::spawn(async move {
            let http = client();
            let mut succeeded = 0;
            for (idem, body) in keys.iter().skip(t).step_by(8) {
                let mut status = 0;
                // A claim whose release failed in the outage is held until its lease ends
                // (the request deadline plus a margin): `409` with `Retry-After` until then.
                for _ in 0..100 {
                    let r = http
                        .post(format!("{base}/v1/email/enrich"))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", idem)
                        .json(body)
                        .send()
                        .await;
                    status = r.map(|r| r.status().as_u16()).unwrap_or(0);
                    if status != 409 && status != 503 && status != 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                assert!(matches!(status, 200 | 404), "key {idem} answers {status} once the outage is over");
                succeeded += usize::from(status == 200);
            }
            succeeded
        })
    });
    let succeeded: usize = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).sum();
    let balance = leadlex::credits::balance(db, ws).await.unwrap().unwrap();
    let ledger = leadlex::credits::ledger(db, ws).await.unwrap();
    let charges = ledger.iter().filter(|r| r.reason == "enrich").count();
    assert_eq!(ledger.iter().map(|r| r.delta).sum::<i64>(), balance, "the ledger sums to the balance");
    assert_eq!(charges, succeeded, "each key was charged once if it succeeded, never otherwise");
    assert_eq!(balance, granted - charges as i64, "balance = grants − charges");
}

/// What every outage must look like to the clients.
fn assert_no_internal_errors(seen: &Seen) {
    assert!(seen.internal.is_empty(), "500s during the outage: {:?}", seen.internal);
    assert_eq!(seen.without_retry_after, 0, "every 503 carries Retry-After");
    assert!(seen.statuses.get(&200).copied().unwrap_or(0) > 0, "calls succeeded around the outage: {:?}", seen.statuses);
}

/// Every probe's answer, after checking that each came within its second.
fn probes_answered(probes: &Probes) -> Vec<(u16, String)> {
    let probes = probes.lock().unwrap();
    assert!(!probes.is_empty());
    assert!(probes.iter().all(Option::is_some), "a readiness probe did not answer within 1 s: {probes:?}");
    probes.iter().flatten().cloned().collect()
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, as the `postgres`
/// user), so that restarting it stops nobody else's tests.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        let uid = uzers_postgres();
        std::os::unix::fs::chown(dir.path(), Some(uid.0), Some(uid.1)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Self { dir, bin, port };
        pg.run("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .expect("runuser runs");
        assert!(out.status.success(), "{tool} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    fn up(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "-t", "30", "start"]);
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "-t", "30", "stop"]);
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The `postgres` user's uid and gid.
fn uzers_postgres() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect("a postgres user");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// A migrated database at `url`, with a workspace on `plan` (its per-minute and daily
/// limits raised out of the load's way) with `credits`, and its `write:enrich` key.
async fn funded_store(url: &str, plan: Plan, credits: i64) -> (DatabaseConnection, String, String) {
    let mut settings = Settings::default();
    settings.database.url = url.to_string();
    let db = leadlex::db::connect(&settings.database).await.unwrap();
    leadlex::db::migrate(&db).await.unwrap();
    let settler = leadlex::settler::Settler::spawn(&settings.database, Default::default()).await.unwrap();
    let ws = leadlex::admin::create_workspace(&db, &settler, "faults", plan, credits, Some(1_000_000), Some(10_000_000)).await.unwrap().id;
    let perms = [Permission::WriteEnrich].into_iter().collect();
    let key = leadlex::admin::create_key(&db, &ws, "t", &perms, None).await.unwrap().key;
    (db, ws, key)
}

fn config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("leadlex.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

const GRANT: i64 = 100_000;

/// Short request deadlines, so that a claim left by an outage is taken over soon.
const FAST_LEASES: &str =
    "[database]\nacquire_timeout_secs = 1\n[server]\nrequest_deadline_ms = 3000\n[idempotency]\nlease_margin_ms = 1000\n";

/// PostgreSQL restarted (`-m fast`) under paid load: `503`s with `Retry-After`, never a
/// `500`; `/readyz` answers within its bound (`503` while the database is down, `200`
/// after); the replica recovers by itself; the books hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_503s_and_the_books_hold() {
    let pg = PrivatePostgres::start();
    let admin = leadlex::db::connect(&leadlex::config::DatabaseSettings { url: pg.url("postgres"), ..Default::default() }).await.unwrap();
    use sea_orm::ConnectionTrait;
    admin.execute_unprepared("CREATE DATABASE leadlex").await.unwrap();
    admin.close().await.ok();
    let url = pg.url("leadlex");
    let (db, ws, key) = funded_store(&url, Plan::Unmetered, GRANT).await;
    db.close().await.ok();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FAST_LEASES);
    let replica = Replica::start(&url, &config).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    let (probes, prober) = probe_readiness(replica.base.clone(), stop.clone());
    let load = tokio::spawn(paid_load(replica.base.clone(), key.clone(), Duration::from_secs(8)));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let down = tokio::task::spawn_blocking(move || {
        pg.down();
        std::thread::sleep(Duration::from_secs(3));
        pg.up();
        pg
    });
    let seen = load.await.unwrap();
    let pg = down.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    prober.await.unwrap();

    assert_no_internal_errors(&seen);
    assert!(seen.statuses.get(&503).copied().unwrap_or(0) > 0, "the outage was seen: {:?}", seen.statuses);
    let probes = probes_answered(&probes);
    assert!(probes.iter().any(|(s, _)| *s == 503), "readiness said not ready while the database was down: {probes:?}");
    assert_eq!(probes.last().unwrap().0, 200, "ready again without a restart: {probes:?}");
    let db = leadlex::db::connect(&leadlex::config::DatabaseSettings { url: url.clone(), ..Default::default() }).await.unwrap();
    assert_books(&replica.base, &key, &db, &ws, GRANT, &seen).await;
    drop(replica);
    db.close().await.ok();
    drop(pg);
}

/// Connections cut mid-transaction by a proxy, three times, under paid load: no `500`,
/// a commit whose outcome is unknown neither loses nor doubles a charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_transaction_lose_and_double_nothing() {
    let (direct, _) = crate::helpers::fresh_database(crate::helpers::Backend::Postgres).await;
    let name = direct.rsplit('/').next().unwrap().to_string();
    let (db, ws, key) = funded_store(&direct, Plan::Unmetered, GRANT).await;
    let mut proxy = crate::replicas::Proxy::start(0).await;
    let port = proxy.port;
    let proxied = format!("postgres://postgres@127.0.0.1:{port}/{name}");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), FAST_LEASES);
    let replica = Replica::start(&proxied, &config).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    let (probes, prober) = probe_readiness(replica.base.clone(), stop.clone());
    let load = tokio::spawn(paid_load(replica.base.clone(), key.clone(), Duration::from_secs(7)));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy = crate::replicas::Proxy::start(port).await;
    }
    let seen = load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    prober.await.unwrap();

    assert_no_internal_errors(&seen);
    let probes = probes_answered(&probes);
    assert_eq!(probes.last().unwrap().0, 200, "ready again: {probes:?}");
    assert_books(&replica.base, &key, &db, &ws, GRANT, &seen).await;
    drop(replica);
    drop(proxy);
    db.close().await.ok();
    crate::helpers::drop_database_blocking(name);
}

/// A Redis of the test's own, on a free port.
struct PrivateRedis {
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis shut down under metered paid load: the replica serves on its own limits (no
/// `500`), `/readyz` stays `200` and says `degraded` while Redis is down, `ready` after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_degraded_not_down() {
    let (direct, _) = crate::helpers::fresh_database(crate::helpers::Backend::Postgres).await;
    let name = direct.rsplit('/').next().unwrap().to_string();
    let (db, ws, key) = funded_store(&direct, Plan::Org, GRANT).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = PrivateRedis::start(port);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("[redis]\nurl = \"redis://127.0.0.1:{port}\"\n"));
    let replica = Replica::start_with_redis(&direct, &config, None).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    let (probes, prober) = probe_readiness(replica.base.clone(), stop.clone());
    let load = tokio::spawn(paid_load(replica.base.clone(), key.clone(), Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(redis);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let down_probes = probes.lock().unwrap().len();
    let redis = PrivateRedis::start(port);
    let seen = load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.notify_one();
    prober.await.unwrap();

    assert_no_internal_errors(&seen);
    assert_eq!(seen.statuses.get(&503), None, "Redis is optional: {:?}", seen.statuses);
    let probes = probes_answered(&probes);
    assert!(probes.iter().all(|(s, _)| *s == 200), "ready throughout: {probes:?}");
    assert!(probes[..down_probes].iter().any(|(_, body)| body.contains("\"degraded\"")), "degraded while Redis was down: {probes:?}");
    assert!(probes.last().unwrap().1.contains("\"ready\""), "ready again: {probes:?}");
    let metrics = reqwest::get(format!("{}/metrics", replica.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "leadlex_rate_limits_local 0"), "back on shared limits");
    assert_books(&replica.base, &key, &db, &ws, GRANT, &seen).await;
    drop(replica);
    drop(redis);
    db.close().await.ok();
    crate::helpers::drop_database_blocking(name);
}

/// SQLite on a small file system that fills up under paid load: `503`s with
/// `Retry-After` (never `500`), nothing committed is lost, and the replica serves again
/// once there is room. (A read-only file is the same class of SQLite error, `READONLY`,
/// unit-tested in `db`: a root test process cannot make its own file read-only to
/// itself, nor a busy mount read-only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_is_503_and_recovers() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("mount runs")
        .success();
    assert!(mounted, "mounting a small tmpfs (the suite runs as root, as CI does)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let url = format!("sqlite://{}/leadlex.db", mount.path().display());
    let (db, ws, key) = funded_store(&url, Plan::Unmetered, GRANT).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let replica = Replica::start(&url, &config).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    let (probes, prober) = probe_readiness(replica.base.clone(), stop.clone());
    let load = tokio::spawn(paid_load(replica.base.clone(), key.clone(), Duration::from_secs(8)));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Fill the file system.
    let filler = mount.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    std::fs::remove_file(&filler).unwrap();
    let seen = load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    prober.await.unwrap();

    assert_no_internal_errors(&seen);
    assert!(seen.statuses.get(&503).copied().unwrap_or(0) > 0, "the full disk was seen: {:?}", seen.statuses);
    let probes = probes_answered(&probes);
    assert_eq!(probes.last().unwrap().0, 200, "{probes:?}");
    assert_books(&replica.base, &key, &db, &ws, GRANT, &seen).await;
    drop(replica);
    db.close().await.ok();
}
