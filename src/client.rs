//! The command line's client of a running server, for people with a CSV file:
//! `leadlex enrich FILE.csv` submits it as a job, shows a live progress line, and writes
//! the results when the job is done; `leadlex job watch` and `leadlex job results` pick a
//! job up again. Ctrl-C leaves the job running on the server and says how to resume.
//! Speaks only the public API (the same a customer's code would), over HTTP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// A job as the API shows it (the fields the progress line needs).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: String,
    pub status: String,
    pub total: i64,
    pub done: i64,
    pub succeeded: i64,
    pub credits_charged: i64,
}

#[derive(Deserialize)]
struct JobBody {
    data: Job,
}

/// How following a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Completed or cancelled; the results were written here (rows).
    Finished { out: PathBuf, rows: u64 },
    /// Ctrl-C: the job goes on on the server.
    Interrupted,
}

/// A running server and the key to call it with.
pub struct Client {
    http: reqwest::Client,
    server: String,
    key: String,
}

impl Client {
    pub fn new(server: &str, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("leadlex-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, server: server.trim_end_matches('/').to_string(), key: key.to_string() })
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        let code = body["error"]["code"].as_str().unwrap_or("unknown");
        bail!("the server answered {status}: {code}: {message}")
    }

    /// Submits a CSV file as a job (safe to retry: one `Idempotency-Key` per call).
    /// Submits a CSV file as a job, with `quality` for every row.
    pub async fn submit_csv(&self, text: String, quality: &crate::lookup::input::Quality) -> anyhow::Result<Job> {
        let mut query: Vec<(&str, String)> = Vec::new();
        query.extend(quality.min_confidence.map(|c| ("min_confidence", c.to_string())));
        query.extend(quality.max_age_days.map(|d| ("max_age_days", d.to_string())));
        if quality.refresh {
            query.push(("refresh", "true".into()));
        }
        let resp = self
            .http
            .post(format!("{}/v1/enrich/jobs", self.server))
            .query(&query)
            .bearer_auth(&self.key)
            .header("content-type", "text/csv")
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .body(text)
            .send()
            .await
            .with_context(|| format!("reaching {}", self.server))?;
        Ok(Self::check(resp).await?.json::<JobBody>().await?.data)
    }

    /// Sends `GET path` (with `accept`), waiting out a `429` as its `Retry-After` says
    /// (a plan's per-minute limit counts every poll), at most ten times.
    async fn get(&self, path: &str, accept: &str) -> anyhow::Result<reqwest::Response> {
        for _ in 0..10 {
            let resp = self
                .http
                .get(format!("{}{path}", self.server))
                .bearer_auth(&self.key)
                .header("accept", accept)
                .send()
                .await
                .with_context(|| format!("reaching {}", self.server))?;
            if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Self::check(resp).await;
            }
            let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 60))).await;
        }
        bail!("the server kept answering 429 rate_limited; try again later")
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<Job> {
        Ok(self.get(&format!("/v1/enrich/jobs/{id}"), "application/json").await?.json::<JobBody>().await?.data)
    }

    /// Writes every result of the job done so far to `out` as CSV, as it streams in;
    /// returns how many rows.
    pub async fn download(&self, id: &str, out: &Path) -> anyhow::Result<u64> {
        let mut resp = self.get(&format!("/v1/enrich/jobs/{id}/results"), "text/csv").await?;
        let mut file = tokio::fs::File::create(out).await.with_context(|| format!("creating {}", out.display()))?;
        let mut lines = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(lines.saturating_sub(1))
    }

    /// Follows the job until it finishes (then downloads its results to `out`) or until
    /// Ctrl-C (then says how to resume), drawing a progress line on stderr.
    pub async fn follow(&self, id: &str, out: &Path) -> anyhow::Result<Followed> {
        let started = Instant::now();
        let mut first_done: Option<i64> = None;
        // Listening before the first progress line is drawn, and for the whole loop: a
        // Ctrl-C at any moment from then on is seen (a `ctrl_c()` future listens only
        // once polled, so one pressed while the job was being read would kill the
        // command instead, or be lost).
        let mut interrupt = Interrupt::new()?;
        loop {
            let job = self.job(id).await?;
            let base = *first_done.get_or_insert(job.done);
            let rate = (job.done - base) as f64 / started.elapsed().as_secs_f64().max(0.001);
            eprint!("\r{}", progress_line(&job, rate));
            if job.status == "completed" || job.status == "cancelled" {
                eprintln!();
                let rows = self.download(id, out).await?;
                return Ok(Followed::Finished { out: out.to_path_buf(), rows });
            }
            tokio::select! {
                _ = interrupt.recv() => {
                    eprintln!();
                    eprintln!("stopped following; job {id} keeps running on the server. Follow it again with");
                    eprintln!("(your API key in LEADLEX_KEY, or add --key KEY):");
                    eprintln!("  leadlex job watch {id} --server {} --out {}", self.server, out.display());
                    return Ok(Followed::Interrupted);
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// Ctrl-C, listened for from its creation on.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        return Ok(Self { signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())? });
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `[#######-------]  700/1000 items · 650 matched · 650 credits · 85 items/s`
pub fn progress_line(job: &Job, rate: f64) -> String {
    const WIDTH: i64 = 24;
    let filled = if job.total > 0 { (job.done * WIDTH / job.total).clamp(0, WIDTH) } else { 0 };
    format!(
        "[{}{}] {:>6}/{} items · {} matched · {} credits · {:.0} items/s · {}",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        job.done,
        job.total,
        job.succeeded,
        job.credits_charged,
        rate,
        job.status
    )
}

/// Where results go by default: `FILE.results.csv` beside the input, or `JOB.results.csv`.
pub fn default_out(input: Option<&Path>, id: &str) -> PathBuf {
    match input {
        Some(path) => path.with_extension("results.csv"),
        None => PathBuf::from(format!("{id}.results.csv")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_how_far_and_how_fast() {
        let job = Job { id: "job_1".into(), status: "running".into(), total: 1000, done: 500, succeeded: 450, credits_charged: 450 };
        let line = progress_line(&job, 85.4);
        assert!(line.starts_with("[############------------]"), "{line}");
        assert!(line.contains("500/1000 items · 450 matched · 450 credits · 85 items/s · running"), "{line}");
        assert_eq!(default_out(Some(Path::new("leads.csv")), "job_1"), PathBuf::from("leads.results.csv"));
        assert_eq!(default_out(None, "job_1"), PathBuf::from("job_1.results.csv"));
    }
}
