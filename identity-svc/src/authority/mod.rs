//! The identity authority (docs/architecture.md#identity-svc): does this name belong to this
//! resident ID number, and may it be verified? [`IdentityAuthority`] and its implementations:
//!
//! - [`WebhookIdentityAuthority`]: the real authority (or a gateway to it) behind a webhook.
//! - [`DevIdentityAuthority`]: development and tests only; NOT an identity authority.

mod dev;
mod webhook;

use std::{fmt, sync::Arc};

pub use self::{dev::DevIdentityAuthority, webhook::WebhookIdentityAuthority};

/// The authority's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorityVerdict {
    /// The name and ID number belong together.
    Match,
    /// They do not (or the number does not exist).
    Mismatch,
    /// The authority refuses verification of this identity (e.g. revoked or reported).
    Deny,
}

impl AuthorityVerdict {
    /// Wire and log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityVerdict::Match => "MATCH",
            AuthorityVerdict::Mismatch => "MISMATCH",
            AuthorityVerdict::Deny => "DENY",
        }
    }
}

/// Why the authority gave no verdict. Messages never hold the name or the ID number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// Unreachable, failing, or refusing our requests: retry later.
    #[error("identity authority unavailable: {0}")]
    Unavailable(String),
    /// An answer we cannot read.
    #[error("identity authority answered unusably: {0}")]
    InvalidAnswer(String),
}

/// Checks a person's name and ID number with the identity authority.
#[tonic::async_trait]
pub trait IdentityAuthority: Send + Sync + fmt::Debug {
    /// The verdict on `name` (normalised) and `id_number` (normalised, upper-case `X`).
    async fn check(&self, name: &str, id_number: &str) -> Result<AuthorityVerdict, AuthorityError>;
}

/// The authority `config` asks for: the webhook when its URL is set, else the development
/// stand-in in `--dev` mode; otherwise an error (real names must not be confirmed by nobody).
pub fn from_config(config: &crate::Config) -> anyhow::Result<Arc<dyn IdentityAuthority>> {
    let verification = &config.verification;
    match (&verification.identity_authority_url, config.dev) {
        (Some(url), _) => {
            let authority = WebhookIdentityAuthority::new(
                url,
                verification.identity_authority_token.clone(),
                config.common.webhook_options(verification.webhook_options()),
            )
            .map_err(|e| anyhow::anyhow!("--identity-authority-url: {e}"))?;
            Ok(Arc::new(authority))
        }
        (None, true) => {
            tracing::warn!(
                "--dev: real names are checked by the development stand-in (ID checksum and deny list only), \
                 not by an identity authority"
            );
            Ok(Arc::new(DevIdentityAuthority::new(verification.deny_list_file.clone())))
        }
        (None, false) => anyhow::bail!(
            "no identity authority configured: set --identity-authority-url (MEDINS_IDENTITY_AUTHORITY_URL), or \
             start with --dev (MEDINS_DEV=true) to use the development stand-in"
        ),
    }
}
