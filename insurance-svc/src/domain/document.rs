//! Documents (DESIGN.md 6 "Documents"): kinds, the content types accepted and the size limit.
//! Pure.

/// The largest document accepted, in bytes (8 MiB).
pub const MAX_DOCUMENT_BYTES: u64 = 8 * 1024 * 1024;

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// A personal commitment letter for a family binding (PDF, usually rendered by medins).
    CommitmentLetter,
    /// A household register page.
    HouseholdRegister,
    /// The front of a resident ID card.
    IdCardFront,
    /// The back of a resident ID card.
    IdCardBack,
    /// A photo of the person (for a social security card).
    Photo,
    /// A drawn signature (embedded in a commitment letter).
    Signature,
}

impl DocumentKind {
    const ALL: [DocumentKind; 6] = [
        DocumentKind::CommitmentLetter,
        DocumentKind::HouseholdRegister,
        DocumentKind::IdCardFront,
        DocumentKind::IdCardBack,
        DocumentKind::Photo,
        DocumentKind::Signature,
    ];

    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::CommitmentLetter => "COMMITMENT_LETTER",
            DocumentKind::HouseholdRegister => "HOUSEHOLD_REGISTER",
            DocumentKind::IdCardFront => "ID_CARD_FRONT",
            DocumentKind::IdCardBack => "ID_CARD_BACK",
            DocumentKind::Photo => "PHOTO",
            DocumentKind::Signature => "SIGNATURE",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        DocumentKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The content types medins stores, decided from the bytes, never from a name or a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// JPEG image.
    Jpeg,
    /// PNG image.
    Png,
    /// PDF document.
    Pdf,
}

impl ContentType {
    const ALL: [ContentType; 3] = [ContentType::Jpeg, ContentType::Png, ContentType::Pdf];

    /// MIME type, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Jpeg => "image/jpeg",
            ContentType::Png => "image/png",
            ContentType::Pdf => "application/pdf",
        }
    }

    /// From the stored MIME type.
    pub fn parse(text: &str) -> Option<Self> {
        ContentType::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// An image (JPEG or PNG).
    pub fn is_image(self) -> bool {
        matches!(self, ContentType::Jpeg | ContentType::Png)
    }
}
