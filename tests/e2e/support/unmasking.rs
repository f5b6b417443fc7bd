//! Clients for the tests of views that cannot be unmasked.

use medins_proto::identity::v1::person_facts_service_client::PersonFactsServiceClient;

use super::{Intercepted, Stack, interceptor};

impl Stack {
    /// identity-svc's PersonFactsService, calling with `key`.
    pub fn person_facts(&self, key: Option<&str>) -> PersonFactsServiceClient<Intercepted> {
        PersonFactsServiceClient::with_interceptor(self.identity_channel(), interceptor(key))
    }
}
