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

/// Whom a session is for: a resident (`Reader`) or a staff member of the console. Each
/// kind has its own cookie and reads only its own rows, so a staff session is never a
/// resident's and the other way round.
pub(crate) trait Owner: Clone + Sized {
    /// The cookie that carries the session's id.
    const COOKIE: &'static str;
    /// The row's `resident_id` and `staff` columns.
    fn to_row(&self) -> (String, Option<String>);
    /// The owner of a row, or `None` for a row of the other kind.
    fn from_row(resident_id: &str, staff: Option<&str>) -> Option<Self>;
}

impl Owner for Reader {
    const COOKIE: &'static str = "oshirase_session";

    fn to_row(&self) -> (String, Option<String>) {
        (self.as_str().to_owned(), None)
    }

    fn from_row(resident_id: &str, staff: Option<&str>) -> Option<Self> {
        if staff.is_some() {
            return None;
        }
        ResidentId::parse(resident_id)
            .ok()
            .map(Reader::from_session)
    }
}

/// How long a replaced id still works.
const GRACE: Duration = Duration::from_secs(30);

/// Use is recorded at most this often: a page load is not a database write each time.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Random bytes in a session id and a CSRF token.
const SECRET_BYTES: usize = 32;

/// A request's live session.
#[derive(Debug, Clone)]
pub(crate) struct Session<W = Reader> {
    pub(crate) who: W,
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
pub(crate) struct SessionCheck<W = Reader>(pub(crate) Result<Session<W>, NoSession>);

/// The value of the session cookie `W::COOKIE`, if the request has one.
pub(crate) fn cookie<W: Owner>(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == W::COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a session id (`None` clears it). HttpOnly and SameSite=Strict always,
/// Secure over https; no Max-Age, so the browser forgets it when it closes.
pub(crate) fn set_cookie<W: Owner>(id: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let name = W::COOKIE;
    let v = match id {
        Some(id) => format!("{name}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
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
    oshirase_store::secret_digest(id)
}

/// Whether `s` could be an id this portal issued: anything else is not looked up.
fn well_formed(s: &str) -> bool {
    s.len() == SECRET_BYTES.div_ceil(3) * 4 - 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) struct Sessions<W = Reader> {
    store: Store,
    config: SessionConfig,
    owner: std::marker::PhantomData<fn() -> W>,
}

impl<W: Owner> Sessions<W> {
    pub(crate) fn new(store: Store, config: SessionConfig) -> Self {
        Self {
            store,
            config,
            owner: std::marker::PhantomData,
        }
    }

    /// Opens a session for `who` and returns its id; the session the browser had
    /// (`previous`) ends, so an id is never carried across a login.
    pub(crate) async fn open(
        &self,
        who: &W,
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
        let (resident_id, staff) = who.to_row();
        self.store
            .open_session(
                &digest(&id),
                &resident_id,
                staff.as_deref(),
                &secret()?,
                now,
                after(now, self.config.lifetime),
            )
            .await?;
        Ok(id)
    }

    /// The live session of a cookie, recording its use and rotating its id when due.
    pub(crate) async fn check(&self, cookie: &str, now: DateTime<FixedOffset>) -> SessionCheck<W> {
        SessionCheck(self.live(cookie, now).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "portal session check failed");
            Err(NoSession::Unavailable)
        }))
    }

    async fn live(
        &self,
        cookie: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<Result<Session<W>, NoSession>, StoreError> {
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
        let Some(who) = W::from_row(&row.resident_id, row.staff.as_deref()) else {
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
            who,
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
pub(crate) fn csrf_matches<W>(session: &Session<W>, given: &str) -> bool {
    Sha256::digest(given.as_bytes()) == Sha256::digest(session.csrf.as_bytes())
}
