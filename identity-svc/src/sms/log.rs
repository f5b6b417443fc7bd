//! The development sender: logs instead of sending.

use medins_common::mask::mask_phone;

use super::{SmsSendError, SmsSender};
use crate::domain::sms::SmsPurpose;

/// Logs the masked phone and the code at WARN instead of sending an SMS. For development only:
/// it is the one place where a code appears in a log (DESIGN.md 4.5), and identity-svc builds
/// it only when started with `--dev`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSmsSender;

#[tonic::async_trait]
impl SmsSender for LogSmsSender {
    async fn send(&self, phone: &str, code: &str, purpose: SmsPurpose) -> Result<(), SmsSendError> {
        tracing::warn!(
            phone = %mask_phone(phone),
            code = %code,
            purpose = purpose.as_str(),
            "DEV SMS (not sent): development log sender (--dev); configure --sms-webhook-url for real delivery"
        );
        Ok(())
    }
}
