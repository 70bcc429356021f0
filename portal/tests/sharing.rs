//! A resident consents to share their own data with a registered party (docs/sharing.md), on
//! both databases: the authorization request checked before anything is shown (an unknown
//! party or redirect URI gets a page, never a redirect; a request without PKCE, or asking
//! for items outside the party's registration, goes back to the party with the error); the
//! consent page shows the party, its purpose, each item with its value and the expiry, and
//! withholds a protected person's address; approving writes the grant (without the optional
//! items left unticked) and sends the code back with the state; declining sends
//! `access_denied`; the dashboard lists the grant and one click revokes it.

mod common;

use common::*;
use oshirase_engine::clock::Clock;
use oshirase_store::PartySpec;
use serde_json::json;

const REDIRECT: &str = "https://payroll.example.com/oauth/callback";
/// The agencies' API whose token endpoint redeems the codes: the `iss` of the redirects.
const SHARE_ISSUER: &str = "https://api.example.lg.jp";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn party() -> PartySpec {
    PartySpec {
        id: "kyuyo-soft".into(),
        name: "株式会社サンプル給与（年末調整）".into(),
        purpose: "年末調整の申告書に、住所と氏名を記入するため".into(),
        redirect_uris: vec![REDIRECT.into()],
        client_jwks: json!({"keys": []}).to_string(),
        items: vec![
            "name".into(),
            "name_kana".into(),
            "address".into(),
            "birth_date".into(),
        ],
        max_grant_days: 30,
        revocation_uri: None,
    }
}

async fn app(backend: &str, changes: &[(&str, serde_json::Value)]) -> App {
    serve_with_party(
        backend,
        &party(),
        changes,
        config().share_issuer(SHARE_ISSUER),
    )
    .await
}

fn authorize_url(details: serde_json::Value, extra: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse("http://x/oauth/authorize").unwrap();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in [
            ("response_type", "code"),
            ("client_id", "kyuyo-soft"),
            ("redirect_uri", REDIRECT),
            ("state", "st-123"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ] {
            if !extra.iter().any(|(e, _)| *e == k) {
                q.append_pair(k, v);
            }
        }
        for (k, v) in extra.iter().filter(|(_, v)| !v.is_empty()) {
            q.append_pair(k, v);
        }
        q.append_pair("authorization_details", &details.to_string());
    }
    format!("{}?{}", u.path(), u.query().unwrap())
}

fn details() -> serde_json::Value {
    json!([{"type": "oshirase_resident_data", "items": ["name", "address"],
            "optional_items": ["birth_date"], "max_days": 10}])
}

/// The hidden and CSRF fields of the consent form.
fn form_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in html.split("<input type=\"hidden\" ").skip(1) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            let at = part.find(&key)? + key.len();
            Some(part[at..at + part[at..].find('"')?].to_owned())
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            let v = v
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">");
            out.push((n, v));
        }
    }
    out
}

async fn post(app: &App, cookie: &str, path: &str, form: &[(String, String)]) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.base))
        .header(reqwest::header::COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

fn location(r: &reqwest::Response) -> url::Url {
    url::Url::parse(r.headers()[reqwest::header::LOCATION].to_str().unwrap()).unwrap()
}

fn param(u: &url::Url, name: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn a_resident_consents_and_revokes(backend: &str) {
    let app = app(backend, &[]).await;
    let cookie = app.session_cookie("R10001").await;
    // The consent form's answer is a redirect to the party: its origin, and only it, is
    // allowed as a form action (browsers hold redirects to it).
    let r = app
        .http
        .get(format!("{}{}", app.base, authorize_url(details(), &[])))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let csp = r.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.ends_with("form-action 'self' https://payroll.example.com"),
        "{csp}"
    );
    let (status, html) = app.page(&cookie, &authorize_url(details(), &[])).await;
    assert_eq!(status, 200, "{html}");
    let text = visible(&html);
    for shown in [
        "株式会社サンプル給与（年末調整）",
        "年末調整の申告書に、住所と氏名を記入するため",
        "山田 花子",
        "東京都利島村1番地",
        "1960-05-01",
        "2026年10月11日",
    ] {
        assert!(text.contains(shown), "{shown} in {text}");
    }
    // Approved with the optional birth date unticked: the grant holds the required items.
    let mut form = form_fields(&html);
    form.push(("action".into(), "approve".into()));
    let r = post(&app, &cookie, "/oauth/authorize", &form).await;
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert_eq!(back.as_str().split('?').next().unwrap(), REDIRECT);
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    // RFC 9207: the answer names the issuer whose token endpoint redeems the code.
    assert_eq!(param(&back, "iss").as_deref(), Some(SHARE_ISSUER));
    let code = param(&back, "code").unwrap();
    assert!(code.len() >= 40);
    let grants = app.store.grants_of_resident("R10001").await.unwrap();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(g.items, vec!["name", "address"]);
    assert_eq!(g.party_id, "kyuyo-soft");
    assert_eq!(
        oshirase_engine::calendar::days_between(
            g.created_at.date_naive(),
            g.expires_at.date_naive()
        ),
        10,
        "the party asked for 10 days"
    );
    // With the birth date ticked, it is given too.
    let (_, html) = app.page(&cookie, &authorize_url(details(), &[])).await;
    let mut form = form_fields(&html);
    form.push(("item".into(), "birth_date".into()));
    form.push(("action".into(), "approve".into()));
    assert_eq!(
        post(&app, &cookie, "/oauth/authorize", &form)
            .await
            .status(),
        303
    );
    let grants = app.store.grants_of_resident("R10001").await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants
        .iter()
        .any(|g| g.items == ["name", "address", "birth_date"]));
    // The dashboard: both, live; one revoked in one click.
    let (status, html) = app.page(&cookie, "/sharing").await;
    assert_eq!(status, 200);
    let text = visible(&html);
    assert!(
        text.contains("株式会社サンプル給与（年末調整）") && text.contains("提供中"),
        "{text}"
    );
    assert!(text.contains("氏名、住所"), "{text}");
    let csrf = form_fields(&html)
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap()
        .1;
    let id = grants[0].id.clone();
    let r = post(
        &app,
        &cookie,
        &format!("/sharing/{id}/revoke"),
        &[("csrf".into(), "forged".into())],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = post(
        &app,
        &cookie,
        &format!("/sharing/{id}/revoke"),
        &[("csrf".into(), csrf.clone())],
    )
    .await;
    assert_eq!(r.status(), 303);
    let g = app.store.grant(&id).await.unwrap().unwrap();
    assert!(g.revoked_at.is_some() && !g.live(app.clock.now()));
    // Someone else cannot revoke it, nor see it.
    let other = app.session_cookie("R10004").await;
    let (_, html) = app.page(&other, "/sharing").await;
    assert!(visible(&html).contains("提供している先はありません"));
    let audit = app
        .store
        .audit_entries(Some(&format!("grant/{id}")))
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, vec!["share.consent", "share.revoke"]);
}
on_both!(consent, a_resident_consents_and_revokes);

async fn bad_requests_are_refused(backend: &str) {
    let app = app(backend, &[]).await;
    let cookie = app.session_cookie("R10001").await;
    // Before the redirect URI is known to be the party's: a page, no redirect.
    for (what, extra) in [
        ("unknown party", vec![("client_id", "nobody")]),
        (
            "another redirect",
            vec![("redirect_uri", "https://evil.example/cb")],
        ),
    ] {
        let (status, html) = app.page(&cookie, &authorize_url(details(), &extra)).await;
        assert_eq!(status, 400, "{what}");
        assert!(
            html.contains("この連携の依頼は受け付けられません"),
            "{what}"
        );
    }
    // After: back to the party, with the error and the state.
    let cases = [
        (
            "no PKCE",
            details(),
            vec![("code_challenge", "")],
            "invalid_request",
        ),
        (
            "plain PKCE",
            details(),
            vec![("code_challenge_method", "plain")],
            "invalid_request",
        ),
        (
            "an item outside the registration",
            json!([{"type": "oshirase_resident_data", "items": ["name", "kokuho"]}]),
            vec![],
            "invalid_authorization_details",
        ),
        (
            "another type",
            json!([{"type": "payment_initiation", "items": ["name"]}]),
            vec![],
            "invalid_authorization_details",
        ),
        (
            "a token flow",
            details(),
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
    ];
    for (what, d, extra, error) in cases {
        let r = app
            .http
            .get(format!("{}{}", app.base, authorize_url(d, &extra)))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{what}");
        let back = location(&r);
        assert_eq!(param(&back, "error").as_deref(), Some(error), "{what}");
        assert_eq!(param(&back, "state").as_deref(), Some("st-123"), "{what}");
        assert_eq!(param(&back, "iss").as_deref(), Some(SHARE_ISSUER), "{what}");
        assert!(param(&back, "code").is_none(), "{what}");
    }
    // A consent form whose posted request was altered is checked again.
    let (_, html) = app.page(&cookie, &authorize_url(details(), &[])).await;
    let mut form: Vec<(String, String)> = form_fields(&html)
        .into_iter()
        .map(|(n, v)| {
            if n == "authorization_details" {
                (
                    n,
                    json!([{"type": "oshirase_resident_data", "items": ["kokuho"]}]).to_string(),
                )
            } else {
                (n, v)
            }
        })
        .collect();
    form.push(("action".into(), "approve".into()));
    let r = post(&app, &cookie, "/oauth/authorize", &form).await;
    assert_eq!(
        param(&location(&r), "error").as_deref(),
        Some("invalid_authorization_details")
    );
    // Declined: access_denied, nothing granted.
    let mut form = form_fields(&html);
    form.push(("action".into(), "deny".into()));
    let r = post(&app, &cookie, "/oauth/authorize", &form).await;
    assert_eq!(
        param(&location(&r), "error").as_deref(),
        Some("access_denied")
    );
    assert!(app
        .store
        .grants_of_resident("R10001")
        .await
        .unwrap()
        .is_empty());
    // Not signed in: the login hint, with a same-site link back to the whole request.
    let r = app
        .http
        .get(format!("{}{}", app.base, authorize_url(details(), &[])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let html = r.text().await.unwrap().replace("&amp;", "&");
    assert!(html.contains("code_challenge_method=S256"), "{html}");
}
on_both!(refused, bad_requests_are_refused);

/// A portal that knows of no token endpoint takes no consent: a page, never a redirect with a
/// code nobody could redeem.
#[tokio::test]
async fn a_portal_without_a_share_issuer_takes_no_consent() {
    let app = serve_with_party("sqlite", &party(), &[], config()).await;
    let cookie = app.session_cookie("R10001").await;
    let (status, html) = app.page(&cookie, &authorize_url(details(), &[])).await;
    assert_eq!(status, 400);
    assert!(
        html.contains("外部のサービスへの情報の提供を受け付けていません"),
        "{html}"
    );
}

async fn a_protected_address_is_never_offered(backend: &str) {
    let app = app(backend, &[("R10001", json!({"support_measure": true}))]).await;
    let cookie = app.session_cookie("R10001").await;
    let (status, html) = app.page(&cookie, &authorize_url(details(), &[])).await;
    assert_eq!(status, 200);
    let text = visible(&html);
    assert!(!text.contains("東京都利島村1番地"), "{text}");
    assert!(text.contains("支援措置のため提供できません"), "{text}");
    let mut form = form_fields(&html);
    form.push(("action".into(), "approve".into()));
    assert_eq!(
        post(&app, &cookie, "/oauth/authorize", &form)
            .await
            .status(),
        303
    );
    let grants = app.store.grants_of_resident("R10001").await.unwrap();
    assert_eq!(grants[0].items, vec!["name"]);
}
on_both!(protected, a_protected_address_is_never_offered);

/// 自己情報: the resident reads their own record item by item and asks for a correction,
/// which reaches the counter's work queue (not a department's) and changes nothing.
async fn a_resident_reads_their_record_and_asks_for_a_correction(backend: &str) {
    let app = app(backend, &[]).await;
    let cookie = app.session_cookie("R10001").await;
    let (status, html) = app.page(&cookie, "/me").await;
    assert_eq!(status, 200);
    let text = visible(&html);
    for shown in [
        "氏名",
        "山田 花子",
        "ヤマダ ハナコ",
        "1960-05-01",
        "東京都利島村1番地",
    ] {
        assert!(text.contains(shown), "{shown} in {text}");
    }
    let csrf = form_fields(&html)
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap()
        .1;
    let ask = |msg: &str, item: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("item".to_owned(), item.to_owned()),
            ("message".to_owned(), msg.to_owned()),
        ]
    };
    // An unknown item, nothing said, too much said: refused, nothing recorded.
    for form in [
        ask("x", "my_number"),
        ask("  ", "name_kana"),
        ask(&"あ".repeat(1001), "name_kana"),
    ] {
        assert_eq!(
            post(&app, &cookie, "/me/corrections", &form).await.status(),
            422
        );
    }
    let r = post(
        &app,
        &cookie,
        "/me/corrections",
        &ask("ヤマダ ハナエ です", "name_kana"),
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, html) = app.page(&cookie, "/me?requested=1").await;
    assert!(visible(&html).contains("訂正の申出を受け付けました"));
    // The register is unchanged.
    let record = app.store.resident("R10001").await.unwrap().unwrap();
    assert_eq!(record.name.kana, "ヤマダ ハナコ");
    // The counter sees it; a department does not.
    let (console, config, _stop) = serve_console(&app).await;
    let login = |who: &str, roles: &[&str], dept: Option<&str>| {
        oshirase_portal::mint_staff_token(
            &config,
            who,
            roles,
            dept,
            app.clock.now(),
            std::time::Duration::from_secs(600),
        )
        .unwrap()
    };
    for (token, sees) in [
        (login("madoguchi-1", &["窓口"], None), true),
        (login("kosodate-1", &["担当課"], Some("kosodate")), false),
    ] {
        let r = app
            .http
            .post(format!("{console}/office/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let staff = r.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let page = app
            .http
            .get(format!("{console}/office/"))
            .header(reqwest::header::COOKIE, staff)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let text = visible(&page);
        assert_eq!(text.contains("住民記録の訂正の申出（1件）"), sees, "{text}");
        assert_eq!(
            text.contains("name_kana: ヤマダ ハナエ です"),
            sees,
            "{text}"
        );
    }
    let audit = app
        .store
        .audit_entries(Some("resident/R10001"))
        .await
        .unwrap();
    assert!(audit.iter().any(|a| a.action == "record.correction.request"
        && !a.detail.as_deref().unwrap_or("").contains("ハナエ")));
}
on_both!(
    own_record,
    a_resident_reads_their_record_and_asks_for_a_correction
);

/// A proxy with scope `all` consents for their principal, a guardian for a minor; a proxy
/// with a narrower scope, and anyone for a person under a support measure, cannot.
async fn proxies_consent_within_their_scope(backend: &str) {
    let app = app(
        backend,
        &[(
            "R10001",
            json!({"proxies": [{"id": "R10005", "scopes": ["pension"]},
                               {"id": "R10006", "scopes": ["all"]}]}),
        )],
    )
    .await;
    let for_page = |cookie: String, whom: &'static str| {
        let app = &app;
        async move {
            let url = authorize_url(details(), &[("for", whom)]);
            app.page(&cookie, &url).await
        }
    };
    // The 包括代理 (scope all): the page offers the principal, and the grant is theirs.
    let all = app.session_cookie("R10006").await;
    let (status, html) = app.page(&all, &authorize_url(details(), &[])).await;
    assert_eq!(status, 200);
    assert!(
        visible(&html).contains("どなたの情報を提供しますか"),
        "{html}"
    );
    let (status, html) = for_page(all.clone(), "R10001").await;
    assert_eq!(status, 200, "{html}");
    assert!(visible(&html).contains("山田 花子"), "{html}");
    let mut form = form_fields(&html);
    assert!(form.iter().any(|(n, v)| n == "for" && v == "R10001"));
    form.push(("action".into(), "approve".into()));
    assert_eq!(
        post(&app, &all, "/oauth/authorize", &form).await.status(),
        303
    );
    let g = &app.store.grants_of_resident("R10001").await.unwrap()[0];
    assert_eq!(
        (g.resident_id.as_str(), g.granted_by.as_str()),
        ("R10001", "R10006")
    );
    // A pension-only proxy: refused, on the page and when posting.
    let pension = app.session_cookie("R10005").await;
    let (status, html) = for_page(pension.clone(), "R10001").await;
    assert_eq!(status, 404);
    assert!(visible(&html).contains("この方の情報は提供できません"));
    let mut forged = form.clone();
    forged.retain(|(n, _)| n != "csrf");
    let (_, mine) = app.page(&pension, &authorize_url(details(), &[])).await;
    forged.extend(form_fields(&mine).into_iter().filter(|(n, _)| n == "csrf"));
    assert_eq!(
        post(&app, &pension, "/oauth/authorize", &forged)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.store.grants_of_resident("R10001").await.unwrap().len(),
        1
    );
    // A guardian for their minor child.
    let guardian = app.session_cookie("R10003").await;
    let (status, html) = for_page(guardian.clone(), "R10002").await;
    assert_eq!(status, 200, "{html}");
    assert!(visible(&html).contains("佐藤 陽"));
    // Somebody unrelated.
    let (status, _) = for_page(app.session_cookie("R10004").await, "R10001").await;
    assert_eq!(status, 404);
}
on_both!(proxies, proxies_consent_within_their_scope);

/// 自己情報 for someone else: a guardian reads their child's record and notices there and
/// asks for a correction of it; a stranger cannot.
async fn a_guardian_reads_a_childs_record(backend: &str) {
    let app = app(backend, &[]).await;
    let guardian = app.session_cookie("R10003").await;
    let (status, html) = app.page(&guardian, "/me").await;
    assert_eq!(status, 200);
    assert!(visible(&html).contains("ほかの方の情報"), "{html}");
    let (status, html) = app.page(&guardian, "/me?for=R10002").await;
    assert_eq!(status, 200, "{html}");
    let text = visible(&html);
    assert!(
        text.contains("佐藤 陽") && text.contains("児童手当の認定請求"),
        "{text}"
    );
    let mut form: Vec<(String, String)> = form_fields(&html);
    assert!(form.iter().any(|(n, v)| n == "for" && v == "R10002"));
    form.push(("item".into(), "name".into()));
    form.push(("message".into(), "佐藤 ひなた".into()));
    let r = post(&app, &guardian, "/me/corrections", &form).await;
    assert_eq!(r.status(), 303);
    let audit = app
        .store
        .audit_entries(Some("resident/R10002"))
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert!(actions.contains(&("R10003", "record.read")), "{actions:?}");
    assert!(
        actions.contains(&("resident:R10003", "record.correction.request")),
        "{actions:?}"
    );
    let stranger = app.session_cookie("R10004").await;
    let (status, html) = app.page(&stranger, "/me?for=R10002").await;
    assert_eq!(status, 404);
    assert!(!visible(&html).contains("佐藤 陽"));
}
on_both!(guardian_record, a_guardian_reads_a_childs_record);
