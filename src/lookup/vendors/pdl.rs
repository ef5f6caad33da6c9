//! `vendor_a`: the People Data Labs v5 wire format (`GET /v5/person/enrich`,
//! `GET /v5/company/enrich`, key in `X-Api-Key`) and its mapping onto our record.
//!
//! The wire types derive `JsonSchema`; their schema is committed as
//! `openapi/vendors/vendor_a.json` and the sandbox's answers are validated against it.
//! Confidence is `likelihood / 10` (PDL's 1–10 scale).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{retry_after_header, website_domain, with_scheme, VendorAnswer, VendorError};
use crate::config::Secret;
use crate::lookup::input::LookupInput;
use crate::lookup::record::{Company, EnrichmentRecord, Person, Social};

/// `200` of `GET /v5/person/enrich`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PersonEnrichResponse {
    pub status: u16,
    /// 1–10; how likely the record is the person asked about.
    pub likelihood: u8,
    pub data: PersonData,
}

/// The person record; text is lowercase unless `titlecase=true`, URLs lack a scheme.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PersonData {
    pub id: Option<String>,
    pub full_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub job_title: Option<String>,
    pub job_title_role: Option<String>,
    pub job_title_sub_role: Option<String>,
    /// Any of `unpaid training entry manager senior partner director vp owner cxo`.
    #[serde(default)]
    pub job_title_levels: Vec<String>,
    pub location_name: Option<String>,
    pub linkedin_url: Option<String>,
    pub twitter_url: Option<String>,
    pub github_url: Option<String>,
    pub facebook_url: Option<String>,
    pub job_company_name: Option<String>,
    pub job_company_website: Option<String>,
    pub job_company_industry: Option<String>,
    pub job_company_linkedin_url: Option<String>,
    pub job_company_location_name: Option<String>,
    /// `1-10`, `11-50`, `51-200`, `201-500`, `501-1000`, `1001-5000`, `5001-10000`, `10001+`.
    pub job_company_size: Option<String>,
    pub job_company_founded: Option<i32>,
    pub birth_year: Option<i32>,
}

/// `200` of `GET /v5/company/enrich`: the fields sit beside `status` and `likelihood`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CompanyEnrichResponse {
    pub status: u16,
    pub likelihood: u8,
    pub id: Option<String>,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub website: Option<String>,
    pub industry: Option<String>,
    pub summary: Option<String>,
    pub linkedin_url: Option<String>,
    pub twitter_url: Option<String>,
    pub facebook_url: Option<String>,
    pub size: Option<String>,
    pub employee_count: Option<i64>,
    pub founded: Option<i32>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub location: Option<CompanyLocation>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CompanyLocation {
    pub name: Option<String>,
    pub locality: Option<String>,
    pub region: Option<String>,
    pub metro: Option<String>,
    pub country: Option<String>,
    pub continent: Option<String>,
    pub street_address: Option<String>,
    pub postal_code: Option<String>,
    /// `"lat,lng"`.
    pub geo: Option<String>,
}

/// The body of every non-200 answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorResponse {
    pub status: u16,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Documented as a string; real 400s send a one-element array.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ErrorType {
    One(String),
    Many(Vec<String>),
}

/// The published JSON Schema of the `vendor_a` wire format.
pub fn wire_schema() -> serde_json::Value {
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    /// People Data Labs v5 answers as leadlex reads them.
    struct VendorAWireFormat {
        person_enrich: PersonEnrichResponse,
        company_enrich: CompanyEnrichResponse,
        error: ErrorResponse,
    }
    serde_json::to_value(schemars::schema_for!(VendorAWireFormat)).expect("schema serialises")
}

#[derive(Debug, Clone)]
pub struct PdlClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    timeout: Duration,
}

impl PdlClient {
    pub fn new(http: reqwest::Client, base_url: String, api_key: Secret, timeout: Duration) -> Self {
        Self { http, base_url, api_key, timeout }
    }

    pub async fn lookup(&self, input: &LookupInput) -> Result<VendorAnswer, VendorError> {
        let (path, mut query) = match input {
            LookupInput::Email { email, company_hint } => {
                let mut q = vec![("email", email.to_string())];
                if let Some(hint) = company_hint {
                    q.push(("company", hint.to_string()));
                }
                ("/v5/person/enrich", q)
            }
            LookupInput::Domain(domain) => ("/v5/company/enrich", vec![("website", domain.to_string())]),
        };
        query.push(("titlecase", "true".into()));
        let resp = self
            .http
            .get(format!("{}{path}", self.base_url))
            .query(&query)
            .header("X-Api-Key", self.api_key.expose())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(VendorError::from_reqwest)?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            404 => return Ok(VendorAnswer::NoMatch),
            429 => return Err(VendorError::RateLimited { retry_after: retry_after_header(&resp) }),
            401..=403 => return Err(VendorError::Refused(status)),
            _ => return Err(VendorError::Status(status)),
        }
        let body = resp.bytes().await.map_err(VendorError::from_reqwest)?;
        let malformed = |e: serde_json::Error| VendorError::Malformed(e.to_string());
        let (record, likelihood) = match input {
            LookupInput::Email { .. } => {
                let r: PersonEnrichResponse = serde_json::from_slice(&body).map_err(malformed)?;
                (map_person(r.data), r.likelihood)
            }
            LookupInput::Domain(_) => {
                let r: CompanyEnrichResponse = serde_json::from_slice(&body).map_err(malformed)?;
                let likelihood = r.likelihood;
                (map_company(r), likelihood)
            }
        };
        if record.is_empty() {
            return Ok(VendorAnswer::NoMatch);
        }
        Ok(VendorAnswer::Match { record: Box::new(record), confidence: likelihood_confidence(likelihood) })
    }
}

/// PDL's likelihood (1–10) as our confidence (0–1).
pub fn likelihood_confidence(likelihood: u8) -> f64 {
    f64::from(likelihood.min(10)) / 10.0
}

/// The highest of PDL's `job_title_levels`, in our seniority vocabulary.
pub fn seniority(levels: &[String]) -> Option<String> {
    const RANK: [(&str, &str); 10] = [
        ("cxo", "executive"),
        ("owner", "executive"),
        ("vp", "executive"),
        ("director", "director"),
        ("partner", "senior"),
        ("senior", "senior"),
        ("manager", "manager"),
        ("entry", "entry"),
        ("training", "entry"),
        ("unpaid", "entry"),
    ];
    RANK.iter().find(|(level, _)| levels.iter().any(|l| l.eq_ignore_ascii_case(level))).map(|(_, ours)| ours.to_string())
}

pub fn map_person(d: PersonData) -> EnrichmentRecord {
    let person = Person {
        full_name: d.full_name,
        first_name: d.first_name,
        last_name: d.last_name,
        job_title: d.job_title,
        seniority: seniority(&d.job_title_levels),
        location: d.location_name,
        linkedin_url: with_scheme(d.linkedin_url),
    };
    let company = Company {
        name: d.job_company_name,
        domain: website_domain(d.job_company_website),
        industry: d.job_company_industry,
        size: d.job_company_size,
        founded_year: d.job_company_founded,
        description: None,
        linkedin_url: with_scheme(d.job_company_linkedin_url),
        hq_location: d.job_company_location_name,
    };
    let social = Social { twitter: with_scheme(d.twitter_url), github: with_scheme(d.github_url), facebook: with_scheme(d.facebook_url) };
    EnrichmentRecord::new(Some(person), Some(company), Some(social))
}

pub fn map_company(c: CompanyEnrichResponse) -> EnrichmentRecord {
    let company = Company {
        name: c.display_name.or(c.name),
        domain: website_domain(c.website),
        industry: c.industry,
        size: c.size,
        founded_year: c.founded,
        description: c.summary,
        linkedin_url: with_scheme(c.linkedin_url),
        hq_location: c.location.and_then(|l| l.name),
    };
    let social = Social { twitter: with_scheme(c.twitter_url), github: None, facebook: with_scheme(c.facebook_url) };
    EnrichmentRecord::new(None, Some(company), Some(social))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seniority_takes_the_highest_level() {
        let levels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(seniority(&levels(&["manager", "cxo"])).as_deref(), Some("executive"));
        assert_eq!(seniority(&levels(&["senior"])).as_deref(), Some("senior"));
        assert_eq!(seniority(&levels(&[])), None);
    }

    #[test]
    fn person_answer_maps_onto_our_fields() {
        let body = r#"{"status":200,"likelihood":9,"data":{"full_name":"Jane Doe","first_name":"Jane",
            "last_name":"Doe","job_title":"General Counsel","job_title_levels":["cxo"],
            "location_name":"New York, NY, US","linkedin_url":"linkedin.com/in/janedoe",
            "job_company_name":"Acme Corp","job_company_website":"acme.com","job_company_size":"201-500",
            "job_company_founded":1998,"twitter_url":null,"unknown_field":1}}"#;
        let r: PersonEnrichResponse = serde_json::from_str(body).unwrap();
        assert_eq!(likelihood_confidence(r.likelihood), 0.9);
        let rec = map_person(r.data);
        let p = rec.person.unwrap();
        assert_eq!(p.linkedin_url.as_deref(), Some("https://linkedin.com/in/janedoe"));
        assert_eq!(p.seniority.as_deref(), Some("executive"));
        let c = rec.company.unwrap();
        assert_eq!(c.domain.as_deref(), Some("acme.com"));
        assert_eq!(c.founded_year, Some(1998));
        assert!(rec.social.is_none(), "no social field: no social section");
    }

    #[test]
    fn error_type_may_be_a_string_or_an_array() {
        let a: ErrorResponse = serde_json::from_str(r#"{"status":400,"error":{"type":["invalid_request_error"],"message":"x"}}"#).unwrap();
        let b: ErrorResponse = serde_json::from_str(r#"{"status":404,"error":{"type":"not_found","message":"x"}}"#).unwrap();
        assert!(matches!(a.error.kind, ErrorType::Many(_)));
        assert!(matches!(b.error.kind, ErrorType::One(_)));
    }
}
