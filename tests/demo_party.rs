//! The demo's example party (`oshirase demo --serve`, src/cmd/demo/party.rs) walked by a
//! resident over HTTP: its start page, the portal's consent page, 提供する, and the party's
//! page of what it received, verified, from the agencies' API.

use std::sync::Arc;
use std::time::Duration;

use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_portal::PortalConfig;
use oshirase_store::Store;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

#[path = "../src/cmd/demo/party.rs"]
mod party;

const SECRET: &str = "a test secret that is long enough for HS256";
const RESIDENT: &str = "R00002";

async fn listen() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// The consent form's hidden fields (HTML entities undone).
fn hidden_fields(html: &str) -> Vec<(String, String)> {
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
                .replace("&#x2f;", "/")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            out.push((n, v));
        }
    }
    out
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_resident_shares_their_name_and_address_with_the_example_party() {
    let db = oshirase_testkit::fresh("sqlite", "oshirase_dp").await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exchange = Arc::new(oshirase_engine::purposes::load_dir(&root.join("rules")).unwrap());
    let store = Store::open(&db.url).await.unwrap().with_exchange(exchange);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let town = std::fs::read_to_string(root.join("fixtures/town.jsonl")).unwrap();
    oshirase_service::ingest::ingest(&store, "town.jsonl", &town, false, clock.now())
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (portal_listener, portal) = listen().await;
    let (api, api_url) = listen().await;
    let config = PortalConfig::with_hs256_secret(SECRET)
        .issuer("test-idp")
        .public_url(portal.clone())
        .share_issuer(api_url);
    tokio::spawn(oshirase_portal::serve(
        portal_listener,
        store.clone(),
        config.clone(),
        clock.clone(),
        Arc::new(oshirase_service::metrics::DeliveryMetrics::default()),
        rx.clone(),
    ));
    let (app, _) = listen().await;
    let party = party::start(&store, &portal, api, app, rx).await.unwrap();

    // The resident's browser session.
    let token =
        oshirase_portal::mint_token(&config, RESIDENT, clock.now(), Duration::from_secs(600))
            .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let r = http
        .post(format!("{portal}/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();

    // The party's page, and its button: off to the portal.
    let home = http.get(format!("{party}/")).send().await.unwrap();
    let home = home.text().await.unwrap();
    assert!(home.contains("住民情報を取り込む"), "{home}");
    assert!(home.contains("href=\"/start\""), "{home}");
    let r = http.get(format!("{party}/start")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&format!("{portal}/oauth/authorize?")),
        "{authorize}"
    );
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );

    // The consent page: the party named, the resident's values shown; 提供する.
    let r = http
        .get(&authorize)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let consent = r.text().await.unwrap();
    assert!(
        consent.contains("利島村サンプル給与（年末調整のデモ）"),
        "{consent}"
    );
    assert!(consent.contains("梅田 順子"), "{consent}");
    let mut form = hidden_fields(&consent);
    assert!(form.iter().any(|(n, _)| n == "csrf"), "{consent}");
    form.push(("action".into(), "approve".into()));
    let r = http
        .post(format!("{portal}/oauth/authorize"))
        .header(COOKIE, &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with(&format!("{party}/callback?")), "{back}");

    // The party exchanged the code, fetched the extract and verified it.
    let r = http.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let received = r.text().await.unwrap();
    assert!(received.contains("受け取った情報"), "{received}");
    assert!(
        received.contains("<th>氏名</th><td>梅田 順子</td>"),
        "{received}"
    );
    assert!(received.contains("東京都利島村1番地"), "{received}");
    assert!(
        received.contains(&format!("{portal}/sharing")),
        "{received}"
    );
    let grants = store.grants_of_resident(RESIDENT).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert!(grants[0].last_used_at.is_some(), "the extract was read");

    // The same answer again: the state is spent.
    let again = http.get(&back).send().await.unwrap().text().await.unwrap();
    assert!(again.contains("情報を受け取れませんでした"), "{again}");
    stop.send(true).unwrap();
}
