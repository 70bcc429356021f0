//! The shared harness of oshirase's test suites and benchmarks.

pub mod db;
pub mod sql;

pub use db::{fresh, postgres_admin, postgres_admin_url, TestDb};

/// A date written as tests write them, `2026-10-01`.
pub fn d(s: &str) -> chrono::NaiveDate {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not a YYYY-MM-DD date: {e}"))
}

/// The members of `all` that the comma-separated environment variable `var` names (a
/// benchmark's parts or backends), in `all`'s order; all of them when it is not set.
pub fn listed(var: &str, all: &[&'static str]) -> Vec<&'static str> {
    match std::env::var(var) {
        Ok(v) => all
            .iter()
            .copied()
            .filter(|x| v.split(',').any(|w| w.trim() == *x))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

/// Runs an `async fn body(backend: &str)` on SQLite and on PostgreSQL, as two tests
/// `name::sqlite` and `name::postgres` (the caller depends on tokio).
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body("sqlite").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body("postgres").await;
            }
        }
    };
}
