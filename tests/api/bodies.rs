//! Slow and unauthenticated bodies, as a noisy neighbour sends them: a request with a bad
//! key is answered `401` before its body is read, a body that stops arriving times out,
//! neither counts as load for the job workers, and a server's memory stays bounded under
//! forty of them (a real process, its resident memory read from `/proc`).

use std::time::Duration;

use leadlex::{auth::Permission, ratelimit::Plan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, ProcessStore};

/// Opens a connection to `base` and sends a job submission's headers declaring
/// `declared` bytes of body, then `sent` bytes of it, and nothing more.
async fn stalled_submission(base: &str, key: &str, declared: usize, sent: usize) -> TcpStream {
    let addr = base.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/enrich/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut left = sent;
    // A server that reads no more of it (it answered, or waits) stops the writing: the
    // socket's buffers fill, or it is closed.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while left > 0 {
            let n = left.min(chunk.len());
            if conn.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            left -= n;
        }
    })
    .await;
    conn
}

/// The status line of what the server answered on `conn`, waiting at most `within`.
async fn status_of(conn: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, conn.read(&mut buf)).await.ok()?.ok()?;
    String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_string)
}

async fn in_flight(base: &str) -> i64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("leadlex_http_requests_in_flight ")).map(|v| v.trim().parse::<f64>().unwrap() as i64).unwrap()
}

async fn a_bad_key_is_refused_before_its_body_and_a_stalled_body_times_out(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.body_timeout_ms = 500).await;
    let ws = app.workspace(Plan::Pro, 10).await;
    let key = app.key(&ws, &[Permission::WriteEnrich], None).await.key;
    let unknown = format!("wbk_{}", "Z".repeat(43));

    // Bad keys: answered at once, whatever of the body is still to come.
    let mut held = Vec::new();
    for bad in ["nope", unknown.as_str()] {
        for _ in 0..5 {
            let mut conn = stalled_submission(&app.base, bad, 10 * 1024 * 1024 - 1, 1_024).await;
            let status = status_of(&mut conn, Duration::from_secs(2)).await;
            assert_eq!(status.as_deref(), Some("HTTP/1.1 401 Unauthorized"), "key {bad}");
            held.push(conn);
        }
    }
    // A valid key whose body stops: refused once the body timeout passes, and not load
    // for the job worker meanwhile.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(stalled_submission(&app.base, &key, 100_000, 10).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(in_flight(&app.base).await, 1, "only the /metrics request itself is in flight");
    for conn in &mut conns {
        let status = status_of(conn, Duration::from_secs(5)).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 400 Bad Request"));
    }
    drop(held);
}

/// Forty connections with a bad key and a 10 MiB body that never ends, held open against
/// a real server: its resident memory grows by less than 100 MB (it read none of them).
async fn forty_stalled_bodies_keep_memory_bounded(backend: Backend) {
    let store = ProcessStore::new(backend).await;
    let config = store.config("[server]\nbody_timeout_ms = 30000\n");
    let replica = crate::replicas::Replica::start(&store.url, &config).await;
    let pid = replica.child.id().unwrap();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap() * 1024
    };
    let before = rss();
    let unknown = format!("wbk_{}", "Q".repeat(43));
    let conns = futures::future::join_all((0..40).map(|n| {
        let base = replica.base.clone();
        let key = if n % 2 == 0 { "nope".to_string() } else { unknown.clone() };
        async move { stalled_submission(&base, &key, 10 * 1024 * 1024, 10 * 1024 * 1024 - 1).await }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss();
    assert!(after < before + 100 * 1024 * 1024, "resident memory grew from {before} to {after} bytes");
    // It still answers others at once.
    let r = reqwest::get(format!("{}/healthz", replica.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(conns);
}

crate::on_both_backends!(a_bad_key_is_refused_before_its_body_and_a_stalled_body_times_out, forty_stalled_bodies_keep_memory_bounded);
