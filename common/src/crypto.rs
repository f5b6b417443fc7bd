//! Cryptography for personal data at rest (docs/architecture.md#personal-data).
//!
//! identity-svc stores ID numbers, names and phone numbers encrypted field by field with
//! AES-256-GCM ([`FieldCipher`]), and finds rows by ID number or phone through an
//! HMAC-SHA256 blind index ([`BlindIndex`]). Both are built from one [`DataKeys`] set, which
//! holds several versioned data keys (for rotation) and one separate index key.
//!
//! Why the index key is separate: the ID-number space is only about 10^11 values, so whoever
//! holds the index key can brute-force every indexed ID number from its index value. Keeping it
//! apart from the data keys means a leaked data key does not also give away the index key, and
//! lets the two be stored or rotated independently.
//!
//! Nothing in this module puts plaintext, key material or key-file contents into an error
//! message or a `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Name of the environment variable that may hold the whole key file (the TOML text itself).
///
/// Checked by [`DataKeys::from_env_or_file`] before any key-file path, so that deployments can
/// inject keys from a secret store without writing them to disk.
pub const DATA_KEYS_ENV: &str = "MEDINS_DATA_KEYS";

/// Length in bytes of every key (AES-256 data keys and the HMAC-SHA256 index key).
pub const KEY_LEN: usize = 32;

/// Length in bytes of the AES-GCM nonce stored in each blob (96 bits, the size GCM is built for).
pub const NONCE_LEN: usize = 12;

/// Length in bytes of the AES-GCM authentication tag at the end of each blob.
pub const TAG_LEN: usize = 16;

/// Length in bytes of the big-endian key version at the start of each blob.
const VERSION_LEN: usize = 4;

/// Bytes a blob carries besides the ciphertext: version, nonce and tag.
pub const BLOB_OVERHEAD: usize = VERSION_LEN + NONCE_LEN + TAG_LEN;

/// First line written into new key files.
const KEY_FILE_HEADER: &str = "# medins personal-data keys. Keep secret; never commit.\n";

/// Context label at the start of every AAD, so field ciphertexts cannot be confused with any
/// other use of the same key. Part of the storage format: changing it makes old blobs unreadable.
const AAD_CONTEXT: &[u8] = b"medins/field/v1";

/// Context label mixed into every blind-index MAC (same reasoning as [`AAD_CONTEXT`]).
const INDEX_CONTEXT: &[u8] = b"medins/blind-index/v1";

type HmacSha256 = Hmac<Sha256>;

/// Why a key set could not be loaded, parsed or saved.
///
/// The messages name the file and the offending entry but never contain key material or other
/// text from the file (a TOML syntax error reports only its line number).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// [`DataKeys::save_new`] refuses to replace an existing key file: overwriting keys would make
    /// every blob encrypted under them unreadable.
    #[error("key file {path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The text is not valid TOML.
    #[error("key file is not valid TOML (line {line})")]
    Syntax {
        /// 1-based line of the error, 0 if unknown.
        line: usize,
    },
    /// A required entry is missing.
    #[error("key file lacks `{0}`")]
    Missing(&'static str),
    /// An entry the key file format does not know (often a typo such as `index-key`).
    #[error("key file has unknown entry `{0}`")]
    UnknownEntry(String),
    /// An entry has the wrong TOML type or an out-of-range value.
    #[error("key file entry `{entry}` is invalid: {reason}")]
    Invalid {
        /// The entry, e.g. `current_data_key_version` or `data_keys.x`.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key is not hex of exactly 32 bytes.
    #[error("key `{entry}` must be exactly 64 hex digits (32 bytes)")]
    BadKey {
        /// The entry, e.g. `index_key` or `data_keys.2`.
        entry: String,
    },
    /// `current_data_key_version` names a version missing from `[data_keys]`.
    #[error("current_data_key_version {0} has no entry in [data_keys]")]
    CurrentVersionMissing(u32),
    /// The index key equals a data key; they must be independent (see the module docs).
    #[error("index_key must differ from every data key, but equals data key version {0}")]
    IndexKeyReused(u32),
    /// Neither the environment variable nor a key-file path was given.
    #[error("no data keys: set {DATA_KEYS_ENV} or configure a key file")]
    NoSource,
    /// The environment variable is set but is not valid Unicode.
    #[error("{DATA_KEYS_ENV} is not valid UTF-8")]
    EnvNotUnicode,
}

/// Why a field could not be decrypted.
///
/// Deliberately coarse and free of data: callers log these, and an attacker learns nothing from
/// which check failed beyond what the variant says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The blob is shorter than version + nonce + tag.
    #[error("encrypted field is truncated ({len} bytes, at least {BLOB_OVERHEAD} needed)")]
    Truncated {
        /// Length of the blob that was given.
        len: usize,
    },
    /// The blob names a key version this process does not have (e.g. keys were rotated and an
    /// old version was dropped from the key file).
    #[error("encrypted field uses unknown data key version {0}")]
    UnknownKeyVersion(u32),
    /// The tag check failed: wrong key, wrong AAD (the blob belongs to another row, column or
    /// table) or the blob was altered.
    #[error("encrypted field failed authentication")]
    Authentication,
    /// The plaintext is not UTF-8 ([`FieldCipher::decrypt_string`] only).
    #[error("decrypted field is not valid UTF-8")]
    NotUtf8,
}

/// The keys protecting personal data: AES-256 data keys by version, the version used for new
/// encryptions, and one separate blind-index key.
///
/// Old data key versions stay in the set after [`rotate`](DataKeys::rotate) so blobs written
/// under them remain readable; new blobs always use the current version. The `Debug` output
/// shows versions only, never keys.
#[derive(Clone)]
pub struct DataKeys {
    current: u32,
    data_keys: BTreeMap<u32, [u8; KEY_LEN]>,
    index_key: [u8; KEY_LEN],
}

impl DataKeys {
    /// Generates a fresh key set from the OS CSPRNG: data key version 1 (current) and an
    /// independent index key. Used by `medins up` for development keys.
    pub fn generate() -> DataKeys {
        let data_key = random_bytes::<KEY_LEN>();
        let index_key = loop {
            let candidate = random_bytes::<KEY_LEN>();
            if !constant_time_eq(&candidate, &data_key) {
                break candidate;
            }
        };
        DataKeys { current: 1, data_keys: BTreeMap::from([(1, data_key)]), index_key }
    }

    /// Reads and validates a key file (see [`from_toml_str`](DataKeys::from_toml_str) for the
    /// format and checks).
    pub fn load(path: &Path) -> Result<DataKeys, KeyFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| KeyFileError::Io { path: path.to_owned(), source })?;
        DataKeys::from_toml_str(&text)
    }

    /// Parses and validates key-file text:
    ///
    /// ```toml
    /// # medins personal-data keys. Keep secret; never commit.
    /// current_data_key_version = 1
    /// index_key = "<64 hex digits>"
    /// [data_keys]
    /// 1 = "<64 hex digits>"
    /// ```
    ///
    /// Every key must be hex of exactly 32 bytes, the current version must be present, version
    /// numbers must be written canonically (`1`, not `01`), unknown entries are rejected, and the
    /// index key must differ from every data key.
    pub fn from_toml_str(text: &str) -> Result<DataKeys, KeyFileError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| KeyFileError::Syntax {
            line: e
                .span()
                .map(|span| 1 + text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count())
                .unwrap_or(0),
        })?;

        let current = match table.remove("current_data_key_version") {
            None => return Err(KeyFileError::Missing("current_data_key_version")),
            Some(toml::Value::Integer(v)) => u32::try_from(v).map_err(|_| KeyFileError::Invalid {
                entry: "current_data_key_version".into(),
                reason: "must be an integer from 0 to 4294967295",
            })?,
            Some(_) => {
                return Err(KeyFileError::Invalid {
                    entry: "current_data_key_version".into(),
                    reason: "must be an integer",
                });
            }
        };

        let index_key = match table.remove("index_key") {
            None => return Err(KeyFileError::Missing("index_key")),
            Some(value) => parse_key(&value, "index_key")?,
        };

        let data_table = match table.remove("data_keys") {
            None => return Err(KeyFileError::Missing("data_keys")),
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(KeyFileError::Invalid {
                    entry: "data_keys".into(),
                    reason: "must be a table of version = \"hex key\"",
                });
            }
        };

        if let Some(unknown) = table.keys().next() {
            return Err(KeyFileError::UnknownEntry(unknown.clone()));
        }

        let mut data_keys = BTreeMap::new();
        for (name, value) in &data_table {
            let version =
                name.parse::<u32>().ok().filter(|v| v.to_string() == *name).ok_or_else(|| KeyFileError::Invalid {
                    entry: format!("data_keys.{name}"),
                    reason: "version must be a decimal integer without sign or leading zeros",
                })?;
            let key = parse_key(value, &format!("data_keys.{name}"))?;
            data_keys.insert(version, key);
        }

        let keys = DataKeys { current, data_keys, index_key };
        keys.validate()?;
        Ok(keys)
    }

    /// Loads the key set from the environment variable [`DATA_KEYS_ENV`] (`MEDINS_DATA_KEYS`,
    /// holding the TOML text itself) if it is set and not empty, otherwise from `path`.
    ///
    /// The environment wins so that a deployment can override a baked-in dev key file with keys
    /// from its secret store. Fails with [`KeyFileError::NoSource`] if neither is available.
    pub fn from_env_or_file(path: Option<&Path>) -> Result<DataKeys, KeyFileError> {
        let env = match std::env::var(DATA_KEYS_ENV) {
            Ok(text) => Some(text),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => return Err(KeyFileError::EnvNotUnicode),
        };
        DataKeys::from_sources(env.as_deref(), path)
    }

    /// [`from_env_or_file`](DataKeys::from_env_or_file) with the environment value passed in,
    /// so it can be tested without mutating the process environment.
    fn from_sources(env: Option<&str>, path: Option<&Path>) -> Result<DataKeys, KeyFileError> {
        match (env.filter(|text| !text.trim().is_empty()), path) {
            (Some(text), _) => DataKeys::from_toml_str(text),
            (None, Some(path)) => DataKeys::load(path),
            (None, None) => Err(KeyFileError::NoSource),
        }
    }

    /// Writes the key set to a new file at `path`, readable only by its owner (mode 0600 on
    /// unix), and syncs it to disk.
    ///
    /// Refuses to overwrite an existing file ([`KeyFileError::AlreadyExists`]): replacing a key
    /// file would make all data encrypted under the old keys unreadable.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let io_err = |source| KeyFileError::Io { path: path.to_owned(), source };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::AlreadyExists { path: path.to_owned() }
            } else {
                io_err(source)
            }
        })?;
        file.write_all(self.to_toml_string().as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }

    /// Renders the key set in the key-file format (what [`save_new`](DataKeys::save_new)
    /// writes), e.g. to hand it over in [`DATA_KEYS_ENV`].
    ///
    /// The result contains every key in clear: never log it.
    pub fn to_toml_string(&self) -> String {
        let mut out = String::from(KEY_FILE_HEADER);
        out.push_str(&format!("current_data_key_version = {}\n", self.current));
        out.push_str(&format!("index_key = \"{}\"\n", hex::encode(self.index_key)));
        out.push_str("\n[data_keys]\n");
        for (version, key) in &self.data_keys {
            out.push_str(&format!("{version} = \"{}\"\n", hex::encode(key)));
        }
        out
    }

    /// Adds a freshly generated data key under the next version number and makes it current;
    /// returns the new version. Older versions are kept so existing blobs stay readable.
    ///
    /// Rotate before a key nears 2^32 encryptions (the safe limit for random 96-bit nonces).
    ///
    /// # Panics
    ///
    /// If the highest version is already `u32::MAX`.
    pub fn rotate(&mut self) -> u32 {
        let version =
            self.data_keys.keys().next_back().map_or(1, |v| v.checked_add(1).expect("data key versions exhausted"));
        let key = loop {
            let candidate = random_bytes::<KEY_LEN>();
            let clashes = constant_time_eq(&candidate, &self.index_key)
                || self.data_keys.values().any(|k| constant_time_eq(k, &candidate));
            if !clashes {
                break candidate;
            }
        };
        self.data_keys.insert(version, key);
        self.current = version;
        version
    }

    /// The data key version new encryptions use.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// All data key versions in the set, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.data_keys.keys().copied().collect()
    }

    fn validate(&self) -> Result<(), KeyFileError> {
        if !self.data_keys.contains_key(&self.current) {
            return Err(KeyFileError::CurrentVersionMissing(self.current));
        }
        for (version, key) in &self.data_keys {
            if constant_time_eq(key, &self.index_key) {
                return Err(KeyFileError::IndexKeyReused(*version));
            }
        }
        Ok(())
    }
}

/// Parses one hex key of exactly 32 bytes; the error names the entry, never the value.
fn parse_key(value: &toml::Value, entry: &str) -> Result<[u8; KEY_LEN], KeyFileError> {
    let bad = || KeyFileError::BadKey { entry: entry.to_owned() };
    let text = value.as_str().ok_or_else(bad)?;
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| bad())?;
    Ok(key)
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("current_data_key_version", &self.current)
            .field("data_key_versions", &self.versions())
            .field("index_key", &"<redacted>")
            .finish()
    }
}

impl Drop for DataKeys {
    /// Best-effort wipe of the key bytes (without the `zeroize` crate the compiler may still
    /// leave copies elsewhere, e.g. in the AES key schedules of a [`FieldCipher`]).
    fn drop(&mut self) {
        for key in self.data_keys.values_mut() {
            key.fill(0);
        }
        self.index_key.fill(0);
        std::hint::black_box(&mut self.data_keys);
        std::hint::black_box(&mut self.index_key);
    }
}

/// Where an encrypted field lives: the associated data bound into its ciphertext.
///
/// Binding table, column, row id (and the key version) means a blob copied into another row,
/// column or table fails to decrypt instead of silently showing one person's data as another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldAad<'a> {
    /// Table name, e.g. `persons`.
    pub table: &'a str,
    /// Column name, e.g. `id_number_enc`.
    pub column: &'a str,
    /// Primary key of the row (must be known before the row is inserted).
    pub row_id: &'a str,
}

impl FieldAad<'_> {
    /// Canonical, unambiguous encoding: context label, table, column and row id each prefixed by
    /// their length (u32 big-endian), then the key version (u32 big-endian). Length prefixes
    /// keep (`"ab"`, `"c"`) and (`"a"`, `"bc"`) apart. Part of the storage format.
    fn encode(&self, version: u32) -> Vec<u8> {
        let parts = [AAD_CONTEXT, self.table.as_bytes(), self.column.as_bytes(), self.row_id.as_bytes()];
        let mut out = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum::<usize>() + 4);
        for part in parts {
            push_len_prefixed(&mut out, part);
        }
        out.extend_from_slice(&version.to_be_bytes());
        out
    }
}

fn push_len_prefixed(out: &mut Vec<u8>, part: &[u8]) {
    let len = u32::try_from(part.len()).expect("AAD component longer than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part);
}

/// Encrypts and decrypts personal-data fields with AES-256-GCM.
///
/// Blob layout: `version (u32 big-endian) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
/// New blobs use the current key version and a random nonce; decryption picks the key named by
/// the blob, so data written before a rotation stays readable. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct FieldCipher {
    inner: Arc<CipherInner>,
}

struct CipherInner {
    current: u32,
    ciphers: BTreeMap<u32, Aes256Gcm>,
}

impl FieldCipher {
    /// Builds the cipher from every data key in `keys` (the index key is not used).
    pub fn new(keys: &DataKeys) -> FieldCipher {
        let ciphers = keys.data_keys.iter().map(|(version, key)| (*version, Aes256Gcm::new(key.into()))).collect();
        FieldCipher { inner: Arc::new(CipherInner { current: keys.current, ciphers }) }
    }

    /// The key version new blobs carry.
    pub fn current_version(&self) -> u32 {
        self.inner.current
    }

    /// Encrypts `plaintext` for the field `aad` under the current key with a fresh random nonce,
    /// so two encryptions of the same value differ.
    ///
    /// # Panics
    ///
    /// Only if `plaintext` exceeds AES-GCM's limit of about 64 GiB.
    pub fn encrypt(&self, aad: &FieldAad<'_>, plaintext: &[u8]) -> Vec<u8> {
        let version = self.inner.current;
        let cipher = &self.inner.ciphers[&version];
        let nonce = random_bytes::<NONCE_LEN>();

        let mut blob = Vec::with_capacity(BLOB_OVERHEAD + plaintext.len());
        blob.extend_from_slice(&version.to_be_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &aad.encode(version),
                &mut blob[VERSION_LEN + NONCE_LEN..],
            )
            .expect("AES-GCM plaintext too long");
        blob.extend_from_slice(&tag);
        blob
    }

    /// Decrypts a blob made by [`encrypt`](FieldCipher::encrypt) for the same field `aad`.
    ///
    /// Fails, without revealing any data, if the blob is truncated, names an unknown key
    /// version, was altered, or belongs to another table, column or row.
    pub fn decrypt(&self, aad: &FieldAad<'_>, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < BLOB_OVERHEAD {
            return Err(CryptoError::Truncated { len: blob.len() });
        }
        let (version, rest) = blob.split_at(VERSION_LEN);
        let version = u32::from_be_bytes(version.try_into().expect("4-byte slice"));
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let cipher = self.inner.ciphers.get(&version).ok_or(CryptoError::UnknownKeyVersion(version))?;

        let mut plaintext = ciphertext.to_vec();
        // aes-gcm >= 0.10.3 clears the buffer when the tag check fails (RUSTSEC-2023-0096).
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &aad.encode(version),
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plaintext)
    }

    /// [`encrypt`](FieldCipher::encrypt) for text fields (UTF-8 bytes).
    pub fn encrypt_str(&self, aad: &FieldAad<'_>, plaintext: &str) -> Vec<u8> {
        self.encrypt(aad, plaintext.as_bytes())
    }

    /// [`decrypt`](FieldCipher::decrypt) for text fields; fails with [`CryptoError::NotUtf8`]
    /// if the plaintext is not UTF-8 (the error does not carry the bytes).
    pub fn decrypt_string(&self, aad: &FieldAad<'_>, blob: &[u8]) -> Result<String, CryptoError> {
        let bytes = self.decrypt(aad, blob)?;
        String::from_utf8(bytes).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.fill(0);
            CryptoError::NotUtf8
        })
    }
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldCipher")
            .field("current_version", &self.inner.current)
            .field("versions", &self.inner.ciphers.keys().copied().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Deterministic keyed digests of personal data for equality lookups (ID number, phone) without
/// storing or indexing the plaintext.
///
/// HMAC-SHA256 under the separate index key; cloning is cheap (an `Arc`). Callers must
/// normalize values first (e.g. upper-case the final `X` of an ID number), since the index
/// matches exact bytes only.
#[derive(Clone)]
pub struct BlindIndex {
    mac: Arc<HmacSha256>,
}

impl BlindIndex {
    /// Builds the index from the index key of `keys` (the data keys are not used).
    pub fn new(keys: &DataKeys) -> BlindIndex {
        let mac = <HmacSha256 as Mac>::new_from_slice(&keys.index_key).expect("HMAC accepts any key length");
        BlindIndex { mac: Arc::new(mac) }
    }

    /// The 32-byte index value of `value` in `domain` (e.g. `"id_number"`, `"phone"`).
    ///
    /// The domain is length-prefixed into the MAC input, so the same value gives unrelated
    /// outputs in different domains: one index column cannot be joined against another, and
    /// no (domain, value) pair can collide with another by shifting bytes between the two.
    pub fn compute(&self, domain: &str, value: &str) -> Vec<u8> {
        let mut mac = HmacSha256::clone(&self.mac);
        let mut prefix = Vec::with_capacity(4 + INDEX_CONTEXT.len() + 4 + domain.len());
        push_len_prefixed(&mut prefix, INDEX_CONTEXT);
        push_len_prefixed(&mut prefix, domain.as_bytes());
        mac.update(&prefix);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndex").finish_non_exhaustive()
    }
}

/// Keyed digests of requests (or other non-lookup values) under keys derived from the data
/// keys, one per data key version, separated from every other use by a label.
///
/// Derived key of version `v`: `HMAC-SHA256(data key v, "medins/derived-mac/v1" || label)`, a
/// PRF-based key derivation (HKDF-Expand's single-block case). The index key is never used, so
/// these digests cannot be joined with a blind index, and a digest is worthless without the data
/// keys: a stored digest of a request holding a name and ID number cannot be brute-forced from
/// the ID-number space. Older versions stay available after a rotation, so a digest records the
/// version it was made under and stays comparable for as long as that version is in the set.
#[derive(Clone)]
pub struct LabelledMac {
    current: u32,
    macs: Arc<BTreeMap<u32, HmacSha256>>,
}

/// Context label of [`LabelledMac`]'s key derivation.
const DERIVED_MAC_CONTEXT: &[u8] = b"medins/derived-mac/v1";

impl LabelledMac {
    /// The MACs of every data key version of `keys` for `label` (e.g. `"idempotency/request"`).
    pub fn new(keys: &DataKeys, label: &str) -> LabelledMac {
        let macs = keys
            .data_keys
            .iter()
            .map(|(version, key)| {
                let mut kdf = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
                let mut info = Vec::with_capacity(8 + DERIVED_MAC_CONTEXT.len() + label.len());
                push_len_prefixed(&mut info, DERIVED_MAC_CONTEXT);
                push_len_prefixed(&mut info, label.as_bytes());
                kdf.update(&info);
                let derived = kdf.finalize().into_bytes();
                let mac = <HmacSha256 as Mac>::new_from_slice(&derived).expect("HMAC accepts any key length");
                (*version, mac)
            })
            .collect();
        LabelledMac { current: keys.current, macs: Arc::new(macs) }
    }

    /// The version new digests are made under.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// The 32-byte digest of `parts` (each length-prefixed, so part boundaries are unambiguous)
    /// under key `version`; `None` if that version is not in the set.
    pub fn compute(&self, version: u32, parts: &[&[u8]]) -> Option<[u8; 32]> {
        let mut mac = self.macs.get(&version)?.clone();
        for part in parts {
            let len = u64::try_from(part.len()).expect("part length fits u64");
            mac.update(&len.to_be_bytes());
            mac.update(part);
        }
        Some(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for LabelledMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelledMac").field("current", &self.current).finish_non_exhaustive()
    }
}

/// Compares two byte strings in time independent of their contents (only the lengths may leak),
/// so comparing secrets such as API keys or a submitted name does not reveal how many leading
/// bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `N` bytes from the operating system's CSPRNG, for keys, nonces and tokens.
///
/// # Panics
///
/// If the operating system's random source fails.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AAD: FieldAad<'static> =
        FieldAad { table: "persons", column: "id_number_enc", row_id: "0b6f2f7e-1c1d-4a55-9d0e-3f1f7d3f9a10" };
    const ID_NUMBER: &str = "11010519491231002X";

    fn hex_key(byte: u8) -> String {
        hex::encode([byte; KEY_LEN])
    }

    fn key_file(current: u32, index: &str, data: &[(&str, &str)]) -> String {
        let mut s = format!("current_data_key_version = {current}\nindex_key = \"{index}\"\n");
        s.push_str("[data_keys]\n");
        for (v, k) in data {
            s.push_str(&format!("{v} = \"{k}\"\n"));
        }
        s
    }

    #[test]
    fn roundtrip() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let blob = cipher.encrypt_str(&AAD, ID_NUMBER);
        assert_eq!(blob.len(), BLOB_OVERHEAD + ID_NUMBER.len());
        assert_eq!(&blob[..4], &1u32.to_be_bytes());
        assert!(!blob.windows(ID_NUMBER.len()).any(|w| w == ID_NUMBER.as_bytes()));
        assert_eq!(cipher.decrypt_string(&AAD, &blob).unwrap(), ID_NUMBER);

        let empty = cipher.encrypt(&AAD, b"");
        assert_eq!(cipher.decrypt(&AAD, &empty).unwrap(), b"");
    }

    #[test]
    fn wrong_aad_fails() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let blob = cipher.encrypt_str(&AAD, ID_NUMBER);
        let others = [
            FieldAad { row_id: "another-row", ..AAD },
            FieldAad { column: "phone_enc", ..AAD },
            FieldAad { table: "guardians", ..AAD },
        ];
        for other in others {
            assert_eq!(cipher.decrypt(&other, &blob), Err(CryptoError::Authentication));
        }
    }

    #[test]
    fn aad_encoding_is_unambiguous() {
        let a = FieldAad { table: "ab", column: "c", row_id: "d" };
        let b = FieldAad { table: "a", column: "bc", row_id: "d" };
        assert_ne!(a.encode(1), b.encode(1));
        assert_ne!(a.encode(1), a.encode(2));

        let cipher = FieldCipher::new(&DataKeys::generate());
        let blob = cipher.encrypt(&a, b"x");
        assert_eq!(cipher.decrypt(&b, &blob), Err(CryptoError::Authentication));
    }

    #[test]
    fn tampered_blob_fails() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let blob = cipher.encrypt_str(&AAD, ID_NUMBER);
        for i in 0..blob.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut tampered = blob.clone();
                tampered[i] ^= flip;
                let err = cipher.decrypt(&AAD, &tampered).unwrap_err();
                if i < 4 {
                    assert!(matches!(err, CryptoError::UnknownKeyVersion(_)), "byte {i}");
                } else {
                    assert_eq!(err, CryptoError::Authentication, "byte {i}");
                }
            }
        }
        for len in 0..blob.len() {
            assert!(cipher.decrypt(&AAD, &blob[..len]).is_err(), "len {len}");
        }
        assert_eq!(
            cipher.decrypt(&AAD, &blob[..BLOB_OVERHEAD - 1]),
            Err(CryptoError::Truncated { len: BLOB_OVERHEAD - 1 })
        );
        let mut longer = blob.clone();
        longer.push(0);
        assert!(cipher.decrypt(&AAD, &longer).is_err());
    }

    #[test]
    fn errors_hold_no_data() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let blob = cipher.encrypt_str(&AAD, ID_NUMBER);
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let wrong_key = FieldCipher::new(&DataKeys::generate());
        for err in [cipher.decrypt(&AAD, &tampered).unwrap_err(), wrong_key.decrypt(&AAD, &blob).unwrap_err()] {
            let text = format!("{err} {err:?}");
            assert!(!text.contains(ID_NUMBER));
            assert!(!text.contains(AAD.row_id));
        }
    }

    #[test]
    fn non_utf8_plaintext() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let blob = cipher.encrypt(&AAD, &[0xff, 0xfe]);
        assert_eq!(cipher.decrypt_string(&AAD, &blob), Err(CryptoError::NotUtf8));
    }

    #[test]
    fn rotation_keeps_old_blobs_readable() {
        let mut keys = DataKeys::generate();
        let old_cipher = FieldCipher::new(&keys);
        let old_blob = old_cipher.encrypt_str(&AAD, ID_NUMBER);

        assert_eq!(keys.rotate(), 2);
        assert_eq!(keys.current_version(), 2);
        assert_eq!(keys.versions(), vec![1, 2]);
        keys.validate().unwrap();

        let cipher = FieldCipher::new(&keys);
        assert_eq!(cipher.current_version(), 2);
        assert_eq!(cipher.decrypt_string(&AAD, &old_blob).unwrap(), ID_NUMBER);
        let new_blob = cipher.encrypt_str(&AAD, ID_NUMBER);
        assert_eq!(&new_blob[..4], &2u32.to_be_bytes());
        assert_eq!(cipher.decrypt_string(&AAD, &new_blob).unwrap(), ID_NUMBER);
        assert_eq!(old_cipher.decrypt(&AAD, &new_blob), Err(CryptoError::UnknownKeyVersion(2)));

        // Relabelling an old blob as version 2 must not decrypt (version is in the AAD and picks
        // another key).
        let mut relabelled = old_blob.clone();
        relabelled[..4].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(cipher.decrypt(&AAD, &relabelled), Err(CryptoError::Authentication));

        // The rotated set survives a save/load roundtrip.
        let reloaded = DataKeys::from_toml_str(&keys.to_toml_string()).unwrap();
        let cipher = FieldCipher::new(&reloaded);
        assert_eq!(cipher.decrypt_string(&AAD, &old_blob).unwrap(), ID_NUMBER);
        assert_eq!(cipher.decrypt_string(&AAD, &new_blob).unwrap(), ID_NUMBER);
    }

    #[test]
    fn encryptions_of_same_value_differ() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let a = cipher.encrypt_str(&AAD, ID_NUMBER);
        let b = cipher.encrypt_str(&AAD, ID_NUMBER);
        assert_ne!(a, b);
        assert_ne!(a[4..16], b[4..16], "nonces must differ");
    }

    #[test]
    fn cipher_clone_shares_keys() {
        let cipher = FieldCipher::new(&DataKeys::generate());
        let clone = cipher.clone();
        assert!(Arc::ptr_eq(&cipher.inner, &clone.inner));
        let blob = cipher.encrypt_str(&AAD, ID_NUMBER);
        assert_eq!(clone.decrypt_string(&AAD, &blob).unwrap(), ID_NUMBER);
    }

    #[test]
    fn blind_index_deterministic_and_domain_separated() {
        let keys = DataKeys::generate();
        let index = BlindIndex::new(&keys);
        let a = index.compute("id_number", ID_NUMBER);
        assert_eq!(a.len(), 32);
        assert_eq!(a, index.clone().compute("id_number", ID_NUMBER));
        assert_eq!(a, BlindIndex::new(&keys).compute("id_number", ID_NUMBER));
        assert_ne!(a, index.compute("phone", ID_NUMBER));
        assert_ne!(a, index.compute("id_number", "110105194912310021"));
        // Moving bytes between domain and value must not collide.
        assert_ne!(index.compute("ab", "c"), index.compute("a", "bc"));
        // Another index key gives other values.
        assert_ne!(a, BlindIndex::new(&DataKeys::generate()).compute("id_number", ID_NUMBER));
    }

    #[test]
    fn blind_index_known_answer() {
        // Pins the MAC input layout: changing it would orphan every stored index value.
        let text = key_file(1, &hex_key(0x22), &[("1", &hex_key(0x11))]);
        let index = BlindIndex::new(&DataKeys::from_toml_str(&text).unwrap());
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&[0x22; 32]).unwrap();
        mac.update(&21u32.to_be_bytes());
        mac.update(b"medins/blind-index/v1");
        mac.update(&5u32.to_be_bytes());
        mac.update(b"phone");
        mac.update(b"13800001234");
        assert_eq!(index.compute("phone", "13800001234"), mac.finalize().into_bytes().to_vec());
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_bytes_differ() {
        let a = random_bytes::<32>();
        let b = random_bytes::<32>();
        assert_ne!(a, b);
        assert_eq!(random_bytes::<0>(), [0u8; 0]);
    }

    #[test]
    fn generated_keys_are_distinct() {
        let keys = DataKeys::generate();
        assert_eq!(keys.current_version(), 1);
        assert_eq!(keys.versions(), vec![1]);
        assert_ne!(keys.index_key, keys.data_keys[&1]);
        assert_ne!(DataKeys::generate().data_keys[&1], DataKeys::generate().data_keys[&1]);
    }

    #[test]
    fn key_file_save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let keys = DataKeys::generate();
        keys.save_new(&path).unwrap();

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# medins personal-data keys. Keep secret; never commit.\n"));

        let loaded = DataKeys::load(&path).unwrap();
        assert_eq!(loaded.current, keys.current);
        assert_eq!(loaded.data_keys, keys.data_keys);
        assert_eq!(loaded.index_key, keys.index_key);

        let blob = FieldCipher::new(&keys).encrypt_str(&AAD, ID_NUMBER);
        assert_eq!(FieldCipher::new(&loaded).decrypt_string(&AAD, &blob).unwrap(), ID_NUMBER);
    }

    #[test]
    fn save_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let first = DataKeys::generate();
        first.save_new(&path).unwrap();
        let err = DataKeys::generate().save_new(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err}");
        // The original keys are untouched.
        assert_eq!(DataKeys::load(&path).unwrap().data_keys, first.data_keys);
    }

    #[test]
    fn load_missing_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataKeys::load(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(err, KeyFileError::Io { .. }), "{err}");
    }

    #[test]
    fn parses_documented_format() {
        let text = format!(
            "# medins personal-data keys. Keep secret; never commit.\n\
             current_data_key_version = 2\n\
             index_key = \"{}\"\n\
             [data_keys]\n\
             1 = \"{}\"\n\
             2 = \"{}\"\n",
            hex_key(0xaa),
            hex_key(0x01),
            hex_key(0x02).to_uppercase(),
        );
        let keys = DataKeys::from_toml_str(&text).unwrap();
        assert_eq!(keys.current_version(), 2);
        assert_eq!(keys.versions(), vec![1, 2]);
        assert_eq!(keys.data_keys[&2], [0x02; 32]);
    }

    #[test]
    fn rejects_index_key_equal_to_data_key() {
        let text = key_file(2, &hex_key(0x02), &[("1", &hex_key(0x01)), ("2", &hex_key(0x02))]);
        let err = DataKeys::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, KeyFileError::IndexKeyReused(2)), "{err}");
        // Also when the clash is with an old (non-current) version.
        let text = key_file(2, &hex_key(0x01), &[("1", &hex_key(0x01)), ("2", &hex_key(0x02))]);
        let err = DataKeys::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, KeyFileError::IndexKeyReused(1)), "{err}");
    }

    #[test]
    fn rejects_bad_keys() {
        let short = hex::encode([0x01u8; 31]);
        let long = hex::encode([0x01u8; 33]);
        let not_hex = "zz".repeat(32);
        for bad in [short.as_str(), long.as_str(), not_hex.as_str(), ""] {
            let text = key_file(1, &hex_key(0x09), &[("1", bad)]);
            let err = DataKeys::from_toml_str(&text).unwrap_err();
            assert!(matches!(&err, KeyFileError::BadKey { entry } if entry == "data_keys.1"), "{err}");
            let text = key_file(1, bad, &[("1", &hex_key(0x01))]);
            let err = DataKeys::from_toml_str(&text).unwrap_err();
            assert!(matches!(&err, KeyFileError::BadKey { entry } if entry == "index_key"), "{err}");
        }
        let text = format!("current_data_key_version = 1\nindex_key = 5\n[data_keys]\n1 = \"{}\"\n", hex_key(1));
        assert!(matches!(DataKeys::from_toml_str(&text), Err(KeyFileError::BadKey { .. })));
    }

    #[test]
    fn rejects_structural_errors() {
        let idx = hex_key(0x09);
        let k1 = hex_key(0x01);

        let err = DataKeys::from_toml_str(&key_file(2, &idx, &[("1", &k1)])).unwrap_err();
        assert!(matches!(err, KeyFileError::CurrentVersionMissing(2)), "{err}");

        let err = DataKeys::from_toml_str(&key_file(1, &idx, &[("01", &k1)])).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");

        let err = DataKeys::from_toml_str(&key_file(1, &idx, &[("x", &k1)])).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");

        let err = DataKeys::from_toml_str(&key_file(1, &idx, &[])).unwrap_err();
        assert!(matches!(err, KeyFileError::CurrentVersionMissing(1)), "{err}");

        let text = format!("index_key = \"{idx}\"\n[data_keys]\n1 = \"{k1}\"\n");
        let err = DataKeys::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, KeyFileError::Missing("current_data_key_version")), "{err}");

        let text = format!("current_data_key_version = -1\nindex_key = \"{idx}\"\n");
        let err = DataKeys::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");

        let text = format!("index-key = \"{idx}\"\n{}", key_file(1, &idx, &[("1", &k1)]));
        let err = DataKeys::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, KeyFileError::UnknownEntry(ref e) if e == "index-key"), "{err}");
    }

    #[test]
    fn syntax_error_does_not_echo_file() {
        let secret = hex_key(0x5a);
        let text = format!("current_data_key_version = 1\nindex_key = \"{secret}\n");
        let err = DataKeys::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, KeyFileError::Syntax { line: 2 }), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&secret[..16]), "{shown}");
    }

    #[test]
    fn debug_hides_keys() {
        let mut keys = DataKeys::generate();
        keys.rotate();
        let shown = format!("{keys:?} {keys:#?} {:?} {:?}", FieldCipher::new(&keys), BlindIndex::new(&keys));
        for key in keys.data_keys.values().chain([&keys.index_key]) {
            let hex_lower = hex::encode(key);
            assert!(!shown.contains(&hex_lower), "{shown}");
            assert!(!shown.contains(&hex_lower.to_uppercase()), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &key[..4])), "{shown}");
        }
        assert!(shown.contains("current_data_key_version: 2"), "{shown}");
    }

    #[test]
    fn env_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let file_keys = DataKeys::generate();
        file_keys.save_new(&path).unwrap();
        let env_keys = DataKeys::generate();
        let env_text = env_keys.to_toml_string();

        let got = DataKeys::from_sources(Some(&env_text), Some(&path)).unwrap();
        assert_eq!(got.index_key, env_keys.index_key);
        let got = DataKeys::from_sources(Some(&env_text), None).unwrap();
        assert_eq!(got.index_key, env_keys.index_key);
        let got = DataKeys::from_sources(None, Some(&path)).unwrap();
        assert_eq!(got.index_key, file_keys.index_key);
        let got = DataKeys::from_sources(Some("  \n"), Some(&path)).unwrap();
        assert_eq!(got.index_key, file_keys.index_key);
        assert!(matches!(DataKeys::from_sources(None, None), Err(KeyFileError::NoSource)));
        assert!(matches!(DataKeys::from_sources(Some("garbage ="), Some(&path)), Err(KeyFileError::Syntax { .. })));
    }

    proptest! {
        #[test]
        fn prop_roundtrip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..256),
            table in "[a-z_]{0,12}",
            column in "[a-z_]{0,12}",
            row_id in "\\PC{0,24}",
        ) {
            let cipher = FieldCipher::new(&DataKeys::generate());
            let aad = FieldAad { table: &table, column: &column, row_id: &row_id };
            let blob = cipher.encrypt(&aad, &plaintext);
            prop_assert_eq!(cipher.decrypt(&aad, &blob).unwrap(), plaintext);
            let other_row = format!("{row_id}x");
            let other = FieldAad { row_id: &other_row, ..aad };
            prop_assert_eq!(cipher.decrypt(&other, &blob), Err(CryptoError::Authentication));
        }
    }
}
