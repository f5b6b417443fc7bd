//! The insurance-svc client of the outbox worker: API key, trace context and the event id as
//! idempotency key on every call. It does not retry: the outbox owns retries (with backoff,
//! across restarts).

use std::time::Duration;

use medins_common::{
    convert::timestamp,
    telemetry::{client_span, inject_context},
};
use medins_proto::insurance::v1::{
    FaceVerificationCompletedRequest, identity_event_service_client::IdentityEventServiceClient,
};
use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};
use tracing::Instrument;

use crate::{
    service::face::{purpose_message, status_message},
    store::outbox::OutboxEvent,
};

const SERVICE: &str = "medins.insurance.v1.IdentityEventService";

/// How the client reaches insurance-svc.
#[derive(Clone)]
pub struct InsuranceClientOptions {
    /// Base URL, e.g. `http://127.0.0.1:50052`.
    pub url: String,
    /// The SERVICE partner key identity-svc presents.
    pub api_key: String,
    /// Per-call deadline.
    pub timeout: Duration,
}

impl std::fmt::Debug for InsuranceClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsuranceClientOptions").field("url", &self.url).finish_non_exhaustive()
    }
}

/// A cheap-to-clone client.
#[derive(Clone)]
pub struct InsuranceClient {
    events: IdentityEventServiceClient<Channel>,
    authorization: AsciiMetadataValue,
}

impl InsuranceClient {
    /// A client that connects on first use (identity-svc starts while insurance-svc is down).
    pub fn connect_lazy(options: &InsuranceClientOptions) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(options.url.clone())?
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(2)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let authorization = format!("Bearer {}", options.api_key)
            .parse()
            .map_err(|_| anyhow::anyhow!("the insurance-svc API key is not valid ASCII"))?;
        Ok(Self { events: IdentityEventServiceClient::new(channel), authorization })
    }

    /// Delivers one event; Ok(duplicate) once insurance-svc has recorded it (now or before).
    pub async fn face_verification_completed(&self, event: &OutboxEvent) -> Result<bool, Status> {
        let span = client_span(SERVICE, "FaceVerificationCompleted");
        async {
            let mut request = Request::new(FaceVerificationCompletedRequest {
                event_id: event.id.to_string(),
                session_id: event.session_id.to_string(),
                person_id: event.person_id.to_string(),
                purpose: purpose_message(event.purpose) as i32,
                reference: event.reference.clone(),
                outcome: status_message(event.outcome) as i32,
                finished_at: Some(timestamp(event.finished_at)),
                sequence: i64::from(event.sequence),
            });
            request.metadata_mut().insert("authorization", self.authorization.clone());
            if let Ok(key) = event.id.to_string().parse() {
                request.metadata_mut().insert(medins_common::idempotency::IDEMPOTENCY_KEY_HEADER, key);
            }
            inject_context(request.metadata_mut());
            let result = self.events.clone().face_verification_completed(request).await;
            let code = result.as_ref().map_or_else(|status| status.code() as i32, |_| 0);
            tracing::Span::current().record("rpc.grpc.status_code", code);
            result.map(|response| response.into_inner().duplicate)
        }
        .instrument(span)
        .await
    }
}
