//! The merged access history (docs/architecture.md#who-may-call-what): identity-svc's and
//! insurance-svc's audit records of a person in one order, newest first, paged by one cursor that
//! covers both sources. Pure.
//!
//! The order is (recorded_at, source, seq) descending, identity-svc's records before
//! insurance-svc's at the same microsecond. A cursor is the position of the last record
//! returned; each source is then asked for its records strictly after it in that order.

use chrono::NaiveDateTime;

/// Where a record was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// insurance-svc (after identity-svc at equal times).
    Insurance = 0,
    /// identity-svc.
    Identity = 1,
}

/// A record's position in the merged order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// When (microseconds).
    pub recorded_at: NaiveDateTime,
    /// Which service.
    pub source: Source,
    /// The source's reading order.
    pub seq: i64,
}

impl Position {
    /// The cursor text inside a page token: `<micros>.<i|s>.<seq>`.
    pub fn to_cursor(self) -> String {
        let source = match self.source {
            Source::Identity => 'i',
            Source::Insurance => 's',
        };
        format!("{}.{source}.{}", self.recorded_at.and_utc().timestamp_micros(), self.seq)
    }

    /// A cursor this list returned, or `None` for anything else.
    pub fn from_cursor(cursor: &str) -> Option<Position> {
        let mut parts = cursor.split('.');
        let micros: i64 = parts.next()?.parse().ok()?;
        let source = match parts.next()? {
            "i" => Source::Identity,
            "s" => Source::Insurance,
            _ => return None,
        };
        let seq: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || seq < 0 {
            return None;
        }
        let recorded_at = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
        Some(Position { recorded_at, source, seq })
    }

    /// What to ask `source` for after this position: its records strictly before
    /// `(recorded_at, seq)`. At the cursor's time, a source ordered before the cursor's source
    /// has given all its records already, one ordered after has given none.
    pub fn before_in(self, source: Source) -> (NaiveDateTime, i64) {
        let seq = match source.cmp(&self.source) {
            std::cmp::Ordering::Equal => self.seq,
            std::cmp::Ordering::Greater => i64::MIN,
            std::cmp::Ordering::Less => i64::MAX,
        };
        (self.recorded_at, seq)
    }
}

/// Merges two newest-first lists into one and keeps the first `limit`; returns them and
/// whether more remain (some record was left over).
pub fn merge<T>(mut records: Vec<(Position, T)>, limit: usize) -> (Vec<(Position, T)>, bool) {
    records.sort_by_key(|record| std::cmp::Reverse(record.0));
    let more = records.len() > limit;
    records.truncate(limit);
    (records, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp_micros(micros).unwrap().naive_utc()
    }

    fn pos(micros: i64, source: Source, seq: i64) -> Position {
        Position { recorded_at: at(micros), source, seq }
    }

    #[test]
    fn cursors_round_trip_and_hostile_ones_are_refused() {
        let p = pos(1_795_000_000_123_456, Source::Insurance, 42);
        assert_eq!(Position::from_cursor(&p.to_cursor()), Some(p));
        for bad in ["", "1.i", "1.x.2", "1.i.2.3", "a.i.2", "1.i.-2", "99999999999999999999.i.1", "1.i.b"] {
            assert_eq!(Position::from_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_walk_both_sources_in_one_order_without_loss_or_repeat() {
        // Records of both sources, several at the same microsecond.
        let identity: Vec<Position> = [(10, 1), (10, 2), (12, 3), (15, 4), (15, 5), (20, 6)]
            .iter()
            .map(|&(t, s)| pos(t, Source::Identity, s))
            .collect();
        let insurance: Vec<Position> = [(10, 7), (11, 8), (15, 9), (15, 10), (21, 11)]
            .iter()
            .map(|&(t, s)| pos(t, Source::Insurance, s))
            .collect();
        let query = |list: &[Position], before: Option<(NaiveDateTime, i64)>, n: usize| -> Vec<Position> {
            let mut found: Vec<Position> = list
                .iter()
                .copied()
                .filter(|p| before.is_none_or(|(t, s)| p.recorded_at < t || (p.recorded_at == t && p.seq < s)))
                .collect();
            found.sort_by_key(|p| std::cmp::Reverse((p.recorded_at, p.seq)));
            found.truncate(n);
            found
        };
        for limit in 1..=12 {
            let mut cursor: Option<Position> = None;
            let mut seen = Vec::new();
            loop {
                let local = query(&identity, cursor.map(|c| c.before_in(Source::Identity)), limit + 1);
                let remote = query(&insurance, cursor.map(|c| c.before_in(Source::Insurance)), limit + 1);
                let (page, more) = merge(local.into_iter().chain(remote).map(|p| (p, ())).collect(), limit);
                seen.extend(page.iter().map(|(p, _)| *p));
                if !more {
                    break;
                }
                cursor = page.last().map(|(p, _)| *p);
            }
            let mut all: Vec<Position> = identity.iter().chain(&insurance).copied().collect();
            all.sort_by_key(|p| std::cmp::Reverse(*p));
            assert_eq!(seen, all, "page size {limit}");
        }
    }
}
