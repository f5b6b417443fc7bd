//! A stand-in authority for development and tests.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{AuthorityError, AuthorityVerdict, IdentityAuthority};
use crate::domain::id_number::{LENGTH, check_character};

/// **Not an identity authority.** It cannot know whose an ID number is: it only checks that
/// the number's GB 11643 check character is right (MISMATCH otherwise) and that the number is
/// not on a local deny list (DENY otherwise); every name passes. identity-svc uses it only when
/// started with `--dev` and no `--identity-authority-url`.
///
/// The deny list is a text file, one entry per line: an ID number, or the lower- or upper-case
/// hex SHA-256 of one (so a shared list need not hold the numbers themselves); blank lines and
/// lines starting with `#` are ignored. It is read at every check, so edits apply at once; a
/// missing file is an empty list.
#[derive(Debug, Clone, Default)]
pub struct DevIdentityAuthority {
    deny_list: Option<PathBuf>,
}

impl DevIdentityAuthority {
    /// An authority reading its deny list from `deny_list`, if given.
    pub fn new(deny_list: Option<PathBuf>) -> Self {
        Self { deny_list }
    }

    async fn deny_list(&self) -> Result<String, AuthorityError> {
        let Some(path) = self.deny_list.clone() else { return Ok(String::new()) };
        tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(error) => {
                Err(AuthorityError::Unavailable(format!("cannot read the deny list {}: {error}", path.display())))
            }
        })
        .await
        .map_err(|e| AuthorityError::Unavailable(format!("deny list task failed: {e}")))?
    }
}

/// Whether `id` has 17 digits and the right check character.
fn checksum_ok(id: &str) -> bool {
    id.len() == LENGTH
        && id.as_bytes()[..LENGTH - 1].iter().all(u8::is_ascii_digit)
        && char::from(id.as_bytes()[LENGTH - 1]) == check_character(&id[..LENGTH - 1])
}

#[tonic::async_trait]
impl IdentityAuthority for DevIdentityAuthority {
    async fn check(&self, _name: &str, id_number: &str) -> Result<AuthorityVerdict, AuthorityError> {
        let id = id_number.trim().to_ascii_uppercase();
        if !checksum_ok(&id) {
            return Ok(AuthorityVerdict::Mismatch);
        }
        let digest: String = Sha256::digest(id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let list = self.deny_list().await?;
        let denied = list
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .any(|entry| entry.eq_ignore_ascii_case(&id) || entry.eq_ignore_ascii_case(&digest));
        Ok(if denied { AuthorityVerdict::Deny } else { AuthorityVerdict::Match })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "11010519491231002X";

    #[tokio::test]
    async fn a_valid_number_matches_when_no_list_exists() {
        let dir = tempfile::tempdir().unwrap();
        let authority = DevIdentityAuthority::new(Some(dir.path().join("missing.txt")));
        assert_eq!(authority.check("张三", VALID).await, Ok(AuthorityVerdict::Match));
        assert_eq!(
            DevIdentityAuthority::default().check("张三", "11010519491231002x").await,
            Ok(AuthorityVerdict::Match)
        );
    }

    #[tokio::test]
    async fn a_wrong_check_character_is_a_mismatch() {
        let authority = DevIdentityAuthority::default();
        assert_eq!(authority.check("张三", "110105194912310021").await, Ok(AuthorityVerdict::Mismatch));
        assert_eq!(authority.check("张三", "short").await, Ok(AuthorityVerdict::Mismatch));
        assert_eq!(authority.check("张三", "11010519491231002Ｘ").await, Ok(AuthorityVerdict::Mismatch));
    }

    #[tokio::test]
    async fn numbers_on_the_deny_list_are_denied_by_value_or_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny-list.txt");
        let authority = DevIdentityAuthority::new(Some(path.clone()));
        std::fs::write(&path, "# comment\n\n  11010519491231002x  \n").unwrap();
        assert_eq!(authority.check("张三", VALID).await, Ok(AuthorityVerdict::Deny));

        let other = "110101199003077777";
        let other = format!("{}{}", &other[..17], check_character(&other[..17]));
        let digest: String = Sha256::digest(other.as_bytes()).iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(authority.check("李四", &other).await, Ok(AuthorityVerdict::Match));
        std::fs::write(&path, format!("{digest}\n")).unwrap();
        assert_eq!(authority.check("李四", &other).await, Ok(AuthorityVerdict::Deny), "edits apply at once");
        assert_eq!(authority.check("张三", VALID).await, Ok(AuthorityVerdict::Match));
    }
}
