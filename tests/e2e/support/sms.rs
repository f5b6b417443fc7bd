//! The SMS side of a stack: every code identity-svc "sends" lands in a [`MemorySmsSender`], and
//! tests read it from here (the code is then registered as sensitive: it must never be logged).

use identity_svc::sms::{MemorySmsSender, SentSms};

use super::privacy;

/// The phone inbox of a stack.
#[derive(Clone, Debug, Default)]
pub struct SmsInbox {
    /// The sender identity-svc was built with.
    pub sender: MemorySmsSender,
}

impl SmsInbox {
    /// The latest code sent to `phone` (11 digits); panics if none was.
    pub fn last_code(&self, phone: &str) -> String {
        let code = self.sender.last_code(phone).expect("a code was sent to this phone");
        privacy::sensitive_token(&code);
        code
    }

    /// Everything sent so far (codes registered as sensitive).
    pub fn sent(&self) -> Vec<SentSms> {
        let sent = self.sender.sent();
        for sms in &sent {
            privacy::sensitive_token(&sms.code);
        }
        sent
    }

    /// Makes the next `count` sends fail as if the SMS gateway were down.
    pub fn fail_next(&self, count: u32) {
        self.sender.fail_next(count);
    }
}
