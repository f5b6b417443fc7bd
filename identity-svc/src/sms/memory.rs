//! The test sender: keeps what it "sent".

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use super::{SmsSendError, SmsSender};
use crate::domain::sms::SmsPurpose;

/// One message the [`MemorySmsSender`] accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct SentSms {
    /// Normalised phone.
    pub phone: String,
    /// The code.
    pub code: String,
    /// The purpose.
    pub purpose: SmsPurpose,
}

impl fmt::Debug for SentSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentSms").field("purpose", &self.purpose).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Outbox {
    sent: Vec<SentSms>,
    failures_to_inject: u32,
}

/// Records messages instead of sending them, so tests can read the codes; can be told to fail.
/// Clones share the record.
#[derive(Clone, Default)]
pub struct MemorySmsSender {
    outbox: Arc<Mutex<Outbox>>,
}

impl fmt::Debug for MemorySmsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySmsSender").field("sent", &self.outbox().sent.len()).finish()
    }
}

impl MemorySmsSender {
    /// An empty sender.
    pub fn new() -> Self {
        Self::default()
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything sent so far, oldest first.
    pub fn sent(&self) -> Vec<SentSms> {
        self.outbox().sent.clone()
    }

    /// The latest code sent to `phone` (normalised 11 digits).
    pub fn last_code(&self, phone: &str) -> Option<String> {
        self.outbox().sent.iter().rev().find(|sms| sms.phone == phone).map(|sms| sms.code.clone())
    }

    /// Makes the next `count` sends fail as if the gateway were down.
    pub fn fail_next(&self, count: u32) {
        self.outbox().failures_to_inject = count;
    }
}

#[tonic::async_trait]
impl SmsSender for MemorySmsSender {
    async fn send(&self, phone: &str, code: &str, purpose: SmsPurpose) -> Result<(), SmsSendError> {
        let mut outbox = self.outbox();
        if outbox.failures_to_inject > 0 {
            outbox.failures_to_inject -= 1;
            return Err(SmsSendError::Unavailable("injected failure".into()));
        }
        outbox.sent.push(SentSms { phone: phone.to_owned(), code: code.to_owned(), purpose });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_codes_per_phone_and_fails_when_told() {
        let sender = MemorySmsSender::new();
        sender.send("13800000001", "111111", SmsPurpose::RealName).await.unwrap();
        sender.send("13800000002", "222222", SmsPurpose::LinkAccount).await.unwrap();
        sender.send("13800000001", "333333", SmsPurpose::RealName).await.unwrap();
        assert_eq!(sender.last_code("13800000001").as_deref(), Some("333333"));
        assert_eq!(sender.last_code("13800000009"), None);
        sender.fail_next(1);
        assert!(sender.clone().send("13800000001", "444444", SmsPurpose::RealName).await.is_err());
        sender.send("13800000001", "555555", SmsPurpose::RealName).await.unwrap();
        assert_eq!(sender.sent().len(), 4);
        assert!(!format!("{sender:?} {:?}", sender.sent()).contains("1380000"));
    }
}
