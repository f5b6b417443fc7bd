//! End-to-end tests: both services in-process over real gRPC (one test binary keeps link time
//! low). Set `MEDINS_TEST_POSTGRES_URL` to run the same suite on PostgreSQL.

mod support;

mod access;
mod access_cards;
mod access_documents;
mod access_family;
mod access_identity;
mod accounts;
mod assurance;
mod audit;
mod auth;
mod binding;
mod cards;
mod catalog;
mod claims;
mod cli;
mod codes;
mod counter_binding;
mod cross_region;
mod database_tls;
mod docs;
mod documents;
mod documents_tied;
mod face;
mod family;
mod family_aid;
mod health;
mod idempotency;
mod ledger;
mod limits;
mod links;
mod migrations;
mod names;
mod outbox;
mod persons;
mod privacy;
mod revocation;
mod settlement;
mod settlement_records;
mod sms;
mod telemetry;
mod tls;
mod tokens;
mod unmasking;
mod vouchers;
