//! End-to-end tests: both services in-process over real gRPC (one test binary keeps link time
//! low). Set `MEDINS_TEST_POSTGRES_URL` to run the same suite on PostgreSQL.

mod support;

mod accounts;
mod migrations;
mod persons;
mod telemetry;
