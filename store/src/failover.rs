//! A PostgreSQL primary among several hosts, as libpq finds one: a URL that lists them
//! (`postgres://user@h1:5441,h2:5442/db?target_session_attrs=read-write`, what
//! pg_auto_failover's `show uri` prints) is tried host by host, and the first that takes
//! writes is used. sqlx does not read such URLs (launchbadge/sqlx#2290), so the store does,
//! and keeps doing it: a watcher asks the pool's server once a second whether it is still the
//! primary, and when it is not (it died, or was demoted), finds the one that is and points
//! both pools at it; connections opened before the switch are dropped when next taken. Which
//! node is primary is decided by pg_auto_failover's monitor, never here: the store only
//! follows, as a client does.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::AnyPool;
use sqlx::{ConnectOptions, Connection, Row};

/// How often the watcher asks whether the pool's server is still the primary.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How long one host may take to answer while the primary is looked for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The hosts of a multi-host PostgreSQL URL, each as a URL of its own (the same user,
/// database and parameters, without `target_session_attrs`); `None` for a URL with one host.
pub(crate) fn hosts(url: &str) -> Option<Vec<String>> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if !hostlist.contains(',') {
        return None;
    }
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("target_session_attrs="))
        .collect();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    Some(
        hostlist
            .split(',')
            .map(|host| match userinfo {
                Some(u) => format!("postgres://{u}@{host}{path}{query}"),
                None => format!("postgres://{host}{path}{query}"),
            })
            .collect(),
    )
}

/// 1 when the server takes writes: libpq's test for `target_session_attrs=read-write`.
const READ_WRITE: &str =
    "SELECT (NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off')::int AS rw";

/// Whether the server behind `options` takes writes: reachable, not in recovery, not
/// read-only by default (libpq's `target_session_attrs=read-write`).
async fn takes_writes(options: &AnyConnectOptions) -> Result<bool, String> {
    let probe = async {
        let mut conn = options.connect().await.map_err(|e| e.to_string())?;
        let row = sqlx::query(READ_WRITE)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let rw: i32 = row.try_get("rw").map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok(rw == 1)
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
}

/// Whether the pool's server answers, within `PROBE_TIMEOUT`, that it takes writes.
async fn pool_takes_writes(pool: &AnyPool) -> bool {
    let probe = sqlx::query(READ_WRITE).fetch_one(pool);
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(row)) => row.try_get::<i32, _>("rw").is_ok_and(|rw| rw == 1),
        _ => false,
    }
}

/// The hosts of a multi-host URL and which of them the pools use.
pub(crate) struct Primary {
    hosts: Vec<(String, AnyConnectOptions)>,
    current: std::sync::Mutex<usize>,
    /// When the pools were last pointed at another host, in milliseconds since `epoch`.
    switched_ms: AtomicU64,
    epoch: Instant,
}

impl Primary {
    /// The hosts of `urls`, and the first that takes writes; every host's answer when none
    /// does.
    pub(crate) async fn find(urls: Vec<String>) -> Result<Arc<Primary>, String> {
        let mut hosts = Vec::with_capacity(urls.len());
        for url in urls {
            let options = AnyConnectOptions::from_str(&url).map_err(|e| e.to_string())?;
            hosts.push((url, options));
        }
        let primary = Arc::new(Primary {
            hosts,
            current: std::sync::Mutex::new(0),
            switched_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let found = primary.look().await?;
        *primary.current.lock().expect("not poisoned") = found;
        Ok(primary)
    }

    /// The index of the first host that takes writes.
    async fn look(&self) -> Result<usize, String> {
        let mut answers = Vec::new();
        for (i, (url, options)) in self.hosts.iter().enumerate() {
            match takes_writes(options).await {
                Ok(true) => return Ok(i),
                Ok(false) => answers.push(format!("{}: read-only", crate::redact(url))),
                Err(e) => answers.push(format!("{}: {e}", crate::redact(url))),
            }
        }
        Err(format!("no host takes writes ({})", answers.join("; ")))
    }

    /// The options of the host in use.
    pub(crate) fn options(&self) -> AnyConnectOptions {
        let i = *self.current.lock().expect("not poisoned");
        self.hosts[i].1.clone()
    }

    /// Whether a pooled connection of `age` was opened before the last switch, so that it
    /// may be to the old primary.
    pub(crate) fn stale(&self, age: Duration) -> bool {
        let switched = self.switched_ms.load(Ordering::Acquire);
        if switched == 0 {
            return false;
        }
        let since = self
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(switched));
        age > since
    }

    /// Follows the primary for `pools` until the first of them is closed.
    pub(crate) fn watch(self: Arc<Primary>, pools: Vec<AnyPool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if pools.iter().any(AnyPool::is_closed) {
                    return;
                }
                // Asked over the pool, so that a healthy primary costs no new connection.
                if pool_takes_writes(&pools[0]).await {
                    continue;
                }
                let Ok(found) = self.look().await else {
                    // None takes writes yet (the monitor is still promoting): ask again.
                    continue;
                };
                let before =
                    std::mem::replace(&mut *self.current.lock().expect("not poisoned"), found);
                if before == found {
                    continue;
                }
                let options = self.hosts[found].1.clone();
                for pool in &pools {
                    pool.set_connect_options(options.clone());
                }
                let now = self.epoch.elapsed().as_millis().max(1) as u64;
                self.switched_ms.store(now, Ordering::Release);
                tracing::warn!(
                    from = %crate::redact(&self.hosts[before].0),
                    to = %crate::redact(&self.hosts[found].0),
                    "the database primary moved; new connections go to the new one"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_host_url_gives_one_url_a_host() {
        assert_eq!(
            hosts("postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/test?target_session_attrs=read-write&sslmode=disable"),
            Some(vec![
                "postgres://postgres@127.0.0.1:5441/test?sslmode=disable".to_owned(),
                "postgres://postgres@127.0.0.1:5442/test?sslmode=disable".to_owned(),
            ])
        );
        assert_eq!(
            hosts("postgresql://a:5441,b/db"),
            Some(vec![
                "postgres://a:5441/db".to_owned(),
                "postgres://b/db".to_owned()
            ])
        );
        assert_eq!(hosts("postgres://postgres@127.0.0.1:5432/test"), None);
        assert_eq!(hosts("sqlite://x.sqlite"), None);
    }
}
