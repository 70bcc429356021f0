//! The JSON API over a real database (SQLite and PostgreSQL) and a real socket.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oshirase_engine::clock::Clock;
use oshirase_portal::{mint_token, JwtKey, PortalConfig};
use reqwest::Method;
use serde_json::{json, Value};

async fn readers_see_exactly_their_notices(backend: &str) {
    let app = spawn_app(backend).await;
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let keys = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    // The subject: both of her own notices.
    assert_eq!(keys(app.keys("R10001").await), set(&[PENSION, HEALTH]));
    // The guardian: the child's notice only.
    assert_eq!(keys(app.keys("R10003").await), set(&[CHILD]));
    // The pension proxy: the pension notice, not the health insurance one it has a row for.
    assert_eq!(keys(app.keys("R10005").await), set(&[PENSION]));
    // A proxy whose authority ended yesterday: nothing.
    assert!(app.keys("R10006").await.is_empty());
    assert_eq!(keys(app.keys("R10004").await), set(&[OTHER]));

    let (status, list) = App::json(app.get("R10003", "/api/notices").await).await;
    assert_eq!(status, 200);
    let n = &list["notices"][0];
    assert_eq!(n["title"], "児童手当の認定請求");
    assert_eq!(n["subject"], "R10002");
    assert_eq!(n["role"], "guardian");
    assert_eq!(n["category"], "childcare");
    assert_eq!(n["deadline"], "2026-10-15");
    assert_eq!(n["read"], false);
    assert_eq!(n["draft_state"], "open");
    assert_eq!(
        n["url"],
        "https://portal.example.jp/notices/jidou-teate-nintei/R10002/2026-10-01"
    );
    assert!(n["created"].as_str().unwrap().starts_with("2026-10-01"));

    // One notice, with recommendations; then marked read.
    let (status, one) = App::json(
        app.get("R10001", &format!("/api/notices/{}", enc(PENSION)))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    // The recommended procedure applies (its rule decided for the same person): its title,
    // deadline and own notice, which this reader may open.
    assert_eq!(
        one["recommendations"],
        json!([{
            "rule": "kokuho-kanyu",
            "title": "国民健康保険の加入",
            "why": "あわせて届出・申請が必要です。",
            "deadline": "2026-10-15",
            "url": format!("https://portal.example.jp/notices/{HEALTH}"),
        }])
    );
    // The pension proxy is told of it too, but its scope does not open that notice.
    let (_, proxy) = App::json(
        app.get("R10005", &format!("/api/notices/{}", enc(PENSION)))
            .await,
    )
    .await;
    assert_eq!(proxy["recommendations"][0]["title"], "国民健康保険の加入");
    assert_eq!(proxy["recommendations"][0]["url"], Value::Null);
    assert!(one["message"].as_str().unwrap().contains("国民年金の手続"));
    assert_eq!(one["read"], false);
    let r = app
        .post(
            "R10001",
            &format!("/api/notices/{}/read", enc(PENSION)),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (_, one) = App::json(
        app.get("R10001", &format!("/api/notices/{}", enc(PENSION)))
            .await,
    )
    .await;
    assert_eq!(one["read"], true);
    // Read marks are per reader: the proxy has not read it.
    let (_, proxy) = App::json(
        app.get("R10005", &format!("/api/notices/{}", enc(PENSION)))
            .await,
    )
    .await;
    assert_eq!(proxy["read"], false);
    assert_eq!(proxy["role"], "proxy");
    app.shutdown().await;
}
on_both!(visibility, readers_see_exactly_their_notices);

async fn anothers_notice_answers_like_a_missing_one(backend: &str) {
    let app = spawn_app(backend).await;
    // (reader, key): not theirs for a reason each.
    let denied = [
        ("R10001", OTHER),   // another resident's
        ("R10005", HEALTH),  // outside the proxy's scope
        ("R10006", PENSION), // proxy authority ended
        ("R10004", CHILD),   // no relation
    ];
    for (reader, key) in denied {
        for (method, path, body) in [
            (Method::GET, format!("/api/notices/{}", enc(key)), None),
            (
                Method::POST,
                format!("/api/notices/{}/read", enc(key)),
                None,
            ),
            (Method::GET, format!("/api/drafts/{}", enc(key)), None),
            (
                Method::POST,
                format!("/api/drafts/{}/submit", enc(key)),
                Some(json!({"corrections": {}})),
            ),
            (
                Method::POST,
                format!("/api/drafts/{}/decline", enc(key)),
                None,
            ),
        ] {
            let missing_path = path.replace(&enc(key), &enc(MISSING));
            let a = App::json(app.send(method.clone(), reader, &path, body.clone()).await).await;
            let b = App::json(app.send(method.clone(), reader, &missing_path, body).await).await;
            assert_eq!(a, b, "{reader} {method} {path}");
            assert_eq!(a, (404, json!({"error": "not_found"})));
        }
    }
    // Nothing changed for the owners.
    let (_, d) = App::json(
        app.get("R10004", &format!("/api/drafts/{}", enc(OTHER)))
            .await,
    )
    .await;
    assert_eq!(d["state"], "open");
    // Refused draft attempts are audited like any other, with the key asked for.
    let audit = app.store.audit_entries(Some(OTHER)).await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.actor == "R10001" && e.action == "draft.refused"));
    let missing = app.store.audit_entries(Some(MISSING)).await.unwrap();
    assert!(missing
        .iter()
        .any(|e| e.actor == "R10001" && e.action == "draft.refused"));
    app.shutdown().await;
}
on_both!(
    denied_like_missing,
    anothers_notice_answers_like_a_missing_one
);

/// A refusal reads the register (the proxy's scope, the principal's status) where a missing
/// key reads nothing more: every "not found" is held to the same least time, so timing does
/// not tell which it was.
async fn a_refusal_takes_as_long_as_a_missing_key(backend: &str) {
    let app = spawn_app(backend).await;
    let floor = oshirase_portal::NOT_FOUND_FLOOR;
    let time = |key: &'static str| {
        let app = &app;
        async move {
            let started = std::time::Instant::now();
            let r = app
                .get("R10005", &format!("/api/notices/{}", enc(key)))
                .await;
            assert_eq!(r.status(), 404);
            started.elapsed()
        }
    };
    let (mut refused, mut missing) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        refused.push(time(HEALTH).await);
        missing.push(time(MISSING).await);
    }
    for t in refused.iter().chain(&missing) {
        assert!(*t >= floor, "{t:?} < {floor:?}");
    }
    refused.sort();
    missing.sort();
    let (a, b) = (refused[7], missing[7]);
    let gap = a.max(b) - a.min(b);
    assert!(
        gap < floor / 2,
        "median refusal {a:?}, median missing {b:?}"
    );
    app.shutdown().await;
}
on_both!(refusal_timing, a_refusal_takes_as_long_as_a_missing_key);

async fn register_changes_apply_at_once(backend: &str) {
    let app = spawn_app(backend).await;
    assert_eq!(app.keys("R10003").await, vec![CHILD.to_owned()]);
    assert_eq!(app.keys("R10005").await, vec![PENSION.to_owned()]);
    // The child comes under a support measure; the pension proxy's scope moves to health
    // insurance only. The decisions and their outbox rows stay as they were.
    let changed = register(&[
        ("R10002", json!({"support_measure": true})),
        (
            "R10001",
            json!({"proxies": [{"id": "R10005", "scopes": ["health_insurance"]}]}),
        ),
    ]);
    ingest(&app.store, &changed, app.clock.now()).await;
    assert!(app.keys("R10003").await.is_empty(), "guardian hidden");
    let (status, _) = App::json(
        app.get("R10003", &format!("/api/drafts/{}", enc(CHILD)))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(app.keys("R10005").await, vec![HEALTH.to_owned()]);

    // A guardian the protected child lives with reads it again, as the engine routes it; a
    // guardian in another household does not (the measure may protect the child from them).
    let household = |id: &str, rel: &str| json!({"id": id, "relationship": rel});
    let scoped = json!([{"id": "R10005", "scopes": ["health_insurance"]}]);
    let together = register(&[
        (
            "R10002",
            json!({"support_measure": true, "household": household("H9", "子")}),
        ),
        ("R10003", json!({"household": household("H9", "世帯主")})),
        ("R10001", json!({"proxies": scoped})),
    ]);
    ingest(&app.store, &together, app.clock.now()).await;
    assert_eq!(app.keys("R10003").await, vec![CHILD.to_owned()]);
    let apart = register(&[
        (
            "R10002",
            json!({"support_measure": true, "household": household("H9", "世帯主")}),
        ),
        ("R10003", json!({"household": household("H8", "世帯主")})),
        ("R10001", json!({"proxies": scoped})),
    ]);
    ingest(&app.store, &apart, app.clock.now()).await;
    assert!(app.keys("R10003").await.is_empty(), "guardian elsewhere");

    // A subject under a support measure still reads her own notices; her proxy does not.
    let protected = register(&[("R10001", json!({"support_measure": true}))]);
    ingest(&app.store, &protected, app.clock.now()).await;
    assert_eq!(app.keys("R10001").await.len(), 2);
    assert!(app.keys("R10005").await.is_empty());
    app.shutdown().await;
}
on_both!(live_recheck, register_changes_apply_at_once);

/// Every role is re-checked against the register as it is now, not as it was when the
/// notice was decided.
async fn every_role_is_rechecked_live(backend: &str) {
    let app = spawn_app(backend).await;
    assert!(app.keys("R10003").await.contains(&CHILD.to_owned()));
    assert_eq!(app.keys("R10008").await, vec![DEATH.to_owned()]);
    assert_eq!(app.keys("R10010").await, vec![DEATH.to_owned()]);
    assert_eq!(app.keys("R10005").await, vec![PENSION.to_owned()]);

    // The guardian is taken off the child's record; the widow moves to another household;
    // the pension principal dies (a proxy's authority ends with the principal, 民法111条).
    let changed = register(&[
        ("R10002", json!({"guardians": []})),
        (
            "R10008",
            json!({"household": {"id": "H8", "relationship": "世帯主"}}),
        ),
        (
            "R10001",
            json!({"status": {"kind": "deceased", "date": "2026-10-01"}}),
        ),
    ]);
    ingest(&app.store, &changed, app.clock.now()).await;
    assert!(app.keys("R10003").await.is_empty(), "removed guardian");
    let (status, _) = App::json(
        app.get("R10003", &format!("/api/drafts/{}", enc(CHILD)))
            .await,
    )
    .await;
    assert_eq!(status, 404, "removed guardian reads the draft");
    let decline = format!("/api/drafts/{}/decline", enc(CHILD));
    assert_eq!(app.post("R10003", &decline, None).await.status(), 404);
    assert!(app.keys("R10008").await.is_empty(), "survivor moved away");
    assert!(app.keys("R10010").await.is_empty(), "her proxy with her");
    assert!(app.keys("R10005").await.is_empty(), "proxy of the deceased");
    app.shutdown().await;
}
on_both!(live_roles, every_role_is_rechecked_live);

async fn bad_tokens_are_401(backend: &str) {
    let app = spawn_app(backend).await;
    let now = app.clock.now();
    let hour = Duration::from_secs(3600);
    let expired = mint_token(
        &app.config,
        "R10001",
        oshirase_engine::clock::before(now, Duration::from_secs(3 * 3600)),
        hour,
    )
    .unwrap();
    // Within the leeway an expired token still passes; past it, not.
    let just = mint_token(
        &app.config,
        "R10001",
        oshirase_engine::clock::before(now, Duration::from_secs(3610)),
        hour,
    )
    .unwrap();
    let forged = mint_token(
        &config().jwt_key(JwtKey::Hs256(oshirase_portal::Secret::new(
            "another-secret-another-secret-another",
        ))),
        "R10001",
        now,
        hour,
    )
    .unwrap();
    let wrong_issuer = mint_token(
        &config().issuer("https://evil.example"),
        "R10001",
        now,
        hour,
    )
    .unwrap();
    let not_a_resident = {
        // A valid signature over a `sub` that is not a resident id.
        let claims = json!({"sub": "../R10001", "iss": ISSUER, "exp": now.timestamp() + 60});
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let no_exp = {
        let claims = json!({"sub": "R10001", "iss": ISSUER});
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let r = app
        .http
        .get(format!("{}/api/notices", app.base))
        .bearer_auth(&just)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "10 s past exp is inside the 30 s leeway");
    for (what, header) in [
        ("missing", None),
        ("not bearer", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("garbage", Some("Bearer not.a.jwt".to_owned())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("forged", Some(format!("Bearer {forged}"))),
        ("wrong issuer", Some(format!("Bearer {wrong_issuer}"))),
        ("bad sub", Some(format!("Bearer {not_a_resident}"))),
        ("no exp", Some(format!("Bearer {no_exp}"))),
    ] {
        let mut req = app.http.get(format!("{}/api/notices", app.base));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "{what}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{what}");
    }
    app.shutdown().await;
}
on_both!(tokens, bad_tokens_are_401);

/// A test-only P-256 key pair, as an identity provider would sign with.
const ES_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQU5FXINwiBL2GCQ2
/207w0p9sXRMYjmTXOUPx3HJdHihRANCAAQDuD6T0wrwQyxfYlVTrG/+yLAywAk/
lDAL3vigrD7ZqW7s9GoXPudptNqHnsp43UHF8b+gIFpFNNL85AeurOoj
-----END PRIVATE KEY-----
";
const ES_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEA7g+k9MK8EMsX2JVU6xv/siwMsAJ
P5QwC974oKw+2alu7PRqFz7nabTah57KeN1BxfG/oCBaRTTS/OQHrqzqIw==
-----END PUBLIC KEY-----
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_from_the_identity_provider() {
    let cfg = config()
        .jwt_key(JwtKey::Es256PublicPem(ES_PUBLIC.into()))
        .audience("oshirase-portal");
    let app = spawn_app_with("sqlite", cfg).await;
    let now = app.clock.now().timestamp();
    let sign = |aud: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &json!({"sub": "R10003", "iss": ISSUER, "aud": aud, "exp": now + 600, "iat": now}),
            &EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let call = |token: String| {
        app.http
            .get(format!("{}/api/notices", app.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(call(sign("oshirase-portal")).await.unwrap().status(), 200);
    assert_eq!(call(sign("another-service")).await.unwrap().status(), 401);
    // With an audience configured, a token must name it: no `aud` is refused, an array
    // that holds it (RFC 7519 4.1.3) is accepted, one that does not is refused.
    let signed = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let no_aud = signed(json!({"sub": "R10003", "iss": ISSUER, "exp": now + 600}));
    assert_eq!(call(no_aud).await.unwrap().status(), 401);
    let listed = signed(
        json!({"sub": "R10003", "iss": ISSUER, "aud": ["other", "oshirase-portal"], "exp": now + 600}),
    );
    assert_eq!(call(listed).await.unwrap().status(), 200);
    let unlisted =
        signed(json!({"sub": "R10003", "iss": ISSUER, "aud": ["other"], "exp": now + 600}));
    assert_eq!(call(unlisted).await.unwrap().status(), 401);
    // An HS256 token "signed" with the public key must not pass (algorithm confusion).
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "R10003", "iss": ISSUER, "aud": "oshirase-portal", "exp": now + 600}),
        &EncodingKey::from_secret(ES_PUBLIC.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(call(confused).await.unwrap().status(), 401);
    // Minting needs a shared secret.
    assert!(mint_token(
        &app.config,
        "R10003",
        app.clock.now(),
        Duration::from_secs(60)
    )
    .is_err());
    app.shutdown().await;
}

async fn drafts_are_submitted_once_and_audited(backend: &str) {
    let app = spawn_app(backend).await;
    let path = format!("/api/drafts/{}", enc(PENSION));
    let (status, d) = App::json(app.get("R10001", &path).await).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["state"], "open");
    assert_eq!(d["title"], "国民年金の手続");
    // Fields keep the rule's order on the wire.
    let raw = app.get("R10001", &path).await.text().await.unwrap();
    let fields = &raw[raw.find("\"fields\"").unwrap()..];
    let at = |f: &str| fields.find(&format!("\"{f}\":")).unwrap();
    assert!(
        at("name") < at("address")
            && at("address") < at("birth_date")
            && at("birth_date") < at("annual_income"),
        "{raw}"
    );
    assert_eq!(d["fields"]["annual_income"], 1200000);

    let submit = format!("/api/drafts/{}/submit", enc(PENSION));
    // A field that is not in the draft is named.
    let (status, e) = App::json(
        app.post(
            "R10001",
            &submit,
            Some(json!({"corrections": {"bank_account": "1234567"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["field"], "bank_account");
    let (status, e) = App::json(
        app.post(
            "R10001",
            &submit,
            Some(json!({"corrections": {"address": ["x"]}})),
        )
        .await,
    )
    .await;
    assert_eq!((status, e["field"].clone()), (422, json!("address")));
    let (status, _) = App::json(
        app.post("R10001", &submit, Some(json!({"fixes": {}})))
            .await,
    )
    .await;
    assert_eq!(status, 422, "unknown top-level member");
    // A correction keeps the prefilled value's kind, is a bounded text with no control
    // characters, and a list computed from the register cannot be replaced.
    for (field, value) in [
        ("annual_income", json!("abc")),
        ("annual_income", json!(true)),
        ("name", json!(format!("{}\u{0}", "あ".repeat(600_000)))),
        ("name", json!("山田\u{0}花子")),
        ("name", json!(12)),
    ] {
        let (status, e) = App::json(
            app.post(
                "R10001",
                &submit,
                Some(json!({ "corrections": { field: value } })),
            )
            .await,
        )
        .await;
        assert_eq!((status, e["field"].clone()), (422, json!(field)), "{e}");
    }
    let health_submit = format!("/api/drafts/{}/submit", enc(HEALTH));
    let (status, e) = App::json(
        app.post(
            "R10001",
            &health_submit,
            Some(json!({"corrections": {"members": "山田 花子"}})),
        )
        .await,
    )
    .await;
    assert_eq!((status, e["field"].clone()), (422, json!("members")), "{e}");

    // The proxy submits with a corrected address.
    let (status, done) = App::json(
        app.post(
            "R10005",
            &submit,
            Some(json!({"corrections": {"address": "東京都利島村2番地の3"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "submitted");
    assert_eq!(done["decided_by"], "R10005");
    assert_eq!(done["submitted_fields"]["address"], "東京都利島村2番地の3");
    assert_eq!(done["submitted_fields"]["name"], "山田 花子");
    assert_eq!(
        done["fields"]["address"], "東京都利島村1番地",
        "prefill kept"
    );

    // Once only: submit and decline again are conflicts, for anyone.
    for (who, p) in [
        ("R10001", submit.clone()),
        ("R10005", format!("/api/drafts/{}/decline", enc(PENSION))),
    ] {
        let (status, e) =
            App::json(app.post(who, &p, Some(json!({"corrections": {}}))).await).await;
        assert_eq!(
            (status, e["state"].clone()),
            (409, json!("submitted")),
            "{p}"
        );
    }
    let (_, d) = App::json(app.get("R10001", &path).await).await;
    assert_eq!(d["state"], "submitted");
    assert_eq!(d["submitted_fields"]["address"], "東京都利島村2番地の3");

    // Declining another draft.
    let decline = format!("/api/drafts/{}/decline", enc(HEALTH));
    let (status, d) = App::json(app.post("R10001", &decline, None).await).await;
    assert_eq!((status, d["state"].clone()), (200, json!("declined")));
    let (status, _) = App::json(app.post("R10001", &decline, None).await).await;
    assert_eq!(status, 409);

    // The audit log: who did what to which draft, never a field value.
    let audit = app.store.audit_entries(Some(PENSION)).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    // Refused submissions (422) and conflicts (409) are in the log too.
    let refused = ("R10001", "draft.refused");
    assert_eq!(
        actions,
        [
            ("R10001", "draft.read"),
            ("R10001", "draft.read"),
            refused,
            refused,
            refused,
            refused,
            refused,
            refused,
            refused,
            ("R10005", "draft.submit"),
            refused,
            ("R10005", "draft.refused"),
            ("R10001", "draft.read"),
        ]
    );
    assert!(audit[2].detail.as_deref().unwrap().contains("422"));
    assert!(audit[10].detail.as_deref().unwrap().contains("409"));
    let submitted = &audit[9];
    assert_eq!(
        submitted.detail.as_deref(),
        Some(r#"{"corrected":["address"]}"#)
    );
    let everything = app.store.audit_entries(None).await.unwrap();
    for e in &everything {
        let row = format!("{e:?}");
        for value in ["利島村", "山田", "1200000", "1234567", "1960-05-01"] {
            assert!(!row.contains(value), "audit row holds a value: {row}");
        }
    }
    assert!(everything
        .iter()
        .any(|e| e.action == "draft.decline" && e.target == HEALTH));
    app.shutdown().await;
}
on_both!(drafts, drafts_are_submitted_once_and_audited);

fn with_p256dh(endpoint: &str, key: &[u8]) -> Value {
    use base64::Engine;
    let mut s = subscription(endpoint);
    s["keys"]["p256dh"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(key)
        .into();
    s
}

fn subscription(endpoint: &str) -> Value {
    use base64::Engine;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({"endpoint": endpoint, "expirationTime": null,
           "keys": {"p256dh": b.encode(P256_G), "auth": b.encode([5u8; 16])}})
}

/// The P-256 base point, uncompressed: a public key on the curve.
const P256_G: [u8; 65] = [
    0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
    0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2,
    0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e,
    0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51,
    0xf5,
];

async fn push_subscriptions(backend: &str) {
    let app = spawn_app(backend).await;
    let fcm = "https://fcm.googleapis.com/fcm/send/abc:def";
    let (status, s) = App::json(
        app.post("R10001", "/api/push-subscriptions", Some(subscription(fcm)))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["endpoint"], fcm);
    let (_, list) = App::json(app.get("R10001", "/api/push-subscriptions").await).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(list["subscriptions"][0]["endpoint"], fcm);
    let stored = app.store.push_subscriptions("R10001").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].auth, subscription(fcm)["keys"]["auth"]);

    for (body, field) in [
        (subscription("http://127.0.0.1:8000/push"), "endpoint"),
        (subscription("https://push.example.com/x"), "endpoint"),
        (
            json!({"endpoint": fcm, "keys": {"p256dh": "AAAA", "auth": "AAAA"}}),
            "keys",
        ),
        // 65 bytes that are no point of the curve, and the zero point.
        (with_p256dh(fcm, &[&[4u8][..], &[9u8; 64]].concat()), "keys"),
        (with_p256dh(fcm, &[&[4u8][..], &[0u8; 64]].concat()), "keys"),
        (
            subscription(&format!("{fcm}/{}", "x".repeat(100_000))),
            "endpoint",
        ),
    ] {
        let (status, e) = App::json(
            app.post("R10001", "/api/push-subscriptions", Some(body))
                .await,
        )
        .await;
        assert_eq!((status, e["field"].clone()), (422, json!(field)), "{e}");
    }
    // Another reader cannot take it over: the notices of its holder would go elsewhere.
    let (status, e) = App::json(
        app.post("R10004", "/api/push-subscriptions", Some(subscription(fcm)))
            .await,
    )
    .await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(
        app.store.push_subscriptions("R10001").await.unwrap().len(),
        1
    );
    assert!(app
        .store
        .push_subscriptions("R10004")
        .await
        .unwrap()
        .is_empty());
    // Its holder may post it again (a browser renewing its subscription).
    let (status, _) = App::json(
        app.post("R10001", "/api/push-subscriptions", Some(subscription(fcm)))
            .await,
    )
    .await;
    assert_eq!(status, 201);
    // Another reader cannot remove it.
    let del = |who: &'static str| {
        app.send(
            Method::DELETE,
            who,
            "/api/push-subscriptions",
            Some(json!({"endpoint": fcm})),
        )
    };
    assert_eq!(del("R10004").await.status(), 404);
    assert_eq!(del("R10001").await.status(), 204);
    assert_eq!(del("R10001").await.status(), 404);
    assert!(app
        .store
        .push_subscriptions("R10001")
        .await
        .unwrap()
        .is_empty());
    app.shutdown().await;

    // Loopback endpoints only when configured.
    let app = spawn_app_with(backend, config().allow_loopback_push(true)).await;
    let (status, _) = App::json(
        app.post(
            "R10001",
            "/api/push-subscriptions",
            Some(subscription("http://127.0.0.1:8000/push")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
    app.shutdown().await;
}
on_both!(push, push_subscriptions);

async fn preferences_default_to_the_register(backend: &str) {
    let app = spawn_app(backend).await;
    let (status, p) = App::json(app.get("R10003", "/api/preferences").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        p,
        json!({"channels": ["portal", "email"], "email_consent": true, "webpush_consent": false, "saved": false})
    );
    let put = |body: Value| app.send(Method::PUT, "R10003", "/api/preferences", Some(body));
    let (status, p) = App::json(
        put(json!({"channels": ["webpush", "portal", "webpush"], "email_consent": false, "webpush_consent": true}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p,
        json!({"channels": ["portal", "webpush"], "email_consent": false, "webpush_consent": true, "saved": true})
    );
    let stored = app
        .store
        .portal_preferences("R10003")
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.email_consent && stored.webpush_consent);
    let (status, _) = App::json(
        put(json!({"channels": ["fax"], "email_consent": false, "webpush_consent": true})).await,
    )
    .await;
    assert_eq!(status, 422);
    let (_, p) = App::json(app.get("R10003", "/api/preferences").await).await;
    assert_eq!(p["saved"], true);
    // A valid token for someone not on the register saves nothing.
    let body = json!({"channels": ["portal"], "email_consent": false, "webpush_consent": false});
    let r = app
        .send(Method::PUT, "R10099", "/api/preferences", Some(body))
        .await;
    assert_eq!(r.status(), 404);
    assert!(app
        .store
        .portal_preferences("R10099")
        .await
        .unwrap()
        .is_none());
    app.shutdown().await;
}
on_both!(preferences, preferences_default_to_the_register);

async fn rate_limits_per_reader_and_client(backend: &str) {
    let app = spawn_app_with(backend, config().rate_limit(0.5, 3)).await;
    let token = app.token("R10001");
    let call = |t: String| {
        app.http
            .get(format!("{}/api/notices", app.base))
            .bearer_auth(t)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(call(token.clone()).await.unwrap().status(), 200);
    }
    let r = call(token.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "rate_limited");
    // Another token (another reader) has its own bucket.
    assert_eq!(call(app.token("R10003")).await.unwrap().status(), 200);
    // The bucket is the reader's, not the token's: a second token for R10001 (minted a
    // moment later, or a signature re-encoded) shares it.
    let later = mint_token(
        &app.config,
        "R10001",
        oshirase_engine::clock::after(app.clock.now(), Duration::from_secs(1)),
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_ne!(later, token);
    assert_eq!(call(later).await.unwrap().status(), 429);
    // Unauthenticated traffic has a bucket per client: junk tokens, no token, /login with
    // a new query each time all draw from it.
    let junk = |n: usize| {
        app.http
            .get(format!("{}/api/notices", app.base))
            .header("authorization", format!("Bearer junk{n}"))
            .send()
    };
    for n in 0..3 {
        assert_eq!(junk(n).await.unwrap().status(), 401);
    }
    assert_eq!(junk(9).await.unwrap().status(), 429);
    let login = app
        .http
        .get(format!("{}/login?token=x%41{}", app.base, 7))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429);
    let page = app
        .http
        .get(format!("{}/inbox", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 429);
    app.shutdown().await;
}
on_both!(rate_limit, rate_limits_per_reader_and_client);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_configured_origins() {
    let app = spawn_app("sqlite").await;
    let ask = |origin: &'static str| {
        app.http
            .get(format!("{}/api/notices", app.base))
            .bearer_auth(app.token("R10001"))
            .header("origin", origin)
            .send()
    };
    let r = ask("https://app.example.jp").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.jp"
    );
    let r = ask("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Preflight.
    let pre = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, format!("{}/api/drafts/x/submit", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = pre("https://app.example.jp").await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.jp"
    );
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let r = pre("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_openapi_document() {
    let spec = oshirase_portal::openapi();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    let mut in_spec = BTreeSet::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            in_spec.insert((method.to_uppercase(), path.clone()));
        }
    }
    let in_router: BTreeSet<(String, String)> = oshirase_portal::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.replace("{*", "{")))
        .collect();
    assert_eq!(
        in_router.difference(&in_spec).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes missing from the spec"
    );
    assert_eq!(
        in_spec.difference(&in_router).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "spec paths the router does not serve"
    );
    // Every $ref resolves.
    let text = spec.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(spec["components"]["schemas"][name].is_object(), "{name}");
    }
    // Served as is, and every documented route is routed (not the fallback).
    let app = spawn_app("sqlite").await;
    let served: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, spec);
    for (method, path) in &in_spec {
        let path = path.replace("{key}", &enc(PENSION));
        let r = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        assert!(!body.contains("no such route"), "{method} {path}");
    }
    let r = app
        .http
        .get(format!("{}/api/nothing", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no such route"));
    app.shutdown().await;
}

async fn health_and_metrics(backend: &str) {
    let app = spawn_app(backend).await;
    let r = app
        .http
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    app.get("R10001", "/api/notices").await;
    app.get("R10001", &format!("/api/drafts/{}", enc(OTHER)))
        .await;
    app.delivery
        .record("email", "delivered", Some(Duration::from_millis(3)));
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"oshirase_portal_requests_total{route="/api/notices",method="GET",status="200"} 1"#,
        r#"oshirase_portal_requests_total{route="/api/drafts/{key}",method="GET",status="404"} 1"#,
        r#"oshirase_portal_request_seconds_count{route="/api/notices"} 1"#,
        r#"oshirase_outbox_attempts_total{channel="email",outcome="delivered"}"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(!text.contains("R10004"), "no keys in labels");
    // The database goes away: unhealthy.
    app.store.close().await;
    let r = app
        .http
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    app.shutdown().await;
}
on_both!(operations, health_and_metrics);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_their_token_when_one_is_configured() {
    let app = spawn_app_with(
        "sqlite",
        config().metrics_token(oshirase_portal::Secret::new("scrape-me-scrape-me")),
    )
    .await;
    let scrape = |token: Option<&str>| {
        let r = app.http.get(format!("{}/metrics", app.base));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
        .send()
    };
    assert_eq!(scrape(None).await.unwrap().status(), 401);
    assert_eq!(scrape(Some("wrong")).await.unwrap().status(), 401);
    // A resident's token is not the scraper's.
    let resident = app.token("R10001");
    assert_eq!(scrape(Some(&resident)).await.unwrap().status(), 401);
    let ok = scrape(Some("scrape-me-scrape-me")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok
        .text()
        .await
        .unwrap()
        .contains("oshirase_portal_requests_total"));
    app.shutdown().await;
}

/// `GET /health`: the status and the body.
async fn health(app: &App) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The state `/health` gives the worker `name`, if it lists it.
fn worker_state(body: &Value, name: &str) -> Option<String> {
    body["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["state"].as_str().map(str::to_owned))
}

/// Asks `/health` until its answer is `status` with the worker `name` in `state` (bounded).
async fn health_until(app: &App, status: u16, name: &str, state: &str) -> Value {
    let mut last = (0, Value::Null);
    for _ in 0..600 {
        last = health(app).await;
        if last.0 == status && worker_state(&last.1, name).as_deref() == Some(state) {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/health never answered {status} with {name} {state}; last: {last:?}")
}

/// `/health` answers for the delivery workers too, not only the database: a worker whose
/// store fails (it retries) or that is stuck (its claim waits on a lock past its lease) makes
/// it 503 naming the worker, and it is 200 again once the worker goes on.
async fn health_reports_failing_and_stuck_workers(backend: &str) {
    use oshirase_service::outbox::{Gate, Policy, Worker};
    let app = spawn_app(backend).await;
    let name = "portal-test-0";
    oshirase_testkit::sql::refuse_updates(&app.db.url, "outbox", "NEW.leased_by IS NOT NULL").await;
    let policy = Policy {
        lease: Duration::from_secs(1),
        gate: Gate::open(),
        ..Policy::default()
    };
    let worker = Worker::new(name, app.store.clone(), app.clock.clone(), policy)
        .with_metrics(app.delivery.clone());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        worker
            .work(
                &oshirase_adapters::PortalInbox,
                Duration::from_millis(20),
                rx,
            )
            .await
    });
    let body = health_until(&app, 503, name, "failing").await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    oshirase_testkit::sql::allow_updates(&app.db.url, "outbox").await;
    let body = health_until(&app, 200, name, "running").await;
    assert_eq!(body["status"], "ok", "{body}");
    // Another connection holds the write lock: the worker's next claim waits behind it.
    let lock = oshirase_testkit::sql::WriteLock::hold(&app.db.url, "outbox").await;
    health_until(&app, 503, name, "stuck").await;
    lock.release().await;
    health_until(&app, 200, name, "running").await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    app.shutdown().await;
}
on_both!(worker_health, health_reports_failing_and_stuck_workers);

/// A worker that gave up after its store errors is reported stopped, with the reason.
async fn health_reports_a_worker_that_gave_up(backend: &str) {
    use oshirase_service::outbox::{Gate, Policy, StoreRetry, Worker};
    let app = spawn_app(backend).await;
    let name = "portal-test-1";
    oshirase_testkit::sql::refuse_updates(&app.db.url, "outbox", "NEW.leased_by IS NOT NULL").await;
    let policy = Policy {
        gate: Gate::open(),
        store_retry: StoreRetry {
            first: Duration::from_millis(20),
            max: Duration::from_millis(20),
            give_up_after: 3,
        },
        ..Policy::default()
    };
    let worker = Worker::new(name, app.store.clone(), app.clock.clone(), policy)
        .with_metrics(app.delivery.clone());
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let result = worker
        .work(
            &oshirase_adapters::PortalInbox,
            Duration::from_millis(20),
            rx,
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        worker_state(&body, name).as_deref(),
        Some("stopped"),
        "{body}"
    );
    let w = &body["workers"][0];
    assert_eq!(
        w["reason"], "gave up after 3 consecutive store errors",
        "{body}"
    );
    assert_eq!(w["channel"], "portal", "{body}");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"oshirase_worker_healthy{worker="portal-test-1",channel="portal"} 0"#,
        r#"oshirase_worker_store_errors_total{channel="portal"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    app.shutdown().await;
}
on_both!(worker_gave_up, health_reports_a_worker_that_gave_up);

#[tokio::test]
async fn bad_configuration_is_refused_with_every_reason() {
    let cfg = PortalConfig::default()
        .issuer(" ")
        .public_url("ftp://x")
        .cors_origins(["https://ok.example", "https://bad.example/path"])
        .rate_limit(0.0, 0);
    let err = cfg.check().unwrap_err().to_string();
    for part in [
        "issuer is empty",
        "at least 32 bytes",
        "public URL",
        "bad.example/path",
        "per second",
        "burst",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(
        !format!("{:?}", config()).contains(SECRET),
        "secrets never print"
    );
}

/// Decisions from the real catalogue over the fixture town: a guardian reads a child's
/// notice; nobody else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_catalogue_on_the_fixture_town() {
    // SQLite only: what this checks is the catalogue's routing through the portal; the SQL
    // underneath is the same the on_both! suites above run on PostgreSQL.
    use oshirase_engine::eval::Role;
    use oshirase_engine::resident::Channel;
    let town = Town::new("2026-10-01").await;
    let mut day = d("2026-10-01");
    let found = loop {
        let hit = town.decide(day).await.into_iter().find_map(|dec| {
            let g = dec
                .recipients
                .iter()
                .find(|r| r.role == Role::Guardian && r.channels.contains(&Channel::Portal))?;
            Some((
                dec.key.to_string(),
                g.id.to_string(),
                dec.subject.to_string(),
            ))
        });
        if let Some(hit) = hit {
            break hit;
        }
        day = oshirase_engine::calendar::day_after(day);
        assert!(
            day < d("2027-01-01"),
            "no guardian notice in the fixture town"
        );
    };
    let (key, guardian, subject) = found;
    let app = town.serve().await;
    assert!(app.keys(&guardian).await.contains(&key));
    let (status, draft) = App::json(
        app.get(&guardian, &format!("/api/drafts/{}", enc(&key)))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{draft}");
    assert!(!draft["fields"].as_object().unwrap().is_empty());
    // Someone unrelated in the town (the first resident who is neither).
    let stranger = ["R00001", "R00002", "R00003"]
        .into_iter()
        .find(|r| *r != guardian && *r != subject)
        .unwrap();
    let (status, _) = App::json(
        app.get(stranger, &format!("/api/drafts/{}", enc(&key)))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    app.shutdown().await;
}
