//! The demo's example party (docs/sharing.md): a tiny payroll web app a resident shares their
//! name and address with, for 年末調整. It asks at the portal's `/oauth/authorize` (PKCE S256,
//! `authorization_details`), and on return exchanges the code at the agencies' API with a
//! `private_key_jwt` client assertion and a DPoP proof, fetches the SD-JWT, verifies it
//! against the municipality's published keys and shows what it received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_exchange::{ApiConfig, ApiState, ExchangeMetrics, Keys, SigningKey};
use oshirase_store::{PartySpec, Store};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

const ID: &str = "demo-payroll";
const NAME: &str = "利島村サンプル給与（年末調整のデモ）";
const PURPOSE: &str = "年末調整の申告書に住所と氏名を記入するため（デモ）";
/// How long a started flow waits for the resident to come back.
const PENDING: Duration = Duration::from_secs(600);

struct Party {
    portal: String,
    api: String,
    redirect_uri: String,
    client: SigningKey,
    /// Signs the DPoP proofs; the SD-JWT is bound to it.
    dpop: SigningKey,
    /// state → (PKCE verifier, when the flow started).
    pending: Mutex<HashMap<String, (String, Instant)>>,
    http: reqwest::Client,
}

/// Starts the agencies' API on `api` (fresh keys) and the example party on `app`, registered
/// in `store` (which must have the data-item dictionary), the resident's consent asked at
/// `portal`. Both stop when `shutdown` turns true. Returns the party's URL.
pub async fn start(
    store: &Store,
    portal: &str,
    api: TcpListener,
    app: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let exchange = store
        .exchange()
        .cloned()
        .context("the store has no data-item dictionary")?;
    let api_url = format!("http://{}", api.local_addr()?);
    let url = format!("http://{}", app.local_addr()?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = ApiState {
        store: store.clone(),
        exchange: Arc::new(exchange),
        keys: Arc::new(Keys {
            current: SigningKey::generate().context("the API's signing key")?,
            previous: Vec::new(),
        }),
        clock: clock.clone(),
        metrics: Arc::new(ExchangeMetrics::default()),
        config: ApiConfig {
            public_url: api_url.clone(),
            max_interest_days: 400,
            token_ttl_seconds: 300,
            authorization_endpoint: Some(format!("{portal}/oauth/authorize")),
        },
    };
    tokio::spawn(oshirase_exchange::serve(api, state, shutdown.clone()));
    let party = Arc::new(Party {
        portal: portal.to_owned(),
        api: api_url,
        redirect_uri: format!("{url}/callback"),
        client: SigningKey::generate().context("the party's client key")?,
        dpop: SigningKey::generate().context("the party's DPoP key")?,
        pending: Mutex::default(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("an HTTP client")?,
    });
    let spec = PartySpec {
        id: ID.into(),
        name: NAME.into(),
        purpose: PURPOSE.into(),
        redirect_uris: vec![party.redirect_uri.clone()],
        client_jwks: json!({ "keys": [party.client.public_jwk()] }).to_string(),
        items: ["name", "name_kana", "address", "birth_date"]
            .map(str::to_owned)
            .to_vec(),
        max_grant_days: 30,
        revocation_uri: None,
    };
    store.upsert_party(&spec, clock.now()).await?;
    let router = axum::Router::new()
        .route("/", axum::routing::get(home))
        .route("/start", axum::routing::get(begin))
        .route("/callback", axum::routing::get(callback))
        .with_state(party);
    let mut rx = shutdown;
    tokio::spawn(async move {
        let stopped = async move {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if let Err(e) = axum::serve(app, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "the demo party stopped");
        }
    });
    Ok(url)
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

fn page(title: &str, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t} — {n}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em\">\
         <p>{n}</p><h1>{t}</h1>{body}</body></html>",
        t = esc(title),
        n = esc(NAME),
    ))
    .into_response()
}

fn random(bytes: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

async fn home() -> Response {
    page(
        "年末調整の申告書",
        "<p>申告書の住所と氏名を、市区町村の住民記録から取り込めます。\
         取り込む情報は、次の画面であなたが確認して選べます。</p>\
         <p><a href=\"/start\" id=\"import\">住民情報を取り込む</a></p>",
    )
}

/// Starts the flow: a PKCE verifier and a state kept here, the browser sent to the portal.
async fn begin(State(p): State<Arc<Party>>) -> Response {
    match authorize_url(&p) {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => page("エラー", &format!("<p>{}</p>", esc(&format!("{e:#}")))),
    }
}

fn authorize_url(p: &Party) -> anyhow::Result<String> {
    let verifier = random(32)?;
    let state = random(16)?;
    // S256: base64url(SHA-256(verifier)), the same digest as a Disclosure's.
    let challenge = oshirase_exchange::sdjwt::digest(&verifier);
    {
        let mut pending = p.pending.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        pending.retain(|_, (_, at)| at.elapsed() < PENDING);
        pending.insert(state.clone(), (verifier, Instant::now()));
    }
    let details = json!([{"type": "oshirase_resident_data", "items": ["name", "address"],
                          "optional_items": ["birth_date", "name_kana"], "max_days": 30}]);
    let mut url = reqwest::Url::parse(&format!("{}/oauth/authorize", p.portal))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", ID)
        .append_pair("redirect_uri", &p.redirect_uri)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("authorization_details", &details.to_string());
    Ok(url.into())
}

#[derive(serde::Deserialize)]
struct Back {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(State(p): State<Arc<Party>>, Query(q): Query<Back>) -> Response {
    // RFC 9207: an answer that does not name our authorization server is not read at all.
    if q.iss.as_deref() != Some(p.api.as_str()) {
        return page(
            "情報を受け取れませんでした",
            "<p>この応答は、連携している自治体からのものではありません。</p><p><a href=\"/\">最初の画面へ</a></p>",
        );
    }
    if let Some(error) = &q.error {
        let why = match error.as_str() {
            "access_denied" => "住民の方が情報の提供をしないことを選びました。".to_owned(),
            _ => "情報を受け取れませんでした。".to_owned(),
        };
        let detail = q.error_description.as_deref().unwrap_or_default();
        let body = format!(
            "<p>{}</p><p>({} {})</p><p><a href=\"/\">最初の画面へ</a></p>",
            esc(&why),
            esc(error),
            esc(detail)
        );
        return page("情報を受け取れませんでした", &body);
    }
    match receive(&p, &q).await {
        Ok(body) => page("受け取った情報", &body),
        Err(e) => page(
            "情報を受け取れませんでした",
            &format!(
                "<p>{}</p><p><a href=\"/\">最初の画面へ</a></p>",
                esc(&format!("{e:#}"))
            ),
        ),
    }
}

fn now() -> i64 {
    SystemClock.now().timestamp()
}

/// A DPoP proof (RFC 9449) for `method` `url`, with `ath` when it comes with a token.
fn proof(p: &Party, method: &str, url: &str, token: Option<&str>) -> anyhow::Result<String> {
    Ok(oshirase_exchange::dpop::proof(
        &p.dpop,
        method,
        url,
        now(),
        &random(16)?,
        token,
    ))
}

async fn text(r: reqwest::RequestBuilder, what: &str) -> anyhow::Result<String> {
    let r = r
        .send()
        .await
        .with_context(|| format!("{what}: no answer"))?;
    let status = r.status();
    let body = r
        .text()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    anyhow::ensure!(status.is_success(), "{what}: {status}: {body}");
    Ok(body)
}

/// The code exchanged, the data fetched and verified: the page's body.
async fn receive(p: &Party, q: &Back) -> anyhow::Result<String> {
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        anyhow::bail!("the answer has no code or no state");
    };
    let verifier = p
        .pending
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .remove(state)
        .filter(|(_, at)| at.elapsed() < PENDING)
        .map(|(v, _)| v)
        .context("unknown or expired state: start again")?;
    let token_url = format!("{}/share/v1/token", p.api);
    let t = now();
    let assertion =
        oshirase_exchange::auth::client_assertion(&p.client, ID, &token_url, t, &random(16)?);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", p.redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    let dpop = proof(p, "POST", &token_url, None)?;
    let answer = text(
        p.http.post(&token_url).header("DPoP", dpop).form(&form),
        "POST /share/v1/token",
    )
    .await?;
    let answer: Value = serde_json::from_str(&answer)?;
    let token = answer["access_token"].as_str().context("no access_token")?;
    let data_url = format!("{}/share/v1/data", p.api);
    let dpop = proof(p, "GET", &data_url, Some(token))?;
    let sd_jwt = text(
        p.http
            .get(&data_url)
            .header("Authorization", format!("DPoP {token}"))
            .header("DPoP", dpop),
        "GET /share/v1/data",
    )
    .await?;
    let jwks = text(
        p.http.get(format!("{}/agency/v1/jwks.json", p.api)),
        "the JWKS",
    )
    .await?;
    let verified =
        oshirase_exchange::sdjwt::verify(sd_jwt.trim(), &serde_json::from_str(&jwks)?, now())?;
    let bound = oshirase_exchange::dpop::thumbprint(&verified.payload["cnf"]["jwk"])
        .is_ok_and(|jkt| jkt == p.dpop.kid());
    anyhow::ensure!(bound, "the extract is not bound to this party's key");
    let mut rows = String::new();
    for (item, value) in &verified.claims {
        let label = match item.as_str() {
            "name" => "氏名",
            "name_kana" => "氏名（カナ）",
            "address" => "住所",
            "birth_date" => "生年月日",
            other => other,
        };
        let shown = match value {
            Value::Null => "（登録なし）".to_owned(),
            Value::String(s) => s.clone(),
            Value::Object(o) => match (o.get("postal_code"), o.get("text")) {
                (Some(Value::String(z)), Some(Value::String(t))) => format!("〒{z} {t}"),
                (_, Some(Value::String(t))) => t.clone(),
                _ => value.to_string(),
            },
            other => other.to_string(),
        };
        rows.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(label),
            esc(&shown)
        ));
    }
    let until = verified.payload["exp"]
        .as_i64()
        .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
        .zip(chrono::FixedOffset::east_opt(9 * 3600))
        .map(|(t, jst)| {
            t.with_timezone(&jst)
                .format("%Y年%m月%d日 %H:%M")
                .to_string()
        })
        .unwrap_or_default();
    Ok(format!(
        "<p>市区町村の署名を確かめました。</p><table>{rows}</table>\
         <p>この情報を使えるのは {until} までです（提供 {grant}）。</p>\
         <p>提供はいつでも <a href=\"{portal}/sharing\">{portal}/sharing</a>（情報の提供先）で\
         取り消せます。</p><p><a href=\"/\">最初の画面へ</a></p>",
        until = esc(&until),
        grant = esc(answer["grant_id"].as_str().unwrap_or_default()),
        portal = esc(&p.portal),
    ))
}
