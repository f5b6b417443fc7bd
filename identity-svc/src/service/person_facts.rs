//! `medins.identity.v1.PersonFactsService`: facts for other medins services only (scope
//! `service`), never shown to partners.

use chrono::Datelike;
use medins_common::error::require_uuid;
use medins_proto::identity::v1::{
    self as pb, GetPersonFactsRequest, GetPersonFactsResponse, person_facts_service_server::PersonFactsService,
};
use tonic::{Request, Response, Status};

use super::{SharedState, access::CallAccess, person::person_not_found};

/// The PersonFactsService implementation.
pub struct PersonFactsApi {
    state: SharedState,
}

impl PersonFactsApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl PersonFactsService for PersonFactsApi {
    async fn get_person_facts(
        &self,
        request: Request<GetPersonFactsRequest>,
    ) -> Result<Response<GetPersonFactsResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let id = require_uuid("person_id", &request.get_ref().person_id)?;
        let result: Result<_, Status> = async {
            // Medins services only (domain::access), whatever scopes a partner was given.
            access.decide_for(id)?;
            let person = self.state.persons.find(id).await?.ok_or_else(person_not_found)?;
            let birth = person.birth_date;
            Ok(Response::new(GetPersonFactsResponse {
                person_id: person.id.to_string(),
                birth_date: Some(pb::Date { year: birth.year(), month: birth.month() as i32, day: birth.day() as i32 }),
            }))
        }
        .await;
        access.record(&self.state, id, &result).await;
        result
    }
}
