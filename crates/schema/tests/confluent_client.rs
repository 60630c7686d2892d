//! `ConfluentRegistryClient` against a tiny canned HTTP server on 127.0.0.1.
#![cfg(feature = "registry-client")]

mod common;

use clickpath_schema::registry::ConfluentRegistryClient;
use clickpath_schema::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Routes = Arc<dyn Fn(&str, &str) -> (u16, String) + Send + Sync>;

/// One logged request: method, path, body.
type Log = Arc<Mutex<Vec<(String, String, String)>>>;

/// Serves up to 32 connections (one request each) from `routes`, then stops.
fn serve(routes: Routes) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let server_log = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(stream) = stream else { break };
            let _ = handle(stream, &routes, &server_log);
        }
    });
    (url, log)
}

fn handle(mut stream: TcpStream, routes: &Routes, log: &Log) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push((
        method.to_owned(),
        path.to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let (status, json) = routes(method, path);
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
}

fn shipped_click_schema() -> String {
    let r = EmbeddedRegistry::shipped();
    r.schema_text(r.latest_id(ClickEvent::FULL_NAME).unwrap())
        .unwrap()
        .to_owned()
}

fn not_found() -> (u16, String) {
    (
        404,
        r#"{"error_code":40403,"message":"Schema not found"}"#.into(),
    )
}

/// A registry that knows the ClickEvent schema as id 42.
fn click_registry() -> Routes {
    let schema = shipped_click_schema();
    Arc::new(move |method, path| match (method, path) {
        ("POST", "/subjects/io.clickpath.ClickEvent/versions") => (200, r#"{"id":42}"#.into()),
        ("GET", "/schemas/ids/42") => (200, serde_json::json!({ "schema": schema }).to_string()),
        ("GET", "/schemas/ids/500") => (500, r#"{"error_code":50001}"#.into()),
        ("GET", "/schemas/ids/77") => (200, "not json".into()),
        _ => not_found(),
    })
}

fn client(url: &str) -> Arc<ConfluentRegistryClient> {
    Arc::new(ConfluentRegistryClient::with_local(
        url,
        EmbeddedRegistry::shipped(),
        Duration::from_secs(5),
    ))
}

#[test]
fn registers_the_local_schema_then_encodes_and_decodes_with_the_remote_id() {
    let (url, log) = serve(click_registry());
    let codec = Codec::new(client(&url));
    let event = common::full_click();
    let bytes = codec.encode(&event).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
    assert_eq!(codec.decode::<ClickEvent>(&bytes).unwrap(), event);
    // Everything after the first round trip comes from the caches.
    codec
        .decode::<ClickEvent>(&codec.encode(&event).unwrap())
        .unwrap();

    let log = log.lock().unwrap();
    let calls: Vec<(&str, &str)> = log
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST", "/subjects/io.clickpath.ClickEvent/versions"),
            ("GET", "/schemas/ids/42")
        ]
    );
    let sent: serde_json::Value = serde_json::from_str(&log[0].2).unwrap();
    assert_eq!(
        sent["schema"].as_str(),
        Some(shipped_click_schema().as_str())
    );
}

#[test]
fn an_unknown_id_is_reported_and_briefly_remembered() {
    let (url, log) = serve(click_registry());
    let registry = client(&url);
    assert!(matches!(
        registry.schema(7),
        Err(RegistryError::UnknownId(7))
    ));
    let codec = Codec::new(registry);
    let err = codec.decode::<ClickEvent>(&[0, 0, 0, 0, 7, 0]).unwrap_err();
    assert!(matches!(err, CodecError::UnknownSchemaId(7)), "{err}");
    let gets = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p, _)| p == "/schemas/ids/7")
        .count();
    assert_eq!(
        gets, 1,
        "the second lookup must come from the negative cache"
    );
}

#[test]
fn server_errors_and_unreachable_registries_are_transient() {
    let (url, _log) = serve(click_registry());
    let err = client(&url).schema(500).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Transport(m) if m.contains("500")),
        "{err}"
    );
    assert!(CodecError::from(err).is_transient());

    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = Codec::new(client(&url))
        .encode(&common::full_click())
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.kind(), "registry");
}

#[test]
fn a_malformed_response_is_a_bad_response() {
    let (url, _log) = serve(click_registry());
    let err = client(&url).schema(77).unwrap_err();
    assert!(matches!(err, RegistryError::BadResponse(_)), "{err}");
}
