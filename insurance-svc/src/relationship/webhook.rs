//! The real relationship authority behind a JSON webhook.

use medins_common::webhook::{BearerToken, WebhookClient, WebhookError, WebhookOptions};

use super::{RelationshipAuthority, RelationshipAuthorityError, Resident};
use crate::domain::family::{Relationship, RelationshipVerdict};

/// Posts `{"owner": {"name", "id_number"}, "member": {"name", "id_number"}, "relationship":
/// "CHILD"}` with `authorization: Bearer <token>` and reads `{"result": "CONFIRMED" | "REFUTED" |
/// "CANNOT_ANSWER"}`. Timeouts, connection errors and 5xx are retried (bounded); after that, or
/// on any other failure, the authority is unavailable (and the binding goes to review). Plain
/// HTTP only (see `medins_common::webhook`).
#[derive(Debug, Clone)]
pub struct WebhookRelationshipAuthority {
    client: WebhookClient,
}

#[derive(serde::Deserialize)]
struct Answer {
    result: String,
}

impl WebhookRelationshipAuthority {
    /// An authority at `url`.
    pub fn new(url: &str, token: Option<BearerToken>, options: WebhookOptions) -> Result<Self, WebhookError> {
        Ok(Self { client: WebhookClient::new(url, token, options)? })
    }
}

#[tonic::async_trait]
impl RelationshipAuthority for WebhookRelationshipAuthority {
    async fn check(
        &self,
        owner: &Resident,
        member: &Resident,
        relationship: Relationship,
    ) -> Result<RelationshipVerdict, RelationshipAuthorityError> {
        let body = serde_json::json!({
            "owner": { "name": owner.name, "id_number": owner.id_number },
            "member": { "name": member.name, "id_number": member.id_number },
            "relationship": relationship.as_str(),
        });
        let answer: Answer = self.client.post_json_for(&body).await.map_err(|error| {
            tracing::warn!(endpoint = %self.client.endpoint(), error = %error, "relationship authority webhook failed");
            match error {
                WebhookError::InvalidResponse(text) => RelationshipAuthorityError::InvalidAnswer(text),
                other => RelationshipAuthorityError::Unavailable(other.to_string()),
            }
        })?;
        match answer.result.as_str() {
            "CONFIRMED" => Ok(RelationshipVerdict::Confirmed),
            "REFUTED" => Ok(RelationshipVerdict::Refuted),
            "CANNOT_ANSWER" => Ok(RelationshipVerdict::CannotAnswer),
            _ => Err(RelationshipAuthorityError::InvalidAnswer(
                "result is not CONFIRMED, REFUTED or CANNOT_ANSWER".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use medins_common::webhook::testing::{FakeResponse, FakeWebhookServer, fast_options, refused_url};

    use super::*;

    fn owner() -> Resident {
        Resident { name: "张三".into(), id_number: "11010519850101001X".into() }
    }

    fn child() -> Resident {
        Resident { name: "张小三".into(), id_number: "110105201801010023".into() }
    }

    #[tokio::test]
    async fn each_result_maps_to_its_verdict_and_the_request_names_both_and_the_relationship() {
        for (result, verdict) in [
            ("CONFIRMED", RelationshipVerdict::Confirmed),
            ("REFUTED", RelationshipVerdict::Refuted),
            ("CANNOT_ANSWER", RelationshipVerdict::CannotAnswer),
        ] {
            let server =
                FakeWebhookServer::start(vec![FakeResponse::new(200, format!(r#"{{"result":"{result}"}}"#))]).await;
            let authority =
                WebhookRelationshipAuthority::new(&server.url(), Some(BearerToken::new("hh")), fast_options()).unwrap();
            assert_eq!(authority.check(&owner(), &child(), Relationship::Child).await, Ok(verdict));
            let request = &server.requests()[0];
            assert_eq!(request.header("authorization"), Some("Bearer hh"));
            assert_eq!(
                request.json(),
                serde_json::json!({
                    "owner": {"name": "张三", "id_number": "11010519850101001X"},
                    "member": {"name": "张小三", "id_number": "110105201801010023"},
                    "relationship": "CHILD",
                })
            );
        }
    }

    #[tokio::test]
    async fn a_500_is_retried_before_the_verdict() {
        let server = FakeWebhookServer::start(vec![
            FakeResponse::new(503, "{}"),
            FakeResponse::new(200, r#"{"result":"CONFIRMED"}"#),
        ])
        .await;
        let authority = WebhookRelationshipAuthority::new(&server.url(), None, fast_options()).unwrap();
        assert_eq!(authority.check(&owner(), &child(), Relationship::Child).await, Ok(RelationshipVerdict::Confirmed));
        assert_eq!(server.requests().len(), 2);
    }

    #[tokio::test]
    async fn failures_are_unavailable_or_invalid_and_become_a_review() {
        let slow = FakeWebhookServer::start(vec![
            FakeResponse::new(200, r#"{"result":"CONFIRMED"}"#).after(Duration::from_secs(5)),
        ])
        .await;
        let authority = WebhookRelationshipAuthority::new(&slow.url(), None, fast_options()).unwrap();
        let error = authority.check(&owner(), &child(), Relationship::Child).await.unwrap_err();
        assert!(matches!(error, RelationshipAuthorityError::Unavailable(_)), "{error}");
        assert!(!error.to_string().contains("11010519850101001X"));
        assert_eq!(
            super::super::verdict_or_review(&authority, &owner(), &child(), Relationship::Child).await,
            RelationshipVerdict::CannotAnswer
        );

        let refused = WebhookRelationshipAuthority::new(&refused_url().await, None, fast_options()).unwrap();
        assert!(matches!(
            refused.check(&owner(), &child(), Relationship::Child).await,
            Err(RelationshipAuthorityError::Unavailable(_))
        ));

        let maybe = FakeWebhookServer::start(vec![FakeResponse::new(200, r#"{"result":"MAYBE"}"#)]).await;
        let authority = WebhookRelationshipAuthority::new(&maybe.url(), None, fast_options()).unwrap();
        assert!(matches!(
            authority.check(&owner(), &child(), Relationship::Child).await,
            Err(RelationshipAuthorityError::InvalidAnswer(_))
        ));
    }
}
