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

/// A record together with who produced it and how sure they were.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    pub record: EnrichmentRecord,
    pub vendor: VendorName,
    /// In `0.0..=1.0`; see `docs/` for how each vendor's answer maps onto it.
    pub confidence: f64,
}

/// Where an answer came from, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Vendor(VendorName),
    Cached,
}
