//! The HTTP endpoint of a clickpath process: `/healthz`, `/readyz`, `/metrics` and the per-user queries
//! of [`crate::http_query`] (`docs/openapi.yaml` describes them all).
//!
//! With a bearer token configured ([`router_with_auth`], [`serve_with_auth`]), every request except the
//! health probes must carry `Authorization: Bearer <token>`. The probes stay open because kubelets and
//! load balancers call them without credentials, and they reveal nothing but up/ready.

use crate::health::Health;
use crate::metrics::Metrics;
use crate::query::Queries;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Paths served without a bearer token (liveness and readiness probes).
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Why a bearer token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read bearer token file {path}: {source}")]
    Read {
        /// The file named by the configuration.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token file holds nothing but whitespace; refusing to run with an empty token rather than
    /// silently serving without authentication.
    #[error("bearer token file {path} is empty")]
    Empty {
        /// The file named by the configuration.
        path: String,
    },
}

/// Reads a bearer token from `path` (surrounding whitespace and the trailing newline removed). An empty
/// `path` means no authentication and gives `Ok(None)`.
pub fn read_bearer_token(path: &str) -> Result<Option<String>, TokenError> {
    if path.trim().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(Path::new(path)).map_err(|source| TokenError::Read {
        path: path.to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_string(),
        });
    }
    Ok(Some(token.to_string()))
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Metrics,
}

/// The router, so that tests and embedding programs can mount or call it directly (no authentication).
pub fn router(health: Health, metrics: Metrics) -> Router {
    router_with_auth(health, metrics, None)
}

/// The router; with `token`, every path except [`OPEN_PATHS`] (unknown paths included, so that
/// nothing can be probed without it) answers 401 unless the request carries `Authorization: Bearer
/// <token>`.
pub fn router_with_auth(health: Health, metrics: Metrics, token: Option<String>) -> Router {
    router_full(health, metrics, Queries::new(), token)
}

/// The whole API: health, metrics and the per-user queries of the stages in `queries`.
pub fn router_full(
    health: Health,
    metrics: Metrics,
    queries: Queries,
    token: Option<String>,
) -> Router {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
        .merge(crate::http_query::routes(queries));
    match token {
        Some(token) => app.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_bearer,
        )),
        None => app,
    }
}

async fn require_bearer(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) || bearer_matches(request.headers(), &token) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"clickpath\"")],
        "a bearer token is required\n",
    )
        .into_response()
}

/// True if the `Authorization` header is `Bearer <expected>` (scheme case-insensitive, RFC 6750).
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, presented)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(presented.trim(), expected)
}

/// Compares without returning early at the first differing byte, so the time taken does not reveal
/// how much of a guessed token was right (the length is not hidden).
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let code = if s.health.is_live() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, s.health.describe())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let code = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, s.health.describe())
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds `bind` and serves in the background; returns the bound address (useful with port 0).
pub async fn serve(bind: &str, health: Health, metrics: Metrics) -> anyhow::Result<SocketAddr> {
    serve_with_auth(bind, health, metrics, None).await
}

/// Like [`serve`], requiring `Authorization: Bearer <token>` on every path but the health probes when
/// `token` is given.
pub async fn serve_with_auth(
    bind: &str,
    health: Health,
    metrics: Metrics,
    token: Option<String>,
) -> anyhow::Result<SocketAddr> {
    serve_full(bind, health, metrics, Queries::new(), token).await
}

/// Serves the stages of `env` on `http.bind`, with the bearer token from `http.bearer_token_file` if set.
pub async fn serve_env(env: &crate::RunnerEnv) -> anyhow::Result<SocketAddr> {
    let token = read_bearer_token(&env.config.http.bearer_token_file)
        .map_err(|e| anyhow::anyhow!("http.bearer_token_file: {e}"))?;
    env.queries.set_group_prefix(&env.config.kafka.group_prefix);
    serve_full(
        &env.config.http.bind,
        env.health.clone(),
        env.metrics.clone(),
        env.queries.clone(),
        token,
    )
    .await
}

/// Like [`serve_with_auth`], with the per-user query routes of `queries`.
pub async fn serve_full(
    bind: &str,
    health: Health,
    metrics: Metrics,
    queries: Queries,
    token: Option<String>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind} (http.bind): {e}"))?;
    let addr = listener.local_addr()?;
    let auth = token.is_some();
    let app = router_full(health, metrics, queries, token);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped.");
        }
    });
    tracing::info!(%addr, bearer_auth = auth, "HTTP endpoint listening.");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Sends one HTTP/1.1 GET over a real socket and returns the status code. Blocking std I/O on the
    /// blocking pool: the runtime crate does not enable tokio's `io-util`.
    async fn get_status(addr: SocketAddr, path: &str, auth: Option<&str>) -> u16 {
        let auth_line = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth_line}Connection: close\r\n\r\n");
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        // "HTTP/1.1 200 OK"
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {response:?}"))
    }

    /// Serves a board with one stage that has joined its group, so both probes answer 200.
    async fn start(token: Option<&str>) -> SocketAddr {
        let health = Health::new();
        health.register("cleaning");
        health.set_assigned("cleaning", 1);
        serve_with_auth(
            "127.0.0.1:0",
            health,
            Metrics::new(),
            token.map(str::to_string),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn metrics_need_the_right_bearer_token() {
        let addr = start(Some("s3cret")).await;
        assert_eq!(get_status(addr, "/metrics", None).await, 401);
        assert_eq!(
            get_status(addr, "/metrics", Some("Bearer wrong!")).await,
            401
        );
        assert_eq!(
            get_status(addr, "/metrics", Some("Bearer s3cre")).await,
            401
        );
        assert_eq!(
            get_status(addr, "/metrics", Some("Basic s3cret")).await,
            401
        );
        assert_eq!(
            get_status(addr, "/metrics", Some("Bearer s3cret")).await,
            200
        );
        assert_eq!(
            get_status(addr, "/metrics", Some("bearer s3cret")).await,
            200
        );
        // Unknown paths are not revealed without the token.
        assert_eq!(get_status(addr, "/nope", None).await, 401);
        assert_eq!(get_status(addr, "/nope", Some("Bearer s3cret")).await, 404);
    }

    #[tokio::test]
    async fn user_queries_need_the_token_too() {
        let addr = start(Some("s3cret")).await;
        assert_eq!(get_status(addr, "/v1/users/alice", None).await, 401);
        assert_eq!(get_status(addr, "/v1/users/alice/path", None).await, 401);
        // With the token: no stage answers user queries in this process.
        assert_eq!(
            get_status(addr, "/v1/users/alice", Some("Bearer s3cret")).await,
            404
        );
        assert_eq!(
            get_status(addr, "/v1/users/%20", Some("Bearer s3cret")).await,
            400
        );
    }

    #[tokio::test]
    async fn health_probes_stay_open_with_a_token() {
        let addr = start(Some("s3cret")).await;
        assert_eq!(get_status(addr, "/healthz", None).await, 200);
        assert_eq!(get_status(addr, "/readyz", None).await, 200);
        assert_eq!(get_status(addr, "/readyz", Some("Bearer wrong")).await, 200);
    }

    #[tokio::test]
    async fn without_a_token_everything_is_open() {
        let addr = start(None).await;
        assert_eq!(get_status(addr, "/metrics", None).await, 200);
    }

    #[test]
    fn token_file_is_trimmed_and_empty_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\n").unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(read_bearer_token(p).unwrap().as_deref(), Some("abc123"));
        assert_eq!(read_bearer_token("").unwrap(), None);
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(
            read_bearer_token(p),
            Err(TokenError::Empty { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_bearer_token(missing.to_str().unwrap()),
            Err(TokenError::Read { .. })
        ));
    }
}
