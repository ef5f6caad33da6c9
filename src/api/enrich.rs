//! `POST /v1/email/enrich`: the contract of the enrich operation (request, response,
//! headers, every error) and its thin handler.

use std::{marker::PhantomData, sync::Arc};

use poem::{web::Data, IntoResponse, Response};
use poem_openapi::{
    param::Header,
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::{Example, MaybeUndefined, ParseFromJSON, Type},
    Enum, Object, OpenApi,
};

use super::alternatives::{one_object, Rule};
use super::error::ApiError;
use super::fields::{not_null, DomainInput, EmailInput};
use super::json::{self, present, FastParse, JsonBody};
use super::middleware::current_request_id;
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::{ApiTags, AppState};
use crate::enrich::Success;
use crate::lookup::input::{EnrichQuery, Quality, Section};

/// A section of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum IncludeSection {
    Person,
    Company,
    Social,
}

impl From<IncludeSection> for Section {
    fn from(s: IncludeSection) -> Self {
        match s {
            IncludeSection::Person => Section::Person,
            IncludeSection::Company => Section::Company,
            IncludeSection::Social => Section::Social,
        }
    }
}

/// What to look up. Send `email`, `domain` or both.
///
/// Inputs are normalised before lookup, caching and idempotency: surrounding white space
/// is trimmed, emails and domains lowercased, internationalised domains converted to
/// punycode, and a URL such as `https://www.acme.com/about` read as `acme.com`.
///
/// With both `email` and `domain`, the email is looked up and `domain` names the
/// person's company (useful for a personal address such as `jane@gmail.com`); it wins
/// over the email's own domain. A domain alone returns the company, never a person.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct EnrichFields {
    /// Email address to resolve: a dot-atom local part (letters, digits,
    /// ``!#$%&'*+/=?^_`{|}~-``, inner dots), `@`, and a domain name as for `domain`.
    /// Either `email` or `domain` is required.
    #[oai(validator(min_length = 1, max_length = 254))]
    pub email: MaybeUndefined<EmailInput>,
    /// Domain name to resolve (e.g. `acme.com`; a URL such as `https://www.acme.com/about`
    /// is read as its domain): two labels or more of letters, digits and inner hyphens
    /// (any non-ASCII letter in an internationalised name), each up to 63 characters,
    /// the last one starting with a letter. Either `email` or `domain` is required.
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub domain: MaybeUndefined<DomainInput>,
    /// Optional subset of sections to return: `person`, `company`, `social`. Defaults to
    /// all. `person` is only ever found for an `email`.
    #[oai(validator(min_items = 1, max_items = 3))]
    pub include: MaybeUndefined<Vec<IncludeSection>>,
    /// The weakest answer you accept, from 0 to 1 (see `confidence`): a weaker one is a
    /// `404 no_match`, not charged, with `details` reason `below_min_confidence`.
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub min_confidence: MaybeUndefined<f64>,
    /// The oldest cached data you accept, in days: data obtained from a vendor that long
    /// ago or longer is fetched again (a normal lookup, charged as such). `0` never serves
    /// the cache.
    #[oai(validator(minimum(value = "0"), maximum(value = "36500")))]
    pub max_age_days: MaybeUndefined<i64>,
    /// `true` skips the cache and asks the vendors (charged as any lookup). The fresh
    /// answer replaces the cached one for everyone.
    pub refresh: MaybeUndefined<bool>,
}

impl Example for EnrichFields {
    fn example() -> Self {
        Self {
            email: MaybeUndefined::Value(EmailInput("jane@acme.com".into())),
            domain: MaybeUndefined::Undefined,
            include: MaybeUndefined::Undefined,
            min_confidence: MaybeUndefined::Undefined,
            max_age_days: MaybeUndefined::Undefined,
            refresh: MaybeUndefined::Undefined,
        }
    }
}

/// The enrich request body: [`EnrichFields`] published as one object `EnrichRequest` whose
/// schema requires `email`, `domain` or both (see `super::alternatives`).
#[derive(Debug, Clone)]
pub struct EnrichRequest(pub EnrichFields);

one_object!(EnrichRequest(EnrichFields), "EnrichRequest", Rule::AtLeastOne, ["email", "domain"]);

/// The bounds of [`EnrichFields`]' fields, for the fast parse. The `#[oai(validator)]`
/// attributes above take literals; `the_fast_parse_limits_are_the_schemas` holds these to
/// them (a changed `maxLength` that is not changed here fails it), and the agreement test
/// generates its boundary cases from them.
mod limits {
    pub const EMAIL: std::ops::RangeInclusive<usize> = 1..=crate::lookup::input::EMAIL_MAX;
    pub const DOMAIN: std::ops::RangeInclusive<usize> = 1..=crate::lookup::input::DOMAIN_MAX;
    pub const INCLUDE: std::ops::RangeInclusive<usize> = 1..=3;
}

impl FastParse for EnrichRequest {
    fn fast_parse(body: &[u8]) -> Option<Self> {
        // A body with a field it does not name takes the slow way, which refuses it by
        // name (`deny_unknown_fields`) after the checks `Value` makes (UTF-8, surrogates,
        // number range, nesting depth).
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default, deserialize_with = "present")]
            email: Option<Option<String>>,
            #[serde(default, deserialize_with = "present")]
            domain: Option<Option<String>>,
            #[serde(default, deserialize_with = "present")]
            include: Option<Option<Vec<String>>>,
        }
        /// Absent, or a value within the field's validators (`None` for `null`, which
        /// `Json` explains).
        fn field<T>(value: Option<Option<T>>, ok: impl Fn(&T) -> bool) -> Option<MaybeUndefined<T>> {
            match value {
                None => Some(MaybeUndefined::Undefined),
                Some(Some(v)) if ok(&v) => Some(MaybeUndefined::Value(v)),
                Some(_) => None,
            }
        }
        // A struct also deserialises from an array; the schema says object.
        if json::first_token(body) != Some(b'{') {
            return None;
        }
        let raw: Raw = serde_json::from_slice(body).ok()?;
        // Byte lengths within the validators' character bounds are certainly within them
        // (a character is at least one byte; a string outside them goes the slow way).
        let email = field(raw.email, |s| limits::EMAIL.contains(&s.len()))?.map_value(EmailInput);
        let domain = field(raw.domain, |s| limits::DOMAIN.contains(&s.len()))?.map_value(DomainInput);
        let include = match field(raw.include, |l| limits::INCLUDE.contains(&l.len()))? {
            MaybeUndefined::Value(names) => MaybeUndefined::Value(
                names
                    .iter()
                    .map(|n| match n.as_str() {
                        "person" => Some(IncludeSection::Person),
                        "company" => Some(IncludeSection::Company),
                        "social" => Some(IncludeSection::Social),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => MaybeUndefined::Undefined,
        };
        let (min_confidence, max_age_days, refresh) = (MaybeUndefined::Undefined, MaybeUndefined::Undefined, MaybeUndefined::Undefined);
        Some(Self(EnrichFields { email, domain, include, min_confidence, max_age_days, refresh }))
    }
}

/// Personal details, when `email` is provided.
#[derive(Debug, Clone, Default, Object)]
#[oai(rename = "Person")]
pub struct PersonData {
    #[oai(skip_serializing_if_is_none)]
    pub full_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub first_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub last_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub job_title: Option<String>,
    /// `executive`, `director`, `manager`, `senior` or `entry`.
    #[oai(skip_serializing_if_is_none)]
    pub seniority: Option<String>,
    /// e.g. `New York, NY, US`.
    #[oai(skip_serializing_if_is_none)]
    pub location: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub linkedin_url: Option<String>,
}

/// Organizational details.
#[derive(Debug, Clone, Default, Object)]
#[oai(rename = "Company")]
pub struct CompanyData {
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub domain: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub industry: Option<String>,
    /// Employee count bucket as the vendor reports it, e.g. `201-500`.
    #[oai(skip_serializing_if_is_none)]
    pub size: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub founded_year: Option<i32>,
    #[oai(skip_serializing_if_is_none)]
    pub description: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub linkedin_url: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub hq_location: Option<String>,
}

/// Social profiles, where available, as full URLs.
#[derive(Debug, Clone, Default, Object)]
#[oai(rename = "Social")]
pub struct SocialData {
    #[oai(skip_serializing_if_is_none)]
    pub twitter: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub github: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub facebook: Option<String>,
}

/// Origin of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DataSource {
    /// Answered now by the first upstream vendor.
    VendorA,
    /// Answered now by the second upstream vendor.
    VendorB,
    /// Served from leadlex's cache of an earlier vendor answer (still charged 1 credit).
    Cached,
}

/// The answer. Sections not asked for with `include`, and sections with no data, are
/// left out, as are fields with no data; `person` only ever appears for an `email`.
#[derive(Debug, Clone, Object)]
pub struct EnrichData {
    #[oai(skip_serializing_if_is_none)]
    pub person: Option<PersonData>,
    #[oai(skip_serializing_if_is_none)]
    pub company: Option<CompanyData>,
    #[oai(skip_serializing_if_is_none)]
    pub social: Option<SocialData>,
    pub source: DataSource,
    /// Confidence score from 0.0 to 1.0. `vendor_a`: its likelihood (1–10) / 10;
    /// `vendor_b`: 0.9 for an exact match or a company found by domain, 0.6 for a fuzzy
    /// person match; `cached`: the score of the answer when it was fetched.
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub confidence: f64,
    /// When this data was obtained from a vendor (for `cached`, when the cached answer
    /// was): its age, whatever the `source`. Absent only from replays of calls made
    /// before this field existed.
    #[oai(skip_serializing_if_is_none)]
    pub fetched_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Workspace credit balance after this call (test mode: the live balance, which a
    /// test-mode call never changes).
    #[oai(validator(minimum(value = "0")))]
    pub credits_remaining: i64,
}

impl EnrichData {
    /// The declared type of an answer, as [`EnrichResponse::render`] writes it.
    pub fn of(answer: &crate::enrich::Answer, credits_remaining: i64) -> Self {
        #[derive(serde::Serialize)]
        struct Data<'a> {
            #[serde(flatten)]
            answer: &'a crate::enrich::Answer,
            credits_remaining: i64,
        }
        let value = serde_json::to_value(Data { answer, credits_remaining }).expect("an answer serialises");
        Self::parse_from_json(Some(value)).expect("an answer reads as EnrichData (see the_rendered_body_is_what_poem_openapi_would_send)")
    }
}

/// A successful lookup.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct EnrichResponse {
    pub data: EnrichData,
}

impl Example for EnrichResponse {
    fn example() -> Self {
        Self {
            data: EnrichData {
                person: Some(PersonData {
                    full_name: Some("Jane Doe".into()),
                    first_name: Some("Jane".into()),
                    last_name: Some("Doe".into()),
                    job_title: Some("General Counsel".into()),
                    seniority: Some("executive".into()),
                    location: Some("New York, NY, US".into()),
                    linkedin_url: Some("https://linkedin.com/in/janedoe".into()),
                }),
                company: Some(CompanyData {
                    name: Some("Acme Corp".into()),
                    domain: Some("acme.com".into()),
                    industry: Some("Legal Services".into()),
                    size: Some("201-500".into()),
                    founded_year: Some(1998),
                    description: None,
                    linkedin_url: Some("https://linkedin.com/company/acme".into()),
                    hq_location: Some("New York, NY, US".into()),
                }),
                social: None,
                source: DataSource::VendorA,
                confidence: 0.9,
                fetched_at: crate::time::from_ms(1_796_000_000_000),
                credits_remaining: 4872,
            },
        }
    }
}

impl EnrichResponse {
    /// The 200 body of a successful call: `{"data": {<the answer>, "credits_remaining"}}`,
    /// serialised straight from the domain's [`Answer`](crate::enrich::Answer) (no copy
    /// into the types above, no JSON value tree). The test
    /// `the_rendered_body_is_what_poem_openapi_would_send` holds it to what poem-openapi
    /// would send for these declared types, so the schema and the bytes cannot drift.
    pub fn render(success: &Success) -> bytes::Bytes {
        match &success.rendering {
            // Kept with the remembered call or the shared cached answer: rendered once.
            Some(slot) => Self::with_balance(slot.get_or_init(|| Self::render_answer(&success.answer)), success.credits_remaining),
            None => Self::with_balance(&Self::render_answer(&success.answer), success.credits_remaining),
        }
    }

    /// The body up to its balance, `{"data":{<the answer>,"credits_remaining":`: the
    /// balance is the last field of the last object, so the rest is the number and `}}`.
    fn render_answer(answer: &crate::enrich::Answer) -> bytes::Bytes {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            data: Data<'a>,
        }
        #[derive(serde::Serialize)]
        struct Data<'a> {
            #[serde(flatten)]
            answer: &'a crate::enrich::Answer,
            credits_remaining: i64,
        }
        let mut body = serde_json::to_vec(&Body { data: Data { answer, credits_remaining: 0 } }).expect("response serialises");
        assert!(body.ends_with(b"0}}"), "the balance closes the body");
        body.truncate(body.len() - 3);
        body.into()
    }

    fn with_balance(head: &[u8], balance: i64) -> bytes::Bytes {
        use std::io::Write;
        let mut body = Vec::with_capacity(head.len() + 22);
        body.extend_from_slice(head);
        write!(body, "{balance}}}}}").expect("writing to memory");
        body.into()
    }
}

/// A JSON payload already rendered to bytes, declared with `T`'s schema.
pub struct RenderedJson<T> {
    bytes: bytes::Bytes,
    _schema: PhantomData<fn() -> T>,
}

impl<T> RenderedJson<T> {
    pub fn new(bytes: bytes::Bytes) -> Self {
        Self { bytes, _schema: PhantomData }
    }
}

impl<T: Type> Payload for RenderedJson<T> {
    const CONTENT_TYPE: &'static str = Json::<T>::CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T> IntoResponse for RenderedJson<T> {
    fn into_response(self) -> Response {
        Response::builder().content_type(<Json<serde_json::Value> as Payload>::CONTENT_TYPE).body(self.bytes)
    }
}

successes! {
    /// The successful outcome.
    pub enum EnrichOk {
        /// The lookup succeeded and 1 credit was charged. A replay of an earlier call with the
        /// same `Idempotency-Key` returns the first response byte for byte, charges nothing
        /// and sets `Idempotent-Replayed: true`.
        200 => Ok(
            RenderedJson<EnrichResponse>,
            /// `true` when this response is a replay of an earlier call with the same
            /// `Idempotency-Key`.
            #[oai(header = "Idempotent-Replayed")]
            Option<bool>,
        ),
    }
}

failures! {
    /// Every way the operation can fail. Nothing is ever charged for these.
    pub enum EnrichFailure {
        /// `validation_error`: neither `email` nor `domain` was provided, or a field is
        /// malformed (email, domain, `include` value, non-UUID `Idempotency-Key`, invalid JSON).
        /// `details` lists the fields at fault.
        400 => BadRequest,
        401 => Unauthorized,
        /// `insufficient_credits`: the workspace credit balance is exhausted. No vendor was
        /// asked. (Test mode: the `insufficient_credits@leadlex.test` trigger only.)
        402 => PaymentRequired,
        403 => Forbidden,
        /// `no_match`: upstream providers returned no data for the input (or none of the
        /// sections asked for with `include`). Free.
        404 => NotFound,
        /// `idempotency_key_in_use`: a request with the same `Idempotency-Key` is still in
        /// progress; retry after `Retry-After` seconds to get its result.
        409 => Conflict + u64,
        /// `payload_too_large`: the request body exceeds the size limit.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is not sent as `application/json`.
        415 => UnsupportedMediaType,
        /// `idempotency_key_reused`: the `Idempotency-Key` was already used within 24 hours
        /// with a different request body. Use a new key for a new request.
        422 => UnprocessableEntity,
        /// `rate_limited`: the per-minute limit or the daily quota of the workspace's plan is
        /// exhausted; retry after `Retry-After` seconds.
        429 => TooManyRequests + u64,
        /// `internal_error`: an unexpected failure on our side. Nothing was charged.
        500 => InternalServerError,
        /// `upstream_unavailable`: every upstream provider failed; or `service_unavailable`:
        /// leadlex's own store is unreachable. Nothing was charged; retry (with the same
        /// `Idempotency-Key`) after `Retry-After` seconds.
        503 => ServiceUnavailable + u64,
    }
}

pub struct EnrichApi;

#[OpenApi(tag = "ApiTags::Enrichment")]
impl EnrichApi {
    /// Enrich an email or domain
    ///
    /// Look up a person or organization from an email address or domain. Each successful
    /// lookup costs 1 credit from the workspace balance, also when served from cache;
    /// every error is free. Requires an API key with the `write:enrich` permission.
    ///
    /// Checks run in this order, each answering with the first error it finds: API key
    /// (401), rate limit (429), permission (403), request validation (400),
    /// `Idempotency-Key` (replay, 422, 409), credit balance (402), lookup (404, 503).
    ///
    /// **Idempotency.** Send an `Idempotency-Key` (a UUID) to make retries safe. Keys are
    /// scoped to the workspace. A retry with the same key and the same request (compared
    /// after normalisation) within 24 hours returns the first successful response byte
    /// for byte with `Idempotent-Replayed: true`; it charges nothing and asks no vendor.
    /// The same key with a different request: 422 `idempotency_key_reused`. A retry while
    /// the first call is still running: 409 `idempotency_key_in_use` with `Retry-After`.
    /// Only 200 responses are stored: after any error, a retry with the same key runs
    /// again.
    ///
    /// **Rate limits.** Per workspace plan: starter 10/min and 100/day, pro 50/min and
    /// 1,000/day, org 200/min and 10,000/day; the daily quota resets at 00:00 UTC. Every
    /// authenticated request counts, errors included (but not those refused with 429).
    /// `X-RateLimit-*` headers describe the daily quota.
    ///
    /// **Test mode.** A test-mode key (`wbk_test_…`) is answered by the built-in sandbox
    /// data only (never a real vendor), is never charged (`credits_remaining` shows the
    /// live balance, unchanged; a zero balance does not stop it), keeps its own cache per
    /// workspace and its own `Idempotency-Key`s, and has limits of its own: 10 per minute
    /// and 1,000 per day per test key. These inputs give the same outcome every time
    /// (`+tag` is optional and free: a new tag is an input not yet cached):
    ///
    /// | `email` | Outcome |
    /// |---|---|
    /// | `vendor_a+tag@leadlex.test` | `200`, `source: vendor_a`; the same input again: `200`, `source: cached` |
    /// | `vendor_b+tag@leadlex.test` | `200`, `source: vendor_b` (the first vendor does not know it); again: `cached` |
    /// | `no_match+tag@leadlex.test` | `404 no_match` |
    /// | `insufficient_credits+tag@leadlex.test` | `402 insufficient_credits` |
    /// | `upstream_unavailable+tag@leadlex.test` | `503 upstream_unavailable` with `Retry-After` |
    /// | `slow+tag@leadlex.test` | `200`, `source: vendor_a`, after 1.5 s: a retry with the same `Idempotency-Key` meanwhile gets `409 idempotency_key_in_use` |
    ///
    /// `422 idempotency_key_reused` comes from an `Idempotency-Key` sent again with another
    /// input, as in live mode; `429` from the eleventh call within a minute. Any other input gets the sandbox's synthetic data (e.g.
    /// `jane@acme.com`, `acme.com`).
    #[oai(path = "/v1/email/enrich", method = "post", operation_id = "enrich_email_or_domain")]
    async fn enrich(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Optional UUID to deduplicate retries within 24 hours. The credit is only
        /// charged on the first successful call.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<uuid::Uuid>>,
        body: JsonBody<EnrichRequest>,
    ) -> Result<EnrichOk, EnrichFailure> {
        let principal = auth.0;
        let EnrichRequest(req) = body.0;
        let (email, domain, include) = (not_null("email", req.email)?, not_null("domain", req.domain)?, not_null("include", req.include)?);
        let quality = quality(req.min_confidence, req.max_age_days, req.refresh)?;
        let include: Option<Vec<Section>> = include.map(|l| l.into_iter().map(Section::from).collect());
        let (email, domain) = (email.map(|e| e.0), domain.map(|d| d.0));
        let query = EnrichQuery::parse(email.as_deref(), domain.as_deref(), include.as_deref()).map_err(ApiError::validation)?;
        let query = query.with_quality(quality);
        let key = idempotency_key.0.map(|k| k.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned());
        let request_id = current_request_id();
        let success = state.enrich.enrich(&principal, &request_id, &query, key.as_deref()).await.map_err(ApiError::from)?;
        Ok(EnrichOk::Ok(RenderedJson::new(EnrichResponse::render(&success)), success.replayed.then_some(true)))
    }
}

/// The quality controls a call sets (`min_confidence`, `max_age_days`, `refresh`; the
/// same three fields on a single call, a bulk call and a job).
pub fn quality(
    min_confidence: MaybeUndefined<f64>,
    max_age_days: MaybeUndefined<i64>,
    refresh: MaybeUndefined<bool>,
) -> Result<Quality, ApiError> {
    let min_confidence = not_null("min_confidence", min_confidence)?;
    let max_age_days = not_null("max_age_days", max_age_days)?;
    let refresh = not_null("refresh", refresh)?;
    Quality::new(min_confidence, max_age_days, refresh).map_err(ApiError::validation)
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;

    use crate::lookup::record::Source;
    use crate::lookup::vendors::VendorName;

    use super::*;

    /// The shortcut never accepts what `Json` refuses, nor reads a body differently.
    #[test]
    fn the_fast_parse_agrees_with_poem_openapi() {
        let long = "a".repeat(321);
        let bodies = [
            r#"{"email":"jane@acme.com"}"#.to_string(),
            r#"  {"domain":"acme.com","include":["company","person"]} "#.to_string(),
            r#"{"email":"jane@acme.com","domain":"acme.com","include":["social"]}"#.to_string(),
            r#"{"email":"jane@acme.com","extra":[1,{"a":null}]}"#.to_string(),
            r#"{"email":"a@b.co","x":1e400}"#.to_string(),
            r#"{"email":"a@b.co","x":"\ud800"}"#.to_string(),
            r#"{"email":"\ud800@b.co"}"#.to_string(),
            format!(r#"{{"email":"a@b.co","x":{}1{}}}"#, "[".repeat(200), "]".repeat(200)),
            r#"{}"#.to_string(),
            r#"{"email":null}"#.to_string(),
            r#"{"email":""}"#.to_string(),
            format!(r#"{{"email":"{long}"}}"#),
            r#"{"email":"j\u00e9@acme.com"}"#.to_string(),
            r#"{"email":42}"#.to_string(),
            r#"{"include":[]}"#.to_string(),
            r#"{"include":["person","person","person","person"]}"#.to_string(),
            r#"{"include":["Person"]}"#.to_string(),
            r#"{"include":"person"}"#.to_string(),
            r#"{"email":"a@b.co","email":"c@d.co"}"#.to_string(),
            r#"["jane@acme.com"]"#.to_string(),
            r#"{"email":"jane@acme.com"} x"#.to_string(),
            r#"{"email":"jane@acme.com""#.to_string(),
            String::new(),
        ];
        let mut bodies: Vec<Vec<u8>> = bodies.into_iter().map(String::into_bytes).collect();
        bodies.push(b"{\"email\":\"a@b.co\",\"x\":\"\xff\"}".to_vec());
        bodies.push(b"{\"email\":\"\xff@b.co\"}".to_vec());
        let mut fast = 0;
        for body in &bodies {
            let shown = String::from_utf8_lossy(body);
            let slow = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| EnrichRequest::parse_from_json(Some(v)).ok());
            if let Some(quick) = EnrichRequest::fast_parse(body) {
                fast += 1;
                let slow = slow.unwrap_or_else(|| panic!("fast path accepted what Json refuses: {shown}"));
                assert_eq!(format!("{quick:?}"), format!("{slow:?}"), "{shown}");
            }
        }
        assert_eq!(fast, 5, "the ordinary bodies take the shortcut");
    }

    /// The fast parse's limits are the published schema's.
    #[test]
    fn the_fast_parse_limits_are_the_schemas() {
        use poem_openapi::registry::{MetaSchemaRef, Registry};
        let mut registry = Registry::new();
        <EnrichRequest as Type>::register(&mut registry);
        let schema = &registry.schemas["EnrichRequest"];
        let field = |name: &str| match &schema.properties.iter().find(|(n, _)| *n == name).expect("declared").1 {
            MetaSchemaRef::Inline(s) => s.clone(),
            MetaSchemaRef::Reference(r) => Box::new(registry.schemas[r].clone()),
        };
        let (email, domain, include) = (field("email"), field("domain"), field("include"));
        assert_eq!((email.min_length, email.max_length), (Some(*limits::EMAIL.start()), Some(*limits::EMAIL.end())));
        assert_eq!((domain.min_length, domain.max_length), (Some(*limits::DOMAIN.start()), Some(*limits::DOMAIN.end())));
        assert_eq!((include.min_items, include.max_items), (Some(*limits::INCLUDE.start()), Some(*limits::INCLUDE.end())));
    }

    /// At and around every limit, the fast parse takes a body exactly when `Json` does.
    #[test]
    fn the_fast_parse_agrees_with_poem_openapi_at_every_limit() {
        let mut bodies = Vec::new();
        for (name, range) in [("email", limits::EMAIL), ("domain", limits::DOMAIN)] {
            for len in [*range.start() - 1, *range.start(), *range.end(), *range.end() + 1] {
                bodies.push(format!(r#"{{"{name}":"{}"}}"#, "a".repeat(len)));
                // Multi-byte characters: within the character bound, beyond the byte one.
                bodies.push(format!(r#"{{"{name}":"{}"}}"#, "é".repeat(len)));
            }
        }
        for len in [*limits::INCLUDE.start() - 1, *limits::INCLUDE.start(), *limits::INCLUDE.end(), *limits::INCLUDE.end() + 1] {
            bodies.push(format!(r#"{{"domain":"acme.com","include":[{}]}}"#, vec![r#""company""#; len].join(",")));
        }
        for body in &bodies {
            let slow = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| EnrichRequest::parse_from_json(Some(v)).ok());
            match EnrichRequest::fast_parse(body.as_bytes()) {
                Some(quick) => {
                    let slow = slow.unwrap_or_else(|| panic!("fast path accepted what Json refuses: {body:.80}"));
                    assert_eq!(format!("{quick:?}"), format!("{slow:?}"));
                }
                None if body.contains('é') => {} // goes the slow way, which decides
                None => assert!(slow.is_none(), "an ASCII body within the limits takes the shortcut: {body:.80}"),
            }
        }
    }

    /// The serde rendering of a 200 body is poem-openapi's, byte for byte, for a full
    /// answer and a sparse one (fields and sections left out when empty).
    #[test]
    fn the_rendered_body_is_what_poem_openapi_would_send() {
        use crate::enrich::Answer;
        use crate::lookup::record::{Company, EnrichmentRecord, Person, Social};
        let full = Answer {
            record: EnrichmentRecord {
                person: Some(Person {
                    full_name: Some("Jane Doe".into()),
                    first_name: Some("Jane".into()),
                    last_name: Some("Doe".into()),
                    job_title: Some("General Counsel".into()),
                    seniority: Some("executive".into()),
                    location: Some("New York, NY, US".into()),
                    linkedin_url: Some("https://linkedin.com/in/janedoe".into()),
                }),
                company: Some(Company {
                    name: Some("Acme Corp".into()),
                    domain: Some("acme.com".into()),
                    industry: Some("Legal Services".into()),
                    size: Some("201-500".into()),
                    founded_year: Some(1998),
                    description: Some("Law \"firm\" ünïcode".into()),
                    linkedin_url: Some("https://linkedin.com/company/acme".into()),
                    hq_location: Some("New York, NY, US".into()),
                }),
                social: Some(Social { twitter: Some("https://twitter.com/a".into()), github: None, facebook: Some("f".into()) }),
            },
            source: Source::Vendor(VendorName::VendorB),
            confidence: 0.6,
            fetched_at: crate::time::from_ms(1_796_000_000_123),
        };
        let sparse = Answer {
            record: EnrichmentRecord { company: Some(Company { name: Some("X".into()), ..Default::default() }), ..Default::default() },
            source: Source::Cached,
            confidence: 1.0,
            fetched_at: None,
        };
        let slot: std::sync::Arc<std::sync::OnceLock<bytes::Bytes>> = Default::default();
        for (answer, rendering) in [(full.clone(), None), (sparse, None), (full.clone(), Some(slot.clone())), (full, Some(slot))] {
            for balance in [0, 41, 1_000_000_007, i64::MAX] {
                let answer = std::sync::Arc::new(answer.clone());
                let success = Success { answer, credits_remaining: balance, replayed: false, rendering: rendering.clone() };
                let rendered = EnrichResponse::render(&success);
                let parsed: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
                let response = EnrichResponse::parse_from_json(Some(parsed)).expect("the body parses as the schema's type");
                assert_eq!(response.data.credits_remaining, balance);
                let by_poem = serde_json::to_vec(&response.to_json()).unwrap();
                assert_eq!(String::from_utf8_lossy(&rendered), String::from_utf8_lossy(&by_poem));
            }
        }
    }
}
