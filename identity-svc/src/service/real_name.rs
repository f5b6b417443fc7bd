//! `PersonService.CompleteRealName`: a verified SMS code for the phone on record, then the
//! identity authority's verdict, make a person's real name VERIFIED.

use medins_common::{ApiError, ApiResult, Reason, db::write_transaction};
use uuid::Uuid;

use super::{State, person::person_not_found};
use crate::{
    authority::AuthorityVerdict,
    domain::{
        person::{Person, RealName},
        sms::SmsPurpose,
    },
};

/// How a real name verified by this flow is recorded.
pub const METHOD_SMS_AND_AUTHORITY: &str = "SMS_AND_AUTHORITY";

/// Completes the real name of `person_id` with SMS challenge `challenge_id` (sent to the
/// person's phone for REAL_NAME and verified). Returns the person as it now is.
///
/// A person already VERIFIED is returned unchanged (the challenge is left alone). Otherwise the
/// challenge is checked first, so that a wrong one fails before the authority is asked; the
/// authority's MATCH then marks the person VERIFIED and uses the challenge up in one
/// transaction. MISMATCH or DENY uses the challenge up too (one SMS proof buys one verdict)
/// and fails REAL_NAME_REJECTED. An unreachable authority leaves the challenge usable.
pub(super) async fn complete_real_name(
    state: &State,
    person_id: Uuid,
    challenge_id: Uuid,
    partner: &str,
) -> ApiResult<Person> {
    let person = state.persons.find(person_id).await?.ok_or_else(person_not_found)?;
    if matches!(person.real_name, RealName::Verified { .. }) {
        return Ok(person);
    }
    let phone = person.phone.clone().ok_or_else(|| {
        ApiError::of(Reason::PhoneRequired, "the person has no phone on record: register the person with a phone first")
    })?;
    state.sms.check_verified(challenge_id, &phone, SmsPurpose::RealName, partner).await?;

    let verdict = state.identity_authority.check(&person.name, &person.id_number).await.map_err(|error| {
        tracing::warn!(%person_id, error = %error, "identity authority gave no verdict");
        ApiError::of(Reason::DependencyUnavailable, "the identity authority is unavailable, retry later")
    })?;
    tracing::info!(%person_id, %challenge_id, partner, verdict = verdict.as_str(), "identity authority verdict");

    match verdict {
        AuthorityVerdict::Match => {
            let (persons, sms, now) = (state.persons.clone(), state.sms.clone(), state.clock.stored_now());
            let partner = partner.to_owned();
            let superseded = state
                .db
                .write(move |conn| {
                    write_transaction(conn, |conn| {
                        persons.lock_claims_of_in(conn, person_id)?;
                        // A concurrent call may have verified the person meanwhile: then this
                        // challenge stays unused.
                        if persons.mark_real_name_verified_in(conn, person_id, METHOD_SMS_AND_AUTHORITY, now)? {
                            crate::store::assurance::mark_level_1_in(conn, person_id, METHOD_SMS_AND_AUTHORITY, now)?;
                            sms.consume_verified_in(conn, challenge_id, &phone, SmsPurpose::RealName, &partner)?;
                            // The authority has said who holds this ID number: the other claims
                            // to it end with this commit.
                            return persons.supersede_other_claims_in(conn, person_id, now);
                        }
                        Ok::<_, ApiError>(Vec::new())
                    })
                })
                .await?;
            if !superseded.is_empty() {
                tracing::info!(%person_id, superseded = superseded.len(), "confirmation superseded other claims");
            }
            state.persons.find(person_id).await?.ok_or_else(person_not_found)
        }
        AuthorityVerdict::Mismatch | AuthorityVerdict::Deny => {
            state.sms.consume_verified(challenge_id, &phone, SmsPurpose::RealName, partner).await?;
            Err(ApiError::of(
                Reason::RealNameRejected,
                "the identity authority did not confirm this name and ID number",
            ))
        }
    }
}
