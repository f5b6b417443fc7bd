//! Person tokens in identity-svc (docs/architecture.md#who-may-call-what): the signing key ring
//! loaded from the key file and kept current (its verifier checks the tokens `service::access`
//! reads), and `medins.identity.v1.PersonTokenService` (IssuePersonToken, GetPublicKeys,
//! ListTokenRevocations).
//!
//! Key rotation reaches a running server without a signal: the key file is re-read when its
//! modification time, size or inode changes (`medins keys rotate` replaces it atomically), checked
//! every `--token-keys-check-interval`. A file that fails to load is logged and the previous keys
//! stay in force. This works the same for every replica that mounts the file, which a SIGHUP to
//! one process would not.

use std::{path::Path, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use medins_common::{
    ApiResult,
    assurance::AssuranceLevel,
    auth::Caller,
    convert::timestamp,
    error::require_uuid,
    keyring::WatchedKeyRing,
    revocation::issue_time_after,
    token::{
        IssuedToken, ListedKey, PERSON_TOKEN_ALG, PersonTokenVerifier, TOKEN_KEY_RING, TokenKeyFileError, TokenKeyRing,
        sign_person_token,
    },
};
use medins_proto::identity::v1::{
    AssuranceLevel as AssuranceLevelMessage, GetPublicKeysRequest, GetPublicKeysResponse, IssuePersonTokenRequest,
    IssuePersonTokenResponse, ListTokenRevocationsRequest, ListTokenRevocationsResponse, PublicKey, TokenRevocation,
    person_token_service_server::PersonTokenService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{SharedState, access::CallAccess};
use crate::{
    domain::{access::Facts, assurance::decide_token_issue},
    store::revocation::RevocationStore,
};

/// The person-token keys of identity-svc: the ring that signs (re-read when its file changes),
/// and a verifier over its listed public keys.
#[derive(Debug)]
pub struct PersonTokens {
    keys: WatchedKeyRing,
    verifier: PersonTokenVerifier,
}

impl PersonTokens {
    /// Loads the key file at `path`.
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<PersonTokens, TokenKeyFileError> {
        Ok(PersonTokens::over(WatchedKeyRing::load(TOKEN_KEY_RING, path)?, now))
    }

    /// Keys from memory, never reloaded (tests, embedding).
    pub fn from_ring(ring: TokenKeyRing, now: DateTime<Utc>) -> PersonTokens {
        PersonTokens::over(WatchedKeyRing::from_ring(ring.into_inner()), now)
    }

    fn over(keys: WatchedKeyRing, now: DateTime<Utc>) -> PersonTokens {
        let verifier = PersonTokenVerifier::new(keys.ring().listed_keys(now));
        PersonTokens { keys, verifier }
    }

    /// The verifier over the listed keys.
    pub fn verifier(&self) -> &PersonTokenVerifier {
        &self.verifier
    }

    /// Signs a level-1 token issued now with the current key.
    pub fn issue(&self, person_id: Uuid, partner_id: &str, now: DateTime<Utc>) -> IssuedToken {
        self.issue_at_level(person_id, partner_id, AssuranceLevel::RealName, now.timestamp_millis())
    }

    /// Signs a token of `level` issued at `issued_at_ms` with the current key.
    pub fn issue_at_level(
        &self,
        person_id: Uuid,
        partner_id: &str,
        level: AssuranceLevel,
        issued_at_ms: i64,
    ) -> IssuedToken {
        sign_person_token(&self.keys.ring(), person_id, partner_id, level, issued_at_ms)
    }

    /// The keys verifiers must know now.
    pub fn listed_keys(&self, now: DateTime<Utc>) -> Vec<ListedKey> {
        self.keys.ring().listed_keys(now)
    }

    /// Re-reads the key file if it changed on disk; true if new keys were loaded. Also drops
    /// keys whose listing ended from the verifier. On error the previous keys stay in force.
    pub fn reload_if_changed(&self, now: DateTime<Utc>) -> Result<bool, TokenKeyFileError> {
        let reloaded = self.keys.reload_if_changed();
        if matches!(reloaded, Ok(true)) {
            tracing::info!(current_kid = self.keys.ring().current_kid(), "person-token keys reloaded");
        }
        // Also after a failed reload: keys whose listing ended leave the verifier on time.
        let listed = self.listed_keys(now);
        let mut listed_ids: Vec<String> = listed.iter().map(|k| k.kid.clone()).collect();
        listed_ids.sort();
        if matches!(reloaded, Ok(true)) || listed_ids != self.verifier.key_ids() {
            self.verifier.replace_keys(listed);
        }
        reloaded
    }

    /// Checks the key file every `interval` until the task is aborted.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        clock: medins_common::clock::SharedClock,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let tokens = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = tokens.reload_if_changed(clock.now()) {
                    tracing::warn!(%error, "person-token key file not reloaded; previous keys stay in force");
                }
            }
        })
    }
}

/// The PersonTokenService implementation.
pub struct PersonTokenApi {
    state: SharedState,
}

impl PersonTokenApi {
    /// Handlers over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }

    async fn issue(&self, access: &CallAccess, person_id: Uuid) -> ApiResult<IssuePersonTokenResponse> {
        let state = &self.state;
        let partner_id = access.caller.id.as_str();
        // The link is the standing (domain::access): a partner with none learns only that, the
        // same for an existing and a missing person, before anything about the person is read.
        let linked = state.links.has_live_link(partner_id, person_id).await?;
        access.decide(&Facts { linked, ..access.facts(Some(person_id))? })?;
        let facts = state.assurance.issue_facts(person_id, partner_id).await?;
        let level = decide_token_issue(facts.decision)?;
        // Never at or before a revocation this partner's tokens for the person are subject to:
        // a token issued after a re-link must not die by the unlink that preceded it.
        let issued_at_ms = issue_time_after(state.clock.now().timestamp_millis(), facts.latest_revocation_ms);
        let issued = state.person_tokens.issue_at_level(person_id, partner_id, level, issued_at_ms);
        Ok(IssuePersonTokenResponse {
            expires_at: Some(timestamp(issued.expires_at().naive_utc())),
            key_id: issued.claims.key_id.clone(),
            token: issued.token,
            assurance_level: assurance_level_message(level) as i32,
        })
    }
}

#[tonic::async_trait]
impl PersonTokenService for PersonTokenApi {
    async fn issue_person_token(
        &self,
        request: Request<IssuePersonTokenRequest>,
    ) -> Result<Response<IssuePersonTokenResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        let person_id = require_uuid("person_id", &request.get_ref().person_id)?;
        let result = self.issue(&access, person_id).await.map(Response::new).map_err(Status::from);
        access.record(&self.state, person_id, &result).await;
        result
    }

    async fn get_public_keys(
        &self,
        request: Request<GetPublicKeysRequest>,
    ) -> Result<Response<GetPublicKeysResponse>, Status> {
        Caller::of(&request)?;
        let keys = self
            .state
            .person_tokens
            .listed_keys(self.state.clock.now())
            .into_iter()
            .map(|key| PublicKey {
                public_key: key.public_key_base64url(),
                algorithm: PERSON_TOKEN_ALG.to_owned(),
                not_after: key.not_after.map(|at| timestamp(at.naive_utc())),
                key_id: key.kid,
            })
            .collect();
        Ok(Response::new(GetPublicKeysResponse { keys }))
    }

    async fn list_token_revocations(
        &self,
        request: Request<ListTokenRevocationsRequest>,
    ) -> Result<Response<ListTokenRevocationsResponse>, Status> {
        let access = CallAccess::begin(&self.state, &request)?;
        // Medins services only (domain::access): it names person ids and partner ids.
        access.decide_by_kind()?;
        let since = RevocationStore::window_start(self.state.clock.now());
        let revocations = self
            .state
            .revocations
            .list_since(since)
            .await?
            .into_iter()
            .map(|revocation| TokenRevocation {
                person_id: revocation.person_id.to_string(),
                partner_id: revocation.partner_id.unwrap_or_default(),
                revoked_at: DateTime::from_timestamp_millis(revocation.revoked_at_ms)
                    .map(|at| timestamp(at.naive_utc())),
            })
            .collect();
        Ok(Response::new(ListTokenRevocationsResponse { revocations, since: Some(timestamp(since)) }))
    }
}

/// The protobuf spelling of a level.
pub fn assurance_level_message(level: AssuranceLevel) -> AssuranceLevelMessage {
    match level {
        AssuranceLevel::RealName => AssuranceLevelMessage::RealName,
        AssuranceLevel::RealNameAndFace => AssuranceLevelMessage::RealNameAndFace,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration as ChronoDuration;

    use super::*;

    #[test]
    fn a_rotated_key_file_is_picked_up_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("person-token-keys.toml");
        let now = Utc::now();
        let mut ring = TokenKeyRing::generate(now);
        ring.save_new(&path).unwrap();
        let tokens = PersonTokens::load(&path, now).unwrap();
        let old = tokens.issue(Uuid::now_v7(), "bank", now);
        assert!(!tokens.reload_if_changed(now).unwrap(), "unchanged file");

        let new_kid = ring.rotate(now);
        ring.save(&path).unwrap();
        assert!(tokens.reload_if_changed(now).unwrap());
        let new = tokens.issue(Uuid::now_v7(), "bank", now);
        assert_eq!(new.claims.key_id, new_kid);
        assert!(tokens.verifier().verify(&old.token, "bank", now).is_ok(), "the old key is still listed");
        assert!(tokens.verifier().verify(&new.token, "bank", now).is_ok());
        assert_eq!(tokens.listed_keys(now).len(), 2);

        std::fs::write(&path, "not a key file").unwrap();
        assert!(tokens.reload_if_changed(now).is_err());
        assert_eq!(tokens.issue(Uuid::now_v7(), "bank", now).claims.key_id, new_kid, "previous keys stay");

        // Once the old key's listing ends, the verifier forgets it on the next check.
        let later = now + ChronoDuration::minutes(16);
        let _ = tokens.reload_if_changed(later);
        assert_eq!(tokens.verifier().key_ids(), vec![new_kid]);
    }
}
