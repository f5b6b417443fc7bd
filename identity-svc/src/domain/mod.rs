//! Rules of identity-svc: pure, no I/O.

pub mod id_number;
pub mod person;
pub mod phone;
