//! The demo's core system (基幹業務システム, docs/office.md): one application travelling from
//! the resident to the back office and back. A guardian submits a prefilled draft with one
//! correction, as the portal does; a core system client polls it over the agencies' API with a
//! `private_key_jwt` token, takes it in (受付) and returns it (差戻し) with a message; the
//! resident then sees the message on the notice, and the news by e-mail where the applicant
//! gets e-mail.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime};
use oshirase_adapters::EmailChannel;
use oshirase_engine::clock::{in_tokyo, Clock, FixedClock};
use oshirase_engine::eval::{DecisionKey, Role};
use oshirase_engine::ids::ResidentId;
use oshirase_engine::purposes::Exchange;
use oshirase_engine::resident::Sex;
use oshirase_engine::rule::{Application as Applying, FieldKind};
use oshirase_exchange::{ApiConfig, ApiState, ExchangeMetrics, Keys, SigningKey};
use oshirase_service::outbox::Worker;
use oshirase_store::{
    AgencySpec, AuditEntry, DraftChoice, DraftDecision, DraftState, PortalNotice, Store,
};
use serde_json::{json, Value};

/// The demo core system's client id.
const CLIENT: &str = "kikan-demo";
const RETURNED: &str = "続柄を確認できる書類を添付してください。";

/// Runs the round trip on `day` (at 10:00, outside any quiet hours); returns the e-mails the
/// news of it delivered.
pub async fn round_trip(
    store: &Store,
    exchange: &Exchange,
    clock: &Arc<FixedClock>,
    day: NaiveDate,
    worker: &Worker,
    email: &EmailChannel,
    mail_dir: &Path,
) -> anyhow::Result<usize> {
    clock.set(in_tokyo(
        day,
        NaiveTime::from_hms_opt(10, 0, 0).expect("10:00"),
    ));
    out!("\nan application travelling resident → core system (基幹業務システム) → resident:");
    let Some((notice, reader)) = open_form_draft(store).await? else {
        out!("  (no open application form addressed to a resident through the portal)");
        return Ok(0);
    };
    // 1. The resident submits with one correction, through the store call the portal makes.
    let key = notice.key.clone();
    let mut fields = notice.draft.context("the picked draft")?.fields;
    let sex = store
        .residents()
        .await?
        .into_iter()
        .find(|r| r.id == notice.subject)
        .map(|r| r.sex);
    let spec = |k: &str| notice.body.form.get(k);
    let editable = |k: &str, v: &Value| {
        v.is_string()
            && spec(k).is_none_or(|s| {
                !s.computed && matches!(s.kind, FieldKind::Text | FieldKind::Person)
            })
    };
    let relationship = |k: &str| {
        spec(k)
            .and_then(|s| s.label.as_ref())
            .is_some_and(|l| l.ja.contains("続柄"))
    };
    // The 続柄 if the form has one (the office will ask for proof of it), else the first
    // field a resident may correct.
    let field = fields
        .iter()
        .find(|(k, v)| editable(k, v) && relationship(k))
        .or_else(|| fields.iter().find(|(k, v)| editable(k, v)))
        .map(|(k, _)| k.clone())
        .context("the draft has no field a resident may correct")?;
    let before = fields[&field].as_str().unwrap_or_default();
    let after = match (relationship(&field), before, sex) {
        (true, "子", Some(Sex::Male)) => "長男".to_owned(),
        (true, "子", Some(Sex::Female)) => "長女".to_owned(),
        _ => format!("{before}（訂正）"),
    };
    fields.insert(field.clone(), Value::String(after));
    let entry = AuditEntry::new(
        clock.now(),
        reader.as_str(),
        "draft.submit",
        key.as_str(),
        Some(json!({ "corrected": [field] }).to_string()),
    );
    if store
        .decide_draft(&key, &reader, DraftChoice::Submit(&fields), &entry)
        .await?
        != DraftDecision::Done
    {
        anyhow::bail!("the demo draft {key} was decided already");
    }
    let app = store
        .applications_of(&key)
        .await?
        .into_iter()
        .next()
        .context("the submission wrote no application")?;
    out!(
        "  申請 #{} {} ({}) submitted by {} ({}): {} correction{}",
        app.seq,
        app.title,
        app.subject,
        app.applicant,
        oshirase_store::role_ja(app.role, app.proxy_scopes.as_deref()),
        app.corrections.len(),
        if app.corrections.len() == 1 { "" } else { "s" }
    );

    // 2. The agencies' API, and a core system client for the procedure.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("the demo's agencies' API")?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = ApiState {
        store: store.clone(),
        exchange: Arc::new(exchange.clone()),
        keys: Arc::new(Keys {
            current: SigningKey::generate().context("the API's signing key")?,
            previous: Vec::new(),
        }),
        clock: clock.clone(),
        metrics: Arc::new(ExchangeMetrics::default()),
        config: ApiConfig {
            public_url: url.clone(),
            max_interest_days: 400,
            token_ttl_seconds: 300,
            authorization_endpoint: None,
        },
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let api = tokio::spawn(oshirase_exchange::serve(listener, state, stopped));
    let client = SigningKey::generate().context("the core system's key")?;
    let spec = AgencySpec {
        id: CLIENT.into(),
        name: "基幹業務システム（デモ）".into(),
        endpoint: None,
        client_jwks: json!({ "keys": [client.public_jwk()] }).to_string(),
        dictionary_version: exchange.dictionary.version(),
        purposes: Vec::new(),
    };
    store.upsert_agency(&spec, clock.now()).await?;
    store
        .set_office_client(CLIENT, std::slice::from_ref(&app.rule), clock.now())
        .await?;
    let rows_before: BTreeSet<i64> = store
        .outbox_rows(None)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    let answers = core_system(&url, &client, clock, app.seq).await;
    // 5. The API stops (whatever the core system's calls came to).
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), api)
        .await
        .context("the demo's agencies' API did not stop")?
        .context("the demo's agencies' API")?
        .context("the demo's agencies' API")?;
    answers?;

    // 4. Back to the resident: the notice as the portal reads it, and any e-mail news.
    let seen = store
        .portal_notice(&reader, &key)
        .await?
        .context("the resident's notice")?;
    let status = seen.application.context("the notice has no application")?;
    let reopened = seen.draft.is_some_and(|d| d.state == DraftState::Open);
    out!(
        "  the resident sees: {} — {}{}",
        status.status.ja(),
        status.message.as_deref().unwrap_or_default(),
        if reopened {
            " (the draft is open again to correct and resubmit)"
        } else {
            ""
        }
    );
    let news: Vec<i64> = store
        .outbox_rows(None)
        .await?
        .into_iter()
        .filter(|r| !rows_before.contains(&r.id))
        .filter(|r| r.channel == "email" && r.recipient == reader.as_str() && r.decision_key == key)
        .map(|r| r.id)
        .collect();
    if news.is_empty() {
        return Ok(0);
    }
    let delivered = worker.drain(email).await?.delivered;
    for id in news {
        let path = mail_dir.join(format!("{id}.eml"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            out!(
                "  e-mail to the applicant: {} ({})",
                path.display(),
                subject(&text)
            );
        }
    }
    Ok(delivered)
}

/// The first notice by decision key with an open application form, and a reader it is
/// addressed to through the portal as the subject or a guardian.
async fn open_form_draft(store: &Store) -> anyhow::Result<Option<(PortalNotice, ResidentId)>> {
    let mut rows: Vec<(String, String)> = store
        .outbox_rows(None)
        .await?
        .into_iter()
        .filter(|r| r.channel == "portal")
        .map(|r| (r.decision_key.as_str().to_owned(), r.recipient))
        .collect();
    rows.sort();
    rows.dedup();
    for (key, reader) in rows {
        let key = DecisionKey::parse(&key).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let reader = ResidentId::parse(&reader).map_err(|e| anyhow::anyhow!("{reader}: {e}"))?;
        let Some(n) = store.portal_notice(&reader, &key).await? else {
            continue;
        };
        let as_reader = n
            .body
            .recipients
            .iter()
            .any(|r| r.id == reader && matches!(r.role, Role::Subject | Role::Guardian));
        let open = n
            .draft
            .as_ref()
            .is_some_and(|d| d.state == DraftState::Open);
        if n.body.application == Applying::Form && as_reader && open {
            return Ok(Some((n, reader)));
        }
    }
    Ok(None)
}

/// The core system's side (step 3), over HTTP only: a token from a client assertion, a
/// poll, 受付, then 差戻し.
async fn core_system(
    url: &str,
    key: &SigningKey,
    clock: &FixedClock,
    seq: i64,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("an HTTP client")?;
    let token_url = format!("{url}/agency/v1/token");
    let now = clock.now().timestamp();
    let assertion = oshirase_exchange::auth::client_assertion(
        key,
        CLIENT,
        &token_url,
        now,
        &format!("{CLIENT}-{now}"),
    );
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    let token = answer(http.post(&token_url).form(&form), "POST /agency/v1/token").await?;
    let token = token["access_token"]
        .as_str()
        .context("the token answer has no access_token")?
        .to_owned();
    out!("  the core system {CLIENT} signed a private_key_jwt assertion and got a token (POST /agency/v1/token)");
    let path = "/office/v1/applications?after=0";
    let polled = answer(http.get(format!("{url}{path}")).bearer_auth(&token), path).await?;
    let apps = polled["applications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out!(
        "  GET {path}: {} application{}, next_after {}",
        apps.len(),
        if apps.len() == 1 { "" } else { "s" },
        polled["next_after"]
    );
    for a in &apps {
        out!(
            "    #{} {} — {} {} ({}), {}",
            a["seq"],
            a["title"].as_str().unwrap_or_default(),
            a["role_ja"].as_str().unwrap_or_default(),
            a["applicant"].as_str().unwrap_or_default(),
            a["role"].as_str().unwrap_or_default(),
            a["status_ja"].as_str().unwrap_or_default()
        );
        for (field, c) in a["corrections"].as_object().into_iter().flatten() {
            out!("      corrected {field}: {} → {}", c["before"], c["after"]);
        }
    }
    anyhow::ensure!(
        apps.iter().any(|a| a["seq"] == seq),
        "the core system's poll did not answer application {seq}"
    );
    let path = format!("/office/v1/applications/{seq}/status");
    for body in [
        json!({"status": "received"}),
        json!({"status": "returned", "message": RETURNED}),
    ] {
        clock.advance(Duration::from_secs(60));
        let a = answer(
            http.post(format!("{url}{path}"))
                .bearer_auth(&token)
                .json(&body),
            &path,
        )
        .await?;
        out!(
            "  POST {path} {}: #{} is now {} ({}){}",
            body["status"].as_str().unwrap_or_default(),
            a["seq"],
            a["status_ja"].as_str().unwrap_or_default(),
            a["status"].as_str().unwrap_or_default(),
            a["message"]
                .as_str()
                .map_or_else(String::new, |m| format!(": {m}"))
        );
    }
    Ok(())
}

/// The JSON of a successful answer to `request`; an error naming `what` otherwise.
async fn answer(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let r = request
        .send()
        .await
        .with_context(|| format!("{what}: no answer"))?;
    let status = r.status();
    let text = r
        .text()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    anyhow::ensure!(status.is_success(), "{what}: {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

/// An e-mail's `Subject`, its RFC 2047 words (`=?utf-8?b?…?=`, folded over lines) decoded.
fn subject(eml: &str) -> String {
    use base64::Engine as _;
    let mut lines = eml.lines().skip_while(|l| !l.starts_with("Subject: "));
    let Some(first) = lines.next() else {
        return String::new();
    };
    let mut bytes = Vec::new();
    let words = std::iter::once(&first["Subject: ".len()..])
        .chain(lines.take_while(|l| l.starts_with(' ')))
        .flat_map(str::split_whitespace);
    for w in words {
        // Adjacent encoded words join without a space; a word may end inside a character.
        match w
            .strip_prefix("=?utf-8?b?")
            .and_then(|b| b.strip_suffix("?="))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        {
            Some(b) => bytes.extend(b),
            None => bytes.extend(w.as_bytes()),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
