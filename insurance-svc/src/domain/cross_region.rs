//! Cross-region care filings: a person tells the fund, before care elsewhere, where and why
//! (living there for the long term, working there, a referral, a temporary stay), so that care
//! in that region settles at the filed terms (the insured region's policy on the treatment
//! region's catalogue). Pure: the rules of filing and cancelling, and which filing covers a
//! visit. Care before a filing's start, or elsewhere, is care without one (its policy's unfiled
//! terms, or a claim).

use chrono::{NaiveDate, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason};
use uuid::Uuid;

use super::account::is_region_code;

/// Most days a TEMPORARY or REFERRAL filing may cover (the national practice: six months).
pub const MAX_SHORT_FILING_DAYS: i64 = 180;
/// Most filings a person may have ACTIVE at once: bounds what one person can store.
pub const MAX_ACTIVE_FILINGS: usize = 10;

medins_common::text_enum! {
    /// Why the person is filing.
    pub enum FilingKind {
        /// Living in the other region for the long term (retired elsewhere, living with children).
        LongTermResidence => "LONG_TERM_RESIDENCE",
        /// Posted or employed in the other region.
        WorkingElsewhere => "WORKING_ELSEWHERE",
        /// Referred by a hospital of the insured region to one in the other region.
        Referral => "REFERRAL",
        /// A temporary stay (travel, family visit, short-term work).
        Temporary => "TEMPORARY",
    }
}

impl FilingKind {
    /// Whether the filing lasts until cancelled (no end date): living or working elsewhere.
    pub fn is_open_ended(self) -> bool {
        matches!(self, FilingKind::LongTermResidence | FilingKind::WorkingElsewhere)
    }
}

medins_common::text_enum! {
    /// Where a filing stands.
    pub enum FilingStatus {
        /// In force for its period.
        Active => "ACTIVE",
        /// Cancelled by the person or an operator; covers nothing.
        Cancelled => "CANCELLED",
    }
}

/// A filing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    /// Its id.
    pub id: Uuid,
    /// Whose care it covers.
    pub person_id: Uuid,
    /// The person's insured region when filing.
    pub insured_region_code: String,
    /// Where the care is given.
    pub destination_region_code: String,
    /// Why.
    pub kind: FilingKind,
    /// First day covered (China Standard Time).
    pub starts_on: NaiveDate,
    /// Last day covered; None: until cancelled.
    pub ends_on: Option<NaiveDate>,
    /// In force or cancelled.
    pub status: FilingStatus,
    /// The partner that filed it (an app for the person, or the operators' window).
    pub filed_by: String,
    /// When.
    pub filed_at: NaiveDateTime,
    /// When it was cancelled.
    pub cancelled_at: Option<NaiveDateTime>,
}

impl Filing {
    /// Whether it covers care on `day` (inclusive period, ACTIVE only).
    pub fn covers_day(&self, day: NaiveDate) -> bool {
        self.status == FilingStatus::Active && self.starts_on <= day && self.ends_on.is_none_or(|end| day <= end)
    }

    fn overlaps(&self, starts_on: NaiveDate, ends_on: Option<NaiveDate>) -> bool {
        let ends_before_other_starts = self.ends_on.is_some_and(|end| end < starts_on);
        let starts_after_other_ends = ends_on.is_some_and(|end| end < self.starts_on);
        !ends_before_other_starts && !starts_after_other_ends
    }
}

/// The pooling region a region code belongs to: the province for the four municipalities
/// directly under the central government (Beijing 11, Tianjin 12, Shanghai 31, Chongqing 50),
/// whose funds pool city-wide; the prefecture (first four digits) elsewhere.
pub fn pooling_region(region_code: &str) -> &str {
    match region_code.get(..2) {
        Some("11" | "12" | "31" | "50") => &region_code[..2],
        _ => region_code.get(..4).unwrap_or(region_code),
    }
}

/// Whether care in `treatment_region` is cross-region care for a person insured in
/// `insured_region`: they belong to different pooling regions.
pub fn is_cross_region(insured_region: &str, treatment_region: &str) -> bool {
    pooling_region(insured_region) != pooling_region(treatment_region)
}

/// A new filing's checked terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilingTerms {
    /// Why.
    pub kind: FilingKind,
    /// Where.
    pub destination_region_code: String,
    /// First day.
    pub starts_on: NaiveDate,
    /// Last day, None for open-ended kinds.
    pub ends_on: Option<NaiveDate>,
}

/// Checks a request's terms on their own (no state): a six-digit destination, a start no
/// earlier than `today` (care before a filing is care without one), an end for TEMPORARY and
/// REFERRAL within [`MAX_SHORT_FILING_DAYS`] of the start and none for the open-ended kinds.
pub fn filing_terms(
    kind: FilingKind,
    destination_region_code: &str,
    starts_on: NaiveDate,
    ends_on: Option<NaiveDate>,
    today: NaiveDate,
) -> ApiResult<FilingTerms> {
    let invalid = |field: &str, what: &str| ApiError::invalid_field(Reason::InvalidArgument, field, what);
    if !is_region_code(destination_region_code) {
        return Err(invalid("destination_region_code", "must be a six-digit region code"));
    }
    if starts_on < today {
        return Err(invalid("starts_on", "must be today or later (China Standard Time)"));
    }
    match (kind.is_open_ended(), ends_on) {
        (true, Some(_)) => return Err(invalid("ends_on", "must be empty: this kind lasts until cancelled")),
        (false, None) => return Err(invalid("ends_on", "required for TEMPORARY and REFERRAL filings")),
        (false, Some(end)) if end < starts_on => return Err(invalid("ends_on", "must not be before starts_on")),
        (false, Some(end)) if (end - starts_on).num_days() >= MAX_SHORT_FILING_DAYS => {
            return Err(invalid("ends_on", "may cover at most 180 days"));
        }
        _ => {}
    }
    Ok(FilingTerms { kind, destination_region_code: destination_region_code.to_owned(), starts_on, ends_on })
}

/// Whether the person, insured in `insured_region_code`, may file `terms` next to their
/// `active` filings: the destination must be outside their pooling region, no ACTIVE filing for
/// the same pooling region may overlap the period, and at most [`MAX_ACTIVE_FILINGS`] at once.
pub fn admit_filing(insured_region_code: &str, terms: &FilingTerms, active: &[Filing]) -> ApiResult<()> {
    if !is_cross_region(insured_region_code, &terms.destination_region_code) {
        return Err(ApiError::of(
            Reason::NotCrossRegion,
            "the destination is in the person's own pooling region: no filing is needed there",
        ));
    }
    let destination = pooling_region(&terms.destination_region_code);
    if active.iter().any(|filing| {
        filing.status == FilingStatus::Active
            && pooling_region(&filing.destination_region_code) == destination
            && filing.overlaps(terms.starts_on, terms.ends_on)
    }) {
        return Err(ApiError::of(
            Reason::CrossRegionFilingExists,
            "an active filing for that region already covers part of this period",
        ));
    }
    if active.iter().filter(|filing| filing.status == FilingStatus::Active).count() >= MAX_ACTIVE_FILINGS {
        return Err(ApiError::of(
            Reason::CrossRegionFilingLimit,
            "at most 10 filings may be active at once: cancel one first",
        ));
    }
    Ok(())
}

/// Whether `filing` may be cancelled: only while ACTIVE (a retry of a cancel finds it
/// CANCELLED and is told so).
pub fn admit_cancel(filing: &Filing) -> ApiResult<()> {
    match filing.status {
        FilingStatus::Active => Ok(()),
        FilingStatus::Cancelled => {
            Err(ApiError::failed_precondition(Reason::CrossRegionFilingCancelled, "this filing is already cancelled"))
        }
    }
}

/// The filing that covers care given in `treatment_region` on `day`, if any: ACTIVE, for the
/// same pooling region, its period holding the day. Filings never overlap per pooling region,
/// so there is at most one.
pub fn covering<'a>(filings: &'a [Filing], treatment_region: &str, day: NaiveDate) -> Option<&'a Filing> {
    let pool = pooling_region(treatment_region);
    filings.iter().find(|filing| pooling_region(&filing.destination_region_code) == pool && filing.covers_day(day))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn filing(destination: &str, starts: &str, ends: Option<&str>, status: FilingStatus) -> Filing {
        Filing {
            id: Uuid::nil(),
            person_id: Uuid::nil(),
            insured_region_code: "110105".to_owned(),
            destination_region_code: destination.to_owned(),
            kind: if ends.is_some() { FilingKind::Temporary } else { FilingKind::LongTermResidence },
            starts_on: day(starts),
            ends_on: ends.map(day),
            status,
            filed_by: "demo-bank".to_owned(),
            filed_at: day(starts).and_hms_opt(9, 0, 0).unwrap(),
            cancelled_at: None,
        }
    }

    #[test]
    fn pooling_regions_are_the_municipality_or_the_prefecture() {
        assert!(!is_cross_region("110105", "110108"), "two Beijing districts pool together");
        assert!(!is_cross_region("310115", "310104"));
        assert!(is_cross_region("110105", "310115"));
        assert!(!is_cross_region("440305", "440306"), "two Shenzhen districts");
        assert!(is_cross_region("440305", "440106"), "Shenzhen and Guangzhou pool apart");
    }

    #[test]
    fn terms_need_a_future_start_and_an_end_only_for_short_kinds() {
        let today = day("2026-12-07");
        let ok = filing_terms(FilingKind::Temporary, "310115", today, Some(day("2027-01-06")), today).unwrap();
        assert_eq!(ok.ends_on, Some(day("2027-01-06")));
        assert!(filing_terms(FilingKind::LongTermResidence, "310115", today, None, today).is_ok());
        for (kind, region, starts, ends, field) in [
            (FilingKind::Temporary, "31011", today, Some(today), "destination_region_code"),
            (FilingKind::Temporary, "310115", day("2026-12-06"), Some(today), "starts_on"),
            (FilingKind::Temporary, "310115", today, None, "ends_on"),
            (FilingKind::Referral, "310115", today, Some(day("2026-12-06")), "ends_on"),
            (FilingKind::Referral, "310115", today, Some(day("2027-06-05")), "ends_on"),
            (FilingKind::WorkingElsewhere, "310115", today, Some(day("2027-01-01")), "ends_on"),
        ] {
            let error = filing_terms(kind, region, starts, ends, today).unwrap_err();
            assert_eq!(error.reason(), Reason::InvalidArgument, "{field}");
            assert!(format!("{error:?}").contains(field), "{field}: {error:?}");
        }
        // 180 days inclusive is the most.
        assert!(filing_terms(FilingKind::Referral, "310115", today, Some(day("2027-06-04")), today).is_ok());
    }

    #[test]
    fn filings_for_one_region_never_overlap_and_are_bounded_in_number() {
        let terms = |starts: &str, ends: Option<&str>| FilingTerms {
            kind: if ends.is_some() { FilingKind::Temporary } else { FilingKind::LongTermResidence },
            destination_region_code: "310115".to_owned(),
            starts_on: day(starts),
            ends_on: ends.map(day),
        };
        let within_own = FilingTerms { destination_region_code: "110108".to_owned(), ..terms("2026-12-07", None) };
        assert_eq!(admit_filing("110105", &within_own, &[]).unwrap_err().reason(), Reason::NotCrossRegion);

        let existing = [filing("310104", "2026-12-10", Some("2026-12-20"), FilingStatus::Active)];
        let overlapping = admit_filing("110105", &terms("2026-12-20", Some("2026-12-30")), &existing);
        assert_eq!(
            overlapping.unwrap_err().reason(),
            Reason::CrossRegionFilingExists,
            "same pooling region, one day shared"
        );
        assert!(admit_filing("110105", &terms("2026-12-21", Some("2026-12-30")), &existing).is_ok());
        assert_eq!(
            admit_filing("110105", &terms("2026-12-07", None), &existing).unwrap_err().reason(),
            Reason::CrossRegionFilingExists,
            "an open-ended filing overlaps every later one"
        );
        let cancelled = [filing("310104", "2026-12-10", Some("2026-12-20"), FilingStatus::Cancelled)];
        assert!(admit_filing("110105", &terms("2026-12-10", Some("2026-12-20")), &cancelled).is_ok());
        let elsewhere = FilingTerms { destination_region_code: "440305".to_owned(), ..terms("2026-12-10", None) };
        assert!(admit_filing("110105", &elsewhere, &existing).is_ok(), "another region");

        let many: Vec<Filing> = (0..MAX_ACTIVE_FILINGS)
            .map(|i| filing(&format!("{}0101", 13 + i), "2026-12-10", None, FilingStatus::Active))
            .collect();
        assert_eq!(admit_filing("110105", &elsewhere, &many).unwrap_err().reason(), Reason::CrossRegionFilingLimit);
    }

    #[test]
    fn a_visit_is_covered_by_the_active_filing_of_its_pooling_region_on_that_day() {
        let filings = [
            filing("310104", "2026-12-10", Some("2026-12-20"), FilingStatus::Active),
            filing("440305", "2026-12-10", None, FilingStatus::Cancelled),
        ];
        assert!(covering(&filings, "310115", day("2026-12-10")).is_some(), "another district, same pool");
        assert!(covering(&filings, "310115", day("2026-12-20")).is_some());
        assert!(covering(&filings, "310115", day("2026-12-21")).is_none());
        assert!(covering(&filings, "310115", day("2026-12-09")).is_none());
        assert!(covering(&filings, "440305", day("2026-12-15")).is_none(), "cancelled");
        assert!(admit_cancel(&filings[0]).is_ok());
        assert_eq!(admit_cancel(&filings[1]).unwrap_err().reason(), Reason::CrossRegionFilingCancelled);
    }
}
