//! Dynamic payment codes (docs/architecture.md#vouchers-and-codes): the binary layout, its text
//! form, signing and verification, and who may have a code issued. Pure: keys and time come in as
//! arguments.
//!
//! # Format
//!
//! `"MI1"` + base32 (RFC 4648 alphabet `A-Z2-7`, upper case, no padding) of 110 bytes:
//! the 46-byte payload followed by the Ed25519 signature (64 bytes) of the payload. 110 bytes are
//! exactly 176 base32 characters (a multiple of 5 bytes: no partial last character), 179 in all,
//! every one in the QR alphanumeric set, so a QR code holds it compactly.
//!
//! ```text
//! offset size field
//! 0      1    version (1)
//! 1      1    flags (0; reserved, refused otherwise)
//! 2      4    key id: the 4 bytes whose hex follows `ck-` in the key id
//! 6      16   voucher id (UUID bytes)
//! 22     4    issued at, Unix seconds, big-endian unsigned
//! 26     4    expires at, Unix seconds, big-endian unsigned (issued at + 60)
//! 30     16   random nonce: what makes a code redeemable once
//! ```
//!
//! Verification order: shape (prefix, length, alphabet, version, flags) -> key (listed, not past
//! its `not_after`) -> signature (`verify_strict`) -> times (lifetime 1..=60 s, issued at most
//! 5 s in the future, expiry + 5 s not passed). Every check before the times is
//! [`CodeError::Invalid`]; nothing about the code is trusted before its signature is.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use medins_common::{
    ApiError, Reason,
    keyring::{ListedKey, RingSettings, kid_random_part},
};
use uuid::Uuid;

/// Bytes of [`CodePayload::redemption_key`]: issue time and nonce.
pub const REDEMPTION_KEY_LEN: usize = 20;

/// Text prefix of every code (format version 1).
pub const CODE_PREFIX: &str = "MI1";
/// Payload format version.
pub const CODE_VERSION: u8 = 1;
/// How long a code is valid after it is issued.
pub const CODE_LIFETIME_SECS: i64 = 60;
/// Clock skew tolerated between the issuing and the verifying replica, both ways.
pub const CODE_SKEW_SECS: i64 = 5;
/// Payload length in bytes.
pub const PAYLOAD_LEN: usize = 46;
/// Signed length in bytes (payload + signature).
pub const SIGNED_LEN: usize = PAYLOAD_LEN + 64;
/// Length of a code's text.
pub const CODE_TEXT_LEN: usize = CODE_PREFIX.len() + SIGNED_LEN * 8 / 5;

/// Code signing keys: `ck-` + 8 hex digits, listed for a code's lifetime plus the skew after
/// they are retired.
pub const CODE_KEY_RING: RingSettings = RingSettings {
    listed_for: Duration::seconds(CODE_LIFETIME_SECS + CODE_SKEW_SECS),
    kid_prefix: "ck-",
    dated_kids: false,
    strict_kids: true,
    file_header: "# medins payment-code signing keys (Ed25519). Keep secret; never commit.\n\
# Rotate with `medins keys rotate-codes`; running servers pick the change up by themselves.\n",
};

/// What a code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePayload {
    /// The 4 key-id bytes (`ck-` + their hex is the key id).
    pub key_id: [u8; 4],
    /// The voucher.
    pub voucher_id: Uuid,
    /// Issue time, Unix seconds.
    pub issued_at: u32,
    /// Expiry, Unix seconds.
    pub expires_at: u32,
    /// One-use nonce.
    pub nonce: [u8; 16],
}

impl CodePayload {
    /// A payload for `voucher_id` issued at `now` with `nonce`, valid [`CODE_LIFETIME_SECS`].
    pub fn new(key_id: [u8; 4], voucher_id: Uuid, now: DateTime<Utc>, nonce: [u8; 16]) -> CodePayload {
        let issued_at = u32::try_from(now.timestamp()).expect("times between 1970 and 2106");
        CodePayload { key_id, voucher_id, issued_at, expires_at: issued_at + CODE_LIFETIME_SECS as u32, nonce }
    }

    /// The key id as text (`ck-1a2b3c4d`).
    pub fn key_id_text(&self) -> String {
        key_id_text(self.key_id)
    }

    /// What the store keeps so that this code opens at most one visit: its issue time
    /// (big-endian) then its nonce. The nonce alone would do (128 random bits, and a replay
    /// repeats both fields, which the signature covers), but an index of random nonces puts
    /// every redemption on a page of its own; led by the issue time, the redemptions of one
    /// moment go to the same few pages at the index's end (docs/benchmarks.md, "Issue 13 and
    /// 17: settle's pages").
    pub fn redemption_key(&self) -> [u8; REDEMPTION_KEY_LEN] {
        let mut key = [0u8; REDEMPTION_KEY_LEN];
        key[..4].copy_from_slice(&self.issued_at.to_be_bytes());
        key[4..].copy_from_slice(&self.nonce);
        key
    }

    /// The expiry as a time.
    pub fn expires_at_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(i64::from(self.expires_at), 0).expect("u32 seconds are in range")
    }

    /// The binary layout (see the module doc).
    pub fn to_bytes(&self) -> [u8; PAYLOAD_LEN] {
        let mut out = [0u8; PAYLOAD_LEN];
        out[0] = CODE_VERSION;
        out[1] = 0;
        out[2..6].copy_from_slice(&self.key_id);
        out[6..22].copy_from_slice(self.voucher_id.as_bytes());
        out[22..26].copy_from_slice(&self.issued_at.to_be_bytes());
        out[26..30].copy_from_slice(&self.expires_at.to_be_bytes());
        out[30..46].copy_from_slice(&self.nonce);
        out
    }

    /// Parses the binary layout; `None` for another version or non-zero flags.
    pub fn from_bytes(bytes: &[u8; PAYLOAD_LEN]) -> Option<CodePayload> {
        if bytes[0] != CODE_VERSION || bytes[1] != 0 {
            return None;
        }
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Some(CodePayload {
            key_id: bytes[2..6].try_into().expect("4 bytes"),
            voucher_id: Uuid::from_bytes(bytes[6..22].try_into().expect("16 bytes")),
            issued_at: u32_at(22),
            expires_at: u32_at(26),
            nonce: bytes[30..46].try_into().expect("16 bytes"),
        })
    }
}

/// The text of a key id from its 4 bytes.
pub fn key_id_text(key_id: [u8; 4]) -> String {
    format!("{}{}", CODE_KEY_RING.kid_prefix, hex::encode(key_id))
}

/// Signs `payload` with `key` and returns the code text.
pub fn sign_code(key: &SigningKey, payload: &CodePayload) -> String {
    let mut signed = [0u8; SIGNED_LEN];
    let bytes = payload.to_bytes();
    signed[..PAYLOAD_LEN].copy_from_slice(&bytes);
    signed[PAYLOAD_LEN..].copy_from_slice(&key.sign(&bytes).to_bytes());
    let mut text = String::with_capacity(CODE_TEXT_LEN);
    text.push_str(CODE_PREFIX);
    base32_encode(&signed, &mut text);
    text
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not a code: wrong prefix, length, alphabet, version or flags; an unknown key; a signature
    /// that does not match; impossible times.
    #[error("the code is not valid")]
    Invalid,
    /// Validly signed but more than [`CODE_SKEW_SECS`] past its expiry.
    #[error("the code has expired")]
    Expired,
}

impl From<CodeError> for ApiError {
    fn from(error: CodeError) -> Self {
        match error {
            CodeError::Invalid => ApiError::invalid_field(Reason::CodeInvalid, "code", "not a valid medins code"),
            CodeError::Expired => ApiError::of(Reason::CodeExpired, "the code has expired: show a fresh one"),
        }
    }
}

/// A code verification key.
#[derive(Debug, Clone)]
pub struct CodeVerifyingKey {
    key: VerifyingKey,
    not_after: Option<DateTime<Utc>>,
}

/// The listed code keys by their 4 key-id bytes.
#[derive(Debug, Clone, Default)]
pub struct CodeKeySet {
    keys: HashMap<[u8; 4], CodeVerifyingKey>,
}

impl CodeKeySet {
    /// The set of `listed` keys; keys whose id is not a code key id or whose bytes are not a
    /// valid point are left out.
    pub fn new(listed: impl IntoIterator<Item = ListedKey>) -> CodeKeySet {
        let keys = listed
            .into_iter()
            .filter_map(|listed| {
                let id = kid_random_part(&CODE_KEY_RING, &listed.kid)?;
                let key = VerifyingKey::from_bytes(&listed.public_key).ok()?;
                Some((id, CodeVerifyingKey { key, not_after: listed.not_after }))
            })
            .collect();
        CodeKeySet { keys }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Verifies `text` at `now` against `keys` (see the module doc for the order of checks).
pub fn verify_code(text: &str, keys: &CodeKeySet, now: DateTime<Utc>) -> Result<CodePayload, CodeError> {
    let body = text.strip_prefix(CODE_PREFIX).ok_or(CodeError::Invalid)?;
    if text.len() != CODE_TEXT_LEN {
        return Err(CodeError::Invalid);
    }
    let mut signed = [0u8; SIGNED_LEN];
    base32_decode_exact(body, &mut signed).ok_or(CodeError::Invalid)?;
    let payload_bytes: &[u8; PAYLOAD_LEN] = signed[..PAYLOAD_LEN].try_into().expect("payload length");
    let payload = CodePayload::from_bytes(payload_bytes).ok_or(CodeError::Invalid)?;
    let key = keys.keys.get(&payload.key_id).ok_or(CodeError::Invalid)?;
    if key.not_after.is_some_and(|end| end <= now) {
        return Err(CodeError::Invalid);
    }
    let signature = Signature::from_bytes(signed[PAYLOAD_LEN..].try_into().expect("signature length"));
    key.key.verify_strict(payload_bytes, &signature).map_err(|_| CodeError::Invalid)?;
    let (issued_at, expires_at) = (i64::from(payload.issued_at), i64::from(payload.expires_at));
    let now = now.timestamp();
    if !(1..=CODE_LIFETIME_SECS).contains(&(expires_at - issued_at)) || issued_at > now + CODE_SKEW_SECS {
        return Err(CodeError::Invalid);
    }
    if now > expires_at + CODE_SKEW_SECS {
        return Err(CodeError::Expired);
    }
    Ok(payload)
}

// ----------------------------------------------------------------------------------------------
// Who may have a code issued

// ----------------------------------------------------------------------------------------------
// Base32 (RFC 4648, upper case, no padding)

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Appends the base32 text of `bytes` to `out`.
pub fn base32_encode(bytes: &[u8], out: &mut String) {
    let mut buffer: u64 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
}

fn base32_value(c: u8) -> Option<u64> {
    match c {
        b'A'..=b'Z' => Some(u64::from(c - b'A')),
        b'2'..=b'7' => Some(u64::from(c - b'2' + 26)),
        _ => None,
    }
}

/// Decodes `text` into exactly `out.len()` bytes; `None` unless `text` is the canonical
/// encoding of that many bytes (right length, alphabet, unused trailing bits zero).
pub fn base32_decode_exact(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != (out.len() * 8).div_ceil(5) {
        return None;
    }
    let mut buffer: u64 = 0;
    let mut bits = 0u32;
    let mut written = 0;
    for &c in text.as_bytes() {
        buffer = (buffer << 5) | base32_value(c)?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[written] = (buffer >> bits) as u8;
            written += 1;
        }
    }
    // Leftover bits must be zero, so each byte string has one text.
    (written == out.len() && buffer & ((1 << bits) - 1) == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use medins_common::keyring::SigningKeyRing;

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn ring() -> SigningKeyRing {
        SigningKeyRing::generate(CODE_KEY_RING, t0())
    }

    fn issue(ring: &SigningKeyRing, now: DateTime<Utc>) -> (String, CodePayload) {
        let (kid, key) = ring.current_signer();
        let key_id = kid_random_part(&CODE_KEY_RING, kid).unwrap();
        let payload = CodePayload::new(key_id, Uuid::now_v7(), now, medins_common::crypto::random_bytes());
        (sign_code(key, &payload), payload)
    }

    #[test]
    fn a_code_round_trips_with_the_documented_layout() {
        let ring = ring();
        let keys = CodeKeySet::new(ring.listed_keys(t0()));
        let (code, payload) = issue(&ring, t0());
        assert_eq!(code.len(), CODE_TEXT_LEN);
        assert_eq!(CODE_TEXT_LEN, 179);
        assert!(code.starts_with("MI1"));
        assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "QR alphanumeric only");
        assert_eq!(verify_code(&code, &keys, t0()), Ok(payload));
        assert_eq!(payload.key_id_text(), ring.current_kid());
        assert_eq!(payload.expires_at - payload.issued_at, 60);
        assert_eq!(payload.expires_at_time(), t0() + Duration::seconds(60));

        let mut signed = [0u8; SIGNED_LEN];
        base32_decode_exact(&code[3..], &mut signed).unwrap();
        assert_eq!(signed[0], 1, "version");
        assert_eq!(signed[1], 0, "flags");
        assert_eq!(&signed[6..22], payload.voucher_id.as_bytes());
        assert_eq!(u32::from_be_bytes(signed[22..26].try_into().unwrap()), t0().timestamp() as u32);
        assert_eq!(&signed[30..46], &payload.nonce);
        let public = VerifyingKey::from_bytes(&ring.listed_keys(t0())[0].public_key).unwrap();
        public
            .verify_strict(&signed[..46], &Signature::from_bytes(signed[46..].try_into().unwrap()))
            .expect("a partner can check the signature with the published key alone");
    }

    #[test]
    fn redemption_keys_are_unique_per_code_and_ordered_by_issue_time() {
        let ring = ring();
        let (_, first) = issue(&ring, t0());
        let (_, same_second) = issue(&ring, t0());
        let (_, later) = issue(&ring, t0() + Duration::seconds(1));
        let key = first.redemption_key();
        assert_eq!(&key[..4], &first.issued_at.to_be_bytes(), "led by the issue time");
        assert_eq!(&key[4..], &first.nonce, "then the nonce");
        assert_ne!(key, same_second.redemption_key(), "two codes of one second differ by their nonces");
        assert!(
            first.redemption_key() < later.redemption_key() && same_second.redemption_key() < later.redemption_key()
        );
        assert_eq!(
            CodePayload::from_bytes(&first.to_bytes()).unwrap().redemption_key(),
            key,
            "a replay has the same key"
        );
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            let mut text = String::new();
            base32_encode(input.as_bytes(), &mut text);
            assert_eq!(text, expected);
            let mut out = vec![0u8; input.len()];
            assert_eq!(base32_decode_exact(&text, &mut out), Some(()));
            assert_eq!(out, input.as_bytes());
        }
        let mut out = [0u8; 1];
        assert_eq!(base32_decode_exact("MZ", &mut out), None, "non-zero trailing bits");
        assert_eq!(base32_decode_exact("my", &mut out), None, "lower case");
    }

    #[test]
    fn every_single_bit_flip_of_1000_codes_is_refused() {
        // About 700,000 signature checks: spread over the cores.
        let ring = ring();
        let keys = CodeKeySet::new(ring.listed_keys(t0()));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        std::thread::scope(|scope| {
            for worker in 0..threads {
                let (ring, keys) = (&ring, &keys);
                scope.spawn(move || {
                    for _ in (worker..1000).step_by(threads) {
                        let (code, _) = issue(ring, t0());
                        let mut bytes = code.into_bytes();
                        for index in 0..bytes.len() {
                            for bit in 0..8 {
                                bytes[index] ^= 1 << bit;
                                let flipped = String::from_utf8_lossy(&bytes);
                                assert_eq!(
                                    verify_code(&flipped, keys, t0()),
                                    Err(CodeError::Invalid),
                                    "bit {bit} of character {index}"
                                );
                                bytes[index] ^= 1 << bit;
                            }
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn every_single_bit_flip_of_the_signed_bytes_is_refused() {
        let ring = ring();
        let keys = CodeKeySet::new(ring.listed_keys(t0()));
        let (code, _) = issue(&ring, t0());
        let mut signed = [0u8; SIGNED_LEN];
        base32_decode_exact(&code[3..], &mut signed).unwrap();
        for index in 0..SIGNED_LEN {
            for bit in 0..8 {
                signed[index] ^= 1 << bit;
                let mut text = CODE_PREFIX.to_owned();
                base32_encode(&signed, &mut text);
                assert_eq!(verify_code(&text, &keys, t0()), Err(CodeError::Invalid), "bit {bit} of byte {index}");
                signed[index] ^= 1 << bit;
            }
        }
    }

    #[test]
    fn expiry_allows_five_seconds_of_skew_both_ways() {
        let ring = ring();
        let keys = CodeKeySet::new(ring.listed_keys(t0()));
        let (code, _) = issue(&ring, t0());
        assert!(verify_code(&code, &keys, t0() + Duration::seconds(65)).is_ok());
        assert_eq!(verify_code(&code, &keys, t0() + Duration::seconds(66)), Err(CodeError::Expired));
        assert!(verify_code(&code, &keys, t0() - Duration::seconds(5)).is_ok(), "issuer clock 5 s ahead");
        assert_eq!(verify_code(&code, &keys, t0() - Duration::seconds(6)), Err(CodeError::Invalid));
    }

    #[test]
    fn unknown_rotated_out_and_impostor_keys_are_refused() {
        let mut ring = ring();
        let (old_code, _) = issue(&ring, t0());
        // A stranger's key is unknown.
        let stranger = SigningKeyRing::generate(CODE_KEY_RING, t0());
        let (foreign, _) = issue(&stranger, t0());
        let keys = CodeKeySet::new(ring.listed_keys(t0()));
        assert_eq!(verify_code(&foreign, &keys, t0()), Err(CodeError::Invalid));
        // The right key id with another key: a bad signature.
        let (_, stranger_key) = stranger.current_signer();
        let (_, real) = issue(&ring, t0());
        let impostor = sign_code(stranger_key, &real);
        assert_eq!(verify_code(&impostor, &keys, t0()), Err(CodeError::Invalid));
        // After a rotation the old key verifies its live codes, until it is no longer listed.
        ring.rotate(t0() + Duration::seconds(10));
        let keys = CodeKeySet::new(ring.listed_keys(t0() + Duration::seconds(10)));
        assert_eq!(keys.len(), 2);
        assert!(verify_code(&old_code, &keys, t0() + Duration::seconds(30)).is_ok());
        assert_eq!(verify_code(&old_code, &keys, t0() + Duration::seconds(75)), Err(CodeError::Invalid));
        let (new_code, payload) = issue(&ring, t0() + Duration::seconds(10));
        assert_eq!(payload.key_id_text(), ring.current_kid());
        assert!(verify_code(&new_code, &keys, t0() + Duration::seconds(10)).is_ok());
    }

    #[test]
    fn malformed_codes_are_invalid() {
        let ring = ring();
        let keys = CodeKeySet::new(ring.listed_keys(t0()));
        let (code, payload) = issue(&ring, t0());
        let too_long = format!("{code}A");
        let lower = code.to_lowercase();
        let other_prefix = code.replacen("MI1", "MI2", 1);
        for case in ["", "MI1", &code[..100], &too_long, &lower, &other_prefix] {
            assert_eq!(verify_code(case, &keys, t0()), Err(CodeError::Invalid), "{case:.20}");
        }
        // Correctly signed but impossible: version 2, a 61-second lifetime.
        let (_, key) = ring.current_signer();
        let mut bytes = payload.to_bytes();
        bytes[0] = 2;
        let mut signed = bytes.to_vec();
        signed.extend_from_slice(&key.sign(&bytes).to_bytes());
        let mut text = CODE_PREFIX.to_owned();
        base32_encode(&signed, &mut text);
        assert_eq!(verify_code(&text, &keys, t0()), Err(CodeError::Invalid));
        let long = CodePayload { expires_at: payload.issued_at + 61, ..payload };
        assert_eq!(verify_code(&sign_code(key, &long), &keys, t0()), Err(CodeError::Invalid));
    }
}
