//! The names of the vendors leadlex knows: a leaf (imports nothing of the crate), shared by
//! the configuration, the vendor adapters and the cache.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The vendors leadlex knows, by the name the API reports in `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VendorName {
    /// People Data Labs v5 wire format.
    VendorA,
    /// Clearbit (legacy) wire format.
    VendorB,
}

impl VendorName {
    pub fn as_str(self) -> &'static str {
        match self {
            VendorName::VendorA => "vendor_a",
            VendorName::VendorB => "vendor_b",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "vendor_a" => Some(Self::VendorA),
            "vendor_b" => Some(Self::VendorB),
            _ => None,
        }
    }
}
