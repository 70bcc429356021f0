//! The staff console (docs/office.md), on both databases: staff sign in with their own
//! identity provider's token; 窓口 see the notices only a person can deliver and mark them
//! handled (the outbox row delivered, the action audited); a 担当課 member sees only their
//! department's procedures, takes in (受付) their applications, and gets "not found" for
//! another department's items; forged, foreign and role-less tokens open nothing; a
//! resident's session is not a staff session and the other way round; a resident is looked
//! up by register id, never by My Number.

mod common;

use std::time::Duration;

use common::*;
use oshirase_engine::clock::Clock;
use oshirase_engine::eval::RuleFailure;
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_portal::{mint_staff_token, ConsoleConfig, JwtKey, Secret};
use oshirase_store::{ApplicationStatus, OutboxState};
use serde_json::json;
use tokio::sync::watch;

/// The resident portal and the console over one store, with a death in a single-person
/// household that only staff can act on.
struct Both {
    app: App,
    console: String,
    config: ConsoleConfig,
    _stop: watch::Sender<bool>,
}

async fn start(backend: &str) -> Both {
    let app = spawn_app(backend).await;
    add_lonely_death(&app).await;
    let (console, config, stop) = serve_console(&app).await;
    Both {
        app,
        console,
        config,
        _stop: stop,
    }
}

impl Both {
    fn token(&self, who: &str, roles: &[&str], dept: Option<&str>) -> String {
        mint_staff_token(
            &self.config,
            who,
            roles,
            dept,
            self.app.clock.now(),
            Duration::from_secs(600),
        )
        .unwrap()
    }

    /// Signs in with `token`: the status and the cookie it set, if any.
    async fn login_with(&self, token: &str) -> (u16, Option<String>) {
        let r = self
            .app
            .http
            .post(format!("{}/office/login", self.console))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let cookie = r
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        (r.status().as_u16(), cookie)
    }

    async fn login(&self, who: &str, roles: &[&str], dept: Option<&str>) -> String {
        let (status, cookie) = self.login_with(&self.token(who, roles, dept)).await;
        assert_eq!(status, 303, "signing in as {who}");
        cookie.expect("a session cookie")
    }

    async fn page(&self, cookie: &str, path: &str) -> (u16, String) {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.console))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap().replace("&#x2f;", "/"))
    }

    async fn post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> u16 {
        self.app
            .http
            .post(format!("{}{path}", self.console))
            .header(reqwest::header::COOKIE, cookie)
            .form(form)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The CSRF token of a signed-in page.
    async fn csrf(&self, cookie: &str) -> String {
        let (_, html) = self.page(cookie, "/office/").await;
        let at = html
            .find("name=\"csrf\" value=\"")
            .expect("a form with the CSRF token");
        let rest = &html[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    async fn staff_row(&self) -> oshirase_store::OutboxRow {
        self.app
            .store
            .outbox_rows(None)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.channel == "staff")
            .expect("the staff row")
    }
}

async fn the_counter_handles_a_staff_notice(backend: &str) {
    let b = start(backend).await;
    let cookie = b.login("madoguchi-1", &["窓口"], None).await;
    let (status, html) = b.page(&cookie, "/office/").await;
    assert_eq!(status, 200);
    let text = visible(&html);
    assert!(
        text.contains("職員からの連絡が必要なお知らせ（1件）"),
        "{text}"
    );
    assert!(
        text.contains("葬祭費の支給申請") && text.contains("R10020"),
        "{text}"
    );
    assert!(text.contains("contact the family through staff"), "{text}");
    // The counter does not take in applications: that list is the departments'.
    assert!(!text.contains("受付待ちの申請"), "{text}");
    let row = b.staff_row().await;
    assert_eq!(row.state, OutboxState::Pending);
    let path = format!("/office/items/staff_notice/{}", row.id);
    // Without the session's CSRF token nothing happens.
    assert_eq!(b.post(&cookie, &path, &[("csrf", "forged")]).await, 403);
    assert_eq!(b.staff_row().await.state, OutboxState::Pending);
    let csrf = b.csrf(&cookie).await;
    let long = "あ".repeat(501);
    assert_eq!(
        b.post(&cookie, &path, &[("csrf", &csrf), ("note", &long)])
            .await,
        422
    );
    assert_eq!(b.staff_row().await.state, OutboxState::Pending);
    assert_eq!(
        b.post(
            &cookie,
            &path,
            &[("csrf", &csrf), ("note", "長女に電話で連絡済み")]
        )
        .await,
        303
    );
    assert_eq!(b.staff_row().await.state, OutboxState::Delivered);
    let (_, html) = b.page(&cookie, "/office/").await;
    assert!(
        visible(&html).contains("職員からの連絡が必要なお知らせ（0件）"),
        "{html}"
    );
    // Twice is refused, and changes nothing.
    assert_eq!(b.post(&cookie, &path, &[("csrf", &csrf)]).await, 409);
    let audit = b
        .app
        .store
        .audit_entries(Some(&format!("staff_notice/{}", row.id)))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, "staff:madoguchi-1");
    assert_eq!(audit[0].action, "staff.handled");
    // The note's words about a person are not in the log; its length is.
    let detail = audit[0].detail.as_deref().unwrap();
    assert!(
        detail.contains("\"note_chars\":10") && !detail.contains("長女"),
        "{detail}"
    );
}
on_both!(counter, the_counter_handles_a_staff_notice);

async fn a_department_sees_only_its_procedures(backend: &str) {
    let b = start(backend).await;
    // The guardian submits the child allowance (子育て支援係) and the adult her pension
    // (保険年金係).
    for (who, key) in [("R10003", CHILD), ("R10001", PENSION)] {
        let r = b
            .app
            .post(
                who,
                &format!("/api/drafts/{}/submit", enc(key)),
                Some(json!({})),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let kosodate = b.login("kosodate-1", &["担当課"], Some("kosodate")).await;
    let (_, html) = b.page(&kosodate, "/office/").await;
    let text = visible(&html);
    assert!(text.contains("受付待ちの申請（1件）"), "{text}");
    assert!(
        text.contains("児童手当の認定請求") && text.contains("保護者"),
        "{text}"
    );
    assert!(!text.contains("国民年金の手続"), "{text}");
    assert!(
        text.contains("職員からの連絡が必要なお知らせ（0件）"),
        "{text}"
    );
    assert!(!text.contains("R10020"), "{text}");
    // Another department's staff notice and application answer like missing ones.
    let csrf = b.csrf(&kosodate).await;
    let row = b.staff_row().await;
    let other = format!("/office/items/staff_notice/{}", row.id);
    assert_eq!(b.post(&kosodate, &other, &[("csrf", &csrf)]).await, 404);
    assert_eq!(b.staff_row().await.state, OutboxState::Pending);
    let pension_seq = b
        .app
        .store
        .applications_of(&oshirase_engine::eval::DecisionKey::parse(PENSION).unwrap())
        .await
        .unwrap()[0]
        .seq;
    let child_seq = b
        .app
        .store
        .applications_of(&oshirase_engine::eval::DecisionKey::parse(CHILD).unwrap())
        .await
        .unwrap()[0]
        .seq;
    assert_eq!(
        b.post(
            &kosodate,
            &format!("/office/applications/{pension_seq}/receive"),
            &[("csrf", &csrf)]
        )
        .await,
        404
    );
    assert_eq!(
        b.app
            .store
            .application(pension_seq)
            .await
            .unwrap()
            .unwrap()
            .status,
        ApplicationStatus::Submitted
    );
    // Their own: taken in, by them.
    assert_eq!(
        b.post(
            &kosodate,
            &format!("/office/applications/{child_seq}/receive"),
            &[("csrf", &csrf)]
        )
        .await,
        303
    );
    let app = b.app.store.application(child_seq).await.unwrap().unwrap();
    assert_eq!(app.status, ApplicationStatus::Received);
    let history = b.app.store.application_history(child_seq).await.unwrap();
    assert_eq!(history.last().unwrap().actor, "staff:kosodate-1");
    // Again: the state machine refuses 受付 → 受付, and says so.
    assert_eq!(
        b.post(
            &kosodate,
            &format!("/office/applications/{child_seq}/receive"),
            &[("csrf", &csrf)]
        )
        .await,
        409
    );
    // The resident sees it in the portal.
    let (_, one) = App::json(
        b.app
            .get("R10003", &format!("/api/notices/{}", enc(CHILD)))
            .await,
    )
    .await;
    assert_eq!(one["application_status"]["label"], "受付", "{one}");
    // A counter visit for the adult: the department sees none of her (pension) notices.
    let (status, html) = b.page(&kosodate, "/office/residents?id=R10001").await;
    assert_eq!(status, 200);
    let text = visible(&html);
    assert!(
        text.contains("担当の範囲で、この方へのお知らせはありません"),
        "{text}"
    );
    // The pension department's member sees the application and the staff notice.
    let nenkin = b.login("nenkin-1", &["担当課"], Some("hoken_nenkin")).await;
    let (_, html) = b.page(&nenkin, "/office/").await;
    let text = visible(&html);
    assert!(
        text.contains("受付待ちの申請（1件）") && text.contains("国民年金の手続"),
        "{text}"
    );
    assert!(text.contains("R10020"), "{text}");
}
on_both!(department, a_department_sees_only_its_procedures);

async fn only_staff_tokens_open_the_console(backend: &str) {
    let b = start(backend).await;
    let forged = {
        let mut c = b.config.clone();
        c.jwt.key = JwtKey::Hs256(Secret::new("another-secret-0123456789abcdef0123456"));
        mint_staff_token(
            &c,
            "madoguchi-1",
            &["窓口"],
            None,
            b.app.clock.now(),
            Duration::from_secs(600),
        )
        .unwrap()
    };
    let foreign = {
        let mut c = b.config.clone();
        c.local_gov_code = "131016".into();
        mint_staff_token(
            &c,
            "madoguchi-1",
            &["窓口"],
            None,
            b.app.clock.now(),
            Duration::from_secs(600),
        )
        .unwrap()
    };
    let expired = mint_staff_token(
        &b.config,
        "madoguchi-1",
        &["窓口"],
        None,
        oshirase_engine::clock::before(b.app.clock.now(), Duration::from_secs(2 * 3600)),
        Duration::from_secs(600),
    )
    .unwrap();
    for (what, token) in [
        ("forged", forged),
        ("another municipality", foreign),
        ("expired", expired),
        ("no role", b.token("madoguchi-1", &["visitor"], None)),
        (
            "a department without its department",
            b.token("x-1", &["担当課"], Some("nowhere")),
        ),
        (
            "a staff id that is not one",
            b.token("a b", &["窓口"], None),
        ),
        // A resident's token is not a staff token.
        ("a resident's", b.app.token("R10001")),
    ] {
        let (status, cookie) = b.login_with(&token).await;
        assert_eq!(status, 401, "{what}");
        assert!(cookie.is_none(), "{what}");
    }
    // A resident's session is not a staff one, and a staff one is not a resident's.
    let resident = b.app.session_cookie("R10001").await;
    let (status, html) = b.page(&resident, "/office/").await;
    assert_eq!(status, 401);
    assert!(html.contains("ログインが必要です"));
    let staff = b.login("madoguchi-1", &["窓口"], None).await;
    let (status, _) = b
        .app
        .page(
            &staff.replace("oshirase_staff=", "oshirase_session="),
            "/inbox",
        )
        .await;
    assert_eq!(status, 401);
    // Logged out, the cookie is nobody's.
    let csrf = b.csrf(&staff).await;
    assert_eq!(
        b.post(&staff, "/office/logout", &[("csrf", &csrf)]).await,
        303
    );
    assert_eq!(b.page(&staff, "/office/").await.0, 401);
}
on_both!(tokens, only_staff_tokens_open_the_console);

async fn a_resident_is_found_by_register_id_only(backend: &str) {
    let b = start(backend).await;
    let cookie = b.login("madoguchi-1", &["窓口"], None).await;
    let (status, html) = b.page(&cookie, "/office/residents?id=123456789012").await;
    assert_eq!(status, 422);
    assert!(visible(&html).contains("個人番号（マイナンバー）では検索できません"));
    let (status, html) = b.page(&cookie, "/office/residents?id=R10001").await;
    assert_eq!(status, 200);
    let text = visible(&html);
    assert!(
        text.contains("国民年金の手続") && text.contains("国民健康保険の加入"),
        "{text}"
    );
    assert!(text.contains("住民課 保険年金係"), "{text}");
    assert!(!text.contains("児童手当"), "{text}");
    // A proxy sees what they receive for others, named so.
    let (_, html) = b.page(&cookie, "/office/residents?id=R10005").await;
    assert!(
        visible(&html).contains("R10001（この方は受取人）"),
        "{html}"
    );
    let audit = b
        .app
        .store
        .audit_entries(Some("resident/R10001"))
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("staff:madoguchi-1", "staff.resident.read")
    );
}
on_both!(resident_search, a_resident_is_found_by_register_id_only);

async fn rule_failures_reach_the_administrator(backend: &str) {
    let b = start(backend).await;
    let failure = RuleFailure {
        rule: RuleId::parse("kokuho-kanyu").unwrap(),
        rule_version: 3,
        file: "rules/kokuho-kanyu.yaml".into(),
        line: 12,
        field: "conditions[0]".into(),
        resident: ResidentId::parse("R10004").unwrap(),
        message: "attributes.income is not a number".into(),
    };
    b.app
        .store
        .record_rule_failures(d("2026-10-01"), &[failure], b.app.clock.now())
        .await
        .unwrap();
    let admin = b.login("kanri-1", &["管理者"], None).await;
    let (_, html) = b.page(&admin, "/office/").await;
    let text = visible(&html);
    assert!(
        text.contains("前回の実行で評価できなかったルール（1件）"),
        "{text}"
    );
    assert!(
        text.contains(
            "rules/kokuho-kanyu.yaml:12: conditions[0]: attributes.income is not a number"
        ),
        "{text}"
    );
    let counter = b.login("madoguchi-1", &["窓口"], None).await;
    let (_, html) = b.page(&counter, "/office/").await;
    assert!(!visible(&html).contains("評価できなかったルール"));
    let csrf = b.csrf(&admin).await;
    let item = "/office/items/rule_failure/kokuho-kanyu%2FR10004%2F2026-10-01";
    assert_eq!(b.post(&admin, item, &[("csrf", &csrf)]).await, 303);
    let (_, html) = b.page(&admin, "/office/").await;
    assert!(visible(&html).contains("前回の実行で評価できなかったルール（0件）"));
    // The next run replaces the failures: none now.
    b.app
        .store
        .record_rule_failures(d("2026-10-02"), &[], b.app.clock.now())
        .await
        .unwrap();
}
on_both!(failures, rule_failures_reach_the_administrator);

#[test]
fn a_console_configuration_names_its_problems() {
    let mut c = console_config();
    c.rule_departments
        .insert(RuleId::parse("keirou").unwrap(), "fukushi".into());
    c.jwt.key = JwtKey::Hs256(Secret::new("short"));
    let e = c.check().unwrap_err().to_string();
    assert!(e.contains("keirou") && e.contains("fukushi"), "{e}");
    assert!(e.contains("32 bytes"), "{e}");
}
