//! The insurance-svc client of the outbox worker: API key, trace context and the event id as
//! idempotency key on every call. It does not retry: the outbox owns retries (with backoff,
//! across restarts).

use medins_common::{
    convert::timestamp,
    peer::{Peer, PeerOptions, traced},
};
use medins_proto::insurance::v1::{
    FaceVerificationCompletedRequest, ListPersonAccessesRequest, PersonAccess, PersonSupersededRequest,
    identity_event_service_client::IdentityEventServiceClient, person_access_service_client::PersonAccessServiceClient,
};
use tonic::{Status, transport::Channel};

use crate::{
    service::face::{purpose_message, status_message},
    store::{outbox::OutboxEvent, person_outbox::PersonSupersededEvent},
};

const SERVICE: &str = "medins.insurance.v1.IdentityEventService";
const ACCESSES: &str = "medins.insurance.v1.PersonAccessService";

/// A cheap-to-clone client.
#[derive(Clone)]
pub struct InsuranceClient {
    peer: Peer,
    events: IdentityEventServiceClient<Channel>,
    accesses: PersonAccessServiceClient<Channel>,
}

impl InsuranceClient {
    /// A client that connects on first use (identity-svc starts while insurance-svc is down).
    pub fn connect_lazy(options: &PeerOptions) -> anyhow::Result<Self> {
        let peer = Peer::connect_lazy(options)?;
        Ok(Self {
            events: IdentityEventServiceClient::new(peer.channel()),
            accesses: PersonAccessServiceClient::new(peer.channel()),
            peer,
        })
    }

    /// Delivers one PersonSuperseded event; Ok(duplicate) once insurance-svc has applied it
    /// (now or before).
    pub async fn person_superseded(&self, event: &PersonSupersededEvent) -> Result<bool, Status> {
        traced(SERVICE, "PersonSuperseded", async {
            let mut request = self.peer.request(PersonSupersededRequest {
                event_id: event.id.to_string(),
                person_id: event.person_id.to_string(),
                superseded_by: event.superseded_by.to_string(),
                superseded_at: Some(timestamp(event.occurred_at)),
            });
            if let Ok(key) = event.id.to_string().parse() {
                request.metadata_mut().insert(medins_common::idempotency::IDEMPOTENCY_KEY_HEADER, key);
            }
            self.events.clone().person_superseded(request).await
        })
        .await
        .map(|response| response.into_inner().duplicate)
    }

    /// insurance-svc's audit records of a person, newest first, strictly before `before`
    /// (`recorded_at`, `seq`) when given (the merged access history,
    /// docs/architecture.md#who-may-call-what).
    pub async fn list_person_accesses(
        &self,
        person_id: uuid::Uuid,
        before: Option<(chrono::NaiveDateTime, i64)>,
        page_size: i32,
    ) -> Result<Vec<PersonAccess>, Status> {
        traced(ACCESSES, "ListPersonAccesses", async {
            let request = self.peer.request(ListPersonAccessesRequest {
                person_id: person_id.to_string(),
                page_size,
                before_recorded_at: before.map(|(at, _)| timestamp(at)),
                before_seq: before.map(|(_, seq)| seq).unwrap_or_default(),
            });
            self.accesses.clone().list_person_accesses(request).await
        })
        .await
        .map(|response| response.into_inner().records)
    }

    /// Delivers one event; Ok(duplicate) once insurance-svc has recorded it (now or before).
    pub async fn face_verification_completed(&self, event: &OutboxEvent) -> Result<bool, Status> {
        traced(SERVICE, "FaceVerificationCompleted", async {
            let mut request = self.peer.request(FaceVerificationCompletedRequest {
                event_id: event.id.to_string(),
                session_id: event.session_id.to_string(),
                person_id: event.person_id.to_string(),
                purpose: purpose_message(event.purpose) as i32,
                reference: event.reference.clone(),
                outcome: status_message(event.outcome) as i32,
                finished_at: Some(timestamp(event.finished_at)),
                sequence: i64::from(event.sequence),
            });
            if let Ok(key) = event.id.to_string().parse() {
                request.metadata_mut().insert(medins_common::idempotency::IDEMPOTENCY_KEY_HEADER, key);
            }
            self.events.clone().face_verification_completed(request).await
        })
        .await
        .map(|response| response.into_inner().duplicate)
    }
}
