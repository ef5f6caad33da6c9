//! [`JsonBody`]: a JSON request body that the spec declares exactly as poem-openapi's
//! `Json<T>` does (same media type, same schema), parsed straight into the request type
//! when the body is well formed and within its validators.
//!
//! `Json<T>` parses every body into a `serde_json::Value` tree and then into `T`: an
//! allocation per key and value, a tenth of a replay's CPU. Here a body that a
//! [`FastParse`] implementation accepts skips the tree; any body it does not accept
//! (malformed, wrong types, `null`s, out-of-bounds lengths, anything unusual) goes
//! through `Json<T>` itself, so every error a client can see is poem-openapi's, word for
//! word. Invariant: `FastParse` only ever accepts what `Json<T>` would accept, with the
//! same value.

use poem::{web::RequestBody, Body, Request, Result};
use poem_openapi::{
    payload::{Json, ParsePayload, Payload},
    registry::{MetaRequest, MetaSchemaRef, Registry},
    types::{ParseFromJSON, Type},
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
};

/// A request type with a shortcut past the JSON value tree.
pub trait FastParse: Sized {
    /// The value, when `body` is a JSON object that `Json<Self>` certainly accepts as
    /// this same value; `None` to let `Json<Self>` decide (and explain).
    fn fast_parse(body: &[u8]) -> Option<Self>;
}

/// A JSON request body (see the module docs).
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        // What every client sends, without parsing a MIME type per request.
        content_type == "application/json" || <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Json<T> as Payload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }
}

impl<T: ParseFromJSON + FastParse> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = <Json<T> as ParsePayload>::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        let bytes = body.take()?.into_bytes().await?;
        if let Some(value) = T::fast_parse(&bytes) {
            return Ok(Self(value));
        }
        let mut body = RequestBody::new(Body::from_bytes(bytes));
        let Json(value) = <Json<T> as ParsePayload>::from_request(request, &mut body).await?;
        Ok(Self(value))
    }
}

/// As poem-openapi declares and checks any payload used as a request body.
impl<'a, T: ParseFromJSON + FastParse> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        <Json<T> as ApiExtractor>::request_meta()
    }

    async fn from_request(request: &'a Request, body: &mut RequestBody, _param_opts: ExtractParamOptions<()>) -> Result<Self> {
        match request.content_type() {
            Some(content_type) if <Self as Payload>::check_content_type(content_type) => {
                <Self as ParsePayload>::from_request(request, body).await
            }
            // The same errors as `Json<T>`'s (415 and its message).
            _ => {
                <Json<T> as ApiExtractor>::from_request(request, body, ExtractParamOptions::default()).await.map(|Json(value)| Self(value))
            }
        }
    }
}

/// Deserialises a field that is present (possibly `null`): `None` when absent,
/// `Some(None)` for `null`.
pub fn present<'de, D, V>(d: D) -> std::result::Result<Option<V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: serde::Deserialize<'de>,
{
    V::deserialize(d).map(Some)
}

/// The first byte of `body` that is not JSON whitespace.
pub fn first_token(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}
