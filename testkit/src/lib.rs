//! The shared harness of oshirase's test suites and benchmarks.

pub mod db;

pub use db::{fresh, postgres_admin, postgres_admin_url, TestDb};
