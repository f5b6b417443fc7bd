//! Ed25519 signing key rings kept in a key file, for anything medins signs with rotating keys:
//! payment codes (insurance-svc) and, through the same shape, person tokens (identity-svc).
//!
//! A ring holds exactly one current key and the keys it replaced. [`SigningKeyRing::rotate`]
//! makes a new current key and retires the old one; a retired key stays listed (its public
//! part, see [`SigningKeyRing::listed_keys`]) until `retired_at` + [`RingSettings::listed_for`],
//! when every object it signed has expired, and is pruned after that.
//!
//! The key file is TOML, mode 0600, replaced atomically on save:
//!
//! ```toml
//! [[keys]]
//! kid = "ck-1a2b3c4d"
//! private_key = "<64 hex digits: the Ed25519 seed>"
//! created_at = "2026-11-23T00:00:00Z"
//! retired_at = "2026-12-01T00:00:00Z"   # absent on the current key
//! ```
//!
//! [`WatchedKeyRing`] re-reads the file when it changes on disk (modification time, size or
//! inode), so a rotation reaches every replica that mounts the file without a signal.
//!
//! Nothing here puts key material or key-file text into an error message or a `Debug` output.

use std::{
    collections::HashSet,
    fmt,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::crypto::random_bytes;

/// What distinguishes one kind of ring from another.
#[derive(Debug, Clone, Copy)]
pub struct RingSettings {
    /// How long a retired key stays listed: the lifetime of what it signs, plus any verifier
    /// clock skew allowed.
    pub listed_for: Duration,
    /// Prefix of generated key ids, e.g. `ck-`.
    pub kid_prefix: &'static str,
    /// Whether generated key ids carry the creation date (`pt-20261123-1a2b3c4d`) or only the
    /// random part (`ck-1a2b3c4d`).
    pub dated_kids: bool,
    /// Whether every key id in a loaded file must have the generated shape exactly (prefix,
    /// date if dated, 8 lower-case hex digits), for formats that carry the random part in
    /// binary.
    pub strict_kids: bool,
    /// Comment lines written at the top of new key files.
    pub file_header: &'static str,
}

/// A public key as listed for verifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// Key id.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: [u8; 32],
    /// For a retired key: when its last signed object has expired and it stops being listed.
    /// `None` for the current signing key.
    pub not_after: Option<DateTime<Utc>>,
}

impl ListedKey {
    /// The public key, base64url without padding.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key)
    }

    /// A listed key from its published form; `None` if the key is not base64url of 32 bytes, or
    /// not a valid Ed25519 point.
    pub fn from_base64url(kid: &str, public_key: &str, not_after: Option<DateTime<Utc>>) -> Option<ListedKey> {
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(public_key).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()?;
        Some(ListedKey { kid: kid.to_owned(), public_key: bytes, not_after })
    }
}

/// Why a key file could not be loaded, parsed or saved. Messages name the file and entry,
/// never key material (a TOML error reports only its line).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// [`SigningKeyRing::save_new`] refuses to replace an existing file.
    #[error("key file {path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Not valid TOML, or not the expected structure.
    #[error(
        "key file is not valid (line {line}): expected [[keys]] tables with kid, private_key, created_at and optional retired_at"
    )]
    Syntax {
        /// 1-based line of the error, 0 if unknown.
        line: usize,
    },
    /// An entry has a bad value.
    #[error("key file entry `{entry}` is invalid: {reason}")]
    Invalid {
        /// The entry, e.g. `keys[2].created_at`.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// There must be exactly one key without `retired_at`.
    #[error("key file must have exactly one current key (without retired_at), found {0}")]
    CurrentKeyCount(usize),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<KeyFileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    kid: String,
    private_key: String,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<String>,
}

struct RingKey {
    kid: String,
    signing: SigningKey,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

/// Signing keys: one current key and retired keys still listed. `Debug` shows key ids and
/// times only.
pub struct SigningKeyRing {
    settings: RingSettings,
    /// Oldest first; exactly one has `retired_at == None`.
    keys: Vec<RingKey>,
}

impl SigningKeyRing {
    /// A ring with one fresh current key.
    pub fn generate(settings: RingSettings, now: DateTime<Utc>) -> SigningKeyRing {
        let mut ring = SigningKeyRing { settings, keys: Vec::new() };
        ring.push_new_key(now);
        ring
    }

    /// The settings of this ring.
    pub fn settings(&self) -> &RingSettings {
        &self.settings
    }

    fn push_new_key(&mut self, now: DateTime<Utc>) -> String {
        let kid = loop {
            let random = hex::encode(random_bytes::<4>());
            let candidate = if self.settings.dated_kids {
                format!("{}{}-{random}", self.settings.kid_prefix, now.format("%Y%m%d"))
            } else {
                format!("{}{random}", self.settings.kid_prefix)
            };
            if !self.keys.iter().any(|k| k.kid == candidate) {
                break candidate;
            }
        };
        let signing = SigningKey::from_bytes(&random_bytes::<32>());
        self.keys.push(RingKey { kid: kid.clone(), signing, created_at: now, retired_at: None });
        kid
    }

    /// Reads and validates a key file.
    pub fn load(settings: RingSettings, path: &Path) -> Result<SigningKeyRing, KeyFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| KeyFileError::Io { path: path.to_owned(), source })?;
        SigningKeyRing::from_toml_str(settings, &text)
    }

    /// Parses and validates key-file text (see the module doc). Key ids must be unique
    /// (letters, digits, `.`, `_`, `-`, at most 64; the generated shape when
    /// [`RingSettings::strict_kids`]), exactly one key has no `retired_at`, times are RFC 3339,
    /// and no key is retired before it was created.
    pub fn from_toml_str(settings: RingSettings, text: &str) -> Result<SigningKeyRing, KeyFileError> {
        let file: KeyFile = toml::from_str(text).map_err(|e| KeyFileError::Syntax {
            line: e
                .span()
                .map(|span| 1 + text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count())
                .unwrap_or(0),
        })?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.into_iter().enumerate() {
            let invalid = |field: &str, reason| KeyFileError::Invalid { entry: format!("keys[{i}].{field}"), reason };
            if !valid_kid(&entry.kid) {
                return Err(invalid("kid", "must be 1-64 letters, digits, '.', '_' or '-'"));
            }
            if settings.strict_kids && kid_random_part(&settings, &entry.kid).is_none() {
                return Err(invalid("kid", "must be the prefix followed by 8 lower-case hex digits"));
            }
            let seed: [u8; 32] = hex::decode(entry.private_key.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| invalid("private_key", "must be exactly 64 hex digits (a 32-byte Ed25519 seed)"))?;
            let created_at = parse_time(&entry.created_at).ok_or_else(|| invalid("created_at", "must be RFC 3339"))?;
            let retired_at = entry
                .retired_at
                .as_deref()
                .map(|text| parse_time(text).ok_or_else(|| invalid("retired_at", "must be RFC 3339")))
                .transpose()?;
            if retired_at.is_some_and(|retired| retired < created_at) {
                return Err(invalid("retired_at", "must not be before created_at"));
            }
            keys.push(RingKey { kid: entry.kid, signing: SigningKey::from_bytes(&seed), created_at, retired_at });
        }
        let ring = SigningKeyRing { settings, keys };
        ring.validate()?;
        Ok(ring)
    }

    fn validate(&self) -> Result<(), KeyFileError> {
        let mut kids = HashSet::new();
        let mut public = HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if !kids.insert(key.kid.as_str()) {
                return Err(KeyFileError::Invalid { entry: format!("keys[{i}].kid"), reason: "appears twice" });
            }
            if !public.insert(key.signing.verifying_key().to_bytes()) {
                return Err(KeyFileError::Invalid {
                    entry: format!("keys[{i}].private_key"),
                    reason: "equals another key",
                });
            }
        }
        let current = self.keys.iter().filter(|k| k.retired_at.is_none()).count();
        if current != 1 {
            return Err(KeyFileError::CurrentKeyCount(current));
        }
        Ok(())
    }

    /// The key file text: every private key in clear, never log it.
    pub fn to_toml_string(&self) -> String {
        let file = KeyFile {
            keys: self
                .keys
                .iter()
                .map(|key| KeyFileEntry {
                    kid: key.kid.clone(),
                    private_key: hex::encode(key.signing.to_bytes()),
                    created_at: format_time(key.created_at),
                    retired_at: key.retired_at.map(format_time),
                })
                .collect(),
        };
        let body = toml::to_string(&file).expect("key file serialises");
        format!("{}\n{body}", self.settings.file_header)
    }

    /// Writes the ring to a new file (mode 0600), refusing to replace an existing one.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let mut file = private_options().open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::AlreadyExists { path: path.to_owned() }
            } else {
                KeyFileError::Io { path: path.to_owned(), source }
            }
        })?;
        let io = |source| KeyFileError::Io { path: path.to_owned(), source };
        file.write_all(self.to_toml_string().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Replaces the file at `path` atomically (a 0600 temporary file renamed over it), so a
    /// server re-reading the file never sees half of it.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io { path: path.to_owned(), source };
        let tmp = path.with_extension("toml.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = private_options().open(&tmp).map_err(io)?;
        file.write_all(self.to_toml_string().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Makes a fresh key current, retires the previous current key at `now`, prunes keys no
    /// longer listed, and returns the new key id.
    pub fn rotate(&mut self, now: DateTime<Utc>) -> String {
        for key in self.keys.iter_mut().filter(|k| k.retired_at.is_none()) {
            key.retired_at = Some(now);
        }
        let kid = self.push_new_key(now);
        self.prune(now);
        kid
    }

    /// Drops retired keys no longer listed (`retired_at + listed_for <= now`); returns how many.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.keys.len();
        let listed_for = self.settings.listed_for;
        self.keys.retain(|key| key.retired_at.is_none_or(|retired| retired + listed_for > now));
        before - self.keys.len()
    }

    fn current(&self) -> &RingKey {
        self.keys.iter().find(|k| k.retired_at.is_none()).expect("a validated ring has a current key")
    }

    /// Id of the current signing key.
    pub fn current_kid(&self) -> &str {
        &self.current().kid
    }

    /// The current key id and signing key.
    pub fn current_signer(&self) -> (&str, &SigningKey) {
        let key = self.current();
        (&key.kid, &key.signing)
    }

    /// The signing key with id `kid`, current or retired (for keys that also derive other keys,
    /// as the audit ring's MAC keys).
    pub fn signing_key(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &k.signing)
    }

    /// Ids of every key in the ring, oldest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// The public keys verifiers must know at `now`: the current key and retired keys whose
    /// signed objects may still be live.
    pub fn listed_keys(&self, now: DateTime<Utc>) -> Vec<ListedKey> {
        self.keys
            .iter()
            .filter_map(|key| {
                let not_after = key.retired_at.map(|retired| retired + self.settings.listed_for);
                (not_after.is_none_or(|end| end > now)).then(|| ListedKey {
                    kid: key.kid.clone(),
                    public_key: key.signing.verifying_key().to_bytes(),
                    not_after,
                })
            })
            .collect()
    }
}

impl fmt::Debug for SigningKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct KeyInfo<'a>(&'a RingKey);
        impl fmt::Debug for KeyInfo<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("SigningKey")
                    .field("kid", &self.0.kid)
                    .field("created_at", &self.0.created_at)
                    .field("retired_at", &self.0.retired_at)
                    .field("private_key", &"<redacted>")
                    .finish()
            }
        }
        f.debug_struct("SigningKeyRing")
            .field("current", &self.keys.iter().find(|k| k.retired_at.is_none()).map(|k| &k.kid))
            .field("keys", &self.keys.iter().map(KeyInfo).collect::<Vec<_>>())
            .finish()
    }
}

/// The 4 random bytes of a generated key id (`<prefix>[yyyymmdd-]<8 hex>`), if `kid` has that
/// shape exactly.
pub fn kid_random_part(settings: &RingSettings, kid: &str) -> Option<[u8; 4]> {
    let rest = kid.strip_prefix(settings.kid_prefix)?;
    let hex_part = if settings.dated_kids {
        let (date, hex_part) = rest.split_once('-')?;
        (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(hex_part)?
    } else {
        rest
    };
    if hex_part.len() != 8 || !hex_part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(hex_part).ok()?.try_into().ok()
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= 64 && kid.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.with_timezone(&Utc))
}

fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

// ----------------------------------------------------------------------------------------------
// Watching the key file

/// What identifies a version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<FileStamp> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode })
    }
}

/// A ring loaded from a key file and re-read when the file changes. A file that fails to load
/// leaves the previous keys in force.
pub struct WatchedKeyRing {
    path: Option<PathBuf>,
    ring: RwLock<Arc<SigningKeyRing>>,
    stamp: Mutex<Option<FileStamp>>,
}

impl fmt::Debug for WatchedKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedKeyRing").field("path", &self.path).field("ring", &*self.ring()).finish()
    }
}

impl WatchedKeyRing {
    /// Loads the key file at `path`.
    pub fn load(settings: RingSettings, path: &Path) -> Result<WatchedKeyRing, KeyFileError> {
        let stamp = FileStamp::of(path).map_err(|source| KeyFileError::Io { path: path.to_owned(), source })?;
        let ring = SigningKeyRing::load(settings, path)?;
        Ok(WatchedKeyRing {
            path: Some(path.to_owned()),
            ring: RwLock::new(Arc::new(ring)),
            stamp: Mutex::new(Some(stamp)),
        })
    }

    /// A ring from memory, never reloaded (tests, embedding).
    pub fn from_ring(ring: SigningKeyRing) -> WatchedKeyRing {
        WatchedKeyRing { path: None, ring: RwLock::new(Arc::new(ring)), stamp: Mutex::new(None) }
    }

    /// The ring in force.
    pub fn ring(&self) -> Arc<SigningKeyRing> {
        self.ring.read().expect("key ring lock").clone()
    }

    /// Re-reads the key file if it changed on disk; true if new keys were loaded. On error the
    /// previous keys stay in force.
    pub fn reload_if_changed(&self) -> Result<bool, KeyFileError> {
        let Some(path) = &self.path else { return Ok(false) };
        let stamp = FileStamp::of(path).map_err(|source| KeyFileError::Io { path: path.clone(), source })?;
        let mut known = self.stamp.lock().expect("key stamp lock");
        if *known == Some(stamp) {
            return Ok(false);
        }
        let settings = *self.ring().settings();
        let ring = SigningKeyRing::load(settings, path)?;
        *self.ring.write().expect("key ring lock") = Arc::new(ring);
        *known = Some(stamp);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODES: RingSettings = RingSettings {
        listed_for: Duration::seconds(65),
        kid_prefix: "ck-",
        dated_kids: false,
        strict_kids: true,
        file_header: "# test keys\n",
    };

    const DATED: RingSettings = RingSettings {
        listed_for: Duration::minutes(15),
        kid_prefix: "pt-",
        dated_kids: true,
        strict_kids: false,
        file_header: "# test keys\n",
    };

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn generated_key_ids_have_the_configured_shape() {
        let ring = SigningKeyRing::generate(CODES, t0());
        assert!(kid_random_part(&CODES, ring.current_kid()).is_some(), "{}", ring.current_kid());
        assert_eq!(ring.current_kid().len(), 11);
        let dated = SigningKeyRing::generate(DATED, t0());
        assert!(dated.current_kid().starts_with("pt-20261123-"));
        assert!(kid_random_part(&DATED, dated.current_kid()).is_some());
        assert!(kid_random_part(&CODES, "ck-1A2B3C4D").is_none());
        assert!(kid_random_part(&CODES, "ck-1a2b3c4").is_none());
        assert!(kid_random_part(&CODES, "pt-1a2b3c4d").is_none());
    }

    #[test]
    fn a_retired_key_is_listed_for_the_configured_time_then_pruned() {
        let mut ring = SigningKeyRing::generate(CODES, t0());
        let old = ring.current_kid().to_owned();
        let new = ring.rotate(t0());
        let listed = ring.listed_keys(t0());
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().find(|k| k.kid == old).unwrap().not_after, Some(t0() + Duration::seconds(65)));
        assert_eq!(listed.iter().find(|k| k.kid == new).unwrap().not_after, None);
        assert_eq!(ring.listed_keys(t0() + Duration::seconds(65)).len(), 1);
        assert_eq!(ring.prune(t0() + Duration::seconds(64)), 0);
        assert_eq!(ring.prune(t0() + Duration::seconds(65)), 1);
        assert_eq!(ring.key_ids(), vec![new.as_str()]);
    }

    #[test]
    fn key_file_round_trips_with_mode_0600_and_reloads_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code-keys.toml");
        let mut ring = SigningKeyRing::generate(CODES, t0());
        ring.save_new(&path).unwrap();
        assert!(matches!(ring.save_new(&path), Err(KeyFileError::AlreadyExists { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let watched = WatchedKeyRing::load(CODES, &path).unwrap();
        assert!(!watched.reload_if_changed().unwrap());
        let new = ring.rotate(t0());
        ring.save(&path).unwrap();
        assert!(watched.reload_if_changed().unwrap());
        assert_eq!(watched.ring().current_kid(), new);
        assert_eq!(watched.ring().listed_keys(t0()), ring.listed_keys(t0()));

        std::fs::write(&path, "not a key file").unwrap();
        assert!(watched.reload_if_changed().is_err());
        assert_eq!(watched.ring().current_kid(), new, "previous keys stay in force");
    }

    #[test]
    fn key_file_errors_and_debug_never_show_keys() {
        let ring = SigningKeyRing::generate(CODES, t0());
        let text = ring.to_toml_string();
        let secret = hex::encode(ring.current().signing.to_bytes());
        assert!(text.contains(&secret));
        assert!(!format!("{ring:?}").contains(&secret[..16]));
        let broken = text.replace("created_at = \"", "created_at = ");
        let error = SigningKeyRing::from_toml_str(CODES, &broken).unwrap_err();
        assert!(matches!(error, KeyFileError::Syntax { .. }));
        assert!(!format!("{error} {error:?}").contains(&secret[..16]));
        // A code ring refuses key ids it could not carry in a code.
        let renamed = text.replace(ring.current_kid(), "ck-custom");
        assert!(matches!(
            SigningKeyRing::from_toml_str(CODES, &renamed),
            Err(KeyFileError::Invalid { ref entry, .. }) if entry == "keys[0].kid"
        ));
        assert!(SigningKeyRing::from_toml_str(DATED, &renamed).is_ok(), "non-strict rings accept any valid id");
        assert!(matches!(SigningKeyRing::from_toml_str(CODES, ""), Err(KeyFileError::CurrentKeyCount(0))));
    }
}
