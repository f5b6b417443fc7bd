//! The real authority behind a JSON webhook.

use medins_common::webhook::{BearerToken, WebhookClient, WebhookError, WebhookOptions};

use super::{AuthorityError, AuthorityVerdict, IdentityAuthority};

/// Posts `{"name": ..., "id_number": ...}` with `authorization: Bearer <token>` and reads
/// `{"result": "MATCH" | "MISMATCH" | "DENY"}`. Timeouts, connection errors and 5xx are
/// retried (bounded); after that, or on any other failure, the authority is unavailable.
/// `https://`, or `http://` on loopback (see `medins_common::webhook`).
#[derive(Debug, Clone)]
pub struct WebhookIdentityAuthority {
    client: WebhookClient,
}

#[derive(serde::Deserialize)]
struct Answer {
    result: String,
}

impl WebhookIdentityAuthority {
    /// An authority at `url`.
    pub fn new(url: &str, token: Option<BearerToken>, options: WebhookOptions) -> Result<Self, WebhookError> {
        Ok(Self { client: WebhookClient::new(url, token, options)? })
    }
}

#[tonic::async_trait]
impl IdentityAuthority for WebhookIdentityAuthority {
    async fn check(&self, name: &str, id_number: &str) -> Result<AuthorityVerdict, AuthorityError> {
        let body = serde_json::json!({ "name": name, "id_number": id_number });
        let answer: Answer = self.client.post_json_for(&body).await.map_err(|error| {
            tracing::warn!(endpoint = %self.client.endpoint(), error = %error, "identity authority webhook failed");
            match error {
                WebhookError::InvalidResponse(text) => AuthorityError::InvalidAnswer(text),
                other => AuthorityError::Unavailable(other.to_string()),
            }
        })?;
        match answer.result.as_str() {
            "MATCH" => Ok(AuthorityVerdict::Match),
            "MISMATCH" => Ok(AuthorityVerdict::Mismatch),
            "DENY" => Ok(AuthorityVerdict::Deny),
            _ => Err(AuthorityError::InvalidAnswer("result is not MATCH, MISMATCH or DENY".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use medins_common::webhook::testing::{FakeResponse, FakeWebhookServer, fast_options, refused_url};

    use super::*;

    #[tokio::test]
    async fn each_result_maps_to_its_verdict() {
        for (result, verdict) in [
            ("MATCH", AuthorityVerdict::Match),
            ("MISMATCH", AuthorityVerdict::Mismatch),
            ("DENY", AuthorityVerdict::Deny),
        ] {
            let server =
                FakeWebhookServer::start(vec![FakeResponse::new(200, format!(r#"{{"result":"{result}"}}"#))]).await;
            let authority =
                WebhookIdentityAuthority::new(&server.url(), Some(BearerToken::new("auth")), fast_options()).unwrap();
            assert_eq!(authority.check("张三", "11010519491231002X").await, Ok(verdict));
            let request = &server.requests()[0];
            assert_eq!(request.header("authorization"), Some("Bearer auth"));
            assert_eq!(request.json(), serde_json::json!({"name": "张三", "id_number": "11010519491231002X"}));
        }
    }

    #[tokio::test]
    async fn a_500_is_retried_before_the_verdict() {
        let server = FakeWebhookServer::start(vec![
            FakeResponse::new(500, "{}"),
            FakeResponse::new(200, r#"{"result":"MATCH"}"#),
        ])
        .await;
        let authority = WebhookIdentityAuthority::new(&server.url(), None, fast_options()).unwrap();
        assert_eq!(authority.check("张三", "11010519491231002X").await, Ok(AuthorityVerdict::Match));
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_unavailable() {
        let slow = FakeWebhookServer::start(vec![
            FakeResponse::new(200, r#"{"result":"MATCH"}"#).after(Duration::from_secs(5)),
        ])
        .await;
        let authority = WebhookIdentityAuthority::new(&slow.url(), None, fast_options()).unwrap();
        let error = authority.check("张三", "11010519491231002X").await.unwrap_err();
        assert!(matches!(error, AuthorityError::Unavailable(_)), "{error}");
        assert!(!error.to_string().contains("11010519491231002X"));

        let authority = WebhookIdentityAuthority::new(&refused_url().await, None, fast_options()).unwrap();
        assert!(matches!(authority.check("张三", "11010519491231002X").await, Err(AuthorityError::Unavailable(_))));
    }

    #[tokio::test]
    async fn an_unknown_result_is_an_invalid_answer() {
        let server = FakeWebhookServer::start(vec![FakeResponse::new(200, r#"{"result":"MAYBE"}"#)]).await;
        let authority = WebhookIdentityAuthority::new(&server.url(), None, fast_options()).unwrap();
        assert!(matches!(authority.check("张三", "11010519491231002X").await, Err(AuthorityError::InvalidAnswer(_))));
    }
}
