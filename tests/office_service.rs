//! The back office against the real service (docs/office.md): `oshirase run` on a SQLite
//! file with the portal and the agencies' API, a core system named in the configuration, and
//! the independent core system in Python (`exchange/tests/office_client.py`: `authlib`,
//! `requests`). Residents submit through the portal's API; the core system polls, takes in
//! one and returns it with a message, then reads the resident's portal as the resident and
//! finds the 差戻し there; the service is killed (SIGKILL) and started again; the returned
//! application, corrected and resubmitted, gets the next number: no gap, nothing twice.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oshirase_engine::calendar;
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_portal::PortalConfig;
use oshirase_store::Store;
use serde_json::{json, Value};

const JWT_SECRET: &str = "a test secret that is long enough for HS256";
const ISSUER: &str = "test-idp";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn oshirase(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oshirase"));
    c.args(args);
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn must(c: &mut Command) -> String {
    let out = c.output().expect("the binary runs");
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nothing listens on now: the agencies' API needs one it can name in its tokens'
/// audience before it starts, and the same one after the restart.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The running service and its log (the portal's address once it listens).
struct Service {
    child: Child,
    portal: String,
    log: Arc<Mutex<String>>,
}

impl Service {
    fn start(db: &str, config: &Path, keys: &Path, start: chrono::NaiveDate) -> Service {
        let whsk = std::fs::read_to_string(keys.join("webhook-key")).unwrap();
        let mut child = oshirase(&["run", "--db", db, "--start", &start.to_string()])
            .arg("--config")
            .arg(config)
            .env("TEST_JWT_SECRET", JWT_SECRET)
            .env("TEST_WEBHOOK_KEY", whsk.trim())
            .env("OSHIRASE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let all = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("portal listening") {
                    if let Some(a) = line.split("addr=").nth(1) {
                        let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_owned());
                    }
                }
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let portal = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the portal never listened:\n{}", log.lock().unwrap()));
        Service {
            child,
            portal: format!("http://{portal}"),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown, nothing flushed but what was committed.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn watermark(db: &str) -> Option<chrono::NaiveDate> {
    rt().block_on(async {
        let store = Store::open(db).await.unwrap();
        let w = store.watermark().await.unwrap();
        store.close().await;
        w
    })
}

fn token(subject: &str) -> String {
    let config = PortalConfig::with_hs256_secret(JWT_SECRET).issuer(ISSUER);
    oshirase_portal::mint_token(
        &config,
        subject,
        SystemClock.now(),
        Duration::from_secs(3600),
    )
    .unwrap()
}

/// Submits the draft of `key` as `reader` through the portal's API: the HTTP status.
fn submit(portal: &str, reader: &str, key: &str, corrections: Value) -> u16 {
    rt().block_on(async {
        reqwest::Client::new()
            .post(format!(
                "{portal}/api/drafts/{}/submit",
                key.replace('/', "%2F")
            ))
            .bearer_auth(token(reader))
            .json(&json!({ "corrections": corrections }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// Runs the independent core system: its report.
fn core_system(
    api: &str,
    keys: &Path,
    after: i64,
    plan: Value,
    portal: Option<(&str, &str, &str)>,
) -> Value {
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(keys.join("client-jwks.json")).unwrap())
            .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let mut c = Command::new("python3");
    c.arg(root().join("exchange/tests/office_client.py"))
        .arg("--client=kikan")
        .arg(format!("--api={api}"))
        .arg(format!("--key={}", keys.join("client-key.pem").display()))
        .arg(format!("--kid={kid}"))
        .arg(format!("--now={}", SystemClock.now().timestamp()))
        .arg(format!("--after={after}"))
        .arg(format!("--plan={plan}"));
    if let Some((url, reader, notice)) = portal {
        c.arg(format!("--portal={url}"))
            .arg(format!("--resident-token={}", token(reader)))
            .arg(format!("--notice={notice}"));
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): run scripts/services/agency.sh"));
    assert!(
        out.status.success(),
        "office_client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn applications_keep_their_numbers_across_a_killed_service() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("office.sqlite").display());
    must(oshirase(&["ingest", "--db", &db]).arg(root().join("fixtures/town.jsonl")));
    let keys = dir.path().join("keys");
    must(oshirase(&["agency", "keys", "--dir"]).arg(&keys));
    must(oshirase(&["agency", "keys", "--client", "--dir"]).arg(&keys));
    // The core system answers every procedure of the catalogue.
    let catalogue = oshirase_engine::load_dir(&root().join("rules")).unwrap();
    let procedures: Vec<String> = catalogue
        .rules()
        .iter()
        .map(|r| r.id.as_str().to_owned())
        .collect();
    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let config = dir.path().join("oshirase.yaml");
    std::fs::write(
        &config,
        format!(
            "portal:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1\n  jwt: {{issuer: {ISSUER}, algorithm: HS256, secret_env: TEST_JWT_SECRET}}\n\
             exchange:\n  listen: 127.0.0.1:{api_port}\n  public_url: {api}\n  local_gov_code: \"133621\"\n  signing_key_pem: {signing}\n  webhook_key_env: TEST_WEBHOOK_KEY\n\
             \x20 agencies:\n    - id: kikan\n      name: テスト村 福祉総合システム\n      purposes: []\n      office_rules: [{procedures}]\n      client_jwks: {jwks}\n      dictionary_version: 2\n",
            signing = keys.join("signing-key.pem").display(),
            jwks = keys.join("client-jwks.json").display(),
            procedures = procedures.join(", "),
        ),
    )
    .unwrap();
    let today = SystemClock.today();
    let start = calendar::add_days(today, -365);
    let service = Service::start(&db, &config, &keys, start);
    let deadline = Instant::now() + Duration::from_secs(120);
    while watermark(&db).is_none_or(|w| w < calendar::day_before(today)) {
        assert!(Instant::now() < deadline, "no catch-up:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two residents submit what they were sent (a notice with a form, read in the portal).
    let rows = rt().block_on(async {
        let store = Store::open(&db).await.unwrap();
        let rows = store.outbox_rows(None).await.unwrap();
        store.close().await;
        rows
    });
    let mut submitted: Vec<(String, String)> = Vec::new();
    for r in rows.iter().filter(|r| r.channel == "portal") {
        if submitted.len() == 2 {
            break;
        }
        let key = r.decision_key.as_str().to_owned();
        if submitted.iter().any(|(_, k)| *k == key) {
            continue;
        }
        if submit(&service.portal, &r.recipient, &key, json!({})) == 200 {
            submitted.push((r.recipient.clone(), key));
        }
    }
    assert_eq!(
        submitted.len(),
        2,
        "a year of the town gives two forms to submit"
    );
    let (reader, returned) = submitted[0].clone();
    let msg = "添付書類を確認できませんでした。再度提出してください。";
    let report = core_system(
        &api,
        &keys,
        0,
        json!({"1": [["received"], ["returned", msg]]}),
        Some((&service.portal, &reader, &returned)),
    );
    assert_eq!(report["seqs"], json!([1, 2]), "{report}");
    assert_eq!(report["next_after"], 2);
    let https: Vec<i64> = report["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http"].as_i64().unwrap())
        .collect();
    assert_eq!(https, vec![200, 200], "{report}");
    // The resident's portal, read by the core system with the resident's token.
    assert_eq!(report["portal"]["status"], "returned", "{report}");
    assert_eq!(report["portal"]["message"], msg, "{report}");
    service.kill();
    // Started again: the returned application, resubmitted, is number 3.
    let service = Service::start(&db, &config, &keys, start);
    assert_eq!(
        submit(&service.portal, &reader, &returned, json!({})),
        200,
        "{}",
        service.log()
    );
    let report = core_system(&api, &keys, 2, json!({}), None);
    assert_eq!(report["seqs"], json!([3]), "{report}");
    let apps = rt().block_on(async {
        let store = Store::open(&db).await.unwrap();
        let key = oshirase_engine::eval::DecisionKey::parse(&returned).unwrap();
        let apps = store.applications_of(&key).await.unwrap();
        store.close().await;
        apps
    });
    let versions: Vec<(i64, i64)> = apps.iter().map(|a| (a.seq, a.version)).collect();
    assert_eq!(versions, vec![(3, 2), (1, 1)]);
    // From the start again: every number once, in order.
    let report = core_system(&api, &keys, 0, json!({}), None);
    assert_eq!(report["seqs"], json!([1, 2, 3]), "{report}");
    service.kill();
}
