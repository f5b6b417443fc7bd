//! Delivery of SMS codes (docs/architecture.md#identity-svc): the [`SmsSender`] trait and its
//! implementations.
//!
//! - [`WebhookSmsSender`]: a real SMS gateway behind an HTTP webhook (production).
//! - [`LogSmsSender`]: development only, logs the code instead of sending it; identity-svc uses
//!   it only when started with `--dev`.
//! - [`MemorySmsSender`]: tests read the codes it "sent".
//!
//! identity-svc refuses to start without a sender: an SMS must never silently go nowhere.

mod log;
mod memory;
mod webhook;

use std::{fmt, sync::Arc};

use medins_common::webhook::WebhookError;

pub use self::{log::LogSmsSender, memory::MemorySmsSender, memory::SentSms, webhook::WebhookSmsSender};
use crate::domain::sms::{CODE_TTL_MINUTES, SmsPurpose};

/// Why an SMS was not handed to the gateway. Messages never hold the phone or the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsSendError {
    /// The gateway could not be reached, or failed (retried already).
    #[error("SMS gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the message.
    #[error("SMS gateway refused the message: {0}")]
    Rejected(String),
}

impl From<WebhookError> for SmsSendError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Rejected { .. } | WebhookError::Config(_) => SmsSendError::Rejected(error.to_string()),
            WebhookError::Unreachable { .. } | WebhookError::InvalidResponse(_) => {
                SmsSendError::Unavailable(error.to_string())
            }
        }
    }
}

/// Sends a verification code to a phone.
#[tonic::async_trait]
pub trait SmsSender: Send + Sync + fmt::Debug {
    /// Sends `code` for `purpose` to `phone` (normalised 11 digits). `Ok` once the gateway has
    /// accepted the message.
    async fn send(&self, phone: &str, code: &str, purpose: SmsPurpose) -> Result<(), SmsSendError>;
}

/// The text of the SMS.
pub fn message_text(code: &str, purpose: SmsPurpose) -> String {
    format!(
        "【医保服务】您正在{}，验证码 {code}，{CODE_TTL_MINUTES} 分钟内有效。如非本人操作请忽略，切勿将验证码告诉他人。",
        purpose.description_zh()
    )
}

/// The sender `config` asks for: the webhook when its URL is set, else the log sender in
/// `--dev` mode; otherwise an error, because codes must never silently go nowhere.
pub fn sender_from_config(config: &crate::Config) -> anyhow::Result<Arc<dyn SmsSender>> {
    let verification = &config.verification;
    match (&verification.sms_webhook_url, config.dev) {
        (Some(url), _) => {
            let sender = WebhookSmsSender::new(
                url,
                verification.sms_webhook_token.clone(),
                config.common.webhook_options(verification.webhook_options()),
            )
            .map_err(|e| anyhow::anyhow!("--sms-webhook-url: {e}"))?;
            Ok(Arc::new(sender))
        }
        (None, true) => {
            tracing::warn!("--dev: SMS codes are written to the log, not sent (set --sms-webhook-url to send them)");
            Ok(Arc::new(match &verification.dev_sms_file {
                Some(path) => LogSmsSender::with_file(path.clone()),
                None => LogSmsSender::new(),
            }))
        }
        (None, false) => anyhow::bail!(
            "no SMS sender configured: set --sms-webhook-url (MEDINS_SMS_WEBHOOK_URL) to deliver codes through an \
             SMS gateway, or start with --dev (MEDINS_DEV=true) to log them instead of sending them"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_code_purpose_and_lifetime() {
        let text = message_text("012345", SmsPurpose::RealName);
        assert!(text.contains("012345") && text.contains("实名认证") && text.contains("5 分钟"), "{text}");
    }

    #[test]
    fn webhook_errors_split_into_unavailable_and_rejected() {
        let unreachable = WebhookError::Unreachable { attempts: 3, last: "HTTP 500".into() };
        assert!(matches!(SmsSendError::from(unreachable), SmsSendError::Unavailable(_)));
        assert!(matches!(SmsSendError::from(WebhookError::Rejected { status: 400 }), SmsSendError::Rejected(_)));
    }
}
