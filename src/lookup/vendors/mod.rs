//! Upstream data vendors: one adapter per wire format, each mapping the vendor's answer
//! onto [`EnrichmentRecord`]. Adapters know HTTP towards the vendor only; they never see
//! our callers, our credits or our cache.
//!
//! - [`pdl`]: `vendor_a`, People Data Labs v5 person/company enrich.
//! - [`clearbit`]: `vendor_b`, Clearbit's legacy combined/company find.

pub mod clearbit;
pub mod pdl;

use std::time::Duration;

use super::input::LookupInput;
use super::record::EnrichmentRecord;
use crate::config::VendorSettings;
pub use crate::vendor_name::VendorName;

/// What a vendor said about an input.
#[derive(Debug, Clone, PartialEq)]
pub enum VendorAnswer {
    Match { record: Box<EnrichmentRecord>, confidence: f64 },
    NoMatch,
}

/// Why a vendor gave no usable answer. Not a "no match": the data may exist.
#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error("timed out")]
    Timeout,
    #[error("could not connect")]
    Connect(#[source] reqwest::Error),
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    #[error("rate limited by the vendor")]
    RateLimited { retry_after: Option<Duration> },
    #[error("lookup queued by the vendor (202), no data yet")]
    Queued,
    #[error("vendor refused our credentials or quota (status {0})")]
    Refused(u16),
    #[error("vendor answered status {0}")]
    Status(u16),
    #[error("vendor answered a body we cannot read: {0}")]
    Malformed(String),
    #[error("circuit breaker open: vendor skipped")]
    BreakerOpen,
}

impl VendorError {
    fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_connect() {
            Self::Connect(err)
        } else if err.is_decode() {
            Self::Malformed(err.to_string())
        } else {
            Self::Transport(err)
        }
    }

    /// Whether repeating the call cannot cost or change anything upstream: the request
    /// never arrived (connection refused), or the vendor refused it without serving it
    /// (5xx, 429). Never after a timeout: the vendor may have served and billed it.
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            Self::Connect(_) | Self::RateLimited { .. } => true,
            Self::Status(s) => *s >= 500,
            _ => false,
        }
    }

    /// Whether this failure says the vendor is unwell (what its circuit breaker counts),
    /// rather than that it refused this input: a vendor's 4xx about the request (other
    /// than 429 and the 401–403 that refuse our credentials) is an answer about the
    /// input, and one tenant's bad inputs must not open a breaker shared by all.
    pub fn is_vendor_fault(&self) -> bool {
        match self {
            Self::Status(s) => !(400..500).contains(s),
            _ => true,
        }
    }

    /// The metric label of this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Transport(_) => "transport",
            Self::RateLimited { .. } => "rate_limited",
            Self::Queued => "queued",
            Self::Refused(_) => "refused",
            Self::Status(_) => "status",
            Self::Malformed(_) => "malformed",
            Self::BreakerOpen => "breaker_open",
        }
    }

    /// How long to wait before asking again, when the vendor said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// One configured vendor.
#[derive(Debug, Clone)]
pub enum Vendor {
    A(pdl::PdlClient),
    B(clearbit::ClearbitClient),
}

impl Vendor {
    pub fn from_settings(settings: &VendorSettings, http: reqwest::Client) -> Self {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let base = settings.base_url.trim_end_matches('/').to_string();
        match settings.name {
            VendorName::VendorA => Self::A(pdl::PdlClient::new(http, base, settings.api_key.clone(), timeout)),
            VendorName::VendorB => Self::B(clearbit::ClearbitClient::new(http, base, settings.api_key.clone(), timeout)),
        }
    }

    pub fn name(&self) -> VendorName {
        match self {
            Self::A(_) => VendorName::VendorA,
            Self::B(_) => VendorName::VendorB,
        }
    }

    pub async fn lookup(&self, input: &LookupInput) -> Result<VendorAnswer, VendorError> {
        match self {
            Self::A(c) => c.lookup(input).await,
            Self::B(c) => c.lookup(input).await,
        }
    }
}

/// Parses a `Retry-After` header given in seconds.
fn retry_after_header(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `https://` in front of a URL that vendors send without a scheme.
fn with_scheme(url: Option<String>) -> Option<String> {
    let url = url?.trim().to_string();
    if url.is_empty() {
        None
    } else if url.starts_with("http://") || url.starts_with("https://") {
        Some(url)
    } else {
        Some(format!("https://{url}"))
    }
}

/// A vendor's website field as a bare domain (`www.acme.com/` → `acme.com`).
fn website_domain(website: Option<String>) -> Option<String> {
    website.and_then(|w| super::input::Domain::parse(&w).ok()).map(|d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::VendorError;

    #[test]
    fn only_vendor_faults_count_against_a_breaker() {
        for fault in
            [VendorError::Timeout, VendorError::Status(500), VendorError::Status(503), VendorError::Refused(401), VendorError::Queued]
        {
            assert!(fault.is_vendor_fault(), "{fault}");
        }
        assert!(VendorError::RateLimited { retry_after: None }.is_vendor_fault());
        for about_the_input in [400, 404, 413, 414, 422] {
            assert!(!VendorError::Status(about_the_input).is_vendor_fault(), "{about_the_input}");
        }
    }
}
