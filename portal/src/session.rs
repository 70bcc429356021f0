//! The portal's own sessions. A login with the identity provider's token opens one; the
//! cookie then holds a random id, never the token. The session lives in the store (every
//! instance knows it, a restart keeps it), ends at logout, after the idle timeout or at the
//! end of its lifetime, and gets a new id every `rotate_after` of use; the replaced id
//! works a few seconds more for requests already under way.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, FixedOffset};
use oshirase_engine::clock::{after, before};
use oshirase_engine::ids::ResidentId;
use oshirase_store::{Store, StoreError};
use sha2::{Digest, Sha256};

use crate::auth::Reader;
use crate::config::SessionConfig;

pub(crate) const COOKIE: &str = "oshirase_session";

/// How long a replaced id still works.
const GRACE: Duration = Duration::from_secs(30);

/// Use is recorded at most this often: a page load is not a database write each time.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Random bytes in a session id and a CSRF token.
const SECRET_BYTES: usize = 32;

/// A request's live session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) reader: Reader,
    /// The token the session's forms carry.
    pub(crate) csrf: String,
    /// The id this request rotated the session to, for the response's cookie.
    pub(crate) rotated: Option<String>,
}

/// Why a request with a session cookie has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSession {
    /// Unknown, logged out, or not an id at all.
    Missing,
    /// No request for longer than the idle timeout.
    Idle,
    /// Past its lifetime.
    Expired,
    /// The store did not answer.
    Unavailable,
}

/// What the session check found for a request's cookie.
#[derive(Debug, Clone)]
pub(crate) struct SessionCheck(pub(crate) Result<Session, NoSession>);

/// The session cookie's value, if the request has one.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a session id (`None` clears it). HttpOnly and SameSite=Strict always,
/// Secure over https; no Max-Age, so the browser forgets it when it closes.
pub(crate) fn set_cookie(id: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = match id {
        Some(id) => format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&v).expect("a base64url id makes a valid header value")
}

fn secret() -> Result<String, StoreError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Corrupt {
        what: "session randomness",
        detail: e.to_string(),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored for an id: its digest, so the table gives no session away.
fn digest(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` could be an id this portal issued: anything else is not looked up.
fn well_formed(s: &str) -> bool {
    s.len() == SECRET_BYTES.div_ceil(3) * 4 - 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) struct Sessions {
    store: Store,
    config: SessionConfig,
}

impl Sessions {
    pub(crate) fn new(store: Store, config: SessionConfig) -> Self {
        Self { store, config }
    }

    /// Opens a session for `reader` and returns its id; the session the browser had
    /// (`previous`) ends, so an id is never carried across a login.
    pub(crate) async fn open(
        &self,
        reader: &Reader,
        previous: Option<&str>,
        now: DateTime<FixedOffset>,
    ) -> Result<String, StoreError> {
        if let Some(old) = previous.filter(|c| well_formed(c)) {
            self.store.end_session(&digest(old)).await?;
        }
        self.store
            .prune_sessions(now, before(now, self.config.idle))
            .await?;
        let id = secret()?;
        self.store
            .open_session(
                &digest(&id),
                reader.as_str(),
                &secret()?,
                now,
                after(now, self.config.lifetime),
            )
            .await?;
        Ok(id)
    }

    /// The live session of a cookie, recording its use and rotating its id when due.
    pub(crate) async fn check(&self, cookie: &str, now: DateTime<FixedOffset>) -> SessionCheck {
        SessionCheck(self.live(cookie, now).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "portal session check failed");
            Err(NoSession::Unavailable)
        }))
    }

    async fn live(
        &self,
        cookie: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Result<Session, NoSession>, StoreError> {
        if !well_formed(cookie) {
            return Ok(Err(NoSession::Missing));
        }
        let id_hash = digest(cookie);
        let Some(row) = self.store.portal_session(&id_hash).await? else {
            return Ok(Err(NoSession::Missing));
        };
        let ended = if now >= row.expires_at {
            Some(NoSession::Expired)
        } else if now >= after(row.last_seen_at, self.config.idle) {
            Some(NoSession::Idle)
        } else {
            None
        };
        // The row stays until the next prune: deleting here would end, with a replaced
        // id past its grace, the id that replaced it.
        if let Some(why) = ended {
            return Ok(Err(why));
        }
        let Ok(id) = ResidentId::parse(&row.resident_id) else {
            return Ok(Err(NoSession::Missing));
        };
        let mut rotated = None;
        if now >= after(row.issued_at, self.config.rotate_after) {
            let new = secret()?;
            if self
                .store
                .rotate_session(&id_hash, &digest(&new), now, after(now, GRACE))
                .await?
            {
                rotated = Some(new);
            }
        } else if now >= after(row.last_seen_at, TOUCH_EVERY) {
            self.store.touch_session(&id_hash, now).await?;
        }
        Ok(Ok(Session {
            reader: Reader::from_session(id),
            csrf: row.csrf,
            rotated,
        }))
    }

    /// Ends the session of a cookie: its id and the ids it was rotated from or to.
    pub(crate) async fn end(&self, cookie: &str) -> Result<(), StoreError> {
        if well_formed(cookie) {
            self.store.end_session(&digest(cookie)).await?;
        }
        Ok(())
    }
}

/// Whether a form's CSRF token is the session's, compared by digest so that timing does not
/// tell how much of it matched.
pub(crate) fn csrf_matches(session: &Session, given: &str) -> bool {
    Sha256::digest(given.as_bytes()) == Sha256::digest(session.csrf.as_bytes())
}
