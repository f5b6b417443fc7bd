//! The audit chain (docs/architecture.md#who-may-call-what): how a row's hash is computed from the
//! previous row's hash and the row's canonical fields, and how a walk over the rows finds the first
//! broken one. Pure: the store reads and writes rows, this decides.

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};
use tonic::Code;

/// `prev_hash` of the first row.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Context label at the start of every hashed record, so an audit hash cannot be confused with
/// any other SHA-256 in the system. Part of the storage format: changing it breaks every chain.
const HASH_CONTEXT: &[u8] = b"medins/audit/v1";

/// The fields of one audit row that the chain protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFields<'a> {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Calling partner.
    pub partner_id: &'a str,
    /// Full gRPC method.
    pub method: &'a str,
    /// Subject person id (text as stored).
    pub person_id: &'a str,
    /// Outcome: gRPC code name.
    pub outcome: &'a str,
    /// When, as stored (microseconds, UTC).
    pub recorded_at: NaiveDateTime,
}

/// SHA-256 over the context label, the previous row's hash and the row's canonical fields:
/// `seq` and the time (microseconds since the Unix epoch) as 8-byte big-endian integers, each
/// text as a 4-byte big-endian length followed by its UTF-8 bytes (so moving bytes between
/// fields changes the hash).
pub fn chain_hash(prev_hash: &[u8], fields: &AuditFields<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(HASH_CONTEXT);
    hasher.update(prev_hash);
    hasher.update(fields.seq.to_be_bytes());
    for text in [fields.partner_id, fields.method, fields.person_id, fields.outcome] {
        hasher.update((text.len() as u32).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(fields.recorded_at.and_utc().timestamp_micros().to_be_bytes());
    hasher.finalize().into()
}

/// What is wrong with a row of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    /// The row's seq is not one more than the previous row's (a row was removed or inserted).
    SequenceGap,
    /// `prev_hash` is not the previous row's hash.
    PrevHashMismatch,
    /// `row_hash` does not match the row's fields (the row was modified).
    RowHashMismatch,
    /// The chain head names a position or hash the rows do not end with (rows were removed from
    /// the end, or the head was changed).
    HeadMismatch,
}

impl ChainFault {
    /// A sentence for operators.
    pub fn description(self) -> &'static str {
        match self {
            ChainFault::SequenceGap => "sequence gap: a row before it was removed or a row was inserted",
            ChainFault::PrevHashMismatch => "prev_hash does not match the previous row's hash",
            ChainFault::RowHashMismatch => "row_hash does not match the row's fields: the row was modified",
            ChainFault::HeadMismatch => "the chain head does not match the last row: rows were removed from the end",
        }
    }
}

/// A walk over the chain in `seq` order: feed every row, then [`finish`](ChainWalk::finish) with
/// the head.
#[derive(Debug, Clone)]
pub struct ChainWalk {
    last_seq: i64,
    last_hash: [u8; 32],
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self { last_seq: 0, last_hash: GENESIS_HASH }
    }
}

impl ChainWalk {
    /// Checks the next row; on success it becomes the previous row.
    pub fn check(&mut self, fields: &AuditFields<'_>, prev_hash: &[u8], row_hash: &[u8]) -> Result<(), ChainFault> {
        if fields.seq != self.last_seq + 1 {
            return Err(ChainFault::SequenceGap);
        }
        if prev_hash != self.last_hash {
            return Err(ChainFault::PrevHashMismatch);
        }
        let expected = chain_hash(prev_hash, fields);
        if row_hash != expected {
            return Err(ChainFault::RowHashMismatch);
        }
        self.last_seq = fields.seq;
        self.last_hash = expected;
        Ok(())
    }

    /// Rows checked so far.
    pub fn rows(&self) -> i64 {
        self.last_seq
    }

    /// Checks that the rows ended where the head says.
    pub fn finish(&self, head_seq: i64, head_hash: &[u8]) -> Result<i64, ChainFault> {
        if head_seq != self.last_seq || head_hash != self.last_hash {
            return Err(ChainFault::HeadMismatch);
        }
        Ok(self.last_seq)
    }
}

/// The stored spelling of an outcome: the gRPC code's canonical name (`OK`, `NOT_FOUND`, ...).
pub fn outcome_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The outcome code of a handler's result.
pub fn outcome_of<T>(result: &Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp_micros(micros).unwrap().naive_utc()
    }

    fn fields(seq: i64) -> AuditFields<'static> {
        AuditFields {
            seq,
            partner_id: "bank",
            method: "/medins.identity.v1.PersonService/GetPerson",
            person_id: "0192f0c1-0000-7000-8000-000000000001",
            outcome: "OK",
            recorded_at: at(1_795_000_000_123_456),
        }
    }

    fn chain(n: i64) -> Vec<(AuditFields<'static>, [u8; 32], [u8; 32])> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let f = fields(seq);
                let hash = chain_hash(&prev, &f);
                let row = (f, prev, hash);
                prev = hash;
                row
            })
            .collect()
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let base = fields(1);
        let hash = chain_hash(&GENESIS_HASH, &base);
        assert_eq!(hash, chain_hash(&GENESIS_HASH, &base.clone()));
        let variants = [
            AuditFields { seq: 2, ..base.clone() },
            AuditFields { partner_id: "mini-program", ..base.clone() },
            AuditFields { method: "/x/Y", ..base.clone() },
            AuditFields { person_id: "0192f0c1-0000-7000-8000-000000000002", ..base.clone() },
            AuditFields { outcome: "PERMISSION_DENIED", ..base.clone() },
            AuditFields { recorded_at: at(1_795_000_000_123_457), ..base.clone() },
        ];
        for variant in &variants {
            assert_ne!(chain_hash(&GENESIS_HASH, variant), hash, "{variant:?}");
        }
        assert_ne!(chain_hash(&[1; 32], &base), hash);
        // Moving bytes between neighbouring fields changes the hash.
        let a = AuditFields { partner_id: "ab", method: "c", ..base.clone() };
        let b = AuditFields { partner_id: "a", method: "bc", ..base.clone() };
        assert_ne!(chain_hash(&GENESIS_HASH, &a), chain_hash(&GENESIS_HASH, &b));
    }

    #[test]
    fn an_intact_chain_walks_to_its_head() {
        let rows = chain(5);
        let mut walk = ChainWalk::default();
        for (f, prev, hash) in &rows {
            walk.check(f, prev, hash).unwrap();
        }
        assert_eq!(walk.finish(5, &rows[4].2), Ok(5));
        assert_eq!(ChainWalk::default().finish(0, &GENESIS_HASH), Ok(0));
    }

    #[test]
    fn a_modified_row_is_the_first_broken_one() {
        let mut rows = chain(5);
        rows[2].0.outcome = "OK_BUT_EDITED";
        let mut walk = ChainWalk::default();
        let first_broken = rows.iter().find(|(f, prev, hash)| walk.check(f, prev, hash).is_err()).map(|r| r.0.seq);
        assert_eq!(first_broken, Some(3));
        let mut walk = ChainWalk::default();
        for (f, prev, hash) in &rows[..2] {
            walk.check(f, prev, hash).unwrap();
        }
        assert_eq!(walk.check(&rows[2].0, &rows[2].1, &rows[2].2), Err(ChainFault::RowHashMismatch));
    }

    #[test]
    fn a_rehashed_row_breaks_the_next_one_and_removals_show() {
        let mut rows = chain(4);
        // Someone edits row 2 and recomputes its own hash: row 3's prev_hash no longer matches.
        rows[1].0.partner_id = "someone-else";
        rows[1].2 = chain_hash(&rows[1].1, &rows[1].0);
        let mut walk = ChainWalk::default();
        walk.check(&rows[0].0, &rows[0].1, &rows[0].2).unwrap();
        walk.check(&rows[1].0, &rows[1].1, &rows[1].2).unwrap();
        assert_eq!(walk.check(&rows[2].0, &rows[2].1, &rows[2].2), Err(ChainFault::PrevHashMismatch));

        // A removed row in the middle is a gap; a removed last row is a head mismatch.
        let rows = chain(4);
        let mut walk = ChainWalk::default();
        walk.check(&rows[0].0, &rows[0].1, &rows[0].2).unwrap();
        assert_eq!(walk.check(&rows[2].0, &rows[2].1, &rows[2].2), Err(ChainFault::SequenceGap));
        let mut walk = ChainWalk::default();
        for (f, prev, hash) in &rows[..3] {
            walk.check(f, prev, hash).unwrap();
        }
        assert_eq!(walk.finish(4, &rows[3].2), Err(ChainFault::HeadMismatch));
    }

    #[test]
    fn outcome_names_are_the_canonical_code_names() {
        assert_eq!(outcome_name(Code::Ok), "OK");
        assert_eq!(outcome_name(Code::PermissionDenied), "PERMISSION_DENIED");
        assert_eq!(outcome_name(Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(outcome_of::<()>(&Err(tonic::Status::not_found("x"))), Code::NotFound);
        assert_eq!(outcome_of(&Ok(())), Code::Ok);
    }
}
