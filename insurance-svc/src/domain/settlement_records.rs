//! A person's own settlement records (`SettlementService.ListSettlements` and
//! `GetSettlement`): the record, the page size and the opaque page token of the yearly listing. Pure: no
//! I/O.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime};
use medins_common::{ApiError, ApiResult, Reason, validate::PageSize};
use uuid::Uuid;

use super::settlement::Settlement;

/// Settlements of one page: 20 by default, at most 100, larger requests refused.
pub const SETTLEMENT_PAGE: PageSize = PageSize { default: 20, max: 100, cap: false };

/// Where a yearly listing (newest first, by settled_at then id) continues: strictly older than
/// this settlement. Keyset paging: settlements made while a client pages are newer than every
/// cursor it holds, so pages never repeat or skip one that existed when paging began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementCursor {
    /// Whose listing (a token is refused for another person).
    pub person_id: Uuid,
    /// Which year's listing (a token is refused for another year).
    pub year: i32,
    /// The last settlement's time.
    pub settled_at: NaiveDateTime,
    /// The last settlement's id.
    pub settlement_id: Uuid,
}

const CURSOR_VERSION: &str = "s1";

impl SettlementCursor {
    /// The opaque token: base64url of `s1.<person>.<year>.<microseconds>.<settlement>`.
    pub fn encode(&self) -> String {
        let micros = self.settled_at.and_utc().timestamp_micros();
        URL_SAFE_NO_PAD
            .encode(format!("{CURSOR_VERSION}.{}.{}.{micros}.{}", self.person_id, self.year, self.settlement_id))
    }

    /// Parses a token of the listing of `person_id`'s `year`: INVALID_ARGUMENT naming
    /// `page_token` for anything else (bytes that are not base64url text, another version,
    /// another person's or year's token, a time out of range), so hostile bytes read nothing.
    pub fn decode(token: &str, person_id: Uuid, year: i32) -> ApiResult<SettlementCursor> {
        let invalid = || ApiError::invalid_field(Reason::InvalidArgument, "page_token", "not a token of this listing");
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split('.');
        let (Some(CURSOR_VERSION), Some(person), Some(token_year), Some(micros), Some(settlement), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if Uuid::parse_str(person).map_err(|_| invalid())? != person_id {
            return Err(invalid());
        }
        if token_year.parse::<i32>().map_err(|_| invalid())? != year {
            return Err(invalid());
        }
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let settled_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?.naive_utc();
        let settlement_id = Uuid::parse_str(settlement).map_err(|_| invalid())?;
        Ok(SettlementCursor { person_id, year, settled_at, settlement_id })
    }
}

/// Where a settlement was settled: the visit's counter and opening time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitFacts {
    /// The hospital or pharmacy (partner id).
    pub partner_id: String,
    /// When the visit was opened.
    pub opened_at: NaiveDateTime,
}

/// One settlement of a person's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRecord {
    /// The settlement.
    pub settlement: Settlement,
    /// Its visit, when it settled one.
    pub visit: Option<VisitFacts>,
    /// The reimbursement claim it paid, when it settled one (no visit then).
    pub claim_id: Option<Uuid>,
}

/// The token of the page after `page` (one more row than the page size was read: `more`).
pub fn next_cursor(
    person_id: Uuid,
    year: i32,
    last: Option<(NaiveDateTime, Uuid)>,
    more: bool,
) -> Option<SettlementCursor> {
    let (settled_at, settlement_id) = last.filter(|_| more)?;
    Some(SettlementCursor { person_id, year, settled_at, settlement_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn page_tokens_round_trip_and_belong_to_one_person_and_year() {
        let person = Uuid::now_v7();
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap().naive_utc();
        let cursor = SettlementCursor { person_id: person, year: 2026, settled_at: at, settlement_id: Uuid::now_v7() };
        let token = cursor.encode();
        assert_eq!(SettlementCursor::decode(&token, person, 2026).unwrap(), cursor);
        for (who, year) in [(Uuid::now_v7(), 2026), (person, 2025)] {
            let error = SettlementCursor::decode(&token, who, year).unwrap_err();
            assert_eq!((error.code(), error.reason()), (Code::InvalidArgument, Reason::InvalidArgument));
        }
        let forged = URL_SAFE_NO_PAD.encode(format!("s1.{person}.2026.99999999999999999999.{}", Uuid::nil()));
        let version = URL_SAFE_NO_PAD.encode(format!("e1.{person}.2026.1.{}", Uuid::nil()));
        let extra = URL_SAFE_NO_PAD.encode(format!("s1.{person}.2026.1.{}.x", Uuid::nil()));
        for bad in ["", "%%%", "\u{0}", "czE", &forged, &version, &extra, &URL_SAFE_NO_PAD.encode([0xff, 0xfe])] {
            assert!(SettlementCursor::decode(bad, person, 2026).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_next_page_exists_only_when_more_rows_were_read() {
        let (person, id) = (Uuid::now_v7(), Uuid::now_v7());
        let at = DateTime::from_timestamp_micros(0).unwrap().naive_utc();
        assert_eq!(next_cursor(person, 2026, Some((at, id)), false), None);
        assert_eq!(next_cursor(person, 2026, None, true), None);
        assert_eq!(next_cursor(person, 2026, Some((at, id)), true).map(|c| c.settlement_id), Some(id));
        assert_eq!(SETTLEMENT_PAGE.check("page_size", 0).unwrap(), 20);
        assert!(SETTLEMENT_PAGE.check("page_size", 101).is_err());
        assert!(SETTLEMENT_PAGE.check("page_size", -1).is_err());
    }
}
