//! Conversions between protobuf well-known types and chrono, in one place.

use chrono::{DateTime, NaiveDateTime, Utc};

/// A stored UTC time as a `google.protobuf.Timestamp`.
pub fn timestamp(at: NaiveDateTime) -> prost_types::Timestamp {
    let utc = at.and_utc();
    prost_types::Timestamp { seconds: utc.timestamp(), nanos: utc.timestamp_subsec_nanos() as i32 }
}

/// A `google.protobuf.Timestamp` as a UTC time, if it is in range.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let at = DateTime::from_timestamp(1_790_000_000, 123_456_000).unwrap().naive_utc();
        assert_eq!(from_timestamp(&timestamp(at)).unwrap().naive_utc(), at);
        assert!(from_timestamp(&prost_types::Timestamp { seconds: 0, nanos: -1 }).is_none());
    }
}
