//! The resident pages over HTTP: login cookie, inbox, notice, draft form with CSRF,
//! confirmation, decline, preferences, and the login hint.

mod common;

use common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::Response;

/// A browser: the session cookie it holds, replaced when the portal rotates it.
struct Session<'a> {
    app: &'a App,
    cookie: std::sync::Mutex<String>,
}

impl Session<'_> {
    fn cookie(&self) -> String {
        self.cookie.lock().unwrap().clone()
    }

    /// Keeps a new session cookie the response sets, as a browser would.
    fn keep(&self, r: &Response) {
        if let Some(set) = r.headers().get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            if pair.starts_with("oshirase_session=") {
                *self.cookie.lock().unwrap() = pair;
            }
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.app.base))
            .header(COOKIE, self.cookie())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        (r.status().as_u16(), unescape(r.text().await.unwrap()))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let r = self
            .app
            .http
            .post(format!("{}{path}", self.app.base))
            .header(COOKIE, self.cookie())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&r);
        r
    }
}

/// Signs in as the identity provider's form post would: the token in the body, never in
/// the URL.
async fn post_login(app: &App, form: &[(&str, &str)], cookie: Option<&str>) -> Response {
    let mut r = app.http.post(format!("{}/login", app.base)).form(form);
    if let Some(c) = cookie {
        r = r.header(COOKIE, c);
    }
    r.send().await.unwrap()
}

async fn login<'a>(app: &'a App, who: &str) -> Session<'a> {
    let token = app.token(who);
    let r = post_login(app, &[("token", &token)], None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/inbox");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let pair = set.split(';').next().unwrap().to_owned();
    // The portal's own session id, not the identity provider's token.
    let id = pair.strip_prefix("oshirase_session=").unwrap();
    assert!(id.len() >= 40 && !id.contains('.'), "{pair}");
    assert!(!set.contains(&token));
    Session {
        app,
        cookie: std::sync::Mutex::new(pair),
    }
}

/// The templates escape `/` in attributes as `&#x2f;` (valid HTML); read it back.
fn unescape(html: String) -> String {
    html.replace("&#x2f;", "/")
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn pages_walk_through_a_draft(backend: &str) {
    let app = spawn_app(backend).await;
    // Not signed in: the link from an e-mail shows the login hint with a same-site retry.
    let r = app
        .http
        .get(format!("{}/notices/{CHILD}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let html = unescape(r.text().await.unwrap());
    assert!(html.contains("ログインが必要です"), "{html}");
    assert!(
        html.contains(&format!("href=\"/notices/{CHILD}\"")),
        "{html}"
    );
    assert!(html.contains("name=\"viewport\""));
    // A bad token.
    let r = post_login(&app, &[("token", "abc.def.ghi")], None).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
    // A token in the URL (kept in logs, histories and referrers) signs nobody in.
    let r = app
        .http
        .get(format!("{}/login?token={}", app.base, app.token("R10003")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(unescape(r.text().await.unwrap()).contains("このリンクではログインできません"));
    // The login page itself: a form the identity provider's answer is posted through.
    let r = app
        .http
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = unescape(r.text().await.unwrap());
    assert!(
        html.contains("<form method=\"post\" action=\"/login\"")
            && html.contains("src=\"/assets/login.js\""),
        "{html}"
    );
    // `next` stays on this site.
    let token = app.token("R10003");
    let r = post_login(
        &app,
        &[("token", &token), ("next", "//evil.example/x")],
        None,
    )
    .await;
    assert_eq!(r.headers()[LOCATION], "/inbox");
    // Browsers drop tabs and newlines from a URL and read `\` as `/`: each of these would
    // leave the site, or break the response, and must land on the inbox instead.
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: x=1",
        "/\x0b/evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "//evil.example",
        "/ /evil.example",
        "",
    ] {
        let r = post_login(&app, &[("token", &token), ("next", next)], None).await;
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(r.headers()[LOCATION], "/inbox", "{next:?}");
    }
    // A path on this site, with its query, is where the login goes.
    let r = post_login(
        &app,
        &[("token", &token), ("next", "/notices/a/b?x=1")],
        None,
    )
    .await;
    assert_eq!(r.headers()[LOCATION], "/notices/a/b?x=1");

    let s = login(&app, "R10003").await;
    let (status, inbox) = s.get("/inbox").await;
    assert_eq!(status, 200);
    assert!(
        inbox.contains("児童手当の認定請求") && inbox.contains("未読"),
        "{inbox}"
    );
    // The child by name, never by register id.
    assert!(
        inbox.contains("陽さん（お子さま）についてのお知らせ"),
        "{inbox}"
    );
    assert!(
        !inbox.contains("（対象: R10002）") && !inbox.contains(">R10002<"),
        "{inbox}"
    );
    assert!(!inbox.contains("国民年金"));

    let (status, notice) = s.get(&format!("/notices/{CHILD}")).await;
    assert_eq!(status, 200);
    assert!(notice.contains("2026年10月15日"), "{notice}");
    assert!(notice.contains(&format!("href=\"/drafts/{CHILD}\"")));
    let (_, inbox) = s.get("/inbox").await;
    assert!(!inbox.contains("未読"), "opening the page marked it read");

    let (status, form) = s.get(&format!("/drafts/{CHILD}")).await;
    assert_eq!(status, 200);
    assert!(
        form.contains("name=\"field.address\" value=\"東京都利島村1番地\""),
        "{form}"
    );
    let token = csrf(&form);
    // Without the CSRF token, or with another session's, nothing happens.
    let path = format!("/drafts/{CHILD}");
    let r = s
        .post(&path, &[("action", "submit"), ("field.address", "x")])
        .await;
    assert_eq!(r.status(), 403);
    let other = login(&app, "R10001").await;
    let (_, other_form) = other.get(&format!("/drafts/{PENSION}")).await;
    let r = s
        .post(&path, &[("csrf", &csrf(&other_form)), ("action", "submit")])
        .await;
    assert_eq!(r.status(), 403);

    let r = s
        .post(
            &path,
            &[
                ("csrf", &token),
                ("field.claimant", "佐藤 一郎"),
                ("field.child_name", "佐藤 陽"),
                ("field.address", "東京都利島村5番地"),
                ("action", "submit"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(to, format!("/drafts/{CHILD}?done=submitted"));
    let (status, done) = s.get(&to).await;
    assert_eq!(status, 200);
    assert!(done.contains("申請を受け付けました") && done.contains("東京都利島村5番地"));
    let audit = app.store.audit_entries(Some(CHILD)).await.unwrap();
    let submit = audit.iter().find(|e| e.action == "draft.submit").unwrap();
    assert_eq!(
        submit.detail.as_deref(),
        Some(r#"{"corrected":["address"]}"#),
        "only the changed field counts as a correction"
    );
    // Submitting again: the page says it is already done.
    let r = s
        .post(&path, &[("csrf", &token), ("action", "submit")])
        .await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("すでに提出されています"));

    // Declining through the page.
    let r = other
        .post(
            &format!("/drafts/{HEALTH}"),
            &[("csrf", &csrf(&other_form)), ("action", "decline")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, declined) = other.get(&format!("/drafts/{HEALTH}")).await;
    assert!(declined.contains("「申請しない」として受け付けました"));

    // Another's notice looks exactly like a missing one.
    let (a_status, a) = s.get(&format!("/notices/{OTHER}")).await;
    let (b_status, b) = s.get(&format!("/notices/{MISSING}")).await;
    assert_eq!((a_status, &a), (b_status, &b));
    assert_eq!(a_status, 404);
    let (a_status, a) = s.get(&format!("/drafts/{PENSION}")).await;
    let (b_status, b) = s.get(&format!("/drafts/{MISSING}")).await;
    assert_eq!((a_status, &a), (b_status, &b));

    // Preferences: the register's first, then saved.
    let (status, prefs) = s.get("/preferences").await;
    assert_eq!(status, 200);
    assert!(prefs.contains("まだ保存されていません"));
    let r = s
        .post(
            "/preferences",
            &[
                ("csrf", &csrf(&prefs)),
                ("webpush", "1"),
                ("webpush_consent", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let saved = app
        .store
        .portal_preferences("R10003")
        .await
        .unwrap()
        .unwrap();
    assert!(saved.webpush_consent && !saved.email_consent);
    assert_eq!(saved.channels.len(), 2);
    let (_, prefs) = s.get("/preferences?saved=1").await;
    assert!(prefs.contains("設定を保存しました"));

    // Signing out ends the session on the server: the old cookie, replayed, is nobody's.
    let before = s.cookie();
    let r = s.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = app
        .http
        .get(format!("{}/inbox", app.base))
        .header(COOKIE, &before)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.shutdown().await;
}
on_both!(walk_through, pages_walk_through_a_draft);

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

/// Idle for longer than the idle timeout (30 minutes by default), the session is over;
/// used, it lives on past the identity provider's token (one hour here), up to its
/// lifetime (12 hours by default).
async fn sessions_end_when_idle_and_at_their_lifetime(backend: &str) {
    let app = spawn_app(backend).await;
    let s = login(&app, "R10001").await;
    for _ in 0..35 {
        app.clock.advance(20 * MINUTE);
        let (status, html) = s.get("/inbox").await;
        assert_eq!(status, 200, "{html}");
    }
    // 11 h 40 min since login; the lifetime ends 20 minutes from now.
    app.clock.advance(20 * MINUTE);
    let (status, html) = s.get("/inbox").await;
    assert_eq!(status, 401);
    assert!(html.contains("有効期限が切れました"), "{html}");

    let s = login(&app, "R10001").await;
    app.clock.advance(31 * MINUTE);
    let (status, html) = s.get("/inbox").await;
    assert_eq!(status, 401);
    assert!(html.contains("しばらく操作がなかったため"), "{html}");
    app.shutdown().await;
}
on_both!(
    session_timeouts,
    sessions_end_when_idle_and_at_their_lifetime
);

/// The session id changes at every login and every 15 minutes of use; the old one keeps
/// working a few seconds, for requests already under way, then no more.
async fn session_ids_are_rotated(backend: &str) {
    let app = spawn_app(backend).await;
    let s = login(&app, "R10003").await;
    let first = s.cookie();
    // Signing in again from the same browser ends the session it had.
    let token = app.token("R10003");
    let r = post_login(&app, &[("token", &token)], Some(&first)).await;
    assert_eq!(r.status(), 303);
    s.keep(&r);
    let second = s.cookie();
    assert_ne!(first, second);
    let old = |cookie: String| {
        app.http
            .get(format!("{}/inbox", app.base))
            .header(COOKIE, cookie)
            .send()
    };
    assert_eq!(old(first).await.unwrap().status(), 401);

    let (_, form) = s.get(&format!("/drafts/{CHILD}")).await;
    let csrf_before = csrf(&form);
    app.clock.advance(16 * MINUTE);
    let (status, _) = s.get("/inbox").await;
    assert_eq!(status, 200);
    let third = s.cookie();
    assert_ne!(second, third, "rotated after 15 minutes");
    assert_eq!(old(second.clone()).await.unwrap().status(), 200);
    app.clock.advance(MINUTE);
    assert_eq!(old(second).await.unwrap().status(), 401);
    // A form opened before the rotation still posts: the CSRF token is the session's.
    let r = s
        .post(
            &format!("/drafts/{CHILD}"),
            &[("csrf", &csrf_before), ("action", "decline")],
        )
        .await;
    assert_eq!(r.status(), 303);
    app.shutdown().await;
}
on_both!(session_rotation, session_ids_are_rotated);

/// The identity provider's token as the cookie is no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_cookie_is_not_a_session() {
    let app = spawn_app("sqlite").await;
    let r = app
        .http
        .get(format!("{}/inbox", app.base))
        .header(COOKIE, format!("oshirase_session={}", app.token("R10003")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.shutdown().await;
}

/// Sessions live in the database: a second instance over the same store knows them, and
/// takes the forms the first one rendered.
async fn a_session_holds_on_every_instance(backend: &str) {
    let app = spawn_app(backend).await;
    let s = login(&app, "R10003").await;
    let (_, form) = s.get(&format!("/drafts/{CHILD}")).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(oshirase_portal::serve(
        listener,
        app.store.clone(),
        app.config.clone(),
        app.clock.clone(),
        app.delivery.clone(),
        rx,
    ));
    let r = app
        .http
        .post(format!("{other}/drafts/{CHILD}"))
        .header(COOKIE, s.cookie())
        .form(&[("csrf", csrf(&form).as_str()), ("action", "decline")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    app.shutdown().await;
}
on_both!(session_instances, a_session_holds_on_every_instance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app("sqlite").await;
    let s = login(&app, "R10003").await;
    let page = |path: &'static str| {
        app.http
            .get(format!("{}{path}", app.base))
            .header(COOKIE, s.cookie())
            .send()
    };
    let responses = vec![
        ("/inbox", page("/inbox").await.unwrap()),
        ("/preferences", page("/preferences").await.unwrap()),
        ("/login", page("/login").await.unwrap()),
        ("/no-such-page", page("/no-such-page").await.unwrap()),
        ("/api/notices", app.get("R10003", "/api/notices").await),
    ];
    for (path, r) in responses {
        let h = r.headers();
        let get = |name: &str| {
            h.get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("{path}: no {name}"))
        };
        let csp = get("content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(part), "{path}: {part} not in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(get("cache-control"), "no-store", "{path}");
        // The test portal's public URL is https: browsers are told to stay on TLS.
        assert!(
            get("strict-transport-security").contains("max-age="),
            "{path}"
        );
    }
    // The pages' styles come from the site itself, not inline (the CSP would block them).
    let (status, inbox) = s.get("/inbox").await;
    assert_eq!(status, 200);
    assert!(
        !inbox.contains("<style") && !inbox.contains("style="),
        "{inbox}"
    );
    let css = app
        .http
        .get(format!("{}/assets/portal.css", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    app.shutdown().await;
}

/// Whether the page's checkbox `name` is ticked.
fn ticked(html: &str, name: &str) -> bool {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} checkbox in {html}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    html[start..end].contains(" checked")
}

/// A channel is shown ticked only when notices will go there: a channel without its consent
/// carries nothing, whether it is the register's default (every channel) or saved here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_tick_a_channel_only_with_its_consent() {
    let app = spawn_app("sqlite").await;
    // The register names no channels for R10001 (all of them) and no consent.
    let s = login(&app, "R10001").await;
    let (status, page) = s.get("/preferences").await;
    assert_eq!(status, 200);
    for name in ["email", "webpush", "email_consent", "webpush_consent"] {
        assert!(!ticked(&page, name), "{name} is ticked: {page}");
    }
    // Push chosen without consenting to it: still not ticked; e-mail with its consent is.
    let r = s
        .post(
            "/preferences",
            &[
                ("csrf", &csrf(&page)),
                ("email", "1"),
                ("email_consent", "1"),
                ("webpush", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, page) = s.get("/preferences").await;
    assert!(
        ticked(&page, "email") && ticked(&page, "email_consent"),
        "{page}"
    );
    assert!(
        !ticked(&page, "webpush"),
        "push ticked without consent: {page}"
    );
    assert!(!ticked(&page, "webpush_consent"), "{page}");
    app.shutdown().await;
}

/// The P-256 base point: a key on the curve, as a browser's `p256dh` is.
const P256DH: &str =
    "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";
const AUTH: &str = "AQEBAQEBAQEBAQEBAQEBAQ";

/// The page's browser registration saves the subscription and the consent in one step;
/// without the form's token nothing changes; removing it leaves the consent as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preferences_page_registers_a_browser_with_its_consent() {
    let app = spawn_app_with("sqlite", config().vapid_public_key(P256DH)).await;
    let s = login(&app, "R10001").await;
    let (_, page) = s.get("/preferences").await;
    assert!(page.contains("action=\"/preferences/push\""), "{page}");
    assert!(page.contains("src=\"/assets/push.js\""), "{page}");
    let endpoint = "https://fcm.googleapis.com/fcm/send/abc:def";
    let fields = [
        ("endpoint", endpoint),
        ("keys.p256dh", P256DH),
        ("keys.auth", AUTH),
    ];

    let r = s.post("/preferences/push", &fields).await;
    assert_eq!(r.status(), 403);
    let r = s
        .post(
            "/preferences/push",
            &[&fields[..], &[("csrf", "not-the-token")]].concat(),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(app
        .store
        .push_subscriptions("R10001")
        .await
        .unwrap()
        .is_empty());

    let token = csrf(&page);
    // An endpoint off the push services is refused with a page in Japanese, and nothing is kept.
    let r = s
        .post(
            "/preferences/push",
            &[
                ("csrf", token.as_str()),
                ("endpoint", "https://evil.example/x"),
                ("keys.p256dh", P256DH),
                ("keys.auth", AUTH),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("登録できませんでした"));
    assert!(app
        .store
        .portal_preferences("R10001")
        .await
        .unwrap()
        .is_none());

    let r = s
        .post(
            "/preferences/push",
            &[&fields[..], &[("csrf", token.as_str())]].concat(),
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/preferences?push=on");
    let subs = app.store.push_subscriptions("R10001").await.unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (
            subs[0].endpoint.as_str(),
            subs[0].p256dh.as_str(),
            subs[0].auth.as_str()
        ),
        (endpoint, P256DH, AUTH)
    );
    let prefs = app
        .store
        .portal_preferences("R10001")
        .await
        .unwrap()
        .unwrap();
    assert!(prefs.webpush_consent && !prefs.email_consent, "{prefs:?}");
    assert!(prefs
        .channels
        .contains(&oshirase_engine::resident::Channel::Webpush));
    let (_, page) = s.get("/preferences?push=on").await;
    assert!(page.contains("受け取れるようになりました"), "{page}");
    assert!(ticked(&page, "webpush") && ticked(&page, "webpush_consent"));
    assert!(page.contains("fcm.googleapis.com"), "{page}");

    // Another resident cannot take the same browser over.
    let other = login(&app, "R10004").await;
    let (_, other_page) = other.get("/preferences").await;
    let r = other
        .post(
            "/preferences/push",
            &[&fields[..], &[("csrf", csrf(&other_page).as_str())]].concat(),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert!(app
        .store
        .push_subscriptions("R10004")
        .await
        .unwrap()
        .is_empty());
    assert!(app
        .store
        .portal_preferences("R10004")
        .await
        .unwrap()
        .is_none());

    // Removing it: gone, the consent stays; removing it again is done as well.
    for _ in 0..2 {
        let r = s
            .post(
                "/preferences/push/unsubscribe",
                &[("csrf", token.as_str()), ("endpoint", endpoint)],
            )
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()[LOCATION], "/preferences?push=off");
    }
    assert!(app
        .store
        .push_subscriptions("R10001")
        .await
        .unwrap()
        .is_empty());
    let prefs = app
        .store
        .portal_preferences("R10001")
        .await
        .unwrap()
        .unwrap();
    assert!(prefs.webpush_consent);
    let r = s
        .post("/preferences/push/unsubscribe", &[("endpoint", endpoint)])
        .await;
    assert_eq!(r.status(), 403);
    app.shutdown().await;
}
