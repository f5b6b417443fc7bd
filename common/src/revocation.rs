//! Person tokens that die with their link: the revocation feed every verifier keeps in memory.
//!
//! identity-svc writes a revocation (person, partner or every partner, time) in the same
//! transaction as whatever ended the partner's right to act for the person: an unlink, the
//! person revoking a partner, an operator suspending the person. A token is refused
//! (UNAUTHENTICATED / PERSON_TOKEN_REVOKED) when a revocation for its person and its partner (or
//! for every partner) was made at or after the token's issue time, in milliseconds.
//!
//! A token older than [`crate::token::PERSON_TOKEN_LIFETIME_SECS`] has expired anyway, so each
//! process keeps only the revocations of the last lifetime (plus the issue-time skew) in memory,
//! replaced as a whole every [`REVOCATION_REFRESH_INTERVAL`]: identity-svc replicas read their own
//! database, insurance-svc replicas call identity-svc's
//! `PersonTokenService/ListTokenRevocations`. The per-call check is a read lock, an `Arc` clone
//! and a hash lookup: no database and no call to identity-svc.
//!
//! # When the feed cannot be refreshed
//!
//! The promise is "refused everywhere within 5 seconds". A verifier whose last successful
//! refresh began more than [`REVOCATION_MAX_STALENESS`] ago cannot keep it, so it fails closed:
//! every call that carries a person token answers UNAVAILABLE / DEPENDENCY_UNAVAILABLE
//! (retryable) until a refresh succeeds. Calls by operators and medins services (no token) are
//! unaffected. Failing open instead would let an unlinked partner keep reading a person for as
//! long as identity-svc is unreachable, which is exactly when nobody is watching.
//!
//! # Issue time after a revocation
//!
//! identity-svc issues a token no earlier than one millisecond after the latest revocation of
//! that person and partner it can see, so a re-link right after an unlink (even in the same
//! millisecond, or on a replica whose clock is slightly behind) gives a token that works.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::token::{MAX_ISSUED_AT_SKEW_SECS, PERSON_TOKEN_LIFETIME_SECS, PersonClaims};

/// How often a verifier replaces its revocations.
pub const REVOCATION_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How old the last successful refresh may be before token checks fail closed. With a refresh
/// every second this leaves room for three failed or slow refreshes, and a revocation is still
/// seen everywhere within 5 seconds.
pub const REVOCATION_MAX_STALENESS: Duration = Duration::from_secs(4);

/// How far back the feed reaches: a token issued before this has expired.
pub fn revocation_window() -> chrono::Duration {
    chrono::Duration::seconds(PERSON_TOKEN_LIFETIME_SECS + MAX_ISSUED_AT_SKEW_SECS)
}

crate::text_enum! {
    /// Why a revocation was written.
    pub enum RevocationReason {
        /// The partner unlinked (UnlinkPartnerAccount).
        Unlinked => "UNLINKED",
        /// The person revoked the partner's link (RevokePartnerLink).
        RevokedByPerson => "REVOKED_BY_PERSON",
        /// An operator suspended the person (every partner).
        PersonSuspended => "PERSON_SUSPENDED",
        /// The person's claim was superseded by an authority-confirmed registration.
        ClaimSuperseded => "CLAIM_SUPERSEDED",
    }
}

/// One revocation as the feed carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The person whose tokens die.
    pub person_id: Uuid,
    /// The partner whose tokens die; `None` for every partner.
    pub partner_id: Option<String>,
    /// When, Unix milliseconds: tokens issued at or before this die.
    pub revoked_at_ms: i64,
}

impl Revocation {
    /// Whether this revocation kills a token with `claims`: same person, its partner or every
    /// partner, issued at or before the revocation.
    pub fn kills(&self, claims: &PersonClaims) -> bool {
        self.person_id == claims.person_id
            && self.partner_id.as_deref().is_none_or(|partner| partner == claims.partner_id)
            && self.revoked_at_ms >= claims.issued_at_ms
    }
}

/// What the feed says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationCheck {
    /// No revocation applies.
    Live,
    /// A revocation applies.
    Revoked,
    /// The feed is too old to tell (fail closed).
    Stale,
}

#[derive(Default)]
struct Snapshot {
    by_person: HashMap<Uuid, Vec<Revocation>>,
    /// When the refresh that produced this snapshot began; `None` before the first.
    refreshed: Option<Instant>,
    /// Revocations added locally since, with when: a refresh that began before one was added may
    /// not have read it, so it is carried over until a refresh that began later.
    added: Vec<(Instant, Revocation)>,
}

/// The revocations a verifier knows, replaced as a whole by each refresh.
pub struct TokenRevocations {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Milliseconds; 0: nothing refreshes this set and it never goes stale (unit tests, tools).
    max_staleness_ms: AtomicU64,
}

impl Default for TokenRevocations {
    fn default() -> Self {
        Self { snapshot: RwLock::new(Arc::new(Snapshot::default())), max_staleness_ms: AtomicU64::new(0) }
    }
}

impl std::fmt::Debug for TokenRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRevocations").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl TokenRevocations {
    /// From now on, refuse to answer (stale) when the last refresh began more than `bound` ago
    /// or none has happened yet.
    pub fn require_refresh_within(&self, bound: Duration) {
        let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX).max(1);
        self.max_staleness_ms.store(millis, Ordering::Relaxed);
    }

    /// Replaces the known revocations with `revocations`, read by a refresh that began at
    /// `began`.
    pub fn replace(&self, revocations: impl IntoIterator<Item = Revocation>, began: Instant) {
        let mut by_person: HashMap<Uuid, Vec<Revocation>> = HashMap::new();
        for revocation in revocations {
            by_person.entry(revocation.person_id).or_default().push(revocation);
        }
        let mut snapshot = self.snapshot.write().expect("revocations lock");
        // A slow refresh that began before a newer one finished must not roll the set back.
        if snapshot.refreshed.is_some_and(|last| last > began) {
            return;
        }
        let added: Vec<(Instant, Revocation)> = snapshot.added.iter().filter(|(at, _)| *at >= began).cloned().collect();
        for (_, revocation) in &added {
            by_person.entry(revocation.person_id).or_default().push(revocation.clone());
        }
        *snapshot = Arc::new(Snapshot { by_person, refreshed: Some(began), added });
    }

    /// Adds one revocation at once (the process that wrote it refuses the token immediately,
    /// before its next refresh). Does not count as a refresh.
    pub fn add(&self, revocation: Revocation) {
        let mut snapshot = self.snapshot.write().expect("revocations lock");
        let mut by_person = snapshot.by_person.clone();
        by_person.entry(revocation.person_id).or_default().push(revocation.clone());
        let mut added = snapshot.added.clone();
        added.push((Instant::now(), revocation));
        *snapshot = Arc::new(Snapshot { by_person, refreshed: snapshot.refreshed, added });
    }

    /// What the feed says about a token with `claims`, now.
    pub fn check(&self, claims: &PersonClaims) -> RevocationCheck {
        let snapshot = self.snapshot.read().expect("revocations lock").clone();
        let bound = self.max_staleness_ms.load(Ordering::Relaxed);
        if bound > 0 && snapshot.refreshed.is_none_or(|at| at.elapsed() > Duration::from_millis(bound)) {
            return RevocationCheck::Stale;
        }
        let revoked = snapshot
            .by_person
            .get(&claims.person_id)
            .is_some_and(|revocations| revocations.iter().any(|revocation| revocation.kills(claims)));
        if revoked { RevocationCheck::Revoked } else { RevocationCheck::Live }
    }

    /// How many revocations are known (tests, metrics).
    pub fn len(&self) -> usize {
        self.snapshot.read().expect("revocations lock").by_person.values().map(Vec::len).sum()
    }

    /// Whether none are known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The issue time (Unix milliseconds) of a token issued at `now_ms` to a partner whose latest
/// applicable revocation (its own or every partner's) was at `latest_revocation_ms`: never at or
/// before that revocation, whatever the clocks say.
pub fn issue_time_after(now_ms: i64, latest_revocation_ms: Option<i64>) -> i64 {
    match latest_revocation_ms {
        Some(revoked) if revoked >= now_ms => revoked + 1,
        _ => now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assurance::AssuranceLevel;

    fn claims(person_id: Uuid, partner: &str, issued_at_ms: i64) -> PersonClaims {
        PersonClaims {
            person_id,
            partner_id: partner.into(),
            issued_at: issued_at_ms.div_euclid(1000),
            issued_at_ms,
            expires_at: issued_at_ms.div_euclid(1000) + 900,
            token_id: "j".into(),
            key_id: "k".into(),
            assurance_level: AssuranceLevel::RealName,
        }
    }

    #[test]
    fn a_revocation_kills_tokens_of_its_partner_issued_at_or_before_it() {
        let person = Uuid::now_v7();
        let revocation = Revocation { person_id: person, partner_id: Some("bank".into()), revoked_at_ms: 5_000 };
        assert!(revocation.kills(&claims(person, "bank", 4_999)));
        assert!(revocation.kills(&claims(person, "bank", 5_000)));
        assert!(!revocation.kills(&claims(person, "bank", 5_001)), "a token issued after it lives");
        assert!(!revocation.kills(&claims(person, "mini-program", 4_000)), "another partner's token lives");
        assert!(!revocation.kills(&claims(Uuid::now_v7(), "bank", 4_000)), "another person's token lives");
        let everyone = Revocation { partner_id: None, ..revocation };
        assert!(everyone.kills(&claims(person, "mini-program", 4_000)));
    }

    #[test]
    fn the_set_answers_live_revoked_or_stale() {
        let person = Uuid::now_v7();
        let set = TokenRevocations::default();
        assert_eq!(set.check(&claims(person, "bank", 1)), RevocationCheck::Live, "no feed required");
        set.require_refresh_within(Duration::from_millis(200));
        assert_eq!(set.check(&claims(person, "bank", 1)), RevocationCheck::Stale, "never refreshed");
        set.replace(
            [Revocation { person_id: person, partner_id: Some("bank".into()), revoked_at_ms: 10 }],
            Instant::now(),
        );
        assert_eq!(set.check(&claims(person, "bank", 5)), RevocationCheck::Revoked);
        assert_eq!(set.check(&claims(person, "bank", 11)), RevocationCheck::Live);
        set.add(Revocation { person_id: person, partner_id: None, revoked_at_ms: 20 });
        assert_eq!(set.check(&claims(person, "mini-program", 11)), RevocationCheck::Revoked);
        assert_eq!(set.len(), 2);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(set.check(&claims(person, "bank", 30)), RevocationCheck::Stale);
    }

    #[test]
    fn an_older_refresh_never_replaces_a_newer_one() {
        let person = Uuid::now_v7();
        let set = TokenRevocations::default();
        let older = Instant::now();
        let newer = older + Duration::from_millis(1);
        set.replace([Revocation { person_id: person, partner_id: None, revoked_at_ms: 10 }], newer);
        set.replace([], older);
        assert_eq!(set.check(&claims(person, "bank", 5)), RevocationCheck::Revoked);
    }

    #[test]
    fn a_local_revocation_survives_a_refresh_that_began_before_it() {
        let person = Uuid::now_v7();
        let set = TokenRevocations::default();
        let began = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        set.add(Revocation { person_id: person, partner_id: None, revoked_at_ms: 10 });
        set.replace([], began);
        assert_eq!(set.check(&claims(person, "bank", 5)), RevocationCheck::Revoked, "kept");
        set.replace([], Instant::now());
        assert_eq!(set.check(&claims(person, "bank", 5)), RevocationCheck::Live, "a later refresh decides");
    }

    #[test]
    fn a_token_is_issued_after_the_latest_revocation() {
        assert_eq!(issue_time_after(1_000, None), 1_000);
        assert_eq!(issue_time_after(1_000, Some(999)), 1_000);
        assert_eq!(issue_time_after(1_000, Some(1_000)), 1_001);
        assert_eq!(issue_time_after(1_000, Some(1_300)), 1_301, "a replica whose clock is behind");
    }

    #[test]
    fn reasons_round_trip() {
        for &reason in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RevocationReason::parse("x"), None);
    }
}
