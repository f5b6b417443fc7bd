//! Face verification outcomes as insurance-svc keeps them: which purposes concern it and how a
//! session can end. The rules that act on them (voucher activation, family binding, card
//! applications) read these.

/// The purposes of face sessions that identity-svc reports to insurance-svc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FacePurpose {
    /// Activating the voucher.
    VoucherActivation,
    /// Binding a family member aged 16 or over.
    FamilyBinding,
    /// Applying for a card online.
    CardApplication,
}

impl FacePurpose {
    /// Stored spelling (the same as identity-svc's).
    pub fn as_str(self) -> &'static str {
        match self {
            FacePurpose::VoucherActivation => "VOUCHER_ACTIVATION",
            FacePurpose::FamilyBinding => "FAMILY_BINDING",
            FacePurpose::CardApplication => "CARD_APPLICATION",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [FacePurpose::VoucherActivation, FacePurpose::FamilyBinding, FacePurpose::CardApplication]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// How a face session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaceOutcome {
    /// Verified.
    Passed,
    /// Three submissions, none passed.
    Failed,
    /// Not verified in time.
    Expired,
}

impl FaceOutcome {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FaceOutcome::Passed => "PASSED",
            FaceOutcome::Failed => "FAILED",
            FaceOutcome::Expired => "EXPIRED",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [FaceOutcome::Passed, FaceOutcome::Failed, FaceOutcome::Expired].into_iter().find(|o| o.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for purpose in [FacePurpose::VoucherActivation, FacePurpose::FamilyBinding, FacePurpose::CardApplication] {
            assert_eq!(FacePurpose::parse(purpose.as_str()), Some(purpose));
        }
        for outcome in [FaceOutcome::Passed, FaceOutcome::Failed, FaceOutcome::Expired] {
            assert_eq!(FaceOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(FacePurpose::parse("REAL_NAME"), None);
    }
}
