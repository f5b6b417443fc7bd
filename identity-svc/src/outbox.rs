//! Delivery of face outcomes to insurance-svc (docs/architecture.md#services-and-what-each-owns,
//! the transactional outbox).
//!
//! `store::face` writes a `face_outbox` row in the same transaction that ends a session with an
//! insurance purpose (VOUCHER_ACTIVATION, FAMILY_BINDING, CARD_APPLICATION). This worker
//! delivers those rows as `FaceVerificationCompleted` until insurance-svc acknowledges them:
//!
//! - **At least once.** A row is marked delivered only after an OK; anything else (refused,
//!   timeout, crash mid-call) leaves it undelivered and it is sent again. The receiver is
//!   idempotent by session id.
//! - **Backoff.** After the n-th failure the next attempt waits `min(cap, base * 2^(n-1))`,
//!   halved and topped up with a random part (equal jitter), so retries of many events spread out
//!   and a long outage costs one attempt per event every `cap`.
//! - **Several replicas.** Each worker claims rows with a lease (`store::outbox`); a claimed row
//!   is invisible to other workers until delivered, failed, or the lease runs out (the holder
//!   died). The lease must outlast the call deadline, so an event is never in flight twice at
//!   once.
//! - **Order per session.** Only the earliest undelivered event of a session is ever claimed.
//!
//! The same worker delivers `person_outbox` rows (PersonSuperseded, written when a confirmation
//! supersedes claims) with the same leases and backoff; those have no order between them.
//!
//! Delivery timing (retry times, leases) runs on the wall clock even when the business clock is
//! injected, so tests that stop time still see retries.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use medins_common::{
    ApiResult,
    clock::{SharedClock, SystemClock},
    db::Db,
    peer::{PeerOptions, PeerTransport},
};
use tokio::sync::Notify;

use crate::{
    clients::insurance::InsuranceClient,
    config::OutboxArgs,
    store::{
        outbox::{OutboxEvent, OutboxStore},
        person_outbox::{PersonOutboxStore, PersonSupersededEvent},
    },
};

/// Timing of the worker.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Deadline of one delivery call.
    pub timeout: Duration,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// How long a claim holds an event; must exceed `timeout`.
    pub lease: Duration,
    /// How often an idle worker looks for due events.
    pub poll_interval: Duration,
    /// Events claimed per round.
    pub batch: u32,
}

impl OutboxOptions {
    /// Refuses a lease that could run out while its call is still in flight.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.lease > self.timeout,
            "--outbox-lease ({:?}) must be longer than --outbox-timeout ({:?})",
            self.lease,
            self.timeout
        );
        anyhow::ensure!(self.batch > 0, "--outbox-batch must be at least 1");
        anyhow::ensure!(!self.backoff_base.is_zero(), "--outbox-backoff-base must be positive");
        anyhow::ensure!(self.backoff_cap >= self.backoff_base, "--outbox-backoff-cap must be at least the base");
        Ok(())
    }
}

/// The delay before attempt `failures + 1`, after `failures` (>= 1) failed ones: half of
/// `min(cap, base * 2^(failures-1))` plus `jitter` (in 0..1) times the other half.
pub fn backoff(failures: i32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1 << exponent).min(cap);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// One worker; run one per process.
pub struct OutboxWorker {
    store: OutboxStore,
    persons: PersonOutboxStore,
    client: InsuranceClient,
    options: OutboxOptions,
    owner: String,
    wake: Arc<Notify>,
    clock: SharedClock,
}

impl OutboxWorker {
    /// A worker delivering `store`'s events through `client`; `wake` is notified when this
    /// process writes an event.
    pub fn new(
        store: OutboxStore,
        persons: PersonOutboxStore,
        client: InsuranceClient,
        options: OutboxOptions,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            persons,
            client,
            options,
            owner: format!("identity-svc/{}", uuid::Uuid::new_v4()),
            wake,
            clock: Arc::new(SystemClock),
        }
    }

    /// The worker the configuration asks for: `None` when neither the insurance-svc URL nor its
    /// key is set (delivery off); an error when only one is, or the timing is inconsistent.
    pub fn from_config(
        args: &OutboxArgs,
        transport: PeerTransport,
        db: Db,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Option<Self>> {
        let (url, api_key) = match (&args.insurance_url, &args.insurance_api_key) {
            (None, None) => return Ok(None),
            (Some(url), Some(key)) => (url.clone(), key.clone()),
            _ => anyhow::bail!("--insurance-url and --insurance-api-key go together: set both or neither"),
        };
        let options = OutboxOptions {
            timeout: args.outbox_timeout,
            backoff_base: args.outbox_backoff_base,
            backoff_cap: args.outbox_backoff_cap,
            lease: args.outbox_lease,
            poll_interval: args.outbox_poll_interval,
            batch: args.outbox_batch,
        };
        options.validate()?;
        let client = InsuranceClient::connect_lazy(&PeerOptions { url, api_key, timeout: options.timeout, transport })?;
        Ok(Some(Self::new(OutboxStore::new(db.clone()), PersonOutboxStore::new(db), client, options, wake)))
    }

    /// Runs until the task is aborted. Aborting mid-delivery loses nothing: the claimed events
    /// stay undelivered and are taken over when their lease runs out.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        tracing::info!(owner = %self.owner, "outbox worker delivering face outcomes to insurance-svc");
        loop {
            let claimed = match self.deliver_due().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "outbox round failed");
                    0
                }
            };
            // A full batch: more may be due right now.
            if claimed >= self.options.batch as usize {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Claims one batch of due events and delivers them concurrently (they belong to different
    /// sessions); returns how many were claimed.
    pub async fn deliver_due(&self) -> ApiResult<usize> {
        let now = self.clock.stored_now();
        let events = self.store.claim_due(&self.owner, now, self.options.lease, i64::from(self.options.batch)).await?;
        let claimed = events.len();
        let failures = count_failures(events.into_iter().map(|event| self.deliver(event))).await;
        if failures > 0 {
            tracing::warn!(claimed, failures, "some face outcomes could not be delivered to insurance-svc; will retry");
        }
        Ok(claimed + self.deliver_due_supersessions().await?)
    }

    /// Claims one batch of due PersonSuperseded events and delivers them; returns how many were
    /// claimed.
    async fn deliver_due_supersessions(&self) -> ApiResult<usize> {
        let now = self.clock.stored_now();
        let events =
            self.persons.claim_due(&self.owner, now, self.options.lease, i64::from(self.options.batch)).await?;
        let claimed = events.len();
        let failures = count_failures(events.into_iter().map(|event| self.deliver_supersession(event))).await;
        if failures > 0 {
            tracing::warn!(claimed, failures, "some supersessions could not be delivered to insurance-svc; will retry");
        }
        Ok(claimed)
    }

    /// Delivers one claimed PersonSuperseded event; true if it failed.
    async fn deliver_supersession(&self, event: PersonSupersededEvent) -> bool {
        let outcome = tokio::time::timeout(self.options.timeout, self.client.person_superseded(&event))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("delivery deadline")));
        match outcome {
            Ok(_) => {
                if let Err(error) = self.persons.mark_delivered(event.id, self.clock.stored_now()).await {
                    // Delivered but not marked: sent again, and the receiver absorbs it.
                    tracing::warn!(event_id = %event.id, %error, "could not mark a delivered supersession");
                }
                false
            }
            Err(status) => {
                let failures = event.attempts + 1;
                let delay =
                    backoff(failures, self.options.backoff_base, self.options.backoff_cap, rand::random::<f64>());
                let next = self.clock.stored_now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                let error = format!("{:?}", status.code());
                tracing::debug!(event_id = %event.id, failures, code = %error, "supersession delivery failed");
                if let Err(error) = self.persons.mark_failed(event.id, &self.owner, next, &error).await {
                    tracing::warn!(event_id = %event.id, %error, "could not record a failed supersession delivery");
                }
                true
            }
        }
    }

    /// Delivers one claimed event; true if it failed.
    async fn deliver(&self, event: OutboxEvent) -> bool {
        let outcome = tokio::time::timeout(self.options.timeout, self.client.face_verification_completed(&event))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("delivery deadline")));
        match outcome {
            Ok(duplicate) => {
                match self.store.mark_delivered(event.id, self.clock.stored_now()).await {
                    Ok(_) => tracing::debug!(
                        event_id = %event.id,
                        session_id = %event.session_id,
                        duplicate,
                        attempts = event.attempts + 1,
                        "face outcome delivered"
                    ),
                    // Delivered but not marked: it will be sent again, and the receiver absorbs it.
                    Err(error) => tracing::warn!(event_id = %event.id, %error, "could not mark a delivered event"),
                }
                false
            }
            Err(status) => {
                let failures = event.attempts + 1;
                let delay =
                    backoff(failures, self.options.backoff_base, self.options.backoff_cap, rand::random::<f64>());
                let next = self.clock.stored_now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                let error = format!("{:?}", status.code());
                tracing::debug!(
                    event_id = %event.id,
                    session_id = %event.session_id,
                    failures,
                    code = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "face outcome delivery failed"
                );
                if let Err(error) = self.store.mark_failed(event.id, &self.owner, next, &error).await {
                    // The lease runs out and the event is retried then.
                    tracing::warn!(event_id = %event.id, %error, "could not record a failed delivery");
                }
                true
            }
        }
    }
}

/// Runs every delivery of one claimed batch at once (the events of a batch never depend on each
/// other) and counts those that failed (each delivery answers true when it failed).
async fn count_failures<F: Future<Output = bool>>(deliveries: impl ExactSizeIterator<Item = F>) -> usize {
    let concurrency = deliveries.len().max(1);
    futures::stream::iter(deliveries)
        .buffer_unordered(concurrency)
        .map(usize::from)
        .fold(0, |sum, failed| async move { sum + failed })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(2, base, cap, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(4, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(5, base, cap, 1.0), cap);
        assert_eq!(backoff(500, base, cap, 0.5), Duration::from_millis(750));
        for failures in 1..40 {
            let delay = backoff(failures, base, cap, 0.3);
            assert!(delay >= base / 2 && delay <= cap, "{failures}: {delay:?}");
        }
    }

    #[test]
    fn a_lease_shorter_than_the_call_deadline_is_refused() {
        let mut options = OutboxOptions {
            timeout: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            batch: 32,
        };
        assert!(options.validate().is_ok());
        options.lease = Duration::from_secs(5);
        assert!(options.validate().is_err());
    }
}
