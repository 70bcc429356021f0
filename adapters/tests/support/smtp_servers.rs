//! Real mail servers for the e-mail tests and benchmark, started as child processes on free
//! loopback ports and killed when dropped: MailDev (reads messages back over HTTP) and
//! Postfix's smtp-sink (discards mail; rejects or disconnects when told to).
//! `scripts/services/mail.sh` installs both.

#![allow(dead_code)] // each test binary uses part of this

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "run scripts/services/mail.sh (from the repository root) to install it";

/// The repository root (the folder holding `scripts/services/mail.sh`).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("scripts/services/mail.sh").exists())
        .unwrap_or_else(|| panic!("no scripts/services/mail.sh above {}", here.display()))
        .to_path_buf()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process killed (and reaped) on drop; what it writes goes to a log file.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let out = log.reopen().expect("the log file");
        let err = log.reopen().expect("the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}; {INSTALL}"));
        Proc { name, child, log }
    }

    /// What the server has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits until every port accepts connections; fails with the server's stderr if it died.
    fn wait_for(&mut self, ports: &[u16]) {
        let until = Instant::now() + Duration::from_secs(20);
        for &port in ports {
            loop {
                if let Some(status) = self.child.try_wait().expect("child status") {
                    panic!(
                        "{} exited ({status}) before listening: {}",
                        self.name,
                        self.log()
                    );
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "{} does not listen on 127.0.0.1:{port} after 20 s",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A MailDev server: SMTP on `smtp`, its HTTP API on `web`.
pub struct MailDev {
    pub smtp: u16,
    pub web: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl MailDev {
    pub fn start() -> MailDev {
        let bin = repo_root().join("target/services/node_modules/.bin/maildev");
        assert!(
            bin.exists(),
            "MailDev is not installed ({} is missing): {INSTALL}",
            bin.display()
        );
        let (smtp, web) = (free_port(), free_port());
        // Its own mail folder: MailDev reloads what it finds in the folder it starts with.
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut proc = Proc::spawn(
            "MailDev",
            Command::new(&bin)
                .args(["--smtp", &smtp.to_string(), "--ip", "127.0.0.1"])
                .args(["--web", &web.to_string(), "--web-ip", "127.0.0.1"])
                .arg("--mail-directory")
                .arg(dir.path())
                .arg("--silent"),
        );
        proc.wait_for(&[smtp, web]);
        MailDev {
            smtp,
            web,
            _proc: proc,
            _dir: dir,
        }
    }

    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp)
    }

    async fn get(&self, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path}", self.web);
        let resp = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.text().await.expect("a body")
    }

    /// Every received message as MailDev parsed it, once there are at least `n` (10 s).
    pub async fn messages(&self, n: usize) -> Vec<serde_json::Value> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let all: Vec<serde_json::Value> =
                serde_json::from_str(&self.get("/api/email").await).expect("MailDev JSON");
            if all.len() >= n || Instant::now() > until {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The message as received, byte for byte.
    pub async fn source(&self, id: &str) -> String {
        self.get(&format!("/api/email/{id}/source")).await
    }
}

/// An smtp-sink server on `port`.
pub struct SmtpSink {
    pub port: u16,
    proc: Proc,
}

impl SmtpSink {
    /// Starts `/usr/sbin/smtp-sink` with `args` (e.g. `["-r", "RCPT"]`).
    pub fn start(args: &[&str]) -> SmtpSink {
        let bin = "/usr/sbin/smtp-sink";
        assert!(
            std::path::Path::new(bin).exists(),
            "smtp-sink is not installed ({bin} is missing): {INSTALL}"
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        // It refuses to run as root unless told which user to become.
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        cmd.args(args).arg(format!("127.0.0.1:{port}")).arg("256");
        let mut proc = Proc::spawn("smtp-sink", &mut cmd);
        proc.wait_for(&[port]);
        SmtpSink { port, proc }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// With `-v`: how many SMTP sessions sent EHLO and how many MAIL commands came, so far.
    pub fn sessions_and_mails(&self) -> (usize, usize) {
        let log = self.proc.log().to_lowercase();
        let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        (count(": ehlo "), count(": mail from:"))
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
