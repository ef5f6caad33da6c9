//! `/v1/suppressions`: a workspace's own do-not-enrich list (permission `admin:privacy`):
//! add an email address or a whole domain, list, remove. The contract and thin handlers
//! over [`crate::privacy`]; entries are stored as keyed hashes and shown masked.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
    Enum, Object, OpenApi,
};

use super::alternatives::{one_object, Rule};
use super::error::ApiError;
use super::fields::{not_null, DomainInput, EmailInput, Nullable};
use super::responses::{failures, successes};
use super::security::ApiKeyAuth;
use super::{ApiTags, AppState};
use crate::privacy::{DataSubject, SuppressionView};

/// What to suppress: exactly one of `email` and `domain`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct SuppressionFields {
    /// An email address never to look up (normalised as on `POST /v1/email/enrich`).
    #[oai(validator(min_length = 1, max_length = 254))]
    pub email: MaybeUndefined<EmailInput>,
    /// A domain none of whose addresses, nor the company itself, is looked up (a URL is
    /// read as its domain).
    #[oai(validator(min_length = 1, max_length = 2048))]
    pub domain: MaybeUndefined<DomainInput>,
}

/// The suppression request body: [`SuppressionFields`] published as one object
/// `SuppressionRequest` whose schema requires exactly one of `email` and `domain` (see
/// `super::alternatives`).
#[derive(Debug, Clone)]
pub struct SuppressionRequest(pub SuppressionFields);

one_object!(SuppressionRequest(SuppressionFields), "SuppressionRequest", Rule::ExactlyOne, ["email", "domain"]);

/// What an entry suppresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SuppressionType {
    /// One email address.
    Email,
    /// A whole domain: its addresses and the company.
    Domain,
}

/// An entry of the workspace's do-not-enrich list.
#[derive(Debug, Clone, Object)]
pub struct Suppression {
    /// `sup_` followed by 32 hex digits.
    pub id: String,
    #[oai(rename = "type")]
    pub kind: SuppressionType,
    /// The subject, masked (`j***@acme.com`; a domain as it is): the list keeps only a
    /// keyed hash of it.
    pub hint: String,
    pub created_at: DateTime<Utc>,
}

impl From<SuppressionView> for Suppression {
    fn from(v: SuppressionView) -> Self {
        Self {
            id: v.id,
            kind: if v.kind == "domain" { SuppressionType::Domain } else { SuppressionType::Email },
            hint: v.hint,
            created_at: crate::time::at(v.created_at),
        }
    }
}

/// One entry.
#[derive(Debug, Clone, Object)]
pub struct SuppressionResponse {
    pub data: Suppression,
}

#[derive(Debug, Clone, Object)]
pub struct SuppressionList {
    pub suppressions: Vec<Suppression>,
}

#[derive(Debug, Clone, Object)]
pub struct SuppressionsMeta {
    pub limit: u32,
    /// Pass as `starting_after` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A page of the workspace's list, oldest first.
#[derive(Debug, Clone, Object)]
pub struct SuppressionListResponse {
    pub data: SuppressionList,
    pub meta: SuppressionsMeta,
}

successes! {
    /// The subject is on the list.
    pub enum AddSuppressionOk {
        /// Added.
        201 => Created(Json<SuppressionResponse>),
        /// It already was: the existing entry.
        200 => Existing(Json<SuppressionResponse>),
    }
}

failures! {
    /// Every way adding to the list can fail. Nothing changes.
    pub enum AddSuppressionFailure {
        /// `validation_error`: not exactly one of `email` and `domain`, or a malformed one.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        /// `payload_too_large`: the body is over 16 KiB.
        413 => PayloadTooLarge,
        /// `unsupported_media_type`: the body is not JSON.
        415 => UnsupportedMediaType,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

successes! {
    /// A page of the list.
    pub enum ListSuppressionsOk {
        /// The workspace's entries, oldest first.
        200 => Ok(Json<SuppressionListResponse>),
    }
}

failures! {
    /// Every way listing can fail.
    pub enum ListSuppressionsFailure {
        /// `validation_error`: a parameter is malformed.
        400 => BadRequest,
        401 => Unauthorized,
        403 => Forbidden,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

successes! {
    /// The entry is gone.
    pub enum RemoveSuppressionOk {
        /// Removed: the subject may be looked up again (on every server within a second).
        204 => Removed,
    }
}

failures! {
    /// Every way removing can fail. Nothing changes.
    pub enum RemoveSuppressionFailure {
        401 => Unauthorized,
        403 => Forbidden,
        /// `not_found`: the workspace's list has no entry with this id.
        404 => NotFound,
        429 => TooManyRequests + u64,
        500 => InternalServerError,
        503 => ServiceUnavailable + u64,
    }
}

fn default_limit() -> u32 {
    25
}

pub struct PrivacyApi;

#[OpenApi(tag = "ApiTags::Privacy")]
impl PrivacyApi {
    /// Suppress an email address or a domain
    ///
    /// Puts a subject on the workspace's do-not-enrich list: from now on (on every server
    /// within a second) the workspace's calls, bulk items and job items for it answer
    /// `404 no_match`, free, and no vendor is asked. A domain covers every address at it,
    /// the company itself, and calls that name it as the person's company. The list keeps
    /// a keyed hash of the subject and shows it masked. Requires `admin:privacy`.
    #[oai(path = "/v1/suppressions", method = "post", operation_id = "create_suppression")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        body: Json<SuppressionRequest>,
    ) -> Result<AddSuppressionOk, AddSuppressionFailure> {
        let SuppressionRequest(fields) = body.0;
        let (email, domain) = (not_null("email", fields.email)?, not_null("domain", fields.domain)?);
        let subject = DataSubject::parse(email.as_ref().map(|e| e.0.as_str()), domain.as_ref().map(|d| d.0.as_str()))
            .map_err(ApiError::validation)?;
        let (entry, new) = state.suppressions.add_for_workspace(&auth.0.scope, &subject, crate::now_ms()).await.map_err(ApiError::from)?;
        let body = Json(SuppressionResponse { data: entry.into() });
        Ok(if new { AddSuppressionOk::Created(body) } else { AddSuppressionOk::Existing(body) })
    }

    /// List suppressions
    ///
    /// The workspace's do-not-enrich list, oldest first, a page at a time: pass
    /// `meta.next_cursor` as `starting_after` for the next page. Requires `admin:privacy`.
    #[oai(path = "/v1/suppressions", method = "get", operation_id = "list_suppressions")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// Entries per page.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<u32>,
        /// The `id` of the last entry of the previous page (its `meta.next_cursor`).
        #[oai(validator(pattern = "^sup_[0-9a-f]{32}$"))]
        starting_after: Query<Option<String>>,
    ) -> Result<ListSuppressionsOk, ListSuppressionsFailure> {
        let limit = limit.0;
        let (found, next_cursor) =
            state.suppressions.list(&auth.0.scope, starting_after.0.as_deref(), u64::from(limit)).await.map_err(ApiError::from)?;
        Ok(ListSuppressionsOk::Ok(Json(SuppressionListResponse {
            data: SuppressionList { suppressions: found.into_iter().map(Suppression::from).collect() },
            meta: SuppressionsMeta { limit, next_cursor: next_cursor.into() },
        })))
    }

    /// Remove a suppression
    ///
    /// Takes an entry off the workspace's list: the subject may be looked up again. An
    /// entry of another workspace is `404`, like one that does not exist. Requires
    /// `admin:privacy`.
    #[oai(path = "/v1/suppressions/:id", method = "delete", operation_id = "delete_suppression")]
    async fn remove(
        &self,
        auth: ApiKeyAuth,
        state: Data<&Arc<AppState>>,
        /// The entry's `id` (`sup_…`).
        id: Path<String>,
    ) -> Result<RemoveSuppressionOk, RemoveSuppressionFailure> {
        state.suppressions.remove(&auth.0.scope, &id.0).await.map_err(ApiError::from)?;
        Ok(RemoveSuppressionOk::Removed)
    }
}
