//! `/v1/enrich/jobs`: durable enrichment jobs of up to 10,000 items (permission
//! `write:enrich`): submit, follow, list, cancel, and read the results a page at a time.
//! The contract and thin handlers over [`crate::jobs`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{web::Data, Request};
use poem_openapi::{
    param::{Header, Path, Query},
    payload::Json,
    types::{Example, MaybeUndefined},
    ApiRequest, Object, OpenApi, ResponseContent,
};

use super::bulk::{BulkItemRequest, BulkItemResult};
use super::enrich::IncludeSection;
use super::error::ApiError;
use super::fields::{not_null, Nullable};
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::text::{CsvBody, CsvStream, NdjsonStream};
use super::{ApiTags, AppState};
use crate::bulk::Defaults;
use crate::idempotency::Idempotent;
use crate::jobs::{self, JobView, ResultRow};
use crate::lookup::input::Section;
use crate::validation::FieldError;

/// Up to 10,000 inputs, enriched in the background.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct JobRequest {
    /// 1 to 10,000 items, each as in a bulk call (a malformed item fails alone, in its
    /// result).
    #[oai(validator(min_items = 1, max_items = 10000))]
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

impl Example for JobRequest {
    fn example() -> Self {
        let bulk = <super::bulk::BulkRequest as Example>::example();
        Self {
            items: bulk.items,
            include: MaybeUndefined::Undefined,
            min_confidence: MaybeUndefined::Undefined,
            max_age_days: MaybeUndefined::Undefined,
            refresh: MaybeUndefined::Undefined,
        }
    }
}

/// A job's items: JSON (as a bulk call's), or a CSV file.
#[derive(Debug, ApiRequest)]
pub enum JobSubmission {
    /// The items as JSON, as in a bulk call.
    Json(Json<JobRequest>),
    /// The items as CSV (at most 10 MB): a header row naming `email`, `domain` and
    /// optionally `reference`, then one row per item; an empty cell is a field left
    /// out.
    Csv(CsvBody),
}

/// A job and how far it got.
#[derive(Debug, Clone, Object)]
pub struct Job {
    /// `job_…`.
    pub id: String,
    /// `queued`, `running`, `completed` or `cancelled` (more may be added).
    pub status: String,
    /// Why it was cancelled: `requested` (`DELETE /v1/enrich/jobs/{id}`),
    /// `api_key_revoked` or `api_key_expired` (the key that submitted it can no longer
    /// act; nothing more is charged in its name); more may be added. `null` unless
    /// cancelled.
    pub cancel_reason: Nullable<String>,
    /// Items submitted.
    pub total: i64,
    /// Items answered so far: `succeeded + no_match + failed`.
    pub done: i64,
    pub succeeded: i64,
    pub no_match: i64,
    pub failed: i64,
    /// 1 per succeeded item.
    pub credits_charged: i64,
    pub created_at: DateTime<Utc>,
    /// When its first items were taken up; `null` while queued.
    pub started_at: Nullable<DateTime<Utc>>,
    /// When it completed or was cancelled; `null` before.
    pub finished_at: Nullable<DateTime<Utc>>,
}

impl From<JobView> for Job {
    fn from(j: JobView) -> Self {
        Self {
            id: j.id,
            status: j.status,
            cancel_reason: j.cancel_reason.into(),
            total: j.total,
            done: j.done,
            succeeded: j.succeeded,
            no_match: j.no_match,
            failed: j.failed,
            credits_charged: j.credits_charged,
            created_at: crate::time::at(j.created_at),
            started_at: j.started_at.map(crate::time::at).into(),
            finished_at: j.finished_at.map(crate::time::at).into(),
        }
    }
}

/// One job.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct JobResponse {
    pub data: Job,
}

/// The request example's job: just stored (`queued`), done (`completed`), or cancelled
/// before it started (`cancelled`).
pub fn example_job(status: &str) -> Job {
    let created = crate::time::at(1_796_000_000_000);
    let done = status == "completed";
    Job {
        id: "job_019a2b3c4d5e7f808192a3b4c5d6e7f8".into(),
        status: status.into(),
        cancel_reason: (status == "cancelled").then(|| "requested".to_string()).into(),
        total: 4,
        done: if done { 4 } else { 0 },
        succeeded: if done { 2 } else { 0 },
        no_match: if done { 1 } else { 0 },
        failed: if done { 1 } else { 0 },
        credits_charged: if done { 2 } else { 0 },
        created_at: created,
        started_at: done.then(|| crate::time::at(1_796_000_000_250)).into(),
        finished_at: (status != "queued").then(|| crate::time::at(1_796_000_001_000)).into(),
    }
}

impl Example for JobResponse {
    fn example() -> Self {
        Self { data: example_job("queued") }
    }
}

#[derive(Debug, Clone, Object)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// Where a cursor-paged list stands.
#[derive(Debug, Clone, Object)]
pub struct JobsMeta {
    pub limit: u32,
    /// Pass as `starting_after` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A page of the workspace's jobs, newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct JobListResponse {
    pub data: JobList,
    pub meta: JobsMeta,
}

impl Example for JobListResponse {
    fn example() -> Self {
        Self { data: JobList { jobs: vec![example_job("completed")] }, meta: JobsMeta { limit: 25, next_cursor: Nullable(None) } }
    }
}

#[derive(Debug, Clone, Object)]
pub struct JobResults {
    /// The results of the items done so far, in item order, in the bulk result shape
    /// (`index` is the item's position in the submission).
    pub results: Vec<BulkItemResult>,
}

/// A page of a job's results.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct JobResultsResponse {
    pub data: JobResults,
    pub meta: JobsMeta,
}

impl Example for JobResultsResponse {
    fn example() -> Self {
        let mut results = <super::bulk::BulkResponse as Example>::example().data.results;
        for r in &mut results {
            if let Some(error) = &mut r.error {
                error.request_id = "job_019a2b3c4d5e7f808192a3b4c5d6e7f8".into();
            }
        }
        Self { data: JobResults { results }, meta: JobsMeta { limit: 100, next_cursor: Nullable(None) } }
    }
}

successes! {
    /// The job was stored.
    pub enum SubmitJobOk {
        /// Queued: follow it at `Location`. A retry with the same `Idempotency-Key` and the
        /// same request within 24 hours gets the same job (as it is now), with
        /// `Idempotent-Replayed: true`, and submits nothing more.
        202 => Accepted(
            Json<JobResponse>,
            /// The job's URL.
            #[oai(header = "Location")]
            String,
            /// `true` when this response is a replay of an earlier submission with the same
            /// `Idempotency-Key`.
            #[oai(header = "Idempotent-Replayed")]
            Option<bool>,
        ),
    }
}

failures! {
    /// Every way submitting a job can fail. Nothing is stored.
    pub enum SubmitJobFailure {
        /// `validation_error`: the body is not the schema's shape (JSON: `items` missing,
        /// empty or over 10,000, a field of the wrong type; CSV: no `email` or `domain`
        /// column, no row, over 10,000 rows), or the `Idempotency-Key` is not a UUID.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `idempotency_key_in_use`: a submission with the same `Idempotency-Key` is still
        /// in progress; retry after `Retry-After` seconds.
        409 => Conflict + u64,
        /// `payload_too_large`: the body is over 10 MB.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is neither `application/json` nor `text/csv`.
        415 => UnsupportedMediaType,
        /// `idempotency_key_reused`: the `Idempotency-Key` was used with a different
        /// request within 24 hours.
        422 => UnprocessableEntity,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        /// `service_unavailable`: leadlex's own store is unreachable; retry (with the same
        /// `Idempotency-Key`) after `Retry-After` seconds.
        503 => ServiceUnavailable + u64,
    }
}

successes! {
    /// The job.
    pub enum JobOk {
        /// The job as it is now.
        200 => Ok(Json<JobResponse>),
    }
}

successes! {
    /// A page of jobs.
    pub enum JobListOk {
        /// The workspace's jobs, newest first.
        200 => Ok(Json<JobListResponse>),
    }
}

/// A job's results in the format the `Accept` header asks for.
#[derive(ResponseContent)]
pub enum JobResultsContent {
    /// A page (the default).
    Json(Json<JobResultsResponse>),
    /// Every result done so far, streamed (`Accept: text/csv`).
    Csv(CsvStream),
    /// Every result done so far, streamed (`Accept: application/x-ndjson`).
    Ndjson(NdjsonStream),
}

successes! {
    /// Results.
    pub enum JobResultsOk {
        /// The results of the job's items done so far, in item order: a page of JSON by
        /// default; all of them as CSV or JSON lines when `Accept` asks for `text/csv` or
        /// `application/x-ndjson` (streamed; `limit` and `starting_after` still apply to
        /// where it starts, not to how much).
        200 => Ok(JobResultsContent),
    }
}

failures! {
    /// Every way reading or cancelling a job can fail.
    pub enum JobFailure {
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace has no job with this id.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way reading a job's results can fail.
    pub enum JobResultsFailure {
        /// `validation_error`: `limit` or `starting_after` is malformed.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace has no job with this id.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

failures! {
    /// Every way listing jobs can fail.
    pub enum JobListFailure {
        /// `validation_error`: a parameter is malformed.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

fn default_limit() -> u32 {
    25
}

/// A JSON body's own field, or else the query parameter's value.
fn body_or_query<T>(field: MaybeUndefined<T>, query: Option<T>) -> MaybeUndefined<T> {
    match field {
        MaybeUndefined::Undefined => MaybeUndefined::from_opt_undefined(query),
        given => given,
    }
}

fn default_results_limit() -> u32 {
    100
}

pub struct JobsApi;

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Submit an enrichment job
    ///
    /// Stores up to 10,000 items and enriches them in the background, each exactly as an
    /// item of `POST /v1/email/enrich/bulk`: 1 credit per succeeded item, charged as it
    /// is done; a malformed item fails alone. Follow the job at `Location`, read its
    /// results as they come, cancel what has not started. Items count against the daily
    /// quota of the submitting key (never against the per-minute limit of interactive
    /// calls); a workspace's items run a few at a time (2 on starter, 5 on pro, 10 on org,
    /// 20 unmetered, per server). Results are kept 30 days after the job finishes.
    /// Requires `write:enrich`.
    #[oai(path = "/v1/enrich/jobs", method = "post", operation_id = "submit_enrichment_job")]
    // The parameters are the operation's contract, one argument each.
    #[allow(clippy::too_many_arguments)]
    async fn submit(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Optional UUID that makes retries of the submission safe within 24 hours.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<uuid::Uuid>>,
        /// The weakest answer accepted for every item, from 0 to 1 (as `min_confidence`
        /// of a JSON body, whose own field wins): the way to set it for a CSV file.
        #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
        min_confidence: Query<Option<f64>>,
        /// The oldest cached data accepted for every item, in days (as `max_age_days` of
        /// a JSON body, whose own field wins).
        #[oai(validator(minimum(value = "0"), maximum(value = "36500")))]
        max_age_days: Query<Option<i64>>,
        /// `true` skips the cache for every item (as `refresh` of a JSON body, whose own
        /// field wins).
        refresh: Query<Option<bool>>,
        body: JobSubmission,
    ) -> Result<SubmitJobOk, SubmitJobFailure> {
        let principal = auth.0;
        let (items, include, quality) = match body {
            JobSubmission::Json(Json(req)) => {
                let include: Option<Vec<String>> =
                    not_null("include", req.include)?.map(|l| l.into_iter().map(|s| Section::from(s).as_str().to_string()).collect());
                let quality = super::enrich::quality(
                    body_or_query(req.min_confidence, min_confidence.0),
                    body_or_query(req.max_age_days, max_age_days.0),
                    body_or_query(req.refresh, refresh.0),
                )?;
                (super::bulk::item_inputs(req.items)?, include, quality)
            }
            JobSubmission::Csv(CsvBody(text)) => {
                let items = jobs::parse_csv(&text).map_err(|p| ApiError::validation(vec![FieldError::new("body", p.message)]))?;
                let quality = super::enrich::quality(
                    MaybeUndefined::from_opt_undefined(min_confidence.0),
                    MaybeUndefined::from_opt_undefined(max_age_days.0),
                    MaybeUndefined::from_opt_undefined(refresh.0),
                )?;
                (items, None, quality)
            }
        };
        let key = idempotency_key.0.map(|k| k.hyphenated().to_string());
        let idem = key.as_deref().map(|key| Idempotent { key, lease: state.idempotency_lease, ttl: state.idempotency_ttl });
        let (job, replayed) =
            jobs::submit(&state.db, &principal, &items, Defaults { include: include.as_deref(), quality }, idem, crate::now_ms())
                .await
                .map_err(ApiError::from)?;
        state.jobs_wake.notify_one();
        let location = format!("/v1/enrich/jobs/{}", job.id);
        Ok(SubmitJobOk::Accepted(Json(JobResponse { data: job.into() }), location, replayed.then_some(true)))
    }

    /// List enrichment jobs
    ///
    /// The workspace's jobs, newest first, a page at a time: pass `meta.next_cursor` as
    /// `starting_after` for the next page. Requires `write:enrich`.
    #[oai(path = "/v1/enrich/jobs", method = "get", operation_id = "list_enrichment_jobs")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Jobs per page.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<u32>,
        /// The `id` of the last job of the previous page (its `meta.next_cursor`).
        #[oai(validator(pattern = "^job_[0-9a-f]{32}$"))]
        starting_after: Query<Option<String>>,
    ) -> Result<JobListOk, JobListFailure> {
        let (found, next) =
            jobs::list(&state.db, &auth.0.scope, u64::from(limit.0), starting_after.0.as_deref()).await.map_err(ApiError::from)?;
        Ok(JobListOk::Ok(Json(JobListResponse {
            data: JobList { jobs: found.into_iter().map(Job::from).collect() },
            meta: JobsMeta { limit: limit.0, next_cursor: next.into() },
        })))
    }

    /// Get an enrichment job
    ///
    /// The job's status and counts. A job of another workspace is `404`. Requires
    /// `write:enrich`.
    #[oai(path = "/v1/enrich/jobs/:id", method = "get", operation_id = "get_enrichment_job")]
    async fn get(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The job's `id` (`job_…`).
        id: Path<String>,
    ) -> Result<JobOk, JobFailure> {
        let job = jobs::get(&state.db, &auth.0.scope, &id.0).await.map_err(ApiError::from)?;
        Ok(JobOk::Ok(Json(JobResponse { data: job.into() })))
    }

    /// Cancel an enrichment job
    ///
    /// Stops the items not started yet: they are never charged, and get no result. The
    /// items in flight finish (and are charged if they succeed), so the counts may still
    /// move for a few seconds. Cancelling a finished job changes nothing. Requires
    /// `write:enrich`.
    #[oai(path = "/v1/enrich/jobs/:id/cancel", method = "post", operation_id = "cancel_enrichment_job")]
    async fn cancel(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The job's `id` (`job_…`).
        id: Path<String>,
    ) -> Result<JobOk, JobFailure> {
        let retention = std::time::Duration::from_secs(state.job_retention_days * 86_400);
        let job = jobs::cancel(&state.db, &auth.0.scope, &id.0, retention, crate::now_ms()).await.map_err(ApiError::from)?;
        Ok(JobOk::Ok(Json(JobResponse { data: job.into() })))
    }

    /// Read an enrichment job's results
    ///
    /// The results of the job's items done so far, in item order, in the bulk result
    /// shape, a page at a time: pass `meta.next_cursor` as `starting_after` for the next
    /// page. An item's error carries the job's id as its `request_id`. Requires
    /// `write:enrich`.
    #[oai(path = "/v1/enrich/jobs/:id/results", method = "get", operation_id = "get_enrichment_job_results")]
    #[allow(clippy::too_many_arguments)]
    async fn results(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        req: &Request,
        /// The job's `id` (`job_…`).
        id: Path<String>,
        /// Results per page (JSON).
        #[oai(default = "default_results_limit", validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<u32>,
        /// The `index` of the last result of the previous page (its `meta.next_cursor`).
        #[oai(validator(pattern = "^[0-9]{1,5}$"))]
        starting_after: Query<Option<String>>,
    ) -> Result<JobResultsOk, JobResultsFailure> {
        let after = match starting_after.0 {
            None => None,
            Some(s) => {
                Some(s.parse::<i32>().map_err(|_| ApiError::validation(vec![FieldError::new("starting_after", "is not an item index")]))?)
            }
        };
        let ws = auth.0.scope.clone();
        let accept = req.headers().get(poem::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let wants = |media: &str| accept.split(',').any(|m| m.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(media)));
        if wants("text/csv") || wants("application/x-ndjson") {
            jobs::get(&state.db, &ws, &id.0).await.map_err(ApiError::from)?;
            let csv = wants("text/csv");
            let body = stream_results(state.db.clone(), ws, id.0.clone(), after, if csv { csv_rows } else { ndjson_rows });
            let content = if csv { JobResultsContent::Csv(CsvStream(body)) } else { JobResultsContent::Ndjson(NdjsonStream(body)) };
            return Ok(JobResultsOk::Ok(content));
        }
        let (rows, next) = jobs::result_rows(&state.db, &ws, &id.0, u64::from(limit.0), after).await.map_err(ApiError::from)?;
        let results = rows.iter().map(|r| super::bulk::item_result(r.idx as u32, &r.result, &id.0)).collect();
        Ok(JobResultsOk::Ok(JobResultsContent::Json(Json(JobResultsResponse {
            data: JobResults { results },
            meta: JobsMeta { limit: limit.0, next_cursor: next.map(|n| n.to_string()).into() },
        }))))
    }
}

/// Rows read per step of a streamed download.
const STREAM_PAGE: u64 = 500;

/// Renders a page of results (`first`: the download's first page).
type Render = fn(&[ResultRow], &str, bool) -> Vec<u8>;

/// Every result of a job from `after` on, read a page at a time as the client takes them.
fn stream_results(db: sea_orm::DatabaseConnection, ws: crate::scope::Scope, id: String, after: Option<i32>, render: Render) -> poem::Body {
    struct At {
        after: Option<i32>,
        first: bool,
        done: bool,
    }
    let stream = futures_util::stream::unfold(At { after, first: true, done: false }, move |at| {
        let (db, ws, id) = (db.clone(), ws.clone(), id.clone());
        async move {
            if at.done {
                return None;
            }
            match jobs::result_rows(&db, &ws, &id, STREAM_PAGE, at.after).await {
                Ok((rows, next)) => {
                    let bytes = render(&rows, &id, at.first);
                    let after = rows.last().map(|r| r.idx).or(at.after);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)), At { after, first: false, done: next.is_none() }))
                }
                Err(err) => {
                    // The status line is sent: the download ends short, which the client sees.
                    tracing::error!(error = %err, job = %id, "streaming a job's results failed");
                    Some((Err(std::io::Error::other(err.to_string())), At { after: at.after, first: false, done: true }))
                }
            }
        }
    });
    poem::Body::from_bytes_stream(stream)
}

/// The CSV columns of a result row.
const CSV_COLUMNS: [&str; 27] = [
    "index",
    "email",
    "domain",
    "reference",
    "status",
    "source",
    "confidence",
    "person_full_name",
    "person_first_name",
    "person_last_name",
    "person_job_title",
    "person_seniority",
    "person_location",
    "person_linkedin_url",
    "company_name",
    "company_domain",
    "company_industry",
    "company_size",
    "company_founded_year",
    "company_description",
    "company_linkedin_url",
    "company_hq_location",
    "social_twitter",
    "social_github",
    "social_facebook",
    "error_code",
    "error_message",
];

fn csv_rows(rows: &[ResultRow], job_id: &str, first: bool) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    if first {
        out.write_record(CSV_COLUMNS).expect("writing to memory");
    }
    for row in rows {
        let r = super::bulk::item_result(row.idx as u32, &row.result, job_id);
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let (p, c, s) = match &r.data {
            Some(d) => (d.person.clone().unwrap_or_default(), d.company.clone().unwrap_or_default(), d.social.clone().unwrap_or_default()),
            None => Default::default(),
        };
        let source = r
            .data
            .as_ref()
            .and_then(|d| poem_openapi::types::ToJSON::to_json(&d.source))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let record: [String; 27] = [
            r.index.to_string(),
            text(&row.email),
            text(&row.domain),
            text(&r.reference.0),
            r.status.to_string(),
            source,
            r.data.as_ref().map(|d| d.confidence.to_string()).unwrap_or_default(),
            text(&p.full_name),
            text(&p.first_name),
            text(&p.last_name),
            text(&p.job_title),
            text(&p.seniority),
            text(&p.location),
            text(&p.linkedin_url),
            text(&c.name),
            text(&c.domain),
            text(&c.industry),
            text(&c.size),
            c.founded_year.map(|y| y.to_string()).unwrap_or_default(),
            text(&c.description),
            text(&c.linkedin_url),
            text(&c.hq_location),
            text(&s.twitter),
            text(&s.github),
            text(&s.facebook),
            r.error.as_ref().map(|e| e.code.as_str().to_string()).unwrap_or_default(),
            r.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
        ];
        out.write_record(record.iter().map(|cell| spreadsheet_safe(cell).into_owned())).expect("writing to memory");
    }
    out.into_inner().expect("writing to memory")
}

/// A cell as a spreadsheet shows it and never runs it: a cell beginning with `=`, `+`,
/// `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google
/// Sheets (OWASP "CSV injection"), so it gets a leading `'`, which they show as text.
/// Every cell of a results CSV goes through here: inputs, references and vendor data
/// alike are someone else's text.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

fn ndjson_rows(rows: &[ResultRow], job_id: &str, _first: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        let r = super::bulk::item_result(row.idx as u32, &row.result, job_id);
        let value = poem_openapi::types::ToJSON::to_json(&r).unwrap_or_default();
        serde_json::to_writer(&mut out, &value).expect("writing to memory");
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod csv_safety_tests {
    #[test]
    fn formulas_are_shown_as_text_and_plain_cells_untouched() {
        for cell in ["=1+2", "+SUM(A1:A2)", "-2+3", "@cmd", "\t=1", "\r=1", "=HYPERLINK(\"http://x\")"] {
            assert_eq!(super::spreadsheet_safe(cell), format!("'{cell}"));
        }
        for cell in ["", "jane@acme.com", "crm 1", "0.9", "Acme = Corp", "'quoted"] {
            assert_eq!(super::spreadsheet_safe(cell), cell);
        }
    }
}
