//! Fresh, empty databases for the test suites and benchmarks: a SQLite file in a temporary
//! folder, or a new PostgreSQL database on the server at `OSHIRASE_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`). A missing server is a failure that says what
//! to start, never a skip.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

/// A fresh database; a SQLite file goes with the guard, PostgreSQL databases with a later
/// run of the same suite once this process has ended (see `fresh`).
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Whether the process whose pid starts `pid_n` (`{pid}_{n}`) is still running. Where
/// `/proc` is missing nothing counts as ended, so nothing is dropped by mistake.
fn owner_alive(pid_n: &str) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.is_dir() {
        return true;
    }
    match pid_n.split('_').next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => proc.join(pid.to_string()).exists(),
        // Not a name `fresh` made: someone else's database, left alone.
        None => true,
    }
}

/// The PostgreSQL server the tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("OSHIRASE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A connection to the PostgreSQL server, or a panic that says how to start one.
pub async fn postgres_admin() -> AnyConnection {
    let admin = postgres_admin_url();
    sqlx::any::install_default_drivers();
    match AnyConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {admin}: {e}\n\
             start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` (scripts/test does), \
             or point OSHIRASE_TEST_PG at a server"
        ),
    }
}

/// A fresh `backend` (`sqlite` or `postgres`) database. PostgreSQL databases are named
/// `{prefix}{pid}_{n}`; the first call of a process drops those that processes no longer
/// running left behind, so two runs of a suite at once never drop each other's databases.
pub async fn fresh(backend: &str, prefix: &str) -> TestDb {
    static N: AtomicUsize = AtomicUsize::new(0);
    if backend == "sqlite" {
        let dir = tempfile::tempdir().expect("a temporary folder");
        return TestDb {
            url: format!("sqlite://{}", dir.path().join("oshirase.sqlite").display()),
            _dir: Some(dir),
        };
    }
    let mut conn = postgres_admin().await;
    let mine = format!("{prefix}{}_", std::process::id());
    let n = N.fetch_add(1, Ordering::SeqCst);
    if n == 0 {
        let old = sqlx::query(AssertSqlSafe(format!(
            "SELECT datname::text AS datname FROM pg_database WHERE datname LIKE '{prefix}%'"
        )))
        .fetch_all(&mut conn)
        .await
        .expect("listing databases");
        for row in old {
            let name: String = row.get("datname");
            if !name.starts_with(&mine) && !owner_alive(&name[prefix.len()..]) {
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        }
    }
    let name = format!("{mine}{n}");
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
    }
    let admin = postgres_admin_url();
    let base = admin
        .rsplit_once('/')
        .expect("OSHIRASE_TEST_PG ends in /DATABASE")
        .0;
    TestDb {
        url: format!("{base}/{name}"),
        _dir: None,
    }
}
