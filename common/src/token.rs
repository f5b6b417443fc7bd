//! Person tokens (docs/architecture.md#who-may-call-what): short-lived EdDSA-signed tokens that
//! identity-svc issues to a partner for one person, and that any medins service verifies offline
//! with the listed public keys.
//!
//! # Format
//!
//! JWS compact serialisation, `base64url(header) "." base64url(claims) "." base64url(signature)`
//! (no padding), signed with Ed25519 over the ASCII bytes of the first two parts:
//!
//! ```text
//! header: {"alg":"EdDSA","typ":"medins-person+jwt","kid":"pt-20261123-1a2b3c4d"}
//! claims: {"sub":"<person id>","partner":"<partner id>","iat":1795000000,"exp":1795000900,"jti":"<uuid>",
//!          "lvl":2,"iat_ms":1795000000123}
//! ```
//!
//! `lvl` is the person's assurance level when the token was issued ([`crate::assurance`]);
//! `iat_ms` the issue time in milliseconds (`iat` is its whole seconds), which revocations are
//! compared with ([`crate::revocation`]). Tokens signed before these claims existed lack them and
//! count as level 1 issued at `iat` (every such token was issued to a real-name verified person).
//!
//! A token lives [`PERSON_TOKEN_LIFETIME_SECS`] (15 minutes).
//!
//! # Clock skew
//!
//! Expiry has no leeway: a token is refused once `exp <= now` on the verifier's clock. A
//! verifier whose clock runs ahead of the issuer's by `d` ends tokens `d` early, which only makes
//! a partner fetch a new token sooner; a leeway would instead extend every token. The issue time
//! may lie at most [`MAX_ISSUED_AT_SKEW_SECS`] (5 s) in the verifier's future, so a verifier
//! whose clock is slightly behind still accepts fresh tokens.
//!
//! # Keys
//!
//! A [`TokenKeyRing`] (identity-svc's key file, TOML, mode 0600) holds the signing keys: exactly
//! one current key and the keys it replaced. [`TokenKeyRing::rotate`] makes a new current key and
//! retires the old one; a retired key stays listed (its public part, see
//! [`TokenKeyRing::listed_keys`]) until `retired_at` + the token lifetime, when every token it
//! signed has expired, and is pruned after that.
//!
//! # Verifying
//!
//! [`PersonTokenVerifier`] holds the listed public keys (replaceable, for a periodic refresh from
//! `GetPublicKeys`) and verifies tokens. A signature check costs about 35 us, so successful
//! verifications are cached by the SHA-256 of the token until the token expires (bounded map).
//!
//! Nothing here puts a token, a key or key-file text into an error message or a `Debug` output.

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    sync::{Arc, Mutex, RwLock},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    ApiError, ApiResult, Reason,
    assurance::{AssuranceLevel, require_level},
    auth::{CalledMethod, Caller, Partner, PartnerKind},
    keyring::{KeyFileError, RingSettings, SigningKeyRing},
    revocation::{RevocationCheck, TokenRevocations},
};

/// How long a person token is valid after it is issued: 15 minutes.
pub const PERSON_TOKEN_LIFETIME_SECS: i64 = 15 * 60;

/// How far in the verifier's future a token's issue time may lie (issuer clock ahead).
pub const MAX_ISSUED_AT_SKEW_SECS: i64 = 5;

/// The `typ` header of person tokens.
pub const PERSON_TOKEN_TYPE: &str = "medins-person+jwt";

/// The `alg` header of person tokens.
pub const PERSON_TOKEN_ALG: &str = "EdDSA";

/// The gRPC metadata entry that carries a person token.
pub const PERSON_TOKEN_METADATA: &str = "x-person-token";

/// Longest token accepted; a real one is about 330 bytes. Longer input is refused before any
/// decoding or hashing.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Default number of verified tokens a [`PersonTokenVerifier`] remembers.
pub const DEFAULT_CACHE_CAPACITY: usize = 65_536;

/// First line written into new key files.
const KEY_FILE_HEADER: &str = "# medins person-token signing keys (Ed25519). Keep secret; never commit.\n\
# Rotate with `medins keys rotate`; running servers pick the change up by themselves.\n";

/// The token lifetime as a duration.
pub fn person_token_lifetime() -> Duration {
    Duration::seconds(PERSON_TOKEN_LIFETIME_SECS)
}

/// What a verified person token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonClaims {
    /// The person the token acts for (`sub`).
    pub person_id: Uuid,
    /// The partner the token was issued to (`partner`).
    pub partner_id: String,
    /// Issue time, Unix seconds (`iat`).
    pub issued_at: i64,
    /// Expiry, Unix seconds (`exp`); the token is refused once `exp <= now`.
    pub expires_at: i64,
    /// Unique token id (`jti`).
    pub token_id: String,
    /// Id of the key that signed the token (header `kid`).
    pub key_id: String,
    /// Issue time, Unix milliseconds (`iat_ms`; `iat` * 1000 in tokens without it).
    pub issued_at_ms: i64,
    /// The person's assurance level when the token was issued (`lvl`; 1 in tokens without it).
    pub assurance_level: AssuranceLevel,
}

impl PersonClaims {
    /// The expiry as a time.
    pub fn expires_at_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires_at, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Why a token was refused. The variants say which check failed and nothing about the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, not the expected header, claims missing or out of range, or
    /// longer than [`MAX_TOKEN_LEN`].
    #[error("person token is malformed")]
    Malformed,
    /// The header names a key id that is not (or no longer) listed.
    #[error("person token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not match the header and claims under the named key.
    #[error("person token signature is invalid")]
    BadSignature,
    /// `exp <= now`.
    #[error("person token has expired")]
    Expired,
    /// The token was issued to another partner than the caller.
    #[error("person token was issued to another partner")]
    WrongPartner,
    /// The partner's right to act for the person ended after the token was issued (unlinked,
    /// revoked by the person, person suspended).
    #[error("person token was revoked: the partner's link with the person ended or the person is suspended")]
    Revoked,
    /// The revocation feed is too old to tell whether the token was revoked.
    #[error("person-token revocations cannot be refreshed now, retry later")]
    RevocationsStale,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    alg: String,
    typ: String,
    kid: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClaims {
    sub: String,
    partner: String,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lvl: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ms: Option<i64>,
}

/// A token just issued.
#[derive(Clone)]
pub struct IssuedToken {
    /// The token, to send as `x-person-token`.
    pub token: String,
    /// Its claims.
    pub claims: PersonClaims,
}

impl IssuedToken {
    /// When the token expires.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.claims.expires_at_time()
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"<redacted>").field("claims", &self.claims).finish()
    }
}

/// A public key as listed for verifiers (`GetPublicKeys`): the shared [`crate::keyring`] shape.
pub use crate::keyring::ListedKey;

// ----------------------------------------------------------------------------------------------
// Key ring

/// Why a token key file could not be loaded, parsed or saved (the shared key-file error).
pub type TokenKeyFileError = KeyFileError;

/// The person-token ring: `pt-<date>-<8 hex>` key ids, retired keys listed for the token
/// lifetime.
pub const TOKEN_KEY_RING: RingSettings = RingSettings {
    listed_for: Duration::seconds(PERSON_TOKEN_LIFETIME_SECS),
    kid_prefix: "pt-",
    dated_kids: true,
    strict_kids: false,
    file_header: KEY_FILE_HEADER,
};

/// identity-svc's person-token signing keys: one current key and retired keys still listed. A
/// [`SigningKeyRing`] with [`TOKEN_KEY_RING`] settings, plus token signing.
///
/// `Debug` shows key ids and times only.
pub struct TokenKeyRing {
    ring: SigningKeyRing,
}

impl TokenKeyRing {
    /// A ring with one fresh current key.
    pub fn generate(now: DateTime<Utc>) -> TokenKeyRing {
        TokenKeyRing { ring: SigningKeyRing::generate(TOKEN_KEY_RING, now) }
    }

    /// Reads and validates a key file.
    pub fn load(path: &Path) -> Result<TokenKeyRing, TokenKeyFileError> {
        Ok(TokenKeyRing { ring: SigningKeyRing::load(TOKEN_KEY_RING, path)? })
    }

    /// Parses and validates key-file text (format: [`crate::keyring`]).
    pub fn from_toml_str(text: &str) -> Result<TokenKeyRing, TokenKeyFileError> {
        Ok(TokenKeyRing { ring: SigningKeyRing::from_toml_str(TOKEN_KEY_RING, text)? })
    }

    /// The key file text: every private key in clear, never log it.
    pub fn to_toml_string(&self) -> String {
        self.ring.to_toml_string()
    }

    /// Writes the ring to a new file (mode 0600), refusing to replace an existing one.
    pub fn save_new(&self, path: &Path) -> Result<(), TokenKeyFileError> {
        self.ring.save_new(path)
    }

    /// Replaces the file at `path` atomically (a 0600 temporary file renamed over it), so a
    /// server re-reading the file never sees half of it.
    pub fn save(&self, path: &Path) -> Result<(), TokenKeyFileError> {
        self.ring.save(path)
    }

    /// Makes a fresh key current, retires the previous current key at `now`, prunes keys whose
    /// tokens have all expired, and returns the new key id.
    pub fn rotate(&mut self, now: DateTime<Utc>) -> String {
        self.ring.rotate(now)
    }

    /// Drops retired keys no longer listed (`retired_at + lifetime <= now`); returns how many.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        self.ring.prune(now)
    }

    /// Id of the current signing key.
    pub fn current_kid(&self) -> &str {
        self.ring.current_kid()
    }

    /// Ids of every key in the ring, oldest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.ring.key_ids()
    }

    /// The public keys verifiers must know at `now`: the current key and retired keys whose
    /// tokens may still be live.
    pub fn listed_keys(&self, now: DateTime<Utc>) -> Vec<ListedKey> {
        self.ring.listed_keys(now)
    }

    /// A verifier knowing the keys listed at `now`.
    pub fn verifier(&self, now: DateTime<Utc>) -> PersonTokenVerifier {
        PersonTokenVerifier::new(self.listed_keys(now))
    }

    /// Signs a level-1 token for `person_id`, issued to `partner_id`, valid from `now` for
    /// [`PERSON_TOKEN_LIFETIME_SECS`], with the current key.
    pub fn sign(&self, person_id: Uuid, partner_id: &str, now: DateTime<Utc>) -> IssuedToken {
        sign_person_token(&self.ring, person_id, partner_id, AssuranceLevel::RealName, now.timestamp_millis())
    }

    /// The generic ring underneath (for a [`crate::keyring::WatchedKeyRing`] over the file).
    pub fn into_inner(self) -> SigningKeyRing {
        self.ring
    }
}

/// Signs a person token of assurance `level`, issued at `issued_at_ms` (Unix milliseconds),
/// with the current key of a ring of [`TOKEN_KEY_RING`] settings.
pub fn sign_person_token(
    ring: &SigningKeyRing,
    person_id: Uuid,
    partner_id: &str,
    level: AssuranceLevel,
    issued_at_ms: i64,
) -> IssuedToken {
    sign_with(ring.current_signer(), person_id, partner_id, issued_at_ms, PERSON_TOKEN_LIFETIME_SECS, level)
}

fn sign_with(
    (kid, signing): (&str, &SigningKey),
    person_id: Uuid,
    partner_id: &str,
    iat_ms: i64,
    lifetime: i64,
    level: AssuranceLevel,
) -> IssuedToken {
    let iat = iat_ms.div_euclid(1000);
    let claims = PersonClaims {
        person_id,
        partner_id: partner_id.to_owned(),
        issued_at: iat,
        expires_at: iat + lifetime,
        token_id: Uuid::new_v4().to_string(),
        key_id: kid.to_owned(),
        issued_at_ms: iat_ms,
        assurance_level: level,
    };
    let header = WireHeader { alg: PERSON_TOKEN_ALG.into(), typ: PERSON_TOKEN_TYPE.into(), kid: kid.to_owned() };
    let wire = WireClaims {
        sub: person_id.to_string(),
        partner: partner_id.to_owned(),
        iat: claims.issued_at,
        exp: claims.expires_at,
        jti: claims.token_id.clone(),
        lvl: Some(level.number()),
        iat_ms: Some(iat_ms),
    };
    let token = sign_parts(
        signing,
        &serde_json::to_vec(&header).expect("header serialises"),
        &serde_json::to_vec(&wire).expect("claims serialise"),
    );
    IssuedToken { token, claims }
}

fn sign_parts(key: &SigningKey, header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

impl fmt::Debug for TokenKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenKeyRing").field(&self.ring).finish()
    }
}

// ----------------------------------------------------------------------------------------------
// Verifier

struct VerifierKey {
    key: VerifyingKey,
    not_after: Option<DateTime<Utc>>,
}

struct CachedToken {
    claims: PersonClaims,
}

/// Verifies person tokens offline against a replaceable set of listed public keys, caching
/// successful verifications until the token expires.
///
/// Cheap to share (`Arc`); all methods take `&self`.
pub struct PersonTokenVerifier {
    keys: RwLock<Arc<HashMap<String, VerifierKey>>>,
    cache: Mutex<HashMap<[u8; 32], CachedToken>>,
    capacity: usize,
    revocations: TokenRevocations,
}

impl fmt::Debug for PersonTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonTokenVerifier").field("key_ids", &self.key_ids()).finish_non_exhaustive()
    }
}

impl PersonTokenVerifier {
    /// A verifier knowing `keys`, with the default cache capacity.
    pub fn new(keys: impl IntoIterator<Item = ListedKey>) -> PersonTokenVerifier {
        PersonTokenVerifier::with_cache_capacity(keys, DEFAULT_CACHE_CAPACITY)
    }

    /// A verifier knowing `keys` that remembers at most `capacity` verified tokens.
    pub fn with_cache_capacity(keys: impl IntoIterator<Item = ListedKey>, capacity: usize) -> PersonTokenVerifier {
        PersonTokenVerifier {
            keys: RwLock::new(Arc::new(key_map(keys))),
            cache: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            revocations: TokenRevocations::default(),
        }
    }

    /// The revocations this verifier refuses tokens by (refreshed by the service that owns it).
    pub fn revocations(&self) -> &TokenRevocations {
        &self.revocations
    }

    /// Replaces the known keys (after a refresh from `GetPublicKeys` or a key-file reload).
    /// Cached verifications of tokens whose key is no longer listed are forgotten. Keys that are
    /// not valid Ed25519 points are skipped.
    pub fn replace_keys(&self, keys: impl IntoIterator<Item = ListedKey>) {
        let keys = Arc::new(key_map(keys));
        self.cache.lock().expect("token cache lock").retain(|_, cached| keys.contains_key(&cached.claims.key_id));
        *self.keys.write().expect("token keys lock") = keys;
    }

    /// Ids of the keys known now, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.read().expect("token keys lock").keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Verifies `token` for a call by `expected_partner_id` at `now`: well formed, signed by a
    /// listed key, not expired (`exp <= now` is refused, no leeway), issued to that partner, not
    /// revoked (checked on every call, cache hits included).
    ///
    /// The caller still checks that the token's person is the one the call is about.
    pub fn verify(
        &self,
        token: &str,
        expected_partner_id: &str,
        now: DateTime<Utc>,
    ) -> Result<PersonClaims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let now_secs = now.timestamp();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = {
            let mut cache = self.cache.lock().expect("token cache lock");
            match cache.get(&digest) {
                Some(hit) if hit.claims.expires_at > now_secs => Some(hit.claims.clone()),
                Some(_) => {
                    cache.remove(&digest);
                    return Err(TokenError::Expired);
                }
                None => None,
            }
        };
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = self.verify_uncached(token, now)?;
                self.remember(digest, &claims, now_secs);
                claims
            }
        };
        if claims.partner_id != expected_partner_id {
            return Err(TokenError::WrongPartner);
        }
        match self.revocations.check(&claims) {
            RevocationCheck::Live => Ok(claims),
            RevocationCheck::Revoked => Err(TokenError::Revoked),
            RevocationCheck::Stale => Err(TokenError::RevocationsStale),
        }
    }

    fn verify_uncached(&self, token: &str, now: DateTime<Utc>) -> Result<PersonClaims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: WireHeader = decode_json(header_b64)?;
        if header.alg != PERSON_TOKEN_ALG || header.typ != PERSON_TOKEN_TYPE {
            return Err(TokenError::Malformed);
        }
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        {
            let keys = self.keys.read().expect("token keys lock").clone();
            let key = keys.get(&header.kid).ok_or(TokenError::UnknownKey)?;
            if key.not_after.is_some_and(|end| end <= now) {
                return Err(TokenError::UnknownKey);
            }
            let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
            key.key
                .verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&signature))
                .map_err(|_| TokenError::BadSignature)?;
        }
        let wire: WireClaims = decode_json(claims_b64)?;
        let person_id = Uuid::parse_str(&wire.sub).map_err(|_| TokenError::Malformed)?;
        let lifetime = wire.exp.checked_sub(wire.iat).ok_or(TokenError::Malformed)?;
        if wire.partner.is_empty()
            || wire.jti.is_empty()
            || !(1..=PERSON_TOKEN_LIFETIME_SECS).contains(&lifetime)
            || wire.iat > now.timestamp().saturating_add(MAX_ISSUED_AT_SKEW_SECS)
        {
            return Err(TokenError::Malformed);
        }
        let issued_at_ms = wire.iat_ms.unwrap_or(wire.iat.saturating_mul(1000));
        let assurance_level = match wire.lvl {
            None => AssuranceLevel::RealName,
            Some(number) => AssuranceLevel::from_number(i64::from(number)).ok_or(TokenError::Malformed)?,
        };
        if issued_at_ms.div_euclid(1000) != wire.iat {
            return Err(TokenError::Malformed);
        }
        if wire.exp <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(PersonClaims {
            person_id,
            partner_id: wire.partner,
            issued_at: wire.iat,
            expires_at: wire.exp,
            token_id: wire.jti,
            key_id: header.kid,
            issued_at_ms,
            assurance_level,
        })
    }

    fn remember(&self, digest: [u8; 32], claims: &PersonClaims, now_secs: i64) {
        let mut cache = self.cache.lock().expect("token cache lock");
        if cache.len() >= self.capacity {
            cache.retain(|_, cached| cached.claims.expires_at > now_secs);
        }
        if cache.len() >= self.capacity {
            // Still full of live tokens: forget an arbitrary one; it costs one signature check.
            if let Some(victim) = cache.keys().next().copied() {
                cache.remove(&victim);
            }
        }
        cache.insert(digest, CachedToken { claims: claims.clone() });
    }

    /// How many verified tokens are cached (tests, metrics).
    pub fn cached_len(&self) -> usize {
        self.cache.lock().expect("token cache lock").len()
    }
}

fn key_map(keys: impl IntoIterator<Item = ListedKey>) -> HashMap<String, VerifierKey> {
    keys.into_iter()
        .filter_map(|listed| {
            let key = VerifyingKey::from_bytes(&listed.public_key).ok()?;
            Some((listed.kid, VerifierKey { key, not_after: listed.not_after }))
        })
        .collect()
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

// ----------------------------------------------------------------------------------------------
// Authorising calls that act for a person

/// The verified claims of the person token a call carries, for a call by `caller` at `now`.
///
/// `Ok(None)` for partners of kind OPS and SERVICE: operators and medins services act for no one
/// person and are exempt. Every other caller must send `x-person-token` with a valid token
/// issued to it: missing -> UNAUTHENTICATED / PERSON_TOKEN_REQUIRED; malformed, badly signed,
/// expired, of an unknown key or issued to another partner -> UNAUTHENTICATED /
/// PERSON_TOKEN_INVALID. Which person the token names is the caller's to check (see
/// [`authorize_person`]).
pub fn person_token_claims(
    verifier: &PersonTokenVerifier,
    caller: &Partner,
    metadata: &tonic::metadata::MetadataMap,
    now: DateTime<Utc>,
) -> ApiResult<Option<PersonClaims>> {
    if matches!(caller.kind, PartnerKind::Ops | PartnerKind::Service) {
        return Ok(None);
    }
    let Some(value) = metadata.get(PERSON_TOKEN_METADATA) else {
        return Err(ApiError::of(
            Reason::PersonTokenRequired,
            "this call acts for a person: send `x-person-token` (PersonTokenService.IssuePersonToken)",
        ));
    };
    let invalid = |message: String| ApiError::of(Reason::PersonTokenInvalid, message);
    let token = value.to_str().map_err(|_| invalid("person token is malformed".into()))?;
    let claims = verifier.verify(token.trim(), &caller.id, now).map_err(|error| match error {
        TokenError::Revoked => ApiError::of(Reason::PersonTokenRevoked, error.to_string()),
        TokenError::RevocationsStale => ApiError::of(Reason::DependencyUnavailable, error.to_string()),
        _ => invalid(error.to_string()),
    })?;
    Ok(Some(claims))
}

/// The verified claims of a call's person token ([`person_token_claims`]), and the assurance
/// level the called RPC needs ([`crate::assurance::required_level`]): a token below it is
/// PERMISSION_DENIED / ASSURANCE_LEVEL_TOO_LOW. The path both services take for every call that
/// acts for a person.
pub fn request_person_claims<T>(
    verifier: &PersonTokenVerifier,
    request: &tonic::Request<T>,
    now: DateTime<Utc>,
) -> ApiResult<Option<PersonClaims>> {
    let caller = Caller::of(request)?;
    let claims = person_token_claims(verifier, &caller, request.metadata(), now)?;
    require_level(claims.as_ref(), CalledMethod::of(request))?;
    Ok(claims)
}

/// Checks that a call by `caller` may act for `person_id`: the one rule of
/// docs/architecture.md#who-may-call-what both services apply. As [`person_token_claims`], and a
/// valid token for another person is PERMISSION_DENIED / PERSON_TOKEN_INVALID. Returns the claims
/// (`None` for exempt callers).
pub fn authorize_person(
    verifier: &PersonTokenVerifier,
    caller: &Partner,
    metadata: &tonic::metadata::MetadataMap,
    person_id: Uuid,
    now: DateTime<Utc>,
) -> ApiResult<Option<PersonClaims>> {
    let claims = person_token_claims(verifier, caller, metadata, now)?;
    require_person(claims.as_ref(), person_id)?;
    Ok(claims)
}

fn require_person(claims: Option<&PersonClaims>, person_id: Uuid) -> ApiResult<()> {
    match claims {
        Some(claims) if claims.person_id != person_id => Err(ApiError::permission_denied(
            Reason::PersonTokenInvalid,
            "the person token was issued for another person",
        )),
        _ => Ok(()),
    }
}

/// [`authorize_person`] for a request: the token's person must be `person_id`, and the token
/// must carry the assurance level the called RPC needs ([`request_person_claims`]).
pub fn authorize_request_person<T>(
    verifier: &PersonTokenVerifier,
    request: &tonic::Request<T>,
    person_id: Uuid,
    now: DateTime<Utc>,
) -> ApiResult<Option<PersonClaims>> {
    let claims = request_person_claims(verifier, request, now)?;
    require_person(claims.as_ref(), person_id)?;
    Ok(claims)
}

/// The key id (`kid`) named by the person token in `metadata`, read WITHOUT verifying anything:
/// only for deciding whether a verifier should refresh its keys after a refusal.
pub fn unverified_key_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let token = metadata.get(PERSON_TOKEN_METADATA)?.to_str().ok()?.trim();
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let header: WireHeader = decode_json(token.split('.').next()?).ok()?;
    Some(header.kid)
}

impl PersonTokenVerifier {
    /// Whether `kid` is among the known keys.
    pub fn knows_key(&self, kid: &str) -> bool {
        self.keys.read().expect("token keys lock").contains_key(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTNER: &str = "bank";

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn person() -> Uuid {
        Uuid::now_v7()
    }

    /// Replaces one character of `token` at byte `index` with another base64url character.
    fn flip(token: &str, index: usize) -> String {
        let mut bytes = token.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        let ring = TokenKeyRing::generate(t0());
        let verifier = ring.verifier(t0());
        let id = person();
        let issued = ring.sign(id, PARTNER, t0());
        let claims = verifier.verify(&issued.token, PARTNER, t0()).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.person_id, id);
        assert_eq!(claims.partner_id, PARTNER);
        assert_eq!(claims.expires_at - claims.issued_at, 900);
        assert_eq!(claims.key_id, ring.current_kid());
        assert_eq!(issued.expires_at(), t0() + Duration::minutes(15));

        // The documented wire format.
        let parts: Vec<&str> = issued.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "medins-person+jwt", "kid": ring.current_kid()}));
        let body: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(body["sub"], id.to_string());
        assert_eq!(body["partner"], PARTNER);
        assert_eq!(body["exp"].as_i64().unwrap() - body["iat"].as_i64().unwrap(), 900);
        assert!(body["jti"].is_string());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    }

    #[test]
    fn verification_is_cached_until_expiry() {
        let ring = TokenKeyRing::generate(t0());
        let verifier = ring.verifier(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        verifier.verify(&issued.token, PARTNER, t0()).unwrap();
        assert_eq!(verifier.cached_len(), 1);
        // A cache hit still enforces the partner and the expiry.
        assert_eq!(verifier.verify(&issued.token, "mini-program", t0()), Err(TokenError::WrongPartner));
        verifier.verify(&issued.token, PARTNER, t0() + Duration::seconds(899)).unwrap();
        assert_eq!(verifier.verify(&issued.token, PARTNER, t0() + Duration::seconds(900)), Err(TokenError::Expired));
        assert_eq!(verifier.cached_len(), 0, "an expired token leaves the cache");
    }

    #[test]
    fn expired_tokens_are_refused_at_exp_without_leeway() {
        let ring = TokenKeyRing::generate(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        // Fresh verifiers, so the uncached path is exercised.
        assert!(ring.verifier(t0()).verify(&issued.token, PARTNER, t0() + Duration::seconds(899)).is_ok());
        let at_exp = t0() + Duration::seconds(900);
        assert_eq!(ring.verifier(t0()).verify(&issued.token, PARTNER, at_exp), Err(TokenError::Expired));
        let later = t0() + Duration::minutes(16);
        assert_eq!(ring.verifier(t0()).verify(&issued.token, PARTNER, later), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_from_the_future_beyond_the_skew_are_malformed() {
        let ring = TokenKeyRing::generate(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        let verifier = ring.verifier(t0());
        assert!(verifier.verify(&issued.token, PARTNER, t0() - Duration::seconds(5)).is_ok());
        let verifier = ring.verifier(t0());
        assert_eq!(verifier.verify(&issued.token, PARTNER, t0() - Duration::seconds(6)), Err(TokenError::Malformed));
    }

    #[test]
    fn a_token_of_another_partner_is_refused() {
        let ring = TokenKeyRing::generate(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        assert_eq!(ring.verifier(t0()).verify(&issued.token, "mini-program", t0()), Err(TokenError::WrongPartner));
    }

    #[test]
    fn tampered_signatures_and_payloads_are_refused() {
        let ring = TokenKeyRing::generate(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        let verifier = ring.verifier(t0());
        let dots: Vec<usize> = issued.token.match_indices('.').map(|(i, _)| i).collect();
        // A character in the middle of the signature.
        let tampered = flip(&issued.token, dots[1] + 10);
        assert_eq!(verifier.verify(&tampered, PARTNER, t0()), Err(TokenError::BadSignature));
        // A character of the claims: either the JSON breaks or the signature no longer matches;
        // both are refusals, and a valid-looking change must be a bad signature.
        for index in dots[0] + 1..dots[1] {
            let tampered = flip(&issued.token, index);
            let error = verifier.verify(&tampered, PARTNER, t0()).unwrap_err();
            assert!(matches!(error, TokenError::BadSignature | TokenError::Malformed), "{index}: {error:?}");
        }
        // Claims replaced by well-formed claims for another person, signature kept.
        let parts: Vec<&str> = issued.token.split('.').collect();
        let forged_claims = WireClaims {
            sub: Uuid::now_v7().to_string(),
            partner: PARTNER.into(),
            iat: issued.claims.issued_at,
            exp: issued.claims.expires_at,
            jti: issued.claims.token_id.clone(),
            lvl: Some(1),
            iat_ms: Some(issued.claims.issued_at_ms),
        };
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap()),
            parts[2]
        );
        assert_eq!(verifier.verify(&forged, PARTNER, t0()), Err(TokenError::BadSignature));
        // The original still verifies: tampering did not poison the cache.
        assert!(verifier.verify(&issued.token, PARTNER, t0()).is_ok());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let ring = TokenKeyRing::generate(t0());
        let verifier = ring.verifier(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        let parts: Vec<&str> = issued.token.split('.').collect();
        let b64 = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&value).unwrap());
        let kid = ring.current_kid();
        let cases = vec![
            String::new(),
            "abc".to_owned(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{}.x", issued.token),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("!!.{}.{}", parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]),
            "a".repeat(MAX_TOKEN_LEN + 1),
            format!(
                "{}.{}.{}",
                b64(serde_json::json!({"alg": "none", "typ": PERSON_TOKEN_TYPE, "kid": kid})),
                parts[1],
                parts[2]
            ),
            format!("{}.{}.{}", b64(serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})), parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                b64(serde_json::json!({"alg": "EdDSA", "typ": PERSON_TOKEN_TYPE, "kid": kid, "crit": ["x"]})),
                parts[1],
                parts[2]
            ),
        ];
        for case in cases {
            assert_eq!(verifier.verify(&case, PARTNER, t0()), Err(TokenError::Malformed), "{case:.60}");
        }
        // Correctly signed but with claims out of range: a lifetime over 15 minutes, or no person.
        let current = ring.ring.current_signer();
        let long = sign_with(
            current,
            person(),
            PARTNER,
            t0().timestamp_millis(),
            PERSON_TOKEN_LIFETIME_SECS + 1,
            AssuranceLevel::RealName,
        );
        assert_eq!(verifier.verify(&long.token, PARTNER, t0()), Err(TokenError::Malformed));
        let header = serde_json::to_vec(&serde_json::json!({"alg": "EdDSA", "typ": PERSON_TOKEN_TYPE, "kid": kid}));
        let no_person = sign_parts(
            current.1,
            &header.unwrap(),
            &serde_json::to_vec(&serde_json::json!({"sub": "x", "partner": PARTNER, "iat": 1, "exp": 2, "jti": "j"}))
                .unwrap(),
        );
        assert_eq!(verifier.verify(&no_person, PARTNER, t0()), Err(TokenError::Malformed));
    }

    #[test]
    fn tokens_of_unknown_keys_are_refused() {
        let ring = TokenKeyRing::generate(t0());
        let stranger = TokenKeyRing::generate(t0());
        let issued = stranger.sign(person(), PARTNER, t0());
        assert_eq!(ring.verifier(t0()).verify(&issued.token, PARTNER, t0()), Err(TokenError::UnknownKey));

        // The same key id under another key is a bad signature, not an accepted token.
        let stranger_text = TokenKeyRing::generate(t0()).to_toml_string();
        let stranger_kid = TokenKeyRing::from_toml_str(&stranger_text).unwrap().current_kid().to_owned();
        let impostor = TokenKeyRing::from_toml_str(&stranger_text.replace(&stranger_kid, ring.current_kid())).unwrap();
        let issued = impostor.sign(person(), PARTNER, t0());
        assert_eq!(ring.verifier(t0()).verify(&issued.token, PARTNER, t0()), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_token_of_a_rotated_out_but_listed_key_still_verifies() {
        let mut ring = TokenKeyRing::generate(t0());
        let old_kid = ring.current_kid().to_owned();
        let old_token = ring.sign(person(), PARTNER, t0());

        let rotated_at = t0() + Duration::minutes(5);
        let new_kid = ring.rotate(rotated_at);
        assert_ne!(new_kid, old_kid);
        assert_eq!(ring.current_kid(), new_kid);
        let listed = ring.listed_keys(rotated_at);
        assert_eq!(listed.len(), 2);
        let old_listed = listed.iter().find(|k| k.kid == old_kid).unwrap();
        assert_eq!(old_listed.not_after, Some(rotated_at + Duration::minutes(15)));
        assert_eq!(listed.iter().find(|k| k.kid == new_kid).unwrap().not_after, None);

        let verifier = ring.verifier(rotated_at);
        let claims = verifier.verify(&old_token.token, PARTNER, rotated_at + Duration::minutes(1)).unwrap();
        assert_eq!(claims.key_id, old_kid);
        let new_token = ring.sign(person(), PARTNER, rotated_at);
        assert_eq!(new_token.claims.key_id, new_kid);
        assert!(verifier.verify(&new_token.token, PARTNER, rotated_at).is_ok());

        // After the old key's last token expired it is no longer listed, and pruned at the next
        // rotation.
        let later = rotated_at + Duration::minutes(15);
        assert_eq!(ring.listed_keys(later).iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), vec![new_kid.as_str()]);
        let newest = ring.rotate(later);
        assert_eq!(ring.key_ids(), vec![new_kid.as_str(), newest.as_str()]);
    }

    #[test]
    fn replacing_keys_forgets_tokens_of_dropped_keys() {
        let ring = TokenKeyRing::generate(t0());
        let verifier = ring.verifier(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        verifier.verify(&issued.token, PARTNER, t0()).unwrap();
        verifier.replace_keys(TokenKeyRing::generate(t0()).listed_keys(t0()));
        assert_eq!(verifier.cached_len(), 0);
        assert_eq!(verifier.verify(&issued.token, PARTNER, t0()), Err(TokenError::UnknownKey));
        verifier.replace_keys(ring.listed_keys(t0()));
        assert!(verifier.verify(&issued.token, PARTNER, t0()).is_ok());
    }

    #[test]
    fn a_listed_key_past_not_after_is_unknown() {
        let mut ring = TokenKeyRing::generate(t0());
        let old = ring.sign(person(), PARTNER, t0());
        ring.rotate(t0());
        let verifier = ring.verifier(t0());
        // A verifier with a stale listing still refuses the old key once its not_after passed
        // (the token has expired by then too, the key check comes first).
        let after = t0() + Duration::minutes(15);
        assert_eq!(verifier.verify(&old.token, PARTNER, after), Err(TokenError::UnknownKey));
    }

    #[test]
    fn the_cache_is_bounded() {
        let ring = TokenKeyRing::generate(t0());
        let verifier = PersonTokenVerifier::with_cache_capacity(ring.listed_keys(t0()), 3);
        let tokens: Vec<_> = (0..10).map(|_| ring.sign(person(), PARTNER, t0())).collect();
        for issued in &tokens {
            verifier.verify(&issued.token, PARTNER, t0()).unwrap();
            assert!(verifier.cached_len() <= 3);
        }
        for issued in &tokens {
            assert!(verifier.verify(&issued.token, PARTNER, t0()).is_ok());
        }
    }

    #[test]
    fn listed_keys_round_trip_through_base64url() {
        let ring = TokenKeyRing::generate(t0());
        let listed = &ring.listed_keys(t0())[0];
        let text = listed.public_key_base64url();
        assert_eq!(text.len(), 43);
        assert_eq!(ListedKey::from_base64url(&listed.kid, &text, None).as_ref(), Some(listed));
        assert!(ListedKey::from_base64url("k", "short", None).is_none());
    }

    #[test]
    fn key_file_round_trips_with_mode_0600_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("person-token-keys.toml");
        let mut ring = TokenKeyRing::generate(t0());
        ring.save_new(&path).unwrap();
        assert!(matches!(ring.save_new(&path), Err(TokenKeyFileError::AlreadyExists { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let token = ring.sign(person(), PARTNER, t0());
        ring.rotate(t0() + Duration::minutes(1));
        ring.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let loaded = TokenKeyRing::load(&path).unwrap();
        assert_eq!(loaded.key_ids(), ring.key_ids());
        assert_eq!(loaded.current_kid(), ring.current_kid());
        assert_eq!(loaded.listed_keys(t0()), ring.listed_keys(t0()));
        assert!(loaded.verifier(t0()).verify(&token.token, PARTNER, t0()).is_ok());
    }

    #[test]
    fn key_file_errors_and_debug_never_show_keys() {
        let ring = TokenKeyRing::generate(t0());
        let text = ring.to_toml_string();
        let secret = hex::encode(ring.ring.current_signer().1.to_bytes());
        assert!(text.contains(&secret));
        let shown = format!("{ring:?} {:?}", ring.verifier(t0()));
        assert!(!shown.contains(&secret[..16]), "{shown}");
        assert!(shown.contains(ring.current_kid()));

        let broken = text.replace("created_at = \"", "created_at = ");
        let error = TokenKeyRing::from_toml_str(&broken).unwrap_err();
        assert!(matches!(error, TokenKeyFileError::Syntax { .. }), "{error}");
        assert!(!format!("{error} {error:?}").contains(&secret[..16]));

        let short = text.replace(&secret, &secret[..62]);
        let error = TokenKeyRing::from_toml_str(&short).unwrap_err();
        assert!(matches!(error, TokenKeyFileError::Invalid { ref entry, .. } if entry == "keys[0].private_key"));

        let two = format!("{text}\n{}", TokenKeyRing::generate(t0()).to_toml_string());
        assert!(matches!(TokenKeyRing::from_toml_str(&two), Err(TokenKeyFileError::CurrentKeyCount(2))));
        let unknown = format!("{text}extra = 1\n");
        assert!(matches!(TokenKeyRing::from_toml_str(&unknown), Err(TokenKeyFileError::Syntax { .. })));
        assert!(matches!(TokenKeyRing::from_toml_str(""), Err(TokenKeyFileError::CurrentKeyCount(0))));
    }

    #[test]
    fn the_level_and_millisecond_issue_time_are_signed_and_verified() {
        let ring = TokenKeyRing::generate(t0());
        let verifier = ring.verifier(t0());
        let at_ms = t0().timestamp_millis() + 123;
        let issued = sign_person_token(&ring.ring, person(), PARTNER, AssuranceLevel::RealNameAndFace, at_ms);
        let claims = verifier.verify(&issued.token, PARTNER, t0()).unwrap();
        assert_eq!(claims.assurance_level, AssuranceLevel::RealNameAndFace);
        assert_eq!(claims.issued_at_ms, at_ms);
        assert_eq!(claims.issued_at, t0().timestamp());
        let body: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(issued.token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(body["lvl"], 2);
        assert_eq!(body["iat_ms"], at_ms);

        // A raised level without a valid signature is refused.
        let parts: Vec<&str> = issued.token.split('.').collect();
        let lowered = sign_person_token(&ring.ring, claims.person_id, PARTNER, AssuranceLevel::RealName, at_ms);
        let spliced = format!("{}.{}.{}", parts[0], lowered.token.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(verifier.verify(&spliced, PARTNER, t0()), Err(TokenError::BadSignature));

        // Claims whose two issue times disagree, or an unknown level, are malformed.
        let kid = ring.current_kid();
        let header = serde_json::to_vec(&serde_json::json!({"alg": "EdDSA", "typ": PERSON_TOKEN_TYPE, "kid": kid}));
        let iat = t0().timestamp();
        for body in [
            serde_json::json!({"sub": person().to_string(), "partner": PARTNER, "iat": iat, "exp": iat + 60,
                "jti": "j", "lvl": 1, "iat_ms": (iat + 2) * 1000}),
            serde_json::json!({"sub": person().to_string(), "partner": PARTNER, "iat": iat, "exp": iat + 60,
                "jti": "j", "lvl": 3, "iat_ms": iat * 1000}),
        ] {
            let token =
                sign_parts(ring.ring.current_signer().1, header.as_ref().unwrap(), &serde_json::to_vec(&body).unwrap());
            assert_eq!(verifier.verify(&token, PARTNER, t0()), Err(TokenError::Malformed), "{body}");
        }
    }

    #[test]
    fn a_token_without_level_claims_counts_as_level_1_issued_at_iat() {
        let ring = TokenKeyRing::generate(t0());
        let kid = ring.current_kid();
        let header = serde_json::to_vec(&serde_json::json!({"alg": "EdDSA", "typ": PERSON_TOKEN_TYPE, "kid": kid}));
        let iat = t0().timestamp();
        let body = serde_json::json!({"sub": person().to_string(), "partner": PARTNER, "iat": iat,
            "exp": iat + 60, "jti": "j"});
        let token = sign_parts(ring.ring.current_signer().1, &header.unwrap(), &serde_json::to_vec(&body).unwrap());
        let claims = ring.verifier(t0()).verify(&token, PARTNER, t0()).unwrap();
        assert_eq!((claims.assurance_level, claims.issued_at_ms), (AssuranceLevel::RealName, iat * 1000));
    }

    #[test]
    fn a_revoked_token_is_refused_even_from_the_cache_and_a_stale_feed_fails_closed() {
        use crate::revocation::Revocation;
        let ring = TokenKeyRing::generate(t0());
        let verifier = ring.verifier(t0());
        let issued = ring.sign(person(), PARTNER, t0());
        verifier.verify(&issued.token, PARTNER, t0()).unwrap();
        verifier.revocations().add(Revocation {
            person_id: issued.claims.person_id,
            partner_id: Some(PARTNER.into()),
            revoked_at_ms: issued.claims.issued_at_ms,
        });
        assert_eq!(verifier.verify(&issued.token, PARTNER, t0()), Err(TokenError::Revoked));
        let later = sign_person_token(
            &ring.ring,
            issued.claims.person_id,
            PARTNER,
            AssuranceLevel::RealName,
            issued.claims.issued_at_ms + 1,
        );
        assert!(verifier.verify(&later.token, PARTNER, t0()).is_ok(), "a token issued after the revocation");

        verifier.revocations().require_refresh_within(std::time::Duration::from_secs(60));
        assert_eq!(verifier.verify(&later.token, PARTNER, t0()), Err(TokenError::RevocationsStale));
        verifier.revocations().replace([], std::time::Instant::now());
        assert!(verifier.verify(&later.token, PARTNER, t0()).is_ok());
    }
}
