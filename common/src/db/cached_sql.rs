//! Statements of fixed SQL text that diesel keeps prepared.
//!
//! diesel never caches an `UPDATE`, an `ON CONFLICT DO UPDATE` or an `sql_query` (a changeset of
//! `Option`s skips its `None` columns, so one query type can stand for several SQL texts) and
//! prepares them again on every call: on the settlement path that was a tenth of the SQLite
//! writer thread's time, and on PostgreSQL a parse and a plan per call. A [`CachedSql`] is keyed
//! in the connection's statement cache by its SQL text, so it is prepared once per connection.
//! Kept for the hot statements; everything else stays in diesel's DSL.

use diesel::{
    backend::Backend,
    prelude::*,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::Untyped,
};

/// SQL text with `?` where its binds go, in order, and the binds: a tuple of bound values
/// (`value.into_sql::<SqlType>()`). Written once for both backends: each `?` becomes the
/// backend's placeholder (`$n` on PostgreSQL). The text must hold no other `?`. Rows load by
/// column name (`QueryableByName`), as from `sql_query`.
#[derive(Debug, Clone, Copy)]
pub struct CachedSql<B> {
    sql: &'static str,
    binds: B,
}

impl<B> CachedSql<B> {
    /// `sql` with `binds` in the order of its `?`s.
    pub fn new(sql: &'static str, binds: B) -> Self {
        Self { sql, binds }
    }
}

/// Bound values pushed by position.
pub trait Binds<DB: Backend> {
    /// How many.
    const COUNT: usize;
    /// Pushes the bind at `index` (< COUNT).
    fn push<'b>(&'b self, index: usize, out: AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

macro_rules! binds_for_tuples {
    ($($count:literal: ($($index:tt $name:ident),+);)+) => {$(
        impl<DB: Backend, $($name: QueryFragment<DB>),+> Binds<DB> for ($($name,)+) {
            const COUNT: usize = $count;
            fn push<'b>(&'b self, index: usize, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
                match index {
                    $($index => self.$index.walk_ast(out),)+
                    _ => unreachable!("bind {index} of {}", $count),
                }
            }
        }
    )+};
}

binds_for_tuples! {
    1: (0 A);
    2: (0 A, 1 B);
    3: (0 A, 1 B, 2 C);
    4: (0 A, 1 B, 2 C, 3 D);
    5: (0 A, 1 B, 2 C, 3 D, 4 E);
    6: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
    7: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
    8: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);
    9: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I);
    10: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J);
    11: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K);
    12: (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L);
}

/// Two bind lists, `A`'s first: for statements with more binds than one tuple holds.
#[derive(Debug, Clone, Copy)]
pub struct Chain<A, B>(pub A, pub B);

impl<DB: Backend, A: Binds<DB>, B: Binds<DB>> Binds<DB> for Chain<A, B> {
    const COUNT: usize = A::COUNT + B::COUNT;
    fn push<'b>(&'b self, index: usize, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        match index.checked_sub(A::COUNT) {
            None => self.0.push(index, out),
            Some(index) => self.1.push(index, out),
        }
    }
}

impl<B, DB: Backend> QueryFragment<DB> for CachedSql<B>
where
    B: Binds<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut pieces = self.sql.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        let mut placeholders = 0;
        for piece in pieces {
            // A `?` beyond the binds panics in `push`, one short here: programming errors that
            // every call of the statement would hit.
            self.binds.push(placeholders, out.reborrow())?;
            out.push_sql(piece);
            placeholders += 1;
        }
        assert_eq!(placeholders, B::COUNT, "binds for {:?}", self.sql);
        Ok(())
    }
}

/// No static id: the statement cache keys it by its SQL text, which is what makes it safe to
/// keep prepared whatever the text.
impl<B> QueryId for CachedSql<B> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for CachedSql<B> {
    type SqlType = Untyped;
}

impl<B, Conn> RunQueryDsl<Conn> for CachedSql<B> {}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    };

    use diesel::{
        IntoSql,
        connection::{Instrumentation, InstrumentationEvent, SimpleConnection},
        sql_types::{BigInt, Integer},
        sqlite::SqliteConnection,
    };

    use super::*;
    use crate::db::DbConnection;

    #[derive(QueryableByName, Debug, PartialEq)]
    struct After {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    #[test]
    fn a_cached_update_is_prepared_once_and_runs_with_each_calls_binds() {
        let mut conn = DbConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        conn.batch_execute("CREATE TABLE counters (id INTEGER PRIMARY KEY NOT NULL, n BIGINT NOT NULL CHECK (n >= 0)); INSERT INTO counters VALUES (1, 0)")
            .unwrap();
        let cached = Arc::new(AtomicUsize::new(0));
        let seen = cached.clone();
        let count_cached = move |event: InstrumentationEvent<'_>| {
            if matches!(event, InstrumentationEvent::CacheQuery { .. }) {
                seen.fetch_add(1, Relaxed);
            }
        };
        conn.set_instrumentation(Box::new(count_cached) as Box<dyn Instrumentation>);
        let bump = |by: i64| {
            CachedSql::new(
                "UPDATE counters SET n = n + ? WHERE id = ? AND n + ? >= 0 RETURNING n",
                (by.into_sql::<BigInt>(), 1.into_sql::<Integer>(), by.into_sql::<BigInt>()),
            )
        };

        let after: Vec<After> = (1..=3).map(|by| bump(by).get_result(&mut conn).unwrap()).collect();
        assert_eq!(after, [After { n: 1 }, After { n: 3 }, After { n: 6 }]);
        assert_eq!(bump(-7).get_result::<After>(&mut conn).optional().unwrap(), None, "the filter holds");
        assert_eq!(cached.load(Relaxed), 1, "prepared once, then reused");
        // `sql_query` is prepared on every call, never cached.
        diesel::sql_query("UPDATE counters SET n = 0").execute(&mut conn).unwrap();
        assert_eq!(cached.load(Relaxed), 1);
    }

    #[test]
    fn chained_binds_fill_the_placeholders_in_order() {
        let mut conn = DbConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        let digits =
            |ds: [i64; 3]| (ds[0].into_sql::<BigInt>(), ds[1].into_sql::<BigInt>(), ds[2].into_sql::<BigInt>());
        let number: After = CachedSql::new(
            "SELECT ? * 100000 + ? * 10000 + ? * 1000 + ? * 100 + ? * 10 + ? AS n",
            Chain(
                digits([1, 2, 3]),
                Chain((4.into_sql::<BigInt>(),), (5.into_sql::<BigInt>(), 6.into_sql::<BigInt>())),
            ),
        )
        .get_result(&mut conn)
        .unwrap();
        assert_eq!(number, After { n: 123_456 });
    }
}
