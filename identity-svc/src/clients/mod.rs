//! Clients of the other medins service.

pub mod insurance;
