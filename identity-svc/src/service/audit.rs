//! `medins.identity.v1.AccessHistoryService`: a person reads who accessed their data.

use medins_common::{
    ApiError, Reason,
    convert::{from_timestamp, timestamp},
    error::require_uuid,
    validate,
};
use medins_proto::identity::v1::{
    AccessRecord, ListMyAccessHistoryRequest, ListMyAccessHistoryResponse,
    access_history_service_server::AccessHistoryService,
};
use tonic::{Request, Response, Status};

use super::{SharedState, access::CallAccess};
use crate::domain::{
    access_history::{Position, Source, merge},
    link::{decode_page_token, encode_page_token},
};

fn record(partner_id: String, method: String, outcome: String, recorded_at: chrono::NaiveDateTime) -> AccessRecord {
    AccessRecord { partner_id, method, outcome, recorded_at: Some(timestamp(recorded_at)) }
}

/// Page-token kind of ListMyAccessHistory.
const HISTORY_PAGE: &str = "audit";

/// The AccessHistoryService implementation.
pub struct AccessHistoryApi {
    state: SharedState,
}

impl AccessHistoryApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl AccessHistoryService for AccessHistoryApi {
    async fn list_my_access_history(
        &self,
        request: Request<ListMyAccessHistoryRequest>,
    ) -> Result<Response<ListMyAccessHistoryResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let result: Result<_, Status> = async {
            let limit = validate::IDENTITY_LISTS.check("page_size", body.page_size)? as i64;
            let cursor = decode_page_token("page_token", HISTORY_PAGE, &body.page_token)?
                .map(|cursor| {
                    Position::from_cursor(&cursor).ok_or_else(|| {
                        ApiError::invalid_field(
                            Reason::InvalidArgument,
                            "page_token",
                            "is not a token this list returned",
                        )
                    })
                })
                .transpose()?;
            // The person's own token, or an operator (domain::access).
            access.decide_for(person_id)?;
            let mut records: Vec<(Position, AccessRecord)> = self
                .state
                .audit
                .history_by_time(person_id, cursor.map(|c| c.before_in(Source::Identity)), limit + 1)
                .await?
                .into_iter()
                .map(|entry| {
                    let position =
                        Position { recorded_at: entry.recorded_at, source: Source::Identity, seq: entry.seq };
                    (position, record(entry.partner_id, entry.method, entry.outcome, entry.recorded_at))
                })
                .collect();
            if let Some(insurance) = &self.state.insurance {
                // Both halves or nothing: a history silently missing insurance-svc's records would
                // tell the person nobody read their account.
                let remote = insurance
                    .list_person_accesses(person_id, cursor.map(|c| c.before_in(Source::Insurance)), (limit + 1) as i32)
                    .await
                    .map_err(|status| {
                        tracing::warn!(code = ?status.code(), "insurance-svc access records unavailable");
                        ApiError::of(
                            Reason::DependencyUnavailable,
                            "insurance-svc's half of the access history is unavailable, retry later",
                        )
                    })?;
                for access in remote {
                    let recorded_at = access
                        .recorded_at
                        .as_ref()
                        .and_then(from_timestamp)
                        .ok_or_else(|| ApiError::internal("insurance-svc sent an access record without a time"))?
                        .naive_utc();
                    let position = Position { recorded_at, source: Source::Insurance, seq: access.seq };
                    records.push((position, record(access.partner_id, access.method, access.outcome, recorded_at)));
                }
            }
            let (page, more) = merge(records, limit as usize);
            let next_page_token = match page.last() {
                Some((last, _)) if more => encode_page_token(HISTORY_PAGE, &last.to_cursor()),
                _ => String::new(),
            };
            Ok(Response::new(ListMyAccessHistoryResponse {
                records: page.into_iter().map(|(_, record)| record).collect(),
                next_page_token,
            }))
        }
        .await;
        // Recorded after the listing, so a page never contains the call that read it.
        access.record(&self.state, person_id, &result).await;
        result
    }
}
