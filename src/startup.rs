//! Building and running the service: `Application::build` connects the database (and
//! migrates the embedded SQLite default; PostgreSQL must be at the binary's schema, see
//! [`crate::db::ensure_schema`]), wires vendors (the built-in sandbox when none is
//! configured) and binds the listener first, so that `addr()` is known before serving
//! (tests bind port 0).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use poem::{
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    Server,
};
use sea_orm::DatabaseConnection;

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::enrich::{EnrichParts, EnrichService};
use crate::idempotency;
use crate::key_activity::KeyActivity;
use crate::lookup::{cache, cache::CachePolicy, vendors::Vendor, Lookup, LookupParts};
use crate::metrics::Metrics;
use crate::ratelimit::{Limiter, RateLimiter, RedisLimiter};
use crate::sandbox::Sandbox;
use crate::seal::Sealer;
use crate::settler::Settler;

pub struct Application {
    addr: SocketAddr,
    acceptor: TcpAcceptor,
    /// What the HTTP application is made of; made into it when the server starts (poem
    /// erases its type once there: erased here too, each request's future would be
    /// boxed, and copied, twice). The routes are built then too: a duplicate path or
    /// operation id (a programming error, which every API test meets) panics there.
    state: Arc<AppState>,
    limits: api::middleware::BodyLimits,
    db: DatabaseConnection,
    sandbox: Sandbox,
    purger: Background,
    /// Reloads the suppression lists when they change.
    refresher: Background,
    settler: Settler,
    /// The job worker (stops after its chunk in flight), if this process runs one.
    worker: Option<Background>,
    /// The webhook delivery worker (stops after its attempts in flight), if any.
    deliverer: Option<Background>,
    /// The keys' last-use writer (writes once more and stops).
    flusher: Background,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = crate::db::connect(&settings.database).await?;
        crate::db::ensure_schema(&db).await?;

        // The sandbox answers test-mode keys always, and live calls when no vendor is
        // configured.
        let latency = Duration::from_millis(settings.sandbox.latency_ms);
        let sandbox = Sandbox::spawn("127.0.0.1:0", latency).await.context("starting the sandbox vendors")?;
        let vendor_settings = if settings.vendors.is_empty() {
            tracing::info!(addr = %sandbox.addr, "no vendor configured: using the built-in sandbox vendors");
            sandbox.vendor_settings()
        } else {
            settings.vendors.clone()
        };
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("leadlex/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let vendors: Vec<Vendor> = vendor_settings.iter().map(|v| Vendor::from_settings(v, http.clone())).collect();
        let deadline = Duration::from_millis(settings.server.request_deadline_ms);
        let metrics = Arc::new(Metrics::new());
        // The hot caches, each of its owner's type (see `crate::hot`): the cache rows are
        // shared by both lookups, and with the replays and answers emptied by an erasure.
        let caches = &settings.hot_caches;
        let cache_rows = Arc::new(crate::lookup::cache_rows(caches, &metrics));
        let replays = Arc::new(crate::enrich::replays(caches, &metrics));
        let answers = Arc::new(crate::enrich::answers(caches, &metrics));
        let key_cache = Arc::new(crate::auth::KeyCache::new(caches, &metrics));
        let settler = Settler::spawn(&settings.database, metrics.clone()).await.context("starting the settler")?;
        let mut lookup = Lookup::new(LookupParts {
            vendors,
            deadline,
            policy: settings.waterfall.clone(),
            cache: CachePolicy::from_settings(&settings.cache),
            cache_rows: cache_rows.clone(),
            settler: settler.clone(),
            metrics: metrics.clone(),
        });
        // Test-mode keys' lookup: the sandbox only, counted in metrics of its own (never
        // in the live vendors' figures).
        let mut test_lookup = Lookup::new(LookupParts {
            vendors: sandbox.vendor_settings().iter().map(|v| Vendor::from_settings(v, http.clone())).collect(),
            deadline,
            policy: crate::test_mode::waterfall(&settings.waterfall),
            cache: CachePolicy::from_settings(&settings.cache),
            cache_rows: cache_rows.clone(),
            settler: settler.clone(),
            metrics: Arc::new(Metrics::new()),
        });
        if let Some(path) = crate::db::sqlite_path(&settings.database.url) {
            let reads = Arc::new(crate::db::SqliteReads::new(path));
            lookup = lookup.with_sqlite_reads(reads.clone());
            test_lookup = test_lookup.with_sqlite_reads(reads);
        }
        tracing::info!(vendors = ?lookup.vendor_names(), "vendor waterfall");

        let limiter = match &settings.redis.url {
            Some(url) => {
                tracing::info!(redis = %crate::db::redact(url), "rate limits shared through Redis");
                Limiter::Redis(Box::new(RedisLimiter::new(url, metrics.rate_limits_local.clone()).context("parsing the Redis URL")?))
            }
            None => Limiter::Local(RateLimiter::new()),
        };
        let sealer = Arc::new(sealer(&settings)?);
        let suppressions =
            crate::privacy::Suppressions::load(db.clone(), sealer.clone(), vec![cache_rows.clone(), replays.clone(), answers.clone()])
                .await
                .context("loading the suppression lists")?;
        let refresh_every = Duration::from_millis(settings.privacy.refresh_ms.max(10));
        let refresher = Background::spawn(|stop| suppressions.clone().run(refresh_every, stop));
        let enrich = EnrichService::new(EnrichParts {
            db: db.clone(),
            suppressions: suppressions.clone(),
            replays,
            empty_workspaces: crate::enrich::empty_workspaces(caches, &metrics),
            answers,
            settler: settler.clone(),
            lookup,
            test_lookup,
            idempotency_lease: deadline + Duration::from_millis(settings.idempotency.lease_margin_ms),
            idempotency_ttl: Duration::from_secs(settings.idempotency.ttl_secs),
            metrics: metrics.clone(),
        });
        let activity = Arc::new(KeyActivity::default());
        let flusher = Background::spawn(|stop| {
            crate::key_activity::flush_loop(
                activity.clone(),
                db.clone(),
                Duration::from_millis(settings.server.last_used_flush_ms.max(1)),
                stop,
            )
        });
        let enrich = Arc::new(enrich);
        let limiter = Arc::new(limiter);
        let jobs_wake = Arc::new(tokio::sync::Notify::new());
        let worker = settings.jobs.workers.then(|| {
            let worker = crate::jobs::Worker {
                db: db.clone(),
                enrich: enrich.clone(),
                limiter: limiter.clone(),
                settings: settings.jobs.clone(),
                owner: format!("worker_{}", uuid::Uuid::new_v4().simple()),
                wake: jobs_wake.clone(),
                metrics: metrics.clone(),
            };
            Background::spawn(|stop| worker.run(stop))
        });
        let webhooks = Arc::new(crate::webhooks::Webhooks::new(db.clone(), sealer.clone(), settings.webhooks.clone(), metrics.clone()));
        let deliverer = settings.webhooks.workers.then(|| {
            let deliverer = crate::webhooks::delivery::Deliverer {
                webhooks: webhooks.clone(),
                owner: format!("deliverer_{}", uuid::Uuid::new_v4().simple()),
            };
            Background::spawn(|stop| deliverer.run(stop))
        });
        let state = Arc::new(AppState {
            db: db.clone(),
            auth: Authenticator::new(db.clone(), key_cache.clone(), activity.clone()),
            limiter,
            metrics,
            enrich,
            jobs_wake,
            job_retention_days: settings.jobs.retention_days,
            key_cache,
            sealer,
            suppressions,
            webhooks: webhooks.clone(),
            idempotency_lease: deadline + Duration::from_millis(settings.idempotency.lease_margin_ms),
            idempotency_ttl: Duration::from_secs(settings.idempotency.ttl_secs),
        });

        let cache_retention = Duration::from_secs(settings.cache.retention_days.saturating_mul(86_400));
        let purge_every = Duration::from_secs(settings.idempotency.purge_interval_secs.max(1));
        let purger = Background::spawn(|stop| purge_loop(db.clone(), purge_every, cache_retention, webhooks, stop));
        let acceptor = TcpListener::bind(settings.server.bind.clone())
            .into_acceptor()
            .await
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let addr = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).context("listener has no local address")?;
        let limits = api::middleware::BodyLimits {
            default: settings.server.max_body_bytes,
            bulk: settings.server.max_bulk_body_bytes,
            job: settings.server.max_job_body_bytes,
            read_timeout: Duration::from_millis(settings.server.body_timeout_ms),
        };
        Ok(Self { addr, acceptor, state, limits, db, sandbox, purger, refresher, settler, worker, deliverer, flusher })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The one writer of balances (operators' grants go through it too).
    pub fn settler(&self) -> &Settler {
        &self.settler
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish (up to 30 s).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self { acceptor, state, limits, sandbox, purger, refresher, worker, deliverer, flusher, .. } = self;
        let endpoint = api::app(state, limits);
        let result =
            Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(endpoint, shutdown, Some(Duration::from_secs(30))).await;
        // Every background loop stops the one way (told, then awaited): a purge or a
        // reload in flight ends, a chunk or an attempt in flight ends (or its lease runs
        // out and another process redoes it); then the keys' last use is written.
        for background in [purger, refresher].into_iter().chain(worker).chain(deliverer) {
            background.stop(Duration::from_secs(15)).await;
        }
        flusher.stop(Duration::from_secs(30)).await;
        drop(sandbox);
        result
    }
}

/// A background task that stops when told (`stop` is notified once).
struct Background {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    fn spawn<F: Future<Output = ()> + Send + 'static>(run: impl FnOnce(Arc<tokio::sync::Notify>) -> F) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        Self { task: tokio::spawn(run(stop.clone())), stop }
    }

    /// Tells the task to stop and waits for it, at most `within`.
    async fn stop(self, within: Duration) {
        self.stop.notify_one();
        let _ = tokio::time::timeout(within, self.task).await;
    }
}

/// The sealer from `[secrets] seal_key`; for the embedded SQLite default without one, a
/// key generated once next to the database file (an in-memory database gets a key that
/// lives as long as it does). PostgreSQL deployments must configure it: replicas share
/// their sealed values.
pub fn sealer(settings: &Settings) -> anyhow::Result<Sealer> {
    if let Some(key) = &settings.secrets.seal_key {
        return Sealer::from_encoded(key.expose()).context("[secrets] seal_key");
    }
    let url = &settings.database.url;
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "set [secrets] seal_key (or LEADLEX_SEAL_KEY) to a key from `leadlex seal-key`, the same on every replica: \
             PostgreSQL deployments share sealed values between replicas"
        );
    }
    match crate::db::sqlite_path(url) {
        Some(path) => {
            let key_path = crate::seal::default_key_path(std::path::Path::new(&path));
            let (sealer, created) = Sealer::from_file_or_create(&key_path)?;
            if created {
                tracing::info!(path = %key_path.display(), "generated the seal key (keep it with the database; set [secrets] seal_key to use another)");
            }
            Ok(sealer)
        }
        None => Sealer::from_encoded(&Sealer::generate_encoded()),
    }
}

/// Deletes expired idempotency records, cache entries (expired, or past their retention),
/// finished jobs and webhook deliveries past theirs, forever.
async fn purge_loop(
    db: DatabaseConnection,
    every: Duration,
    cache_retention: Duration,
    webhooks: Arc<crate::webhooks::Webhooks>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.notified() => return,
        }
        let now = crate::now_ms();
        match idempotency::purge_expired(&db, now).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records purged"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging idempotency records failed"),
        }
        match cache::purge_expired(&db, now, cache_retention).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired cache entries purged"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging the cache failed"),
        }
        match crate::jobs::purge_expired(&db, now).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "finished jobs past their retention purged"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging finished jobs failed"),
        }
        match webhooks.purge_finished(now).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "finished webhook deliveries past their retention purged"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging webhook deliveries failed"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
