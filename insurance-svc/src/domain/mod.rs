//! Rules of insurance-svc: pure, no I/O.

pub mod access;
pub mod account;
pub mod card;
pub mod card_pin;
pub mod catalog;
pub mod claim;
pub mod code;
pub mod cross_region;
pub mod document;
pub mod face;
pub mod family;
pub mod image;
pub mod ledger;
pub mod letter;
pub mod pdf;
pub mod qr;
pub mod settlement;
pub mod settlement_records;
pub mod visit;
pub mod voucher;
