//! Person tokens in insurance-svc (docs/architecture.md#who-may-call-what): verified offline with
//! identity-svc's public keys, fetched with `PersonTokenService/GetPublicKeys`.
//!
//! The keys are fetched in the background at start (retried with backoff while identity-svc is
//! down: insurance-svc starts and serves everything else meanwhile) and every
//! `--person-token-keys-refresh`. A token signed with a key id the verifier does not know (a
//! rotation newer than the last refresh) triggers one refresh on demand, at most once per
//! `--person-token-keys-min-refresh` whatever the number of such calls, then one retry. If the
//! keys cannot be fetched, such a call fails UNAVAILABLE / DEPENDENCY_UNAVAILABLE (retryable),
//! not PERSON_TOKEN_INVALID.

use std::{sync::Arc, time::Duration};

use medins_common::{
    ApiError, ApiResult, Reason,
    clock::SharedClock,
    convert::from_timestamp,
    revocation::{REVOCATION_MAX_STALENESS, REVOCATION_REFRESH_INTERVAL, Revocation, revocation_window},
    token::{
        ListedKey, PersonClaims, PersonTokenVerifier, authorize_request_person, request_person_claims,
        unverified_key_id,
    },
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::clients::identity::IdentityClient;

/// The verifier and how it stays current.
pub struct PersonTokenKeys {
    verifier: PersonTokenVerifier,
    identity: IdentityClient,
    clock: SharedClock,
    min_interval: Duration,
    /// The last on-demand refresh: when, and whether it worked.
    on_demand: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for PersonTokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonTokenKeys").field("verifier", &self.verifier).finish_non_exhaustive()
    }
}

impl PersonTokenKeys {
    /// No keys yet; [`PersonTokenKeys::spawn_refresher`] fetches them. No revocations either:
    /// until [`PersonTokenKeys::spawn_revocation_refresher`] has read them once, every token is
    /// refused UNAVAILABLE (fail closed, see `medins_common::revocation`).
    pub fn new(identity: IdentityClient, clock: SharedClock, min_interval: Duration) -> PersonTokenKeys {
        let verifier = PersonTokenVerifier::new(Vec::new());
        verifier.revocations().require_refresh_within(REVOCATION_MAX_STALENESS);
        PersonTokenKeys { verifier, identity, clock, min_interval, on_demand: tokio::sync::Mutex::new(None) }
    }

    /// The verifier (tests, metrics).
    pub fn verifier(&self) -> &PersonTokenVerifier {
        &self.verifier
    }

    /// Fetches the listed keys from identity-svc and puts them in force; returns how many.
    pub async fn refresh(&self) -> ApiResult<usize> {
        let keys: Vec<ListedKey> = self
            .identity
            .get_public_keys()
            .await?
            .into_iter()
            .filter_map(|key| {
                let not_after = key.not_after.as_ref().and_then(from_timestamp);
                ListedKey::from_base64url(&key.key_id, &key.public_key, not_after)
            })
            .collect();
        let count = keys.len();
        self.verifier.replace_keys(keys);
        Ok(count)
    }

    /// Replaces the revocations with identity-svc's list of the last token lifetime; returns
    /// how many.
    pub async fn refresh_revocations(&self) -> ApiResult<usize> {
        let began = std::time::Instant::now();
        let oldest = (self.clock.now() - revocation_window()).timestamp_millis();
        let revocations: Vec<Revocation> = self
            .identity
            .list_token_revocations()
            .await?
            .into_iter()
            .filter_map(|revocation| {
                let revoked_at = revocation.revoked_at.as_ref().and_then(from_timestamp)?;
                Some(Revocation {
                    person_id: Uuid::parse_str(&revocation.person_id).ok()?,
                    partner_id: Some(revocation.partner_id).filter(|partner| !partner.is_empty()),
                    revoked_at_ms: revoked_at.timestamp_millis(),
                })
            })
            .filter(|revocation| revocation.revoked_at_ms >= oldest)
            .collect();
        let count = revocations.len();
        self.verifier.revocations().replace(revocations, began);
        Ok(count)
    }

    /// Refreshes the revocations every second until the task is aborted. Failures are logged
    /// (once per outage); after a few seconds without a refresh tokens are refused UNAVAILABLE.
    pub fn spawn_revocation_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match keys.refresh_revocations().await {
                    Ok(_) => {
                        if failing {
                            tracing::info!("person-token revocations refreshed again");
                        }
                        failing = false;
                    }
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "person-token revocations not refreshed; tokens are refused after a few seconds");
                        }
                        failing = true;
                    }
                }
                tokio::time::sleep(REVOCATION_REFRESH_INTERVAL).await;
            }
        })
    }

    /// Refreshes at start (retrying with backoff, 100 ms doubling to 30 s, while identity-svc is
    /// unreachable) and then every `every`, until the task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match keys.refresh().await {
                    Ok(count) => {
                        tracing::debug!(count, "person-token keys refreshed");
                        backoff = Duration::from_millis(100);
                        tokio::time::sleep(every).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "person-token keys not refreshed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
    }

    /// The claims of the call's person token without checking whom it names (`None` for OPS and
    /// SERVICE callers), refreshing the keys once if the token names an unknown key. A revoked
    /// token, or one below the assurance level the called RPC needs, is refused here
    /// (`medins_common::token::request_person_claims`).
    pub async fn claims<T>(&self, request: &tonic::Request<T>) -> ApiResult<Option<PersonClaims>> {
        let metadata = request.metadata();
        let check = || request_person_claims(&self.verifier, request, self.clock.now());
        match check() {
            Err(error) if error.reason() == Reason::PersonTokenInvalid => {
                let Some(kid) = unverified_key_id(metadata).filter(|kid| !self.verifier.knows_key(kid)) else {
                    return Err(error);
                };
                self.refresh_on_demand(&kid).await?;
                check()
            }
            other => other,
        }
    }

    /// Checks that the call may act for `person_id` (`medins_common::token::authorize_person`,
    /// with the refresh of [`PersonTokenKeys::claims`]).
    pub async fn authorize<T>(&self, request: &tonic::Request<T>, person_id: Uuid) -> ApiResult<Option<PersonClaims>> {
        let claims = self.claims(request).await?;
        if let Some(claims) = &claims
            && claims.person_id != person_id
        {
            // The same answer as the shared rule gives.
            return authorize_request_person(&self.verifier, request, person_id, self.clock.now());
        }
        Ok(claims)
    }

    /// One refresh for an unknown `kid`, at most once per `min_interval` however many calls ask.
    /// Fails UNAVAILABLE when the keys cannot be fetched.
    async fn refresh_on_demand(&self, kid: &str) -> ApiResult<()> {
        let mut last = self.on_demand.lock().await;
        if self.verifier.knows_key(kid) {
            // Another call refreshed while this one waited.
            return Ok(());
        }
        if let Some((at, worked)) = *last
            && at.elapsed() < self.min_interval
        {
            return if worked { Ok(()) } else { Err(keys_unavailable()) };
        }
        let result = self.refresh().await;
        *last = Some((Instant::now(), result.is_ok()));
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "person-token keys not refreshed on demand");
                Err(keys_unavailable())
            }
        }
    }
}

fn keys_unavailable() -> ApiError {
    ApiError::of(
        Reason::DependencyUnavailable,
        "person-token keys cannot be fetched from identity-svc now, retry later",
    )
}
