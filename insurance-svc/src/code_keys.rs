//! Payment-code signing keys in insurance-svc: the key ring from `--code-keys-file` (created by
//! `medins up`, rotated with `medins keys rotate-codes`) and the verifying keys derived from it.
//!
//! Rotation reaches running servers without a signal: the file is re-read when it changes on
//! disk, checked every `--code-keys-check-interval` (as identity-svc does for person-token keys).
//! A file that fails to load is logged and the previous keys stay in force. Every replica must
//! mount the same file: a code issued by one replica is verified by any.

use std::{
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use medins_common::{
    clock::SharedClock,
    keyring::{KeyFileError, ListedKey, SigningKeyRing, WatchedKeyRing, kid_random_part},
};
use uuid::Uuid;

use crate::domain::code::{CODE_KEY_RING, CodeError, CodeKeySet, CodePayload, sign_code, verify_code};

/// A code just issued.
#[derive(Clone)]
pub struct IssuedCode {
    /// The text (secret until shown: never log it).
    pub text: String,
    /// What it says.
    pub payload: CodePayload,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode").field("key_id", &self.payload.key_id_text()).finish_non_exhaustive()
    }
}

/// The code keys of this replica.
#[derive(Debug)]
pub struct CodeKeys {
    ring: WatchedKeyRing,
    verifying: RwLock<Arc<CodeKeySet>>,
}

impl CodeKeys {
    /// Loads the key file at `path`.
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<CodeKeys, KeyFileError> {
        Ok(CodeKeys::over(WatchedKeyRing::load(CODE_KEY_RING, path)?, now))
    }

    /// Keys from memory, never reloaded (tests, embedding without a key file).
    pub fn from_ring(ring: SigningKeyRing, now: DateTime<Utc>) -> CodeKeys {
        CodeKeys::over(WatchedKeyRing::from_ring(ring), now)
    }

    fn over(ring: WatchedKeyRing, now: DateTime<Utc>) -> CodeKeys {
        let verifying = RwLock::new(Arc::new(CodeKeySet::new(ring.ring().listed_keys(now))));
        CodeKeys { ring, verifying }
    }

    /// Signs a fresh code for `voucher_id` at `now` with the current key.
    pub fn issue(&self, voucher_id: Uuid, now: DateTime<Utc>) -> IssuedCode {
        let ring = self.ring.ring();
        let (kid, key) = ring.current_signer();
        let key_id = kid_random_part(&CODE_KEY_RING, kid).expect("a code ring holds code key ids only");
        let payload = CodePayload::new(key_id, voucher_id, now, medins_common::crypto::random_bytes());
        IssuedCode { text: sign_code(key, &payload), payload }
    }

    /// Verifies a code's shape, signature and time (no database).
    pub fn verify(&self, text: &str, now: DateTime<Utc>) -> Result<CodePayload, CodeError> {
        let keys = self.verifying.read().expect("code keys lock").clone();
        verify_code(text, &keys, now)
    }

    /// The keys verifiers must know now.
    pub fn listed_keys(&self, now: DateTime<Utc>) -> Vec<ListedKey> {
        self.ring.ring().listed_keys(now)
    }

    /// Re-reads the key file if it changed; true if new keys were loaded. On error the previous
    /// keys stay in force.
    pub fn reload_if_changed(&self, now: DateTime<Utc>) -> Result<bool, KeyFileError> {
        let reloaded = self.ring.reload_if_changed()?;
        if reloaded {
            let ring = self.ring.ring();
            tracing::info!(current_kid = ring.current_kid(), "code keys reloaded");
            *self.verifying.write().expect("code keys lock") = Arc::new(CodeKeySet::new(ring.listed_keys(now)));
        }
        Ok(reloaded)
    }

    /// Checks the key file every `interval` until the task is aborted.
    pub fn spawn_watcher(self: &Arc<Self>, clock: SharedClock, interval: Duration) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = keys.reload_if_changed(clock.now()) {
                    tracing::warn!(%error, "code key file not reloaded; previous keys stay in force");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration as ChronoDuration;

    use super::*;
    use crate::domain::code::CodeError;

    #[test]
    fn a_rotated_key_file_is_picked_up_and_old_codes_verify_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code-keys.toml");
        let now = Utc::now();
        let mut ring = SigningKeyRing::generate(CODE_KEY_RING, now);
        ring.save_new(&path).unwrap();
        let keys = CodeKeys::load(&path, now).unwrap();
        let voucher = Uuid::now_v7();
        let old = keys.issue(voucher, now);
        assert!(!keys.reload_if_changed(now).unwrap());

        let new_kid = ring.rotate(now);
        ring.save(&path).unwrap();
        assert!(keys.reload_if_changed(now).unwrap());
        let new = keys.issue(voucher, now);
        assert_eq!(new.payload.key_id_text(), new_kid);
        assert_eq!(keys.verify(&old.text, now).unwrap(), old.payload);
        assert_eq!(keys.verify(&new.text, now).unwrap(), new.payload);
        // Past the old key's listing (retired now + 65 s) its codes are refused as unknown.
        assert_eq!(keys.verify(&old.text, now + ChronoDuration::seconds(66)), Err(CodeError::Invalid));

        std::fs::write(&path, "broken").unwrap();
        assert!(keys.reload_if_changed(now).is_err());
        assert_eq!(keys.issue(voucher, now).payload.key_id_text(), new_kid, "previous keys stay in force");
    }
}
