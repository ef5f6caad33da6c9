//! Request field types whose published schema states what the server accepts: a string
//! with the `pattern` the parser enforces (`lookup::input`'s [`EMAIL_PATTERN`] and
//! [`DOMAIN_PATTERN`], the very same text) and its length bounds (set by the
//! `validator` attributes where the fields are declared). The pattern is checked once,
//! by the parser, with the regex it compiles once per process; poem-openapi does not
//! check it again here.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::lookup::input::{DOMAIN_PATTERN, EMAIL_PATTERN};

macro_rules! pattern_string {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $type_name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed($type_name)
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new(MetaSchema { pattern: Some($pattern.to_string()), ..MetaSchema::new("string") }))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromJSON for $name {
            /// A JSON string only (the schema says `string`); its shape is the parser's.
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value.unwrap_or_default() {
                    Value::String(s) => Ok(Self(s)),
                    other => Err(ParseError::expected_type(other)),
                }
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

pattern_string!(
    /// An email address as sent, before normalisation.
    EmailInput,
    EMAIL_PATTERN,
    "string(email-input)"
);

pattern_string!(
    /// A domain name or http(s) URL as sent, before normalisation.
    DomainInput,
    DOMAIN_PATTERN,
    "string(domain-input)"
);
