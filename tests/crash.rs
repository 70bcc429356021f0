//! Crash safety, proven with real processes: a run killed with SIGKILL mid-way and restarted
//! decides exactly what an uninterrupted run decides; two processes racing over the same days
//! on one PostgreSQL database do too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oshirase_engine::calendar;
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_store::{OutboxState, Store};

const FROM: &str = "2026-04-01";
const UNTIL: &str = "2026-12-31";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_oshirase")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A synthetic town of `n` residents in households of one to four, written as a snapshot.
fn write_population(path: &Path, n: usize) {
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let start = chrono::NaiveDate::from_ymd_opt(1930, 1, 1).unwrap();
    let mut out =
        String::from(r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-04-01"}"#);
    out.push('\n');
    let (mut i, mut hh) = (0, 0);
    while i < n {
        hh += 1;
        let size = 1 + (next() % 4) as usize;
        for k in 0..size.min(n - i) {
            let birth = calendar::add_days(start, i64::from(next() % 35_000));
            let rel = if k == 0 { "世帯主" } else { "子" };
            out.push_str(&format!(
                r#"{{"id":"R{i}","name":{{"kanji":"山田 太郎","kana":"ヤマダ タロウ"}},"birth_date":"{birth}","sex":{},"status":{{"kind":"resident"}},"address":{{"local_gov_code":"141003","text":"横浜市"}},"household":{{"id":"H{hh}","relationship":"{rel}"}},"contact":{{"portal":true}},"attributes":{{"kokuho":{}}}}}"#,
                1 + next() % 2,
                next() % 2 == 0
            ));
            out.push('\n');
            i += 1;
        }
    }
    std::fs::write(path, out).unwrap();
}

fn oshirase(db: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env("OSHIRASE_DATABASE_URL", db)
        .current_dir(root());
    c
}

fn ingest(db: &str, snapshot: &Path) {
    let out = oshirase(db, &["ingest", snapshot.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_to_end(db: &str) -> Child {
    oshirase(db, &["run", "--start", FROM, "--until", UNTIL])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn decisions(db: &str) -> Vec<String> {
    rt().block_on(async {
        let store = Store::open(db).await.unwrap();
        let keys = store
            .decisions()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.key)
            .collect();
        store.close().await;
        keys
    })
}

fn watermark(db: &str) -> Option<chrono::NaiveDate> {
    rt().block_on(async {
        let store = Store::open(db).await.ok()?;
        let w = store.watermark().await.ok().flatten();
        store.close().await;
        w
    })
}

fn wait_ok(mut child: Child) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "oshirase run failed: {err}");
}

#[test]
fn a_run_killed_mid_way_and_restarted_decides_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("population.jsonl");
    write_population(&snapshot, 20_000);
    let reference = format!("sqlite://{}", dir.path().join("reference.sqlite").display());
    let crashed = format!("sqlite://{}", dir.path().join("crashed.sqlite").display());
    ingest(&reference, &snapshot);
    ingest(&crashed, &snapshot);

    wait_ok(run_to_end(&reference));
    let expected = decisions(&reference);
    assert!(expected.len() > 1_000, "only {} decisions", expected.len());

    // Kill the run once some days are committed but not all.
    let mut child = run_to_end(&crashed);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let w = watermark(&crashed);
        if w.is_some_and(|w| w >= "2026-05-01".parse().unwrap()) {
            break;
        }
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed; use a larger population"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = watermark(&crashed).unwrap();
    assert!(
        partial < UNTIL.parse().unwrap(),
        "killed after the end ({partial})"
    );

    wait_ok(run_to_end(&crashed));
    assert_eq!(decisions(&crashed), expected, "none missing, none doubled");
}

#[test]
fn two_processes_racing_on_postgres_decide_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("population.jsonl");
    write_population(&snapshot, 5_000);
    let reference = format!("sqlite://{}", dir.path().join("reference.sqlite").display());
    ingest(&reference, &snapshot);
    wait_ok(run_to_end(&reference));
    let expected = decisions(&reference);
    assert!(expected.len() > 100);

    let pg = rt().block_on(oshirase_testkit::fresh("postgres", "oshirase_race_"));
    ingest(&pg.url, &snapshot);
    let a = run_to_end(&pg.url);
    let b = run_to_end(&pg.url);
    wait_ok(a);
    wait_ok(b);
    assert_eq!(decisions(&pg.url), expected, "none missing, none doubled");
}

/// Unmounts the small file system at the end of the test, whatever happens.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .status()
        .expect("`mount` runs");
    assert!(
        status.success(),
        "this test mounts a 1 MB tmpfs to fill it: run it as root (CI does)"
    );
    let _guard = Mounted(small.clone());

    let snapshot = dir.path().join("population.jsonl");
    write_population(&snapshot, 20_000);
    let db = format!("sqlite://{}", small.join("full.sqlite").display());
    let out = oshirase(&db, &["ingest", snapshot.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("full"), "the reason is named: {err}");
    assert!(!err.contains("panicked"), "{err}");

    // The transaction was rolled back: a copy of the database (the full disk has no room to
    // open it again) holds no resident.
    let copy = dir.path().join("copy.sqlite");
    std::fs::copy(small.join("full.sqlite"), &copy).unwrap();
    if small.join("full.sqlite-wal").exists() {
        std::fs::copy(
            small.join("full.sqlite-wal"),
            dir.path().join("copy.sqlite-wal"),
        )
        .unwrap();
    }
    let copy_url = format!("sqlite://{}", copy.display());
    let residents = rt().block_on(async {
        let store = Store::open(&copy_url).await.unwrap();
        let n = store.residents().await.unwrap().len();
        store.close().await;
        n
    });
    assert_eq!(residents, 0);
}

/// The service's log, read as it is written: the portal's address once it listens, and the
/// whole text for failure messages.
struct ServiceLog {
    addr: std::sync::mpsc::Receiver<String>,
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServiceLog {
    fn follow(child: &mut Child) -> Self {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, addr) = std::sync::mpsc::channel();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let all = text.clone();
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
        Self { addr, text }
    }

    /// The address the portal bound (it was told port 0).
    fn portal_addr(&self) -> String {
        self.addr
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the portal never said where it listens:\n{}", self.text()))
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }
}

/// Outbox rows pending and due now (a row the daily cap deferred to tomorrow is not).
fn pending(db: &str) -> Vec<oshirase_store::OutboxRow> {
    rt().block_on(async {
        let store = Store::open(db).await.unwrap();
        let rows = store.outbox_rows(None).await.unwrap();
        store.close().await;
        rows.into_iter()
            .filter(|r| r.state == OutboxState::Pending && r.next_attempt_at <= SystemClock.now())
            .collect()
    })
}

#[test]
fn the_service_serves_the_portal_delivers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("service.sqlite").display());
    ingest(&db, &root().join("fixtures/town.jsonl"));
    let mail = dir.path().join("mail");
    let config = dir.path().join("oshirase.yaml");
    std::fs::write(
        &config,
        format!(
            "portal:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1\n  jwt: {{issuer: test-idp, algorithm: HS256, secret_env: TEST_JWT_SECRET}}\n\
             email:\n  from: \"テスト村 <noreply@example.lg.jp>\"\n  message_id_domain: example.lg.jp\n  dir: {}\n\
             webpush:\n  vapid_private_key_env: TEST_VAPID\n  subject: mailto:it@example.lg.jp\n  allow_loopback: true\n\
             delivery:\n  quiet_hours: {{}}\n",
            mail.display()
        ),
    )
    .unwrap();
    let keys = oshirase_adapters::generate_vapid_keys();
    // The real clock: start a month back, so the service has days to catch up (the town gets
    // a notice every day or two).
    let today = SystemClock.today();
    let start = calendar::add_days(today, -30);
    let mut child = oshirase(&db, &["run", "--start", &start.to_string()])
        .arg("--config")
        .arg(&config)
        .env(
            "TEST_JWT_SECRET",
            "a test secret that is long enough for HS256",
        )
        .env("TEST_VAPID", &keys.private_key)
        .env("OSHIRASE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = ServiceLog::follow(&mut child);
    let addr = log.portal_addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    while watermark(&db).is_none_or(|w| w < calendar::day_before(today)) {
        assert!(
            Instant::now() < deadline,
            "the service did not catch up:\n{}",
            log.text()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the service exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The portal answers beside the scheduler and the workers.
    let health = rt().block_on(async {
        let url = format!("http://{addr}/health");
        reqwest::get(&url).await.map(|r| r.status().as_u16())
    });
    assert_eq!(health.ok(), Some(200), "GET /health");
    // The workers take everything the catch-up queued and is due (no quiet hours, nothing
    // can fail).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending(&db).is_empty() {
        assert!(
            Instant::now() < deadline,
            "outbox rows still pending: {:#?}\n{}",
            pending(&db),
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the service failed:\n{}", log.text());
    let rows = rt().block_on(async {
        let store = Store::open(&db).await.unwrap();
        let rows = store.outbox_rows(None).await.unwrap();
        store.close().await;
        rows
    });
    let portal: Vec<_> = rows.iter().filter(|r| r.channel == "portal").collect();
    assert!(
        !portal.is_empty(),
        "a month of the town gives portal notices"
    );
    assert!(
        portal.iter().all(|r| r.state == OutboxState::Delivered),
        "every portal notice reached the inbox before the exit"
    );
    let delivered_emails = rows
        .iter()
        .filter(|r| r.channel == "email" && r.state == OutboxState::Delivered)
        .count();
    let files = std::fs::read_dir(&mail).map(|d| d.count()).unwrap_or(0);
    assert!(delivered_emails > 0, "e-mails went out");
    assert_eq!(files, delivered_emails, "one .eml per delivered e-mail row");
    // Nobody registered a push subscription: every push that was due is gone, never stuck;
    // only a push the recipient's daily cap put off to tomorrow still waits, and one caught
    // up more than the grace period after its deadline is a dead letter, not sent.
    let now = SystemClock.now();
    let pushes: Vec<_> = rows.iter().filter(|r| r.channel == "webpush").collect();
    assert!(
        pushes.iter().any(|r| r.state == OutboxState::Gone),
        "the town's push recipients got rows: {pushes:#?}"
    );
    let reason = |r: &oshirase_store::OutboxRow, what: &str| {
        r.last_error.as_deref().is_some_and(|e| e.contains(what))
    };
    for r in pushes {
        let deferred =
            r.state == OutboxState::Pending && r.next_attempt_at > now && reason(r, "daily cap");
        let too_late = r.state == OutboxState::Dead && reason(r, "not sent: the deadline");
        assert!(
            r.state == OutboxState::Gone || deferred || too_late,
            "{r:#?}"
        );
    }
}

/// The service's configuration for a database that refuses the workers' writes: the portal on
/// port 0, and workers that retry store errors every 50 ms or so and give up after `give_up`.
fn failing_store_config(dir: &Path, give_up: u32) -> PathBuf {
    let config = dir.join(format!("oshirase-{give_up}.yaml"));
    std::fs::write(
        &config,
        format!(
            "portal:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1\n  jwt: {{issuer: test-idp, algorithm: HS256, secret_env: TEST_JWT_SECRET}}\n\
             delivery:\n  quiet_hours: {{}}\n  store_errors: {{retry_seconds: 0.05, give_up_after: {give_up}}}\n"
        ),
    )
    .unwrap();
    config
}

fn serve(db: &str, start: chrono::NaiveDate, config: &Path) -> Child {
    oshirase(db, &["run", "--start", &start.to_string()])
        .arg("--config")
        .arg(config)
        .env(
            "TEST_JWT_SECRET",
            "a test secret that is long enough for HS256",
        )
        .env("OSHIRASE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `GET /health`: the status and the body.
fn health(addr: &str) -> (u16, serde_json::Value) {
    rt().block_on(async {
        let r = reqwest::get(format!("http://{addr}/health")).await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or_default())
    })
}

/// Whether `/health` lists a portal-inbox worker in `state`.
fn a_portal_worker(body: &serde_json::Value, state: &str) -> bool {
    body["workers"].as_array().is_some_and(|ws| {
        ws.iter()
            .any(|w| w["channel"] == "portal" && w["state"] == state)
    })
}

#[test]
fn a_worker_whose_store_fails_is_reported_and_then_stops_the_service_with_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("service.sqlite").display());
    ingest(&db, &root().join("fixtures/town.jsonl"));
    // The database refuses every claim of an outbox row, as a full disk would.
    rt().block_on(oshirase_testkit::sql::refuse_updates(
        &db,
        "outbox",
        "NEW.leased_by IS NOT NULL",
    ));
    let start = calendar::add_days(SystemClock.today(), -30);

    // The workers retry twice, then give up: the service stops with the database's exit code.
    let mut child = serve(&db, start, &failing_store_config(dir.path(), 3));
    let log = ServiceLog::follow(&mut child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service kept running with workers that cannot write:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The log is complete once the process has ended and its pipe is drained.
    std::thread::sleep(Duration::from_millis(200));
    let text = log.text();
    assert_eq!(status.code(), Some(5), "{text}");
    assert!(
        text.contains("gave up after 3 consecutive store errors"),
        "{text}"
    );
    assert!(text.contains("retrying"), "each failure is logged: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !pending(&db).is_empty(),
        "nothing was delivered, and nothing is lost: the rows wait"
    );

    // With patience to spare the workers keep retrying, /health says so, and once the
    // database takes writes again the rows go out without a restart.
    let mut child = serve(&db, start, &failing_store_config(dir.path(), 1000));
    let log = ServiceLog::follow(&mut child);
    let addr = log.portal_addr();
    let mut until = |what: &str, ok: &dyn Fn(u16, &serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = health(&addr);
            if ok(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/health never said {what}: {status} {body}\n{}",
                log.text()
            );
            assert!(
                child_running(&mut child),
                "the service exited:\n{}",
                log.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("a worker is failing", &|s, b| {
        s == 503 && a_portal_worker(b, "failing")
    });
    rt().block_on(oshirase_testkit::sql::allow_updates(&db, "outbox"));
    until("every worker runs again", &|s, b| {
        s == 200 && a_portal_worker(b, "running")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while pending(&db).iter().any(|r| r.channel == "portal") {
        assert!(
            Instant::now() < deadline,
            "portal rows still pending:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the service failed:\n{}", log.text());
}

fn child_running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}
