//! Family bindings (DESIGN.md flow 5 and 6 "Family"): relationships, statuses and the rules of
//! AddFamilyMember in their contract order. Pure.

/// How the member is related to the owner (the owner's view: PARENT = the member is the
/// owner's parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relationship {
    /// Husband or wife.
    Spouse,
    /// The owner's child (younger than the owner).
    Child,
    /// The owner's parent (older than the owner).
    Parent,
    /// The owner's grandparent (older than the owner).
    Grandparent,
    /// The owner's grandchild (younger than the owner).
    Grandchild,
    /// Brother or sister.
    Sibling,
    /// Another close relative.
    OtherCloseRelative,
}

impl Relationship {
    const ALL: [Relationship; 7] = [
        Relationship::Spouse,
        Relationship::Child,
        Relationship::Parent,
        Relationship::Grandparent,
        Relationship::Grandchild,
        Relationship::Sibling,
        Relationship::OtherCloseRelative,
    ];

    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Spouse => "SPOUSE",
            Relationship::Child => "CHILD",
            Relationship::Parent => "PARENT",
            Relationship::Grandparent => "GRANDPARENT",
            Relationship::Grandchild => "GRANDCHILD",
            Relationship::Sibling => "SIBLING",
            Relationship::OtherCloseRelative => "OTHER_CLOSE_RELATIVE",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Relationship::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Where a binding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingStatus {
    /// Waiting for the member's face check (members 16 and over).
    PendingFace,
    /// Bound: the owner may show the member's code and read their expenses.
    Active,
    /// The member's face check failed.
    Rejected,
    /// The member's face session expired unused.
    Expired,
    /// Removed by the owner or the member.
    Removed,
}

impl BindingStatus {
    const ALL: [BindingStatus; 5] = [
        BindingStatus::PendingFace,
        BindingStatus::Active,
        BindingStatus::Rejected,
        BindingStatus::Expired,
        BindingStatus::Removed,
    ];

    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingStatus::PendingFace => "PENDING_FACE",
            BindingStatus::Active => "ACTIVE",
            BindingStatus::Rejected => "REJECTED",
            BindingStatus::Expired => "EXPIRED",
            BindingStatus::Removed => "REMOVED",
        }
    }

    /// From the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        BindingStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Live bindings hold a quota place.
    pub fn is_live(self) -> bool {
        matches!(self, BindingStatus::PendingFace | BindingStatus::Active)
    }
}
