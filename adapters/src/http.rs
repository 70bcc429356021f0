//! What the HTTP channels (web push, agency webhooks) share: reading `Retry-After` and saying
//! what went wrong with a request without its URL (which may carry a token).

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use oshirase_engine::clock;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// `Retry-After` as delay seconds or an HTTP date (any of the three forms of RFC 9110),
/// relative to `now`; a date in the past is no wait.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<FixedOffset>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some(clock::until(now, at.fixed_offset()).unwrap_or(Duration::ZERO))
}

/// A transport error in words: its kind and innermost cause.
pub(crate) fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The innermost cause says what happened (refused, reset, DNS, TLS) without the URL.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = std::error::Error::source(cause) {
        cause = next;
    }
    format!("{kind}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-10-10T12:00:00+09:00").unwrap();
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(RETRY_AFTER, v.parse().unwrap());
            m
        };
        assert_eq!(retry_after(&h("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after(&h("Sat, 10 Oct 2026 03:01:30 GMT"), now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&h("Sat, 10 Oct 2026 02:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&h("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
