//! The resident sees where the office has their application (docs/office.md): the portal's
//! JSON API and pages show 申請済み → 受付 → 審査中 → 完了, or 差戻し with the office's message
//! and the way to correct and resubmit (a new application version of the same decision).
//! The core systems' API that sets the statuses is tested in `exchange/tests/office.rs`;
//! here the status changes go through the store function it calls.

mod common;

use common::*;
use oshirase_engine::clock::Clock;
use oshirase_engine::ids::RuleId;
use oshirase_store::{ApplicationStatus, StatusChange, StatusOutcome};
use serde_json::{json, Value};

async fn set(app: &App, seq: i64, to: ApplicationStatus, message: Option<&str>) {
    let rules = [RuleId::parse("kokumin-nenkin-shutoku").unwrap()];
    let out = app
        .store
        .change_application_status(StatusChange {
            seq,
            to,
            message,
            actor: "office:kikan",
            rules: &rules,
            now: app.clock.now(),
        })
        .await
        .unwrap();
    assert!(matches!(out, StatusOutcome::Changed(_)), "{out:?}");
}

async fn status_of(app: &App, who: &str, key: &str) -> Value {
    let (status, one) = App::json(app.get(who, &format!("/api/notices/{}", enc(key))).await).await;
    assert_eq!(status, 200, "{one}");
    one["application_status"].clone()
}

/// A page as a signed-in browser sees it (pages take the session cookie, not a bearer).
async fn page(app: &App, who: &str, path: &str) -> String {
    let cookie = app.session_cookie(who).await;
    let (status, html) = app.page(&cookie, path).await;
    assert_eq!(status, 200, "{path}");
    html
}

async fn the_resident_sees_the_status(backend: &str) {
    let app = spawn_app(backend).await;
    let submit = format!("/api/drafts/{}/submit", enc(PENSION));
    assert_eq!(status_of(&app, "R10001", PENSION).await, Value::Null);
    let (status, body) = App::json(
        app.post(
            "R10001",
            &submit,
            Some(json!({"corrections": {"annual_income": 1000000}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let s = status_of(&app, "R10001", PENSION).await;
    assert_eq!(s["seq"], 1);
    assert_eq!(s["status"], "submitted");
    assert_eq!(s["label"], "申請済み");
    assert_eq!(s["step"], 1);
    // The proxy who may read the notice sees it too.
    assert_eq!(
        status_of(&app, "R10005", PENSION).await["label"],
        "申請済み"
    );

    // Read, then a status change: unread again, the news in the inbox.
    let read = format!("/api/notices/{}/read", enc(PENSION));
    assert_eq!(app.post("R10001", &read, None).await.status(), 204);
    set(&app, 1, ApplicationStatus::Received, None).await;
    let (_, one) = App::json(
        app.get("R10001", &format!("/api/notices/{}", enc(PENSION)))
            .await,
    )
    .await;
    assert_eq!(one["read"], false);
    set(&app, 1, ApplicationStatus::InReview, None).await;
    let s = status_of(&app, "R10001", PENSION).await;
    assert_eq!(
        (s["label"].as_str(), s["step"].as_i64()),
        (Some("審査中"), Some(3))
    );
    let (_, list) = App::json(app.get("R10001", "/api/notices").await).await;
    let n = list["notices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["key"] == PENSION)
        .unwrap();
    assert_eq!(n["application_status"]["label"], "審査中");
    let inbox = page(&app, "R10001", "/inbox").await;
    assert!(inbox.contains("app-status\">審査中<"), "{inbox}");
    let notice = page(&app, "R10001", &format!("/notices/{PENSION}")).await;
    assert!(notice.contains("受付番号 1"), "{notice}");
    assert!(notice.contains("審査中（現在）"), "{notice}");

    // 差戻し with the office's message: shown with the way to resubmit; the draft is open.
    let msg = "年間所得を証明する書類を添付してください。";
    set(&app, 1, ApplicationStatus::Returned, Some(msg)).await;
    let s = status_of(&app, "R10001", PENSION).await;
    assert_eq!(s["status"], "returned");
    assert_eq!(s["label"], "差戻し");
    assert_eq!(s["message"], msg);
    assert_eq!(s["step"], 0);
    let notice = page(&app, "R10001", &format!("/notices/{PENSION}")).await;
    assert!(notice.contains("差戻し"), "{notice}");
    assert!(notice.contains(msg), "{notice}");
    assert!(
        notice.contains(&format!("id=\"resubmit\" href=\"/drafts/{PENSION}\"")),
        "{notice}"
    );
    let inbox = page(&app, "R10001", "/inbox").await;
    assert!(inbox.contains(">差戻し<"), "{inbox}");

    // Resubmitted: version 2 of the same decision, the next number, 申請済み again.
    let (status, body) = App::json(
        app.post(
            "R10001",
            &submit,
            Some(json!({"corrections": {"annual_income": 900000}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let s = status_of(&app, "R10001", PENSION).await;
    assert_eq!(
        (s["seq"].as_i64(), s["version"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(s["label"], "申請済み");
    let v2 = app.store.application(2).await.unwrap().unwrap();
    assert_eq!(v2.decision_key.as_str(), PENSION);
    assert_eq!(v2.corrections["annual_income"].after, json!(900000));

    // 却下 with its message.
    set(
        &app,
        2,
        ApplicationStatus::Rejected,
        Some("所得が基準を超えています。"),
    )
    .await;
    let notice = page(&app, "R10001", &format!("/notices/{PENSION}")).await;
    assert!(notice.contains("却下"), "{notice}");
    assert!(notice.contains("所得が基準を超えています。"), "{notice}");
    assert!(!notice.contains("id=\"resubmit\""), "{notice}");
    app.shutdown().await;
}
on_both!(status_in_the_portal, the_resident_sees_the_status);
