//! The embedded registry: stable ids, every schema file shipped, and an index that refuses to
//! change a published schema.

use clickpath_schema::registry::fingerprint;
use clickpath_schema::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// Ids are written into every record on every topic: they must never change.
#[test]
fn published_ids_are_stable() {
    let r = EmbeddedRegistry::shipped();
    let pinned = [
        ("io.clickpath.ClickEvent", 1),
        ("io.clickpath.SessionSummary", 2),
        ("io.clickpath.FeatureVector", 3),
        ("io.clickpath.Prediction", 4),
        ("io.clickpath.FraudAlert", 5),
        ("io.clickpath.DeadLetter", 6),
        ("io.clickpath.FunnelAggregate", 8),
    ];
    for (subject, first_id) in pinned {
        let versions = r.versions(subject).unwrap();
        assert_eq!(versions[0], first_id, "{subject}");
        assert_eq!(r.subject_of(first_id), Some(subject));
    }
    assert_eq!(r.subjects().count(), pinned.len());
}

#[test]
fn codec_subjects_are_registered() {
    let c = Codec::embedded();
    let r = EmbeddedRegistry::shipped();
    let ids = [
        c.schema_id::<ClickEvent>().unwrap(),
        c.schema_id::<SessionSummary>().unwrap(),
        c.schema_id::<FeatureVector>().unwrap(),
        c.schema_id::<Prediction>().unwrap(),
        c.schema_id::<FraudAlert>().unwrap(),
        c.schema_id::<DeadLetter>().unwrap(),
    ];
    for id in ids {
        let subject = r.subject_of(id).unwrap();
        assert_eq!(r.latest_id(subject).unwrap(), id);
    }
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
}

fn avsc_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            avsc_files(&entry.path(), &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".avsc") {
            out.insert(format!("{prefix}{name}"));
        }
    }
}

/// Every `.avsc` on disk is named by `registry.json` and embedded (`shipped()` refuses index
/// entries that are not embedded and embedded files the index does not name).
#[test]
fn every_schema_file_is_registered_and_embedded() {
    let mut on_disk = BTreeSet::new();
    avsc_files(&schemas_dir(), "", &mut on_disk);
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(schemas_dir().join("registry.json")).unwrap(),
    )
    .unwrap();
    let named: BTreeSet<String> = index["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["versions"].as_array().unwrap().iter())
        .map(|v| v["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_disk, named);
    let shipped = EmbeddedRegistry::shipped();
    for subject in shipped.subjects() {
        for id in shipped.versions(subject).unwrap() {
            let text = shipped.schema_text(*id).unwrap();
            let on_disk_text = index["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["versions"].as_array().unwrap().iter())
                .find(|v| v["id"] == *id)
                .map(|v| std::fs::read_to_string(schemas_dir().join(v["file"].as_str().unwrap())))
                .unwrap()
                .unwrap();
            assert_eq!(text, on_disk_text, "embedded copy of id {id} is stale");
        }
    }
}

const A_V1: &str =
    r#"{"type":"record","name":"A","namespace":"t","fields":[{"name":"x","type":"int"}]}"#;
const A_V2: &str = r#"{"type":"record","name":"A","namespace":"t","fields":[{"name":"x","type":"int"},{"name":"y","type":"int","default":0}]}"#;

fn fp(json: &str) -> String {
    fingerprint(&apache_avro::Schema::parse_str(json).unwrap())
}

fn index(versions: &[(u32, u32, &str, &str)]) -> String {
    let versions: Vec<_> = versions
        .iter()
        .map(|(version, id, file, fingerprint)| {
            serde_json::json!({"version": version, "id": id, "file": file, "fingerprint": fingerprint})
        })
        .collect();
    serde_json::json!({"subjects": [{"subject": "t.A", "versions": versions}]}).to_string()
}

#[test]
fn an_index_with_history_serves_every_version() {
    let idx = index(&[
        (1, 7, "history/a.v1.avsc", &fp(A_V1)),
        (2, 9, "a.avsc", &fp(A_V2)),
    ]);
    let r = EmbeddedRegistry::load(&idx, &[("history/a.v1.avsc", A_V1), ("a.avsc", A_V2)]).unwrap();
    assert_eq!(r.versions("t.A"), Some(&[7, 9][..]));
    assert_eq!(r.latest_id("t.A").unwrap(), 9);
    assert_eq!(r.schema_text(7), Some(A_V1));
    assert!(r.schema(7).is_ok());
    assert!(matches!(r.schema(8), Err(RegistryError::UnknownId(8))));
    assert!(matches!(
        r.latest_id("t.B"),
        Err(RegistryError::UnknownSubject(s)) if s == "t.B"
    ));
}

fn load_err(idx: &str, files: &[(&str, &str)]) -> String {
    match EmbeddedRegistry::load(idx, files) {
        Ok(_) => panic!("index was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn editing_a_published_schema_in_place_is_refused() {
    let idx = index(&[(1, 7, "a.avsc", &fp(A_V1))]);
    let err = load_err(&idx, &[("a.avsc", A_V2)]);
    assert!(err.contains("never change"), "{err}");
    // Docs do not change the wire format, so they may be edited.
    let documented = A_V1.replace(r#""name":"A","#, r#""name":"A","doc":"an A","#);
    assert!(EmbeddedRegistry::load(&idx, &[("a.avsc", &documented)]).is_ok());
}

#[test]
fn broken_indexes_are_refused() {
    let f1 = fp(A_V1);
    let f2 = fp(A_V2);
    let both = [("a1.avsc", A_V1), ("a2.avsc", A_V2)];
    let dup = index(&[(1, 7, "a1.avsc", &f1), (2, 7, "a2.avsc", &f2)]);
    assert!(load_err(&dup, &both).contains("used twice"));
    let gap = index(&[(1, 7, "a1.avsc", &f1), (3, 8, "a2.avsc", &f2)]);
    assert!(load_err(&gap, &both).contains("version 3"));
    let missing = index(&[(1, 7, "nope.avsc", &f1)]);
    assert!(load_err(&missing, &both).contains("nope.avsc"));
    let unused = index(&[(1, 7, "a1.avsc", &f1)]);
    assert!(load_err(&unused, &both).contains("a2.avsc"));
    let misnamed = index(&[(1, 7, "b.avsc", "x")]);
    let b = A_V1.replace(r#""name":"A""#, r#""name":"B""#);
    assert!(load_err(&misnamed, &[("b.avsc", &b)]).contains("subject"));
    assert!(load_err("{}", &both).contains("registry.json"));
    let invalid = index(&[(1, 7, "a1.avsc", &f1)]);
    assert!(load_err(&invalid, &[("a1.avsc", "{\"type\":\"nope\"}")]).contains("not valid Avro"));
}
