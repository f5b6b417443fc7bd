-- settlements_person_year is a prefix of settlements_person_year_time (2026-12-07-210000),
-- which answers every query it did: one index fewer to write per settlement. (The SQLite
-- migration of this version also makes three tables WITHOUT ROWID, which PostgreSQL has no
-- notion of: its tables are heaps either way.)
DROP INDEX settlements_person_year;
