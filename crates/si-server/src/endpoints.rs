//! The route table: every path the gateway answers, with its method, in one
//! place. Dispatch, `405 Allow`, the metrics' endpoint label and the rules for
//! what is audited and rate-limited all read it.

use http::Method;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Login,
    Refresh,
    Logout,
    OidcLogin,
    OidcCallback,
    Models,
    Workflows,
    WorkflowRun,
    Health,
    Backends,
    Metrics,
    OpenApi,
}

/// Every route: method, path (`{name}` matches one path segment) and endpoint.
const ROUTES: [(Method, &str, Endpoint); 13] = [
    (Method::POST, "/v1/chat/completions", Endpoint::Chat),
    (Method::POST, "/v1/auth/login", Endpoint::Login),
    (Method::POST, "/v1/auth/refresh", Endpoint::Refresh),
    (Method::POST, "/v1/auth/logout", Endpoint::Logout),
    (Method::GET, "/v1/auth/oidc/login", Endpoint::OidcLogin),
    (
        Method::GET,
        "/v1/auth/oidc/callback",
        Endpoint::OidcCallback,
    ),
    (Method::GET, "/v1/models", Endpoint::Models),
    (Method::GET, "/v1/workflows", Endpoint::Workflows),
    (Method::POST, WORKFLOW_RUNS, Endpoint::WorkflowRun),
    (Method::GET, "/healthz", Endpoint::Health),
    (Method::GET, "/v1/admin/backends", Endpoint::Backends),
    (Method::GET, "/metrics", Endpoint::Metrics),
    (Method::GET, "/openapi.json", Endpoint::OpenApi),
];

/// Every route: method, path pattern and endpoint (for the API description's
/// tests).
#[cfg(test)]
pub(crate) fn all() -> &'static [(Method, &'static str, Endpoint)] {
    &ROUTES
}

const WORKFLOW_RUNS: &str = "/v1/workflows/{name}/runs";

/// A path looked up in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// The endpoint, and the `{name}` the path gave (for a workflow run).
    Found(Endpoint, Option<&'a str>),
    /// The path exists for another method.
    WrongMethod(Endpoint, &'static str),
    /// No such path.
    NotFound,
}

impl<'a> Route<'a> {
    /// The route of `method` `path`. `/metrics` exists on the main port only when
    /// `metrics_on_main` says so.
    pub(crate) fn of(method: &Method, path: &'a str, metrics_on_main: bool) -> Self {
        let mut found = Route::NotFound;
        for (route_method, pattern, endpoint) in &ROUTES {
            if *endpoint == Endpoint::Metrics && !metrics_on_main {
                continue;
            }
            let Some(name) = matches(pattern, path) else {
                continue;
            };
            if route_method == method {
                return Route::Found(*endpoint, name);
            }
            found = Route::WrongMethod(*endpoint, route_method.as_str());
        }
        found
    }

    /// The endpoint whatever the method, if the path is known.
    pub(crate) fn endpoint(self) -> Option<Endpoint> {
        match self {
            Route::Found(endpoint, _) | Route::WrongMethod(endpoint, _) => Some(endpoint),
            Route::NotFound => None,
        }
    }
}

impl Endpoint {
    /// Health checks and metrics scrapes come every few seconds from load balancers
    /// and monitoring: they are neither audited nor rate-limited. (Everything else
    /// is both, the API description included.)
    pub(crate) fn is_monitoring(self) -> bool {
        matches!(self, Endpoint::Health | Endpoint::Metrics)
    }

    /// Whether the caller must present a bearer token first (logout checks its own:
    /// a refresh token in the body will do there).
    pub(crate) fn needs_bearer(self) -> bool {
        matches!(
            self,
            Endpoint::Chat
                | Endpoint::Models
                | Endpoint::Workflows
                | Endpoint::WorkflowRun
                | Endpoint::Backends
        )
    }
}

/// The metrics label of a recorded path: its route's pattern, or `other`. (A
/// health check or scrape is recorded only where it is not served: `other`.)
pub(crate) fn label_of(path: &str) -> &'static str {
    ROUTES
        .iter()
        .filter(|(_, _, endpoint)| !endpoint.is_monitoring())
        .find(|(_, pattern, _)| matches(pattern, path).is_some())
        .map_or("other", |(_, pattern, _)| pattern)
}

/// The path of workflow `name`'s runs.
pub(crate) fn workflow_runs_path(name: &str) -> String {
    WORKFLOW_RUNS.replace("{name}", name)
}

/// `Some(name)` when `path` matches `pattern` (`Some(None)` without a `{name}`).
fn matches<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let Some((prefix, suffix)) = pattern.split_once("{name}") else {
        return (pattern == path).then_some(None);
    };
    let name = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!name.is_empty() && !name.contains('/')).then_some(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_methods_and_names() {
        assert_eq!(
            Route::of(&Method::POST, "/v1/chat/completions", false),
            Route::Found(Endpoint::Chat, None)
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/chat/completions", false),
            Route::WrongMethod(Endpoint::Chat, "POST")
        );
        assert_eq!(
            Route::of(&Method::POST, "/v1/workflows/discharge_summary/runs", false),
            Route::Found(Endpoint::WorkflowRun, Some("discharge_summary"))
        );
        for path in ["/v1/workflows//runs", "/v1/workflows/a/b/runs", "/nope"] {
            assert_eq!(Route::of(&Method::POST, path, false), Route::NotFound);
        }
        assert_eq!(Route::of(&Method::GET, "/metrics", false), Route::NotFound);
        assert_eq!(
            Route::of(&Method::GET, "/metrics", true),
            Route::Found(Endpoint::Metrics, None)
        );
        assert_eq!(
            label_of("/v1/workflows/x/runs"),
            "/v1/workflows/{name}/runs"
        );
        assert_eq!(label_of("/v1/secret-path"), "other");
        assert_eq!(label_of("/metrics"), "other");
        assert_eq!(workflow_runs_path("x"), "/v1/workflows/x/runs");
    }
}
