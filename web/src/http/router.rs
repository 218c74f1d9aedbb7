//! Routing: `matchit` finds the path, then the method picks the endpoint. Documented routes are
//! registered from their `#[utoipa::path]` annotation, so the OpenAPI document and the router
//! are built from the same declaration and cannot drift.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Method;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths};

use crate::http::error::{ApiError, ServerError};
use crate::http::reply::Reply;
use crate::http::request::Request;

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send + 'static>>;

/// A request handler: any `async fn(Request<S>) -> Result<Reply, ApiError>` (or closure
/// returning such a future) that is `Send + Sync + 'static`.
pub trait Handler<S>: Send + Sync + 'static {
    /// Runs the handler on one request.
    fn call(&self, request: Request<S>) -> HandlerFuture;
}

impl<S, F, Fut> Handler<S> for F
where
    F: Fn(Request<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, ApiError>> + Send + 'static,
{
    fn call(&self, request: Request<S>) -> HandlerFuture {
        Box::pin(self(request))
    }
}

/// Per-route overrides of the server-wide limits in [`HttpConfig`](crate::http::HttpConfig).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Body limit of this route instead of `HttpConfig::body_bytes_max` (e.g. larger for
    /// JSON batch ingest).
    pub body_bytes_max: Option<u64>,
    /// Request timeout of this route instead of `HttpConfig::request_timeout_ms`.
    pub request_timeout_ms: Option<u64>,
}

/// One method of one path, as registered.
pub(crate) struct Endpoint<S> {
    pub(crate) method: Method,
    pub(crate) handler: Arc<dyn Handler<S>>,
    pub(crate) options: RouteOptions,
    documented: bool,
}

/// Every endpoint of one route pattern.
pub(crate) struct PathRoutes<S> {
    /// The pattern, e.g. `/api/buoys/{id}`; also the `route` label of the HTTP metrics.
    pub(crate) pattern: Arc<String>,
    pub(crate) endpoints: Vec<Endpoint<S>>,
    /// Names of the pattern's `{parameters}`, in order (shared with each request, not copied).
    pub(crate) param_names: Arc<[String]>,
    /// Value of the `Allow` header of a 405 on this path.
    pub(crate) allow: String,
}

/// A route as listed by [`Router::routes`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteInfo {
    /// The route pattern, e.g. `/api/buoys/{id}`.
    pub path: String,
    /// The method.
    pub method: Method,
    /// Whether the route is in the OpenAPI document (false for pages and static assets).
    pub documented: bool,
}

/// The routes of the server and the OpenAPI document describing them.
///
/// `S` is the application state every handler can read through [`Request::state`]. A new
/// router already serves `/healthz`, `/metrics`, `/api/openapi.json` and `/api/docs`.
pub struct Router<S> {
    pub(crate) state: Arc<S>,
    matcher: matchit::Router<usize>,
    pub(crate) paths: Vec<PathRoutes<S>>,
    index_by_pattern: HashMap<String, usize>,
    openapi: OpenApi,
}

impl<S: Send + Sync + 'static> Router<S> {
    /// A router over `state`, whose OpenAPI document is titled `title` at API `version`.
    pub fn new(state: S, title: &str, version: &str) -> Result<Self, ServerError> {
        let mut components = ComponentsBuilder::new().build();
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let openapi = OpenApiBuilder::new()
            .info(InfoBuilder::new().title(title).version(version).build())
            .paths(Paths::new())
            .components(Some(components))
            .build();
        let router = Self {
            state: Arc::new(state),
            matcher: matchit::Router::new(),
            paths: Vec::new(),
            index_by_pattern: HashMap::new(),
            openapi,
        };
        crate::http::builtin::register(router)
    }

    /// Adds the documented route `P` (the `__path_<fn>` type `#[utoipa::path]` generates next
    /// to the handler): its path, methods, operation and schemas all come from the annotation.
    pub fn route<P>(self, handler: impl Handler<S>) -> Result<Self, ServerError>
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
    {
        self.route_with::<P>(RouteOptions::default(), handler)
    }

    /// Like [`Router::route`] with per-route limits.
    pub fn route_with<P>(
        mut self,
        options: RouteOptions,
        handler: impl Handler<S>,
    ) -> Result<Self, ServerError>
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
    {
        let path = P::path();
        let http_methods = P::methods();
        let handler: Arc<dyn Handler<S>> = Arc::new(handler);
        for http_method in &http_methods {
            let method = to_method(http_method);
            self.insert(&path, method, Arc::clone(&handler), options, true)?;
        }
        self.openapi.paths.add_path_operation(&path, http_methods, P::operation());
        // `utoipa::__dev::SchemaReferences` is how utoipa's own router integration collects the
        // schemas a path mentions; using it keeps `components` in step with the routes too.
        let mut schemas = Vec::new();
        P::schemas(&mut schemas);
        if let Some(components) = self.openapi.components.as_mut() {
            components.schemas.extend(schemas);
        }
        Ok(self)
    }

    /// Adds a route that is not part of the API document: HTML pages and static assets.
    pub fn hidden_route(
        mut self,
        method: Method,
        path: &str,
        handler: impl Handler<S>,
    ) -> Result<Self, ServerError> {
        self.insert(path, method, Arc::new(handler), RouteOptions::default(), false)?;
        Ok(self)
    }

    /// Like [`Router::hidden_route`] with per-route limits (e.g. an upload form's body).
    pub fn hidden_route_with(
        mut self,
        method: Method,
        path: &str,
        options: RouteOptions,
        handler: impl Handler<S>,
    ) -> Result<Self, ServerError> {
        self.insert(path, method, Arc::new(handler), options, false)?;
        Ok(self)
    }

    fn insert(
        &mut self,
        path: &str,
        method: Method,
        handler: Arc<dyn Handler<S>>,
        options: RouteOptions,
        documented: bool,
    ) -> Result<(), ServerError> {
        let index = match self.index_by_pattern.get(path) {
            Some(index) => *index,
            None => {
                let index = self.paths.len();
                self.matcher.insert(path, index).map_err(|error| ServerError::Route {
                    path: path.to_owned(),
                    reason: error.to_string(),
                })?;
                self.index_by_pattern.insert(path.to_owned(), index);
                self.paths.push(PathRoutes {
                    pattern: Arc::new(path.to_owned()),
                    endpoints: Vec::new(),
                    param_names: param_names(path).into(),
                    allow: String::new(),
                });
                index
            }
        };
        let routes = self.paths.get_mut(index).ok_or_else(|| ServerError::Route {
            path: path.to_owned(),
            reason: "router index out of step".to_owned(),
        })?;
        if routes.endpoints.iter().any(|endpoint| endpoint.method == method) {
            return Err(ServerError::Route {
                path: path.to_owned(),
                reason: format!("{method} registered twice"),
            });
        }
        routes.endpoints.push(Endpoint { method, handler, options, documented });
        routes.allow =
            routes.endpoints.iter().map(|endpoint| endpoint.method.as_str()).collect::<Vec<_>>().join(", ");
        Ok(())
    }

    /// Every route with its method, sorted by path then method.
    pub fn routes(&self) -> Vec<RouteInfo> {
        let mut routes: Vec<RouteInfo> = self
            .paths
            .iter()
            .flat_map(|path| {
                path.endpoints.iter().map(|endpoint| RouteInfo {
                    path: path.pattern.to_string(),
                    method: endpoint.method.clone(),
                    documented: endpoint.documented,
                })
            })
            .collect();
        routes.sort();
        routes
    }

    /// The OpenAPI 3.1 document of the documented routes (served at `/api/openapi.json`).
    pub fn openapi(&self) -> &OpenApi {
        &self.openapi
    }

    /// Finds the endpoint of `method` on `path`: 404 for an unknown path, 405 (with the allowed
    /// methods) for a known path and another method.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Result<Found<'_, S>, ApiError> {
        let matched = self.matcher.at(path).map_err(|_| ApiError::NotFound("no such route".to_owned()))?;
        let routes =
            self.paths.get(*matched.value).ok_or_else(|| ApiError::internal("router index out of step"))?;
        let endpoint = routes
            .endpoints
            .iter()
            .find(|endpoint| endpoint.method == method)
            .ok_or_else(|| ApiError::MethodNotAllowed { allow: routes.allow.clone() })?;
        // matchit yields parameters in pattern order, the order of `param_names`.
        let param_values = matched.params.iter().map(|(_, value)| value.to_owned()).collect();
        Ok(Found { routes, endpoint, param_values })
    }

    /// The pattern of the route `path` matches, whatever the method (for metrics labels).
    pub(crate) fn pattern_of(&self, path: &str) -> Option<&Arc<String>> {
        let matched = self.matcher.at(path).ok()?;
        self.paths.get(*matched.value).map(|routes| &routes.pattern)
    }
}

/// The result of a successful route lookup.
pub(crate) struct Found<'r, S> {
    pub(crate) routes: &'r PathRoutes<S>,
    pub(crate) endpoint: &'r Endpoint<S>,
    pub(crate) param_values: Vec<String>,
}

/// The names of a pattern's parameters: `{id}` → `id`, `{*rest}` → `rest`.
fn param_names(pattern: &str) -> Vec<String> {
    pattern
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}'))
        .map(|(name, _)| name.trim_start_matches('*').to_owned())
        .collect()
}

/// utoipa's method enum to `http`'s.
pub(crate) fn to_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}
