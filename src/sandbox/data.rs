//! The sandbox's synthetic world: deterministic people and companies derived from a
//! SHA-256 of the normalised input, so the same input always gives the same answer.
//!
//! Coverage (documented in `docs/`): each input falls in a bucket 0–9 of its hash;
//! `vendor_a` knows buckets 0–6, `vendor_b` buckets 3–8, nobody knows bucket 9. A person's
//! company is known when the vendor knows the email's domain (never for free-mail
//! domains). Anything under `.invalid` is known to nobody. `acme.com` and
//! `jane@acme.com` are fixtures known to both, matching the
//! public docs' example. Clearbit answers `202 queued` for emails whose local part starts
//! with `queued`.

use sha2::{Digest, Sha256};

use crate::test_mode::{Trigger, TRIGGER_DOMAIN};
use crate::vendor_name::VendorName;

/// Whether every vendor fails for this email (the `upstream_unavailable` trigger).
pub fn is_outage(email: &QueryEmail) -> bool {
    Trigger::of_email(&email.to_string()) == Some(Trigger::UpstreamUnavailable)
}

/// Whether this email is answered slowly (the `slow` trigger).
pub fn is_slow(email: &QueryEmail) -> bool {
    Trigger::of_email(&email.to_string()) == Some(Trigger::Slow)
}

/// A domain as a vendor reads its query parameter: trimmed and lowercased (the gateway
/// sends normalised inputs; a vendor only checks the shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDomain(String);

impl QueryDomain {
    pub fn parse(raw: &str) -> Option<Self> {
        let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = d.contains('.') && !d.starts_with('.') && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        ok.then_some(Self(d))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueryDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address as a vendor reads it: `local@domain`, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryEmail {
    address: String,
    local: String,
    domain: QueryDomain,
}

impl QueryEmail {
    pub fn parse(raw: &str) -> Option<Self> {
        let address = raw.trim().to_ascii_lowercase();
        let (local, domain) = address.rsplit_once('@')?;
        if local.is_empty() {
            return None;
        }
        Some(Self { local: local.to_string(), domain: QueryDomain::parse(domain)?, address })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &QueryDomain {
        &self.domain
    }
}

impl std::fmt::Display for QueryEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)
    }
}

/// A vendor's record id for `subject`: 16 hex digits of its SHA-256.
pub fn record_id(subject: &str) -> String {
    crate::hex::hex(&Sha256::digest(subject.as_bytes())[..8])
}

const FIRST: [&str; 16] = [
    "Alex", "Maria", "Sam", "Priya", "Jordan", "Lena", "Omar", "Yuki", "Chris", "Fatima", "Noah", "Elena", "Diego", "Grace", "Ivan", "Zoe",
];
const LAST: [&str; 16] = [
    "Smith", "Garcia", "Chen", "Patel", "Kim", "Müller", "Rossi", "Nguyen", "Okafor", "Silva", "Novak", "Cohen", "Larsen", "Haddad",
    "Tanaka", "Brown",
];
/// (title, PDL level, Clearbit seniority)
const TITLES: [(&str, &str, &str); 8] = [
    ("Chief Executive Officer", "cxo", "executive"),
    ("VP of Sales", "vp", "executive"),
    ("Director of Engineering", "director", "director"),
    ("Engineering Manager", "manager", "manager"),
    ("Senior Software Engineer", "senior", "senior"),
    ("Account Executive", "entry", "entry"),
    ("Product Manager", "manager", "manager"),
    ("Marketing Director", "director", "director"),
];
const CITIES: [&str; 8] = [
    "New York, NY, US",
    "San Francisco, CA, US",
    "London, England, GB",
    "Berlin, Berlin, DE",
    "Austin, TX, US",
    "Toronto, ON, CA",
    "Paris, Île-de-France, FR",
    "Sydney, NSW, AU",
];
const INDUSTRIES: [&str; 8] = [
    "Computer Software",
    "Financial Services",
    "Legal Services",
    "Retail",
    "Health Care",
    "Logistics",
    "Marketing and Advertising",
    "Education",
];
const SUFFIXES: [&str; 6] = ["Inc", "Corp", "Labs", "Group", "GmbH", "Ltd"];
/// PDL size buckets and the Clearbit range each falls in.
const SIZES: [(&str, &str); 8] = [
    ("1-10", "1-10"),
    ("11-50", "11-50"),
    ("51-200", "51-250"),
    ("201-500", "251-1K"),
    ("501-1000", "251-1K"),
    ("1001-5000", "1K-5K"),
    ("5001-10000", "5K-10K"),
    ("10001+", "10K-50K"),
];
const FREE_MAIL: [&str; 6] = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "proton.me"];

fn digest(tag: &str, subject: &str) -> [u8; 32] {
    Sha256::digest(format!("{tag}:{subject}").as_bytes()).into()
}

/// Whether `vendor` knows `subject` (a normalised email or domain).
pub fn knows(vendor: VendorName, subject: &str) -> bool {
    if subject == "acme.com" || subject == "jane@acme.com" || subject == TRIGGER_DOMAIN {
        return true;
    }
    if subject.ends_with(&format!("@{TRIGGER_DOMAIN}")) {
        return match Trigger::of_email(subject) {
            Some(Trigger::VendorA | Trigger::Slow) => vendor == VendorName::VendorA,
            Some(Trigger::VendorB) => vendor == VendorName::VendorB,
            _ => false,
        };
    }
    if subject.ends_with(".invalid") {
        return false; // RFC 2606: a documented input nobody knows
    }
    let bucket = digest("bucket", subject)[0] % 10;
    match vendor {
        VendorName::VendorA => bucket <= 6,
        VendorName::VendorB => (3..=8).contains(&bucket),
    }
}

pub fn is_free_mail(domain: &QueryDomain) -> bool {
    FREE_MAIL.contains(&domain.as_str())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The truth about a company, whoever tells it.
#[derive(Debug, Clone)]
pub struct SynthCompany {
    pub name: String,
    pub domain: String,
    pub industry: String,
    pub size: (&'static str, &'static str),
    pub founded: i32,
    pub description: String,
    pub hq: String,
    pub linkedin: String,
    pub twitter: Option<String>,
    pub likelihood: u8,
}

pub fn company(domain: &QueryDomain) -> SynthCompany {
    let h = digest("company", domain.as_str());
    let label = domain.as_str().split('.').next().unwrap_or("acme");
    if domain.as_str() == "acme.com" {
        return SynthCompany {
            name: "Acme Corp".into(),
            domain: "acme.com".into(),
            industry: "Legal Services".into(),
            size: SIZES[3],
            founded: 1998,
            description: "Acme Corp provides legal services from New York.".into(),
            hq: "New York, NY, US".into(),
            linkedin: "company/acme".into(),
            twitter: Some("acme".into()),
            likelihood: 9,
        };
    }
    let name = format!("{} {}", capitalise(label), SUFFIXES[h[1] as usize % SUFFIXES.len()]);
    let industry = INDUSTRIES[h[2] as usize % INDUSTRIES.len()].to_string();
    let hq = CITIES[h[5] as usize % CITIES.len()].to_string();
    SynthCompany {
        description: format!("{name} is a {} company based in {hq}.", industry.to_lowercase()),
        name,
        domain: domain.to_string(),
        industry,
        size: SIZES[h[3] as usize % SIZES.len()],
        founded: 1950 + i32::from(h[4] % 73),
        hq,
        linkedin: format!("company/{label}"),
        twitter: (h[6] % 2 == 0).then(|| label.to_string()),
        likelihood: 7 + h[7] % 4,
    }
}

/// The truth about a person, whoever tells it.
#[derive(Debug, Clone)]
pub struct SynthPerson {
    pub first: String,
    pub last: String,
    pub title: (&'static str, &'static str, &'static str),
    pub location: String,
    pub linkedin: String,
    pub twitter: Option<String>,
    pub github: Option<String>,
    pub likelihood: u8,
    pub fuzzy: bool,
}

pub fn person(email: &QueryEmail) -> SynthPerson {
    if email.to_string() == "jane@acme.com" {
        return SynthPerson {
            first: "Jane".into(),
            last: "Doe".into(),
            title: ("General Counsel", "cxo", "executive"),
            location: "New York, NY, US".into(),
            linkedin: "in/janedoe".into(),
            twitter: None,
            github: None,
            likelihood: 9,
            fuzzy: false,
        };
    }
    let h = digest("person", &email.to_string());
    let words: Vec<&str> =
        email.local_part().split(['.', '_', '-']).filter(|w| w.len() >= 2 && w.chars().all(|c| c.is_ascii_alphabetic())).collect();
    let (first, last) = match words.as_slice() {
        [f, l, ..] => (capitalise(f), capitalise(l)),
        [f] => (capitalise(f), LAST[h[2] as usize % LAST.len()].to_string()),
        [] => (FIRST[h[1] as usize % FIRST.len()].to_string(), LAST[h[2] as usize % LAST.len()].to_string()),
    };
    let slug = format!("{}{}", first.to_lowercase(), last.to_lowercase()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    SynthPerson {
        title: TITLES[h[3] as usize % TITLES.len()],
        location: CITIES[h[4] as usize % CITIES.len()].to_string(),
        linkedin: format!("in/{slug}-{:02x}{:02x}", h[9], h[10]),
        twitter: (h[5] % 3 == 0).then(|| slug.clone()),
        github: (h[6] % 4 == 0).then(|| slug.clone()),
        likelihood: 6 + h[7] % 5,
        fuzzy: h[8] % 5 == 0,
        first,
        last,
    }
}
