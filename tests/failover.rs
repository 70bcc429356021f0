//! The primary dies in the middle of a run: `oshirase run` over a pg_auto_failover formation
//! (a primary and a synchronous hot standby, scripts/services/failover.sh) follows the
//! standby the monitor promotes, runs the failed day again, and ends with exactly the
//! decisions and outbox rows of the same run on SQLite: none missing, none twice.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use oshirase_testkit::sql;

/// The formation's nodes, as scripts/services/failover.sh makes them.
const NODES: [(u16, &str); 2] = [(5441, "node1"), (5442, "node2")];
const DATABASE: &str = "oshirase_failover";
const FROM: &str = "2026-04-01";
const UNTIL: &str = "2026-09-30";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn formation_dir() -> PathBuf {
    std::env::var("OSHIRASE_FAILOVER_DIR")
        .unwrap_or_else(|_| "/var/tmp/oshirase-failover".into())
        .into()
}

fn url() -> String {
    format!(
        "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/{DATABASE}?target_session_attrs=read-write&sslmode=disable"
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The port of the node that takes writes, or a panic that says what to start.
async fn primary() -> u16 {
    let mut answers = Vec::new();
    for (port, _) in NODES {
        let url = format!("postgres://postgres@127.0.0.1:{port}/test?sslmode=disable");
        match sql::try_rows(&url, "SELECT (NOT pg_is_in_recovery())::int AS rw").await {
            Ok(rows) if rows[0][0].int() == 1 => return port,
            Ok(_) => answers.push(format!("{port}: standby")),
            Err(e) => answers.push(format!("{port}: {e}")),
        }
    }
    panic!(
        "no pg_auto_failover primary on 127.0.0.1:5441/5442 ({}): start the formation with \
         scripts/services/failover.sh (scripts/test does)",
        answers.join("; ")
    )
}

fn oshirase(db: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oshirase"));
    c.args(args)
        .arg("--db")
        .arg(db)
        .current_dir(root())
        .env_remove("OSHIRASE_RULES")
        .env("OSHIRASE_LOG", "warn");
    c
}

/// Runs `oshirase ARGS --db DB` to its end, which must be a success.
fn succeed(db: &str, args: &[&str]) {
    let out = oshirase(db, args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every decision key and every outbox row (key, recipient, channel), sorted, with repeats.
fn written(db: &str) -> (Vec<String>, Vec<String>) {
    rt().block_on(async {
        let store = oshirase_store::Store::open(db).await.unwrap();
        let mut keys: Vec<String> = store
            .decisions()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.key)
            .collect();
        keys.sort();
        let mut rows: Vec<String> = store
            .outbox_rows(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {} {}", r.decision_key, r.recipient, r.channel))
            .collect();
        rows.sort();
        store.close().await;
        (keys, rows)
    })
}

/// SIGKILL the node on `port`: its process group (scripts/services/failover.sh writes it
/// beside the node's data), pg_autoctl, its supervisors and its postgres.
fn kill(port: u16) {
    let name = NODES.iter().find(|(p, _)| *p == port).unwrap().1;
    let file = formation_dir().join(format!("{name}.pgid"));
    let pgid = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", pgid.trim())])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL -{}", pgid.trim());
}

#[test]
fn the_primary_dies_mid_run_and_nothing_decided_is_lost_or_doubled() {
    // The same run on SQLite: what the formation must end with.
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("sqlite://{}", tmp.path().join("ref.sqlite").display());
    succeed(&reference, &["ingest", "fixtures/town.jsonl"]);
    succeed(&reference, &["run", "--start", FROM, "--until", UNTIL]);
    let (want_keys, want_rows) = written(&reference);
    assert!(want_keys.len() > 100, "{}", want_keys.len());

    let first = rt().block_on(async {
        let port = primary().await;
        let admin = format!("postgres://postgres@127.0.0.1:{port}/test?sslmode=disable");
        sql::execute(
            &admin,
            &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        )
        .await;
        sql::execute(&admin, &format!("CREATE DATABASE {DATABASE}")).await;
        port
    });
    let db = url();
    succeed(&db, &["ingest", "fixtures/town.jsonl"]);

    // The run, with the primary killed once a month of days is committed.
    let mut child = oshirase(&db, &["run", "--start", FROM, "--until", UNTIL])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut days = 0;
    let mut killed = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if line.contains(" decisions (") {
            days += 1;
        }
        if days == 30 && killed.is_none() {
            kill(first);
            killed = Some(Instant::now());
        }
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        killed.is_some(),
        "the run ended after {days} days, before the kill: {stderr}"
    );
    assert!(
        status.success(),
        "the run failed after the primary was killed: {stderr}"
    );
    assert!(
        stderr.contains("the database primary moved"),
        "the store never followed the new primary: {stderr}"
    );
    assert!(days >= 183, "{days} days reported");
    eprintln!(
        "run {:.1} s, the rest after the kill {:.1} s",
        started.elapsed().as_secs_f64(),
        killed.unwrap().elapsed().as_secs_f64()
    );

    let now = rt().block_on(primary());
    assert_ne!(now, first, "the standby was promoted");
    let (keys, rows) = written(&db);
    let doubled = |v: &[String]| v.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(doubled(&keys), 0);
    assert_eq!(doubled(&rows), 0);
    assert_eq!(
        keys, want_keys,
        "decisions missing or extra after the failover"
    );
    assert_eq!(
        rows, want_rows,
        "outbox rows missing or extra after the failover"
    );

    // The killed node rejoins as the standby, for the next run of this suite.
    let out = Command::new("bash")
        .arg(root().join("scripts/services/failover.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
