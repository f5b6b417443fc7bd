//! Sweeps document bytes whose row never committed (issue 14 item 3): an upload records an
//! intent before it writes the bytes and removes it in the transaction that inserts the row, so
//! an intent older than any upload can take names bytes nobody will ever read (the process died
//! between the two writes, or the row's insert failed and so did the cleanup). The bytes are
//! sealed under a key only the row would have held, so they could not be opened anyway; the
//! sweeper removes them from the object store, then the intent.

use std::time::Duration;

use medins_common::ApiResult;

use crate::service::SharedState;

/// How often the sweeper runs.
pub const EVERY: Duration = Duration::from_secs(300);

/// How old an intent must be before its bytes are swept: far beyond the request timeout, so an
/// upload still writing its row is never swept.
pub const GRACE: chrono::Duration = chrono::Duration::minutes(10);

/// Intents handled per batch.
const BATCH: i64 = 100;

/// One pass: every intent older than [`GRACE`]. Returns how many objects were deleted.
pub async fn sweep_once(state: &SharedState) -> ApiResult<usize> {
    sweep_before(state, state.clock.stored_now() - GRACE).await
}

/// One pass over intents recorded before `before` (tests pass the present).
pub async fn sweep_before(state: &SharedState, before: chrono::NaiveDateTime) -> ApiResult<usize> {
    let mut deleted = 0;
    loop {
        let stale = state.documents.stale_intents(before, BATCH).await?;
        let count = stale.len();
        for (key, has_row) in stale {
            if !has_row {
                state.objects.delete(&key).await?;
                deleted += 1;
            }
            state.documents.forget_intent(key).await?;
        }
        if (count as i64) < BATCH {
            return Ok(deleted);
        }
    }
}

/// Sweeps at start (what a crashed process left), then every `every`, until aborted.
pub fn spawn(state: SharedState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sweep_once(&state).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "swept document bytes without a row"),
                Err(error) => tracing::warn!(%error, "document sweep failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
