//! `GET /v1/users/{id}/path`: a user's purchase-path state from the sessionizer running in this process.
//!
//! Answers 200 with the view when this instance owns the user; 404 when it owns the user's partition but has
//! never seen the user; 421 (Misdirected Request) with the owning partition when another instance owns it;
//! 503 before partitions are assigned; 400 for an id that cannot be a user id.

use crate::query::{Lookup, Queries};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// Longest accepted user id, in bytes (the cleaning stage's default field limit).
pub const MAX_USER_ID_BYTES: usize = 1024;

/// The query routes, to merge into the process's router.
pub fn routes(queries: Queries) -> Router {
    Router::new()
        .route("/v1/users/{id}/path", get(user_path))
        .with_state(queries)
}

fn error(code: StatusCode, message: &str, extra: serde_json::Value) -> Response {
    let mut body = json!({ "error": message });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    (code, Json(body)).into_response()
}

async fn user_path(State(queries): State<Queries>, Path(id): Path<String>) -> Response {
    if id.trim().is_empty() || id.len() > MAX_USER_ID_BYTES || id.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "not a user id: must be 1 to {MAX_USER_ID_BYTES} bytes without control characters"
            ),
            json!({}),
        );
    }
    let Some(store) = queries.get("sessionizer") else {
        return error(
            StatusCode::NOT_FOUND,
            "no sessionizer runs in this process",
            json!({}),
        );
    };
    match store.lookup(&id) {
        Lookup::Local(view) => (StatusCode::OK, Json(view)).into_response(),
        Lookup::Unknown { partition } => error(
            StatusCode::NOT_FOUND,
            "unknown user",
            json!({ "partition": partition, "local": true }),
        ),
        Lookup::Remote { partition } => error(
            StatusCode::MISDIRECTED_REQUEST,
            "another instance owns this user's partition",
            json!({ "partition": partition, "local": false }),
        ),
        Lookup::NotReady => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no partitions assigned yet",
            json!({}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{QueryStore, partition_for_key};
    use std::collections::BTreeSet;

    async fn get_status(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let res = app
            .oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn answers_local_unknown_remote_and_bad_ids() {
        let queries = Queries::new();
        let store = QueryStore::new();
        queries.register("sessionizer", store.clone());
        let app = routes(queries);
        assert_eq!(
            get_status(app.clone(), "/v1/users/alice/path").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let pa = partition_for_key(b"alice", 3);
        store.set_assignment(&BTreeSet::from([pa]), 3);
        store.publish("alice", json!({"lifetime_sessions": 3}));
        let (code, body) = get_status(app.clone(), "/v1/users/alice/path").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["lifetime_sessions"], 3);

        // A user of the same partition we have never seen, and one of another partition.
        let same = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| partition_for_key(u.as_bytes(), 3) == pa)
            .unwrap();
        let other = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| partition_for_key(u.as_bytes(), 3) != pa)
            .unwrap();
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{same}/path")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body["partition"], pa);
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{other}/path")).await;
        assert_eq!(code, StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(body["partition"], partition_for_key(other.as_bytes(), 3));
        assert_eq!(body["local"], false);

        let long = "x".repeat(MAX_USER_ID_BYTES + 1);
        assert_eq!(
            get_status(app.clone(), &format!("/v1/users/{long}/path"))
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get_status(app, "/v1/users/%20/path").await.0,
            StatusCode::BAD_REQUEST
        );
    }
}
