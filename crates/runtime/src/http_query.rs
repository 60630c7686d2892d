//! Per-user queries, answered from what the stages of this process publish ([`Queries`]).
//!
//! - `GET /v1/users/{id}/path`: the user's purchase-path state from the sessionizer. 200 with the view
//!   when this instance owns the user; 404 when it owns the user's partition but has never seen the
//!   user; 421 (Misdirected Request) with the owning partition when another instance owns it; 503
//!   before partitions are assigned.
//! - `GET /v1/users/{id}`: the user's path state (`path`, from the sessionizer), latest prediction
//!   (`prediction`, from the scorer) and open alerts (`alerts`, from the detector), each present when
//!   that stage runs in this process and owns the user's partition. `sources` says, per stage, whether
//!   it answered here, and otherwise which partition (and consumer group) owns the user. 200 when at
//!   least one stage knows the user here; else 421 when another instance owns the user for some stage,
//!   404 when the owning stages here have never seen the user, 503 before partitions are assigned.
//!
//! Both answer 400 for an id that cannot be a user id. Errors are JSON: `{"error": "...", ...}`.
//! `docs/openapi.yaml` describes every route.

use crate::query::{Lookup, Queries, USER_PARTS};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

/// Longest accepted user id, in bytes (the cleaning stage's default field limit).
pub const MAX_USER_ID_BYTES: usize = 1024;

/// The query routes, to merge into the process's router.
pub fn routes(queries: Queries) -> Router {
    Router::new()
        .route("/v1/users/{id}", get(user))
        .route("/v1/users/{id}/path", get(user_path))
        .with_state(queries)
}

fn error(code: StatusCode, message: &str, extra: Value) -> Response {
    let mut body = json!({ "error": message });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    (code, Json(body)).into_response()
}

/// The 400 answer when `id` cannot be a user id.
fn bad_id(id: &str) -> Option<Response> {
    if id.trim().is_empty() || id.len() > MAX_USER_ID_BYTES || id.chars().any(char::is_control) {
        return Some(error(
            StatusCode::BAD_REQUEST,
            &format!(
                "not a user id: must be 1 to {MAX_USER_ID_BYTES} bytes, not only spaces, without control characters"
            ),
            json!({}),
        ));
    }
    None
}

async fn user_path(State(queries): State<Queries>, Path(id): Path<String>) -> Response {
    if let Some(bad) = bad_id(&id) {
        return bad;
    }
    let Some(store) = queries.get("sessionizer") else {
        return error(
            StatusCode::NOT_FOUND,
            "no sessionizer runs in this process",
            json!({}),
        );
    };
    let group = queries.consumer_group("sessionizer");
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
            json!({ "partition": partition, "local": false, "consumer_group": group }),
        ),
        Lookup::NotReady => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no partitions assigned yet",
            json!({}),
        ),
    }
}

/// What one stage said about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The stage here has state for the user.
    Local,
    /// The stage here owns the partition and has no state for the user.
    Unknown,
    /// Another instance of the stage owns the partition.
    Remote,
    /// The stage here has no partitions yet.
    NotReady,
    /// The stage does not run in this process.
    NotRunning,
}

impl Answer {
    fn as_str(self) -> &'static str {
        match self {
            Answer::Local => "local",
            Answer::Unknown => "unknown",
            Answer::Remote => "remote",
            Answer::NotReady => "not_ready",
            Answer::NotRunning => "not_running",
        }
    }
}

async fn user(State(queries): State<Queries>, Path(id): Path<String>) -> Response {
    if let Some(bad) = bad_id(&id) {
        return bad;
    }
    let mut body = Map::new();
    body.insert("user_id".into(), Value::String(id.clone()));
    let mut sources = Map::new();
    let mut answers = Vec::new();
    let mut owning_partition = None;
    for (stage, part) in USER_PARTS {
        let (answer, partition) = match queries.get(stage).map(|s| s.lookup(&id)) {
            None => (Answer::NotRunning, None),
            Some(Lookup::NotReady) => (Answer::NotReady, None),
            Some(Lookup::Remote { partition }) => (Answer::Remote, Some(partition)),
            Some(Lookup::Unknown { partition }) => {
                // The owner has nothing: no path, no prediction yet, no open alert.
                let empty = if part == "alerts" {
                    json!([])
                } else {
                    Value::Null
                };
                body.insert(part.into(), empty);
                (Answer::Unknown, Some(partition))
            }
            Some(Lookup::Local(view)) => {
                body.insert(part.into(), view);
                (Answer::Local, partition_of(&queries, stage, &id))
            }
        };
        let mut source = Map::new();
        source.insert("state".into(), answer.as_str().into());
        if let Some(p) = partition {
            source.insert("partition".into(), p.into());
            owning_partition.get_or_insert(p);
        }
        if matches!(answer, Answer::Remote | Answer::Unknown | Answer::Local)
            && let Some(g) = queries.consumer_group(stage)
        {
            source.insert("consumer_group".into(), g.into());
        }
        sources.insert(stage.into(), Value::Object(source));
        answers.push(answer);
    }
    let has = |a: Answer| answers.contains(&a);
    let code = if has(Answer::Local) {
        StatusCode::OK
    } else if has(Answer::Remote) {
        StatusCode::MISDIRECTED_REQUEST
    } else if has(Answer::Unknown) {
        StatusCode::NOT_FOUND
    } else if has(Answer::NotReady) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        return error(
            StatusCode::NOT_FOUND,
            "none of sessionizer, scorer, detector runs in this process",
            json!({ "sources": sources }),
        );
    };
    if code != StatusCode::OK {
        let message = match code {
            StatusCode::MISDIRECTED_REQUEST => {
                "another instance owns this user's partition; ask the instance that owns it (see sources)"
            }
            StatusCode::NOT_FOUND => "unknown user",
            _ => "no partitions assigned yet",
        };
        let mut extra = json!({ "sources": sources });
        if let Some(p) = owning_partition {
            extra["partition"] = p.into();
        }
        return error(code, message, extra);
    }
    body.insert("sources".into(), Value::Object(sources));
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

/// The partition of a user that `stage` owns here (for `sources`).
fn partition_of(queries: &Queries, stage: &str, id: &str) -> Option<i32> {
    queries.get(stage).and_then(|s| s.partition_of(id))
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

    /// Two users of partition `p` and one of another partition, out of 3.
    fn users_of(p: i32) -> (String, String, String) {
        let mut same = (0..1000)
            .map(|i| format!("u{i}"))
            .filter(|u| partition_for_key(u.as_bytes(), 3) == p);
        let other = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| partition_for_key(u.as_bytes(), 3) != p)
            .unwrap();
        (same.next().unwrap(), same.next().unwrap(), other)
    }

    #[tokio::test]
    async fn user_combines_the_stages_of_this_process() {
        let queries = Queries::new();
        queries.set_group_prefix("cp");
        let sessions = QueryStore::new();
        let scores = QueryStore::new();
        queries.register("sessionizer", sessions.clone());
        queries.register("scorer", scores.clone());
        let app = routes(queries);

        let (code, body) = get_status(app.clone(), "/v1/users/u1").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["sources"]["detector"]["state"], "not_running");

        let (known, unseen, other) = users_of(1);
        for s in [&sessions, &scores] {
            s.set_assignment(&BTreeSet::from([1]), 3);
        }
        sessions.publish(&known, json!({"lifetime_sessions": 2}));
        scores.publish(&known, json!({"purchase_probability": 0.25}));
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{known}")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], known.as_str());
        assert_eq!(body["path"]["lifetime_sessions"], 2);
        assert_eq!(body["prediction"]["purchase_probability"], 0.25);
        assert!(body.get("alerts").is_none(), "no detector here: {body}");
        assert_eq!(body["sources"]["sessionizer"]["state"], "local");
        assert_eq!(body["sources"]["sessionizer"]["partition"], 1);
        assert_eq!(body["sources"]["scorer"]["consumer_group"], "cp.scorer");
        assert_eq!(body["sources"]["detector"]["state"], "not_running");

        // Known to the sessionizer only: the scorer owns the user but has no prediction yet.
        scores.remove(&known);
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{known}")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["prediction"], Value::Null);
        assert_eq!(body["sources"]["scorer"]["state"], "unknown");

        let (code, body) = get_status(app.clone(), &format!("/v1/users/{unseen}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"], "unknown user");
        assert_eq!(body["partition"], 1);

        let (code, body) = get_status(app.clone(), &format!("/v1/users/{other}")).await;
        assert_eq!(code, StatusCode::MISDIRECTED_REQUEST, "{body}");
        let p = partition_for_key(other.as_bytes(), 3);
        assert_eq!(body["partition"], p);
        assert_eq!(body["sources"]["sessionizer"]["state"], "remote");
        assert_eq!(
            body["sources"]["sessionizer"]["consumer_group"],
            "cp.sessionizer"
        );
        assert!(body["error"].as_str().unwrap().contains("another instance"));
    }

    #[tokio::test]
    async fn user_alerts_are_an_empty_list_when_the_detector_has_none() {
        let queries = Queries::new();
        let alerts = QueryStore::new();
        let sessions = QueryStore::new();
        queries.register("detector", alerts.clone());
        queries.register("sessionizer", sessions.clone());
        let app = routes(queries);
        let (known, _, other) = users_of(0);
        alerts.set_assignment(&BTreeSet::from([0]), 3);
        // The sessionizer here owns other partitions: the path is asked elsewhere.
        sessions.set_assignment(&BTreeSet::from([1, 2]), 3);
        alerts.publish(&known, json!([{"alert_type": "VELOCITY"}]));
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{known}")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["alerts"][0]["alert_type"], "VELOCITY");
        assert!(body.get("path").is_none(), "{body}");
        assert_eq!(body["sources"]["sessionizer"]["state"], "remote");
        assert_eq!(body["sources"]["sessionizer"]["partition"], 0);

        alerts.remove(&known);
        // Owned here by the detector without alerts, by another sessionizer instance: ask that one.
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{known}")).await;
        assert_eq!(code, StatusCode::MISDIRECTED_REQUEST, "{body}");
        assert_eq!(body["sources"]["detector"]["state"], "unknown");

        // A user the sessionizer here owns and nobody has seen.
        let p = partition_for_key(other.as_bytes(), 3);
        alerts.set_assignment(&BTreeSet::from([0, 1, 2]), 3);
        sessions.set_assignment(&BTreeSet::from([0, 1, 2]), 3);
        let (code, body) = get_status(app.clone(), &format!("/v1/users/{other}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["partition"], p);
    }

    #[tokio::test]
    async fn user_refuses_bad_ids_and_says_when_no_stage_answers() {
        let app = routes(Queries::new());
        for bad in [
            "%20%20".to_string(),
            "a%0Ab".to_string(),
            "x".repeat(MAX_USER_ID_BYTES + 1),
        ] {
            let (code, body) = get_status(app.clone(), &format!("/v1/users/{bad}")).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body["error"].as_str().unwrap().starts_with("not a user id"));
        }
        let (code, body) = get_status(app.clone(), "/v1/users/alice").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(
            body["error"].as_str().unwrap().contains("none of"),
            "{body}"
        );
        // A percent-encoded unicode id is a valid id.
        let (code, _) = get_status(app, "/v1/users/%C3%9F-user").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }
}
