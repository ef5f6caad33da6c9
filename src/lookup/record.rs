//! The record leadlex answers with, independent of any vendor's wire format and of HTTP.
//! A section with no data is `None`; a field with no data is `None` (and left out of JSON).

use serde::{Deserialize, Serialize};

use super::input::Section;
use super::vendors::VendorName;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// One of `executive`, `director`, `manager`, `senior`, `entry` when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seniority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkedin_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Company {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub founded_year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkedin_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hq_location: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Social {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facebook: Option<String>,
}

/// The merged answer about one input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnrichmentRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<Person>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<Company>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social: Option<Social>,
}

impl Person {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
impl Company {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
impl Social {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl EnrichmentRecord {
    /// Builds a record, dropping sections that carry no field at all.
    pub fn new(person: Option<Person>, company: Option<Company>, social: Option<Social>) -> Self {
        Self {
            person: person.filter(|p| !p.is_empty()),
            company: company.filter(|c| !c.is_empty()),
            social: social.filter(|s| !s.is_empty()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.person.is_none() && self.company.is_none() && self.social.is_none()
    }

    /// The sections asked for; `None` when none of them has data (the caller then gets
    /// `404 no_match` and pays nothing).
    pub fn project(&self, include: &std::collections::BTreeSet<Section>) -> Option<Self> {
        let projected = Self {
            person: self.person.clone().filter(|_| include.contains(&Section::Person)),
            company: self.company.clone().filter(|_| include.contains(&Section::Company)),
            social: self.social.clone().filter(|_| include.contains(&Section::Social)),
        };
        (!projected.is_empty()).then_some(projected)
    }
}

/// How two vendors' answers compared, field by field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// Fields both gave, with the same value (case and spacing aside).
    pub agree: u32,
    /// Fields both gave, with different values.
    pub disagree: u32,
    /// Fields only the second gave, now filled in.
    pub filled: u32,
}

trait Comparable {
    fn same(&self, other: &Self) -> bool;
}
impl Comparable for String {
    fn same(&self, other: &Self) -> bool {
        self.trim().eq_ignore_ascii_case(other.trim())
    }
}
impl Comparable for i32 {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

fn merge_field<T: Comparable + Clone>(mine: &mut Option<T>, theirs: &Option<T>, tally: &mut Agreement) {
    match (mine.as_ref(), theirs) {
        (Some(a), Some(b)) if a.same(b) => tally.agree += 1,
        (Some(_), Some(_)) => tally.disagree += 1,
        (None, Some(b)) => {
            *mine = Some(b.clone());
            tally.filled += 1;
        }
        _ => {}
    }
}

macro_rules! merge_section {
    ($mine:expr, $theirs:expr, $tally:expr, $($field:ident),+) => {
        match (&mut $mine, &$theirs) {
            (Some(m), Some(t)) => { $( merge_field(&mut m.$field, &t.$field, $tally); )+ }
            (m @ None, Some(t)) => {
                *m = Some(t.clone());
                $( if t.$field.is_some() { $tally.filled += 1; } )+
            }
            _ => {}
        }
    };
}

impl EnrichmentRecord {
    /// Whether the person (for an email) or the company is missing, or lacks a field:
    /// what asking the next vendor could fill.
    pub fn has_gaps(&self, has_email: bool) -> bool {
        let person_gaps = self.person.as_ref().is_none_or(|p| {
            [&p.full_name, &p.first_name, &p.last_name, &p.job_title, &p.seniority, &p.location, &p.linkedin_url]
                .iter()
                .any(|f| f.is_none())
        });
        let company_gaps = self.company.as_ref().is_none_or(|c| {
            [&c.name, &c.domain, &c.industry, &c.size, &c.description, &c.linkedin_url, &c.hq_location].iter().any(|f| f.is_none())
                || c.founded_year.is_none()
        });
        (has_email && person_gaps) || company_gaps
    }

    /// Fills this record's empty fields from `other` (this record wins where both have a
    /// value) and counts agreements and disagreements.
    pub fn fill_from(&mut self, other: &EnrichmentRecord) -> Agreement {
        let mut tally = Agreement::default();
        merge_section!(
            self.person,
            other.person,
            &mut tally,
            full_name,
            first_name,
            last_name,
            job_title,
            seniority,
            location,
            linkedin_url
        );
        merge_section!(
            self.company,
            other.company,
            &mut tally,
            name,
            domain,
            industry,
            size,
            founded_year,
            description,
            linkedin_url,
            hq_location
        );
        merge_section!(self.social, other.social, &mut tally, twitter, github, facebook);
        tally
    }
}

/// The confidence of a merged answer. With `a` agreeing and `d` disagreeing fields out of
/// `n = a + d` both vendors gave: `c1 + (1 − c1)·c2·a/n − c1·d/(2n)`, clamped to 0..1. So
/// full agreement moves `c1` towards 1 in proportion to the second vendor's confidence,
/// full disagreement halves it, and no overlap leaves it as it was.
pub fn merged_confidence(c1: f64, c2: f64, agreement: Agreement) -> f64 {
    let n = f64::from(agreement.agree + agreement.disagree);
    if n == 0.0 {
        return c1;
    }
    let a = f64::from(agreement.agree) / n;
    let d = f64::from(agreement.disagree) / n;
    (c1 + (1.0 - c1) * c2 * a - c1 * d / 2.0).clamp(0.0, 1.0)
}

/// A record together with who produced it and how sure they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matched {
    pub record: EnrichmentRecord,
    pub vendor: VendorName,
    /// In `0.0..=1.0`; see `docs/` for how each vendor's answer maps onto it.
    pub confidence: f64,
}

/// Where an answer came from, as the API reports it (`vendor_a`, `vendor_b`, `cached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Source {
    Vendor(VendorName),
    Cached,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Vendor(vendor) => vendor.as_str(),
            Source::Cached => "cached",
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl TryFrom<String> for Source {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match VendorName::parse(&s) {
            Some(vendor) => Ok(Source::Vendor(vendor)),
            None if s == "cached" => Ok(Source::Cached),
            None => Err(format!("unknown source {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(name: &str, title: Option<&str>) -> Person {
        Person { full_name: Some(name.into()), job_title: title.map(Into::into), ..Default::default() }
    }

    #[test]
    fn filling_takes_missing_fields_and_counts_agreement() {
        let mut a = EnrichmentRecord::new(Some(person("Jane Doe", None)), None, None);
        let b = EnrichmentRecord::new(
            Some(person("jane doe ", Some("CEO"))),
            Some(Company { name: Some("Acme".into()), founded_year: Some(1998), ..Default::default() }),
            None,
        );
        let t = a.fill_from(&b);
        assert_eq!((t.agree, t.disagree, t.filled), (1, 0, 3));
        assert_eq!(a.person.as_ref().unwrap().job_title.as_deref(), Some("CEO"));
        assert_eq!(a.company.as_ref().unwrap().founded_year, Some(1998));
        assert_eq!(a.person.unwrap().full_name.as_deref(), Some("Jane Doe"), "the first vendor wins");
    }

    #[test]
    fn confidence_rises_with_agreement_and_falls_with_disagreement() {
        let agree = Agreement { agree: 4, disagree: 0, filled: 0 };
        let disagree = Agreement { agree: 0, disagree: 4, filled: 0 };
        let mixed = Agreement { agree: 2, disagree: 2, filled: 0 };
        assert!((merged_confidence(0.8, 0.9, agree) - 0.98).abs() < 1e-9);
        assert!((merged_confidence(0.8, 0.9, disagree) - 0.4).abs() < 1e-9);
        assert!(merged_confidence(0.8, 0.9, mixed) < 0.8 + 1e-9);
        assert_eq!(merged_confidence(0.8, 0.9, Agreement::default()), 0.8);
        assert!(merged_confidence(1.0, 1.0, agree) <= 1.0);
    }

    #[test]
    fn gaps_are_missing_sections_or_fields() {
        let full_company = Company {
            name: Some("a".into()),
            domain: Some("a.com".into()),
            industry: Some("x".into()),
            size: Some("1-10".into()),
            founded_year: Some(2000),
            description: Some("d".into()),
            linkedin_url: Some("l".into()),
            hq_location: Some("h".into()),
        };
        let r = EnrichmentRecord::new(None, Some(full_company), None);
        assert!(!r.has_gaps(false));
        assert!(r.has_gaps(true), "an email lookup without a person has gaps");
    }
}
