//! Partner authentication and authorisation as a tower layer
//! (docs/architecture.md#who-may-call-what): API key -> partner, the RPC's scope, the partner's
//! rate limit. Handlers read the typed [`Caller`] from the request extensions.

pub mod partners;
pub mod rate_limit;
pub mod scopes;

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};

pub use partners::{
    ApiKey, CareSite, CertificatePin, HospitalLevel, Partner, PartnerKind, Partners, PartnersFile, RateLimit,
    is_employer_code, is_region_code,
};

use crate::{
    error::{ApiError, ApiResult, Reason},
    tls::ConnectionInfo,
};

/// The scope each RPC needs, by full method path (`/medins.identity.v1.PersonService/GetPerson`).
pub type MethodScopes = &'static [(&'static str, &'static str)];

/// Paths anyone may call without a key: health checks (load balancers) and reflection (the
/// schema partners integrate against is public anyway).
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The authenticated partner of a call, put into the request extensions by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Partner>);

impl Caller {
    /// The caller of a request, or UNAUTHENTICATED if the auth layer did not run (a wiring bug).
    pub fn of<T>(request: &tonic::Request<T>) -> ApiResult<Arc<Partner>> {
        request
            .extensions()
            .get::<Caller>()
            .map(|caller| caller.0.clone())
            .ok_or_else(|| ApiError::of(Reason::Unauthenticated, "no authenticated caller"))
    }
}

/// The full method path of a call (`/medins.identity.v1.PersonService/GetPerson`), put into the
/// request extensions by [`AuthLayer`] beside the [`Caller`]: rules keyed by RPC (the assurance
/// level a person token needs) read it instead of trusting each handler to name itself.
#[derive(Debug, Clone, Copy)]
pub struct CalledMethod(pub &'static str);

impl CalledMethod {
    /// The method of a request, if the auth layer recorded one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&'static str> {
        request.extensions().get::<CalledMethod>().map(|method| method.0)
    }
}

/// Metadata header with which a SERVICE partner (insurance-svc calling identity-svc) names the
/// partner it relays a call for, so the person's access history shows who acted
/// (docs/architecture.md#who-may-call-what). Honoured only from SERVICE callers; anyone else
/// sending it is refused (PERMISSION_DENIED / ON_BEHALF_OF_NOT_ALLOWED), because a partner naming
/// another would hide itself from the person's history.
pub const ON_BEHALF_OF_HEADER: &str = "x-on-behalf-of";

/// The partner a SERVICE caller relays a call for, put into the request extensions by
/// [`AuthLayer`] when the call carries [`ON_BEHALF_OF_HEADER`].
#[derive(Debug, Clone)]
pub struct OnBehalfOf(pub Arc<str>);

/// The partner an audit row names for a call: the partner a SERVICE caller relays it for, else
/// the caller.
pub fn audit_partner<T>(request: &tonic::Request<T>) -> String {
    if let Some(OnBehalfOf(partner)) = request.extensions().get::<OnBehalfOf>() {
        return partner.to_string();
    }
    request.extensions().get::<Caller>().map(|caller| caller.0.id.clone()).unwrap_or_default()
}

/// Reads [`ON_BEHALF_OF_HEADER`]: `None` without it, the partner id from a SERVICE caller.
fn on_behalf_of(headers: &http::HeaderMap, caller: &Partner) -> ApiResult<Option<Arc<str>>> {
    let Some(value) = headers.get(ON_BEHALF_OF_HEADER) else { return Ok(None) };
    if caller.kind != PartnerKind::Service {
        return Err(ApiError::of(
            Reason::OnBehalfOfNotAllowed,
            "only SERVICE partners may relay a call on behalf of another partner",
        ));
    }
    let valid = value
        .to_str()
        .ok()
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .ok_or_else(|| {
            ApiError::invalid_field(
                Reason::OnBehalfOfInvalid,
                ON_BEHALF_OF_HEADER,
                "must be a partner id: 1-64 letters, digits, '-' or '_'",
            )
        })?;
    Ok(Some(Arc::from(valid)))
}

/// The bearer token of a call, if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The layer.
#[derive(Clone)]
pub struct AuthLayer {
    partners: Partners,
    scopes: Arc<HashMap<&'static str, &'static str>>,
}

impl AuthLayer {
    /// Authenticates against `partners` and requires the scopes of `scopes`.
    pub fn new(partners: Partners, scopes: MethodScopes) -> Self {
        Self { partners, scopes: Arc::new(scopes.iter().copied().collect()) }
    }

    fn authorise(
        &self,
        headers: &http::HeaderMap,
        path: &str,
        connection: Option<&ConnectionInfo>,
    ) -> ApiResult<Arc<Partner>> {
        let partner = bearer(headers).and_then(|key| self.partners.authenticate(key)).ok_or_else(|| {
            ApiError::of(Reason::Unauthenticated, "missing or unknown API key: send `authorization: Bearer mk_...`")
        })?;
        // A key bound to a certificate is worth nothing without it (docs/tls.md): a stolen key
        // alone does not authenticate.
        if let Some(pin) = &partner.client_certificate {
            let presented = connection.and_then(|connection| connection.client_certificate.as_deref());
            if !presented.is_some_and(|certificate| pin.matches(certificate)) {
                return Err(ApiError::of(
                    Reason::ClientCertificateMismatch,
                    "this API key is accepted only over a mutual-TLS connection presenting its partner's pinned \
                     client certificate",
                ));
            }
        }
        // An unknown path passes with any valid key: tonic then answers UNIMPLEMENTED.
        if let Some(scope) = self.scopes.get(path)
            && !partner.has_scope(scope)
        {
            return Err(ApiError::of(Reason::PermissionDeniedScope, format!("this API key lacks the scope `{scope}`"))
                .with_metadata("scope", *scope));
        }
        if let Err(wait) = partner.limiter.check() {
            return Err(ApiError::resource_exhausted(Reason::PartnerRateLimited, "partner rate limit reached", wait));
        }
        Ok(partner)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { layer: self.clone(), inner }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    layer: AuthLayer,
    inner: S,
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone is the one that was not polled ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if is_public(path) {
            return Box::pin(inner.call(request));
        }
        let connection = request.extensions().get::<ConnectionInfo>();
        let authorised = self.layer.authorise(request.headers(), path, connection).and_then(|partner| {
            let relayed_for = on_behalf_of(request.headers(), &partner)?;
            Ok((partner, relayed_for))
        });
        match authorised {
            Ok((partner, relayed_for)) => {
                if let Some(relayed_for) = relayed_for {
                    request.extensions_mut().insert(OnBehalfOf(relayed_for));
                }
                tracing::Span::current().record("partner", partner.id.as_str());
                if let Some((&method, _)) = self.layer.scopes.get_key_value(request.uri().path()) {
                    request.extensions_mut().insert(CalledMethod(method));
                }
                request.extensions_mut().insert(Caller(partner));
                Box::pin(inner.call(request))
            }
            Err(error) => {
                let status: tonic::Status = error.into();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
