//! The relationship-verification authority (issue 14 item 1): does the household registration
//! show this member in this relationship to the owner? [`RelationshipAuthority`] and its
//! implementations:
//!
//! - [`WebhookRelationshipAuthority`]: the real authority (or a gateway to it) behind a webhook.
//! - [`DevRelationshipAuthority`]: development and tests only; NOT an authority. It knows only
//!   the households written in a local file and cannot answer for anyone else, so without the
//!   webhook every binding of a child waits for an operator's review.
//!
//! The decision what a verdict means for a binding is `domain::family::admit`.

mod dev;
mod webhook;

use std::{fmt, sync::Arc};

pub use self::{dev::DevRelationshipAuthority, webhook::WebhookRelationshipAuthority};
use crate::domain::family::{Relationship, RelationshipVerdict};

/// A person as the authority knows them. `Debug` shows nothing personal.
#[derive(Clone, PartialEq, Eq)]
pub struct Resident {
    /// Full legal name (normalised).
    pub name: String,
    /// 18-character resident ID number (upper-case `X`).
    pub id_number: String,
}

impl fmt::Debug for Resident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resident(..)")
    }
}

/// Why the authority gave no verdict. Messages never hold names or ID numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationshipAuthorityError {
    /// Unreachable, failing, or refusing our requests.
    #[error("relationship authority unavailable: {0}")]
    Unavailable(String),
    /// An answer we cannot read.
    #[error("relationship authority answered unusably: {0}")]
    InvalidAnswer(String),
}

/// Checks a relationship against the household registration.
#[tonic::async_trait]
pub trait RelationshipAuthority: Send + Sync + fmt::Debug {
    /// Whether `member` is `relationship` of `owner` (the owner's view: PARENT = the member is
    /// the owner's parent).
    async fn check(
        &self,
        owner: &Resident,
        member: &Resident,
        relationship: Relationship,
    ) -> Result<RelationshipVerdict, RelationshipAuthorityError>;
}

/// The verdict to act on: an authority that fails is one that cannot answer (the binding then
/// waits for an operator's review; it never becomes ACTIVE without a proof).
pub async fn verdict_or_review(
    authority: &dyn RelationshipAuthority,
    owner: &Resident,
    member: &Resident,
    relationship: Relationship,
) -> RelationshipVerdict {
    match authority.check(owner, member, relationship).await {
        Ok(verdict) => verdict,
        Err(error) => {
            tracing::warn!(error = %error, "relationship authority gave no verdict: the binding goes to review");
            RelationshipVerdict::CannotAnswer
        }
    }
}

/// The authority the configuration asks for: the webhook when its URL is set, else the
/// development stand-in over `--relationship-households-file` (which answers only for the
/// households written there).
pub fn from_config(config: &crate::Config) -> anyhow::Result<Arc<dyn RelationshipAuthority>> {
    match &config.relationship_authority_url {
        Some(url) => {
            let options = config.common.webhook_options(medins_common::webhook::WebhookOptions {
                attempt_timeout: config.relationship_authority_timeout,
                ..Default::default()
            });
            let authority =
                WebhookRelationshipAuthority::new(url, config.relationship_authority_token.clone(), options)
                    .map_err(|e| anyhow::anyhow!("--relationship-authority-url: {e}"))?;
            Ok(Arc::new(authority))
        }
        None => {
            tracing::warn!(
                "no --relationship-authority-url: relationships are checked by the development stand-in (only the \
                 households in --relationship-households-file); every other binding of a child waits for an \
                 operator's review"
            );
            Ok(Arc::new(DevRelationshipAuthority::new(config.relationship_households_file.clone())))
        }
    }
}
