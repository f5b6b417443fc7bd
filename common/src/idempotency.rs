//! Idempotency keys (DESIGN.md 4.4), usable by any mutating RPC of either service.
//!
//! The first successful outcome for (partner, key) is stored with a hash of the method and
//! request for 24 hours; a retry gets the stored response; the same key with another request is
//! FAILED_PRECONDITION / IDEMPOTENCY_KEY_MISMATCH. A concurrent duplicate waits for the first
//! call to finish and returns its outcome (ABORTED / REQUEST_IN_FLIGHT only if that takes longer
//! than the wait bound). A failed call wrote nothing, so it releases the key and may be retried.
//! A holder that dies mid-call leaves a lease that expires, after which a retry runs again.
//!
//! Each service's migrations create the `idempotency_records` table defined here.

use std::{sync::Arc, time::Duration};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::{
    clock::SharedClock,
    db::{Db, DbError, is_unique_violation},
    error::{ApiError, Reason},
};

diesel::table! {
    /// Stored outcomes of mutating calls, by partner and idempotency key.
    idempotency_records (partner_id, idempotency_key) {
        partner_id -> Text,
        idempotency_key -> Text,
        request_hash -> Binary,
        state -> Text,
        response -> Nullable<Binary>,
        lease_until -> Timestamp,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

/// Metadata key carrying the idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

const IN_FLIGHT: &str = "IN_FLIGHT";
const DONE: &str = "DONE";

/// Settings.
#[derive(Debug, Clone)]
pub struct IdempotencyOptions {
    /// How long an outcome is kept.
    pub retention: Duration,
    /// How long a running call holds its key before another may take over.
    pub lease: Duration,
    /// How long a duplicate waits for the running call before answering ABORTED.
    pub wait: Duration,
}

impl Default for IdempotencyOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
            wait: Duration::from_secs(10),
        }
    }
}

/// The store of one service.
#[derive(Clone, Debug)]
pub struct Idempotency {
    db: Db,
    clock: SharedClock,
    options: Arc<IdempotencyOptions>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = idempotency_records)]
struct Record {
    request_hash: Vec<u8>,
    state: String,
    response: Option<Vec<u8>>,
    lease_until: NaiveDateTime,
    expires_at: NaiveDateTime,
}

enum Claim {
    /// This call holds the key and must run.
    Run,
    /// A stored response.
    Done(Vec<u8>),
    /// Another call holds it.
    Busy,
}

impl Idempotency {
    /// A store over a service's database.
    pub fn new(db: Db, clock: SharedClock, options: IdempotencyOptions) -> Self {
        Self { db, clock, options: Arc::new(options) }
    }

    /// Runs `call` at most once per (partner, key) with the same request; see the module doc.
    /// Without an `idempotency-key` in `metadata` the call simply runs.
    pub async fn run<Req, Resp, F, Fut>(
        &self,
        partner_id: &str,
        method: &str,
        metadata: &tonic::metadata::MetadataMap,
        request: &Req,
        call: F,
    ) -> Result<Resp, Status>
    where
        Req: Message,
        Resp: Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Resp, Status>>,
    {
        let Some(key) = idempotency_key(metadata)? else { return call().await };
        let hash = request_hash(method, request);
        let deadline = tokio::time::Instant::now() + self.options.wait;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.claim(partner_id, &key, &hash).await? {
                Claim::Run => break,
                Claim::Done(bytes) => {
                    return Resp::decode(bytes.as_slice())
                        .map_err(|e| ApiError::internal(format!("stored response: {e}")).into());
                }
                Claim::Busy if tokio::time::Instant::now() >= deadline => {
                    return Err(ApiError::new(
                        Code::Aborted,
                        Reason::RequestInFlight,
                        "a call with this idempotency key is still running; retry later with the same key",
                    )
                    .into());
                }
                Claim::Busy => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
        let outcome = call().await;
        let (partner, key_owned) = (partner_id.to_owned(), key.clone());
        let response = outcome.as_ref().ok().map(Message::encode_to_vec);
        self.db
            .write(move |conn| -> Result<(), DbError> {
                use idempotency_records::dsl as r;
                let target =
                    r::idempotency_records.filter(r::partner_id.eq(&partner)).filter(r::idempotency_key.eq(&key_owned));
                match response {
                    Some(bytes) => {
                        diesel::update(target).set((r::state.eq(DONE), r::response.eq(Some(bytes)))).execute(conn)?;
                    }
                    None => {
                        diesel::delete(target).execute(conn)?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(ApiError::from)?;
        outcome
    }

    async fn claim(&self, partner_id: &str, key: &str, hash: &[u8]) -> Result<Claim, Status> {
        let now = self.clock.stored_now();
        let lease_until = now + chrono::Duration::from_std(self.options.lease).expect("lease fits");
        let expires_at = now + chrono::Duration::from_std(self.options.retention).expect("retention fits");
        let (partner, key, hash) = (partner_id.to_owned(), key.to_owned(), hash.to_vec());
        let claim = self
            .db
            .write(move |conn| -> Result<Claim, ApiError> {
                use idempotency_records::dsl as r;
                let inserted = diesel::insert_into(r::idempotency_records)
                    .values((
                        r::partner_id.eq(&partner),
                        r::idempotency_key.eq(&key),
                        r::request_hash.eq(&hash),
                        r::state.eq(IN_FLIGHT),
                        r::lease_until.eq(lease_until),
                        r::expires_at.eq(expires_at),
                        r::created_at.eq(now),
                    ))
                    .execute(conn);
                match inserted {
                    Ok(_) => return Ok(Claim::Run),
                    Err(error) if is_unique_violation(&error) => {}
                    Err(error) => return Err(error.into()),
                }
                let target =
                    r::idempotency_records.filter(r::partner_id.eq(&partner)).filter(r::idempotency_key.eq(&key));
                let Some(record) = target.select(Record::as_select()).first(conn).optional()? else {
                    // Released between our insert and read: try again.
                    return Ok(Claim::Busy);
                };
                if record.expires_at <= now {
                    diesel::delete(target.filter(r::expires_at.eq(record.expires_at))).execute(conn)?;
                    return Ok(Claim::Busy);
                }
                if record.request_hash != hash {
                    return Err(ApiError::failed_precondition(
                        Reason::IdempotencyKeyMismatch,
                        "this idempotency key was used with a different request",
                    ));
                }
                if record.state == DONE {
                    return Ok(Claim::Done(record.response.unwrap_or_default()));
                }
                if record.lease_until <= now {
                    // The holder died mid-call: take the key over, unless someone else just did.
                    let taken = diesel::update(target.filter(r::lease_until.eq(record.lease_until)))
                        .set(r::lease_until.eq(lease_until))
                        .execute(conn)?;
                    if taken == 1 {
                        return Ok(Claim::Run);
                    }
                }
                Ok(Claim::Busy)
            })
            .await?;
        Ok(claim)
    }

    /// Deletes outcomes past their retention; returns how many.
    pub async fn purge_expired(&self) -> Result<usize, ApiError> {
        let now = self.clock.stored_now();
        self.db
            .write(move |conn| {
                use idempotency_records::dsl as r;
                Ok(diesel::delete(r::idempotency_records.filter(r::expires_at.le(now))).execute(conn)?)
            })
            .await
    }

    /// Purges expired outcomes every `every` until the returned handle is aborted.
    pub fn spawn_purger(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.purge_expired().await {
                    Ok(0) => {}
                    Ok(count) => tracing::debug!(count, "purged expired idempotency records"),
                    Err(error) => tracing::warn!(%error, "idempotency purge failed"),
                }
            }
        })
    }
}

/// The `idempotency-key` of a call: absent, or 1-128 visible ASCII characters.
fn idempotency_key(metadata: &tonic::metadata::MetadataMap) -> Result<Option<String>, ApiError> {
    let Some(value) = metadata.get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()));
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::invalid_field(
            Reason::IdempotencyKeyInvalid,
            IDEMPOTENCY_KEY_HEADER,
            "must be 1-128 visible ASCII characters",
        )),
    }
}

fn request_hash<Req: Message>(method: &str, request: &Req) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0]);
    // prost encodes fields in field-number order, so equal requests hash equal.
    hasher.update(request.encode_to_vec());
    hasher.finalize().to_vec()
}
