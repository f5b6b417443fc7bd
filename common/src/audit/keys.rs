//! The audit key file (docs/architecture.md#who-may-call-what): Ed25519 keys with ids that sign
//! checkpoints, from which the row MAC keys are derived. Kept beside the person-token keys, never
//! in the database, so that whoever can write the database cannot re-seal what they changed.
//! Rotated with `medins keys rotate-audit`; retired keys are kept (never pruned) because
//! checkpoints and rows they sealed are verified for as long as the log exists.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, RwLock},
};

use chrono::Duration;
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::keyring::{KeyFileError, RingSettings, SigningKeyRing, WatchedKeyRing};

use super::seal::MacKey;

/// Settings of the audit key ring: key ids `ak-<8 hex>`, retired keys listed for a century.
pub const AUDIT_KEY_RING: RingSettings = RingSettings {
    listed_for: Duration::days(36_500),
    kid_prefix: "ak-",
    dated_kids: false,
    strict_kids: false,
    file_header: "# medins audit keys: sign audit checkpoints and key the per-row MACs (README, \"Audit trail\").\n\
                  # Keep this file outside the database and its backups; retired keys must be kept.\n",
};

/// The audit keys in force: the key file, re-read when it changes.
#[derive(Clone, Debug)]
pub struct AuditKeys {
    ring: Arc<WatchedKeyRing>,
    /// The current key with its MAC key derived, replaced when the file changes.
    current: Arc<RwLock<Arc<CurrentAuditKey>>>,
}

/// The current key, ready to use: its id, signing key and derived MAC key.
#[derive(Clone, Debug)]
pub struct CurrentAuditKey {
    /// Key id.
    pub kid: String,
    /// The checkpoint signing key.
    pub signing: SigningKey,
    /// The row MAC key.
    pub mac: MacKey,
}

impl AuditKeys {
    /// Loads the key file at `path`.
    pub fn load(path: &Path) -> Result<AuditKeys, KeyFileError> {
        Ok(AuditKeys::over(WatchedKeyRing::load(AUDIT_KEY_RING, path)?))
    }

    /// Keys from memory (tests).
    pub fn from_ring(ring: SigningKeyRing) -> AuditKeys {
        AuditKeys::over(WatchedKeyRing::from_ring(ring))
    }

    fn over(ring: WatchedKeyRing) -> AuditKeys {
        let current = Arc::new(RwLock::new(Arc::new(derive_current(&ring))));
        AuditKeys { ring: Arc::new(ring), current }
    }

    /// A new ring with one key.
    pub fn generate_ring() -> SigningKeyRing {
        SigningKeyRing::generate(AUDIT_KEY_RING, chrono::Utc::now())
    }

    /// Re-reads the key file if it changed (a rotation); a broken file leaves the keys in force.
    pub fn reload_if_changed(&self) {
        match self.ring.reload_if_changed() {
            Ok(true) => *self.current.write().expect("audit key lock") = Arc::new(derive_current(&self.ring)),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "audit key file could not be re-read; the previous keys stay in force")
            }
        }
    }

    /// The current key.
    pub fn current(&self) -> Arc<CurrentAuditKey> {
        self.current.read().expect("audit key lock").clone()
    }

    /// The public keys, for an export to a witness.
    pub fn public_keys(&self) -> Vec<super::witness::ExportedKey> {
        let ring = self.ring.ring();
        ring.key_ids()
            .into_iter()
            .filter_map(|kid| {
                let signing = ring.signing_key(kid)?;
                Some(super::witness::ExportedKey {
                    key_id: kid.to_owned(),
                    public_key: hex::encode(signing.verifying_key().to_bytes()),
                })
            })
            .collect()
    }

    /// Every key by id, for verification: (MAC key, public key).
    pub fn all(&self) -> HashMap<String, (MacKey, VerifyingKey)> {
        let ring = self.ring.ring();
        ring.key_ids()
            .into_iter()
            .filter_map(|kid| {
                let signing = ring.signing_key(kid)?;
                Some((kid.to_owned(), (MacKey::derive(signing), signing.verifying_key())))
            })
            .collect()
    }
}

fn derive_current(ring: &WatchedKeyRing) -> CurrentAuditKey {
    let ring = ring.ring();
    let (kid, signing) = ring.current_signer();
    CurrentAuditKey { kid: kid.to_owned(), signing: signing.clone(), mac: MacKey::derive(signing) }
}
