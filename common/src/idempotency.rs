//! Idempotency keys (docs/architecture.md#retries-and-idempotency), usable by any mutating RPC of
//! either service.
//!
//! The first successful outcome for (partner, key) is stored with a hash of the method and
//! request for 24 hours; a retry gets the stored response; the same key with another request is
//! FAILED_PRECONDITION / IDEMPOTENCY_KEY_MISMATCH. A concurrent duplicate waits for the first
//! call to finish and returns its outcome (ABORTED / REQUEST_IN_FLIGHT only if that takes longer
//! than the wait bound). A failed call wrote nothing, so it releases the key and may be retried.
//! A holder that dies mid-call leaves a lease that expires, after which a retry runs again.
//!
//! Each service's migrations create the `idempotency_records` table defined here.
//!
//! The stored request hash is keyed: `version || HMAC-SHA256(k_v, method, request)` where `k_v`
//! is derived from the service's data key `v` under the label [`REQUEST_HASH_LABEL`]
//! ([`LabelledMac`]). A plain hash of a request holding a name and ID number could be
//! brute-forced from the small ID-number space by anyone who reads the table; the keyed one
//! cannot without the data keys. The version keeps records comparable across a data key
//! rotation for as long as the old version stays in the key set.

use std::{sync::Arc, time::Duration};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::{
    clock::SharedClock,
    crypto::{DataKeys, LabelledMac, constant_time_eq},
    db::{Db, DbConnection, DbError, is_unique_violation, retry_conflicts},
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

/// Label of the key derived from the data keys for request hashes: apart from every other use.
pub const REQUEST_HASH_LABEL: &str = "idempotency/request-hash";

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
    request_mac: LabelledMac,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = idempotency_records)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
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
    /// A store over a service's database; request hashes are keyed with a key derived from
    /// the service's data keys (see the module doc).
    pub fn new(db: Db, clock: SharedClock, options: IdempotencyOptions, keys: &DataKeys) -> Self {
        Self { db, clock, options: Arc::new(options), request_mac: LabelledMac::new(keys, REQUEST_HASH_LABEL) }
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
        let fingerprint = RequestFingerprint::new(self.request_mac.clone(), method, request);
        let deadline = tokio::time::Instant::now() + self.options.wait;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.claim(partner_id, &key, &fingerprint).await? {
                Claim::Run => break,
                Claim::Done(bytes) => {
                    return Resp::decode(bytes.as_slice())
                        .map_err(|e| ApiError::internal(format!("stored response: {e}")).into());
                }
                Claim::Busy if tokio::time::Instant::now() >= deadline => {
                    return Err(ApiError::of(
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
                // One statement: run again whole if it lost to a concurrent transaction.
                retry_conflicts(|| {
                    match &response {
                        Some(bytes) => {
                            diesel::update(target)
                                .set((r::state.eq(DONE), r::response.eq(Some(bytes))))
                                .execute(conn)?;
                        }
                        None => {
                            diesel::delete(target).execute(conn)?;
                        }
                    }
                    Ok(())
                })
            })
            .await
            .map_err(ApiError::from)?;
        outcome
    }

    async fn claim(&self, partner_id: &str, key: &str, fingerprint: &RequestFingerprint) -> Result<Claim, Status> {
        let now = self.clock.stored_now();
        let lease_until = now + chrono::Duration::from_std(self.options.lease).expect("lease fits");
        let expires_at = now + chrono::Duration::from_std(self.options.retention).expect("retention fits");
        let (partner, key, fingerprint) = (partner_id.to_owned(), key.to_owned(), fingerprint.clone());
        let hash = fingerprint.stored();
        let claim = self
            .db
            .write(move |conn| {
                // Autocommit statements, each deciding on what the one before found: run again
                // from the insert if one lost to a concurrent transaction (nothing of it stays).
                retry_conflicts(|| claim_in(conn, &partner, &key, &hash, &fingerprint, now, lease_until, expires_at))
            })
            .await?;
        Ok(claim)
    }
}

/// One run of [`Idempotency::claim`]'s statements.
#[allow(clippy::too_many_arguments)]
fn claim_in(
    conn: &mut DbConnection,
    partner: &str,
    key: &str,
    hash: &[u8],
    fingerprint: &RequestFingerprint,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> Result<Claim, ApiError> {
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
    let target = r::idempotency_records.filter(r::partner_id.eq(&partner)).filter(r::idempotency_key.eq(&key));
    let Some(record) = target.select(Record::as_select()).first(conn).optional()? else {
        // Released between our insert and read: try again.
        return Ok(Claim::Busy);
    };
    if record.expires_at <= now {
        diesel::delete(target.filter(r::expires_at.eq(record.expires_at))).execute(conn)?;
        return Ok(Claim::Busy);
    }
    if !fingerprint.matches(&record.request_hash) {
        return Err(ApiError::of(
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
}

impl Idempotency {
    /// Deletes outcomes past their retention; returns how many.
    pub async fn purge_expired(&self) -> Result<usize, ApiError> {
        let now = self.clock.stored_now();
        self.db
            .write(move |conn| {
                use idempotency_records::dsl as r;
                retry_conflicts(|| {
                    Ok(diesel::delete(r::idempotency_records.filter(r::expires_at.le(now))).execute(conn)?)
                })
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

/// What identifies a request for the mismatch check: method and encoded body, hashed under the
/// service's derived key.
#[derive(Clone)]
struct RequestFingerprint {
    mac: LabelledMac,
    method: String,
    // prost encodes fields in field-number order, so equal requests encode equal.
    body: Vec<u8>,
}

/// Bytes of the key version in front of a stored keyed hash.
const VERSION_LEN: usize = 4;

impl RequestFingerprint {
    fn new<Req: Message>(mac: LabelledMac, method: &str, request: &Req) -> Self {
        Self { mac, method: method.to_owned(), body: request.encode_to_vec() }
    }

    /// The keyed hash under `version`, with the version in front.
    fn keyed(&self, version: u32) -> Option<Vec<u8>> {
        let digest = self.mac.compute(version, &[self.method.as_bytes(), &self.body])?;
        let mut out = Vec::with_capacity(VERSION_LEN + digest.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&digest);
        Some(out)
    }

    /// What a new record stores: the keyed hash under the current data key version.
    fn stored(&self) -> Vec<u8> {
        self.keyed(self.mac.current_version()).expect("the current version is in the key set")
    }

    /// Whether a stored hash is this request's: recomputed under the version it names. A
    /// 32-byte value is a record written before hashes were keyed (plain SHA-256); it is still
    /// compared, so a retry across the upgrade gets its first outcome, and it is gone after the
    /// 24-hour retention. A version no longer in the key set never matches.
    fn matches(&self, stored: &[u8]) -> bool {
        if stored.len() == 32 {
            return constant_time_eq(&plain_request_hash(&self.method, &self.body), stored);
        }
        let Some((version, _)) = stored.split_first_chunk::<VERSION_LEN>() else { return false };
        self.keyed(u32::from_be_bytes(*version)).is_some_and(|expected| constant_time_eq(&expected, stored))
    }
}

/// The unkeyed hash records held before hashes were keyed (compared, never written).
fn plain_request_hash(method: &str, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::ManualClock, db::PoolOptions};

    fn fingerprint(keys: &DataKeys, method: &str, request: &prost_types::Duration) -> RequestFingerprint {
        RequestFingerprint::new(LabelledMac::new(keys, REQUEST_HASH_LABEL), method, request)
    }

    fn request(seconds: i64) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos: 0 }
    }

    #[test]
    fn the_stored_hash_depends_on_the_key_and_is_not_the_plain_hash() {
        let (one, two) = (DataKeys::generate(), DataKeys::generate());
        let a = fingerprint(&one, "RegisterPerson", &request(7));
        let stored = a.stored();
        assert_eq!(stored.len(), VERSION_LEN + 32);
        assert_ne!(&stored[VERSION_LEN..], plain_request_hash("RegisterPerson", &a.body).as_slice());
        assert_ne!(stored, fingerprint(&two, "RegisterPerson", &request(7)).stored(), "another key, another hash");
        assert_eq!(stored, fingerprint(&one, "RegisterPerson", &request(7)).stored(), "deterministic per key");
        assert!(a.matches(&stored));
        assert!(!fingerprint(&one, "RegisterPerson", &request(8)).matches(&stored), "another request");
        assert!(!fingerprint(&one, "ResolvePerson", &request(7)).matches(&stored), "another method");
        assert!(!fingerprint(&two, "RegisterPerson", &request(7)).matches(&stored), "another key");
    }

    #[test]
    fn records_stay_comparable_across_a_data_key_rotation_and_legacy_hashes_still_match() {
        let mut keys = DataKeys::generate();
        let before = fingerprint(&keys, "Settle", &request(1)).stored();
        keys.rotate();
        let after = fingerprint(&keys, "Settle", &request(1));
        assert_ne!(after.stored(), before, "new records use the new version");
        assert!(after.matches(&before), "an old record is checked under its own version");
        assert!(after.matches(&plain_request_hash("Settle", &after.body)));
        assert!(!after.matches(&[0, 0, 0, 9, 1, 2, 3]), "unknown version or garbage never matches");
    }

    async fn store(dir: &tempfile::TempDir, keys: &DataKeys) -> Idempotency {
        let db =
            Db::connect(&format!("sqlite://{}", dir.path().join("i.db").display()), &PoolOptions::default()).unwrap();
        db.run(|conn| {
            diesel::sql_query(
                "CREATE TABLE idempotency_records (partner_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, \
                 request_hash BLOB NOT NULL, state TEXT NOT NULL, response BLOB, lease_until TIMESTAMP NOT NULL, \
                 expires_at TIMESTAMP NOT NULL, created_at TIMESTAMP NOT NULL, \
                 PRIMARY KEY (partner_id, idempotency_key))",
            )
            .execute(conn)?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
        let clock: SharedClock = Arc::new(ManualClock::new(chrono::Utc::now()));
        Idempotency::new(db, clock, IdempotencyOptions::default(), keys)
    }

    fn metadata(key: &str) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(IDEMPOTENCY_KEY_HEADER, key.parse().unwrap());
        metadata
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_outcome_and_another_request_is_a_mismatch_with_keyed_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DataKeys::generate();
        let store = store(&dir, &keys).await;
        let runs = std::sync::atomic::AtomicU32::new(0);
        let call = |answer: i64| {
            let runs = &runs;
            move || async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(request(answer))
            }
        };
        let first = store.run("p", "M", &metadata("k1"), &request(1), call(10)).await.unwrap();
        let retry = store.run("p", "M", &metadata("k1"), &request(1), call(20)).await.unwrap();
        assert_eq!((first.seconds, retry.seconds), (10, 10), "the retry returns the first outcome");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "and does not run again");
        let mismatch = store.run("p", "M", &metadata("k1"), &request(2), call(30)).await.unwrap_err();
        assert_eq!(crate::error::status_reason(&mismatch).as_deref(), Some("IDEMPOTENCY_KEY_MISMATCH"));

        // What the table holds is the keyed hash, not the plain one.
        let stored: Vec<u8> = store
            .db
            .run(|conn| {
                use idempotency_records::dsl as r;
                Ok::<_, DbError>(r::idempotency_records.select(r::request_hash).first(conn)?)
            })
            .await
            .unwrap();
        let body = request(1).encode_to_vec();
        assert_ne!(stored, plain_request_hash("M", &body));
        assert_eq!(stored, fingerprint(&keys, "M", &request(1)).stored());
    }
}
