//! The request scope wrapped around every request: picks the request id (a well-formed
//! client `X-Request-ID` is echoed, otherwise one is generated), turns every error into
//! the envelope, and stamps `X-Request-ID` (always) and the rate-limit headers (once the
//! key is known) on every response. Handlers reach the scope through a task-local.
//!
//! Admission and bodies (invariants; the rules are `api::security`'s): a request to an
//! operation under `/v1/` is authenticated before a byte of its body is read (a bad key
//! is `401` at once, whatever it sends after); a body is read whole, within its
//! operation's size limit (`413`) and within `[server] body_timeout_ms` (`400`,
//! connection closed); then the request is counted against its caller's limits (`429`;
//! a bulk call's items at once); a request answered before its body (`413`, `400`)
//! counts one. So every response to a valid key, whoever answers it, carries the
//! rate-limit headers. A request counts as load for the job workers
//! (`requests_in_flight`) only once its body has arrived.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use poem::{
    http::{HeaderName, HeaderValue},
    Endpoint, IntoResponse, Request, Response,
};
use tracing::Instrument;

use super::error::ApiError;
use crate::auth::Principal;
use crate::ratelimit::RateLimitStatus;

pub const REQUEST_ID: &str = "x-request-id";
pub const RATE_LIMIT_LIMIT: &str = "x-ratelimit-limit";
pub const RATE_LIMIT_REMAINING: &str = "x-ratelimit-remaining";
pub const RATE_LIMIT_RESET: &str = "x-ratelimit-reset";

/// What one request has learnt about itself so far.
#[derive(Debug)]
pub struct RequestScope {
    pub request_id: String,
    principal: Mutex<Option<Arc<Principal>>>,
    rate_limit: Mutex<Option<RateLimitStatus>>,
}

tokio::task_local! {
    static SCOPE: Arc<RequestScope>;
}

/// The id of the request being served (`"unknown"` outside a request).
pub fn current_request_id() -> String {
    SCOPE.try_with(|s| s.request_id.clone()).unwrap_or_else(|_| "unknown".to_string())
}

/// Records the authenticated caller and the rate-limit state for the response headers;
/// from here on every log line of the request names the key's display prefix.
pub fn record_caller(principal: &Arc<Principal>, rate_limit: RateLimitStatus) {
    tracing::Span::current().record("key", principal.key_prefix.as_str());
    let _ = SCOPE.try_with(|s| {
        *s.principal.lock().expect("not poisoned") = Some(principal.clone());
        *s.rate_limit.lock().expect("not poisoned") = Some(rate_limit);
    });
}

/// The rate-limit state of the current request, once its key is authenticated.
pub fn current_rate_limit() -> Option<RateLimitStatus> {
    SCOPE.try_with(|s| *s.rate_limit.lock().expect("not poisoned")).ok().flatten()
}

/// The units a request with `body` takes: a bulk call's items (at least 1; a call with
/// more than the most items a bulk call takes is refused as malformed later), else 1.
fn units_of(method: &poem::http::Method, path: &str, body: &[u8]) -> u64 {
    if method != poem::http::Method::POST || path != "/v1/email/enrich/bulk" {
        return 1;
    }
    #[derive(serde::Deserialize)]
    struct Items {
        items: Option<Vec<serde::de::IgnoredAny>>,
    }
    let items = serde_json::from_slice::<Items>(body).ok().and_then(|b| b.items).map_or(0, |i| i.len());
    items.clamp(1, crate::bulk::MAX_ITEMS) as u64
}

/// The authenticated caller of the current request, if any.
pub fn current_principal() -> Option<Arc<Principal>> {
    SCOPE.try_with(|s| s.principal.lock().expect("not poisoned").clone()).ok().flatten()
}

/// `[A-Za-z0-9._-]{20,200}`: what we echo back as a request id.
pub fn is_acceptable_request_id(id: &str) -> bool {
    (20..=200).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn new_request_id() -> String {
    // From the thread's CSPRNG (seeded from the OS), not a getrandom syscall per request.
    let bytes: [u8; 16] = rand::random();
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut id = String::with_capacity(4 + uuid::fmt::Simple::LENGTH);
    id.push_str("req_");
    id.push_str(uuid.simple().encode_lower(&mut [0; uuid::fmt::Simple::LENGTH]));
    id
}

/// The body's declared length, when it declares one.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers().get(poem::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// Whether the request comes with a body (declared, or chunked).
fn has_body(req: &Request) -> bool {
    declared_length(req).is_some_and(|n| n > 0) || req.headers().contains_key(poem::http::header::TRANSFER_ENCODING)
}

/// Reads the whole body, refusing more than `limit` bytes (declared or actually sent)
/// and a body that has not arrived within `timeout`.
async fn limit_body(req: &mut Request, limit: usize, timeout: std::time::Duration) -> Result<bytes::Bytes, ApiError> {
    if declared_length(req).is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    // Most bodies are whole with their headers: read at once, without a timer (a timer
    // per request costs the cached path measurably); only a body still to come is
    // bounded by `timeout`.
    let mut read = Box::pin(req.take_body().into_bytes_limit(limit));
    let arrived = match futures_util::FutureExt::now_or_never(&mut read) {
        Some(read) => Ok(read),
        None => tokio::time::timeout(timeout, read).await,
    };
    match arrived {
        Ok(Ok(bytes)) => {
            req.set_body(bytes.clone());
            Ok(bytes)
        }
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => Err(ApiError::PayloadTooLarge),
        Ok(Err(err)) => Err(ApiError::Validation { message: format!("reading the request body: {err}"), details: Vec::new() }),
        Err(_) => Err(ApiError::Validation {
            message: format!("the request body did not arrive within {} ms; send it whole, at once", timeout.as_millis()),
            details: Vec::new(),
        }),
    }
}

/// How large a request body may be, by operation.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub default: usize,
    /// `POST /v1/email/enrich/bulk`.
    pub bulk: usize,
    /// `POST /v1/enrich/jobs`.
    pub job: usize,
    /// How long a body may take to arrive whole.
    pub read_timeout: std::time::Duration,
}

impl BodyLimits {
    fn of(&self, method: &poem::http::Method, path: &str) -> usize {
        match (method == poem::http::Method::POST, path) {
            (true, "/v1/email/enrich/bulk") => self.bulk,
            (true, "/v1/enrich/jobs") => self.job,
            _ => self.default,
        }
    }
}

/// One request in `http_requests_in_flight` while this lives; its time is added to
/// `request_micros` when it ends.
struct InFlight<'a> {
    metrics: &'a crate::metrics::Metrics,
    started: Instant,
}

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a crate::metrics::Metrics) -> Self {
        metrics.requests_in_flight.inc();
        Self { metrics, started: Instant::now() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.requests_in_flight.dec();
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.request_micros.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the route (the operation) answers, errors in the envelope. Its future (poem's
/// route tree and the handler's) is boxed, so that the request scope's own, which poem
/// copies through its outer layers, stays small (docs/design.md §19).
async fn answer<E: Endpoint>(next: &E, req: Request) -> Response {
    match Box::pin(next.call(req)).await {
        Ok(resp) => resp.into_response(),
        Err(err) if err.is_from_response() => err.into_response(),
        Err(err) => ApiError::from_poem(err).into_response(),
    }
}

/// The middleware itself, for `EndpointExt::around`: `limits` bound every body.
pub async fn request_scope<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    limits: BodyLimits,
    metrics: Arc<crate::metrics::Metrics>,
    state: Arc<super::AppState>,
) -> poem::Result<Response> {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let scope = Arc::new(RequestScope { request_id: request_id.clone(), principal: Mutex::new(None), rate_limit: Mutex::new(None) });
    let method = req.method().clone();
    let uri = req.uri().clone(); // shares the request's bytes
    let path = uri.path();
    let started = Instant::now();
    let span = tracing::info_span!("request", request_id = %request_id, key = tracing::field::Empty);
    let operation = super::spec::operation_id(method.as_str(), path);

    let in_flight_metrics = metrics.clone();
    let mut resp = SCOPE
        .scope(scope.clone(), async move {
            // No resource's id holds a NUL (and PostgreSQL cannot even compare one):
            // a path with one names nothing.
            if req.uri().path().contains("%00") {
                return ApiError::NotFound.into_response();
            }
            let close = |err: ApiError| err.into_response().with_header(poem::http::header::CONNECTION, "close").into_response();
            let v1 = req.uri().path().starts_with("/v1/");
            let Some(operation) = operation.filter(|_| v1) else {
                // No operation (or no key needed): nothing of the body is read here. A path
                // that exists without the method is 405, with the rate-limit headers when a
                // valid key sent it (it counts one request).
                if v1 && super::spec::allowed_methods(req.uri().path()).is_some() && super::security::bearer_token(&req).is_some() {
                    if let Ok(principal) = super::security::authenticate(&req, &state).await {
                        if let Err(limited) = super::security::admit_call(false, &state, &principal, 1).await {
                            return limited.into_response();
                        }
                    }
                }
                let _in_flight = InFlight::enter(&in_flight_metrics);
                return answer(&*next, req).await;
            };
            // Admission, before a byte of the body is read (the rules are
            // `api::security`'s): who calls (401), its limits (429; a bulk call's items
            // are counted once its body is there), what it may do (403).
            let with_body = has_body(&req);
            let refuse = |err: ApiError| if with_body { close(err) } else { err.into_response() };
            let principal = match super::security::authenticate(&req, &state).await {
                Ok(principal) => principal,
                Err(err) => return refuse(err),
            };
            let enrichment = super::security::is_enrichment_call(&req);
            let bulk = operation == "enrich_bulk";
            if !bulk {
                if let Err(err) = super::security::admit_call(enrichment, &state, &principal, 1).await {
                    return refuse(err);
                }
            }
            if let Err(err) = super::security::authorise(&principal, operation) {
                return refuse(err);
            }
            if with_body {
                let limit = limits.of(req.method(), req.uri().path());
                let read = match declared_length(&req) {
                    Some(len) if len > limit as u64 => Err(ApiError::PayloadTooLarge),
                    _ => limit_body(&mut req, limit, limits.read_timeout).await,
                };
                let units = match &read {
                    Ok(body) if bulk => units_of(req.method(), req.uri().path(), body),
                    // Answered before its body: one request to count.
                    _ => 1,
                };
                if bulk {
                    if let Err(limited) = super::security::admit_call(enrichment, &state, &principal, units).await {
                        return close(limited);
                    }
                }
                if let Err(err) = read {
                    return close(err);
                }
            }
            // Counted until the answer leaves this function, or the request is dropped.
            let _in_flight = InFlight::enter(&in_flight_metrics);
            answer(&*next, req).await
        })
        .instrument(span.clone())
        .await;

    if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = super::spec::allowed_methods(path) {
            resp.headers_mut().insert(poem::http::header::ALLOW, HeaderValue::from_static(allow));
        }
    }
    let headers = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static(REQUEST_ID), value);
    }
    let rate_limit = *scope.rate_limit.lock().expect("not poisoned");
    if let Some(rl) = rate_limit {
        headers.insert(HeaderName::from_static(RATE_LIMIT_LIMIT), rl.limit.into());
        headers.insert(HeaderName::from_static(RATE_LIMIT_REMAINING), rl.remaining.into());
        headers.insert(HeaderName::from_static(RATE_LIMIT_RESET), rl.reset_epoch_secs.into());
    }
    let status = resp.status().as_u16();
    let operation = operation.unwrap_or("other");
    metrics.requests.get_or_create(&crate::metrics::RequestLabels { operation, status }).inc();
    metrics.request_seconds.get_or_create(&crate::metrics::OperationLabels { operation }).observe(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            path = %path,
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "served"
        )
    });
    Ok(resp)
}
