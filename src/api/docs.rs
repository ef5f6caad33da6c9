//! Swagger UI at `/docs`, served offline from utoipa-swagger-ui's vendored copy and
//! pointed at our own `/openapi.json` (utoipa derives nothing: poem-openapi is the one
//! source of the spec). Authorization is persisted and "Try it out" is on.

use std::sync::Arc;

use poem::{handler, http::StatusCode, web::Redirect, Endpoint, EndpointExt, IntoResponse, Request, Response};

use super::error::ApiError;

pub fn swagger_ui() -> impl Endpoint {
    let config = Arc::new(
        utoipa_swagger_ui::Config::new(["/openapi.json"])
            .persist_authorization(true)
            .try_it_out_enabled(true)
            .display_request_duration(true),
    );
    serve.data(config)
}

#[handler]
fn serve(req: &Request, config: poem::web::Data<&Arc<utoipa_swagger_ui::Config<'static>>>) -> Response {
    let path = req.original_uri().path();
    let tail = path.strip_prefix("/docs").unwrap_or(path);
    if tail.is_empty() {
        return Redirect::see_other("/docs/").into_response();
    }
    match utoipa_swagger_ui::serve(tail.trim_start_matches('/'), config.0.clone()) {
        Ok(Some(file)) => Response::builder().status(StatusCode::OK).content_type(file.content_type).body(file.bytes.into_owned()),
        Ok(None) => ApiError::NotFound.into_response(),
        Err(err) => ApiError::Internal(anyhow::anyhow!("swagger ui: {err}")).into_response(),
    }
}
