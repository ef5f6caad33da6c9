//! The shapes every operation's responses share, declared once: [`failures!`] declares an
//! operation's error responses (exactly the statuses it can answer, each with the error
//! envelope, `Retry-After` where the status has one, and the request-scope headers the
//! middleware sets on every answer), with the mapping from [`ApiError`] by the status
//! that [`ApiError::status`] decides (the one status table).
//!
//! Invariant: an operation declares a status only if it can answer it (the endpoint
//! coverage test fails on a status the suite never saw).
//!
//! The failures every operation shares (401, 403, 429, 500, 503) are worded once, in
//! `api::spec::shared_failure_text`: a variant of those statuses without a doc comment
//! gets that text in the published spec (403 names the operation's permission); a doc
//! comment is written only where an operation adds something (what a 503 left uncharged,
//! a bulk call's 429 `details`).
//!
//! [`ApiError`]: super::error::ApiError
//! [`ApiError::status`]: super::error::ApiError::status

/// Declares an operation's failure responses:
///
/// ```ignore
/// failures! {
///     /// Every way listing keys can fail.
///     pub enum ListKeysFailure {
///         /// `validation_error`: … (what this operation adds)
///         400 => BadRequest,
///         401 => Unauthorized,                // the shared wording
///         429 => TooManyRequests + u64,       // `+ u64`: with `Retry-After`
///         500 => InternalServerError,
///     }
/// }
/// ```
///
/// A status that the operation did not declare becomes its 500 (and is logged).
macro_rules! failures {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $status:literal => $variant:ident $(+ $retry:ty)?,
            )*
        }
    ) => {
        $(#[$meta])*
        // clippy reads the repeated `ty`/`description` keys of the `header(...)` entries
        // below as duplicated attributes; each entry declares a different header.
        #[allow(clippy::duplicated_attributes)]
        #[derive(poem_openapi::ApiResponse)]
        #[oai(
            header(name = "X-Request-ID", ty = "String", description = "The request's id, also in the error body."),
            header(
                name = "X-RateLimit-Limit",
                ty = "Option<u64>",
                description = "Requests allowed per UTC day; sent once the key is authenticated (not on 401)."
            ),
            header(
                name = "X-RateLimit-Remaining",
                ty = "Option<u64>",
                description = "Requests left today; sent once the key is authenticated (not on 401)."
            ),
            header(
                name = "X-RateLimit-Reset",
                ty = "Option<i64>",
                description = "Next 00:00 UTC in Unix epoch seconds; sent once the key is authenticated (not on 401)."
            )
        )]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[oai(status = $status)]
                $variant(
                    poem_openapi::payload::Json<$crate::api::error::ErrorBody>
                    $(,
                        /// Seconds to wait before retrying.
                        #[oai(header = "Retry-After")]
                        $retry
                    )?
                ),
            )*
        }

        impl From<$crate::api::error::ApiError> for $name {
            /// By the status [`ApiError::status`](crate::api::error::ApiError::status)
            /// decided (the one status table).
            fn from(err: $crate::api::error::ApiError) -> Self {
                let status = err.status().as_u16();
                let retry = err.retry_after_secs().unwrap_or(1);
                let body = poem_openapi::payload::Json(err.body());
                match status {
                    $( $status => Self::$variant(body $(, <$retry>::from(retry))?), )*
                    _ => Self::from($crate::api::error::ApiError::Internal(anyhow::anyhow!(
                        "{} answered with status {status}, which it does not declare",
                        stringify!($name)
                    ))),
                }
            }
        }
    };
}

pub(crate) use failures;

/// Declares an operation's successful responses, with the request-scope headers every
/// authenticated answer carries:
///
/// ```ignore
/// successes! {
///     pub enum RevokeKeyOk {
///         /// The key is revoked.
///         204 => Revoked,
///         200 => Listed(Json<ListApiKeysResponse>),
///     }
/// }
/// ```
macro_rules! successes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $status:literal => $variant:ident $( ( $($field:tt)* ) )?,
            )*
        }
    ) => {
        $(#[$meta])*
        // As for `failures!`: each `header(...)` entry declares a different header.
        #[allow(clippy::duplicated_attributes)]
        #[derive(poem_openapi::ApiResponse)]
        #[oai(
            header(
                name = "X-Request-ID",
                ty = "String",
                description = "The request's id: the client's `X-Request-ID` when it is 20–200 characters of `[A-Za-z0-9._-]`, otherwise generated."
            ),
            header(
                name = "X-RateLimit-Limit",
                ty = "u64",
                description = "Requests allowed per UTC day on the workspace's plan (2147483647 when unmetered)."
            ),
            header(name = "X-RateLimit-Remaining", ty = "u64", description = "Requests left today (2147483647 when unmetered)."),
            header(
                name = "X-RateLimit-Reset",
                ty = "i64",
                description = "When the daily quota resets (the next 00:00 UTC), in Unix epoch seconds."
            )
        )]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[oai(status = $status)]
                $variant $( ( $($field)* ) )?,
            )*
        }
    };
}

pub(crate) use successes;
