//! `vendor_b`: Clearbit's legacy wire format (`GET /v2/combined/find?email=`,
//! `GET /v2/companies/find?domain=`, Bearer key, `202` while a lookup is queued) and its
//! mapping onto our record.
//!
//! The wire types derive `JsonSchema`; their schema is committed as
//! `openapi/vendors/vendor_b.json`. Clearbit gives no score: confidence is 0.9 for an
//! exact person match or a company found by domain, 0.6 for a `fuzzy` person match.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{retry_after_header, website_domain, VendorAnswer, VendorError};
use crate::config::Secret;
use crate::lookup::input::LookupInput;
use crate::lookup::record::{self, EnrichmentRecord, Social};

/// `200` of `GET /v2/combined/find`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CombinedResponse {
    pub person: Option<Person>,
    pub company: Option<Company>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: Option<String>,
    pub name: Option<PersonName>,
    pub email: Option<String>,
    /// Free-text location, e.g. `New York, NY, US`.
    pub location: Option<String>,
    pub time_zone: Option<String>,
    pub utc_offset: Option<i32>,
    pub geo: Option<PersonGeo>,
    pub employment: Option<Employment>,
    pub linkedin: Option<Handle>,
    pub twitter: Option<FollowedHandle>,
    pub github: Option<FollowedHandle>,
    pub facebook: Option<Handle>,
    pub avatar: Option<String>,
    pub fuzzy: Option<bool>,
    pub email_provider: Option<bool>,
    pub indexed_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonName {
    pub full_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonGeo {
    pub city: Option<String>,
    pub state: Option<String>,
    pub state_code: Option<String>,
    pub country: Option<String>,
    pub country_code: Option<String>,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Employment {
    pub domain: Option<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub role: Option<String>,
    pub sub_role: Option<String>,
    /// e.g. `executive`, `director`, `manager`.
    pub seniority: Option<String>,
}

/// `linkedin.handle` is the path after `linkedin.com/`, e.g. `in/jdoe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Handle {
    pub handle: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct FollowedHandle {
    pub handle: Option<String>,
    pub followers: Option<i64>,
}

/// `200` of `GET /v2/companies/find`, and `company` of the combined answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: Option<String>,
    pub name: Option<String>,
    pub legal_name: Option<String>,
    pub domain: Option<String>,
    #[serde(default)]
    pub domain_aliases: Vec<String>,
    /// At most 255 characters.
    pub description: Option<String>,
    /// Address line of the headquarters.
    pub location: Option<String>,
    pub logo: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub tech: Vec<String>,
    pub category: Option<Category>,
    pub founded_year: Option<i32>,
    pub utc_offset: Option<i32>,
    pub metrics: Option<Metrics>,
    pub geo: Option<CompanyGeo>,
    pub linkedin: Option<Handle>,
    pub twitter: Option<FollowedHandle>,
    pub facebook: Option<Handle>,
    pub indexed_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Category {
    pub sector: Option<String>,
    pub industry_group: Option<String>,
    pub industry: Option<String>,
    pub sub_industry: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub employees: Option<i64>,
    /// e.g. `51-250`, `251-1K`, `10K-50K`.
    pub employees_range: Option<String>,
    pub raised: Option<i64>,
    pub annual_revenue: Option<i64>,
    pub market_cap: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyGeo {
    pub street_name: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub country_code: Option<String>,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
}

/// The body of an error answer (`202` may also come with an empty body).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// `queued`, `auth_required`, `invalid_api_key`, `over_quota`, `unknown_record`,
    /// `params_invalid`, `rate_limit`, `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: Option<String>,
}

/// The published JSON Schema of the `vendor_b` wire format.
pub fn wire_schema() -> serde_json::Value {
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    /// Clearbit (legacy) answers as leadlex reads them.
    struct VendorBWireFormat {
        combined_find: CombinedResponse,
        company_find: Company,
        error: ErrorResponse,
    }
    serde_json::to_value(schemars::schema_for!(VendorBWireFormat)).expect("schema serialises")
}

#[derive(Debug, Clone)]
pub struct ClearbitClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    timeout: Duration,
}

impl ClearbitClient {
    pub fn new(http: reqwest::Client, base_url: String, api_key: Secret, timeout: Duration) -> Self {
        Self { http, base_url, api_key, timeout }
    }

    pub async fn lookup(&self, input: &LookupInput) -> Result<VendorAnswer, VendorError> {
        let (path, query) = match input {
            LookupInput::Email { email, company_hint } => {
                let mut q = vec![("email", email.to_string())];
                if let Some(hint) = company_hint {
                    q.push(("company_domain", hint.to_string()));
                }
                ("/v2/combined/find", q)
            }
            LookupInput::Domain(domain) => ("/v2/companies/find", vec![("domain", domain.to_string())]),
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.base_url))
            .query(&query)
            .bearer_auth(self.api_key.expose())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(VendorError::from_reqwest)?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            202 => return Err(VendorError::Queued),
            // 422: Clearbit will not resolve this input (role address, bad syntax).
            404 | 422 => return Ok(VendorAnswer::NoMatch),
            429 => return Err(VendorError::RateLimited { retry_after: retry_after_header(&resp) }),
            401..=403 => return Err(VendorError::Refused(status)),
            _ => return Err(VendorError::Status(status)),
        }
        let body = resp.bytes().await.map_err(VendorError::from_reqwest)?;
        let malformed = |e: serde_json::Error| VendorError::Malformed(e.to_string());
        let (record, confidence) = match input {
            LookupInput::Email { .. } => {
                let r: CombinedResponse = serde_json::from_slice(&body).map_err(malformed)?;
                let confidence = match &r.person {
                    Some(p) if p.fuzzy == Some(true) => 0.6,
                    _ => 0.9,
                };
                (map_combined(r), confidence)
            }
            LookupInput::Domain(_) => {
                let c: Company = serde_json::from_slice(&body).map_err(malformed)?;
                (map_company_only(c), 0.9)
            }
        };
        if record.is_empty() {
            return Ok(VendorAnswer::NoMatch);
        }
        Ok(VendorAnswer::Match { record: Box::new(record), confidence })
    }
}

fn handle_url(site: &str, handle: Option<String>) -> Option<String> {
    handle.map(|h| h.trim().trim_start_matches('/').to_string()).filter(|h| !h.is_empty()).map(|h| format!("{site}{h}"))
}

fn map_company(c: Company) -> (record::Company, Social) {
    let social = Social {
        twitter: handle_url("https://twitter.com/", c.twitter.and_then(|t| t.handle)),
        github: None,
        facebook: handle_url("https://www.facebook.com/", c.facebook.and_then(|f| f.handle)),
    };
    let company = record::Company {
        name: c.name,
        domain: website_domain(c.domain),
        industry: c.category.and_then(|cat| cat.industry),
        size: c.metrics.and_then(|m| m.employees_range),
        founded_year: c.founded_year,
        description: c.description,
        linkedin_url: handle_url("https://www.linkedin.com/", c.linkedin.and_then(|l| l.handle)),
        hq_location: c.location,
    };
    (company, social)
}

pub fn map_company_only(c: Company) -> EnrichmentRecord {
    let (company, social) = map_company(c);
    EnrichmentRecord::new(None, Some(company), Some(social))
}

pub fn map_combined(r: CombinedResponse) -> EnrichmentRecord {
    let company = r.company.map(|c| map_company(c).0);
    let (person, social) = match r.person {
        None => (None, None),
        Some(p) => {
            let name = p.name.unwrap_or_default();
            let employment = p.employment.unwrap_or_default();
            let person = record::Person {
                full_name: name.full_name,
                first_name: name.given_name,
                last_name: name.family_name,
                job_title: employment.title,
                seniority: employment.seniority.map(|s| s.to_lowercase()),
                location: p.location,
                linkedin_url: handle_url("https://www.linkedin.com/", p.linkedin.and_then(|l| l.handle)),
            };
            let social = Social {
                twitter: handle_url("https://twitter.com/", p.twitter.and_then(|t| t.handle)),
                github: handle_url("https://github.com/", p.github.and_then(|g| g.handle)),
                facebook: handle_url("https://www.facebook.com/", p.facebook.and_then(|f| f.handle)),
            };
            (Some(person), Some(social))
        }
    };
    EnrichmentRecord::new(person, company, social)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_answer_maps_onto_our_fields() {
        let body = r#"{"person":{"name":{"fullName":"Jane Doe","givenName":"Jane","familyName":"Doe"},
            "employment":{"title":"General Counsel","seniority":"executive"},"location":"New York, NY, US",
            "linkedin":{"handle":"in/janedoe"},"github":{"handle":"janedoe","followers":3},"fuzzy":false},
            "company":{"name":"Acme Corp","domain":"acme.com","category":{"industry":"Legal Services"},
            "metrics":{"employeesRange":"251-1K"},"foundedYear":1998,"location":"1 Main St, New York"}}"#;
        let rec = map_combined(serde_json::from_str(body).unwrap());
        let p = rec.person.unwrap();
        assert_eq!(p.linkedin_url.as_deref(), Some("https://www.linkedin.com/in/janedoe"));
        assert_eq!(rec.social.unwrap().github.as_deref(), Some("https://github.com/janedoe"));
        let c = rec.company.unwrap();
        assert_eq!(c.industry.as_deref(), Some("Legal Services"));
        assert_eq!(c.size.as_deref(), Some("251-1K"));
    }

    #[test]
    fn empty_combined_answer_is_empty() {
        assert!(map_combined(serde_json::from_str(r#"{"person":null,"company":null}"#).unwrap()).is_empty());
    }
}
