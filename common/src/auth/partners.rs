//! The partners file (docs/architecture.md#who-may-call-what): who may call, with which scopes, at
//! what rate. API keys are stored only as SHA-256; a presented key is hashed and compared in
//! constant time.
//!
//! The file is read at start and again on reload (SIGHUP, or `Partners::reload`), so revoking a
//! key takes effect without a restart.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, RwLock},
};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rate_limit::Gcra;
use crate::crypto::constant_time_eq;

/// Prefix of every medins API key.
pub const API_KEY_PREFIX: &str = "mk_";

/// What kind of organisation a partner is; decides default scopes and a few rules (only a
/// FACE_PROVIDER submits face results, for example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PartnerKind {
    /// A bank: app, cards, fees.
    Bank,
    /// A WeChat/Alipay-style mini program.
    MiniProgram,
    /// A city government app.
    CityApp,
    /// A hospital: verifies codes, settles visits.
    Hospital,
    /// A pharmacy: verifies codes, settles purchases.
    Pharmacy,
    /// A certified face-verification provider.
    FaceProvider,
    /// An employer: opens accounts, credits contributions, applies for cards in batches.
    Employer,
    /// Operations staff.
    Ops,
    /// Another medins service.
    Service,
    /// A self-service terminal (social security bureau, bank lobby): binds family members with
    /// the owner present (social security card + a face check at the terminal).
    Terminal,
}

impl PartnerKind {
    /// Every kind.
    pub const ALL: [PartnerKind; 10] = [
        PartnerKind::Bank,
        PartnerKind::MiniProgram,
        PartnerKind::CityApp,
        PartnerKind::Hospital,
        PartnerKind::Pharmacy,
        PartnerKind::FaceProvider,
        PartnerKind::Employer,
        PartnerKind::Ops,
        PartnerKind::Service,
        PartnerKind::Terminal,
    ];

    /// The file and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerKind::Bank => "BANK",
            PartnerKind::MiniProgram => "MINI_PROGRAM",
            PartnerKind::CityApp => "CITY_APP",
            PartnerKind::Hospital => "HOSPITAL",
            PartnerKind::Pharmacy => "PHARMACY",
            PartnerKind::FaceProvider => "FACE_PROVIDER",
            PartnerKind::Employer => "EMPLOYER",
            PartnerKind::Ops => "OPS",
            PartnerKind::Service => "SERVICE",
            PartnerKind::Terminal => "TERMINAL",
        }
    }

    /// Scopes a new partner of this kind gets unless told otherwise.
    pub fn default_scopes(self) -> BTreeSet<String> {
        use super::scopes::*;
        let lists: &[&[&str]] = match self {
            // A bank is a front door too: its list grows with the apps' list.
            PartnerKind::Bank => &[FRONT_DOOR_APP, BANK_EXTRA],
            PartnerKind::MiniProgram | PartnerKind::CityApp => &[FRONT_DOOR_APP],
            // A hospital's medical insurance office also binds family members at its counter.
            PartnerKind::Hospital => &[POINT_OF_CARE, HOSPITAL_EXTRA],
            PartnerKind::Pharmacy => &[POINT_OF_CARE],
            PartnerKind::Terminal => &[TERMINAL],
            PartnerKind::FaceProvider => &[FACE_PROVIDER],
            PartnerKind::Employer => &[EMPLOYER],
            PartnerKind::Ops => &[OPS],
            PartnerKind::Service => &[SERVICE_PEER],
        };
        lists.iter().flat_map(|list| list.iter().map(|scope| (*scope).to_owned())).collect()
    }

    /// SMS codes a partner of this kind may have sent per China-time day unless its entry says
    /// otherwise: front doors send codes for their users' sign-ups and proofs, operators for
    /// the cases they handle; other kinds do not send codes (their default scopes lack
    /// `sms.send`), so a small budget bounds a mistaken grant.
    pub fn default_sms_daily_quota(self) -> u32 {
        match self {
            PartnerKind::Bank | PartnerKind::MiniProgram | PartnerKind::CityApp => 5_000,
            PartnerKind::Ops => 1_000,
            PartnerKind::Hospital
            | PartnerKind::Pharmacy
            | PartnerKind::FaceProvider
            | PartnerKind::Employer
            | PartnerKind::Service
            | PartnerKind::Terminal => 100,
        }
    }
}

impl fmt::Display for PartnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PartnerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PartnerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown partner kind {s:?}; one of {:?}", PartnerKind::ALL.map(|k| k.as_str())))
    }
}

/// A hospital's grade in the national grading of medical institutions (一级, 二级, 三级), or a
/// pharmacy; UNGRADED for institutions outside the grading (clinics, community health
/// stations). The settlement policy may differ by level (docs/architecture.md#visits-and-settlement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HospitalLevel {
    /// Level 1 (一级): community and township hospitals.
    #[serde(rename = "LEVEL_1")]
    Level1,
    /// Level 2 (二级): district and county hospitals.
    #[serde(rename = "LEVEL_2")]
    Level2,
    /// Level 3 (三级): regional and teaching hospitals.
    #[serde(rename = "LEVEL_3")]
    Level3,
    /// A designated retail pharmacy.
    #[serde(rename = "PHARMACY")]
    Pharmacy,
    /// Outside the grading.
    #[serde(rename = "UNGRADED")]
    Ungraded,
}

impl HospitalLevel {
    /// Every level.
    pub const ALL: [HospitalLevel; 5] = [
        HospitalLevel::Level1,
        HospitalLevel::Level2,
        HospitalLevel::Level3,
        HospitalLevel::Pharmacy,
        HospitalLevel::Ungraded,
    ];

    /// The file, CLI and stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HospitalLevel::Level1 => "LEVEL_1",
            HospitalLevel::Level2 => "LEVEL_2",
            HospitalLevel::Level3 => "LEVEL_3",
            HospitalLevel::Pharmacy => "PHARMACY",
            HospitalLevel::Ungraded => "UNGRADED",
        }
    }

    /// The level spelled `text` (exactly as stored).
    pub fn parse(text: &str) -> Option<HospitalLevel> {
        HospitalLevel::ALL.into_iter().find(|level| level.as_str() == text)
    }
}

crate::text_enum_sql!(HospitalLevel);

impl FromStr for HospitalLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HospitalLevel::parse(&s.to_ascii_uppercase())
            .ok_or_else(|| format!("unknown hospital level {s:?}; one of {:?}", HospitalLevel::ALL.map(|l| l.as_str())))
    }
}

/// Where a hospital or pharmacy gives care: its six-digit region code and its level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareSite {
    /// Six-digit administrative region code.
    pub region_code: String,
    /// Grade.
    pub level: HospitalLevel,
}

/// Whether `text` is a six-digit administrative region code (not starting with 0).
pub fn is_region_code(text: &str) -> bool {
    text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0')
}

/// Requests per second a partner may make, with a burst allowance (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests that may arrive at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 200.0, burst: 400 }
    }
}

/// One API key of a partner, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Hex SHA-256 of the whole key string (`mk_...`).
    pub sha256: String,
    /// First characters of the key, to tell keys apart in listings (not secret enough to use).
    pub hint: String,
    /// When the key was created (RFC 3339).
    pub created_at: String,
    /// Set when the key was revoked (RFC 3339); a revoked key is refused after the next reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// One partner, as stored in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerEntry {
    /// Stable id, e.g. `demo-hospital`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: PartnerKind,
    /// Scopes this partner holds.
    pub scopes: BTreeSet<String>,
    /// Rate limit.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// API keys.
    #[serde(default)]
    pub keys: Vec<StoredKey>,
    /// The FACE_PROVIDER partner that decides the face sessions this partner starts without
    /// naming one (must be the id of a FACE_PROVIDER partner of this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_provider: Option<String>,
    /// SMS codes this partner may have sent per China-time day; absent: the kind's default
    /// ([`PartnerKind::default_sms_daily_quota`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_daily_quota: Option<u32>,
    /// The employer codes an EMPLOYER partner speaks for (docs/architecture.md#trust-model): it
    /// opens EMPLOYEE accounts, credits contributions, applies for cards and reads ledgers only for
    /// these codes and their employees. Empty for every other kind.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub employer_codes: BTreeSet<String>,
    /// The client certificate this partner's keys are bound to (docs/tls.md): its keys are then
    /// accepted only over a mutual-TLS connection presenting that certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificatePin>,
    /// A HOSPITAL's or PHARMACY's six-digit region code (where its care is given: cross-region
    /// care is settled by it), set together with `hospital_level`. Absent: care there is
    /// settled as care in each patient's insured region, at level UNGRADED (a PHARMACY:
    /// PHARMACY), so a partner entry from before the field existed keeps settling as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    /// A HOSPITAL's grade (LEVEL_1, LEVEL_2, LEVEL_3, UNGRADED) or PHARMACY for a PHARMACY
    /// partner, set together with `region_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital_level: Option<HospitalLevel>,
}

impl PartnerEntry {
    /// Where this partner gives care, when its entry says (HOSPITAL and PHARMACY partners).
    pub fn care_site(&self) -> Option<CareSite> {
        match (&self.region_code, self.hospital_level) {
            (Some(region_code), Some(level)) => Some(CareSite { region_code: region_code.clone(), level }),
            _ => None,
        }
    }

    fn validate_care_site(&self) -> Result<(), String> {
        let id = &self.id;
        match (&self.region_code, self.hospital_level) {
            (None, None) => return Ok(()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(format!("partner {id:?}: region_code and hospital_level are set together"));
            }
            (Some(region), Some(_)) if !is_region_code(region) => {
                return Err(format!("partner {id:?}: region_code must be a six-digit region code"));
            }
            _ => {}
        }
        match (self.kind, self.hospital_level) {
            (PartnerKind::Pharmacy, Some(HospitalLevel::Pharmacy)) => Ok(()),
            (PartnerKind::Pharmacy, _) => {
                Err(format!("partner {id:?}: a PHARMACY partner's hospital_level is PHARMACY"))
            }
            (PartnerKind::Hospital, Some(HospitalLevel::Pharmacy)) => {
                Err(format!("partner {id:?}: a HOSPITAL's hospital_level is LEVEL_1, LEVEL_2, LEVEL_3 or UNGRADED"))
            }
            (PartnerKind::Hospital, _) => Ok(()),
            _ => Err(format!(
                "partner {id:?}: only HOSPITAL and PHARMACY partners have a region_code and hospital_level"
            )),
        }
    }
}

/// A partner's client certificate, pinned by its public key, its name, or both (both must then
/// match).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertificatePin {
    /// Hex SHA-256 of the certificate's DER SubjectPublicKeyInfo: survives re-issuing the
    /// certificate with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// A name the certificate carries: a subject common name or a DNS or URI subject alternative
    /// name (trusted only because the client CA issued it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl CertificatePin {
    /// Whether `certificate` is the pinned one.
    pub fn matches(&self, certificate: &crate::tls::ClientCertificate) -> bool {
        let key_matches = self.spki_sha256.as_deref().is_none_or(|pinned| {
            hex::decode(pinned).is_ok_and(|pinned| constant_time_eq(&pinned, &certificate.spki_sha256))
        });
        let name_matches =
            self.subject.as_deref().is_none_or(|pinned| certificate.names.iter().any(|name| name == pinned));
        key_matches && name_matches
    }

    fn validate(&self) -> Result<(), String> {
        if self.spki_sha256.is_none() && self.subject.is_none() {
            return Err("client_certificate needs spki_sha256, subject or both".into());
        }
        if let Some(spki) = &self.spki_sha256
            && hex::decode(spki).map(|bytes| bytes.len()) != Ok(32)
        {
            return Err("client_certificate.spki_sha256 must be 64 hex digits".into());
        }
        if let Some(subject) = &self.subject
            && (subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control))
        {
            return Err("client_certificate.subject must be 1-255 printable characters".into());
        }
        Ok(())
    }
}

/// Whether `text` is an employer code: 1-32 ASCII letters, digits or hyphens (the same rule an
/// EMPLOYEE account's `employer_code` follows).
pub fn is_employer_code(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The whole partners file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartnersFile {
    /// Partners.
    #[serde(default, rename = "partner")]
    pub partners: Vec<PartnerEntry>,
}

/// Problems with the partners file.
#[derive(Debug, thiserror::Error)]
pub enum PartnersError {
    /// Reading or writing failed.
    #[error("partners file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not parse or is inconsistent.
    #[error("partners file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a key).
        message: String,
    },
}

impl PartnersFile {
    /// Reads and validates a partners file.
    pub fn load(path: &Path) -> Result<Self, PartnersError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PartnersError::Io { path: path.to_owned(), source })?;
        let file: PartnersFile = toml::from_str(&text)
            .map_err(|e| PartnersError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        file.validate().map_err(|message| PartnersError::Invalid { path: path.to_owned(), message })?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for partner in &self.partners {
            if partner.id.is_empty() || !partner.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("partner id {:?} must be letters, digits, '-' or '_'", partner.id));
            }
            if !ids.insert(partner.id.as_str()) {
                return Err(format!("partner id {:?} appears twice", partner.id));
            }
            if partner.rate_limit.per_second.is_nan()
                || partner.rate_limit.per_second <= 0.0
                || partner.rate_limit.burst == 0
            {
                return Err(format!("partner {:?}: rate_limit needs per_second > 0 and burst > 0", partner.id));
            }
            if let Some(provider) = &partner.face_provider {
                let kind = self.partners.iter().find(|p| &p.id == provider).map(|p| p.kind);
                if kind != Some(PartnerKind::FaceProvider) {
                    return Err(format!(
                        "partner {:?}: face_provider {provider:?} is not a FACE_PROVIDER partner of this file",
                        partner.id
                    ));
                }
            }
            if !partner.employer_codes.is_empty() && partner.kind != PartnerKind::Employer {
                return Err(format!("partner {:?}: only an EMPLOYER partner has employer_codes", partner.id));
            }
            if let Some(bad) = partner.employer_codes.iter().find(|code| !is_employer_code(code)) {
                return Err(format!(
                    "partner {:?}: employer code {bad:?} must be 1-32 letters, digits or '-'",
                    partner.id
                ));
            }
            partner.validate_care_site()?;
            if let Some(pin) = &partner.client_certificate {
                pin.validate().map_err(|message| format!("partner {:?}: {message}", partner.id))?;
            }
            for key in &partner.keys {
                let bytes = hex::decode(&key.sha256).ok().filter(|b| b.len() == 32);
                if bytes.is_none() {
                    return Err(format!("partner {:?}: a key sha256 is not 64 hex digits", partner.id));
                }
                if !hashes.insert(key.sha256.to_ascii_lowercase()) {
                    return Err(format!("partner {:?}: a key hash appears twice", partner.id));
                }
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temporary file, then rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), PartnersError> {
        let io = |source| PartnersError::Io { path: path.to_owned(), source };
        let body = toml::to_string_pretty(self)
            .map_err(|e| PartnersError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        let text = format!(
            "# medins partners (docs/architecture.md#who-may-call-what). API keys are stored as SHA-256\n\
             # only; each key was shown once when created. Edit with `medins partner create|list|revoke`,\n\
             # then reload (SIGHUP).\n\n{body}"
        );
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = path.with_extension("toml.tmp");
        write_private(&tmp, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds a partner with a fresh API key and returns the key (the only time it exists in
    /// clear).
    pub fn add_partner(
        &mut self,
        id: &str,
        name: &str,
        kind: PartnerKind,
        scopes: Option<BTreeSet<String>>,
        rate_limit: RateLimit,
        now_rfc3339: &str,
    ) -> Result<ApiKey, String> {
        if self.partners.iter().any(|p| p.id == id) {
            return Err(format!("partner {id:?} already exists"));
        }
        let key = ApiKey::generate();
        self.partners.push(PartnerEntry {
            id: id.to_owned(),
            name: name.to_owned(),
            kind,
            scopes: scopes.unwrap_or_else(|| kind.default_scopes()),
            rate_limit,
            keys: vec![key.stored(now_rfc3339)],
            face_provider: None,
            sms_daily_quota: None,
            employer_codes: BTreeSet::new(),
            client_certificate: None,
            region_code: None,
            hospital_level: None,
        });
        self.validate()?;
        Ok(key)
    }

    /// Sets (or with `None` clears) the FACE_PROVIDER partner that decides the face sessions
    /// partner `id` starts without naming one; it must be a FACE_PROVIDER partner of this file.
    pub fn set_face_provider(&mut self, id: &str, provider: Option<&str>) -> Result<(), String> {
        let partner = self.partners.iter_mut().find(|p| p.id == id).ok_or_else(|| format!("no partner {id:?}"))?;
        let previous = std::mem::replace(&mut partner.face_provider, provider.map(str::to_owned));
        self.validate().inspect_err(|_| {
            if let Some(partner) = self.partners.iter_mut().find(|p| p.id == id) {
                partner.face_provider = previous;
            }
        })
    }

    /// Sets (or with `None` resets to the kind's default) partner `id`'s daily SMS quota.
    pub fn set_sms_daily_quota(&mut self, id: &str, quota: Option<u32>) -> Result<(), String> {
        let partner = self.partners.iter_mut().find(|p| p.id == id).ok_or_else(|| format!("no partner {id:?}"))?;
        partner.sms_daily_quota = quota;
        Ok(())
    }

    /// Sets the employer codes partner `id` speaks for (replacing the previous ones; empty:
    /// none). Only an EMPLOYER partner has them, and each must be an employer code.
    pub fn set_employer_codes(&mut self, id: &str, codes: BTreeSet<String>) -> Result<(), String> {
        let partner = self.partners.iter_mut().find(|p| p.id == id).ok_or_else(|| format!("no partner {id:?}"))?;
        let previous = std::mem::replace(&mut partner.employer_codes, codes);
        self.validate().inspect_err(|_| {
            if let Some(partner) = self.partners.iter_mut().find(|p| p.id == id) {
                partner.employer_codes = previous;
            }
        })
    }

    /// Binds (or with `None` unbinds) partner `id`'s keys to a client certificate.
    pub fn set_client_certificate(&mut self, id: &str, pin: Option<CertificatePin>) -> Result<(), String> {
        let partner = self.partners.iter_mut().find(|p| p.id == id).ok_or_else(|| format!("no partner {id:?}"))?;
        let previous = std::mem::replace(&mut partner.client_certificate, pin);
        self.validate().inspect_err(|_| {
            if let Some(partner) = self.partners.iter_mut().find(|p| p.id == id) {
                partner.client_certificate = previous;
            }
        })
    }

    /// Sets (or with `None` clears) where HOSPITAL or PHARMACY partner `id` gives care.
    pub fn set_care_site(&mut self, id: &str, site: Option<CareSite>) -> Result<(), String> {
        let partner = self.partners.iter_mut().find(|p| p.id == id).ok_or_else(|| format!("no partner {id:?}"))?;
        let previous = (partner.region_code.clone(), partner.hospital_level);
        partner.region_code = site.as_ref().map(|s| s.region_code.clone());
        partner.hospital_level = site.map(|s| s.level);
        self.validate().inspect_err(|_| {
            if let Some(partner) = self.partners.iter_mut().find(|p| p.id == id) {
                (partner.region_code, partner.hospital_level) = previous;
            }
        })
    }

    /// Revokes every live key of a partner; returns how many.
    pub fn revoke_partner(&mut self, id: &str, now_rfc3339: &str) -> Result<usize, String> {
        let partner = self.partners.iter_mut().find(|p| p.id == id).ok_or_else(|| format!("no partner {id:?}"))?;
        let mut revoked = 0;
        for key in partner.keys.iter_mut().filter(|k| k.revoked_at.is_none()) {
            key.revoked_at = Some(now_rfc3339.to_owned());
            revoked += 1;
        }
        Ok(revoked)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A freshly generated API key: `mk_` + 32 random bytes, base64url.
pub struct ApiKey(String);

impl ApiKey {
    /// A new random key.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = crate::crypto::random_bytes();
        ApiKey(format!("{API_KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The key itself, to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn stored(&self, now_rfc3339: &str) -> StoredKey {
        StoredKey {
            sha256: hex::encode(sha256(&self.0)),
            hint: self.0.chars().take(API_KEY_PREFIX.len() + 4).collect(),
            created_at: now_rfc3339.to_owned(),
            revoked_at: None,
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// An authenticated partner, as handlers see it.
#[derive(Debug)]
pub struct Partner {
    /// Partner id.
    pub id: String,
    /// Display name (a hospital's name on a person's settlement records).
    pub name: String,
    /// Kind.
    pub kind: PartnerKind,
    /// Scopes held.
    pub scopes: BTreeSet<String>,
    /// The FACE_PROVIDER partner deciding the face sessions it starts without naming one.
    pub face_provider: Option<String>,
    /// SMS codes it may have sent per China-time day.
    pub sms_daily_quota: u32,
    /// The employer codes it speaks for (EMPLOYER partners only).
    pub employer_codes: BTreeSet<String>,
    /// The client certificate its keys are bound to, if any.
    pub client_certificate: Option<CertificatePin>,
    /// Where it gives care (HOSPITAL and PHARMACY partners whose entry says).
    pub care_site: Option<CareSite>,
    pub(crate) limiter: Gcra,
}

impl Partner {
    /// Whether the partner holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// Key hashes sharing an 8-byte prefix, with their partners.
type KeyBucket = Vec<([u8; 32], Arc<Partner>)>;

/// A loaded partners file: keys indexed for lookup.
#[derive(Debug, Default)]
struct Snapshot {
    /// By the first 8 bytes of the key hash. The index is only a shortcut: the full hash is
    /// then compared in constant time.
    by_hash_prefix: HashMap<[u8; 8], KeyBucket>,
    partners: HashMap<String, Arc<Partner>>,
}

impl Snapshot {
    fn build(file: &PartnersFile, previous: Option<&Snapshot>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for entry in &file.partners {
            let limiter = Gcra::new(entry.rate_limit);
            // Keep the partner's rate-limit state across reloads, so a reload is no way around it.
            if let Some(old) = previous.and_then(|p| p.partners.get(&entry.id)) {
                limiter.inherit(&old.limiter);
            }
            let partner = Arc::new(Partner {
                id: entry.id.clone(),
                name: entry.name.clone(),
                kind: entry.kind,
                scopes: entry.scopes.clone(),
                face_provider: entry.face_provider.clone(),
                sms_daily_quota: entry.sms_daily_quota.unwrap_or_else(|| entry.kind.default_sms_daily_quota()),
                employer_codes: entry.employer_codes.clone(),
                client_certificate: entry.client_certificate.clone(),
                care_site: entry.care_site(),
                limiter,
            });
            for key in entry.keys.iter().filter(|k| k.revoked_at.is_none()) {
                let Some(hash) = hex::decode(&key.sha256).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
                    continue;
                };
                let prefix: [u8; 8] = hash[..8].try_into().expect("8 bytes");
                snapshot.by_hash_prefix.entry(prefix).or_default().push((hash, partner.clone()));
            }
            snapshot.partners.insert(entry.id.clone(), partner);
        }
        snapshot
    }
}

/// The live set of partners, shared by the auth layer of a server; reloadable.
#[derive(Clone, Debug)]
pub struct Partners {
    path: Option<Arc<PathBuf>>,
    current: Arc<RwLock<Arc<Snapshot>>>,
}

impl Partners {
    /// Loads the partners file.
    pub fn load(path: &Path) -> Result<Self, PartnersError> {
        let file = PartnersFile::load(path)?;
        let snapshot = Snapshot::build(&file, None);
        Ok(Self { path: Some(Arc::new(path.to_owned())), current: Arc::new(RwLock::new(Arc::new(snapshot))) })
    }

    /// Partners from memory (tests, embedded use); `reload` keeps them as they are.
    pub fn from_file(file: &PartnersFile) -> Self {
        Self { path: None, current: Arc::new(RwLock::new(Arc::new(Snapshot::build(file, None)))) }
    }

    /// Re-reads the file. On error the previous partners stay in force.
    pub fn reload(&self) -> Result<usize, PartnersError> {
        let Some(path) = &self.path else { return Ok(self.snapshot().partners.len()) };
        let file = PartnersFile::load(path)?;
        let mut guard = self.current.write().expect("partners lock");
        let snapshot = Snapshot::build(&file, Some(&guard));
        let count = snapshot.partners.len();
        *guard = Arc::new(snapshot);
        Ok(count)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("partners lock").clone()
    }

    /// The partner holding this API key, if the key is known and live.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<Partner>> {
        if !presented.starts_with(API_KEY_PREFIX) {
            return None;
        }
        let hash = sha256(presented);
        let prefix: [u8; 8] = hash[..8].try_into().expect("8 bytes");
        let snapshot = self.snapshot();
        let mut found = None;
        for (candidate, partner) in snapshot.by_hash_prefix.get(&prefix).into_iter().flatten() {
            if constant_time_eq(candidate, &hash) {
                found = Some(partner.clone());
            }
        }
        found
    }

    /// A partner by id (for reports; never for authentication).
    pub fn get(&self, id: &str) -> Option<Arc<Partner>> {
        self.snapshot().partners.get(id).cloned()
    }

    /// Ids of the partners whose keys are bound to a client certificate, sorted.
    pub fn pinned_to_certificates(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .snapshot()
            .partners
            .values()
            .filter(|p| p.client_certificate.is_some())
            .map(|p| p.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Ids of every FACE_PROVIDER partner, sorted.
    pub fn face_providers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .snapshot()
            .partners
            .values()
            .filter(|p| p.kind == PartnerKind::FaceProvider)
            .map(|p| p.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Reloads on every SIGHUP until the process ends.
    #[cfg(unix)]
    pub fn reload_on_sighup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        let partners = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match partners.reload() {
                    Ok(count) => tracing::info!(partners = count, "partners file reloaded"),
                    Err(error) => tracing::error!(%error, "partners file reload failed; previous partners stay"),
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(kind: PartnerKind) -> (PartnersFile, ApiKey) {
        let mut file = PartnersFile::default();
        let key = file.add_partner("p1", "P1", kind, None, RateLimit::default(), "2026-01-01T00:00:00Z").unwrap();
        (file, key)
    }

    #[test]
    fn a_generated_key_authenticates_and_others_do_not() {
        let (file, key) = file_with(PartnerKind::Hospital);
        let partners = Partners::from_file(&file);
        assert_eq!(partners.authenticate(key.expose()).unwrap().id, "p1");
        assert!(partners.authenticate("mk_wrong").is_none());
        assert!(partners.authenticate("").is_none());
        let mut tampered = key.expose().to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(partners.authenticate(&tampered).is_none());
    }

    #[test]
    fn a_revoked_key_stops_working_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partners.toml");
        let (mut file, key) = file_with(PartnerKind::Ops);
        file.save(&path).unwrap();
        let partners = Partners::load(&path).unwrap();
        assert!(partners.authenticate(key.expose()).is_some());
        file.revoke_partner("p1", "2026-01-02T00:00:00Z").unwrap();
        file.save(&path).unwrap();
        assert!(partners.authenticate(key.expose()).is_some(), "still live until reload");
        partners.reload().unwrap();
        assert!(partners.authenticate(key.expose()).is_none());
    }

    #[test]
    fn the_file_never_holds_the_key_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partners.toml");
        let (file, key) = file_with(PartnerKind::Bank);
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(key.expose()));
        assert_eq!(PartnersFile::load(&path).unwrap(), file);
    }

    #[test]
    fn a_face_provider_must_be_a_face_provider_partner_and_quotas_default_by_kind() {
        let (mut file, _) = file_with(PartnerKind::MiniProgram);
        file.add_partner("face-1", "F", PartnerKind::FaceProvider, None, RateLimit::default(), "x").unwrap();
        file.add_partner("bank-1", "B", PartnerKind::Bank, None, RateLimit::default(), "x").unwrap();
        assert!(file.set_face_provider("p1", Some("bank-1")).is_err(), "a bank decides no face session");
        assert!(file.set_face_provider("p1", Some("nobody")).is_err());
        assert_eq!(file.partners[0].face_provider, None, "a refused change leaves the entry as it was");
        file.set_face_provider("p1", Some("face-1")).unwrap();
        file.set_sms_daily_quota("bank-1", Some(3)).unwrap();
        let partners = Partners::from_file(&file);
        let p1 = partners.get("p1").unwrap();
        assert_eq!((p1.face_provider.as_deref(), p1.sms_daily_quota), (Some("face-1"), 5_000));
        assert_eq!(partners.get("bank-1").unwrap().sms_daily_quota, 3);
        assert_eq!(partners.face_providers(), vec!["face-1".to_owned()]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partners.toml");
        file.save(&path).unwrap();
        assert_eq!(PartnersFile::load(&path).unwrap(), file, "both fields survive the file");
    }

    #[test]
    fn employer_codes_belong_to_employers_are_validated_and_survive_the_file() {
        let (mut file, _) = file_with(PartnerKind::Employer);
        file.add_partner("bank-1", "B", PartnerKind::Bank, None, RateLimit::default(), "x").unwrap();
        let codes = |list: &[&str]| list.iter().map(|c| (*c).to_owned()).collect::<BTreeSet<_>>();
        assert!(file.set_employer_codes("bank-1", codes(&["ACME-01"])).is_err(), "a bank speaks for no employer");
        assert!(file.set_employer_codes("p1", codes(&["ACME 01"])).is_err(), "not an employer code");
        assert!(file.set_employer_codes("p1", codes(&[""])).is_err());
        assert!(file.set_employer_codes("p1", codes(&[&"A".repeat(33)])).is_err());
        assert!(
            file.partners.iter().all(|p| p.employer_codes.is_empty()),
            "a refused change leaves entries as they were"
        );
        file.set_employer_codes("p1", codes(&["ACME-01", "ACME-02"])).unwrap();
        assert_eq!(Partners::from_file(&file).get("p1").unwrap().employer_codes, codes(&["ACME-01", "ACME-02"]));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partners.toml");
        file.save(&path).unwrap();
        assert_eq!(PartnersFile::load(&path).unwrap(), file, "the codes survive the file");
        file.set_employer_codes("p1", BTreeSet::new()).unwrap();
        assert!(file.partners[0].employer_codes.is_empty());
    }

    #[test]
    fn a_certificate_pin_is_validated_matches_key_and_name_and_survives_the_file() {
        let (mut file, _) = file_with(PartnerKind::Bank);
        let pin = |spki: Option<&str>, subject: Option<&str>| CertificatePin {
            spki_sha256: spki.map(str::to_owned),
            subject: subject.map(str::to_owned),
        };
        assert!(file.set_client_certificate("p1", Some(pin(None, None))).is_err(), "a pin needs something");
        assert!(file.set_client_certificate("p1", Some(pin(Some("abcd"), None))).is_err());
        assert!(file.set_client_certificate("p1", Some(pin(None, Some("a\nb")))).is_err());
        assert_eq!(file.partners[0].client_certificate, None, "a refused change leaves the entry as it was");
        let spki = [7u8; 32];
        let certificate =
            crate::tls::ClientCertificate { spki_sha256: spki, names: vec!["gw.bank.example".into(), "gw".into()] };
        assert!(pin(Some(&hex::encode(spki)), None).matches(&certificate));
        assert!(pin(None, Some("gw")).matches(&certificate));
        assert!(pin(Some(&hex::encode(spki)), Some("gw.bank.example")).matches(&certificate));
        assert!(!pin(Some(&hex::encode([8u8; 32])), Some("gw")).matches(&certificate), "both must match");
        assert!(!pin(Some(&hex::encode(spki)), Some("other")).matches(&certificate), "both must match");
        assert!(!pin(None, Some("GW")).matches(&certificate), "names compare exactly");

        file.set_client_certificate("p1", Some(pin(Some(&hex::encode(spki)), Some("gw")))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partners.toml");
        file.save(&path).unwrap();
        assert_eq!(PartnersFile::load(&path).unwrap(), file);
        assert_eq!(Partners::load(&path).unwrap().pinned_to_certificates(), vec!["p1".to_owned()]);
    }

    #[test]
    fn duplicate_ids_and_bad_hashes_are_refused() {
        let (mut file, _) = file_with(PartnerKind::Bank);
        assert!(file.add_partner("p1", "again", PartnerKind::Bank, None, RateLimit::default(), "x").is_err());
        file.partners[0].keys[0].sha256 = "abc".into();
        assert!(file.validate().is_err());
    }
}
