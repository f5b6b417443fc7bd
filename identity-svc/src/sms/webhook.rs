//! The production sender: a JSON webhook in front of an SMS gateway.

use medins_common::webhook::{BearerToken, WebhookClient, WebhookError, WebhookOptions};

use super::{SmsSendError, SmsSender, message_text};
use crate::domain::sms::SmsPurpose;

/// Posts `{"phone", "code", "message", "purpose"}` to the gateway's URL with
/// `authorization: Bearer <token>`; any 2xx means accepted. Timeouts, connection errors and
/// 5xx are retried (bounded, with backoff; the `idempotency-key` header lets the gateway drop
/// duplicates), other statuses are final. `https://`, or `http://` on loopback (see `medins_common::webhook`).
#[derive(Debug, Clone)]
pub struct WebhookSmsSender {
    client: WebhookClient,
}

impl WebhookSmsSender {
    /// A sender posting to `url`.
    pub fn new(url: &str, token: Option<BearerToken>, options: WebhookOptions) -> Result<Self, WebhookError> {
        Ok(Self { client: WebhookClient::new(url, token, options)? })
    }
}

#[tonic::async_trait]
impl SmsSender for WebhookSmsSender {
    async fn send(&self, phone: &str, code: &str, purpose: SmsPurpose) -> Result<(), SmsSendError> {
        let body = serde_json::json!({
            "phone": phone,
            "code": code,
            "message": message_text(code, purpose),
            "purpose": purpose.as_str(),
        });
        self.client.post_json(&body).await.map(|_| ()).map_err(|error| {
            tracing::warn!(endpoint = %self.client.endpoint(), error = %error, "SMS webhook failed");
            SmsSendError::from(error)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use medins_common::webhook::testing::{FakeResponse, FakeWebhookServer, fast_options};

    use super::*;

    #[tokio::test]
    async fn posts_the_code_to_the_gateway_with_the_token() {
        let gateway = FakeWebhookServer::start(vec![FakeResponse::new(202, "")]).await;
        let sender = WebhookSmsSender::new(&gateway.url(), Some(BearerToken::new("gw-token")), fast_options()).unwrap();
        sender.send("13812341234", "012345", SmsPurpose::LinkAccount).await.unwrap();
        let requests = gateway.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].header("authorization"), Some("Bearer gw-token"));
        let body = requests[0].json();
        assert_eq!(body["phone"], "13812341234");
        assert_eq!(body["code"], "012345");
        assert_eq!(body["purpose"], "LINK_ACCOUNT");
        assert!(body["message"].as_str().unwrap().contains("012345"));
    }

    #[tokio::test]
    async fn a_500_is_retried() {
        let gateway = FakeWebhookServer::start(vec![FakeResponse::new(500, "{}"), FakeResponse::new(200, "{}")]).await;
        let sender = WebhookSmsSender::new(&gateway.url(), None, fast_options()).unwrap();
        sender.send("13812341234", "012345", SmsPurpose::RealName).await.unwrap();
        assert_eq!(gateway.requests().len(), 2);
    }

    #[tokio::test]
    async fn a_gateway_that_never_answers_in_time_is_unavailable() {
        let gateway = FakeWebhookServer::start(vec![FakeResponse::new(200, "{}").after(Duration::from_secs(5))]).await;
        let sender = WebhookSmsSender::new(&gateway.url(), None, fast_options()).unwrap();
        let error = sender.send("13812341234", "012345", SmsPurpose::RealName).await.unwrap_err();
        assert!(matches!(error, SmsSendError::Unavailable(_)), "{error}");
        assert_eq!(gateway.requests().len(), 3, "bounded retries");
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("13812341234") && !shown.contains("012345"), "{shown}");
    }

    #[tokio::test]
    async fn a_refusal_is_final() {
        let gateway = FakeWebhookServer::start(vec![FakeResponse::new(403, "{}")]).await;
        let sender = WebhookSmsSender::new(&gateway.url(), None, fast_options()).unwrap();
        let error = sender.send("13812341234", "012345", SmsPurpose::RealName).await.unwrap_err();
        assert!(matches!(error, SmsSendError::Rejected(_)), "{error}");
        assert_eq!(gateway.requests().len(), 1);
    }
}
