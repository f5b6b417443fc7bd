//! Rules of identity-svc: pure, no I/O.

pub mod access;
pub mod access_history;
pub mod assurance;
pub mod disclosure;
pub mod face;
pub mod id_number;
pub mod link;
pub mod partner;
pub mod person;
pub use medins_common::phone;
pub mod sms;
