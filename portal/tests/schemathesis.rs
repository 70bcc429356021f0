//! The portal against its own OpenAPI document, checked by an independent fuzzer: the
//! schemathesis CLI (PyPI, installed by scripts/services/schemathesis.sh) reads
//! /openapi.json, sends generated valid and invalid requests with a valid bearer token to
//! every JSON API and operations endpoint, runs every check, and fails on any 5xx and any
//! response the document does not describe (status, content type, headers, body schema).
//!
//! The run is bounded (a fixed number of examples per operation and phase, a few hundred
//! requests, about ten seconds) and reproducible: deterministic generation, schemathesis'
//! derandomized mode, sends the same requests every run and keeps no examples between runs.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::process::Command;

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "20";
/// Far above a normal run, so only a hung run hits it.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// What a JSON schema cannot say, told to schemathesis: a push subscription's endpoint must
/// be on a known push service and `p256dh` a point on the P-256 curve, so a subscription
/// that matches the schema is still refused with 422 (those refusals have their own test,
/// api.rs `push_subscriptions`). Everything else keeps schemathesis' defaults.
const CONFIG: &str = r#"
[[operations]]
include-path = "/api/push-subscriptions"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"#;

/// The P-256 base point, uncompressed, in base64url: a public key on the curve.
const P256_G: &str =
    "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

const INSTALL: &str = "run scripts/services/schemathesis.sh to install it";

/// `python3 -m schemathesis.cli`: works wherever pip put the `schemathesis` script (a
/// virtualenv, ~/.local/bin, a pyenv shim), or did not put it on PATH at all.
fn schemathesis() -> Command {
    let mut c = Command::new("python3");
    c.args(["-m", "schemathesis.cli"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Fails (never skips) when the CLI is missing or is not major version 4, whose flags the
/// run below uses.
async fn check_installed() {
    let out = schemathesis()
        .arg("--version")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis is not installed: {INSTALL}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("version 4."),
        "schemathesis 4.x is needed, found {}: {INSTALL}",
        text.trim()
    );
}

/// target/test-artifacts/schemathesis: the JUnit report and every request and response (HAR)
/// of the last run, to read a failure at leisure.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("test-artifacts").join("schemathesis");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// "METHOD /path" of every operation the run must cover: all but the pages (HTML for
/// browsers, tested by pages.rs and browser.rs) and the document itself, which schemathesis
/// leaves out when it loads the document from that operation (api.rs
/// `every_route_is_in_the_openapi_document` checks it is served as is).
fn expected_operations() -> BTreeSet<String> {
    let spec = oshirase_portal::openapi();
    let mut ops = BTreeSet::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let tags = op["tags"].as_array().cloned().unwrap_or_default();
            if path != "/openapi.json" && !tags.iter().any(|t| t == "pages") {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops
}

/// The test case names in a JUnit report: "METHOD /path", and "Stateful tests".
fn tested_operations(junit: &str) -> BTreeSet<String> {
    junit
        .split("<testcase name=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document() {
    check_installed().await;
    let app = spawn_app("sqlite").await;
    // A guardian with a notice, an open draft and a push subscription, so that the lists
    // schemathesis reads back have items to check against their schemas.
    let token = app.token("R10003");
    let subscription = serde_json::json!({
        "endpoint": "https://fcm.googleapis.com/fcm/send/schemathesis",
        "keys": { "p256dh": P256_G, "auth": "BQUFBQUFBQUFBQUFBQUFBQ" },
    });
    let r = app
        .post("R10003", "/api/push-subscriptions", Some(subscription))
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Its own working directory: no schemathesis.toml from elsewhere is read, and nothing
    // it writes lands in the tree.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("schemathesis.toml"), CONFIG).unwrap();
    let reports = artifacts();
    let junit = reports.join("junit.xml");
    let _ = std::fs::remove_file(&junit);
    let mut cmd = schemathesis();
    cmd.args(["--config-file", "schemathesis.toml", "run"])
        .arg(format!("{}/openapi.json", app.base))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .arg("--generation-deterministic")
        .args(["--exclude-tag", "pages"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .arg("--no-color")
        .args(["--report", "junit,har"])
        .arg("--report-junit-path")
        .arg(&junit)
        .arg("--report-har-path")
        .arg(reports.join("har.json"))
        .current_dir(cwd.path());
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("cannot start schemathesis ({e}): {INSTALL}"));
    let took = started.elapsed();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis failed (exit {:?}) after {took:?}; requests and responses in {}:\n{output}",
        out.status.code(),
        reports.join("har.json").display()
    );
    // A run that loaded nothing, or whose filters left nothing, passes too: it must have
    // tested every operation.
    let report = std::fs::read_to_string(&junit)
        .unwrap_or_else(|e| panic!("no JUnit report at {} ({e}):\n{output}", junit.display()));
    let tested = tested_operations(&report);
    let untested: Vec<_> = expected_operations().difference(&tested).cloned().collect();
    assert!(
        untested.is_empty(),
        "schemathesis did not test {untested:?}:\n{output}"
    );
    eprintln!("schemathesis passed in {took:?}:\n{output}");
    app.shutdown().await;
}
