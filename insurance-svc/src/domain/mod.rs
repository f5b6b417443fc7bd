//! Rules of insurance-svc: pure, no I/O.

pub mod account;
