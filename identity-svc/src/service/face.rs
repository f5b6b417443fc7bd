//! `medins.identity.v1.FaceVerificationService`.
//!
//! Watchers learn of changes two ways: a per-process broadcast of changed session ids (sent
//! after each commit by handlers and the expiry sweeper of this process), and a database
//! re-read every `--face-watch-poll-interval` (1 s by default) for changes committed by another
//! replica. A watch stream ends once its session has ended or expired, so it lives at most the
//! session's 5 minutes plus one poll interval; it also ends when the client goes away.

use std::{pin::Pin, sync::Arc, time::Duration};

use chrono::NaiveDateTime;
use futures::Stream;
use medins_common::{
    ApiResult, Reason,
    convert::timestamp,
    error::{require_enum, require_uuid},
};
use medins_proto::identity::v1::{
    self as pb, GetFaceVerificationRequest, GetFaceVerificationResponse, StartFaceVerificationRequest,
    StartFaceVerificationResponse, SubmitFaceResultRequest, SubmitFaceResultResponse, WatchFaceVerificationRequest,
    WatchFaceVerificationResponse, face_verification_service_server::FaceVerificationService,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{SharedState, access::CallAccess};
use crate::{
    domain::access::Facts,
    domain::face::{
        FacePurpose, FaceSession, FaceStatus, Submission, Threshold, choose_provider, expired_error,
        liveness_challenge, session_binder, validate_provider_reference, validate_reference,
    },
    domain::partner::{acting_partner, parse_optional_partner_id},
    store::face::{FaceStore, NewFaceSession, ProviderCheck, SubmitResult, face_session_not_found},
};

/// What the face handlers, the expiry sweeper and the outbox worker of one process share.
pub struct FaceContext {
    /// Sessions.
    pub store: FaceStore,
    /// The similarity a submission must reach.
    pub threshold: Threshold,
    /// How often a watch re-reads its session (changes through other replicas).
    pub watch_poll_interval: Duration,
    changes: broadcast::Sender<Uuid>,
    outbox_wake: Arc<Notify>,
}

impl FaceContext {
    /// A context over `store`.
    pub fn new(store: FaceStore, threshold: Threshold, watch_poll_interval: Duration) -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self { store, threshold, watch_poll_interval, changes, outbox_wake: Arc::new(Notify::new()) }
    }

    /// Tells this process's watchers that a session changed, and wakes the outbox worker when
    /// the change wrote an event. Call after the commit.
    pub fn changed(&self, session_id: Uuid, outbox_written: bool) {
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(session_id);
        if outbox_written {
            self.outbox_wake.notify_one();
        }
    }

    /// Changed session ids, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.changes.subscribe()
    }

    /// Notified when an outbox event was written by this process.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        self.outbox_wake.clone()
    }
}

/// The FaceVerificationService implementation.
pub struct FaceApi {
    state: SharedState,
}

impl FaceApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    async fn session(&self, id: Uuid) -> ApiResult<FaceSession> {
        self.state.face.store.find(id).await?.ok_or_else(face_session_not_found)
    }
}

/// The wire form of a purpose.
pub fn purpose_message(purpose: FacePurpose) -> pb::FacePurpose {
    match purpose {
        FacePurpose::RealName => pb::FacePurpose::RealName,
        FacePurpose::VoucherActivation => pb::FacePurpose::VoucherActivation,
        FacePurpose::FamilyBinding => pb::FacePurpose::FamilyBinding,
        FacePurpose::CardApplication => pb::FacePurpose::CardApplication,
        FacePurpose::PhoneChange => pb::FacePurpose::PhoneChange,
    }
}

/// The wire form of a status.
pub fn status_message(status: FaceStatus) -> pb::FaceSessionStatus {
    match status {
        FaceStatus::Pending => pb::FaceSessionStatus::Pending,
        FaceStatus::Passed => pb::FaceSessionStatus::Passed,
        FaceStatus::Failed => pb::FaceSessionStatus::Failed,
        FaceStatus::Expired => pb::FaceSessionStatus::Expired,
    }
}

fn purpose_of(message: pb::FacePurpose) -> FacePurpose {
    match message {
        pb::FacePurpose::RealName => FacePurpose::RealName,
        pb::FacePurpose::VoucherActivation => FacePurpose::VoucherActivation,
        pb::FacePurpose::FamilyBinding => FacePurpose::FamilyBinding,
        pb::FacePurpose::CardApplication => FacePurpose::CardApplication,
        pb::FacePurpose::PhoneChange => FacePurpose::PhoneChange,
        pb::FacePurpose::Unspecified => unreachable!("require_enum refuses the zero value"),
    }
}

/// The wire form of a session as it stands at `now` (a PENDING session past its expiry shows
/// EXPIRED, ended at its expiry).
pub fn session_message(session: &FaceSession, now: NaiveDateTime) -> pb::FaceSession {
    let state = session.state();
    let status = state.effective_status(now);
    let finished_at = session.finished_at.or((status == FaceStatus::Expired).then_some(session.expires_at));
    pb::FaceSession {
        session_id: session.id.to_string(),
        person_id: session.person_id.to_string(),
        purpose: purpose_message(session.purpose) as i32,
        reference: session.reference.clone(),
        status: status_message(status) as i32,
        submissions: session.submissions,
        submissions_left: state.submissions_left(now),
        liveness_challenge: if status.is_final() { String::new() } else { session.challenge.clone() },
        created_at: Some(timestamp(session.created_at)),
        expires_at: Some(timestamp(session.expires_at)),
        finished_at: finished_at.map(timestamp),
        provider_id: session.bound_provider_id.clone(),
    }
}

/// A challenge from the operating system's CSPRNG.
fn new_challenge() -> String {
    loop {
        let random: [u8; 32] = medins_common::crypto::random_bytes();
        if let Some(challenge) = liveness_challenge(&random) {
            return challenge;
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchFaceVerificationResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FaceVerificationService for FaceApi {
    async fn start_face_verification(
        &self,
        request: Request<StartFaceVerificationRequest>,
    ) -> Result<Response<StartFaceVerificationResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let caller = &access.caller;
        let body = request.get_ref();
        let person_id = require_uuid("person_id", &body.person_id)?;
        let purpose = purpose_of(require_enum::<pb::FacePurpose>("purpose", body.purpose)?);
        let reference = validate_reference("reference", &body.reference)?;
        let named_provider = parse_optional_partner_id("provider_id", &body.provider_id)?;
        let on_behalf_of = parse_optional_partner_id("on_behalf_of_partner_id", &body.on_behalf_of_partner_id)?;
        let named_binder = match body.binder_person_id.trim() {
            "" => None,
            raw => Some(require_uuid("binder_person_id", raw)?),
        };
        let state = &self.state;
        let result: Result<_, Status> = async {
            // The person's own token, operators and services; a front door, without a token,
            // for a phone change (domain::access). Only a service names the partner it acts for
            // and the binding's binder.
            let facts =
                Facts { phone_change_starter: purpose == FacePurpose::PhoneChange, ..access.facts(Some(person_id))? };
            let standing = access.decide(&facts)?;
            let acting = acting_partner("on_behalf_of_partner_id", &caller.id, standing, on_behalf_of)?;
            let binder = session_binder("binder_person_id", standing, purpose, person_id, named_binder)?;
            // A superseded claim is no person: no session for it (its row still exists).
            state.persons.find(person_id).await?.ok_or_else(super::person::person_not_found)?;
            let configured = state.partners.get(&acting).and_then(|partner| partner.face_provider.clone());
            let provider = choose_provider(
                "provider_id",
                named_provider.as_deref(),
                configured.as_deref(),
                &state.partners.face_providers(),
            )?;
            state
                .idempotency
                .run(&caller.id, "StartFaceVerification", request.metadata(), body, || async {
                    let now = state.clock.stored_now();
                    let new = NewFaceSession {
                        person_id,
                        purpose,
                        reference,
                        partner_id: caller.id.clone(),
                        bound_provider_id: provider.clone(),
                        challenge: new_challenge(),
                        binder_person_id: binder,
                    };
                    let session = state.face.store.create(new, now).await?;
                    tracing::info!(
                        session_id = %session.id,
                        %person_id,
                        purpose = purpose.as_str(),
                        partner = %caller.id,
                        provider = %provider,
                        "face session started"
                    );
                    Ok(StartFaceVerificationResponse {
                        session: Some(session_message(&session, now)),
                        liveness_challenge: session.challenge.clone(),
                        expires_at: Some(timestamp(session.expires_at)),
                    })
                })
                .await
                .map(Response::new)
        }
        .await;
        access.record(state, person_id, &result).await;
        result
    }

    async fn submit_face_result(
        &self,
        request: Request<SubmitFaceResultRequest>,
    ) -> Result<Response<SubmitFaceResultResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        // The scope alone is not enough: only a certified provider may decide an outcome
        // (domain::access); which provider, is the session's own rule (`store::face`).
        access.decide_by_kind()?;
        let caller = &access.caller;
        let body = request.get_ref();
        let session_id = require_uuid("session_id", &body.session_id)?;
        let submission = Submission::new(body.liveness_passed, body.similarity)?;
        let provider_reference = validate_provider_reference("provider_reference", &body.provider_reference)?;
        let state = &self.state;
        // The subject person, for the audit trail.
        let person_id = self.session(session_id).await?.person_id;
        let result = state
            .idempotency
            .run(&caller.id, "SubmitFaceResult", request.metadata(), body, || async {
                let now = state.clock.stored_now();
                let check = ProviderCheck { provider_id: caller.id.clone(), provider_reference, submission };
                let submitted = state.face.store.submit(session_id, check, state.face.threshold, now).await;
                if let Err(error) = &submitted
                    && error.reason() == Reason::FaceProviderMismatch
                {
                    tracing::warn!(%session_id, partner = %caller.id, "face result refused: session bound to another provider");
                }
                match submitted? {
                    SubmitResult::Recorded { session, passed, outbox_written } => {
                        state.face.changed(session.id, outbox_written);
                        tracing::info!(
                            %session_id,
                            passed,
                            submissions = session.submissions,
                            status = session.status.as_str(),
                            partner = %caller.id,
                            "face result submitted"
                        );
                        Ok(SubmitFaceResultResponse { session: Some(session_message(&session, now)), passed })
                    }
                    SubmitResult::Expired { outbox_written } => {
                        state.face.changed(session_id, outbox_written);
                        tracing::info!(%session_id, partner = %caller.id, "face result refused: session expired");
                        Err(expired_error().into())
                    }
                }
            })
            .await
            .map(Response::new);
        access.record(state, person_id, &result).await;
        result
    }

    async fn get_face_verification(
        &self,
        request: Request<GetFaceVerificationRequest>,
    ) -> Result<Response<GetFaceVerificationResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let session_id = require_uuid("session_id", &request.get_ref().session_id)?;
        let session = self.state.face.store.find(session_id).await?;
        // The person, the binder the session names, the front door that started a phone-change
        // session, operators and services (domain::access). Anyone else gets the same answer
        // for this session as for one that does not exist.
        let decided = access.decide_session(&self.state, session.as_ref()).await;
        let Some(session) = session else {
            decided?;
            return Err(face_session_not_found().into());
        };
        let result: Result<_, Status> = decided
            .map(|_| {
                let now = self.state.clock.stored_now();
                Response::new(GetFaceVerificationResponse { session: Some(session_message(&session, now)) })
            })
            .map_err(Status::from);
        access.record(&self.state, session.person_id, &result).await;
        result
    }

    type WatchFaceVerificationStream = WatchStream;

    async fn watch_face_verification(
        &self,
        request: Request<WatchFaceVerificationRequest>,
    ) -> Result<Response<Self::WatchFaceVerificationStream>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let session_id = require_uuid("session_id", &request.get_ref().session_id)?;
        // Subscribe before the first read, so no change can fall between the two.
        let changes = self.state.face.subscribe();
        let session = self.state.face.store.find(session_id).await?;
        // As GetFaceVerification, without the phone-change starter (domain::access).
        let decided = access.decide_session(&self.state, session.as_ref()).await;
        let Some(session) = session else {
            decided?;
            return Err(face_session_not_found().into());
        };
        let authorized = decided.map_err(Status::from);
        access.record(&self.state, session.person_id, &authorized).await;
        authorized?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(watch_session(self.state.clone(), session, changes, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Feeds one watch stream: the state now, then each change, until the session has ended or
/// expired, or the client is gone.
async fn watch_session(
    state: SharedState,
    mut session: FaceSession,
    mut changes: broadcast::Receiver<Uuid>,
    tx: mpsc::Sender<Result<WatchFaceVerificationResponse, Status>>,
) {
    let mut last = session_message(&session, state.clock.stored_now());
    let mut poll = tokio::time::interval(state.face.watch_poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut pushed = true;
    loop {
        if tx.send(Ok(WatchFaceVerificationResponse { session: Some(last.clone()) })).await.is_err() {
            return;
        }
        if last.status != pb::FaceSessionStatus::Pending as i32 {
            return;
        }
        // Wait for a change worth sending.
        loop {
            tokio::select! {
                () = tx.closed() => return,
                _ = poll.tick() => {}
                received = changes.recv(), if pushed => match received {
                    Ok(id) if id != session.id => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // Cannot happen while the state (which holds the sender) lives; fall back
                    // to polling alone.
                    Err(broadcast::error::RecvError::Closed) => pushed = false,
                },
            }
            session = match state.face.store.find(session.id).await {
                Ok(Some(current)) => current,
                Ok(None) => {
                    let _ = tx.send(Err(face_session_not_found().into())).await;
                    return;
                }
                Err(error) => {
                    let _ = tx.send(Err(error.into())).await;
                    return;
                }
            };
            let current = session_message(&session, state.clock.stored_now());
            if current != last {
                last = current;
                break;
            }
        }
    }
}
