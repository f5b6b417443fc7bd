//! A card's PIN (docs/architecture.md#cards, issue 17 item 5): set by the bank when it
//! activates the financial function, changed by the holder, reset by the bank (or operators),
//! and asked at a hospital or pharmacy counter that opens a visit with the card.
//!
//! - **Shape**: exactly [`PIN_DIGITS`] ASCII digits (INVALID_ARGUMENT on the field otherwise).
//!   A new PIN is refused when trivially guessed ([`check_strength`]) or made from the holder's
//!   birth date or ID number ([`check_against_holder`]): INVALID_ARGUMENT / CARD_PIN_TOO_WEAK
//!   with metadata `pin_check`.
//! - **At rest**: an Argon2id hash in the PHC string format with a random 16-byte salt
//!   ([`hash_pin`], parameters [`HASH_MEMORY_KIB`], [`HASH_PASSES`], [`HASH_LANES`]), keyed with
//!   a server-side pepper ([`PinPepper`]) whose version the string names (`keyid`), never the
//!   PIN. Hashing and verifying cost tens of milliseconds and ~19 MiB each: callers run them on
//!   the bounded pool (`crate::heavy`), never on the async runtime. A stored hash carries its
//!   own parameters, so raising them later still verifies older hashes.
//! - **Tries**: [`PIN_TRIES`] wrong PINs in a row lock the PIN until the bank resets it. A try
//!   is taken (the count raised under the condition `failures < PIN_TRIES`, one atomic update)
//!   *before* the PIN is verified and given back by a right PIN, so concurrent guesses can never
//!   verify more than [`PIN_TRIES`] wrong PINs ([`try_available`] is that condition; the store
//!   writes it into its statement).
//!
//! Pure apart from the salt's randomness (from the caller's RNG): no I/O.

use std::sync::LazyLock;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::CryptoRngCore},
};
use chrono::{Datelike, NaiveDate};
use medins_common::{
    ApiError, ApiResult, Reason,
    crypto::{DataKeys, LabelledMac},
};

/// Digits in a PIN.
pub const PIN_DIGITS: usize = 6;

/// Wrong PINs in a row that lock the PIN.
pub const PIN_TRIES: i32 = 5;

/// Argon2id memory per hash, KiB (19 MiB: OWASP's minimum for Argon2id with 2 passes).
pub const HASH_MEMORY_KIB: u32 = 19 * 1024;

/// Argon2id passes.
pub const HASH_PASSES: u32 = 2;

/// Argon2id lanes (one: the pool runs hashes side by side, not one hash on several threads).
pub const HASH_LANES: u32 = 1;

/// What one hash or verification is estimated to take from the heavy pool's memory budget.
pub const HASH_ESTIMATE_BYTES: u64 = (HASH_MEMORY_KIB as u64 + 1024) * 1024;

/// A PIN of the right shape. Its `Debug` hides the digits: PINs never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(******)")
    }
}

impl Pin {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A PIN as typed on a pin pad: exactly [`PIN_DIGITS`] ASCII digits, nothing around them
/// (INVALID_ARGUMENT on `field`; the description never repeats the input).
pub fn parse_pin(field: &str, raw: &str) -> ApiResult<Pin> {
    if raw.len() == PIN_DIGITS && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Pin(raw.to_owned()))
    } else {
        Err(ApiError::invalid_field(Reason::InvalidArgument, field, "must be exactly 6 digits"))
    }
}

medins_common::text_enum! {
    /// Why a new PIN is too easy to guess (the metadata value `pin_check`).
    pub enum Weakness {
        /// One digit repeated (`000000`, `888888`).
        SameDigits => "same_digits",
        /// Each digit one more than the one before (`123456`, `456789`).
        Ascending => "ascending",
        /// Each digit one less than the one before (`654321`, `987654`).
        Descending => "descending",
        /// The holder's birth date as YYMMDD, MMDDYY or DDMMYY.
        BirthDate => "birth_date",
        /// The last six characters of the holder's ID number.
        IdNumber => "id_number",
    }
}

/// Why `pin` is trivially guessed, if it is: the PINs people try first on a found card.
pub fn weakness(pin: &Pin) -> Option<Weakness> {
    let digits: Vec<i8> = pin.0.bytes().map(|b| (b - b'0') as i8).collect();
    let steps: Vec<i8> = digits.windows(2).map(|pair| pair[1] - pair[0]).collect();
    if steps.iter().all(|&step| step == 0) {
        Some(Weakness::SameDigits)
    } else if steps.iter().all(|&step| step == 1) {
        Some(Weakness::Ascending)
    } else if steps.iter().all(|&step| step == -1) {
        Some(Weakness::Descending)
    } else {
        None
    }
}

/// A PIN someone chooses now (ActivateCard BANK, ChangeCardPin, ResetCardPin): the shape of
/// [`parse_pin`] and not [`weakness`]-weak (INVALID_ARGUMENT / CARD_PIN_TOO_WEAK on `field`,
/// metadata `pin_check`).
pub fn check_strength(field: &str, raw: &str) -> ApiResult<Pin> {
    let pin = parse_pin(field, raw)?;
    match weakness(&pin) {
        None => Ok(pin),
        Some(weakness) => Err(ApiError::invalid_field(
            Reason::CardPinTooWeak,
            field,
            "too easy to guess: not one repeated digit, nor an ascending or descending run",
        )
        .with_metadata("pin_check", weakness.as_str())),
    }
}

/// What a new PIN must not be made from: the holder's birth date and, when the call carries it
/// (a bank's counter, where the holder's ID number was matched against the card's holder), the
/// ID number. Its `Debug` shows neither: they never reach a log.
#[derive(Clone, Copy)]
pub struct HolderFacts<'a> {
    /// The holder's birth date (from the ID number).
    pub birth_date: NaiveDate,
    /// The holder's ID number, when the request carries it.
    pub id_number: Option<&'a str>,
}

impl std::fmt::Debug for HolderFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HolderFacts(<hidden>)")
    }
}

/// The birth date a resident ID number carries (positions 7-14, `YYYYMMDD`), if it has one
/// (an 18-character number whose birth part is a calendar date).
pub fn birth_date_in_id_number(id_number: &str) -> Option<NaiveDate> {
    let id = id_number.trim();
    let digits = id.get(6..14).filter(|_| id.len() == 18)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, month, day) = (digits[..4].parse().ok()?, digits[4..6].parse().ok()?, digits[6..].parse().ok()?);
    NaiveDate::from_ymd_opt(year, month, day)
}

/// Why `pin` is made from what the people around the holder (and anyone holding the holder's
/// ID card) know, if it is: the birth date as YYMMDD, MMDDYY or DDMMYY, or the ID number's
/// last six characters (a final `X` matches no PIN).
pub fn personal_weakness(pin: &Pin, holder: &HolderFacts<'_>) -> Option<Weakness> {
    let date = holder.birth_date;
    let (yy, mm, dd) = (date.year().rem_euclid(100), date.month(), date.day());
    let forms = [format!("{yy:02}{mm:02}{dd:02}"), format!("{mm:02}{dd:02}{yy:02}"), format!("{dd:02}{mm:02}{yy:02}")];
    if forms.iter().any(|form| form == pin.as_str()) {
        return Some(Weakness::BirthDate);
    }
    let id_end =
        holder.id_number.map(str::trim).and_then(|id| id.len().checked_sub(PIN_DIGITS).and_then(|at| id.get(at..)));
    if id_end.is_some_and(|end| end == pin.as_str()) {
        return Some(Weakness::IdNumber);
    }
    None
}

/// A new PIN (already [`check_strength`]-checked) checked against the holder's facts:
/// INVALID_ARGUMENT / CARD_PIN_TOO_WEAK on `field` with metadata `pin_check` (`birth_date` or
/// `id_number`) when [`personal_weakness`] finds it made from them. Asked only once the caller
/// stands for the holder, so the answer tells nothing to anyone else.
pub fn check_against_holder(field: &str, pin: &Pin, holder: &HolderFacts<'_>) -> ApiResult<()> {
    match personal_weakness(pin, holder) {
        None => Ok(()),
        Some(weakness) => Err(ApiError::invalid_field(
            Reason::CardPinTooWeak,
            field,
            "too easy to guess: not the holder's birth date, nor the end of their ID number",
        )
        .with_metadata("pin_check", weakness.as_str())),
    }
}

/// Label of the pepper's key derivation from the data keys ([`LabelledMac`]).
const PEPPER_LABEL: &str = "card/pin-pepper";

/// The server-side secret (pepper) every new PIN hash is keyed with: Argon2's `secret`, one per
/// version of insurance-svc's data keys (the configured key file, `--data-keys-file`), derived
/// under its own label so it is no other key. The database holds hashes but not the keys, so a
/// copy of it alone does not let anyone try the million PINs against a hash. The version a hash
/// was made under is its PHC string's `keyid` (4 bytes, big-endian), so hashes made under an
/// older version, or before the pepper (no `keyid`), keep verifying after a rotation.
#[derive(Clone)]
pub struct PinPepper {
    current: u32,
    secrets: std::sync::Arc<std::collections::BTreeMap<u32, [u8; 32]>>,
}

impl std::fmt::Debug for PinPepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinPepper").field("current", &self.current).finish_non_exhaustive()
    }
}

impl PinPepper {
    /// The peppers of every data key version of `keys`; new hashes use the current one.
    pub fn from_keys(keys: &DataKeys) -> PinPepper {
        let mac = LabelledMac::new(keys, PEPPER_LABEL);
        let secrets = keys
            .versions()
            .into_iter()
            .filter_map(|version| mac.compute(version, &[]).map(|secret| (version, secret)))
            .collect();
        PinPepper { current: mac.current_version(), secrets: std::sync::Arc::new(secrets) }
    }

    fn secret(&self, version: u32) -> Option<&[u8; 32]> {
        self.secrets.get(&version)
    }
}

fn params(keyid: Option<u32>) -> Params {
    let mut builder = argon2::ParamsBuilder::new();
    builder.m_cost(HASH_MEMORY_KIB).t_cost(HASH_PASSES).p_cost(HASH_LANES);
    if let Some(version) = keyid {
        builder.keyid(argon2::KeyId::new(&version.to_be_bytes()).expect("4 bytes fit a key id"));
    }
    builder.build().expect("constant Argon2 parameters")
}

/// The PHC string of `pin` under a fresh salt from `rng` (Argon2id, the parameters above),
/// keyed with the current pepper and naming its version as `keyid`. CPU- and memory-heavy: run
/// it on the bounded pool.
pub fn hash_pin(pin: &Pin, pepper: &PinPepper, rng: &mut impl CryptoRngCore) -> ApiResult<String> {
    let secret = pepper.secret(pepper.current).ok_or_else(|| ApiError::internal("no PIN pepper of the current key"))?;
    hash_with(pin, Some((pepper.current, secret)), rng)
}

fn hash_with(pin: &Pin, key: Option<(u32, &[u8; 32])>, rng: &mut impl CryptoRngCore) -> ApiResult<String> {
    let salt = SaltString::generate(rng);
    let failed = |error: argon2::password_hash::Error| ApiError::internal(format_args!("PIN hashing failed: {error}"));
    let argon2 = match key {
        Some((_, secret)) => {
            Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, params(key.map(|(v, _)| v)))
                .map_err(|error| failed(error.into()))?
        }
        None => Argon2::new(Algorithm::Argon2id, Version::V0x13, params(None)),
    };
    argon2.hash_password(pin.0.as_bytes(), &salt).map(|hash| hash.to_string()).map_err(failed)
}

/// Whether `pin` is the one `stored` (a PHC string from [`hash_pin`], or from before the
/// pepper) was made from, with the parameters and the pepper version (`keyid`) the string
/// carries. An unreadable string matches nothing; a `keyid` naming a version the key file no
/// longer has is INTERNAL (a key was removed while hashes made under it remain). CPU- and
/// memory-heavy: run it on the bounded pool.
pub fn verify_pin(pin: &Pin, stored: &str, pepper: &PinPepper) -> ApiResult<bool> {
    let Ok(hash) = PasswordHash::new(stored) else {
        return Ok(false);
    };
    let Ok(params) = Params::try_from(&hash) else {
        return Ok(false);
    };
    let argon2 = match params.keyid() {
        [] => Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        keyid => {
            let version = <[u8; 4]>::try_from(keyid).map(u32::from_be_bytes).ok();
            let secret = version.and_then(|version| pepper.secret(version)).ok_or_else(|| {
                ApiError::internal("a PIN hash names a pepper version the data key file does not have")
            })?;
            Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, params)
                .map_err(|error| ApiError::internal(format_args!("PIN pepper refused: {error}")))?
        }
    };
    Ok(argon2.verify_password(pin.0.as_bytes(), &hash).is_ok())
}

/// A hash of no card's PIN: verified when there is no card (or no PIN) to verify against, so
/// such an answer takes as long as a wrong PIN's and its time tells nothing.
/// It carries no pepper (verifying it costs the same).
pub static DECOY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_with(&Pin("000000".into()), None, &mut argon2::password_hash::rand_core::OsRng).expect("the decoy PIN hashes")
});

/// Whether a PIN with `failures` wrong tries in a row may be tried once more (the condition
/// the store's one atomic update takes a try under).
pub fn try_available(failures: i32) -> bool {
    failures < PIN_TRIES
}

/// The refusal a counter gets when the card number or the PIN is wrong: one answer for an
/// unknown card, a card without a PIN and a wrong PIN, so a counter walking numbers learns no
/// more from a wrong PIN than from a number never issued.
pub fn card_or_pin_wrong() -> ApiError {
    ApiError::of(Reason::CardPinIncorrect, "the card number or the PIN is wrong")
}

/// The refusal of a wrong old PIN by a caller who stands for the card's holder (ChangeCardPin).
pub fn pin_wrong() -> ApiError {
    ApiError::of(Reason::CardPinIncorrect, "the PIN is wrong")
}

/// The refusal once [`PIN_TRIES`] wrong PINs in a row locked the PIN.
pub fn pin_locked() -> ApiError {
    ApiError::of(
        Reason::CardPinLocked,
        "the card's PIN is locked after 5 wrong PINs: the holder has the bank reset it (ResetCardPin)",
    )
}

/// The refusal of a PIN change or reset on a card that has none yet.
pub fn pin_not_set() -> ApiError {
    ApiError::of(
        Reason::CardPinNotSet,
        "the card has no PIN yet: it is set when a bank activates the financial function (ActivateCard BANK)",
    )
}

/// A card's PIN as stored: its hash and the wrong tries in a row.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPin {
    /// The PHC string.
    pub hash: String,
    /// Wrong tries in a row (0 to [`PIN_TRIES`]).
    pub failures: i32,
}

impl std::fmt::Debug for StoredPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPin").field("failures", &self.failures).finish_non_exhaustive()
    }
}

/// How taking a try at a card's PIN went (the store's atomic update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinTry {
    /// A try was taken: verify against this hash, then give the try back if right.
    Taken(String),
    /// The PIN is locked: no try taken, nothing verified.
    Locked,
    /// The card has no PIN.
    NotSet,
}

/// The try a PIN `stored` allows: locked once [`PIN_TRIES`] wrong tries are counted.
pub fn decide_try(stored: Option<StoredPin>) -> PinTry {
    match stored {
        None => PinTry::NotSet,
        Some(stored) if try_available(stored.failures) => PinTry::Taken(stored.hash),
        Some(_) => PinTry::Locked,
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::rand_core::OsRng;
    use tonic::Code;

    use super::*;

    #[test]
    fn a_pin_is_six_ascii_digits() {
        for raw in ["123450", "000001", "908172"] {
            assert_eq!(parse_pin("pin", raw).unwrap().as_str(), raw);
        }
        for raw in ["", "12345", "1234567", " 123456", "12345a", "１２３４５６", "12 456", "-12345"] {
            let error = parse_pin("pin", raw).unwrap_err();
            assert_eq!(error.reason(), Reason::InvalidArgument, "{raw:?}");
        }
    }

    #[test]
    fn the_holders_birth_date_and_id_number_end_are_too_weak() {
        // A made-up, well-formed number: born 1987-03-09, ending 091234.
        let id_number = "110105198703091234";
        let birth = birth_date_in_id_number(id_number).unwrap();
        assert_eq!(birth, NaiveDate::from_ymd_opt(1987, 3, 9).unwrap());
        let with_id = HolderFacts { birth_date: birth, id_number: Some(id_number) };
        let without_id = HolderFacts { birth_date: birth, id_number: None };
        let pin = |text: &str| parse_pin("pin", text).unwrap();
        for (text, weakness) in [
            ("870309", Weakness::BirthDate),
            ("030987", Weakness::BirthDate),
            ("090387", Weakness::BirthDate),
            ("091234", Weakness::IdNumber),
        ] {
            assert_eq!(personal_weakness(&pin(text), &with_id), Some(weakness), "{text}");
            let error = check_against_holder("new_pin", &pin(text), &with_id).unwrap_err();
            assert_eq!((error.code(), error.reason()), (Code::InvalidArgument, Reason::CardPinTooWeak));
            let status: tonic::Status = error.into();
            assert!(!status.message().contains(text), "the answer never repeats the PIN");
        }
        // Without the ID number only the birth date is known; other dates and numbers pass.
        assert_eq!(personal_weakness(&pin("091234"), &without_id), None);
        assert_eq!(personal_weakness(&pin("870309"), &without_id), Some(Weakness::BirthDate));
        for text in ["870310", "198703", "870390", "309870", "109234"] {
            assert!(check_against_holder("new_pin", &pin(text), &with_id).is_ok(), "{text}");
        }
        // A final X matches no PIN; a number without a birth date carries none.
        let with_x = HolderFacts { birth_date: birth, id_number: Some("11010519870309123X") };
        assert_eq!(personal_weakness(&pin("091230"), &with_x), None);
        assert_eq!(birth_date_in_id_number("110105198713091234"), None);
        assert_eq!(birth_date_in_id_number("1101051987"), None);
        assert!(format!("{with_id:?}").find("1987").is_none(), "Debug hides the facts");
        // Years 2000 and on keep their two digits: born 2008-11-05 -> 081105, 110508, 051108.
        let young = HolderFacts { birth_date: NaiveDate::from_ymd_opt(2008, 11, 5).unwrap(), id_number: None };
        for text in ["081105", "110508", "051108"] {
            assert_eq!(personal_weakness(&pin(text), &young), Some(Weakness::BirthDate), "{text}");
        }
    }

    #[test]
    fn repeated_digits_and_runs_are_too_weak() {
        for (raw, weakness) in [
            ("000000", Weakness::SameDigits),
            ("777777", Weakness::SameDigits),
            ("012345", Weakness::Ascending),
            ("123456", Weakness::Ascending),
            ("456789", Weakness::Ascending),
            ("987654", Weakness::Descending),
            ("654321", Weakness::Descending),
            ("543210", Weakness::Descending),
        ] {
            let error = check_strength("new_pin", raw).unwrap_err();
            assert_eq!(error.reason(), Reason::CardPinTooWeak, "{raw}");
            assert_eq!(super::weakness(&parse_pin("new_pin", raw).unwrap()), Some(weakness), "{raw}");
        }
        for raw in ["123457", "890123", "112233", "135790", "000100", "918273"] {
            assert!(check_strength("new_pin", raw).is_ok(), "{raw}");
        }
        assert_eq!(check_strength("new_pin", "12345").unwrap_err().reason(), Reason::InvalidArgument);
    }

    #[test]
    fn a_hash_verifies_its_pin_only_and_each_hash_has_its_own_salt() {
        let pepper = PinPepper::from_keys(&DataKeys::generate());
        let pin = parse_pin("pin", "305917").unwrap();
        let first = hash_pin(&pin, &pepper, &mut OsRng).unwrap();
        let second = hash_pin(&pin, &pepper, &mut OsRng).unwrap();
        assert_ne!(first, second, "a fresh salt per hash");
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1,keyid=AAAAAQ$"), "{first}");
        assert!(!first.contains("305917"));
        assert!(verify_pin(&pin, &first, &pepper).unwrap() && verify_pin(&pin, &second, &pepper).unwrap());
        assert!(!verify_pin(&parse_pin("pin", "305918").unwrap(), &first, &pepper).unwrap());
        assert!(!verify_pin(&pin, "not a PHC string", &pepper).unwrap());
        assert!(!verify_pin(&pin, &DECOY_HASH, &pepper).unwrap());
        assert_eq!(format!("{pin:?}"), "Pin(******)");
    }

    #[test]
    fn the_pepper_keys_each_hash_and_older_hashes_keep_verifying() {
        let mut keys = DataKeys::generate();
        let pepper = PinPepper::from_keys(&keys);
        let pin = parse_pin("pin", "305917").unwrap();
        let peppered = hash_pin(&pin, &pepper, &mut OsRng).unwrap();
        // A hash from before the pepper (no keyid) still verifies.
        let before = hash_with(&pin, None, &mut OsRng).unwrap();
        assert!(!before.contains("keyid"));
        assert!(verify_pin(&pin, &before, &pepper).unwrap());
        // Without the keys the hash is worth nothing: another key set's pepper does not verify.
        let elsewhere = PinPepper::from_keys(&DataKeys::generate());
        assert!(!verify_pin(&pin, &peppered, &elsewhere).unwrap());
        // The same PIN and salt without the pepper is another hash.
        let unkeyed = peppered.replace(",keyid=AAAAAQ", "");
        assert!(!verify_pin(&pin, &unkeyed, &pepper).unwrap());
        // After a rotation new hashes name version 2; version 1's keep verifying.
        keys.rotate();
        let rotated = PinPepper::from_keys(&keys);
        let newer = hash_pin(&pin, &rotated, &mut OsRng).unwrap();
        assert!(newer.contains(",keyid=AAAAAg$"), "{newer}");
        assert!(verify_pin(&pin, &peppered, &rotated).unwrap() && verify_pin(&pin, &newer, &rotated).unwrap());
        // A version the key file lost is an internal error, not a wrong PIN.
        let error = verify_pin(&pin, &newer, &pepper).unwrap_err();
        assert_eq!(error.code(), Code::Internal);
        assert!(!format!("{pepper:?}").contains('['), "Debug shows no secret");
    }

    #[test]
    fn five_wrong_tries_lock_and_a_missing_pin_is_not_set() {
        let stored = |failures| Some(StoredPin { hash: "h".into(), failures });
        for failures in 0..PIN_TRIES {
            assert_eq!(decide_try(stored(failures)), PinTry::Taken("h".into()));
        }
        assert_eq!(decide_try(stored(PIN_TRIES)), PinTry::Locked);
        assert_eq!(decide_try(None), PinTry::NotSet);
        assert!(try_available(PIN_TRIES - 1) && !try_available(PIN_TRIES));
        assert_eq!(card_or_pin_wrong().reason(), Reason::CardPinIncorrect);
        assert_eq!(pin_locked().reason(), Reason::CardPinLocked);
        assert_eq!(pin_not_set().reason(), Reason::CardPinNotSet);
    }
}
