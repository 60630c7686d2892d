//! `clickpath report` as a user runs it: generated JSON lines in, HTML and JSON out; bad options
//! rejected with a message that says what is wrong.

use std::process::Command;

fn clickpath(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clickpath"))
        .args(args)
        .output()
        .expect("clickpath runs")
}

#[test]
fn report_from_generated_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let gen_out = clickpath(&["generate", "--out", d, "--sessions", "300", "--seed", "7"]);
    assert!(gen_out.status.success(), "{gen_out:?}");
    let events = format!("{d}/events.jsonl");
    let html = format!("{d}/report.html");
    let json = format!("{d}/analysis.json");
    let out = clickpath(&[
        "report",
        "--input",
        &events,
        "--out",
        &html,
        "--json",
        &json,
        "--steps",
        "PRODUCT_VIEW,ADD_TO_CART,BEGIN_CHECKOUT|PAYMENT_ATTEMPT,PURCHASE",
        "--order",
        "any-order",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("BEGIN_CHECKOUT|PAYMENT_ATTEMPT"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("<svg"));
    // Self-contained: nothing is loaded from elsewhere.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    let analysis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let uniques = analysis["funnel"]["overall"]["uniques"].as_array().unwrap();
    assert_eq!(uniques.len(), 4);
    assert_eq!(analysis["funnel"]["order"], "any_order");
    assert!(uniques[0].as_u64().unwrap() >= uniques[3].as_u64().unwrap());
}

#[test]
fn bad_options_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("r.html");
    let html = html.to_str().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../adapters/tests/fixtures/rees46/2019-Oct-sample.csv"
    );
    for (args, expect) in [
        (
            vec!["--steps", "PRODUCT_VIEW,CHECKOUT"],
            "cannot parse step",
        ),
        (vec!["--steps", "PRODUCT_VIEW"], "at least 2 steps"),
        (
            vec!["--steps", "PURCHASE,PURCHASE"],
            "steps must be disjoint",
        ),
        (vec!["--order", "sideways"], "unknown funnel order"),
        (vec!["--window-minutes", "0"], "must be positive"),
    ] {
        let mut all = vec!["report", "--format", "rees46", fixture, "--out", html];
        all.extend(args);
        let out = clickpath(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "{all:?}: {err}"
        );
    }
    let out = clickpath(&["report", "--out", html]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("say what to read"));
}
