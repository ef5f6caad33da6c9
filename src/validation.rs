//! Field errors: why a value a caller sent was refused, naming the request field at
//! fault. A leaf that every capability's parser reports with (the enrichment inputs,
//! keys, webhooks, privacy), so that none imports another's parser for its error type;
//! `api::error` turns a list of them into a `400 validation_error` with `details`.

/// Why a value was refused; `field` names the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}
