//! Scope names and the scopes each partner kind gets by default. Each service states which
//! scope each of its RPCs needs (its `METHOD_SCOPES` table); this file names them once.

/// Register persons.
pub const PERSON_REGISTER: &str = "person.register";
/// Read masked person views.
pub const PERSON_READ: &str = "person.read";
/// Resolve name + ID number to a person id (insurance-svc, ops).
pub const PERSON_RESOLVE: &str = "person.resolve";
/// Open insured accounts.
pub const ACCOUNT_OPEN: &str = "account.open";
/// Read accounts.
pub const ACCOUNT_READ: &str = "account.read";
/// Service-to-service events (FaceVerificationCompleted).
pub const SERVICE: &str = "service";
/// Submit face-verification outcomes.
pub const FACE_SUBMIT: &str = "face.submit";

/// Apps that are a person's front door: mini programs, city apps.
pub const FRONT_DOOR_APP: &[&str] = &[PERSON_REGISTER, PERSON_READ, ACCOUNT_READ];
/// Banks: a front door, and they open accounts.
pub const BANK: &[&str] = &[PERSON_REGISTER, PERSON_READ, ACCOUNT_OPEN, ACCOUNT_READ];
/// Hospitals and pharmacies.
pub const POINT_OF_CARE: &[&str] = &[ACCOUNT_READ];
/// Face-verification providers.
pub const FACE_PROVIDER: &[&str] = &[FACE_SUBMIT];
/// Employers.
pub const EMPLOYER: &[&str] = &[PERSON_RESOLVE, ACCOUNT_OPEN, ACCOUNT_READ];
/// Operations staff.
pub const OPS: &[&str] = &[PERSON_REGISTER, PERSON_READ, PERSON_RESOLVE, ACCOUNT_OPEN, ACCOUNT_READ];
/// medins services calling each other.
pub const SERVICE_PEER: &[&str] = &[PERSON_READ, PERSON_RESOLVE, SERVICE];
