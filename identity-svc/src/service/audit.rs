//! `medins.identity.v1.AccessHistoryService`: a person reads who accessed their data.

use medins_common::audit::outcome_of;
use medins_common::{ApiError, Reason, auth::Caller, convert::timestamp, error::require_uuid};
use medins_proto::identity::v1::{
    AccessRecord, ListMyAccessHistoryRequest, ListMyAccessHistoryResponse,
    access_history_service_server::AccessHistoryService,
};
use tonic::{Request, Response, Status};

use super::{SharedState, person_token::authorize_person};
use crate::domain::link::{decode_page_token, encode_page_token, page_size};

/// Audit method name of ListMyAccessHistory.
pub const LIST_MY_ACCESS_HISTORY: &str = "/medins.identity.v1.AccessHistoryService/ListMyAccessHistory";

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
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let result: Result<_, Status> = async {
            let limit = page_size("page_size", body.page_size)?;
            let before = decode_page_token("page_token", HISTORY_PAGE, &body.page_token)?
                .map(|cursor| cursor.parse::<i64>())
                .transpose()
                .map_err(|_| {
                    ApiError::invalid_field(Reason::InvalidArgument, "page_token", "is not a token this list returned")
                })?;
            authorize_person(&self.state, &request, person_id)?;
            let mut entries = self.state.audit.history(person_id, before, limit + 1).await?;
            let next_page_token = if entries.len() as i64 > limit {
                entries.truncate(limit as usize);
                entries.last().map(|last| encode_page_token(HISTORY_PAGE, &last.seq.to_string())).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(ListMyAccessHistoryResponse {
                records: entries
                    .into_iter()
                    .map(|entry| AccessRecord {
                        partner_id: entry.partner_id,
                        method: entry.method,
                        outcome: entry.outcome,
                        recorded_at: Some(timestamp(entry.recorded_at)),
                    })
                    .collect(),
                next_page_token,
            }))
        }
        .await;
        // Recorded after the listing, so a page never contains the call that read it.
        self.state.audit.record(&caller.id, LIST_MY_ACCESS_HISTORY, person_id, outcome_of(&result)).await;
        result
    }
}
