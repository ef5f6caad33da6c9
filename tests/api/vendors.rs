//! The waterfall against misbehaving vendors, with a real mock HTTP server (wiremock)
//! standing in for each: every fault moves the waterfall on to the next vendor; when all
//! vendors fail the answer is 503 `upstream_unavailable` with `Retry-After` and nothing
//! is charged. Plus retries, circuit breakers, coalescing, the negative cache, per-section
//! TTLs, gap filling and `/metrics`.

use std::time::Duration;

use futures::future::join_all;
use leadlex::{
    config::{Secret, Settings, VendorSettings},
    lookup::vendors::{clearbit, pdl, VendorName},
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::helpers::{dead_url, spawn_app_with, Backend, TestApp};

const PERSON_A: &str = "/v5/person/enrich";
const PERSON_B: &str = "/v2/combined/find";

fn vendor(name: VendorName, base: &str, timeout_ms: u64) -> VendorSettings {
    VendorSettings { name, base_url: base.to_string(), api_key: Secret::new("k"), timeout_ms }
}

/// An app whose waterfall is vendor_a at `a`, then vendor_b at `b`.
async fn app_with(a: &str, b: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (a, b) = (a.to_string(), b.to_string());
    spawn_app_with(Backend::Sqlite, move |s| {
        s.vendors = vec![vendor(VendorName::VendorA, &a, 300), vendor(VendorName::VendorB, &b, 300)];
        s.server.request_deadline_ms = 2_000;
        s.waterfall.max_retries = 1;
        s.waterfall.retry_backoff_ms = 10;
        tweak(s);
    })
    .await
}

fn pdl_person(name: &str, company: Option<&str>, likelihood: u8) -> Value {
    let (first, last) = name.split_once(' ').unwrap();
    serde_json::to_value(pdl::PersonEnrichResponse {
        status: 200,
        likelihood,
        data: pdl::PersonData {
            full_name: Some(name.into()),
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            job_title: Some("General Counsel".into()),
            job_title_levels: vec!["cxo".into()],
            location_name: Some("New York, NY, US".into()),
            linkedin_url: Some("linkedin.com/in/janedoe".into()),
            job_company_name: company.map(Into::into),
            job_company_website: company.map(|_| "acme.com".into()),
            ..Default::default()
        },
    })
    .unwrap()
}

fn clearbit_combined(name: &str, title: &str) -> Value {
    serde_json::to_value(clearbit::CombinedResponse {
        person: Some(clearbit::Person {
            name: Some(clearbit::PersonName { full_name: Some(name.into()), ..Default::default() }),
            employment: Some(clearbit::Employment { title: Some(title.into()), ..Default::default() }),
            fuzzy: Some(false),
            ..Default::default()
        }),
        company: Some(clearbit::Company {
            name: Some("Acme Corp".into()),
            domain: Some("acme.com".into()),
            category: Some(clearbit::Category { industry: Some("Legal Services".into()), ..Default::default() }),
            founded_year: Some(1998),
            ..Default::default()
        }),
    })
    .unwrap()
}

/// The faults of the issue, as a response template (connection refused is a dead URL).
fn faults() -> Vec<(&'static str, ResponseTemplate)> {
    vec![
        ("timeout", ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", None, 9)).set_delay(Duration::from_millis(800))),
        ("5xx", ResponseTemplate::new(503).set_body_json(json!({"status": 503, "error": {"type": "api_error", "message": "down"}}))),
        ("429", ResponseTemplate::new(429).insert_header("Retry-After", "1").set_body_json(json!({"error": {"type": "rate_limit"}}))),
        ("malformed JSON", ResponseTemplate::new(200).set_body_raw("{\"status\": 200, \"likel", "application/json")),
        (
            "wrong shape",
            ResponseTemplate::new(200).set_body_json(json!({"status": 200, "likelihood": "high", "data": [1, 2], "person": 7})),
        ),
        ("202 queued", ResponseTemplate::new(202).set_body_json(json!({"error": {"type": "queued"}}))),
    ]
}

async fn mock(server: &MockServer, route: &str, template: ResponseTemplate) {
    Mock::given(method("GET")).and(path(route)).respond_with(template).mount(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_moves_on_and_all_failing_is_a_free_503() {
    for (fault, template) in faults() {
        // vendor_a misbehaves, vendor_b answers: a 200 from vendor_b.
        let a = MockServer::start().await;
        let b = MockServer::start().await;
        mock(&a, PERSON_A, template.clone()).await;
        mock(&b, PERSON_B, ResponseTemplate::new(200).set_body_json(clearbit_combined("Jane Doe", "CEO"))).await;
        let app = app_with(&a.uri(), &b.uri(), |_| {}).await;
        let (ws, key) = app.funded(5).await;
        let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
        assert_eq!(r.status, 200, "{fault}: {}", String::from_utf8_lossy(&r.bytes));
        assert_eq!(r.json()["data"]["source"], "vendor_b", "{fault}");

        // Both misbehave the same way: 503 with Retry-After, nothing charged.
        let b = MockServer::start().await;
        mock(&b, PERSON_B, template).await;
        let app2 = app_with(&a.uri(), &b.uri(), |_| {}).await;
        let (ws2, key2) = app2.funded(5).await;
        let r = app2.enrich(&key2, json!({"email": "jane@acme.com"})).await;
        assert_eq!((r.status, r.error_code().as_str()), (503, "upstream_unavailable"), "{fault}");
        assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "{fault}");
        assert_eq!(app2.assert_books_balance(&ws2).await, 5, "{fault}: nothing charged");
        assert_eq!(app.assert_books_balance(&ws).await, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_answers_slower_than_the_deadline() {
    // Connection refused on vendor_a: vendor_b answers.
    let b = MockServer::start().await;
    mock(&b, PERSON_B, ResponseTemplate::new(200).set_body_json(clearbit_combined("Jane Doe", "CEO"))).await;
    let app = app_with(&dead_url(), &b.uri(), |_| {}).await;
    let (_, key) = app.funded(5).await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.json()["data"]["source"], "vendor_b");

    // vendor_a answers within its own timeout but after the whole deadline: the deadline
    // wins and, with nothing left, the call is a free 503.
    let a = MockServer::start().await;
    mock(&a, PERSON_A, ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", None, 9)).set_delay(Duration::from_millis(1_500)))
        .await;
    let (a_uri, dead) = (a.uri(), dead_url());
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.vendors = vec![vendor(VendorName::VendorA, &a_uri, 5_000), vendor(VendorName::VendorB, &dead, 5_000)];
        s.server.request_deadline_ms = 500;
    })
    .await;
    let (ws, key) = app.funded(5).await;
    let started = std::time::Instant::now();
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!((r.status, r.error_code().as_str()), (503, "upstream_unavailable"));
    assert!(started.elapsed() < Duration::from_millis(1_400), "the deadline cut the slow vendor off");
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failures_safe_to_repeat_are_retried() {
    // 5xx: retried once (max_retries = 1), then vendor_b.
    let a = MockServer::start().await;
    Mock::given(path(PERSON_A)).respond_with(ResponseTemplate::new(500)).expect(2).mount(&a).await;
    let b = MockServer::start().await;
    mock(&b, PERSON_B, ResponseTemplate::new(200).set_body_json(clearbit_combined("Jane Doe", "CEO"))).await;
    let app = app_with(&a.uri(), &b.uri(), |_| {}).await;
    let (_, key) = app.funded(5).await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    a.verify().await;

    // A timeout may have been served and billed upstream: never repeated.
    let a = MockServer::start().await;
    Mock::given(path(PERSON_A))
        .respond_with(ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", None, 9)).set_delay(Duration::from_millis(800)))
        .expect(1)
        .mount(&a)
        .await;
    let app = app_with(&a.uri(), &b.uri(), |_| {}).await;
    let (_, key) = app.funded(5).await;
    assert_eq!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.status, 200);
    a.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_vendor_trips_its_breaker_then_is_probed_back() {
    let a = MockServer::start().await;
    Mock::given(path(PERSON_A)).respond_with(ResponseTemplate::new(500)).expect(2).mount(&a).await;
    let b = MockServer::start().await;
    mock(&b, PERSON_B, ResponseTemplate::new(200).set_body_json(clearbit_combined("Jane Doe", "CEO"))).await;
    let app = app_with(&a.uri(), &b.uri(), |s| {
        s.waterfall.max_retries = 0;
        s.waterfall.breaker_failure_threshold = 2;
        s.waterfall.breaker_open_secs = 1;
        s.cache.ttl_secs = 0;
    })
    .await;
    let (_, key) = app.funded(50).await;
    for _ in 0..5 {
        let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
        assert_eq!(r.json()["data"]["source"], "vendor_b");
    }
    a.verify().await; // two failures opened the breaker: the other three calls skipped vendor_a
    let metrics = String::from_utf8(app.request(app.client.get(format!("{}/metrics", app.base))).await.bytes).unwrap();
    assert!(metrics.contains(r#"leadlex_vendor_breaker_state{vendor="vendor_a"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"leadlex_vendor_calls_total{vendor="vendor_a",outcome="breaker_open"} 3"#), "{metrics}");

    // vendor_a recovers; after the open period one probe goes through and closes it.
    a.reset().await;
    mock(&a, PERSON_A, ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", Some("Acme Corp"), 9))).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(r.json()["data"]["source"], "vendor_a");
    let metrics = String::from_utf8(app.request(app.client.get(format!("{}/metrics", app.base))).await.bytes).unwrap();
    assert!(metrics.contains(r#"leadlex_vendor_breaker_state{vendor="vendor_a"} 0"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_lookups_share_one_vendor_call_but_each_pays() {
    let a = MockServer::start().await;
    Mock::given(path(PERSON_A))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", Some("Acme Corp"), 9)).set_delay(Duration::from_millis(400)),
        )
        .expect(1)
        .mount(&a)
        .await;
    let app = app_with(&a.uri(), &dead_url(), |s| s.vendors[0].timeout_ms = 2_000).await;
    let (ws, key) = app.funded(100).await;
    let results = join_all((0..50).map(|_| app.enrich(&key, json!({"email": "Jane@Acme.com"})))).await;
    let odd: Vec<String> = results.iter().filter(|r| r.status != 200).map(|r| String::from_utf8_lossy(&r.bytes).to_string()).collect();
    assert!(odd.is_empty(), "{odd:?}");
    a.verify().await;
    assert_eq!(app.charges(&ws).await, 50, "coalescing saves vendor calls, not credits");
    assert_eq!(app.assert_books_balance(&ws).await, 50);
    let metrics = String::from_utf8(app.request(app.client.get(format!("{}/metrics", app.base))).await.bytes).unwrap();
    assert!(metrics.contains("leadlex_coalesced_lookups_total 49"), "{metrics}");
    assert!(metrics.contains("leadlex_credits_charged_total 50"), "{metrics}");
    assert!(metrics.contains(r#"leadlex_http_requests_total{operation="enrich_email_or_domain",status="200"} 50"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matches_are_remembered_for_their_short_ttl() {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    Mock::given(path(PERSON_A))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"status": 404, "error": {"type": "not_found", "message": "no"}})))
        .expect(2)
        .mount(&a)
        .await;
    Mock::given(path(PERSON_B))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"type": "unknown_record"}})))
        .expect(2)
        .mount(&b)
        .await;
    let app = app_with(&a.uri(), &b.uri(), |s| s.cache.negative_ttl_secs = 1).await;
    let (ws, key) = app.funded(5).await;
    for _ in 0..3 {
        assert_eq!(app.enrich(&key, json!({"email": "ghost@acme.com"})).await.status, 404);
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(app.enrich(&key, json!({"email": "ghost@acme.com"})).await.status, 404);
    a.verify().await;
    b.verify().await;
    assert_eq!(app.assert_books_balance(&ws).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_ttl_is_per_section() {
    let a = MockServer::start().await;
    Mock::given(path(PERSON_A))
        .respond_with(ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", Some("Acme Corp"), 9)))
        .expect(2)
        .mount(&a)
        .await;
    let app = app_with(&a.uri(), &dead_url(), |s| s.cache.person_ttl_secs = Some(1)).await;
    let (_, key) = app.funded(10).await;
    let source = |r: crate::helpers::Resp| r.json()["data"]["source"].as_str().unwrap().to_string();
    assert_eq!(source(app.enrich(&key, json!({"email": "jane@acme.com"})).await), "vendor_a");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let company_only = json!({"email": "jane@acme.com", "include": ["company"]});
    assert_eq!(source(app.enrich(&key, company_only).await), "cached", "the company section is still fresh");
    assert_eq!(source(app.enrich(&key, json!({"email": "jane@acme.com"})).await), "vendor_a", "the person section went stale");
    a.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_filled_from_the_next_vendor_and_agreement_moves_confidence() {
    let a = MockServer::start().await;
    mock(&a, PERSON_A, ResponseTemplate::new(200).set_body_json(pdl_person("Jane Doe", None, 8))).await;
    let agreeing = MockServer::start().await;
    mock(&agreeing, PERSON_B, ResponseTemplate::new(200).set_body_json(clearbit_combined("jane doe", "General Counsel"))).await;
    let app = app_with(&a.uri(), &agreeing.uri(), |s| s.waterfall.fill_gaps = true).await;
    let (_, key) = app.funded(10).await;
    let data = app.enrich(&key, json!({"email": "jane@acme.com"})).await.json()["data"].clone();
    assert_eq!(data["source"], "vendor_a", "the first match stays the source");
    assert_eq!(data["company"]["name"], "Acme Corp", "filled from vendor_b");
    assert_eq!(data["person"]["full_name"], "Jane Doe", "vendor_a's value wins");
    assert!(data["confidence"].as_f64().unwrap() > 0.8, "agreement raises confidence: {data}");

    let disagreeing = MockServer::start().await;
    mock(&disagreeing, PERSON_B, ResponseTemplate::new(200).set_body_json(clearbit_combined("John Roe", "Janitor"))).await;
    let app = app_with(&a.uri(), &disagreeing.uri(), |s| s.waterfall.fill_gaps = true).await;
    let (_, key) = app.funded(10).await;
    let data = app.enrich(&key, json!({"email": "jane@acme.com"})).await.json()["data"].clone();
    assert!(data["confidence"].as_f64().unwrap() < 0.8, "disagreement lowers confidence: {data}");

    // Without fill_gaps the second vendor is never asked once the first matched.
    let untouched = MockServer::start().await;
    Mock::given(path(PERSON_B)).respond_with(ResponseTemplate::new(500)).expect(0).mount(&untouched).await;
    let app = app_with(&a.uri(), &untouched.uri(), |_| {}).await;
    let (_, key) = app.funded(10).await;
    assert!(app.enrich(&key, json!({"email": "jane@acme.com"})).await.json()["data"].get("company").is_none());
    untouched.verify().await;
}
