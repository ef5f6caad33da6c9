//! Text payloads other than JSON: a `text/csv` request body ([`CsvBody`]), and streamed
//! `text/csv` and `application/x-ndjson` response bodies ([`CsvStream`],
//! [`NdjsonStream`]), declared in the spec as strings of their media type. A streamed
//! body is produced a page at a time, never held whole in memory.

use poem::{FromRequest, IntoResponse, Request, RequestBody, Response};
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaSchema, MetaSchemaRef},
};

fn is(content_type: &str, essence: &str) -> bool {
    content_type.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(essence))
}

fn text_schema(description: &'static str) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema { description: Some(description), ..MetaSchema::new("string") }))
}

/// A CSV document (UTF-8), as sent.
#[derive(Debug, Clone)]
pub struct CsvBody(pub String);

impl Payload for CsvBody {
    const CONTENT_TYPE: &'static str = "text/csv";

    fn check_content_type(content_type: &str) -> bool {
        is(content_type, "text/csv")
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "CSV (UTF-8): a header row naming `email`, `domain` and optionally `reference` (any case; other columns are ignored), then one row per item (at most 10,000).",
            ),
            pattern: Some(crate::jobs::CSV_PATTERN.to_string()),
            ..MetaSchema::new("string")
        }))
    }
}

impl ParsePayload for CsvBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self(String::from_request(request, body).await?))
    }
}

macro_rules! streamed {
    ($name:ident, $content_type:literal, $description:literal) => {
        #[doc = concat!("A streamed `", $content_type, "` body.")]
        pub struct $name(pub poem::Body);

        impl Payload for $name {
            const CONTENT_TYPE: &'static str = $content_type;

            fn check_content_type(content_type: &str) -> bool {
                is(content_type, $content_type)
            }

            fn schema_ref() -> MetaSchemaRef {
                text_schema($description)
            }
        }

        impl IntoResponse for $name {
            fn into_response(self) -> Response {
                Response::builder().content_type($content_type).body(self.0)
            }
        }
    };
}

streamed!(
    CsvStream,
    "text/csv",
    "Every result as CSV, one row per item in item order, with a header row: the item's input, its status, the answer's fields and, for a failed item, its error."
);
streamed!(NdjsonStream, "application/x-ndjson", "Every result as JSON lines, one `BulkItemResult` per line in item order.");
