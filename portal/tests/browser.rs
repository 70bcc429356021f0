//! A resident in a real browser (Debian's headless chromium through chromedriver): sign in
//! from the login link (its token posted by the page's script), open the inbox, the notice,
//! its draft, correct a field, submit, see the confirmation. Screenshots go to
//! target/test-artifacts/.

mod common;

use oshirase_engine::eval::DecisionKey;
use oshirase_engine::ids::ResidentId;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

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
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardian_corrects_and_submits_a_draft_in_chromium() {
    let app = spawn_app("sqlite").await;
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=412,915",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start a chromium session: {e}"));

    let run = async {
        // The login link carries the token in the fragment, which the browser never sends:
        // the page's script posts it. A `next` the browser would turn into another site (it
        // drops the tab) stays here.
        browser
            .goto(&format!(
                "{}/login#token={}&next=/%09/evil.example",
                app.base,
                app.token("R10003")
            ))
            .await?;
        browser
            .wait()
            .for_url(&url::Url::parse(&format!("{}/inbox", app.base)).unwrap())
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
        address.clear().await?;
        address.send_keys("東京都利島村9番地の2").await?;
        std::fs::write(
            artifacts().join("portal-draft.png"),
            browser.screenshot().await?,
        )
        .unwrap();
        browser.find(Locator::Id("submit")).await?.click().await?;
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
        Ok::<_, fantoccini::error::CmdError>(())
    };
    let outcome = run.await;
    let _ = browser.close().await;
    outcome.unwrap();

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
