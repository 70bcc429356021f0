//! The demo's agencies (①), from `fixtures/demo-agencies.yaml`: a pension office following
//! the town's pension recipients, the 後期高齢者医療広域連合 following the whole town, and the
//! school board following the school-age children, each with a local endpoint that verifies
//! every signature the way an agency would. The change feed's first death then reaches the
//! two agencies concerned, and not the school board.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use oshirase_adapters::webhook::{verify, SigningKeys, WebhookSender, VERIFICATION_EVENT};
use oshirase_engine::calendar;
use oshirase_engine::clock::Clock;
use oshirase_engine::ids::ResidentId;
use oshirase_engine::purposes::Exchange;
use oshirase_exchange::register::{register, Verification};
use oshirase_exchange::{Deliverer, DeliveryPolicy, ExchangeMetrics, SigningKey};
use oshirase_store::{AgencySpec, InterestSpec, Store};

/// One demo agency as `fixtures/demo-agencies.yaml` describes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoAgency {
    id: String,
    name: String,
    purpose: String,
    // One-key maps as the rules write their enums (`{ attribute: … }`).
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    follows: Follows,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Follows {
    /// Everybody (the purpose must allow it).
    Municipality,
    /// The current residents with this attribute set.
    Attribute(String),
    /// The current residents of these ages (inclusive) on the first day.
    Ages([i32; 2]),
}

impl Follows {
    fn covers(&self, r: &oshirase_engine::resident::Resident, day: NaiveDate) -> bool {
        match self {
            Follows::Municipality => false,
            Follows::Attribute(a) => r.flag(a),
            Follows::Ages([from, to]) => {
                (*from..=*to).contains(&calendar::age_on(r.birth_date, day))
            }
        }
    }
}

fn demo_agencies() -> anyhow::Result<Vec<DemoAgency>> {
    serde_yaml_ng::from_str(crate::builtin::DEMO_AGENCIES)
        .context("fixtures/demo-agencies.yaml (built in)")
}

/// An event an endpoint received, signature checked.
#[derive(Debug, Clone)]
struct Received {
    agency: String,
    id: String,
}

#[derive(Clone)]
struct Endpoint {
    public_key: String,
    clock: Arc<dyn Clock>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(
    State(e): State<Endpoint>,
    Path(agency): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let id = h("webhook-id").to_owned();
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    if verify(
        &e.public_key,
        &id,
        ts,
        &body,
        h("webhook-signature"),
        e.clock.now().timestamp(),
    )
    .is_err()
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if event["type"] == VERIFICATION_EVENT {
        return axum::Json(serde_json::json!({ "challenge": event["data"]["challenge"] }))
            .into_response();
    }
    if event["type"] == oshirase_exchange::cloudevent::HEARTBEAT {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut received = e.received.lock().unwrap_or_else(|p| p.into_inner());
    // A duplicate (the same id) is dropped, as a receiver must.
    if !received.iter().any(|r| r.id == id) {
        received.push(Received { agency, id });
    }
    StatusCode::NO_CONTENT.into_response()
}

pub struct DemoAgencies {
    agencies: Vec<DemoAgency>,
    deliverer: Deliverer,
    received: Arc<Mutex<Vec<Received>>>,
}

impl DemoAgencies {
    /// Starts the endpoints, registers the agencies and their interest as of `day`.
    pub async fn start(
        store: &Store,
        exchange: &Exchange,
        clock: Arc<dyn Clock>,
        day: NaiveDate,
        local_gov_code: &str,
    ) -> anyhow::Result<DemoAgencies> {
        let keys = SigningKeys::generate();
        let received = Arc::new(Mutex::new(Vec::new()));
        let endpoint = Endpoint {
            public_key: keys.public_key(),
            clock: clock.clone(),
            received: received.clone(),
        };
        let app = axum::Router::new()
            .route("/{agency}", axum::routing::post(receive))
            .with_state(endpoint);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("the demo agencies' endpoint")?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = Arc::new(WebhookSender::new(keys, Duration::from_secs(5)));
        let source = oshirase_exchange::cloudevent::source(local_gov_code);
        // Their clients never call in the demo; a key set is still part of a registration.
        let client = SigningKey::generate()?;
        let jwks = serde_json::json!({ "keys": [client.public_jwk()] }).to_string();
        let agencies = demo_agencies()?;
        for a in &agencies {
            let spec = AgencySpec {
                id: a.id.clone(),
                name: a.name.clone(),
                endpoint: Some(format!("http://{addr}/{}", a.id)),
                client_jwks: jwks.clone(),
                dictionary_version: exchange.dictionary.version(),
                purposes: vec![a.purpose.clone()],
            };
            match register(store, exchange, &sender, &spec, &source, clock.now()).await? {
                Verification::Verified => {}
                other => anyhow::bail!("demo agency {}: {other:?}", a.id),
            }
        }
        let valid_to = calendar::add_days(day, 5 * 365);
        let interest = |agency: &str, purpose: &str, resident: Option<ResidentId>| InterestSpec {
            agency_id: agency.into(),
            purpose_id: purpose.into(),
            resident,
            items: None,
            valid_to,
        };
        let residents = store.residents().await?;
        for a in &agencies {
            if matches!(a.follows, Follows::Municipality) {
                store
                    .register_interest(&interest(&a.id, &a.purpose, None), clock.now())
                    .await?;
                continue;
            }
            for r in residents
                .iter()
                .filter(|r| r.is_current() && a.follows.covers(r, day))
            {
                store.issue_pseudonym(&a.id, &r.id, clock.now()).await?;
                store
                    .register_interest(
                        &interest(&a.id, &a.purpose, Some(r.id.clone())),
                        clock.now(),
                    )
                    .await?;
            }
        }
        let deliverer = Deliverer {
            name: "demo-agencies".into(),
            store: store.clone(),
            sender,
            clock,
            policy: DeliveryPolicy::default(),
            metrics: Arc::new(ExchangeMetrics::default()),
            local_gov_code: local_gov_code.into(),
        };
        Ok(DemoAgencies {
            agencies,
            deliverer,
            received,
        })
    }

    /// Delivers what is due; returns the events delivered.
    pub async fn deliver(&self) -> anyhow::Result<usize> {
        Ok(self.deliverer.drain().await?.delivered)
    }

    /// What the agencies received, and how the first death of the replay reached them.
    pub async fn report(&self, store: &Store, deaths: &[ResidentId]) -> anyhow::Result<()> {
        let received = self
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &received {
            *per.entry(r.agency.as_str()).or_default() += 1;
        }
        out!(
            "\nagencies told of updates: change events each endpoint received, signature verified:"
        );
        for a in &self.agencies {
            out!(
                "  {:>5}  {} ({})",
                per.get(a.id.as_str()).copied().unwrap_or(0),
                a.name,
                a.purpose
            );
        }
        // The first death that reached more than one agency: it shows who is told and who not.
        for dead in deaths {
            let told = store.provisions(dead).await?;
            let agencies: Vec<&str> = told.iter().map(|p| p.accessor_id.as_str()).collect();
            if agencies.len() < 2 {
                continue;
            }
            out!("a death reaching the agencies: {dead}");
            for p in &told {
                out!(
                    "  told:      {} ({}: {})",
                    p.accessor_name,
                    p.basis,
                    p.items
                        .iter()
                        .map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for a in &self.agencies {
                if !agencies.contains(&a.id.as_str()) {
                    out!("  not told:  {} (it follows nobody of this death)", a.name);
                }
            }
            out!(
                "  the resident's 情報の提供記録 lists these {} provisions (portal /records)",
                told.len()
            );
            break;
        }
        Ok(())
    }
}
