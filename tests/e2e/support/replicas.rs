//! More identity-svc replicas on the stack's database, keys and token key file (revocation
//! tests: a token refused on a replica that did not write the revocation).

use std::time::Duration;

use identity_svc::IdentityService;
use medins_proto::identity::v1::person_service_client::PersonServiceClient;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{Intercepted, Stack, channel, interceptor, stopped};

/// Another identity-svc, serving on its own address.
pub struct IdentityReplica {
    pub addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl IdentityReplica {
    /// Stops it and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("replica stops within the drain bound")
            .expect("replica task")
            .expect("replica result");
    }
}

impl Stack {
    /// Starts another identity-svc on the same database and keys.
    pub async fn start_identity_replica(&self) -> IdentityReplica {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let service = IdentityService::build(self.identity_config.clone(), self.identity_dependencies.clone())
            .await
            .expect("build identity-svc replica");
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(service.serve(listener, stopped(rx)));
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr));
        for attempt in 0.. {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map(|r| r.into_inner().status)
                .ok();
            if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
                break;
            }
            assert!(attempt < 200, "the replica never became SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        IdentityReplica { addr, stop, task }
    }

    /// PersonService of the identity-svc at `addr` (a replica), as the partner holding `key`.
    pub fn persons_at(&self, addr: std::net::SocketAddr, key: Option<&str>) -> PersonServiceClient<Intercepted> {
        PersonServiceClient::with_interceptor(channel(addr), interceptor(key))
    }
}
