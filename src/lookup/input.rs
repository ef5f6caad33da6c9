//! Parsing and normalising what a caller asks about, before any lookup or caching:
//! parse, don't validate. A [`EmailAddress`] or [`Domain`] only exists in normal form
//! (trimmed, lowercase, IDN as punycode, `https://www.acme.com/path` → `acme.com`).
//!
//! Invariant: an input is accepted exactly when it matches [`EMAIL_PATTERN`] or
//! [`DOMAIN_PATTERN`], the patterns the published request schema carries; normalising a
//! matching input never fails (property-tested against strings generated from them).

use std::{collections::BTreeSet, fmt, sync::LazyLock};

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hex::hex;

use crate::validation::FieldError;

// The shapes of the inputs, published as the `pattern`s of the request schema and
// enforced here with the very same text (compiled once per process), so that what the
// spec allows is exactly what the parser accepts. Written for the three regex dialects
// that read them (ECMA-262 for JSON Schema, Python's `re` for Schemathesis, Rust's
// `regex`): classes of code points, no look-around, no named groups.

/// The first and last character of a DNS label: an ASCII letter or digit, or any
/// non-ASCII character (internationalised names).
macro_rules! label_edge {
    () => {
        r"[^\x00-\x2F\x3A-\x40\x5B-\x60\x7B-\x7F]"
    };
}

/// Inside a label: the same, or a hyphen.
macro_rules! label_inner {
    () => {
        r"[^\x00-\x2C\x2E\x2F\x3A-\x40\x5B-\x60\x7B-\x7F]"
    };
}

/// A host name: two labels or more of at most 63 characters, hyphens only inside, the
/// last one starting with a letter (never an IP address), and an optional trailing dot.
macro_rules! host {
    () => {
        concat!(
            "(?:",
            label_edge!(),
            "(?:",
            label_inner!(),
            "{0,61}",
            label_edge!(),
            r")?\.)+",
            r"[^\x00-\x40\x5B-\x60\x7B-\x7F]",
            "(?:",
            label_inner!(),
            "{0,61}",
            label_edge!(),
            r")?\.?"
        )
    };
}

/// The longest `email` any entry point takes (single calls, bulk items, JSON and CSV
/// job items alike), in characters: RFC 5321's path limit. Published as the single
/// call's `maxLength`.
pub const EMAIL_MAX: usize = 254;
/// The longest `domain` any entry point takes, in characters (it may be a URL with a
/// path). Published as the single call's `maxLength`.
pub const DOMAIN_MAX: usize = 2048;

/// Surrounding white space the parser trims.
const SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// What `domain` accepts: a host name, optionally as an http(s) URL, with a port and a
/// path, query or fragment, surrounded by optional white space.
pub const DOMAIN_PATTERN: &str =
    concat!(r"^[ \t\r\n]*(?:[Hh][Tt][Tt][Pp][Ss]?://)?", host!(), r"(?::[0-9]{1,5})?(?:[/?#][^\x00-\x20\x7F]*)?[ \t\r\n]*$");

/// What `email` accepts: a dot-atom local part (RFC 5322 `atext`), `@`, a host name,
/// surrounded by optional white space.
pub const EMAIL_PATTERN: &str =
    concat!(r"^[ \t\r\n]*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@", host!(), r"[ \t\r\n]*$");

/// The bound on a label's inner characters in the published patterns.
const LABEL_BOUND: &str = "{0,61}";
/// The longest label, in characters (the bound plus its two edges).
const LABEL_MAX: usize = 63;

/// A published pattern compiled without its labels' length bound, which [`labels_fit`]
/// checks instead: together they accept exactly what the pattern does (a test checks it
/// both ways). The bound repeats a class of every non-ASCII code point 61 times, twice,
/// which compiles to an automaton of megabytes (measured: the two patterns took 25 MB of
/// the server's memory from the first call on); without it the automaton is small.
fn unbounded(pattern: &str) -> Regex {
    assert_eq!(pattern.matches(LABEL_BOUND).count(), 2, "a host's two bounded labels");
    Regex::new(&pattern.replace(LABEL_BOUND, "*")).expect("the pattern compiles")
}

static DOMAIN_SHAPE: LazyLock<Regex> = LazyLock::new(|| unbounded(DOMAIN_PATTERN));
static EMAIL_SHAPE: LazyLock<Regex> = LazyLock::new(|| unbounded(EMAIL_PATTERN));

/// Whether every label of `host` (as the patterns delimit it) is at most
/// [`LABEL_MAX`] characters long.
fn labels_fit(host: &str) -> bool {
    host.split('.').all(|label| label.chars().nth(LABEL_MAX).is_none())
}

/// The host of `raw` if it matches [`DOMAIN_PATTERN`]: after the white space and the
/// scheme, before a port, path, query or fragment.
fn domain_host(raw: &str) -> Option<&str> {
    if !DOMAIN_SHAPE.is_match(raw) {
        return None;
    }
    let rest = strip_scheme(raw.trim_matches(SPACE));
    let host = rest.split([':', '/', '?', '#']).next().unwrap_or(rest);
    labels_fit(host).then_some(host)
}

/// The local part and the host of `raw` if it matches [`EMAIL_PATTERN`].
fn email_parts(raw: &str) -> Option<(&str, &str)> {
    if !EMAIL_SHAPE.is_match(raw) {
        return None;
    }
    raw.trim_matches(SPACE).rsplit_once('@').filter(|(_, host)| labels_fit(host))
}

/// Whether `name` is a name in normal form: two labels or more of `[a-z0-9-]`, none empty,
/// the last one not all digits (never an IP address). (The punycode of a long Unicode
/// label may pass DNS's 63 bytes: nobody resolves these names, vendors look them up.)
fn is_normal_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        && !labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// A host name of a matching input in normal form: lowercase, IDN labels as punycode,
/// without a trailing dot or a leading `www.`. Total for every host [`host!`] matches,
/// and always [`is_normal_name`].
fn normalise_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    let ascii = if host.is_ascii() {
        // The pattern admits nothing else: already a normal name but for the case.
        host.to_ascii_lowercase()
    } else {
        // UTS 46 (mapping, case folding), unless what it maps to is not a normal name:
        // it turns full-width punctuation into ASCII (`１２７.０.０.１` → `127.0.0.1`,
        // `ａ／ｂ` → `a/b`), which must never reach a cache key. Such a name, or one UTS 46
        // refuses, is still a name somebody may ask about: each label's lowercase as
        // punycode (nobody will know it).
        idna::domain_to_ascii(host).ok().filter(|a| is_normal_name(a)).unwrap_or_else(|| {
            host.split('.')
                .map(|label| {
                    let label = label.to_lowercase();
                    match idna::punycode::encode_str(&label) {
                        Some(encoded) if !label.is_ascii() => format!("xn--{encoded}"),
                        _ => label,
                    }
                })
                .collect::<Vec<_>>()
                .join(".")
        })
    };
    match ascii.strip_prefix("www.") {
        Some(rest) if rest.contains('.') => rest.to_string(),
        _ => ascii,
    }
}

/// `s` without a leading `http://` or `https://`, in any case.
fn strip_scheme(s: &str) -> &str {
    for scheme in ["https://", "http://"] {
        if s.get(..scheme.len()).is_some_and(|head| head.eq_ignore_ascii_case(scheme)) {
            return &s[scheme.len()..];
        }
    }
    s
}

/// A DNS name in ASCII lowercase (punycode for IDNs), without a leading `www.` or a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Domain(String);

impl Domain {
    /// Accepts what [`DOMAIN_PATTERN`] matches: `acme.com`, ` ACME.com. `,
    /// `www.acme.com`, `https://www.acme.com/path?q`, `acme.com:443` and Unicode names
    /// (`bücher.de` → `xn--bcher-kva.de`).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.chars().nth(DOMAIN_MAX).is_some() {
            return Err(FieldError::new("domain", format!("must be at most {DOMAIN_MAX} characters")));
        }
        match domain_host(raw) {
            Some(host) => Ok(Self(normalise_host(host))),
            None => Err(Self::explain(raw, "domain")),
        }
    }

    /// Why `raw` is not a domain name, as helpfully as a quick look can tell.
    fn explain(raw: &str, field: &'static str) -> FieldError {
        let trimmed = raw.trim_matches(SPACE);
        let message = if trimmed.is_empty() {
            "must not be empty"
        } else if trimmed.contains("://") && !["http://", "https://"].iter().any(|s| trimmed.to_ascii_lowercase().starts_with(s)) {
            "URLs must use http or https"
        } else if trimmed.contains('@') && field == "domain" {
            "must be a domain name such as acme.com (an address goes in `email`)"
        } else if trimmed
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            "must be a domain name, not an IP address"
        } else {
            "is not a valid domain name (labels of letters, digits and inner hyphens, up to 63 characters each, like acme.com)"
        };
        FieldError::new(field, message)
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
    /// Accepts what [`EMAIL_PATTERN`] matches.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.chars().nth(EMAIL_MAX).is_some() {
            return Err(FieldError::new("email", format!("must be at most {EMAIL_MAX} characters")));
        }
        let Some((local, host)) = email_parts(raw) else {
            let trimmed = raw.trim_matches(SPACE);
            let message = match trimmed.rsplit_once('@') {
                _ if trimmed.is_empty() => "must not be empty".to_string(),
                None => "must look like name@example.com".to_string(),
                Some((local, domain)) if !local.is_empty() && email_parts(&format!("{local}@acme.com")).is_some() => {
                    format!("has an invalid domain after the @: {}", Domain::explain(domain, "email").message)
                }
                Some(_) => "has an invalid part before the @ (letters, digits, !#$%&'*+/=?^_`{|}~- and inner dots)".to_string(),
            };
            return Err(FieldError::new("email", message));
        };
        Ok(Self { local: local.to_ascii_lowercase(), domain: Domain(normalise_host(host)) })
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
    pub fn new(email: Option<EmailAddress>, domain: Option<Domain>) -> Result<Self, FieldError> {
        match (email, domain) {
            (Some(email), hint) => {
                let company_hint = hint.filter(|d| d != email.domain());
                Ok(Self::Email { email, company_hint })
            }
            (None, Some(domain)) => Ok(Self::Domain(domain)),
            (None, None) => Err(FieldError::new("email", "either `email` or `domain` is required")),
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

/// What a caller accepts of an answer: a confidence floor, and how old cached data may
/// be. The default accepts any answer the cache or the vendors have.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Quality {
    /// An answer below this confidence (0–1) is a free no-match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
    /// Cached data this many days old or older is fetched again (a normal paid lookup);
    /// 0: never served from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
    /// Skip the cache: always ask the vendors.
    #[serde(default)]
    pub refresh: bool,
}

/// Days accepted in `max_age_days` (100 years).
pub const MAX_AGE_DAYS: u32 = 36_500;

impl Quality {
    /// Checks the ranges; every problem is reported.
    pub fn new(min_confidence: Option<f64>, max_age_days: Option<i64>, refresh: Option<bool>) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        if min_confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
            problems.push(FieldError::new("min_confidence", "must be between 0 and 1"));
        }
        let max_age_days = match max_age_days {
            None => None,
            Some(d) => match u32::try_from(d) {
                Ok(d) if d <= MAX_AGE_DAYS => Some(d),
                _ => {
                    problems.push(FieldError::new("max_age_days", format!("must be between 0 and {MAX_AGE_DAYS}")));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self { min_confidence, max_age_days, refresh: refresh.unwrap_or(false) })
    }

    /// The age (ms) from which a cache entry is not served: `Some(0)` serves none.
    pub fn max_age_ms(&self) -> Option<i64> {
        if self.refresh {
            return Some(0);
        }
        self.max_age_days.map(|d| i64::from(d) * 86_400_000)
    }

    /// Whether an answer of this confidence is good enough.
    pub fn accepts(&self, confidence: f64) -> bool {
        self.min_confidence.is_none_or(|min| confidence >= min)
    }

    /// This quality's part of a request's fingerprint: nothing for the default, so that
    /// requests without quality controls keep the fingerprints they always had.
    fn fingerprint_part(&self) -> Option<String> {
        (*self != Self::default()).then(|| format!("\nquality:{:?}:{:?}:{}", self.min_confidence, self.max_age_days, self.refresh))
    }
}

/// A whole, validated enrich request.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichQuery {
    pub input: LookupInput,
    /// Never empty; every section when the caller did not say.
    pub include: BTreeSet<Section>,
    pub quality: Quality,
}

impl EnrichQuery {
    /// Validates the raw request fields; all problems are reported, not just the first.
    pub fn parse(email: Option<&str>, domain: Option<&str>, include: Option<&[Section]>) -> Result<Self, Vec<FieldError>> {
        let mut problems = Vec::new();
        let email = email.and_then(|e| EmailAddress::parse(e).map_err(|e| problems.push(e)).ok());
        let domain = domain.and_then(|d| Domain::parse(d).map_err(|e| problems.push(e)).ok());
        let include: BTreeSet<Section> = match include {
            None => Section::ALL.into_iter().collect(),
            Some(list) => list.iter().copied().collect(),
        };
        if include.is_empty() {
            problems.push(FieldError::new("include", "must name at least one section"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let input = LookupInput::new(email, domain).map_err(|e| vec![e])?;
        Ok(Self { input, include, quality: Quality::default() })
    }

    /// The same request with `quality`'s controls.
    pub fn with_quality(self, quality: Quality) -> Self {
        Self { quality, ..self }
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
        if let Some(part) = self.quality.fingerprint_part() {
            hash.update(part.as_bytes());
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

    const BAD_DOMAINS: &[&str] = &[
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
        "acme.com:123456",
        "acme.com/a b",
        "https://acme.com:443:1/",
        "000000000000000000000000000000",
    ];

    const BAD_EMAILS: &[&str] = &[
        "",
        "jane",
        "@acme.com",
        "jane@",
        "jane@acme",
        ".jane@acme.com",
        "jane.@acme.com",
        "ja..ne@acme.com",
        "ja ne@acme.com",
        "jane@acme.com/x",
        "jane@@acme.com",
        "jane@127.0.0.1",
        "\"jane\"@acme.com",
        "jane@[127.0.0.1]",
        "jané@acme.com",
    ];

    /// Full-width forms that UTS 46 maps to ASCII punctuation or digits never reach a
    /// name (nor, through it, a cache key shared by every workspace).
    #[test]
    fn full_width_punctuation_never_becomes_ascii_punctuation() {
        let hint_lookalike = EmailAddress::parse("jane@gmail.com\u{ff5c}company\u{ff1a}acme.com").unwrap();
        assert!(is_normal_name(hint_lookalike.domain().as_str()), "{hint_lookalike}");
        let real = EnrichQuery::parse(Some("jane@gmail.com"), Some("acme.com"), None).unwrap();
        let fake = EnrichQuery::parse(Some("jane@gmail.com\u{ff5c}company\u{ff1a}acme.com"), None, None).unwrap();
        assert_ne!(real.input.cache_key(), fake.input.cache_key());
        for raw in ["\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}", "a\u{ff0f}b.com", "ｇmail.com"] {
            let d = Domain::parse(raw).unwrap();
            assert!(is_normal_name(d.as_str()), "{raw:?} → {d}");
        }
        // A full-width name that maps to a normal one is that name.
        assert_eq!(Domain::parse("ａｃｍｅ.com").unwrap().as_str(), "acme.com");
    }

    #[test]
    fn bad_domains_are_refused() {
        for bad in BAD_DOMAINS {
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
        for bad in BAD_EMAILS {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// Generates `n` strings from a published pattern (anchors stripped: the generator
    /// makes whole strings), each within `max_chars` like the schema's `maxLength`.
    fn generated(pattern: &str, n: usize, max_chars: usize) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let body = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("anchored");
        let generator = rand_regex::Regex::compile(body, 12).expect("the pattern compiles for the generator");
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261202);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let s: String = rng.sample(&generator);
            if s.chars().count() <= max_chars {
                out.push(s);
            }
        }
        out
    }

    /// Every string the published patterns allow is accepted: the parser never refuses
    /// what the schema lets a generated client send.
    #[test]
    fn the_parser_accepts_everything_the_patterns_generate() {
        let domains = generated(DOMAIN_PATTERN, 5_000, 2048);
        // The generator covers the forms that take different paths through the parser.
        assert!(domains.iter().filter(|d| !d.is_ascii()).count() > 100, "internationalised names");
        assert!(domains.iter().filter(|d| d.contains("://")).count() > 100, "URLs");
        assert!(domains.iter().filter(|d| d.chars().any(|c| c.is_ascii_uppercase())).count() > 100, "upper case");
        for raw in domains {
            let parsed = Domain::parse(&raw).unwrap_or_else(|e| panic!("{raw:?} matches DOMAIN_PATTERN but was refused: {e}"));
            assert!(is_normal_name(parsed.as_str()), "{raw:?} → {parsed}");
        }
        for raw in generated(EMAIL_PATTERN, 5_000, 254) {
            let parsed = EmailAddress::parse(&raw).unwrap_or_else(|e| panic!("{raw:?} matches EMAIL_PATTERN but was refused: {e}"));
            assert!(is_normal_name(parsed.domain().as_str()) && parsed.local_part().is_ascii(), "{raw:?} → {parsed}");
        }
    }

    /// What the parser refuses, the patterns refuse too (so the schema never promises
    /// what the server turns down), and the other way round.
    #[test]
    fn refused_inputs_do_not_match_the_patterns() {
        let domain = Regex::new(DOMAIN_PATTERN).unwrap();
        for bad in BAD_DOMAINS {
            assert!(!domain.is_match(bad), "{bad:?} matches DOMAIN_PATTERN");
        }
        let email = Regex::new(EMAIL_PATTERN).unwrap();
        for bad in BAD_EMAILS {
            assert!(!email.is_match(bad), "{bad:?} matches EMAIL_PATTERN");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(!domain.is_match(&long_label) && Domain::parse(&long_label).is_err());
    }

    /// The parser's check of a shape (the pattern without its labels' bound, and the
    /// labels' lengths) says what the published pattern says, both ways: on what the
    /// patterns generate, on what they refuse, and on labels around the longest allowed
    /// in each place a label can be.
    #[test]
    fn the_shape_checks_agree_with_the_published_patterns() {
        let (domain, email) = (Regex::new(DOMAIN_PATTERN).unwrap(), Regex::new(EMAIL_PATTERN).unwrap());
        let mut domains: Vec<String> = generated(DOMAIN_PATTERN, 2_000, 2048);
        domains.extend(BAD_DOMAINS.iter().map(|s| s.to_string()));
        let mut emails: Vec<String> = generated(EMAIL_PATTERN, 2_000, 254);
        emails.extend(BAD_EMAILS.iter().map(|s| s.to_string()));
        for n in [1, 62, 63, 64, 100] {
            for label in ["a".repeat(n), "ü".repeat(n), format!("a{}a", "-".repeat(n.saturating_sub(2)))] {
                for host in [format!("{label}.com"), format!("acme.{label}"), format!("x.{label}.io."), format!("{label}.{label}.de")] {
                    for url in [host.clone(), format!(" HTTPS://{host}:443/a.{label}?q#f "), format!("http://{host}/")] {
                        domains.push(url);
                    }
                    emails.push(format!("jane.doe@{host}"));
                    emails.push(format!(" {label}@{host}\t"));
                }
            }
        }
        for raw in &domains {
            assert_eq!(domain_host(raw).is_some(), domain.is_match(raw), "domain {raw:?}");
        }
        for raw in &emails {
            assert_eq!(email_parts(raw).is_some(), email.is_match(raw), "email {raw:?}");
        }
        assert!(domains.iter().filter(|d| !domain.is_match(d)).count() > 50 && emails.iter().filter(|e| !email.is_match(e)).count() > 50);
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
