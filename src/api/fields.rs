//! Field types whose published schema states exactly what is accepted or sent.
//!
//! Requests: strings with the `pattern` the parser enforces (`lookup::input`'s
//! [`EMAIL_PATTERN`] and [`DOMAIN_PATTERN`], the very same text) and their length bounds
//! (set by the `validator` attributes where the fields are declared); the pattern is
//! checked once, by the parser, with the regex it compiles once per process; and
//! [`Text`], a string that is only ever a JSON string; and [`PermissionName`], the
//! key-permission catalogue, whose error names the valid values.
//! Responses: [`Nullable`], a field always present that may be `null`.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use poem_openapi::types::MaybeUndefined;

use super::error::ApiError;
use crate::auth::Permission;
use crate::lookup::input::{DOMAIN_PATTERN, EMAIL_PATTERN};
use crate::validation::FieldError;
use crate::webhooks::URL_PATTERN;

macro_rules! pattern_string {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $type_name:literal) => {
        pattern_string!($(#[$doc])* $name, $pattern, $type_name, |_: &str| true);
    };
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $type_name:literal, $accepts:expr) => {
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
                let pattern: Option<&str> = $pattern;
                MetaSchemaRef::Inline(Box::new(MetaSchema { pattern: pattern.map(str::to_string), ..MetaSchema::new("string") }))
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
                let accepts: fn(&str) -> bool = $accepts;
                match value.unwrap_or_default() {
                    Value::String(s) if accepts(&s) => Ok(Self(s)),
                    Value::String(_) => Err(ParseError::custom("does not match the schema's `pattern`")),
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
    Some(EMAIL_PATTERN),
    "string(email-input)"
);

pattern_string!(
    /// A domain name or http(s) URL as sent, before normalisation.
    DomainInput,
    Some(DOMAIN_PATTERN),
    "string(domain-input)"
);

pattern_string!(
    /// Free text: a JSON string and nothing else (poem-openapi's `String` also takes a
    /// number or a boolean and makes it a string, which the schema does not allow), and
    /// without NUL characters (which PostgreSQL cannot store).
    Text,
    Some(NO_NUL),
    "string(text)",
    |s: &str| !s.contains('\0')
);

pattern_string!(
    /// A webhook URL as sent: `https://` (see [`URL_PATTERN`]), checked by
    /// `webhooks::parse_url` (which a development server lets take `http://` to loopback).
    WebhookUrl,
    Some(URL_PATTERN),
    "string(webhook-url)"
);

/// The `pattern` of text without NUL characters (the same text in ECMA-262, Python and
/// Rust regex syntax).
pub const NO_NUL: &str = "^[^\\x00]*$";

/// A response field that is always present and may be `null` (`nullable: true`), e.g.
/// `revoked_at` of a key that is not revoked. `Option<T>` would declare a field that is
/// either absent or a `T`, and clients would be told `null` cannot happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nullable<T>(pub Option<T>);

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(schema) => MetaSchemaRef::Inline(Box::new(MetaSchema { nullable: true, ..*schema })),
            reference => MetaSchemaRef::Inline(Box::new(MetaSchema { nullable: true, all_of: vec![reference], ..MetaSchema::ANY })),
        }
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::Null => Ok(Self(None)),
            value => T::parse_from_json(Some(value)).map(|v| Self(Some(v))).map_err(ParseError::propagate),
        }
    }
}

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.as_ref().and_then(ToJSON::to_json).unwrap_or(Value::Null))
    }
}

impl<T> From<Option<T>> for Nullable<T> {
    fn from(value: Option<T>) -> Self {
        Self(value)
    }
}

/// A permission of the catalogue (`auth::Permission`), published as a string enum. An
/// unknown one is refused with a message that names the valid ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionName(pub Permission);

impl Type for PermissionName {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Permission")
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| MetaSchema {
            description: Some(
                "A key permission: `write:enrich` (look up emails and domains, spending credits), \
                 `read:usage` (read usage and the credit ledger), `admin:api_keys` (create, list and revoke keys), \
                 `admin:privacy` (manage the do-not-enrich list), `admin:webhooks` (manage webhooks, see their deliveries).",
            ),
            enum_items: Permission::ALL.iter().map(|p| Value::String(p.as_str().into())).collect(),
            ..MetaSchema::new("string")
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for PermissionName {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Permission::parse(&s).map(Self).ok_or_else(|| {
                let valid = Permission::ALL.map(|p| p.as_str()).join(", ");
                ParseError::custom(format!("field `permissions`: unknown permission `{s}`; the valid ones are {valid}"))
            }),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for PermissionName {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.as_str().into()))
    }
}

/// An absent field is fine; an explicit `null` is not (no request schema allows it).
pub fn not_null<T>(field: &'static str, value: MaybeUndefined<T>) -> Result<Option<T>, ApiError> {
    match value {
        MaybeUndefined::Undefined => Ok(None),
        MaybeUndefined::Value(v) => Ok(Some(v)),
        MaybeUndefined::Null => {
            Err(ApiError::validation(vec![FieldError { field, message: "must not be null; leave the field out instead".into() }]))
        }
    }
}
