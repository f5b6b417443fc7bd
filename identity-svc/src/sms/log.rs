//! The development sender: logs instead of sending.

use std::{io::Write, path::PathBuf, sync::Mutex};

use medins_common::mask::mask_phone;

use super::{SmsSendError, SmsSender};
use crate::domain::sms::SmsPurpose;

/// Logs the masked phone and the code at WARN instead of sending an SMS, and optionally appends
/// `<masked phone> <purpose> <code>` to a file (so scripts and the README walkthrough can read
/// the code). For development only: it is the one place where a code appears in a log
/// (docs/architecture.md#personal-data), and identity-svc builds it only when started with `--dev`.
#[derive(Debug, Default)]
pub struct LogSmsSender {
    file: Option<Mutex<PathBuf>>,
}

impl LogSmsSender {
    /// Logs only.
    pub fn new() -> Self {
        Self { file: None }
    }

    /// Logs, and appends each code to `path`.
    pub fn with_file(path: PathBuf) -> Self {
        Self { file: Some(Mutex::new(path)) }
    }
}

#[tonic::async_trait]
impl SmsSender for LogSmsSender {
    async fn send(&self, phone: &str, code: &str, purpose: SmsPurpose) -> Result<(), SmsSendError> {
        tracing::warn!(
            phone = %mask_phone(phone),
            code = %code,
            purpose = purpose.as_str(),
            "DEV SMS (not sent): development log sender (--dev); configure --sms-webhook-url for real delivery"
        );
        if let Some(file) = &self.file {
            let path = file.lock().expect("dev sms file lock");
            let line = format!("{} {} {code}\n", mask_phone(phone), purpose.as_str());
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(error) = written {
                tracing::warn!(%error, "DEV SMS file not written");
            }
        }
        Ok(())
    }
}
