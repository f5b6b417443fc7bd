//! How audit rows and checkpoints are sealed (docs/architecture.md#who-may-call-what): pure
//! functions of a row's fields and of keys the database never holds. The store writes what these
//! compute; `medins audit verify` recomputes it.
//!
//! - The log is split into partitions by a hash of the person id ([`partition_of`]; on
//!   PostgreSQL [`PARTITIONS`], on SQLite one: see `super::store::partitions_for`), each with its
//!   own positions `idx` = 0, 1, 2, ... without gaps, so appends for different persons take
//!   different locks.
//! - A row's leaf is its canonical encoding ([`leaf_data`]); its leaf hash is RFC 6962's.
//! - Every row carries an HMAC-SHA256 of its leaf hash under a MAC key derived from the audit
//!   signing key ([`MacKey::row_mac`]): a row changed, inserted or moved in the database without
//!   that key no longer matches, so verification names the exact row, also for rows written after
//!   the last checkpoint. (A MAC costs about a microsecond; an Ed25519 signature per row ~20
//!   microseconds to sign and ~50 to verify, for no more protection: the witness checks the
//!   signed checkpoints, not the rows.)
//! - Each partition's head (`size`) carries a MAC too, so rows removed from the end show.
//! - Periodically each partition is sealed by a checkpoint: the RFC 6962 tree head over all its
//!   rows so far, signed with Ed25519 ([`checkpoint_statement`]), with the consistency proof
//!   from the previous checkpoint, so even the holder of the MAC key cannot rewrite sealed rows
//!   without the signatures an outside witness holds failing.

use chrono::NaiveDateTime;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::merkle::{Hash, leaf_hash};

/// Partitions of each service's log on PostgreSQL. Part of the storage format only through the
/// stored `part` of each row: changing it moves future rows, never re-reads old ones.
pub const PARTITIONS: i32 = 64;

/// Label of the row encoding; changing it changes every leaf.
const LEAF_CONTEXT: &[u8] = b"medins/audit/leaf/v1";
/// Label of the MAC key derivation.
const MAC_KEY_CONTEXT: &[u8] = b"medins/audit/row-mac/v1";
/// Label of partition-head MACs.
const HEAD_CONTEXT: &[u8] = b"medins/audit/head/v1";
/// First line of a signed checkpoint statement.
pub const CHECKPOINT_HEADER: &str = "medins audit checkpoint v1";

/// The partition of a person's rows in a log of `partitions` partitions (at least one).
pub fn partition_of(person_id: &str, partitions: i32) -> i32 {
    let digest = Sha256::new().chain_update(b"medins/audit/partition/v1").chain_update(person_id).finalize();
    (u32::from_be_bytes(digest[..4].try_into().expect("4 bytes")) % partitions.max(1) as u32) as i32
}

/// The fields of one row that its leaf covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFields<'a> {
    /// Partition.
    pub part: i32,
    /// Position in the partition, from 0.
    pub idx: i64,
    /// Calling partner.
    pub partner_id: &'a str,
    /// Full gRPC method.
    pub method: &'a str,
    /// Subject person id (text as stored).
    pub person_id: &'a str,
    /// gRPC code name of the outcome.
    pub outcome: &'a str,
    /// When (microseconds, UTC).
    pub recorded_at: NaiveDateTime,
}

/// The canonical encoding: the label, `part` (4 bytes) and `idx` (8 bytes) big-endian, each
/// text as a 4-byte big-endian length and its UTF-8 bytes, the time as 8-byte big-endian
/// microseconds since the Unix epoch.
pub fn leaf_data(fields: &RowFields<'_>) -> Vec<u8> {
    let mut data = Vec::with_capacity(128);
    data.extend_from_slice(LEAF_CONTEXT);
    data.extend_from_slice(&fields.part.to_be_bytes());
    data.extend_from_slice(&fields.idx.to_be_bytes());
    for text in [fields.partner_id, fields.method, fields.person_id, fields.outcome] {
        data.extend_from_slice(&(text.len() as u32).to_be_bytes());
        data.extend_from_slice(text.as_bytes());
    }
    data.extend_from_slice(&fields.recorded_at.and_utc().timestamp_micros().to_be_bytes());
    data
}

/// The RFC 6962 leaf hash of a row.
pub fn row_leaf(fields: &RowFields<'_>) -> Hash {
    leaf_hash(&leaf_data(fields))
}

/// The MAC key of an audit signing key.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

impl MacKey {
    /// Derived from the signing key's seed: one key file, two purposes kept apart by labels.
    pub fn derive(signing: &SigningKey) -> MacKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(&signing.to_bytes()).expect("any key length");
        mac.update(MAC_KEY_CONTEXT);
        MacKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// A row's MAC: over the service name and the row's leaf hash.
    pub fn row_mac(&self, service: &str, leaf: &Hash) -> [u8; 32] {
        self.mac(&[service.as_bytes(), leaf])
    }

    /// A partition head's MAC: over the service name, the partition and its size.
    pub fn head_mac(&self, service: &str, part: i32, size: i64) -> [u8; 32] {
        self.mac(&[HEAD_CONTEXT, service.as_bytes(), &part.to_be_bytes(), &size.to_be_bytes()])
    }
}

/// Compares MACs in constant time.
pub fn mac_matches(expected: &[u8; 32], stored: &[u8]) -> bool {
    crate::crypto::constant_time_eq(expected, stored)
}

/// What a checkpoint states, and its signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `identity-svc` or `insurance-svc`.
    pub service: String,
    /// Partition.
    pub part: i32,
    /// Rows covered: `idx` 0 .. tree_size.
    pub tree_size: i64,
    /// RFC 6962 head over those rows' leaves.
    pub root: Hash,
    /// Size of the previous checkpoint of the partition (0 for the first).
    pub prev_size: i64,
    /// Its head (the empty tree's for the first).
    pub prev_root: Hash,
    /// When it was made (RFC 3339, seconds, UTC), as signed.
    pub created_at: String,
    /// Id of the signing key.
    pub key_id: String,
}

/// The signed text: one `name: value` line per field after [`CHECKPOINT_HEADER`], hashes in
/// lower-case hex, ending in a newline. Plain text so that a witness can read and re-create it
/// with any tool.
pub fn checkpoint_statement(checkpoint: &Checkpoint) -> String {
    format!(
        "{CHECKPOINT_HEADER}\nservice: {}\npartition: {}\ntree_size: {}\nroot: {}\nprev_size: {}\nprev_root: {}\ncreated_at: {}\nkey_id: {}\n",
        checkpoint.service,
        checkpoint.part,
        checkpoint.tree_size,
        hex::encode(checkpoint.root),
        checkpoint.prev_size,
        hex::encode(checkpoint.prev_root),
        checkpoint.created_at,
        checkpoint.key_id,
    )
}

/// Signs a checkpoint statement.
pub fn sign_checkpoint(key: &SigningKey, checkpoint: &Checkpoint) -> [u8; 64] {
    key.sign(checkpoint_statement(checkpoint).as_bytes()).to_bytes()
}

/// Whether `signature` is `key`'s signature of the checkpoint.
pub fn checkpoint_signature_valid(key: &VerifyingKey, checkpoint: &Checkpoint, signature: &[u8]) -> bool {
    let Ok(signature) = Signature::from_slice(signature) else { return false };
    key.verify(checkpoint_statement(checkpoint).as_bytes(), &signature).is_ok()
}

/// Proof nodes as stored: concatenated; `None` unless a whole number of hashes.
pub fn proof_from_bytes(bytes: &[u8]) -> Option<Vec<Hash>> {
    bytes.len().is_multiple_of(32).then(|| bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp_micros(micros).unwrap().naive_utc()
    }

    fn fields() -> RowFields<'static> {
        RowFields {
            part: 3,
            idx: 7,
            partner_id: "bank",
            method: "/medins.identity.v1.PersonService/GetPerson",
            person_id: "0192f0c1-0000-7000-8000-000000000001",
            outcome: "OK",
            recorded_at: at(1_795_000_000_123_456),
        }
    }

    #[test]
    fn the_leaf_covers_every_field_and_fields_cannot_trade_bytes() {
        let base = fields();
        let leaf = row_leaf(&base);
        let variants = [
            RowFields { part: 4, ..base.clone() },
            RowFields { idx: 8, ..base.clone() },
            RowFields { partner_id: "ops", ..base.clone() },
            RowFields { method: "/x/Y", ..base.clone() },
            RowFields { person_id: "0192f0c1-0000-7000-8000-000000000002", ..base.clone() },
            RowFields { outcome: "NOT_FOUND", ..base.clone() },
            RowFields { recorded_at: at(1_795_000_000_123_457), ..base.clone() },
            RowFields { partner_id: "ban", method: "k/medins.identity.v1.PersonService/GetPerson", ..base.clone() },
        ];
        for variant in &variants {
            assert_ne!(row_leaf(variant), leaf, "{variant:?}");
        }
    }

    #[test]
    fn macs_depend_on_the_key_the_service_and_the_row() {
        let key = MacKey::derive(&SigningKey::from_bytes(&[1; 32]));
        let other = MacKey::derive(&SigningKey::from_bytes(&[2; 32]));
        let leaf = row_leaf(&fields());
        let mac = key.row_mac("identity-svc", &leaf);
        assert!(mac_matches(&mac, &mac));
        assert_ne!(mac, other.row_mac("identity-svc", &leaf));
        assert_ne!(mac, key.row_mac("insurance-svc", &leaf));
        assert_ne!(mac, key.row_mac("identity-svc", &row_leaf(&RowFields { idx: 8, ..fields() })));
        assert_ne!(key.head_mac("identity-svc", 1, 5), key.head_mac("identity-svc", 1, 4));
        assert_ne!(key.head_mac("identity-svc", 1, 5), key.head_mac("identity-svc", 2, 5));
        assert!(!mac_matches(&mac, &mac[..31]));
    }

    #[test]
    fn checkpoint_signatures_cover_every_field() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let checkpoint = Checkpoint {
            service: "identity-svc".into(),
            part: 5,
            tree_size: 10,
            root: [1; 32],
            prev_size: 4,
            prev_root: [2; 32],
            created_at: "2026-12-07T07:00:00Z".into(),
            key_id: "ak-00000001".into(),
        };
        let signature = sign_checkpoint(&key, &checkpoint);
        let public = key.verifying_key();
        assert!(checkpoint_signature_valid(&public, &checkpoint, &signature));
        let changed = [
            Checkpoint { service: "insurance-svc".into(), ..checkpoint.clone() },
            Checkpoint { part: 6, ..checkpoint.clone() },
            Checkpoint { tree_size: 11, ..checkpoint.clone() },
            Checkpoint { root: [3; 32], ..checkpoint.clone() },
            Checkpoint { prev_size: 5, ..checkpoint.clone() },
            Checkpoint { prev_root: [3; 32], ..checkpoint.clone() },
            Checkpoint { created_at: "2026-12-07T07:00:01Z".into(), ..checkpoint.clone() },
            Checkpoint { key_id: "ak-00000002".into(), ..checkpoint.clone() },
        ];
        for variant in &changed {
            assert!(!checkpoint_signature_valid(&public, variant, &signature), "{variant:?}");
        }
        assert!(!checkpoint_signature_valid(
            &SigningKey::from_bytes(&[8; 32]).verifying_key(),
            &checkpoint,
            &signature
        ));
        assert!(!checkpoint_signature_valid(&public, &checkpoint, &signature[..63]));
        assert!(checkpoint_statement(&checkpoint).starts_with("medins audit checkpoint v1\nservice: identity-svc\n"));
    }

    #[test]
    fn partitions_spread_persons() {
        let parts: std::collections::HashSet<i32> =
            (0..1000).map(|i| partition_of(&uuid::Uuid::from_u128(i).to_string(), PARTITIONS)).collect();
        assert!(parts.len() > PARTITIONS as usize * 3 / 4, "{}", parts.len());
        assert!(parts.iter().all(|p| (0..PARTITIONS).contains(p)));
        assert!((0..100).all(|i| partition_of(&uuid::Uuid::from_u128(i).to_string(), 1) == 0));
        assert!(proof_from_bytes(&[0; 64]).is_some_and(|p| p.len() == 2));
        assert!(proof_from_bytes(&[0; 63]).is_none());
    }
}
