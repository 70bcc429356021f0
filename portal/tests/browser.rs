//! Residents in a real browser (Debian's headless chromium through chromedriver): a guardian
//! signs in from the login link (its token posted by the page's script), corrects a draft
//! and submits it with the keyboard only; every page passes axe-core's WCAG 2.1 AA rules at
//! phone and desktop width; a resident subscribes the browser to push notices from the
//! preferences page and gets one. Screenshots go to target/test-artifacts/.

mod common;

use oshirase_engine::clock::Clock;
use oshirase_engine::eval::DecisionKey;
use oshirase_engine::ids::ResidentId;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::error::CmdError;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process, killed with the guard.
struct Driver {
    url: String,
    _child: tokio::process::Child,
}

async fn chromedriver() -> Driver {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install chromium chromium-driver (apt)"
        );
    }
    let port = free_port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Driver { url, _child: child };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}/status within 10 s");
}

/// A port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless chromium session on its own profile, with `args` and `options` (chromedriver's
/// `goog:chromeOptions`) and `caps` added to the common ones.
async fn chromium(
    driver: &Driver,
    profile: &Path,
    args: &[String],
    options: Value,
    caps: Value,
) -> Client {
    let mut all_args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=412,915",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    all_args.push(format!("--user-data-dir={}", profile.display()));
    all_args.extend_from_slice(args);
    let mut chrome_options = json!({ "binary": CHROMIUM, "args": all_args });
    for (k, v) in options.as_object().unwrap() {
        chrome_options[k] = v.clone();
    }
    let mut capabilities = json!({ "browserName": "chrome", "goog:chromeOptions": chrome_options });
    for (k, v) in caps.as_object().unwrap() {
        capabilities[k] = v.clone();
    }
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start a chromium session: {e}"))
}

/// Runs `steps` with the browser, then closes it whether they passed, failed or panicked
/// (a chromium left open outlives its chromedriver).
async fn in_browser<F, Fut>(browser: &Client, steps: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<(), CmdError>> + Send + 'static,
{
    let outcome = tokio::spawn(steps(browser.clone())).await;
    let _ = browser.clone().close().await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The session's chromedriver endpoint for a vendor command.
async fn session_url(driver_url: &str, browser: &Client, command: &str) -> String {
    let id = browser
        .session_id()
        .await
        .unwrap()
        .expect("a WebDriver session");
    format!("{driver_url}/session/{id}/{command}")
}

/// A DevTools protocol command, through chromedriver's `goog/cdp/execute` (fantoccini speaks
/// WebDriver only).
async fn cdp(driver_url: &str, browser: &Client, cmd: &str, params: Value) -> Value {
    let url = session_url(driver_url, browser, "goog/cdp/execute").await;
    let r: Value = reqwest::Client::new()
        .post(url)
        .json(&json!({ "cmd": cmd, "params": params }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["value"].get("error").is_none(), "{cmd}: {r}");
    r["value"].clone()
}

/// The DevTools events chromedriver logged since the last call (those named in the
/// session's `devToolsEventsToLog`), each `{method, params}`.
async fn devtools_events(driver_url: &str, browser: &Client) -> Vec<Value> {
    let url = session_url(driver_url, browser, "se/log").await;
    let r: Value = reqwest::Client::new()
        .post(url)
        .json(&json!({ "type": "devtools" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no devtools log: {r}"))
        .iter()
        .map(|e| serde_json::from_str(e["message"].as_str().unwrap()).unwrap())
        .collect()
}

/// One key pressed and let go, sent to whatever has the focus.
async fn press(browser: &Client, key: Key) -> Result<(), CmdError> {
    let key: char = key.into();
    browser
        .perform_actions(
            KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key }),
        )
        .await
}

/// The `id` of the focused element.
async fn focused(browser: &Client) -> Result<String, CmdError> {
    let v = browser
        .execute("return document.activeElement.id", vec![])
        .await?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardian_corrects_and_submits_a_draft_with_the_keyboard_in_chromium() {
    let app = spawn_app("sqlite").await;
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(&driver, profile.path(), &[], json!({}), json!({})).await;
    let base = app.base.clone();
    let token = app.token("R10003");
    in_browser(&browser, |browser| async move {
        // The login link carries the token in the fragment, which the browser never sends:
        // the page's script posts it. A `next` the browser would turn into another site (it
        // drops the tab) stays here.
        browser
            .goto(&format!(
                "{base}/login#token={token}&next=/%09/evil.example"
            ))
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&format!("{base}/inbox")).unwrap())
            .await?;
        let here = browser.current_url().await?;
        assert_eq!(here.host_str(), Some("127.0.0.1"), "{here}");
        assert!(here.path().ends_with("/inbox"), "{here}");
        // Under the CSP the site's own stylesheet applies (the header bar is blue).
        let bar = browser
            .execute(
                "return getComputedStyle(document.querySelector('header')).backgroundColor",
                vec![],
            )
            .await?;
        assert_eq!(bar.as_str(), Some("rgb(11, 79, 138)"), "{bar}");
        let link = browser.find(Locator::Css("a.title")).await?;
        assert_eq!(link.text().await?, "児童手当の認定請求");
        link.click().await?;
        assert_eq!(
            browser.current_url().await?.path(),
            format!("/notices/{CHILD}")
        );
        browser
            .find(Locator::Id("open-draft"))
            .await?
            .click()
            .await?;
        let address = browser
            .wait()
            .for_element(Locator::Css("input[name='field.address']"))
            .await?;
        assert_eq!(
            address.prop("value").await?.as_deref(),
            Some("東京都利島村1番地")
        );
        // Keyboard only from here: the field takes the focus, the correction is typed, Tab
        // goes on to the submit button and Enter presses it.
        address.clear().await?;
        address.send_keys("東京都利島村9番地の2").await?;
        assert_eq!(
            browser
                .execute("return document.activeElement.name", vec![])
                .await?
                .as_str(),
            Some("field.address")
        );
        std::fs::write(
            artifacts().join("portal-draft.png"),
            browser.screenshot().await?,
        )
        .unwrap();
        let mut tabs = 0;
        while focused(&browser).await? != "submit" {
            tabs += 1;
            assert!(tabs <= 10, "Tab never reached the submit button");
            press(&browser, Key::Tab).await?;
        }
        press(&browser, Key::Enter).await?;
        let confirmation = browser
            .wait()
            .for_element(Locator::Id("confirmation"))
            .await?;
        assert!(confirmation.text().await?.contains("申請を受け付けました"));
        let page = browser.source().await?;
        assert!(page.contains("東京都利島村9番地の2"), "{page}");
        std::fs::write(
            artifacts().join("portal-draft-submitted.png"),
            browser.screenshot().await?,
        )
        .unwrap();
        Ok(())
    })
    .await;

    let notice = app
        .store
        .portal_notice(
            &ResidentId::parse("R10003").unwrap(),
            &DecisionKey::parse(CHILD).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let draft = notice.draft.unwrap();
    assert_eq!(draft.state, oshirase_store::DraftState::Submitted);
    assert_eq!(draft.decided_by.as_deref(), Some("R10003"));
    let submitted = draft.submitted_fields.unwrap();
    assert_eq!(submitted["address"], "東京都利島村9番地の2");
    assert_eq!(submitted["claimant"], "佐藤 一郎");
    let png = std::fs::read(artifacts().join("portal-draft.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    app.shutdown().await;
}

/// axe-core's browser bundle, installed by scripts/services/axe.sh.
fn axe_source() -> String {
    let path = root().join("target/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is missing ({}: {e}): run scripts/services/axe.sh to install it",
            path.display()
        )
    })
}

/// The widths every page is checked and photographed at: a phone's and a desktop's.
const WIDTHS: [(&str, u32, u32, bool); 2] =
    [("phone", 412, 915, true), ("desktop", 1280, 800, false)];

/// Runs axe-core's WCAG 2.0 and 2.1 A and AA rules on the page shown, each violation as
/// `id (impact): help — targets`.
async fn axe(browser: &Client, source: &str) -> Result<Vec<String>, CmdError> {
    let loaded = browser
        .execute("return typeof window.axe === 'object'", vec![])
        .await?;
    if loaded != Value::Bool(true) {
        browser.execute(source, vec![]).await?;
    }
    let result = browser
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            window.axe.run(document, {
                runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] },
                resultTypes: ["violations"],
            }).then(
                (r) => done({ violations: r.violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help,
                    targets: v.nodes.map((n) => n.target.join(" ")),
                })) }),
                (e) => done({ error: String(e) }),
            );"#,
            vec![],
        )
        .await?;
    assert!(result.get("error").is_none(), "axe.run failed: {result}");
    Ok(result["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let targets: Vec<&str> = v["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{} ({}): {} — {}",
                v["id"].as_str().unwrap_or_default(),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or_default(),
                targets.join(", ")
            )
        })
        .collect())
}

/// A PNG of the whole page shown, beyond the viewport too.
async fn full_page(driver_url: &str, browser: &Client) -> Vec<u8> {
    let shot = cdp(
        driver_url,
        browser,
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true }),
    )
    .await;
    base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap()
}

/// Checks the page shown with axe at each width and keeps a full-page screenshot of each
/// (`portal-{name}-{width}.png`); what axe found is added to `found`.
async fn check_page(
    driver_url: &str,
    browser: &Client,
    source: &str,
    name: &str,
    found: &mut Vec<String>,
) -> Result<(), CmdError> {
    for (width_name, width, height, mobile) in WIDTHS {
        cdp(
            driver_url,
            browser,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
        for v in axe(browser, source).await? {
            found.push(format!("{name} at {width_name} width: {v}"));
        }
        let png = full_page(driver_url, browser).await;
        std::fs::write(
            artifacts().join(format!("portal-{name}-{width_name}.png")),
            png,
        )
        .unwrap();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_meets_wcag_2_1_aa_in_chromium() {
    // Missing axe-core fails here, before anything starts: the check is not optional.
    let source = axe_source();
    let keys = oshirase_adapters::generate_vapid_keys();
    let app = spawn_app_with("sqlite", config().vapid_public_key(&keys.public_key)).await;
    // A registered browser, so that the preferences page lists one with its remove button.
    app.store
        .add_push_subscription(
            "R10003",
            "https://fcm.googleapis.com/fcm/send/axe-check",
            "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
            "AQEBAQEBAQEBAQEBAQEBAQ",
            app.clock.now(),
        )
        .await
        .unwrap();
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(&driver, profile.path(), &[], json!({}), json!({})).await;
    let (base, token, driver_url) = (app.base.clone(), app.token("R10003"), driver.url.clone());
    let started = Instant::now();
    in_browser(&browser, |browser| async move {
        let mut found = Vec::new();
        let page = |path: &str| format!("{base}{path}");
        // Not signed in: the login hint of a link from an e-mail, and the login page.
        browser.goto(&page(&format!("/notices/{CHILD}"))).await?;
        check_page(&driver_url, &browser, &source, "login-hint", &mut found).await?;
        browser
            .goto(&page(&format!("/login#token={token}")))
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&page("/inbox")).unwrap())
            .await?;
        check_page(&driver_url, &browser, &source, "inbox", &mut found).await?;
        browser.goto(&page(&format!("/notices/{CHILD}"))).await?;
        check_page(&driver_url, &browser, &source, "notice", &mut found).await?;
        browser.goto(&page(&format!("/drafts/{CHILD}"))).await?;
        check_page(&driver_url, &browser, &source, "draft", &mut found).await?;
        browser.find(Locator::Id("submit")).await?.click().await?;
        browser
            .wait()
            .for_element(Locator::Id("confirmation"))
            .await?;
        check_page(
            &driver_url,
            &browser,
            &source,
            "draft-submitted",
            &mut found,
        )
        .await?;
        browser.goto(&page("/preferences")).await?;
        check_page(&driver_url, &browser, &source, "preferences", &mut found).await?;
        // A login link whose token is refused: the login hint with its problem.
        browser.goto(&page("/login#token=not-a-token")).await?;
        browser
            .wait()
            .for_element(Locator::Css(".error-box"))
            .await?;
        check_page(&driver_url, &browser, &source, "login-refused", &mut found).await?;
        // A page that is not the reader's: the error page.
        browser.goto(&page(&format!("/notices/{MISSING}"))).await?;
        assert!(browser.source().await?.contains("お知らせが見つかりません"));
        check_page(&driver_url, &browser, &source, "error", &mut found).await?;
        // The login page (a login link opens it; its script has no token to post here).
        browser.goto(&page("/login")).await?;
        check_page(&driver_url, &browser, &source, "login", &mut found).await?;
        assert!(
            found.is_empty(),
            "axe-core found {} WCAG 2.1 A/AA violations:\n{}",
            found.len(),
            found.join("\n")
        );
        Ok(())
    })
    .await;
    eprintln!(
        "axe: 9 pages at 2 widths checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    app.shutdown().await;
}

/// A stand-in for Google's GCM registration service. Chromium subscribes through GCM before it
/// hands out a `PushSubscription`: its GCM client checks in (a protobuf answer), then
/// registers each subscription (a form post answered `token=…`); it makes the keys and builds
/// the endpoint (`https://…/fcm/send/{token}`) itself. There is no network here, so the
/// browser's own `--gcm-checkin-url` and `--gcm-registration-url` switches point its real GCM
/// client at this server, and the subscription the page gets is one Chromium made. Every
/// registration form is kept with the token it got.
struct FakeGcm {
    url: String,
    registrations: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A check-in answer: `stats_ok` (field 1) and the device's `android_id` (7) and
/// `security_token` (8), both fixed64, as GCM's checkin.proto has them.
fn checkin_response() -> Vec<u8> {
    let mut out = vec![0x08, 0x01];
    out.push(7 << 3 | 1);
    out.extend_from_slice(&4_242_424_242u64.to_le_bytes());
    out.push(8 << 3 | 1);
    out.extend_from_slice(&1_717_171_717u64.to_le_bytes());
    out
}

async fn fake_gcm() -> FakeGcm {
    let registrations = Arc::new(Mutex::new(Vec::new()));
    let kept = registrations.clone();
    let router = axum::Router::new()
        .route(
            "/checkin",
            axum::routing::post(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    checkin_response(),
                )
            }),
        )
        .route(
            "/register3",
            axum::routing::post(move |body: String| async move {
                if body.split('&').any(|p| p == "delete=true") {
                    return "deleted=org.chromium.linux".to_owned();
                }
                let mut kept = kept.lock().unwrap();
                let token = format!("oshirase-test-token-{}", kept.len() + 1);
                kept.push((body, token.clone()));
                format!("token={token}")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    FakeGcm {
        url,
        registrations,
        task,
    }
}

/// Waits up to 10 s for the notification titled `title` to be shown, as the DevTools
/// protocol recorded it (`BackgroundService`, service `notifications`: its title, body and
/// tag, the tag being the page a click opens). `seen` keeps every event read so far (reading
/// chromedriver's log empties it); failing, they are all printed: the push's dispatch and
/// outcome, the notifications shown, the worker's errors.
async fn displayed(
    driver_url: &str,
    browser: &Client,
    seen: &mut Vec<Value>,
    title: &str,
) -> Result<(String, String), CmdError> {
    let meta = |event: &Value, key: &str| {
        event["eventMetadata"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["key"] == key)
            .and_then(|m| m["value"].as_str())
            .map(str::to_owned)
    };
    for _ in 0..100 {
        seen.extend(devtools_events(driver_url, browser).await);
        let found = seen.iter().find_map(|e| {
            let event = &e["params"]["backgroundServiceEvent"];
            (event["eventName"] == "Notification displayed"
                && meta(event, "Title").as_deref() == Some(title))
            .then(|| {
                (
                    meta(event, "Body").unwrap_or_default(),
                    event["instanceId"].as_str().unwrap_or_default().to_owned(),
                )
            })
        });
        if let Some(found) = found {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no notification titled {title} shown within 10 s; DevTools events: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_subscribes_to_push_and_gets_a_notice_in_chromium() {
    let keys = oshirase_adapters::generate_vapid_keys();
    let app = spawn_app_with("sqlite", config().vapid_public_key(&keys.public_key)).await;
    let gcm = fake_gcm().await;
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(
        &driver,
        profile.path(),
        &[
            format!("--gcm-checkin-url={}/checkin", gcm.url),
            format!("--gcm-registration-url={}/register3", gcm.url),
            // Nothing listens there: the GCM client's push connection fails and retries,
            // and no push is expected through it (the DevTools protocol delivers one).
            format!("--gcm-mcs-endpoint=https://127.0.0.1:{}", free_port()),
        ],
        // chromedriver keeps these DevTools events for `devtools_events`.
        json!({ "devToolsEventsToLog": [
            "ServiceWorker.workerRegistrationUpdated",
            "ServiceWorker.workerErrorReported",
            "BackgroundService.backgroundServiceEventReceived",
        ] }),
        json!({ "goog:loggingPrefs": { "devtools": "ALL" } }),
    )
    .await;

    // The push the web push channel would send for the guardian's notice, its link on
    // this portal.
    let channel = oshirase_adapters::WebPushChannel::new(
        app.store.clone(),
        oshirase_adapters::WebPushConfig {
            vapid: keys.clone(),
            subject: "mailto:portal@example.jp".into(),
            portal_url: app.base.clone(),
            allow_loopback: false,
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let now = app.clock.now();
    let item = app
        .store
        .claim_outbox(
            "email",
            "browser-test",
            100,
            now,
            oshirase_engine::clock::after(now, Duration::from_secs(3600)),
        )
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.decision_key.as_str() == CHILD && i.recipient == "R10003")
        .expect("the guardian's notice in the outbox");
    let payload = String::from_utf8(channel.payload(&item)).unwrap();
    let sent: Value = serde_json::from_str(&payload).unwrap();

    let (base, token, driver_url) = (app.base.clone(), app.token("R10003"), driver.url.clone());
    let store = app.store.clone();
    let registrations = gcm.registrations.clone();
    let public_key = keys.public_key.clone();
    let started = Instant::now();
    in_browser(&browser, |browser| async move {
        let origin = base.clone();
        browser
            .goto(&format!("{base}/login#token={token}&next=/preferences"))
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&format!("{base}/preferences")).unwrap())
            .await?;
        // The permission prompt a resident would answer.
        cdp(
            &driver_url,
            &browser,
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": ["notifications"] }),
        )
        .await;
        cdp(&driver_url, &browser, "ServiceWorker.enable", json!({})).await;
        // What DevTools' Application panel records of pushes and notifications, as events.
        for service in ["pushMessaging", "notifications"] {
            let on = json!({ "service": service });
            cdp(&driver_url, &browser, "BackgroundService.startObserving", on).await;
            let record = json!({ "service": service, "shouldRecord": true });
            cdp(&driver_url, &browser, "BackgroundService.setRecording", record).await;
        }
        let button = browser
            .wait()
            .for_element(Locator::Id("push-subscribe"))
            .await?;
        assert!(button.is_displayed().await?, "the script shows the button");
        button.click().await?;
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_url(&url::Url::parse(&format!("{base}/preferences?push=on")).unwrap())
            .await?;
        let done = browser.find(Locator::Id("push-done")).await?;
        assert!(done.text().await?.contains("受け取れるようになりました"));

        // Stored with the consent, as Chromium made it: registered with the
        // municipality's key, on the token the registration service gave.
        let subs = store.push_subscriptions("R10003").await.unwrap();
        assert_eq!(subs.len(), 1, "{subs:?}");
        let sub = &subs[0];
        let (form, gcm_token) = registrations
            .lock()
            .unwrap()
            .iter()
            .find(|(form, _)| form.contains(&format!("sender={public_key}")))
            .cloned()
            .expect("chromium registered with the portal's public key");
        assert!(form.contains("X-subtype=wp"), "{form}");
        let endpoint = url::Url::parse(&sub.endpoint).unwrap();
        assert!(
            matches!(
                endpoint.host_str(),
                Some("fcm.googleapis.com" | "jmt17.google.com")
            ),
            "{endpoint}"
        );
        assert!(sub.endpoint.ends_with(&format!("/{gcm_token}")), "{endpoint}");
        oshirase_adapters::check_endpoint(&sub.endpoint, false).unwrap();
        let prefs = store.portal_preferences("R10003").await.unwrap().unwrap();
        assert!(prefs.webpush_consent, "{prefs:?}");
        assert!(prefs
            .channels
            .contains(&oshirase_engine::resident::Channel::Webpush));
        // The page knows this browser in its list.
        let mark = browser.find(Locator::Css(".this-browser")).await?;
        assert!(mark.is_displayed().await?);

        // A push, delivered to the service worker by the DevTools protocol.
        let mut seen = devtools_events(&driver_url, &browser).await;
        let registration = seen
            .iter()
            .filter(|e| e["method"] == "ServiceWorker.workerRegistrationUpdated")
            .flat_map(|e| e["params"]["registrations"].as_array().cloned().unwrap_or_default())
            .find(|r| r["scopeURL"] == format!("{base}/") && r["isDeleted"] == false)
            .expect("the service worker's registration for the site")["registrationId"]
            .as_str()
            .unwrap()
            .to_owned();
        let push = |data: String| {
            json!({ "origin": origin, "registrationId": registration, "data": data })
        };
        cdp(&driver_url, &browser, "ServiceWorker.deliverPushMessage", push(payload)).await;
        let (body, opens) = displayed(&driver_url, &browser, &mut seen, "児童手当の認定請求").await?;
        assert_eq!(body, sent["body"].as_str().unwrap());
        assert_eq!(opens, format!("{base}/notices/{CHILD}"));
        assert_eq!(opens, sent["url"].as_str().unwrap());
        // A link off the site is not followed: the notification opens the inbox.
        let elsewhere = json!({"title": "ほかのサイト", "body": "", "url": "https://evil.example/"});
        cdp(&driver_url, &browser, "ServiceWorker.deliverPushMessage", push(elsewhere.to_string())).await;
        let (_, opens) = displayed(&driver_url, &browser, &mut seen, "ほかのサイト").await?;
        assert_eq!(opens, format!("{base}/inbox"));
        std::fs::write(
            artifacts().join("portal-push-subscribed.png"),
            full_page(&driver_url, &browser).await,
        )
        .unwrap();

        // Removing this browser: gone from the store and from the browser.
        browser
            .find(Locator::Css("form.push-remove button"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&format!("{base}/preferences?push=off")).unwrap())
            .await?;
        assert!(store.push_subscriptions("R10003").await.unwrap().is_empty());
        let left = browser
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                navigator.serviceWorker.ready
                    .then((r) => r.pushManager.getSubscription())
                    .then((s) => done(s ? s.endpoint : null), (e) => done(String(e)));"#,
                vec![],
            )
            .await?;
        assert_eq!(left, Value::Null, "the browser's subscription is ended too");
        Ok(())
    })
    .await;
    eprintln!(
        "push: subscribed, delivered and removed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    gcm.task.abort();
    app.shutdown().await;
}

/// The real catalogue over the fixture town, walked as its residents would: a guardian
/// after a birth, two survivors after a death, a resident turning 65 (nothing to apply
/// for), each through inbox → notice → draft → submit where there is one, with axe-core on
/// every page and a screenshot of each (`portal-story-*.png`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_a_death_and_a_65th_birthday_in_chromium() {
    use oshirase_engine::eval::{Decision, Role};
    use oshirase_engine::resident::Channel;
    use oshirase_engine::rule::Application;
    let source = axe_source();
    let town = Town::new("2026-04-01").await;
    let portal_readers = |dec: &Decision, role: Role| -> Vec<String> {
        dec.recipients
            .iter()
            .filter(|r| r.role == role && r.channels.contains(&Channel::Portal))
            .map(|r| r.id.to_string())
            .collect()
    };
    // (decision key, readers) of each story, the first the town gives.
    let (mut birth, mut death, mut sixty_five) = (None, None, None);
    let mut day = d("2026-04-01");
    while birth.is_none() || death.is_none() || sixty_five.is_none() {
        assert!(
            day < d("2027-04-01"),
            "the town lacks a story: {birth:?} {death:?} {sixty_five:?}"
        );
        for dec in &town.decide(day).await {
            let rule = dec.rule.as_str();
            if birth.is_none() && rule == "jidou-teate-nintei" {
                let g = portal_readers(dec, Role::Guardian);
                if !g.is_empty() {
                    birth = Some((dec.key.to_string(), g));
                }
            }
            if death.is_none() && rule == "shiboujou-ikkatsu-annai" {
                let s = portal_readers(dec, Role::Survivor);
                if s.len() >= 2 {
                    death = Some((dec.key.to_string(), s));
                }
            }
            if sixty_five.is_none() && rule == "kaigo-1go-shikaku" {
                let s = portal_readers(dec, Role::Subject);
                assert_eq!(dec.application, Application::None);
                if !s.is_empty() {
                    sixty_five = Some((dec.key.to_string(), s));
                }
            }
        }
        day = oshirase_engine::calendar::day_after(day);
    }
    town.clock.set(oshirase_engine::clock::in_tokyo(
        day,
        chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap(),
    ));
    let app = town.serve().await;
    let (birth, death, sixty_five) = (birth.unwrap(), death.unwrap(), sixty_five.unwrap());
    let tokens: Vec<(String, String)> = birth.1[..1]
        .iter()
        .chain(&death.1[..2])
        .chain(&sixty_five.1[..1])
        .map(|r| (r.clone(), app.token(r)))
        .collect();
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(&driver, profile.path(), &[], json!({}), json!({})).await;
    let (base, driver_url) = (app.base.clone(), driver.url.clone());
    in_browser(&browser, |browser| async move {
        let mut found = Vec::new();
        let page = |path: &str| format!("{base}{path}");
        let sign_in = |token: String| {
            let browser = browser.clone();
            let inbox = page("/inbox");
            let login = page(&format!("/login#token={token}"));
            async move {
                browser.goto(&login).await?;
                browser
                    .wait()
                    .for_url(&url::Url::parse(&inbox).unwrap())
                    .await
            }
        };
        // A birth: the guardian opens the allowance claim and submits it as prefilled.
        sign_in(tokens[0].1.clone()).await?;
        check_page(
            &driver_url,
            &browser,
            &source,
            "story-birth-inbox",
            &mut found,
        )
        .await?;
        assert!(browser.source().await?.contains("ご出生に伴うお手続"));
        browser
            .goto(&page(&format!("/notices/{}", birth.0)))
            .await?;
        check_page(
            &driver_url,
            &browser,
            &source,
            "story-birth-notice",
            &mut found,
        )
        .await?;
        assert!(browser.source().await?.contains("問い合わせ先"));
        browser
            .find(Locator::Id("open-draft"))
            .await?
            .click()
            .await?;
        browser.wait().for_element(Locator::Id("submit")).await?;
        check_page(
            &driver_url,
            &browser,
            &source,
            "story-birth-draft",
            &mut found,
        )
        .await?;
        browser.find(Locator::Id("submit")).await?.click().await?;
        browser
            .wait()
            .for_element(Locator::Id("confirmation"))
            .await?;
        check_page(
            &driver_url,
            &browser,
            &source,
            "story-birth-submitted",
            &mut found,
        )
        .await?;
        // A death: both survivors find the procedures under the death, the guide first.
        for (n, (_, token)) in tokens[1..3].iter().enumerate() {
            sign_in(token.clone()).await?;
            let inbox = browser.source().await?;
            let heading = inbox.find("ご逝去に伴うお手続").expect("the death's group");
            let guide = inbox.find("おくやみ").expect("the guide");
            assert!(heading < guide, "{inbox}");
            check_page(
                &driver_url,
                &browser,
                &source,
                &format!("story-death-inbox-{n}"),
                &mut found,
            )
            .await?;
        }
        browser
            .goto(&page(&format!("/notices/{}", death.0)))
            .await?;
        check_page(
            &driver_url,
            &browser,
            &source,
            "story-death-guide",
            &mut found,
        )
        .await?;
        // 65: nothing to apply for, and the page says so.
        sign_in(tokens[3].1.clone()).await?;
        browser
            .goto(&page(&format!("/notices/{}", sixty_five.0)))
            .await?;
        let notice = browser.source().await?;
        assert!(notice.contains("お手続は必要ありません") && !notice.contains("open-draft"));
        check_page(
            &driver_url,
            &browser,
            &source,
            "story-65-notice",
            &mut found,
        )
        .await?;
        assert!(
            found.is_empty(),
            "axe-core found {} WCAG 2.1 A/AA violations:\n{}",
            found.len(),
            found.join("\n")
        );
        Ok(())
    })
    .await;
    app.shutdown().await;
}

/// 「情報の提供記録」 in the browser: a resident's record by month (a change event, a pull
/// with an item held back because of a support measure), a guardian's with the link to the
/// child's, the child's, the empty record and the refusal, with axe-core on every page at
/// both widths (`portal-records-*.png`). The resident reaches it from the inbox's navigation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_pages_meet_wcag_2_1_aa_in_chromium() {
    use chrono::NaiveTime;
    use oshirase_engine::clock::{in_tokyo, FixedClock};
    use oshirase_engine::items::ItemCode;
    use oshirase_store::{Provision, Store};
    let source = axe_source();
    let exchange = oshirase_engine::purposes::load_dir(&root().join("rules"))
        .unwrap_or_else(|e| panic!("{e}"));
    let db = fresh("sqlite").await;
    let store = Store::open(&db.url)
        .await
        .unwrap()
        .with_exchange(Arc::new(exchange));
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest(&store, &register(&[]), clock.now()).await;
    store
        .record_rule_set("test-rules", 4, "tests", clock.now())
        .await
        .unwrap();
    store
        .commit_day(d("2026-10-01"), "test-rules", 0, &decisions(), clock.now())
        .await
        .unwrap();
    let row = |who: &str,
               day: &str,
               agency: &str,
               purpose: &str,
               action: &str,
               items: &[&str],
               outcome: &str| Provision {
        resident_id: who.into(),
        at: in_tokyo(d(day), NaiveTime::from_hms_opt(9, 30, 0).unwrap()),
        accessor_kind: "agency".into(),
        accessor_id: agency.into(),
        accessor_name: agency.into(),
        basis: purpose.into(),
        action: action.into(),
        items: items.iter().map(|c| ItemCode::parse(c).unwrap()).collect(),
        outcome: outcome.into(),
    };
    for p in [
        row(
            "R10001",
            "2026-10-01",
            "日本年金機構 東京年金事務所",
            "nenkin-kyufu",
            "pull",
            &["name", "birth_date"],
            "provided",
        ),
        row(
            "R10001",
            "2026-10-01",
            "日本年金機構 東京年金事務所",
            "nenkin-kyufu",
            "pull",
            &["address"],
            "withheld",
        ),
        row(
            "R10001",
            "2026-09-15",
            "日本年金機構 東京年金事務所",
            "nenkin-kyufu",
            "event",
            &["address", "status"],
            "provided",
        ),
        row(
            "R10002",
            "2026-09-10",
            "利島村教育委員会",
            "gakureibo",
            "pull",
            &["name", "birth_date", "guardians"],
            "provided",
        ),
    ] {
        store.log_provision(&p).await.unwrap();
    }
    let app = start(db, store, config(), clock).await;
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(&driver, profile.path(), &[], json!({}), json!({})).await;
    let tokens: Vec<String> = ["R10001", "R10003", "R10004"]
        .iter()
        .map(|who| app.token(who))
        .collect();
    let (base, driver_url) = (app.base.clone(), driver.url.clone());
    in_browser(&browser, |browser| async move {
        let mut found = Vec::new();
        let page = |path: &str| format!("{base}{path}");
        let sign_in = |token: String| {
            let browser = browser.clone();
            let inbox = page("/inbox");
            let login = page(&format!("/login#token={token}"));
            async move {
                browser.goto(&login).await?;
                browser
                    .wait()
                    .for_url(&url::Url::parse(&inbox).unwrap())
                    .await
            }
        };
        // The resident follows the inbox's link to her record.
        sign_in(tokens[0].clone()).await?;
        browser
            .find(Locator::Css("header a[href='/records']"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&page("/records")).unwrap())
            .await?;
        let html = browser.source().await?;
        for part in [
            "情報の提供記録",
            "変更の通知",
            "情報の照会・提供",
            "支援措置のため提供していません",
            "年金給付の支給に関する事務",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
        check_page(&driver_url, &browser, &source, "records", &mut found).await?;
        // The guardian: their own (empty) record with the link to the child's, then the child's.
        sign_in(tokens[1].clone()).await?;
        browser.goto(&page("/records")).await?;
        assert!(browser.source().await?.contains("提供の記録はありません"));
        check_page(
            &driver_url,
            &browser,
            &source,
            "records-guardian",
            &mut found,
        )
        .await?;
        browser
            .find(Locator::Css("#records-others a"))
            .await?
            .click()
            .await?;
        browser.wait().for_element(Locator::Css(".record")).await?;
        assert!(browser.source().await?.contains("陽さん（お子さま）"));
        check_page(&driver_url, &browser, &source, "records-child", &mut found).await?;
        // Someone else's record: refused like a missing one.
        sign_in(tokens[2].clone()).await?;
        browser.goto(&page("/records?for=R10001")).await?;
        assert!(browser
            .source()
            .await?
            .contains("提供の記録を表示できません"));
        check_page(
            &driver_url,
            &browser,
            &source,
            "records-refused",
            &mut found,
        )
        .await?;
        assert!(
            found.is_empty(),
            "axe-core found {} WCAG 2.1 A/AA violations:\n{}",
            found.len(),
            found.join("\n")
        );
        Ok(())
    })
    .await;
    app.shutdown().await;
}

/// The staff console in chromium: a 窓口 member signs in from the staff identity provider's
/// link (the token in the fragment), finds the death in a single-person household in the work
/// queue, records what was done, and looks a resident up; a 子育て支援係 member then sees
/// none of it. Every console page passes axe-core at both widths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_handle_a_lonely_death_in_the_console_in_chromium() {
    let source = axe_source();
    let app = spawn_app("sqlite").await;
    add_lonely_death(&app).await;
    let (console, config, _stop) = serve_console(&app).await;
    let token = |who: &str, roles: &[&str], dept: Option<&str>| {
        oshirase_portal::mint_staff_token(
            &config,
            who,
            roles,
            dept,
            app.clock.now(),
            Duration::from_secs(600),
        )
        .unwrap()
    };
    let counter = token("madoguchi-1", &["窓口"], None);
    let kosodate = token("kosodate-1", &["担当課"], Some("kosodate"));
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = chromium(&driver, profile.path(), &[], json!({}), json!({})).await;
    let driver_url = driver.url.clone();
    let staff_row = app
        .store
        .outbox_rows(None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.channel == "staff")
        .unwrap();
    let row_id = staff_row.id;
    in_browser(&browser, |browser| async move {
        let mut found = Vec::new();
        let page = |path: &str| format!("{console}{path}");
        browser.goto(&page("/office/")).await?;
        assert!(browser.source().await?.contains("ログインが必要です"));
        check_page(&driver_url, &browser, &source, "console-login", &mut found).await?;
        browser
            .goto(&page(&format!("/office/login#token={counter}")))
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&page("/office/")).unwrap())
            .await?;
        let item = browser
            .find(Locator::Id(&format!("staff_notice-{row_id}")))
            .await?;
        let text = item.text().await?;
        assert!(
            text.contains("葬祭費の支給申請") && text.contains("R10020"),
            "{text}"
        );
        check_page(&driver_url, &browser, &source, "console-queue", &mut found).await?;
        item.find(Locator::Css("input[name='note']"))
            .await?
            .send_keys("長女に電話で連絡済み")
            .await?;
        item.find(Locator::Css("button[type='submit']"))
            .await?
            .click()
            .await?;
        let done = browser
            .wait()
            .for_element(Locator::Css(".notice-box"))
            .await?;
        assert_eq!(done.text().await?, "対応を記録しました。");
        assert!(browser
            .find(Locator::Id(&format!("staff_notice-{row_id}")))
            .await
            .is_err());
        check_page(
            &driver_url,
            &browser,
            &source,
            "console-handled",
            &mut found,
        )
        .await?;
        browser.goto(&page("/office/residents?id=R10008")).await?;
        assert!(browser.source().await?.contains("葬祭費の支給申請"));
        check_page(
            &driver_url,
            &browser,
            &source,
            "console-resident",
            &mut found,
        )
        .await?;
        // Another department's member: the 葬祭費 notices are not theirs.
        browser
            .goto(&page(&format!("/office/login#token={kosodate}")))
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&page("/office/")).unwrap())
            .await?;
        let html = browser.source().await?;
        assert!(
            html.contains("受付待ちの申請") && !html.contains("R10020"),
            "{html}"
        );
        assert!(
            found.is_empty(),
            "axe-core found {} WCAG 2.1 A/AA violations:\n{}",
            found.len(),
            found.join("\n")
        );
        Ok(())
    })
    .await;
    let row = app
        .store
        .outbox_rows(None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == row_id)
        .unwrap();
    assert_eq!(row.state, oshirase_store::OutboxState::Delivered);
    app.shutdown().await;
}

/// Sharing in chromium: a resident signed in opens a party's authorization request (PKCE S256,
/// a state, the name and address required and the birth date optional), unticks the birth
/// date with the keyboard and approves; the browser is sent to the party's callback (a small
/// server here) with a code and the same state. The dashboard then lists the grant with the
/// name and address only, and one press revokes it. The consent page and the dashboard before
/// and after pass axe-core at both widths (`portal-consent-*.png`, `portal-sharing-*.png`,
/// `portal-sharing-revoked-*.png`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_shares_data_with_a_party_and_revokes_it_in_chromium() {
    use sha2::{Digest, Sha256};
    let source = axe_source();
    // The party's callback: answers 200 "ok" and hands over each query it is sent.
    let (queries, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/callback", listener.local_addr().unwrap());
    let party_site = tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route(
                "/callback",
                axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                    let queries = queries.clone();
                    async move {
                        let _ = queries.send(q.unwrap_or_default());
                        "ok"
                    }
                }),
            ),
        )
        .await
    });
    let party = oshirase_store::PartySpec {
        id: "kyuyo-soft".into(),
        name: "株式会社サンプル給与（年末調整）".into(),
        purpose: "年末調整の申告書に、住所と氏名を記入するため".into(),
        redirect_uris: vec![callback.clone()],
        client_jwks: json!({"keys": []}).to_string(),
        items: vec![
            "name".into(),
            "name_kana".into(),
            "address".into(),
            "birth_date".into(),
        ],
        max_grant_days: 30,
        revocation_uri: None,
    };
    let app = serve_with_party(
        "sqlite",
        &party,
        &[],
        config().share_issuer("https://api.example.lg.jp"),
    )
    .await;
    // PKCE: the verifier stays with the party, its S256 challenge goes in the request.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let state = "st-browser-7f3a";
    let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", app.base)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "kyuyo-soft")
        .append_pair("redirect_uri", &callback)
        .append_pair("state", state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair(
            "authorization_details",
            &json!([{"type": "oshirase_resident_data", "items": ["name", "address"],
                     "optional_items": ["birth_date"]}])
            .to_string(),
        );
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    // The browser's console is kept: a navigation the page's CSP blocks is only told there.
    let browser = chromium(
        &driver,
        profile.path(),
        &[],
        json!({}),
        json!({ "goog:loggingPrefs": { "browser": "ALL" } }),
    )
    .await;
    let token = app.token("R10001");
    let (base, driver_url, store) = (app.base.clone(), driver.url.clone(), app.store.clone());
    in_browser(&browser, |browser| async move {
        let mut found = Vec::new();
        browser.goto(&format!("{base}/login#token={token}")).await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&format!("{base}/inbox")).unwrap())
            .await?;
        browser.goto(authorize.as_str()).await?;
        browser.wait().for_element(Locator::Id("approve")).await?;
        let page = browser.source().await?;
        for shown in [
            "株式会社サンプル給与（年末調整）",
            "年末調整の申告書に、住所と氏名を記入するため",
            "山田 花子",
            "東京都利島村1番地",
            "1960-05-01",
        ] {
            assert!(page.contains(shown), "{shown} in {page}");
        }
        check_page(&driver_url, &browser, &source, "consent", &mut found).await?;
        // The keyboard: Tab to the birth date's checkbox, Space unticks it, Tab on to 提供する
        // and Enter presses it.
        let birth_date = browser
            .find(Locator::Css(
                "input[type='checkbox'][name='item'][value='birth_date']",
            ))
            .await?;
        assert_eq!(birth_date.prop("checked").await?.as_deref(), Some("true"));
        let focused_item = || async {
            let v = browser
                .execute(
                    "const e = document.activeElement; \
                     return e && e.name === 'item' ? e.value : ''",
                    vec![],
                )
                .await?;
            Ok::<_, CmdError>(v.as_str().unwrap_or_default().to_owned())
        };
        let mut tabs = 0;
        while focused_item().await? != "birth_date" {
            tabs += 1;
            assert!(tabs <= 15, "Tab never reached the birth date's checkbox");
            press(&browser, Key::Tab).await?;
        }
        press(&browser, Key::Space).await?;
        assert_eq!(birth_date.prop("checked").await?.as_deref(), Some("false"));
        let mut tabs = 0;
        while focused(&browser).await? != "approve" {
            tabs += 1;
            assert!(tabs <= 5, "Tab never reached 提供する");
            press(&browser, Key::Tab).await?;
        }
        press(&browser, Key::Enter).await?;
        let query = match tokio::time::timeout(Duration::from_secs(15), received.recv()).await {
            Ok(q) => q.expect("the callback server is running"),
            Err(_) => {
                let here = browser.current_url().await?;
                let console = reqwest::Client::new()
                    .post(session_url(&driver_url, &browser, "se/log").await)
                    .json(&json!({ "type": "browser" }))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let grants = store.grants_of_resident("R10001").await.unwrap();
                panic!(
                    "the party's callback was never reached after 提供する; \
                     the browser is at {here}; grants written: {grants:?}; \
                     its console: {console}; axe so far: {found:?}"
                );
            }
        };
        let back: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| back.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(param("state").as_deref(), Some(state), "{query}");
        assert!(param("error").is_none(), "{query}");
        let code = param("code").unwrap_or_else(|| panic!("no code in {query}"));
        assert!(code.len() >= 40, "{query}");
        browser
            .wait()
            .for_url(&url::Url::parse(&format!("{callback}?{query}")).unwrap())
            .await?;
        assert_eq!(
            browser.find(Locator::Css("body")).await?.text().await?,
            "ok"
        );
        // The dashboard: the grant, with the name and the address only.
        browser.goto(&format!("{base}/sharing")).await?;
        let grant = browser.find(Locator::Css("article.grant")).await?;
        let text = grant.text().await?;
        assert!(
            text.contains("株式会社サンプル給与（年末調整）")
                && text.contains("氏名、住所")
                && !text.contains("生年月日")
                && text.contains("提供中"),
            "{text}"
        );
        check_page(&driver_url, &browser, &source, "sharing", &mut found).await?;
        let revoke = grant.find(Locator::Css("button[type='submit']")).await?;
        assert_eq!(revoke.text().await?, "取り消す");
        revoke.click().await?;
        let notice = browser.wait().for_element(Locator::Id("revoked")).await?;
        assert!(notice.text().await?.contains("取り消しました"));
        let text = browser
            .find(Locator::Css("article.grant"))
            .await?
            .text()
            .await?;
        assert!(
            text.contains("取り消し済み") && !text.contains("提供中"),
            "{text}"
        );
        assert!(browser
            .find_all(Locator::Css("article.grant button"))
            .await?
            .is_empty());
        check_page(
            &driver_url,
            &browser,
            &source,
            "sharing-revoked",
            &mut found,
        )
        .await?;
        // 自己情報: the resident's own record, and the form to ask for a correction.
        browser.goto(&format!("{base}/me")).await?;
        browser
            .wait()
            .for_element(Locator::Id("correction-h"))
            .await?;
        check_page(&driver_url, &browser, &source, "me", &mut found).await?;
        assert!(
            found.is_empty(),
            "axe-core found {} WCAG 2.1 A/AA violations:\n{}",
            found.len(),
            found.join("\n")
        );
        Ok(())
    })
    .await;
    let grants = app.store.grants_of_resident("R10001").await.unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    let g = &grants[0];
    assert_eq!(g.items, vec!["name", "address"]);
    assert_eq!(g.party_id, "kyuyo-soft");
    assert!(g.revoked_at.is_some() && !g.live(app.clock.now()), "{g:?}");
    party_site.abort();
    app.shutdown().await;
}
