//! The face-session expiry sweeper: finds PENDING sessions past their expiry and records them
//! EXPIRED, each with its outbox event in one transaction, so an expiry is recorded (and
//! reported to insurance-svc) even if nobody asks about the session. Runs in every replica;
//! the per-session row lock makes concurrent sweeps harmless.

use std::time::Duration;

use medins_common::ApiResult;

use crate::service::SharedState;

/// Sessions expired per transaction batch.
const BATCH: i64 = 100;

/// Expires every due session now; returns how many.
pub async fn sweep_once(state: &SharedState) -> ApiResult<usize> {
    let mut total = 0;
    loop {
        let expired = state.face.store.expire_due(state.clock.stored_now(), BATCH).await?;
        for session in &expired {
            state.face.changed(session.id, session.outbox_written);
        }
        total += expired.len();
        if (expired.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Sweeps every `every` until the task is aborted.
pub fn spawn(state: SharedState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match sweep_once(&state).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "expired face sessions"),
                Err(error) => tracing::warn!(%error, "face session sweep failed"),
            }
        }
    })
}
