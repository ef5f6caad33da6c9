//! Parsing and normalising what a caller asks about, before any lookup or caching:
//! parse, don't validate. A [`EmailAddress`] or [`Domain`] only exists in normal form
//! (trimmed, lowercase, IDN as punycode, `https://www.acme.com/path` → `acme.com`).

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hex::hex;

/// Why an input was refused; `field` names the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: &'static str,
    pub message: String,
}

impl InputError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// A registrable-looking DNS name in ASCII lowercase (punycode for IDNs), without a
/// leading `www.` or a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Domain(String);

impl Domain {
    /// Accepts `acme.com`, ` ACME.com. `, `www.acme.com`, `https://www.acme.com/path?q`,
    /// `acme.com:443` and Unicode names (`bücher.de` → `xn--bcher-kva.de`).
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        Self::parse_field(raw, "domain")
    }

    fn parse_field(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InputError::new(field, "must not be empty"));
        }
        let host = if trimmed.contains("://") {
            let url = url::Url::parse(trimmed).map_err(|e| InputError::new(field, format!("is not a valid URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(InputError::new(field, "URLs must use http or https"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(InputError::new(field, "URLs must not carry credentials"));
            }
            match url.host() {
                Some(url::Host::Domain(d)) => d.to_string(),
                Some(_) => return Err(InputError::new(field, "must be a domain name, not an IP address")),
                None => return Err(InputError::new(field, "URL has no host")),
            }
        } else {
            let end = trimmed.find(['/', '?', '#']).unwrap_or(trimmed.len());
            let host = &trimmed[..end];
            // Drop a port, `acme.com:443`.
            match host.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
                _ => host.to_string(),
            }
        };
        let host = host.trim_end_matches('.');
        if host.is_empty() || host.len() > 253 {
            return Err(InputError::new(field, "is not a valid domain name"));
        }
        let ascii = idna::domain_to_ascii(host).map_err(|_| InputError::new(field, "is not a valid domain name"))?;
        let ascii = match ascii.strip_prefix("www.") {
            Some(rest) if rest.contains('.') => rest.to_string(),
            _ => ascii,
        };
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(InputError::new(field, "must have at least two labels, like acme.com"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(InputError::new(field, "is not a valid domain name"));
            }
        }
        let tld = labels[labels.len() - 1];
        if tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InputError::new(field, "must be a domain name, not an IP address"));
        }
        if ascii.len() > 253 {
            return Err(InputError::new(field, "is too long"));
        }
        Ok(Self(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address in normal form: trimmed, lowercase, its domain as [`Domain`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmailAddress {
    local: String,
    domain: Domain,
}

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InputError::new("email", "must not be empty"));
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(|| InputError::new("email", "must look like name@example.com"))?;
        let local = local.to_lowercase();
        const ATEXT: &str = "!#$%&'*+-/=?^_`{|}~.";
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| c.is_ascii_alphanumeric() || ATEXT.contains(c));
        if !local_ok {
            return Err(InputError::new("email", "has an invalid part before the @"));
        }
        if domain.contains(['/', '?', '#', ':']) {
            return Err(InputError::new("email", "has an invalid domain after the @"));
        }
        let domain = Domain::parse_field(domain, "email")?;
        if local.len() + 1 + domain.as_str().len() > 254 {
            return Err(InputError::new("email", "is too long"));
        }
        Ok(Self { local, domain })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// A section of the answer a caller may ask for with `include`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Person,
    Company,
    Social,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::Person, Section::Company, Section::Social];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Person => "person",
            Section::Company => "company",
            Section::Social => "social",
        }
    }
}

/// What to look up. With an email, the person behind it (and their company); with a
/// domain only, the company. With both, the email is looked up and the domain is passed
/// to the vendors as the person's company (a hint that wins over the email's own domain);
/// when it equals the email's domain it adds nothing and is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LookupInput {
    Email { email: EmailAddress, company_hint: Option<Domain> },
    Domain(Domain),
}

impl LookupInput {
    pub fn new(email: Option<EmailAddress>, domain: Option<Domain>) -> Result<Self, InputError> {
        match (email, domain) {
            (Some(email), hint) => {
                let company_hint = hint.filter(|d| d != email.domain());
                Ok(Self::Email { email, company_hint })
            }
            (None, Some(domain)) => Ok(Self::Domain(domain)),
            (None, None) => Err(InputError::new("email", "either `email` or `domain` is required")),
        }
    }

    /// The cache key: `email:jane@acme.com`, `email:jane@gmail.com|company:acme.com`,
    /// `domain:acme.com`.
    pub fn cache_key(&self) -> String {
        match self {
            Self::Email { email, company_hint: None } => format!("email:{email}"),
            Self::Email { email, company_hint: Some(d) } => format!("email:{email}|company:{d}"),
            Self::Domain(d) => format!("domain:{d}"),
        }
    }

    pub fn has_email(&self) -> bool {
        matches!(self, Self::Email { .. })
    }
}

/// A whole, validated enrich request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichQuery {
    pub input: LookupInput,
    /// Never empty; every section when the caller did not say.
    pub include: BTreeSet<Section>,
}

impl EnrichQuery {
    /// Validates the raw request fields; all problems are reported, not just the first.
    pub fn parse(email: Option<&str>, domain: Option<&str>, include: Option<&[Section]>) -> Result<Self, Vec<InputError>> {
        let mut problems = Vec::new();
        let email = email.and_then(|e| EmailAddress::parse(e).map_err(|e| problems.push(e)).ok());
        let domain = domain.and_then(|d| Domain::parse(d).map_err(|e| problems.push(e)).ok());
        let include: BTreeSet<Section> = match include {
            None => Section::ALL.into_iter().collect(),
            Some(list) => list.iter().copied().collect(),
        };
        if include.is_empty() {
            problems.push(InputError::new("include", "must name at least one section"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let input = LookupInput::new(email, domain).map_err(|e| vec![e])?;
        Ok(Self { input, include })
    }

    /// Identifies "the same request" for idempotency: a hash of the method, the path and
    /// the normalised body (so `ACME.com` and `acme.com` are the same request).
    pub fn fingerprint(&self, method: &str, path: &str) -> String {
        // The SHA-256 of "{method} {path}\n{cache key}\n{sections, comma-separated}",
        // hashed piece by piece (no formatted copy per request).
        let mut hash = Sha256::new();
        for part in [method, " ", path, "\n", &self.input.cache_key(), "\n"] {
            hash.update(part.as_bytes());
        }
        for (n, section) in self.include.iter().enumerate() {
            if n > 0 {
                hash.update(b",");
            }
            hash.update(section.as_str().as_bytes());
        }
        hex(&hash.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        Domain::parse(s).map(|d| d.to_string()).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(d("acme.com"), "acme.com");
        assert_eq!(d("  ACME.Com.  "), "acme.com");
        assert_eq!(d("www.acme.com"), "acme.com");
        assert_eq!(d("https://www.acme.com/path?x=1#f"), "acme.com");
        assert_eq!(d("HTTP://Acme.com:8080/"), "acme.com");
        assert_eq!(d("acme.com/about"), "acme.com");
        assert_eq!(d("acme.com:443"), "acme.com");
        assert_eq!(d("bücher.de"), "xn--bcher-kva.de");
        assert_eq!(d("BÜCHER.de"), "xn--bcher-kva.de");
        assert_eq!(d("mail.acme.co.uk"), "mail.acme.co.uk");
        assert_eq!(d("www.com"), "www.com");
    }

    #[test]
    fn bad_domains_are_refused() {
        for bad in [
            "",
            "   ",
            "acme",
            "acme..com",
            "-acme.com",
            "acme-.com",
            "ac me.com",
            "127.0.0.1",
            "http://127.0.0.1/",
            "ftp://acme.com",
            "https://user@acme.com/",
            "acme_corp.com",
            "jane@acme.com",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn emails_are_normalised() {
        let e = EmailAddress::parse("  Jane.Doe@ACME.com ").unwrap();
        assert_eq!(e.to_string(), "jane.doe@acme.com");
        assert_eq!(e.domain().as_str(), "acme.com");
        assert_eq!(EmailAddress::parse("jane@bücher.de").unwrap().to_string(), "jane@xn--bcher-kva.de");
        assert_eq!(EmailAddress::parse("j+tag@www.acme.com").unwrap().to_string(), "j+tag@acme.com");
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "jane",
            "@acme.com",
            "jane@",
            "jane@acme",
            ".jane@acme.com",
            "ja..ne@acme.com",
            "ja ne@acme.com",
            "jane@acme.com/x",
            "jane@@acme.com",
            "jane@127.0.0.1",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn email_and_domain_together_use_the_domain_as_company_hint() {
        let q = EnrichQuery::parse(Some("jane@gmail.com"), Some("ACME.com"), None).unwrap();
        assert_eq!(q.input.cache_key(), "email:jane@gmail.com|company:acme.com");
        let same = EnrichQuery::parse(Some("jane@acme.com"), Some("www.acme.com"), None).unwrap();
        assert_eq!(same.input.cache_key(), "email:jane@acme.com");
    }

    #[test]
    fn query_validation_reports_every_problem() {
        let errs = EnrichQuery::parse(Some("nope"), Some("also nope"), None).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(EnrichQuery::parse(None, None, None).is_err());
        assert!(EnrichQuery::parse(None, Some("acme.com"), Some(&[])).is_err());
        assert!(EnrichQuery::parse(None, Some("acme.com"), Some(&[Section::Person])).is_ok());
    }

    #[test]
    fn fingerprint_ignores_spelling_but_not_meaning() {
        let a = EnrichQuery::parse(Some("Jane@Acme.com"), None, None).unwrap();
        let b = EnrichQuery::parse(Some(" jane@acme.com"), None, Some(&Section::ALL)).unwrap();
        let c = EnrichQuery::parse(Some("jane@acme.com"), None, Some(&[Section::Person])).unwrap();
        assert_eq!(a.fingerprint("POST", "/p"), b.fingerprint("POST", "/p"));
        assert_ne!(a.fingerprint("POST", "/p"), c.fingerprint("POST", "/p"));
    }

    /// Fingerprints are stored with idempotency records: their bytes must not change
    /// from one release to the next, or retries after an upgrade would be refused (422).
    #[test]
    fn fingerprint_is_the_hash_of_the_documented_canonical_form() {
        let q = EnrichQuery::parse(Some("jane@gmail.com"), Some("acme.com"), Some(&[Section::Social, Section::Person])).unwrap();
        let canonical = "POST /v1/email/enrich\nemail:jane@gmail.com|company:acme.com\nperson,social";
        assert_eq!(q.input.cache_key(), "email:jane@gmail.com|company:acme.com", "the canonical form below assumes this key");
        assert_eq!(q.fingerprint("POST", "/v1/email/enrich"), hex(&Sha256::digest(canonical.as_bytes())));
    }
}
