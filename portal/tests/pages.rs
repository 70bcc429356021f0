//! The resident pages over HTTP: login cookie, inbox, notice, draft form with CSRF,
//! confirmation, decline, preferences, and the login hint.

mod common;

use common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::Response;

struct Session<'a> {
    app: &'a App,
    cookie: String,
}

impl Session<'_> {
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.app.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), unescape(r.text().await.unwrap()))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.app
            .http
            .post(format!("{}{path}", self.app.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

async fn login<'a>(app: &'a App, who: &str) -> Session<'a> {
    let r = app
        .http
        .get(format!("{}/login?token={}", app.base, app.token(who)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/inbox");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=3600",
        "Secure",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    Session {
        app,
        cookie: set.split(';').next().unwrap().to_owned(),
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
    // A bad login link.
    let r = app
        .http
        .get(format!("{}/login?token=abc.def.ghi", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
    // `next` stays on this site.
    let r = app
        .http
        .get(format!(
            "{}/login?token={}&next=//evil.example/x",
            app.base,
            app.token("R10003")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/inbox");
    // Browsers drop tabs and newlines from a URL and read `\` as `/`: each of these would
    // leave the site, or break the response, and must land on the inbox instead.
    for next in [
        "/%09/evil.example",
        "/%0a/evil.example",
        "/%0d%0aSet-Cookie:%20x=1",
        "/%0b/evil.example",
        "/%5cevil.example",
        "https://evil.example/",
        "%2f%2fevil.example",
        "/%20/evil.example",
        "",
    ] {
        let r = app
            .http
            .get(format!(
                "{}/login?token={}&next={next}",
                app.base,
                app.token("R10003")
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{next}");
        assert_eq!(r.headers()[LOCATION], "/inbox", "{next}");
    }
    // A path on this site, with its query, is where the login goes.
    let r = app
        .http
        .get(format!(
            "{}/login?token={}&next=%2Fnotices%2Fa%2Fb%3Fx%3D1",
            app.base,
            app.token("R10003")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/notices/a/b?x=1");

    let s = login(&app, "R10003").await;
    let (status, inbox) = s.get("/inbox").await;
    assert_eq!(status, 200);
    assert!(
        inbox.contains("児童手当の認定請求") && inbox.contains("未読"),
        "{inbox}"
    );
    assert!(inbox.contains("保護者としてのお知らせ"));
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

    // Signing out clears the cookie.
    let r = s.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    app.shutdown().await;
}
on_both!(walk_through, pages_walk_through_a_draft);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_asks_to_sign_in_again() {
    let app = spawn_app("sqlite").await;
    let s = login(&app, "R10001").await;
    app.clock.advance(std::time::Duration::from_secs(2 * 3600));
    let (status, html) = s.get("/inbox").await;
    assert_eq!(status, 401);
    assert!(html.contains("有効期限が切れました"), "{html}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app("sqlite").await;
    let s = login(&app, "R10003").await;
    let page = |path: &'static str| {
        app.http
            .get(format!("{}{path}", app.base))
            .header(COOKIE, &s.cookie)
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
