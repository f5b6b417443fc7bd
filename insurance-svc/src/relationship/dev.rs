//! A stand-in relationship authority for development and tests.

use std::path::PathBuf;

use super::{RelationshipAuthority, RelationshipAuthorityError, Resident};
use crate::domain::family::{Relationship, RelationshipVerdict};

/// **Not a relationship authority.** It knows only the households written in a local text file,
/// one relationship per line: `OWNER_ID_NUMBER MEMBER_ID_NUMBER RELATIONSHIP` (e.g.
/// `11010519850101001X 110105201801010023 CHILD`: the second is the first's child); blank lines
/// and lines starting with `#` are ignored. A pair listed with the asked relationship is
/// CONFIRMED, a pair listed with another is REFUTED, anything else CANNOT_ANSWER (so the binding
/// goes to an operator's review). No file: it never confirms anything. Names are not checked.
/// Read at every check, so edits apply at once.
#[derive(Debug, Clone, Default)]
pub struct DevRelationshipAuthority {
    households: Option<PathBuf>,
}

impl DevRelationshipAuthority {
    /// An authority reading `households`, if given.
    pub fn new(households: Option<PathBuf>) -> Self {
        Self { households }
    }

    async fn households(&self) -> Result<String, RelationshipAuthorityError> {
        let Some(path) = self.households.clone() else { return Ok(String::new()) };
        tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(error) => Err(RelationshipAuthorityError::Unavailable(format!(
                "cannot read the households file {}: {error}",
                path.display()
            ))),
        })
        .await
        .map_err(|e| RelationshipAuthorityError::Unavailable(format!("households task failed: {e}")))?
    }
}

#[tonic::async_trait]
impl RelationshipAuthority for DevRelationshipAuthority {
    async fn check(
        &self,
        owner: &Resident,
        member: &Resident,
        relationship: Relationship,
    ) -> Result<RelationshipVerdict, RelationshipAuthorityError> {
        let text = self.households().await?;
        let mut verdict = RelationshipVerdict::CannotAnswer;
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
            let mut words = line.split_whitespace();
            let (Some(listed_owner), Some(listed_member), Some(listed)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if listed_owner.eq_ignore_ascii_case(&owner.id_number)
                && listed_member.eq_ignore_ascii_case(&member.id_number)
            {
                if Relationship::parse(listed) == Some(relationship) {
                    return Ok(RelationshipVerdict::Confirmed);
                }
                verdict = RelationshipVerdict::Refuted;
            }
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident(id_number: &str) -> Resident {
        Resident { name: "张三".into(), id_number: id_number.into() }
    }

    #[tokio::test]
    async fn only_listed_households_are_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("households.txt");
        let authority = DevRelationshipAuthority::new(Some(path.clone()));
        let (owner, child, other) =
            (resident("11010519850101001X"), resident("110105201801010023"), resident("110105201901010021"));
        assert_eq!(
            authority.check(&owner, &child, Relationship::Child).await,
            Ok(RelationshipVerdict::CannotAnswer),
            "no file"
        );
        std::fs::write(&path, "# households\n\n11010519850101001x 110105201801010023 CHILD\n").unwrap();
        assert_eq!(authority.check(&owner, &child, Relationship::Child).await, Ok(RelationshipVerdict::Confirmed));
        assert_eq!(authority.check(&owner, &child, Relationship::Sibling).await, Ok(RelationshipVerdict::Refuted));
        assert_eq!(authority.check(&owner, &other, Relationship::Child).await, Ok(RelationshipVerdict::CannotAnswer));
        assert_eq!(authority.check(&child, &owner, Relationship::Child).await, Ok(RelationshipVerdict::CannotAnswer));
        assert_eq!(
            DevRelationshipAuthority::default().check(&owner, &child, Relationship::Child).await,
            Ok(RelationshipVerdict::CannotAnswer)
        );
    }
}
