//! A resident shares their own data with a private party, end to end on both databases
//! (docs/sharing.md): the portal (consent) and the agencies' listener (token, data) over one
//! store, and the party in Python (`exchange/tests/share_party.py`: `authlib` for the code
//! flow with PKCE and `private_key_jwt`, `jwcrypto` for DPoP and for verifying the SD-JWT).
//! The party gets exactly the consented items, signed by the municipality's published key and
//! bound to its DPoP key; every attack (the code twice, a wrong code_verifier, no proof,
//! another key's proof, a proof twice, the token as a bearer) is refused; the code used twice
//! revokes its grant, after which the token gives nothing; the read is in the resident's
//! access log.

use std::sync::Arc;
use std::time::Duration;

use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_engine::ids::ResidentId;
use oshirase_exchange::{ApiConfig, ApiState, ExchangeMetrics, Keys, SigningKey};
use oshirase_portal::PortalConfig;
use oshirase_store::{PartySpec, Store};
use oshirase_testkit::on_both;
use serde_json::{json, Value};
use tokio::sync::watch;

const SECRET: &str = "a test secret that is long enough for HS256";
const REDIRECT: &str = "https://payroll.example.com/oauth/callback";
const RESIDENT: &str = "R00002";

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

async fn python(args: &[String]) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(root().join("exchange/tests/share_party.py"))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): run scripts/services/agency.sh"));
    assert!(
        out.status.success(),
        "share_party.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn a_party_gets_what_the_resident_consented_to(backend: &str) {
    let db = oshirase_testkit::fresh(backend, "oshirase_s").await;
    let exchange = Arc::new(oshirase_engine::purposes::load_dir(&root().join("rules")).unwrap());
    let store = Store::open(&db.url)
        .await
        .unwrap()
        .with_exchange(exchange.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let town = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    oshirase_service::ingest::ingest(&store, "town.jsonl", &town, false, clock.now())
        .await
        .unwrap();
    let client = SigningKey::generate().unwrap();
    // The party's revocation endpoint: what it receives.
    let received: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let (receiver, receiver_url) = listen().await;
    let got = received.clone();
    let app = axum::Router::new().route(
        "/revoked",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let got = got.clone();
            async move {
                let ct = headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                got.lock().unwrap().push((ct, body));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(receiver, app).await });
    store
        .upsert_party(
            &PartySpec {
                id: "kyuyo-soft".into(),
                name: "株式会社サンプル給与".into(),
                purpose: "年末調整の申告書に住所と氏名を記入するため".into(),
                redirect_uris: vec![REDIRECT.into()],
                client_jwks: json!({ "keys": [client.public_jwk()] }).to_string(),
                items: ["name", "name_kana", "address", "birth_date"]
                    .map(str::to_owned)
                    .to_vec(),
                max_grant_days: 365,
                revocation_uri: Some(format!("{receiver_url}/revoked")),
            },
            clock.now(),
        )
        .await
        .unwrap();
    let (stop, rx) = watch::channel(false);
    let (portal_listener, portal) = listen().await;
    let (api_listener, api) = listen().await;
    let config = PortalConfig::with_hs256_secret(SECRET)
        .issuer("test-idp")
        .public_url(portal.clone())
        .share_issuer(api.clone());
    tokio::spawn(oshirase_portal::serve(
        portal_listener,
        store.clone(),
        config.clone(),
        clock.clone(),
        Arc::new(oshirase_service::metrics::DeliveryMetrics::default()),
        rx.clone(),
    ));
    let keys = Arc::new(Keys {
        current: SigningKey::generate().unwrap(),
        previous: Vec::new(),
    });
    let state = ApiState {
        store: store.clone(),
        exchange,
        keys: keys.clone(),
        clock: clock.clone(),
        metrics: Arc::new(ExchangeMetrics::default()),
        config: ApiConfig {
            public_url: api.clone(),
            max_interest_days: 400,
            token_ttl_seconds: 300,
            authorization_endpoint: Some(format!("{portal}/oauth/authorize")),
        },
    };
    tokio::spawn(oshirase_exchange::serve(api_listener, state, rx));
    // The resident's browser session.
    let token =
        oshirase_portal::mint_token(&config, RESIDENT, clock.now(), Duration::from_secs(600))
            .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{portal}/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let client_pem = dir.path().join("client.pem");
    std::fs::write(&client_pem, client.to_pem()).unwrap();
    let holder_pem = dir.path().join("holder.pem");
    std::fs::write(&holder_pem, SigningKey::generate().unwrap().to_pem()).unwrap();
    let state_file = dir.path().join("state.json");
    let report = python(&[
        "flow".into(),
        format!("--api={api}"),
        "--client=kyuyo-soft".into(),
        format!("--client-key={}", client_pem.display()),
        format!("--kid={}", client.kid()),
        format!("--holder-key={}", holder_pem.display()),
        format!("--redirect={REDIRECT}"),
        format!("--cookie={cookie}"),
        "--untick=birth_date".into(),
        format!("--state-file={}", state_file.display()),
    ])
    .await;
    assert_eq!(report["redirect_state_ok"], true, "{report}");
    // The endpoints came from the metadata, and the redirect named its issuer.
    assert_eq!(report["metadata_issuer_ok"], true, "{report}");
    assert_eq!(report["metadata_iss_parameter"], true, "{report}");
    assert_eq!(report["metadata_pkce"], json!(["S256"]), "{report}");
    assert_eq!(report["metadata_dpop"], json!(["ES256"]), "{report}");
    assert_eq!(
        report["metadata_details"],
        json!(["oshirase_resident_data"]),
        "{report}"
    );
    assert_eq!(report["redirect_iss_ok"], true, "{report}");
    assert_eq!(report["token_type"], "DPoP", "{report}");
    // Exactly what was consented: the birth date was unticked.
    assert_eq!(
        report["granted_items"],
        json!(["name", "address"]),
        "{report}"
    );
    assert_eq!(report["data_http"], 200, "{report}");
    assert_eq!(report["content_type"], "application/dc+sd-jwt", "{report}");
    assert_eq!(
        report["claims"],
        json!({"name": "梅田 順子", "address": {"local_gov_code": "133621",
               "postal_code": "100-0301", "text": "東京都利島村1番地"}}),
        "{report}"
    );
    assert_eq!(report["bound_to_our_key"], true, "{report}");
    assert_eq!(report["kb_ok"], true, "{report}");
    // Kept as evidence at most 30 days, and never past the grant (30 days from the consent).
    let kept = report["exp_minus_iat"].as_i64().unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&kept), "{report}");
    // The signed status list says the grant is valid.
    assert_eq!(report["status_bit"], 0, "{report}");
    // Every attack refused.
    assert_eq!(report["token_without_client"], 401, "{report}");
    assert_eq!(report["data_without_proof"], 401, "{report}");
    assert_eq!(report["data_with_another_key"], 401, "{report}");
    assert_eq!(report["proof_used_twice"], json!([200, 401]), "{report}");
    assert_eq!(report["data_as_bearer"], 401, "{report}");
    assert_eq!(report["pkce_mismatch"], "invalid_grant", "{report}");
    assert_eq!(report["code_replay"], "invalid_grant", "{report}");
    // Refresh: a new token with the same key answers; another key, or the token again, not;
    // using it again revokes the grant.
    assert_eq!(report["refreshed_data"], 200, "{report}");
    assert_eq!(
        report["refresh_with_another_key"], "invalid_grant",
        "{report}"
    );
    assert_eq!(report["refresh_replayed"], "invalid_grant", "{report}");
    assert_eq!(report["data_after_refresh_replay"], 401, "{report}");
    // The party's dashboard (before the replay): its two grants, both active.
    assert_eq!(report["grants_http"], 200, "{report}");
    assert_eq!(report["grants"], json!(["active", "active"]), "{report}");
    assert_eq!(report["data_with_dashboard_token"], 401, "{report}");
    // The code used twice revoked its grant: the token gives nothing, at once.
    let again = python(&[
        "fetch".into(),
        format!("--api={api}"),
        format!("--holder-key={}", holder_pem.display()),
        format!("--state-file={}", state_file.display()),
    ])
    .await;
    assert_eq!(again["http"], 401, "{again}");
    assert_eq!(
        again["status_bit"], 1,
        "the status list says revoked: {again}"
    );
    let grants = store.grants_of_resident(RESIDENT).await.unwrap();
    assert_eq!(grants.len(), 2);
    let first = grants.iter().find(|g| g.last_used_at.is_some()).unwrap();
    assert!(
        first.revoked_at.is_some(),
        "the replayed code's grant is revoked"
    );
    // The reads are in the resident's access log, under the grant.
    let log = store
        .provisions(&ResidentId::parse(RESIDENT).unwrap())
        .await
        .unwrap();
    let reads: Vec<_> = log.iter().filter(|p| p.accessor_kind == "party").collect();
    assert_eq!(
        reads.len(),
        3,
        "three successful reads (one after the refresh): {log:?}"
    );
    for p in reads {
        assert_eq!(p.accessor_name, "株式会社サンプル給与");
        assert_eq!(p.basis, format!("grant/{}", first.id));
        let mut items: Vec<&str> = p.items.iter().map(|i| i.as_str()).collect();
        items.sort_unstable();
        assert_eq!(items, ["address", "name"]);
    }
    // The resident revokes the other grant (consented, its code spent on a wrong verifier)
    // on the dashboard; both revocations are pushed to the party as signed SETs.
    let other = grants.iter().find(|g| g.id != first.id).unwrap();
    let page = http
        .get(format!("{portal}/sharing"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let r = http
        .post(format!("{portal}/sharing/{}/revoke", other.id))
        .header(reqwest::header::COOKIE, &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let pusher = oshirase_exchange::share::RevocationPusher {
        store: store.clone(),
        keys,
        issuer: api.clone(),
        sender: Arc::new(oshirase_adapters::webhook::WebhookSender::new(
            oshirase_adapters::webhook::SigningKeys::generate(),
            Duration::from_secs(5),
        )),
        clock: clock.clone(),
    };
    assert_eq!(pusher.push_due().await.unwrap(), 2);
    assert_eq!(pusher.push_due().await.unwrap(), 0, "each is pushed once");
    let sets = received.lock().unwrap().clone();
    assert_eq!(sets.len(), 2);
    let mut revoked = Vec::new();
    for (content_type, set) in sets {
        assert_eq!(content_type, "application/secevent+jwt");
        let file = dir.path().join("set.jwt");
        std::fs::write(&file, set).unwrap();
        let v = python(&[
            "set".into(),
            format!("--api={api}"),
            format!("--holder-key={}", holder_pem.display()),
            format!("--state-file={}", state_file.display()),
            format!("--set-file={}", file.display()),
            "--aud=kyuyo-soft".into(),
        ])
        .await;
        assert_eq!(v["typ"], "secevent+jwt", "{v}");
        assert_eq!(v["aud_ok"], true, "{v}");
        revoked.push(v["grant_id"].as_str().unwrap().to_owned());
    }
    revoked.sort();
    let mut expected = vec![first.id.clone(), other.id.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    stop.send(true).unwrap();
}
on_both!(party, a_party_gets_what_the_resident_consented_to);

/// A DPoP proof for `method url` made with `key` (and `ath` for `token`).
fn dpop_proof(key: &SigningKey, method: &str, url: &str, token: &str) -> String {
    oshirase_exchange::dpop::proof(
        key,
        method,
        url,
        SystemClock.now().timestamp(),
        &format!("{:x}", rand_u64()),
        Some(token),
    )
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// An expired grant gives nothing, at once, whatever its token says: the grant is read on
/// every call. Tokens are made here with the API's key, as its token endpoint would.
async fn an_expired_grant_gives_nothing(backend: &str) {
    let db = oshirase_testkit::fresh(backend, "oshirase_s").await;
    let exchange = Arc::new(oshirase_engine::purposes::load_dir(&root().join("rules")).unwrap());
    let store = Store::open(&db.url)
        .await
        .unwrap()
        .with_exchange(exchange.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let town = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    oshirase_service::ingest::ingest(&store, "town.jsonl", &town, false, now)
        .await
        .unwrap();
    let client = SigningKey::generate().unwrap();
    store
        .upsert_party(
            &PartySpec {
                id: "kyuyo-soft".into(),
                name: "株式会社サンプル給与".into(),
                purpose: "年末調整".into(),
                redirect_uris: vec![REDIRECT.into()],
                client_jwks: json!({ "keys": [client.public_jwk()] }).to_string(),
                items: vec!["name".into()],
                max_grant_days: 30,
                revocation_uri: None,
            },
            now,
        )
        .await
        .unwrap();
    let items = vec!["name".to_owned()];
    for (id, expires) in [
        (
            "g_live",
            oshirase_engine::clock::after(now, Duration::from_secs(3600)),
        ),
        (
            "g_old",
            oshirase_engine::clock::before(now, Duration::from_secs(1)),
        ),
    ] {
        store
            .create_grant(&oshirase_store::NewGrant {
                id,
                resident_id: RESIDENT,
                granted_by: RESIDENT,
                party_id: "kyuyo-soft",
                items: &items,
                purpose: "年末調整",
                expires_at: expires,
                code_hash: &format!("{id}-code"),
                redirect_uri: REDIRECT,
                code_challenge: "x",
                code_expires_at: now,
                now: oshirase_engine::clock::before(now, Duration::from_secs(7200)),
            })
            .await
            .unwrap();
    }
    let keys = Arc::new(Keys {
        current: SigningKey::generate().unwrap(),
        previous: Vec::new(),
    });
    let (listener, api) = listen().await;
    let (_stop, rx) = watch::channel(false);
    tokio::spawn(oshirase_exchange::serve(
        listener,
        ApiState {
            store: store.clone(),
            exchange,
            keys: keys.clone(),
            clock: clock.clone(),
            metrics: Arc::new(ExchangeMetrics::default()),
            config: ApiConfig {
                public_url: api.clone(),
                max_interest_days: 400,
                token_ttl_seconds: 300,
                authorization_endpoint: None,
            },
        },
        rx,
    ));
    let holder = SigningKey::generate().unwrap();
    let jkt = oshirase_exchange::dpop::thumbprint(&holder.public_jwk()).unwrap();
    let http = reqwest::Client::new();
    let url = format!("{api}/share/v1/data");
    let mut answers = Vec::new();
    for grant in ["g_live", "g_old"] {
        let token = keys.current.sign(
            "at+jwt",
            &json!({"iss": api, "aud": "oshirase-share", "sub": grant, "client_id": "kyuyo-soft",
                    "iat": now.timestamp(), "exp": now.timestamp() + 300, "jti": grant,
                    "cnf": {"jkt": jkt}}),
        );
        let r = http
            .get(&url)
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", dpop_proof(&holder, "GET", &url, &token))
            .send()
            .await
            .unwrap();
        answers.push(r.status().as_u16());
    }
    assert_eq!(
        answers,
        [200, 401],
        "the live grant answers, the expired one does not"
    );
    let log = store
        .provisions(&ResidentId::parse(RESIDENT).unwrap())
        .await
        .unwrap();
    assert_eq!(log.iter().filter(|p| p.accessor_kind == "party").count(), 1);
}
on_both!(expired, an_expired_grant_gives_nothing);
