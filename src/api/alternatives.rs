//! Request bodies whose fields come as alternatives ("`email`, `domain` or both";
//! "exactly one of `email` and `domain`"), published as ONE object.
//!
//! The body is one flat `Object` (every field optional, so that every problem is reported
//! field by field) and its published schema is that object's, with the rule added as
//! `allOf: [{anyOf|oneOf: [{required: [a]}, {required: [b]}]}]`. This is the shape every
//! generator we test turns into a plain model with optional fields (keyword arguments
//! work): OpenAPI Generator's `python` makes a wrapper of any `anyOf`/`oneOf` that sits on
//! the object itself (even one of bare `required` lists, whose properties it then drops),
//! but reads one nested in `allOf` as a constraint only. The rule stays in the schema, so
//! Schemathesis never builds a schema-valid body the server refuses. `docs/design.md`
//! ("Request schemas") has the comparison.
//!
//! Invariant: the published properties are the flat object's, byte for byte; only
//! `title`, `required`-alternatives and `allOf` are added.

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;

/// How the alternatives combine.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// At least one of the fields (`anyOf`).
    AtLeastOne,
    /// Exactly one of the fields (`oneOf`).
    ExactlyOne,
}

/// Registers `name` as `Fields`' schema plus `rule` over `fields`; the flat type itself is
/// not published (its name is internal).
pub fn register<Fields: Type>(registry: &mut Registry, name: &str, rule: Rule, fields: &[&'static str]) {
    if registry.schemas.contains_key(name) {
        return;
    }
    let mut scratch = Registry::new();
    Fields::register(&mut scratch);
    let flat = scratch.schemas.remove(Fields::name().as_ref()).expect("an object registers its schema");
    for (other, schema) in scratch.schemas {
        registry.schemas.entry(other).or_insert(schema);
    }
    let alternatives: Vec<MetaSchemaRef> =
        fields.iter().map(|f| MetaSchemaRef::Inline(Box::new(MetaSchema { required: vec![*f], ..MetaSchema::ANY }))).collect();
    let combined = match rule {
        Rule::AtLeastOne => MetaSchema { any_of: alternatives, ..MetaSchema::ANY },
        Rule::ExactlyOne => MetaSchema { one_of: alternatives, ..MetaSchema::ANY },
    };
    let schema = MetaSchema { title: Some(name.to_string()), all_of: vec![MetaSchemaRef::Inline(Box::new(combined))], ..flat };
    registry.schemas.insert(name.to_string(), schema);
}

/// `impl Type + ParseFromJSON` for `$outer($fields)`, published as [`register`] says.
macro_rules! one_object {
    ($outer:ident($fields:ty), $name:literal, $rule:expr, [$($field:literal),+ $(,)?]) => {
        impl poem_openapi::types::Type for $outer {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                poem_openapi::registry::MetaSchemaRef::Reference($name.into())
            }

            fn register(registry: &mut poem_openapi::registry::Registry) {
                $crate::api::alternatives::register::<$fields>(registry, $name, $rule, &[$($field),+]);
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl poem_openapi::types::ParseFromJSON for $outer {
            /// The flat fields; the handler's parser refuses a body that breaks the rule,
            /// with the field-level `details` it gives every input problem.
            fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
                <$fields as poem_openapi::types::ParseFromJSON>::parse_from_json(value)
                    .map(Self)
                    .map_err(poem_openapi::types::ParseError::propagate)
            }
        }
    };
}
pub(crate) use one_object;
