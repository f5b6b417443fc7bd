//! Column mappings written once for both backends (docs/architecture.md, "Storage"): a UUID
//! kept as its hyphenated lower-case text, and enums kept as their UPPER_SNAKE spelling.
//!
//! Ids have always been stored as TEXT on SQLite and PostgreSQL, and stay so (no migration
//! rewrites data; `store/schema.rs` keeps `Text`). [`DbUuid`] is the Rust side of such a
//! column: store code binds `column.eq(DbUuid(id))` and loads `DbUuid` (or a `Uuid` field with
//! `#[diesel(deserialize_as = DbUuid)]`) instead of `.eq(id.to_string())` and a hand-written
//! parse on every read; a stored value that is not a UUID fails the read. A newtype, because
//! diesel's blanket `AsExpression` impl and the orphan rule forbid binding `uuid::Uuid` itself
//! from outside diesel.
//!
//! Enums use [`text_enum!`](crate::text_enum): one declaration gives the enum, its spelling,
//! its parser and its diesel mapping to a `Text` column on both backends.

use std::io::Write as _;

use diesel::{
    backend::Backend,
    deserialize::{self, FromSql, FromSqlRow},
    expression::AsExpression,
    pg::Pg,
    serialize::{self, IsNull, Output, ToSql},
    sql_types::Text,
    sqlite::Sqlite,
};
use uuid::Uuid;

use super::MultiBackend;

/// A UUID in a TEXT column (`0191b7e4-...`, hyphenated lower case, the same text
/// `Uuid::to_string` writes) on both backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct DbUuid(pub Uuid);

impl From<Uuid> for DbUuid {
    fn from(id: Uuid) -> Self {
        DbUuid(id)
    }
}

impl From<DbUuid> for Uuid {
    fn from(id: DbUuid) -> Self {
        id.0
    }
}

impl std::fmt::Display for DbUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn parse_uuid(text: &str) -> deserialize::Result<DbUuid> {
    // The stored text is ours, but a corrupt row must fail the read, not become another id.
    Uuid::try_parse(text).map(DbUuid).map_err(|_| "a UUID column holds text that is not a UUID".into())
}

impl ToSql<Text, Sqlite> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(IsNull::No)
    }
}

impl ToSql<Text, Pg> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        let mut buffer = Uuid::encode_buffer();
        out.write_all(self.0.hyphenated().encode_lower(&mut buffer).as_bytes())?;
        Ok(IsNull::No)
    }
}

impl ToSql<Text, MultiBackend> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
        out.set_value((Text, self));
        Ok(IsNull::No)
    }
}

impl FromSql<Text, Sqlite> for DbUuid {
    fn from_sql(bytes: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        parse_uuid(&<String as FromSql<Text, Sqlite>>::from_sql(bytes)?)
    }
}

impl FromSql<Text, Pg> for DbUuid {
    fn from_sql(bytes: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        parse_uuid(&<String as FromSql<Text, Pg>>::from_sql(bytes)?)
    }
}

impl FromSql<Text, MultiBackend> for DbUuid {
    fn from_sql(bytes: <MultiBackend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        bytes.from_sql::<DbUuid, Text>()
    }
}

/// Declares an enum stored as TEXT in its UPPER_SNAKE spelling: the enum (`Debug`, `Clone`,
/// `Copy`, `PartialEq`, `Eq`, `Hash`), `ALL`, `as_str`, `parse`, `Display`, and its diesel
/// mapping to `Text` on SQLite, PostgreSQL and [`DbConnection`](crate::db::DbConnection) (bind
/// with `column.eq(value)`, load into a field of the enum's type; an unknown stored spelling
/// fails the read). The crate that uses it must depend on `diesel`.
///
/// ```ignore
/// medins_common::text_enum! {
///     /// Lifecycle of an account.
///     pub enum AccountStatus {
///         /// Pays and receives.
///         Active => "ACTIVE",
///         Closed => "CLOSED",
///     }
/// }
/// ```
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stored (and sent) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// From the stored spelling; `None` for any other text.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        $crate::text_enum_sql!($name);
    };
}

/// The diesel half of [`text_enum!`], for an enum declared by hand that has `as_str(self) ->
/// &'static str` and `parse(&str) -> Option<Self>`.
#[macro_export]
macro_rules! text_enum_sql {
    ($name:ident) => {
        const _: () = {
            use ::diesel::{
                backend::Backend,
                deserialize::{self, FromSql, Queryable},
                expression::AsExpression,
                internal::derives::as_expression::Bound,
                pg::Pg,
                serialize::{self, Output, ToSql},
                sql_types::{Nullable, Text},
                sqlite::Sqlite,
            };
            use $crate::db::MultiBackend;

            impl AsExpression<Text> for $name {
                type Expression = Bound<Text, &'static str>;
                fn as_expression(self) -> Self::Expression {
                    Bound::new(self.as_str())
                }
            }
            impl AsExpression<Nullable<Text>> for $name {
                type Expression = Bound<Nullable<Text>, &'static str>;
                fn as_expression(self) -> Self::Expression {
                    Bound::new(self.as_str())
                }
            }
            impl<'a> AsExpression<Text> for &'a $name {
                type Expression = Bound<Text, &'static str>;
                fn as_expression(self) -> Self::Expression {
                    Bound::new(self.as_str())
                }
            }
            impl<'a> AsExpression<Nullable<Text>> for &'a $name {
                type Expression = Bound<Nullable<Text>, &'static str>;
                fn as_expression(self) -> Self::Expression {
                    Bound::new(self.as_str())
                }
            }

            impl ToSql<Text, Sqlite> for $name {
                fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
                    <str as ToSql<Text, Sqlite>>::to_sql(self.as_str(), out)
                }
            }
            impl ToSql<Text, Pg> for $name {
                fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                    <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
                }
            }
            impl ToSql<Text, MultiBackend> for $name {
                fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
                    <str as ToSql<Text, MultiBackend>>::to_sql(self.as_str(), out)
                }
            }

            fn parse_stored(text: &str) -> deserialize::Result<$name> {
                $name::parse(text)
                    .ok_or_else(|| concat!("unknown ", stringify!($name), " spelling in a stored row").into())
            }
            impl FromSql<Text, Sqlite> for $name {
                fn from_sql(bytes: <Sqlite as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                    parse_stored(&<String as FromSql<Text, Sqlite>>::from_sql(bytes)?)
                }
            }
            impl FromSql<Text, Pg> for $name {
                fn from_sql(bytes: <Pg as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                    parse_stored(&<String as FromSql<Text, Pg>>::from_sql(bytes)?)
                }
            }
            impl FromSql<Text, MultiBackend> for $name {
                fn from_sql(bytes: <MultiBackend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                    parse_stored(&<String as FromSql<Text, MultiBackend>>::from_sql(bytes)?)
                }
            }
            impl<DB: Backend> Queryable<Text, DB> for $name
            where
                $name: FromSql<Text, DB>,
            {
                type Row = $name;
                fn build(row: $name) -> deserialize::Result<Self> {
                    Ok(row)
                }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use diesel::{Connection, connection::SimpleConnection, prelude::*};
    use uuid::Uuid;

    use super::DbUuid;
    use crate::db::DbConnection;

    crate::text_enum! {
        /// A test enum.
        pub enum Colour {
            /// Red.
            Red => "RED",
            /// Light blue.
            LightBlue => "LIGHT_BLUE",
        }
    }

    diesel::table! {
        things (id) {
            id -> Text,
            other -> Nullable<Text>,
            colour -> Text,
            shade -> Nullable<Text>,
        }
    }

    #[derive(Debug, PartialEq, Queryable, Selectable, Insertable)]
    #[diesel(table_name = things, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
    struct Thing {
        #[diesel(serialize_as = DbUuid, deserialize_as = DbUuid)]
        id: Uuid,
        other: Option<DbUuid>,
        colour: Colour,
        shade: Option<Colour>,
    }

    fn round_trip(conn: &mut DbConnection) {
        conn.batch_execute(
            "CREATE TEMPORARY TABLE things (id TEXT PRIMARY KEY, other TEXT, colour TEXT NOT NULL, shade TEXT)",
        )
        .unwrap();
        let id = Uuid::now_v7();
        let other = Uuid::new_v4();
        diesel::insert_into(things::table)
            .values(Thing { id, other: Some(DbUuid(other)), colour: Colour::LightBlue, shade: None })
            .execute(conn)
            .unwrap();
        // Stored exactly as `Uuid::to_string` writes it: old rows and new rows compare equal.
        let text: String = things::table.select(things::id).first(conn).unwrap();
        assert_eq!(text, id.to_string());
        let found: Thing = things::table
            .filter(things::id.eq(DbUuid(id)))
            .filter(things::other.eq(Some(DbUuid(other))))
            .filter(things::colour.eq(Colour::LightBlue))
            .select(Thing::as_select())
            .first(conn)
            .unwrap();
        assert_eq!(found, Thing { id, other: Some(DbUuid(other)), colour: Colour::LightBlue, shade: None });
        diesel::update(things::table.find(DbUuid(id))).set(things::shade.eq(Some(Colour::Red))).execute(conn).unwrap();
        let shade: Option<Colour> = things::table.select(things::shade).first(conn).unwrap();
        assert_eq!(shade, Some(Colour::Red));
        // A stored spelling or id that is not ours fails the read instead of becoming a value.
        conn.batch_execute("UPDATE things SET colour = 'GREEN'").unwrap();
        assert!(things::table.select(things::colour).first::<Colour>(conn).is_err());
        conn.batch_execute("UPDATE things SET colour = 'RED', id = 'not-a-uuid'").unwrap();
        assert!(things::table.select(things::id).first::<DbUuid>(conn).is_err());
    }

    #[test]
    fn uuids_and_enums_round_trip_as_text_on_sqlite() {
        let conn = diesel::sqlite::SqliteConnection::establish(":memory:").unwrap();
        round_trip(&mut DbConnection::Sqlite(conn));
    }

    #[test]
    fn uuids_and_enums_round_trip_as_text_on_postgres() {
        let Ok(url) = std::env::var("MEDINS_TEST_POSTGRES_URL") else { return };
        let conn = diesel::pg::PgConnection::establish(&url).unwrap();
        round_trip(&mut DbConnection::Postgres(conn));
    }

    #[test]
    fn enum_spellings_parse_back() {
        for colour in Colour::ALL {
            assert_eq!(Colour::parse(colour.as_str()), Some(*colour));
            assert_eq!(colour.to_string(), colour.as_str());
        }
        assert_eq!(Colour::parse("red"), None);
    }
}
