//! `POST /v1/email/enrich/bulk`: the contract of a bulk call (up to 100 items, each with
//! the outcome it would have had alone) and its thin handler over [`crate::bulk`].

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    param::Header,
    payload::Json,
    types::{Example, MaybeUndefined},
    Object, OpenApi,
};

use super::enrich::{EnrichData, IncludeSection, RenderedJson};
use super::error::{ApiError, ErrorDetail, FieldProblem};
use super::fields::{not_null, Nullable, Text};
use super::middleware::current_request_id;
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::{ApiTags, AppState};
use crate::bulk::{BulkAnswer, Defaults, ItemFailure, ItemInput, ItemOutcome, ItemResult, MAX_ITEMS};

/// One input. Its values are checked item by item, with the rules of
/// `POST /v1/email/enrich`: a malformed item (no `email` nor `domain`, a malformed one,
/// an unknown `include` section, a `reference` over 200 characters) fails alone, with
/// `status: 400` in its slot. A field this schema does not name fails the whole call
/// (`400`, naming it), as on every request body.
#[derive(Debug, Clone, Object)]
#[oai(rename = "BulkItem", deny_unknown_fields)]
pub struct BulkItemRequest {
    /// Email address to resolve (as on `POST /v1/email/enrich`).
    pub email: MaybeUndefined<Text>,
    /// Domain name to resolve, or the person's company with an `email` (as on
    /// `POST /v1/email/enrich`).
    pub domain: MaybeUndefined<Text>,
    /// Sections to return for this item (`person`, `company`, `social`); the call's
    /// `include` when left out, else all.
    pub include: MaybeUndefined<Vec<Text>>,
    /// Your own id for this item (at most 200 characters), echoed in its result.
    pub reference: MaybeUndefined<Text>,
}

/// Up to 100 inputs, answered in one call.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 100 items.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub items: Vec<BulkItemRequest>,
    /// The sections for every item that gives no `include` of its own. Defaults to all.
    #[oai(validator(min_items = 1, max_items = 3))]
    pub include: MaybeUndefined<Vec<IncludeSection>>,
    /// The weakest answer accepted for every item, from 0 to 1 (as on
    /// `POST /v1/email/enrich`): a weaker one is the item's `404 no_match`, not charged.
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub min_confidence: MaybeUndefined<f64>,
    /// The oldest cached data accepted for every item, in days (as on
    /// `POST /v1/email/enrich`); `0` never serves the cache.
    #[oai(validator(minimum(value = "0"), maximum(value = "36500")))]
    pub max_age_days: MaybeUndefined<i64>,
    /// `true` skips the cache for every item (as on `POST /v1/email/enrich`).
    pub refresh: MaybeUndefined<bool>,
}

impl Example for BulkRequest {
    fn example() -> Self {
        let item = |email: &str, include: Option<&str>, reference: &str| BulkItemRequest {
            email: MaybeUndefined::Value(Text(email.to_string())),
            domain: MaybeUndefined::Undefined,
            include: include.map_or(MaybeUndefined::Undefined, |s| MaybeUndefined::Value(vec![Text(s.to_string())])),
            reference: MaybeUndefined::Value(Text(reference.to_string())),
        };
        Self {
            items: vec![
                item("jane@acme.com", None, "crm-1001"),
                item("jane@acme.com", Some("company"), "crm-1002"),
                item("nobody@nowhere.invalid", None, "crm-1003"),
                item("not-an-email", None, "crm-1004"),
            ],
            include: MaybeUndefined::Undefined,
            min_confidence: MaybeUndefined::Undefined,
            max_age_days: MaybeUndefined::Undefined,
            refresh: MaybeUndefined::Undefined,
        }
    }
}

/// One item's outcome: `data` when it succeeded (`status` 200), `error` otherwise.
#[derive(Debug, Clone, Object)]
pub struct BulkItemResult {
    /// The item's position in `items`, from 0.
    pub index: u32,
    /// The item's `reference`, or `null`.
    pub reference: Nullable<String>,
    /// The status the item would have had as a single call: 200, 400, 402, 404 or 503.
    pub status: u16,
    /// The single call's `data` (its `credits_remaining`: the balance right after this
    /// item's debit).
    #[oai(skip_serializing_if_is_none)]
    pub data: Option<EnrichData>,
    /// The single call's error (`code`, `message`, `request_id`, `details`).
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<ErrorDetail>,
}

/// How the items went.
#[derive(Debug, Clone, Object)]
pub struct BulkSummary {
    /// Items answered (status 200), each charged 1 credit.
    pub succeeded: u64,
    /// Items nobody knows (status 404).
    pub no_match: u64,
    /// Items that failed otherwise (400, 402, 503).
    pub failed: u64,
    pub credits_charged: u64,
}

#[derive(Debug, Clone, Object)]
pub struct BulkData {
    /// One per item, in item order.
    pub results: Vec<BulkItemResult>,
    pub summary: BulkSummary,
    /// The workspace's credit balance after the call.
    pub credits_remaining: i64,
}

/// The answer to a bulk call.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct BulkResponse {
    pub data: BulkData,
}

impl Example for BulkResponse {
    fn example() -> Self {
        let answer = |data: &super::enrich::EnrichResponse| data.data.clone();
        let jane = super::enrich::EnrichResponse::example();
        let mut acme = answer(&jane);
        acme.person = None;
        acme.source = super::enrich::DataSource::Cached;
        acme.credits_remaining = jane.data.credits_remaining - 1;
        let request_id = "req_8c2b4e1f9a7d4c3b8e6f0a1b2c3d4e5f".to_string();
        let error = |e: ApiError| Some(e.envelope(request_id.clone()).error);
        Self {
            data: BulkData {
                results: vec![
                    BulkItemResult {
                        index: 0,
                        reference: Some("crm-1001".to_string()).into(),
                        status: 200,
                        data: Some(answer(&jane)),
                        error: None,
                    },
                    BulkItemResult {
                        index: 1,
                        reference: Some("crm-1002".to_string()).into(),
                        status: 200,
                        data: Some(acme.clone()),
                        error: None,
                    },
                    BulkItemResult {
                        index: 2,
                        reference: Some("crm-1003".to_string()).into(),
                        status: 404,
                        data: None,
                        error: error(ApiError::NoMatch),
                    },
                    BulkItemResult {
                        index: 3,
                        reference: Some("crm-1004".to_string()).into(),
                        status: 400,
                        data: None,
                        error: error(item_error(&ItemFailure::Invalid {
                            problems: vec![crate::bulk::Problem {
                                field: "email".into(),
                                message: "must look like name@example.com".into(),
                            }],
                        })),
                    },
                ],
                summary: BulkSummary { succeeded: 2, no_match: 1, failed: 1, credits_charged: 2 },
                credits_remaining: acme.credits_remaining,
            },
        }
    }
}

/// The items as the domain takes them. A `null` field is a malformed body (the schema
/// says string), refused as a whole; anything else about an item is the item's own
/// failure.
pub fn item_inputs(items: Vec<BulkItemRequest>) -> Result<Vec<ItemInput>, ApiError> {
    let mut nulls = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        let mut field = |name: &str, value: MaybeUndefined<Text>| match value {
            MaybeUndefined::Value(v) => Some(v.0),
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => {
                nulls.push(FieldProblem::new(format!("items[{n}].{name}"), "must not be null; leave the field out instead"));
                None
            }
        };
        let (email, domain, reference) = (field("email", item.email), field("domain", item.domain), field("reference", item.reference));
        let include = match item.include {
            MaybeUndefined::Value(list) => Some(list.into_iter().map(|t| t.0).collect()),
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => {
                nulls.push(FieldProblem::new(format!("items[{n}].include"), "must not be null; leave the field out instead"));
                None
            }
        };
        out.push(ItemInput { email, domain, include, reference });
    }
    if nulls.is_empty() {
        Ok(out)
    } else {
        let message = nulls.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; ");
        Err(ApiError::Validation { message, details: nulls })
    }
}

/// The error a failed item shows: the single call's.
fn item_error(failure: &ItemFailure) -> ApiError {
    match failure {
        ItemFailure::Invalid { problems } => ApiError::Validation {
            message: problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "),
            details: problems.iter().map(|p| FieldProblem::new(p.field.clone(), p.message.clone())).collect(),
        },
        ItemFailure::InsufficientCredits => ApiError::InsufficientCredits,
        ItemFailure::NoMatch => ApiError::NoMatch,
        ItemFailure::BelowMinConfidence { confidence, min } => ApiError::BelowMinConfidence { confidence: *confidence, min: *min },
        ItemFailure::UpstreamUnavailable { retry_after_secs } => {
            ApiError::UpstreamUnavailable { retry_after: std::time::Duration::from_secs(*retry_after_secs) }
        }
    }
}

/// An item's result as the API shows it (`request_id`: of the call, or the job).
pub fn item_result(index: u32, item: &ItemResult, request_id: &str) -> BulkItemResult {
    let (status, data, error) = match &item.outcome {
        ItemOutcome::Found { answer, credits_remaining } => (200, Some(EnrichData::of(answer, *credits_remaining)), None),
        ItemOutcome::Failed { failure } => {
            let err = item_error(failure);
            (err.status().as_u16(), None, Some(err.envelope(request_id.to_string()).error))
        }
    };
    BulkItemResult { index, reference: item.reference.clone().into(), status, data, error }
}

impl BulkResponse {
    /// The 200 body of a bulk call, serialised straight from the domain's answer (no
    /// copy into the declared types, no JSON value tree per item); the test
    /// `the_rendered_body_is_what_poem_openapi_would_send` holds it to [`BulkResponse::of`]'s
    /// rendering by poem-openapi, byte for byte.
    pub fn render(answer: &BulkAnswer) -> bytes::Bytes {
        use serde::Serialize;
        #[derive(Serialize)]
        struct Body<'a> {
            data: Data<'a>,
        }
        #[derive(Serialize)]
        struct Data<'a> {
            results: Vec<Item<'a>>,
            summary: Summary,
            credits_remaining: i64,
        }
        #[derive(Serialize)]
        struct Summary {
            succeeded: u64,
            no_match: u64,
            failed: u64,
            credits_charged: u64,
        }
        #[derive(Serialize)]
        struct Item<'a> {
            index: u32,
            reference: &'a Option<String>,
            status: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<Found<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<serde_json::Value>,
        }
        #[derive(Serialize)]
        struct Found<'a> {
            #[serde(flatten)]
            answer: &'a crate::enrich::Answer,
            credits_remaining: i64,
        }
        let (succeeded, no_match, failed) = answer.counts();
        let results = answer
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| match &item.outcome {
                ItemOutcome::Found { answer, credits_remaining } => Item {
                    index: index as u32,
                    reference: &item.reference,
                    status: 200,
                    data: Some(Found { answer, credits_remaining: *credits_remaining }),
                    error: None,
                },
                ItemOutcome::Failed { failure } => {
                    let err = item_error(failure);
                    let error = poem_openapi::types::ToJSON::to_json(&err.envelope(answer.request_id.clone()).error);
                    Item { index: index as u32, reference: &item.reference, status: err.status().as_u16(), data: None, error }
                }
            })
            .collect();
        let body = Body {
            data: Data {
                results,
                summary: Summary { succeeded, no_match, failed, credits_charged: answer.credits_charged.max(0) as u64 },
                credits_remaining: answer.credits_remaining,
            },
        };
        serde_json::to_vec(&body).expect("a bulk answer serialises").into()
    }

    /// The declared response of a domain answer.
    pub fn of(answer: &BulkAnswer) -> Self {
        let (succeeded, no_match, failed) = answer.counts();
        let results = answer.items.iter().enumerate().map(|(index, item)| item_result(index as u32, item, &answer.request_id)).collect();
        Self {
            data: BulkData {
                results,
                summary: BulkSummary { succeeded, no_match, failed, credits_charged: answer.credits_charged.max(0) as u64 },
                credits_remaining: answer.credits_remaining,
            },
        }
    }
}

successes! {
    /// The call was answered, item by item.
    pub enum BulkOk {
        /// Each item's outcome in its slot; 1 credit per item with `status` 200, charged
        /// in one transaction. A replay of an earlier call with the same `Idempotency-Key`
        /// returns its answer again, charges nothing and sets `Idempotent-Replayed: true`.
        200 => Ok(
            RenderedJson<BulkResponse>,
            /// `true` when this response is a replay of an earlier call with the same
            /// `Idempotency-Key`.
            #[oai(header = "Idempotent-Replayed")]
            Option<bool>,
        ),
    }
}

failures! {
    /// Every way the whole call can fail. Nothing is charged for these.
    pub enum BulkFailure {
        /// `validation_error`: the body is not JSON or not the schema's shape (`items`
        /// missing, empty or over 100, a field of the wrong type), or the
        /// `Idempotency-Key` is not a UUID. (A malformed item fails alone, in its slot.)
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `idempotency_key_in_use`: a call with the same `Idempotency-Key` is still in
        /// progress; retry after `Retry-After` seconds to get its answer.
        409 => Conflict + u64,
        /// `payload_too_large`: the request body exceeds the size limit.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is not sent as `application/json`.
        415 => UnsupportedMediaType,
        /// `idempotency_key_reused`: the `Idempotency-Key` was used with a different
        /// request within 24 hours.
        422 => UnprocessableEntity,
        /// `rate_limited`: the call's items do not fit in the key's per-minute limit or
        /// daily quota now; nothing was done. `details` (field `items`) says how many
        /// items would fit now. Retry after `Retry-After` seconds, or send fewer items.
        429 => TooManyRequests + u64,
        /// `internal_error`: an unexpected failure on our side. Nothing was charged.
        500 => InternalServerError,
        /// `service_unavailable`: leadlex's own store is unreachable. Nothing was
        /// charged; retry (with the same `Idempotency-Key`) after `Retry-After` seconds.
        503 => ServiceUnavailable + u64,
    }
}

pub struct BulkApi;

#[OpenApi(tag = "ApiTags::Enrichment")]
impl BulkApi {
    /// Enrich up to 100 emails or domains
    ///
    /// Looks up each item as `POST /v1/email/enrich` would, and answers with every
    /// item's outcome in its slot (`status`, and `data` or `error`), a `summary` and the
    /// balance. Requires `write:enrich`.
    ///
    /// **Items.** A malformed item fails alone (`400` in its slot); the others go on.
    /// Items with the same input cost one lookup: the first says where it came from,
    /// the later ones `cached`, and each costs its credit, as separate calls would.
    ///
    /// **Credits.** 1 per item with `status` 200, charged in one transaction, in item
    /// order: when the balance runs out, the remaining items get `402
    /// insufficient_credits` in their slots and are not charged (and no vendor is asked
    /// for items the balance could not pay for). Test-mode keys are never charged.
    ///
    /// **Idempotency.** An `Idempotency-Key` covers the whole call: a retry with the same
    /// body within 24 hours gets the same answer, charged once.
    ///
    /// **Rate limits.** A call counts as its number of items against the per-minute
    /// limit and the daily quota. When they do not fit, the call is refused with `429`
    /// before any lookup, and `details` says how many items would fit now (the refused
    /// call itself counts as one request).
    #[oai(path = "/v1/email/enrich/bulk", method = "post", operation_id = "enrich_bulk")]
    async fn bulk(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Optional UUID to make retries of the whole call safe within 24 hours.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<uuid::Uuid>>,
        body: Json<BulkRequest>,
    ) -> Result<BulkOk, BulkFailure> {
        let principal = auth.0;
        let req = body.0;
        let default_include: Option<Vec<String>> = not_null("include", req.include)?
            .map(|l| l.into_iter().map(|s| crate::lookup::input::Section::from(s).as_str().to_string()).collect());
        let quality = super::enrich::quality(req.min_confidence, req.max_age_days, req.refresh)?;
        let items = item_inputs(req.items)?;
        debug_assert!(items.len() <= MAX_ITEMS);
        // Its items were counted against the limits with its key (`api::security`).
        let key = idempotency_key.0.map(|k| k.hyphenated().to_string());
        let request_id = current_request_id();
        let done = state
            .enrich
            .enrich_bulk(&principal, &request_id, &items, Defaults { include: default_include.as_deref(), quality }, key.as_deref())
            .await
            .map_err(ApiError::from)?;
        Ok(BulkOk::Ok(RenderedJson::new(BulkResponse::render(&done.answer)), done.replayed.then_some(true)))
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;

    use super::*;
    use crate::bulk::{ItemResult, Problem};
    use crate::enrich::Answer;
    use crate::lookup::record::{Company, EnrichmentRecord, Person, Source};
    use crate::lookup::vendors::VendorName;

    /// The serde rendering of a bulk answer is poem-openapi's rendering of the declared
    /// types, byte for byte: every outcome, a reference and none, sparse and full data.
    #[test]
    fn the_rendered_body_is_what_poem_openapi_would_send() {
        let answer = |source| Answer {
            record: EnrichmentRecord {
                person: Some(Person { full_name: Some("Jane \"J\" Doe".into()), ..Default::default() }),
                company: Some(Company { name: Some("Acme".into()), founded_year: Some(1998), ..Default::default() }),
                social: None,
            },
            source,
            confidence: 0.75,
            fetched_at: crate::time::from_ms(1_796_000_000_000),
        };
        let items = vec![
            ItemResult {
                reference: Some("crm-1".into()),
                outcome: ItemOutcome::Found { answer: Box::new(answer(Source::Vendor(VendorName::VendorB))), credits_remaining: 9 },
            },
            ItemResult { reference: None, outcome: ItemOutcome::Found { answer: Box::new(answer(Source::Cached)), credits_remaining: 8 } },
            ItemResult { reference: None, outcome: ItemOutcome::Failed { failure: ItemFailure::NoMatch } },
            ItemResult {
                reference: Some("ünï".into()),
                outcome: ItemOutcome::Failed {
                    failure: ItemFailure::Invalid { problems: vec![Problem { field: "email".into(), message: "bad".into() }] },
                },
            },
            ItemResult { reference: None, outcome: ItemOutcome::Failed { failure: ItemFailure::InsufficientCredits } },
            ItemResult {
                reference: None,
                outcome: ItemOutcome::Failed { failure: ItemFailure::UpstreamUnavailable { retry_after_secs: 3 } },
            },
        ];
        let answer = BulkAnswer { items, credits_charged: 2, credits_remaining: 8, request_id: "req_x".into() };
        let by_poem = serde_json::to_vec(&BulkResponse::of(&answer).to_json()).unwrap();
        assert_eq!(String::from_utf8_lossy(&BulkResponse::render(&answer)), String::from_utf8_lossy(&by_poem));
    }
}
