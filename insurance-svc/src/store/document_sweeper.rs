//! Sweeps document bytes whose row never committed (issue 14 item 3): an upload records an
//! intent before it writes the bytes and removes it in the transaction that inserts the row, so
//! an intent older than any upload can take names bytes nobody will ever read (the process died
//! between the two writes, or the row's insert failed and so did the cleanup). The bytes are
//! sealed under a key only the row would have held, so they could not be opened anyway; the
//! sweeper removes them from the object store, then the intent.
//!
//! It also seals the documents stored in clear before documents were encrypted: the sealed
//! bytes go under a new key (with an intent, as an upload's), the row is switched to them in one
//! compare-and-set, and only then are the clear bytes deleted. A crash at any step leaves either
//! the clear document as it was, or the sealed one and clear bytes the next pass deletes.

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

/// Seals up to `BATCH` documents still in clear per call, until none is left; returns how
/// many were sealed.
pub async fn seal_unsealed(state: &SharedState) -> ApiResult<usize> {
    let mut sealed = 0;
    loop {
        let batch = state.documents.unsealed(BATCH).await?;
        let count = batch.len();
        let mut progress = 0;
        for document in batch {
            if seal_one(state, &document).await? {
                progress += 1;
            }
        }
        sealed += progress;
        // A short batch is the last; a full one that sealed nothing would only come back.
        if (count as i64) < BATCH || progress == 0 {
            return Ok(sealed);
        }
    }
}

async fn seal_one(state: &SharedState, document: &crate::domain::document::Document) -> ApiResult<bool> {
    use crate::domain::document::sha256_hex;
    let old_key = document.object_key.clone();
    let plaintext = match state.objects.read(&old_key).await {
        Ok(bytes) => bytes,
        Err(error) => {
            // The next pass tries again.
            tracing::warn!(document_id = %document.id, %error, "a document in clear could not be read for sealing");
            return Ok(false);
        }
    };
    if sha256_hex(&plaintext) != document.sha256 {
        tracing::warn!(document_id = %document.id, "a document in clear does not match its hash: left as it is");
        return Ok(false);
    }
    let (cipher, id, owner) = (state.document_cipher.clone(), document.id, document.owner_person_id);
    let sealed = tokio::task::spawn_blocking(move || crate::store::objects::seal(&cipher, id, owner, &plaintext))
        .await
        .map_err(medins_common::ApiError::internal)?;
    let new_key = format!("{old_key}.sealed");
    state.documents.record_intent(new_key.clone(), state.clock.stored_now()).await?;
    state.objects.put(&new_key, bytes::Bytes::from(sealed.object)).await?;
    if state.documents.mark_sealed(id, old_key.clone(), new_key.clone(), sealed.wrapped_key).await? {
        state.objects.delete(&old_key).await?;
        tracing::info!(document_id = %id, "document sealed at rest");
        Ok(true)
    } else {
        state.objects.delete(&new_key).await?;
        state.documents.forget_intent(new_key).await?;
        Ok(false)
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
            match seal_unsealed(&state).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "sealed documents stored in clear"),
                Err(error) => tracing::warn!(%error, "sealing documents stored in clear failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
