//! Bad rows yield an error item naming their line, and reading goes on.

use clickpath_adapters::{AdapterError, Format, from_reader, read};
use clickpath_schema::{ClickEvent, EventType};
use std::io::Write;

fn split(items: Vec<Result<ClickEvent, AdapterError>>) -> (Vec<ClickEvent>, Vec<AdapterError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for i in items {
        match i {
            Ok(e) => ok.push(e),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

fn from_bytes(format: Format, bytes: &[u8]) -> (Vec<ClickEvent>, Vec<AdapterError>) {
    let events = from_reader(format, std::io::Cursor::new(bytes.to_vec()), "t").unwrap();
    split(events.collect())
}

#[test]
fn rees46_bad_rows_in_a_temp_file() {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    let rows = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
        2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.50,10,s1\n\
        2019-13-01 00:00:00 UTC,view,1,2,a.b,x,1.50,10,s1\n\
        2019-10-01 00:00:01 UTC,teleport,1,2,a.b,x,1.50,10,s1\n\
        2019-10-01 00:00:02 UTC,view\n\
        2019-10-01 00:00:03 UTC,cart,1,2,,x,abc,10,s1\n\
        2019-10-01 00:00:04 UTC,purchase,3,2,,,9.99,11,s2\n";
    file.write_all(rows.as_bytes()).unwrap();
    let (ok, bad) = split(read(Format::Rees46, file.path()).unwrap().collect());
    let lines: Vec<u64> = bad.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 5, 6], "{bad:?}");
    assert!(bad[0].reason.contains("does not exist"), "{}", bad[0]);
    assert!(bad[1].reason.contains("teleport"));
    assert!(bad[3].reason.contains("price"));
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].category.as_deref(), Some("a/b"));
    assert_eq!(ok[1].event_type, EventType::Purchase);
    assert_eq!(ok[1].order_value, Some(9.99));
    let stem = file
        .path()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(ok[1].event_id, format!("rees46:{stem}:7"));
}

#[test]
fn invalid_utf8_and_quoting_do_not_stop_the_reader() {
    let mut bytes = b"timestamp,visitorid,event,itemid,transactionid\n1,7,view,9,\n2,".to_vec();
    bytes.extend_from_slice(&[0xFF, 0xFE]);
    bytes.extend_from_slice(b",view,9,\n\n3,\"8\",addtocart,9,\n");
    let (ok, bad) = from_bytes(Format::Retailrocket, &bytes);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].line, 3);
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[1].user_id, "8");
    assert_eq!(ok[1].event_id, "retailrocket:t:5");
}

#[test]
fn otto_bad_line_and_bad_event() {
    let text = concat!(
        r#"{"session":1,"events":[{"aid":5,"ts":1659304800025,"type":"clicks"}]}"#,
        "\n{not json}\n",
        r#"{"session":2,"events":[{"aid":6,"ts":1659304800,"type":"carts"},{"aid":7,"ts":1659304801,"type":"likes"},{"aid":6,"ts":1659304900,"type":"orders"}]}"#,
        "\n"
    );
    let (ok, bad) = from_bytes(Format::Otto, text.as_bytes());
    let lines: Vec<u64> = bad.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3], "{bad:?}");
    assert!(bad[1].reason.contains("likes"));
    assert_eq!(ok.len(), 3);
    assert_eq!(
        ok[1].event_time, 1_659_304_800_000,
        "second timestamps become ms"
    );
    assert_eq!(ok[2].event_id, "otto:t:3:2");
    assert_eq!(ok[2].order_id.as_deref(), Some("2:1659304900000"));
}

#[test]
fn diginetica_variants_are_told_apart_by_header() {
    let views = b"sessionId;userId;itemId;timeframe;eventdate\n5;NA;100;1000;2016-01-02\n5;NA;x;zz;2016-01-02\n6;9;101;0;2016-01-03\n";
    let (ok, bad) = from_bytes(Format::Diginetica, views);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line, 3);
    assert_eq!(ok.len(), 2);
    assert!(ok.iter().all(|e| e.event_type == EventType::ProductView));
    assert_eq!(ok[0].user_id, "session:5");
    assert_eq!(ok[1].user_id, "9");

    let purchases =
        b"sessionId;userId;timeframe;eventdate;ordernumber;itemId\n5;;1000;2016-01-02;77;100\n";
    let (ok, bad) = from_bytes(Format::Diginetica, purchases);
    assert!(bad.is_empty());
    assert_eq!(ok[0].event_type, EventType::Purchase);
    assert_eq!(ok[0].order_id.as_deref(), Some("77"));
    assert_eq!(ok[0].item_id.as_deref(), Some("100"));
    assert_eq!(ok[0].event_time, 1_451_692_800_000 + 1000);

    let joined = b"session_id,user_id,timeframe,eventdate,event_type,item_id,ordernumber\n\
        5,,10,2016-01-02,view,100,\n5,,20,2016-01-02,purchase,100,77\n5,,30,2016-01-02,refund,100,\n";
    let (ok, bad) = from_bytes(Format::Diginetica, joined);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].line, 4);
    assert_eq!(
        ok.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        [EventType::ProductView, EventType::Purchase]
    );
}

#[test]
fn unusable_files_fail_up_front() {
    let err = read(Format::Otto, "/nonexistent/file.jsonl").err().unwrap();
    assert_eq!(err.line, 0);
    let err = from_reader(
        Format::Rees46,
        std::io::Cursor::new(b"a,b,c\n1,2,3\n".to_vec()),
        "t",
    )
    .err()
    .unwrap();
    assert_eq!(err.line, 0);
    assert!(err.reason.contains("event_time"), "{err}");
    assert!(from_reader(Format::Diginetica, std::io::Cursor::new(Vec::new()), "t").is_err());
}
