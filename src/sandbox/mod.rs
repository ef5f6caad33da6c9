//! The built-in sandbox vendors: a real HTTP server that speaks both upstream wire
//! formats (`/vendor_a/v5/…` as People Data Labs, `/vendor_b/v2/…` as Clearbit) over
//! deterministic synthetic data ([`data`]). `leadlex sandbox` runs it alone; `serve`
//! starts it on a free loopback port when no vendor is configured. It never needs a
//! network beyond loopback.

pub mod data;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use poem::{
    handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::{Data, Json, Query},
    EndpointExt, IntoResponse, Request, Response, Route, Server,
};
use serde_json::json;

use crate::config::{Secret, VendorSettings};
use crate::lookup::vendors::{clearbit, pdl, VendorName};
use data::{QueryDomain, QueryEmail};

/// The API key the sandbox expects (any non-empty key is accepted).
pub const SANDBOX_KEY: &str = "sandbox";

#[derive(Clone, Copy)]
struct Latency(Duration);

/// A running sandbox.
pub struct Sandbox {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Binds `bind` (port 0: a free port) and serves in the background.
    pub async fn spawn(bind: &str, latency: Duration) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind(bind.to_string()).into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| anyhow::anyhow!("sandbox has no local address"))?;
        let task = tokio::spawn(async move {
            if let Err(err) = Server::new_with_acceptor(acceptor).run(routes(latency)).await {
                tracing::error!(error = %err, "sandbox server stopped");
            }
        });
        Ok(Self { addr, task })
    }

    /// Vendor settings pointing at this sandbox, in waterfall order a then b.
    pub fn vendor_settings(&self) -> Vec<VendorSettings> {
        [VendorName::VendorA, VendorName::VendorB]
            .into_iter()
            .map(|name| VendorSettings {
                name,
                base_url: format!("http://{}/{}", self.addr, name.as_str()),
                api_key: Secret::new(SANDBOX_KEY),
                timeout_ms: 3_000,
            })
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn routes(latency: Duration) -> impl poem::Endpoint {
    Route::new()
        .at("/vendor_a/v5/person/enrich", poem::get(pdl_person))
        .at("/vendor_a/v5/company/enrich", poem::get(pdl_company))
        .at("/vendor_b/v2/combined/find", poem::get(clearbit_combined))
        .at("/vendor_b/v2/companies/find", poem::get(clearbit_company))
        .data(Latency(latency))
}

type Params = Query<HashMap<String, String>>;

/// Waits `latency` from now, to within tens of microseconds: tokio's timer rounds a
/// sleep up to its next millisecond tick, which would make the vendor's latency depend on
/// when in that millisecond a request arrives (and the benchmark would blame the gateway
/// for it). A blocking-pool thread's sleep has no such tick.
async fn pause(latency: Latency) {
    if !latency.0.is_zero() {
        let d = latency.0;
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
}

fn pdl_error(status: u16, kind: &str, message: &str) -> Response {
    let body = json!({"status": status, "error": {"type": kind, "message": message}});
    Json(body).with_status(StatusCode::from_u16(status).expect("valid status")).into_response()
}

fn clearbit_error(status: u16, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "message": message}});
    Json(body).with_status(StatusCode::from_u16(status).expect("valid status")).into_response()
}

fn pdl_authorised(req: &Request) -> bool {
    req.headers().get("x-api-key").is_some_and(|v| !v.is_empty())
}

fn clearbit_authorised(req: &Request) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ").is_some_and(|k| !k.trim().is_empty()))
}

/// A company in PDL's person-record terms, when vendor_a knows the domain.
fn pdl_company_fields(domain: &QueryDomain) -> Option<data::SynthCompany> {
    (!data::is_free_mail(domain) && data::knows(VendorName::VendorA, domain.as_str())).then(|| data::company(domain))
}

#[handler]
async fn pdl_person(req: &Request, Query(q): Params, Data(latency): Data<&Latency>) -> Response {
    pause(*latency).await;
    if !pdl_authorised(req) {
        return pdl_error(401, "authentication_error", "API key missing");
    }
    let Some(email) = q.get("email").and_then(|e| QueryEmail::parse(e)) else {
        return pdl_error(400, "invalid_request_error", "email is required");
    };
    if data::is_outage(&email) {
        return pdl_error(503, "service_unavailable", "The service is temporarily unavailable");
    }
    if data::is_slow(&email) {
        tokio::time::sleep(crate::test_mode::SLOW).await;
    }
    if !data::knows(VendorName::VendorA, &email.to_string()) {
        return pdl_error(404, "not_found", "No records were found matching your request");
    }
    let p = data::person(&email);
    let company_domain = q.get("company").and_then(|d| QueryDomain::parse(d)).unwrap_or_else(|| email.domain().clone());
    let c = pdl_company_fields(&company_domain);
    let resp = pdl::PersonEnrichResponse {
        status: 200,
        likelihood: p.likelihood,
        data: pdl::PersonData {
            id: Some(format!("pdl_{}", data::record_id(&email.to_string()))),
            full_name: Some(format!("{} {}", p.first, p.last)),
            first_name: Some(p.first.clone()),
            last_name: Some(p.last.clone()),
            job_title: Some(p.title.0.to_string()),
            job_title_levels: vec![p.title.1.to_string()],
            location_name: Some(p.location.clone()),
            linkedin_url: Some(format!("linkedin.com/{}", p.linkedin)),
            twitter_url: p.twitter.as_ref().map(|h| format!("twitter.com/{h}")),
            github_url: p.github.as_ref().map(|h| format!("github.com/{h}")),
            job_company_name: c.as_ref().map(|c| c.name.clone()),
            job_company_website: c.as_ref().map(|c| c.domain.clone()),
            job_company_industry: c.as_ref().map(|c| c.industry.clone()),
            job_company_linkedin_url: c.as_ref().map(|c| format!("linkedin.com/{}", c.linkedin)),
            job_company_location_name: c.as_ref().map(|c| c.hq.clone()),
            job_company_size: c.as_ref().map(|c| c.size.0.to_string()),
            job_company_founded: c.as_ref().map(|c| c.founded),
            ..Default::default()
        },
    };
    Json(resp).into_response()
}

#[handler]
async fn pdl_company(req: &Request, Query(q): Params, Data(latency): Data<&Latency>) -> Response {
    pause(*latency).await;
    if !pdl_authorised(req) {
        return pdl_error(401, "authentication_error", "API key missing");
    }
    let Some(domain) = q.get("website").and_then(|d| QueryDomain::parse(d)) else {
        return pdl_error(400, "invalid_request_error", "website is required");
    };
    if !data::knows(VendorName::VendorA, domain.as_str()) {
        return pdl_error(404, "not_found", "No records were found matching your request");
    }
    let c = data::company(&domain);
    let resp = pdl::CompanyEnrichResponse {
        status: 200,
        likelihood: c.likelihood,
        id: Some(format!("pdlco_{}", data::record_id(domain.as_str()))),
        name: Some(c.name.to_lowercase()),
        display_name: Some(c.name.clone()),
        website: Some(c.domain.clone()),
        industry: Some(c.industry.clone()),
        summary: Some(c.description.clone()),
        linkedin_url: Some(format!("linkedin.com/{}", c.linkedin)),
        twitter_url: c.twitter.as_ref().map(|h| format!("twitter.com/{h}")),
        size: Some(c.size.0.to_string()),
        founded: Some(c.founded),
        location: Some(pdl::CompanyLocation { name: Some(c.hq.clone()), ..Default::default() }),
        ..Default::default()
    };
    Json(resp).into_response()
}

fn clearbit_company_of(c: &data::SynthCompany) -> clearbit::Company {
    clearbit::Company {
        id: Some(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, c.domain.as_bytes()).to_string()),
        name: Some(c.name.clone()),
        legal_name: Some(c.name.clone()),
        domain: Some(c.domain.clone()),
        description: Some(c.description.clone()),
        location: Some(c.hq.clone()),
        category: Some(clearbit::Category { industry: Some(c.industry.clone()), ..Default::default() }),
        founded_year: Some(c.founded),
        metrics: Some(clearbit::Metrics { employees_range: Some(c.size.1.to_string()), ..Default::default() }),
        linkedin: Some(clearbit::Handle { handle: Some(c.linkedin.clone()) }),
        twitter: c.twitter.as_ref().map(|h| clearbit::FollowedHandle { handle: Some(h.clone()), followers: Some(1200) }),
        ..Default::default()
    }
}

#[handler]
async fn clearbit_combined(req: &Request, Query(q): Params, Data(latency): Data<&Latency>) -> Response {
    pause(*latency).await;
    if !clearbit_authorised(req) {
        return clearbit_error(401, "auth_required", "API key required");
    }
    let Some(email) = q.get("email").and_then(|e| QueryEmail::parse(e)) else {
        return clearbit_error(422, "params_invalid", "email is invalid");
    };
    if data::is_outage(&email) {
        return clearbit_error(503, "service_unavailable", "Service temporarily unavailable");
    }
    if email.local_part().starts_with("queued") {
        return Response::builder()
            .status(StatusCode::ACCEPTED)
            .content_type("application/json")
            .body(json!({"error": {"type": "queued", "message": "lookup queued"}}).to_string());
    }
    if !data::knows(VendorName::VendorB, &email.to_string()) {
        return clearbit_error(404, "unknown_record", "Unknown email address");
    }
    let p = data::person(&email);
    let company_domain = q.get("company_domain").and_then(|d| QueryDomain::parse(d)).unwrap_or_else(|| email.domain().clone());
    let company = (!data::is_free_mail(&company_domain) && data::knows(VendorName::VendorB, company_domain.as_str()))
        .then(|| data::company(&company_domain));
    let resp = clearbit::CombinedResponse {
        person: Some(clearbit::Person {
            id: Some(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, email.to_string().as_bytes()).to_string()),
            name: Some(clearbit::PersonName {
                full_name: Some(format!("{} {}", p.first, p.last)),
                given_name: Some(p.first.clone()),
                family_name: Some(p.last.clone()),
            }),
            email: Some(email.to_string()),
            location: Some(p.location.clone()),
            employment: Some(clearbit::Employment {
                domain: company.as_ref().map(|c| c.domain.clone()),
                name: company.as_ref().map(|c| c.name.clone()),
                title: Some(p.title.0.to_string()),
                seniority: Some(p.title.2.to_string()),
                ..Default::default()
            }),
            linkedin: Some(clearbit::Handle { handle: Some(p.linkedin.clone()) }),
            twitter: p.twitter.as_ref().map(|h| clearbit::FollowedHandle { handle: Some(h.clone()), followers: Some(42) }),
            github: p.github.as_ref().map(|h| clearbit::FollowedHandle { handle: Some(h.clone()), followers: Some(7) }),
            fuzzy: Some(p.fuzzy),
            email_provider: Some(data::is_free_mail(email.domain())),
            ..Default::default()
        }),
        company: company.as_ref().map(clearbit_company_of),
    };
    Json(resp).into_response()
}

#[handler]
async fn clearbit_company(req: &Request, Query(q): Params, Data(latency): Data<&Latency>) -> Response {
    pause(*latency).await;
    if !clearbit_authorised(req) {
        return clearbit_error(401, "auth_required", "API key required");
    }
    let Some(domain) = q.get("domain").and_then(|d| QueryDomain::parse(d)) else {
        return clearbit_error(422, "params_invalid", "domain is invalid");
    };
    if !data::knows(VendorName::VendorB, domain.as_str()) {
        return clearbit_error(404, "unknown_record", "Unknown domain");
    }
    Json(clearbit_company_of(&data::company(&domain))).into_response()
}
