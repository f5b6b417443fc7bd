//! Checkpoints for an outside witness (README "Audit trail"): the export document `medins audit
//! export-checkpoints` writes, and the check `medins audit check-consistency` makes between an
//! export the witness kept and a later one: every checkpoint signed, each extending the one
//! before by a valid RFC 6962 consistency proof, and nothing the witness saw before rewritten
//! or removed. Pure.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::merkle::empty_root;
use super::store::ExportedCheckpoint;

/// `format` of an export document.
pub const EXPORT_FORMAT: &str = "medins-audit-checkpoints/v1";

/// A public audit key as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedKey {
    /// Key id (`ak-...`).
    pub key_id: String,
    /// Raw Ed25519 public key, hex.
    pub public_key: String,
}

/// The export document (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointExport {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// When exported (RFC 3339).
    pub exported_at: String,
    /// Public keys of the audit key file; a witness pins them at first sight.
    pub keys: Vec<ExportedKey>,
    /// Every checkpoint of both services, by service, partition and size.
    pub checkpoints: Vec<ExportedCheckpoint>,
}

/// What [`check_consistency`] found consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencySummary {
    /// (service, partition) sequences checked.
    pub partitions: usize,
    /// Checkpoints in the newer export.
    pub checkpoints: usize,
    /// Checkpoints that grew a partition beyond the older export's head.
    pub new_checkpoints: usize,
    /// Key ids first seen in the newer export (a rotation).
    pub new_keys: Vec<String>,
}

fn parse_keys(export: &CheckpointExport) -> Result<HashMap<String, VerifyingKey>, String> {
    export
        .keys
        .iter()
        .map(|key| {
            let bytes: [u8; 32] = hex::decode(&key.public_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("key {}: not 32 bytes of hex", key.key_id))?;
            let public =
                VerifyingKey::from_bytes(&bytes).map_err(|_| format!("key {}: not an Ed25519 key", key.key_id))?;
            Ok((key.key_id.clone(), public))
        })
        .collect()
}

type Sequences<'a> = BTreeMap<(&'a str, i32), Vec<&'a ExportedCheckpoint>>;

fn sequences(export: &CheckpointExport) -> Sequences<'_> {
    let mut by_partition: Sequences<'_> = BTreeMap::new();
    for checkpoint in &export.checkpoints {
        by_partition.entry((checkpoint.service.as_str(), checkpoint.partition)).or_default().push(checkpoint);
    }
    for sequence in by_partition.values_mut() {
        sequence.sort_by_key(|c| c.tree_size);
    }
    by_partition
}

/// Checks every checkpoint of `export` against `keys`: signed, and each extending the one before.
fn check_sequences(export: &CheckpointExport, keys: &HashMap<String, VerifyingKey>) -> Result<(), String> {
    for ((service, part), sequence) in sequences(export) {
        let (mut prev_size, mut prev_root) = (0i64, empty_root());
        for checkpoint in sequence {
            let at = format!("{service} partition {part} size {}", checkpoint.tree_size);
            let key = keys.get(&checkpoint.key_id).ok_or_else(|| format!("{at}: signed by unknown key"))?;
            let statement = checkpoint.check(key).map_err(|why| format!("{at}: {why}"))?;
            if statement.prev_size != prev_size || statement.prev_root != prev_root {
                return Err(format!("{at}: does not extend the checkpoint before it (one was removed or replaced)"));
            }
            (prev_size, prev_root) = (statement.tree_size, statement.root);
        }
    }
    Ok(())
}

/// Checks that `newer` is a consistent continuation of `older`: both well formed; keys of the
/// older export unchanged (new key ids are accepted and listed, a rotation); every checkpoint
/// of the newer export signed and proved consistent with the one before; and every checkpoint
/// of the older export present, unchanged, in the newer one. Composed, the proofs show each
/// partition's newest head extends the head the witness held.
pub fn check_consistency(older: &CheckpointExport, newer: &CheckpointExport) -> Result<ConsistencySummary, String> {
    for export in [older, newer] {
        if export.format != EXPORT_FORMAT {
            return Err(format!("unknown export format {:?} (expected {EXPORT_FORMAT})", export.format));
        }
    }
    let pinned = parse_keys(older)?;
    let mut keys = pinned.clone();
    let mut new_keys = Vec::new();
    for (kid, key) in parse_keys(newer)? {
        match pinned.get(&kid) {
            Some(known) if *known != key => return Err(format!("key {kid} changed between the exports")),
            Some(_) => {}
            None => {
                new_keys.push(kid.clone());
                keys.insert(kid, key);
            }
        }
    }
    new_keys.sort();
    check_sequences(older, &pinned)?;
    check_sequences(newer, &keys)?;
    let newer_sequences = sequences(newer);
    let mut new_checkpoints = 0;
    for ((service, part), old_sequence) in sequences(older) {
        let new_sequence = newer_sequences
            .get(&(service, part))
            .ok_or_else(|| format!("{service} partition {part}: its checkpoints are gone from the newer export"))?;
        for old in &old_sequence {
            if !new_sequence.iter().any(|new| new == old) {
                return Err(format!(
                    "{service} partition {part} size {}: the checkpoint the witness holds was removed or changed",
                    old.tree_size
                ));
            }
        }
        let old_head = old_sequence.last().map(|c| c.tree_size).unwrap_or(0);
        new_checkpoints += new_sequence.iter().filter(|c| c.tree_size > old_head).count();
    }
    for ((service, part), sequence) in &newer_sequences {
        if !older.checkpoints.iter().any(|c| c.service == *service && c.partition == *part) {
            new_checkpoints += sequence.len();
        }
    }
    Ok(ConsistencySummary {
        partitions: newer_sequences.len(),
        checkpoints: newer.checkpoints.len(),
        new_checkpoints,
        new_keys,
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::audit::{
        merkle::{Frontier, extend, leaf_hash},
        seal::{Checkpoint, sign_checkpoint},
    };

    struct Log {
        key: SigningKey,
        leaves: Vec<[u8; 32]>,
        checkpoints: Vec<ExportedCheckpoint>,
    }

    impl Log {
        fn new() -> Self {
            Log { key: SigningKey::from_bytes(&[5; 32]), leaves: Vec::new(), checkpoints: Vec::new() }
        }

        fn grow_and_seal(&mut self, n: usize) {
            let prev = self.checkpoints.last().map(|c| c.tree_size).unwrap_or(0) as usize;
            let mut frontier = Frontier::new();
            for leaf in &self.leaves[..prev] {
                frontier.push(*leaf);
            }
            let prev_root = frontier.root();
            for i in 0..n {
                self.leaves.push(leaf_hash(&[(prev + i) as u8]));
            }
            let (_, root, proof) = extend(&frontier, &self.leaves[prev..]);
            let statement = Checkpoint {
                service: "identity-svc".into(),
                part: 3,
                tree_size: self.leaves.len() as i64,
                root,
                prev_size: prev as i64,
                prev_root,
                created_at: "2026-12-07T07:00:00Z".into(),
                key_id: "ak-1".into(),
            };
            let signature = sign_checkpoint(&self.key, &statement);
            self.checkpoints.push(ExportedCheckpoint {
                service: statement.service,
                partition: 3,
                tree_size: statement.tree_size,
                root: hex::encode(root),
                prev_size: statement.prev_size,
                prev_root: hex::encode(prev_root),
                created_at: statement.created_at,
                key_id: statement.key_id,
                consistency_proof: proof.iter().map(hex::encode).collect(),
                signature: hex::encode(signature),
            });
        }

        fn export(&self) -> CheckpointExport {
            CheckpointExport {
                format: EXPORT_FORMAT.into(),
                exported_at: "2026-12-07T07:00:00Z".into(),
                keys: vec![ExportedKey {
                    key_id: "ak-1".into(),
                    public_key: hex::encode(self.key.verifying_key().to_bytes()),
                }],
                checkpoints: self.checkpoints.clone(),
            }
        }
    }

    #[test]
    fn a_grown_log_is_consistent_with_what_the_witness_kept() {
        let mut log = Log::new();
        log.grow_and_seal(3);
        log.grow_and_seal(4);
        let older = log.export();
        log.grow_and_seal(6);
        let newer = log.export();
        let summary = check_consistency(&older, &newer).unwrap();
        assert_eq!((summary.partitions, summary.checkpoints, summary.new_checkpoints), (1, 3, 1));
        assert!(check_consistency(&newer, &newer).is_ok());
    }

    #[test]
    fn rewritten_removed_or_forged_checkpoints_are_refused() {
        let mut log = Log::new();
        log.grow_and_seal(3);
        log.grow_and_seal(4);
        let older = log.export();
        log.grow_and_seal(6);

        // The last checkpoint the witness holds removed.
        let mut removed = log.export();
        removed.checkpoints.remove(1);
        assert!(check_consistency(&older, &removed).unwrap_err().contains("does not extend"));

        // History rewritten and re-sealed with the key: the old head is no longer in the chain.
        let mut rewritten = Log::new();
        rewritten.grow_and_seal(3);
        rewritten.leaves[1][0] ^= 1;
        rewritten.checkpoints.clear();
        rewritten.grow_and_seal(4);
        rewritten.grow_and_seal(6);
        assert!(check_consistency(&older, &rewritten.export()).is_err());

        // A tampered root or proof.
        let mut tampered = log.export();
        tampered.checkpoints[2].root = hex::encode([0u8; 32]);
        assert!(check_consistency(&older, &tampered).unwrap_err().contains("signature"));
        let mut tampered = log.export();
        tampered.checkpoints[2].consistency_proof.pop();
        assert!(check_consistency(&older, &tampered).is_err());

        // A key swapped under a known id.
        let mut swapped = log.export();
        swapped.keys[0].public_key = hex::encode(SigningKey::from_bytes(&[6; 32]).verifying_key().to_bytes());
        assert!(check_consistency(&older, &swapped).unwrap_err().contains("changed"));

        let mut wrong_format = log.export();
        wrong_format.format = "v0".into();
        assert!(check_consistency(&older, &wrong_format).is_err());
    }
}
