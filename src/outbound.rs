//! Outgoing HTTP to URLs our customers give us (webhook endpoints): the guard against
//! server-side request forgery, and the one way such a request is sent. Knows nothing of
//! webhooks' meaning.
//!
//! Invariants:
//! - only `https://` URLs, or `http://` to a loopback host when the configuration allows
//!   it (development and tests);
//! - the host is resolved at sending time, and the request goes to an address that was
//!   checked (the connection is pinned to it: a DNS answer that changes between the check
//!   and the connection cannot redirect it); loopback, private, shared (CGNAT),
//!   link-local (cloud metadata included), multicast, broadcast, unspecified and
//!   reserved addresses are refused, IPv4 and IPv6 alike, IPv4-mapped, -compatible and
//!   NAT64 forms by the IPv4 address they carry; the tunnelling prefixes (6to4, Teredo
//!   and the rest of the IETF's 2001::/23) are refused whole;
//! - no redirect is followed; the whole exchange has a deadline; at most `max_body`
//!   bytes of the answer are read;
//! - nothing of ours is sent but what the caller puts in the request (no credentials,
//!   no cookies).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use url::Url;

/// Why a request to a customer's URL was not made, or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("the URL must be https:// (http:// only to a loopback host, where allowed)")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("the host did not resolve: {0}")]
    Resolve(String),
    /// The address is kept for the server's own logs; the message a customer sees does
    /// not say it (what a name resolves to inside our network is none of its business).
    #[error("the host resolves to a refused address (loopback, private, link-local, multicast or reserved)")]
    Refused(IpAddr),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
}

/// What the guard allows besides public addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Allow `http://` and loopback addresses (development and tests only).
    pub allow_loopback: bool,
}

/// Whether `ip` may be the target of a request to a customer's URL.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata (169.254.169.254) among them
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254, a cloud metadata address, among them)
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x2001 && ip.segments()[1] < 0x0200 // IETF protocol assignments (2001::/23), Teredo (2001::/32) among them
        || first == 0x2002 // 6to4: relayed to the IPv4 address it carries, whatever that is
        || first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // discard-only
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// Checks `url`'s scheme, resolves its host now and checks every address; returns the
/// address to connect to.
pub async fn resolve(url: &Url, policy: Policy) -> Result<SocketAddr, OutboundError> {
    let loopback_host =
        |host: &str| host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false);
    let host = url.host_str().ok_or(OutboundError::NoHost)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_loopback && loopback_host(host) => {}
        _ => return Err(OutboundError::Scheme),
    }
    let port = url.port_or_known_default().ok_or(OutboundError::NoHost)?;
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port)).await.map_err(|e| OutboundError::Resolve(e.to_string()))?.collect(),
    };
    let first = *addrs.first().ok_or_else(|| OutboundError::Resolve("no address".into()))?;
    // Every address must pass: the connection must not depend on which one is used.
    for addr in &addrs {
        let ip = addr.ip();
        if !(is_public(ip) || policy.allow_loopback && (ip.is_loopback() || embedded_v4_loopback(ip))) {
            return Err(OutboundError::Refused(ip));
        }
    }
    Ok(first)
}

fn embedded_v4_loopback(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if embedded_v4(v6).is_some_and(|v4| v4.is_loopback()))
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// At most the `max_body` first bytes.
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

/// Sends `body` as a `POST` with `headers` to `url`, at the address [`resolve`] checked,
/// within `deadline`, reading at most `max_body` bytes of the answer. No redirect is
/// followed (a 3xx is an answer like any other).
pub async fn post(
    url: &Url,
    headers: &[(&str, String)],
    body: Vec<u8>,
    policy: Policy,
    deadline: Duration,
    max_body: usize,
) -> Result<Answer, OutboundError> {
    let started = Instant::now();
    // The deadline covers the resolution too: a slow resolver cannot stretch an attempt.
    let addr = match tokio::time::timeout(deadline, resolve(url, policy)).await {
        Ok(addr) => addr?,
        Err(_) => return Err(OutboundError::Timeout(deadline)),
    };
    let total = deadline;
    let deadline = deadline.saturating_sub(started.elapsed());
    let host = url.host_str().ok_or(OutboundError::NoHost)?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr)
        .timeout(deadline)
        .connect_timeout(deadline)
        .no_proxy()
        .build()
        .map_err(|e| OutboundError::Connect(e.to_string()))?;
    let mut request = client.post(url.clone()).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let exchange = async {
        let failed = |e: reqwest::Error| if e.is_timeout() { OutboundError::Timeout(total) } else { OutboundError::Connect(e.to_string()) };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        let mut read = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            read.extend_from_slice(&chunk[..chunk.len().min(max_body - read.len())]);
            if read.len() >= max_body {
                break;
            }
        }
        Ok(Answer { status, body: read, elapsed: started.elapsed() })
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(OutboundError::Timeout(total)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "2002:a00:1::1",                        // 6to4 of 10.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of 169.254.169.254
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo, client 10.0.0.1 (inverted)
            "2001:1::1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused} must be refused");
        }
        for allowed in ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2001:200::1"]
        {
            assert!(is_public(allowed.parse().unwrap()), "{allowed} is public");
        }
    }

    #[tokio::test]
    async fn the_scheme_and_the_resolved_address_are_checked() {
        let strict = Policy::default();
        let dev = Policy { allow_loopback: true };
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(resolve(&url("http://93.184.216.34/hook"), strict).await, Err(OutboundError::Scheme));
        assert_eq!(resolve(&url("ftp://93.184.216.34/hook"), dev).await, Err(OutboundError::Scheme));
        assert_eq!(resolve(&url("http://93.184.216.34/hook"), dev).await, Err(OutboundError::Scheme), "http only to loopback");
        assert!(matches!(resolve(&url("https://127.0.0.1/hook"), strict).await, Err(OutboundError::Refused(_))));
        assert!(matches!(resolve(&url("https://localhost/hook"), strict).await, Err(OutboundError::Refused(_))), "a name is resolved");
        assert!(matches!(resolve(&url("https://169.254.169.254/latest/meta-data"), dev).await, Err(OutboundError::Refused(_))));
        assert!(matches!(resolve(&url("https://[::ffff:10.0.0.1]/hook"), strict).await, Err(OutboundError::Refused(_))));
        assert_eq!(resolve(&url("http://127.0.0.1:9/hook"), dev).await, Ok("127.0.0.1:9".parse().unwrap()));
        assert_eq!(resolve(&url("https://93.184.216.34/hook"), strict).await, Ok("93.184.216.34:443".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_post_goes_where_it_was_checked_follows_no_redirect_and_reads_a_bounded_answer() {
        use wiremock::{matchers, Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(matchers::path("/big"))
            .and(matchers::header("x-test", "yes"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'a'; 100_000]))
            .mount(&server)
            .await;
        Mock::given(matchers::path("/moved"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", format!("{}/big", server.uri())))
            .mount(&server)
            .await;
        Mock::given(matchers::path("/slow"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
            .mount(&server)
            .await;
        let dev = Policy { allow_loopback: true };
        let url = |path: &str| Url::parse(&format!("{}{path}", server.uri())).unwrap();
        let headers = [("x-test", "yes".to_string())];
        let second = Duration::from_secs(1);

        let big = post(&url("/big"), &headers, b"{}".to_vec(), dev, second, 65_536).await.unwrap();
        assert_eq!((big.status, big.body.len()), (200, 65_536), "the answer is read up to the cap");
        let moved = post(&url("/moved"), &headers, Vec::new(), dev, second, 1024).await.unwrap();
        assert_eq!(moved.status, 302, "a redirect is an answer, not followed");
        assert_eq!(
            server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/big").count(),
            1,
            "nothing went to /big after the 302"
        );
        let slow = post(&url("/slow"), &headers, Vec::new(), dev, Duration::from_millis(200), 1024).await;
        assert_eq!(slow, Err(OutboundError::Timeout(Duration::from_millis(200))));
        let refused = post(&url("/big"), &headers, Vec::new(), Policy::default(), second, 1024).await;
        assert_eq!(refused, Err(OutboundError::Scheme), "plain http to loopback only where allowed");
    }
}
