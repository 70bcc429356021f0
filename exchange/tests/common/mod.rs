//! The exchange test harness shared by `agencies.rs`, `edges.rs` and `office.rs`: the fixture
//! town's store with the bundled exchange, change feeds, the API on a free port, client
//! assertions and tokens, agency registration and the deliverer.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::sync::watch;

use oshirase_adapters::webhook::{SigningKeys, WebhookSender};
use oshirase_engine::calendar;
use oshirase_engine::clock::{self, Clock, FixedClock};
use oshirase_engine::ids::ResidentId;
use oshirase_engine::purposes::{self, Exchange};
use oshirase_engine::resident::Resident;
use oshirase_exchange::register::{register, Verification};
use oshirase_exchange::{
    ApiConfig, ApiState, Deliverer, DeliveryPolicy, ExchangeMetrics, Keys, SigningKey,
};
use oshirase_service::ingest::ingest;
use oshirase_store::{AgencySpec, Store};
use oshirase_testkit::{d, TestDb};

/// The fixture town's local government code.
pub const LGC: &str = "133621";
/// The day the tests start on (the town's snapshot is of 2026-10-01).
pub const START: &str = "2026-10-20";
/// The longest wait for a receiver or the API to reach a state.
pub const WAIT: Duration = Duration::from_secs(20);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);
/// A pseudonym of nobody (the form of ours: 32 hex digits).
pub const NOBODY: &str = "00000000000000000000000000000000";

pub const DIED: &str = "jp.lg.oshirase.resident.died";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bundled purposes and dictionary (`rules/`).
pub fn bundled() -> Exchange {
    purposes::load_dir(&root().join("rules"))
        .unwrap_or_else(|e| panic!("the bundled purposes: {e}"))
}

pub fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        base: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        dead_after: 3 * DAY,
        heartbeat: HOUR,
        lease: Duration::from_secs(60),
        batch: 200,
        streams: 32,
        poll: Duration::from_millis(20),
    }
}

// ---------------------------------------------------------------------------------------------
// The API, client assertions and tokens
// ---------------------------------------------------------------------------------------------

/// The API serving on its port, until `stop` is told.
pub struct Api {
    pub addr: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A listener on a free loopback port and the API's URL on it.
pub async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

pub async fn start_api(listener: tokio::net::TcpListener, state: ApiState) -> Api {
    let addr = listener.local_addr().expect("the API's address");
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(oshirase_exchange::serve(listener, state, stopped));
    Api { addr, stop, task }
}

/// The API's state over `store`, its public URL `public_url`.
pub fn api_state(
    store: &Store,
    exchange: Arc<Exchange>,
    keys: Arc<Keys>,
    clock: Arc<FixedClock>,
    metrics: Arc<ExchangeMetrics>,
    public_url: &str,
) -> ApiState {
    ApiState {
        store: store.clone(),
        exchange,
        keys,
        clock,
        metrics,
        config: ApiConfig {
            public_url: public_url.to_owned(),
            max_interest_days: 400,
            token_ttl_seconds: 300,
            authorization_endpoint: None,
        },
    }
}

/// A fresh ES256 key for the API's extracts and tokens.
pub fn api_keys() -> Arc<Keys> {
    Arc::new(Keys {
        current: SigningKey::generate().expect("an ES256 key"),
        previous: Vec::new(),
    })
}

/// An agency's client: its id and the key its assertions are signed with.
pub struct Client {
    pub id: String,
    pub key: SigningKey,
}

/// A client assertion (RFC 7523) signed with `key`, with `kid` in its header.
pub fn assertion(key: &SigningKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let encoding = EncodingKey::from_ec_pem(key.to_pem().as_bytes()).expect("our PEM");
    jsonwebtoken::encode(&header, claims, &encoding).expect("signs")
}

/// A client assertion of client `id` for `aud`, issued at `now`, signed with `key` (its kid in
/// the header).
pub fn client_assertion(id: &str, key: &SigningKey, aud: &str, now: i64, jti: &str) -> String {
    let claims = json!({"iss": id, "sub": id, "aud": aud, "iat": now,
                        "exp": now + 60, "jti": jti});
    assertion(key, Some(key.kid()), &claims)
}

/// Asks the token endpoint at `token_url` for a token with `assertion`.
pub async fn token_request(
    http: &reqwest::Client,
    token_url: &str,
    assertion: &str,
) -> (u16, Value) {
    let r = http
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .expect("the API answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------
// The municipality: store, API, webhook keys, clock
// ---------------------------------------------------------------------------------------------

/// The fixture town. Each test file adds its own helpers in an `impl Town` of its own.
pub struct Town {
    pub db: TestDb,
    pub store: Store,
    pub exchange: Arc<Exchange>,
    pub clock: Arc<FixedClock>,
    pub webhook_keys: SigningKeys,
    pub sender: Arc<WebhookSender>,
    pub api_keys: Arc<Keys>,
    pub metrics: Arc<ExchangeMetrics>,
    pub api: Option<Api>,
    pub api_url: String,
    /// The register as the fixture town has it (records the tests change are picked once).
    pub residents: Vec<Resident>,
    pub used: Mutex<BTreeSet<ResidentId>>,
    pub feed_seq: u64,
    /// The receivers' URLs (agencies.rs), told when the clock moves.
    pub agents: Mutex<Vec<String>>,
    /// The number of the next assertion's `jti` (edges.rs).
    pub jti: AtomicU64,
    pub http: reqwest::Client,
}

impl Town {
    /// The fixture town in a fresh database (named after `prefix`) of `backend`, with
    /// `exchange`, its API serving. The webhook keys have an HMAC secret too when `hmac`.
    pub async fn open(backend: &str, prefix: &str, exchange: Exchange, hmac: bool) -> Town {
        let db = oshirase_testkit::fresh(backend, prefix).await;
        let exchange = Arc::new(exchange);
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .with_exchange(exchange.clone());
        let clock = Arc::new(FixedClock::at_noon(d(START)));
        let text =
            std::fs::read_to_string(root().join("fixtures/town.jsonl")).expect("the fixture town");
        let report = ingest(&store, "town.jsonl", &text, false, clock.now())
            .await
            .unwrap_or_else(|e| panic!("the fixture town: {e}"));
        assert_eq!(
            report.outcome.agency_events, 0,
            "the baseline makes no events"
        );
        let residents = store.residents().await.expect("the register");
        let hmac_secret = hmac.then(SigningKeys::generate_hmac_secret);
        let webhook_keys = SigningKeys::from_secret(
            &SigningKeys::generate().ed25519_secret(),
            hmac_secret.as_deref(),
        )
        .expect("generated webhook keys");
        let sender = Arc::new(WebhookSender::new(
            webhook_keys.clone(),
            Duration::from_secs(10),
        ));
        let (listener, api_url) = listen().await;
        let mut town = Town {
            db,
            store,
            exchange,
            clock,
            webhook_keys,
            sender,
            api_keys: api_keys(),
            metrics: Arc::new(ExchangeMetrics::default()),
            api: None,
            api_url,
            residents,
            used: Mutex::new(BTreeSet::new()),
            feed_seq: 0,
            agents: Mutex::new(Vec::new()),
            jti: AtomicU64::new(0),
            http: reqwest::Client::new(),
        };
        town.api = Some(start_api(listener, town.api_state()).await);
        town
    }

    pub fn api_state(&self) -> ApiState {
        api_state(
            &self.store,
            self.exchange.clone(),
            self.api_keys.clone(),
            self.clock.clone(),
            self.metrics.clone(),
            &self.api_url,
        )
    }

    pub fn token_url(&self) -> String {
        format!("{}/agency/v1/token", self.api_url)
    }

    /// Asks the API for a token with `assertion`.
    pub async fn token_request(&self, assertion: &str) -> (u16, Value) {
        token_request(&self.http, &self.token_url(), assertion).await
    }

    /// The process ends between ingest and delivery: the API stops, the store is closed and
    /// opened again from its URL, and the API comes back on the same port.
    pub async fn restart(&mut self) {
        let api = self.api.take().expect("the API runs");
        api.stop.send(true).expect("the API listens for its stop");
        tokio::time::timeout(WAIT, api.task)
            .await
            .expect("the API stops")
            .expect("the API task")
            .expect("the API served");
        self.store.close().await;
        self.store = Store::open(&self.db.url)
            .await
            .unwrap_or_else(|e| panic!("reopening the store: {e}"))
            .with_exchange(self.exchange.clone());
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(api.addr).await {
                Ok(l) => break l,
                // The old socket may linger a moment after the server stopped.
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("binding the API's port {} again: {e}", api.addr),
            }
        };
        self.api = Some(start_api(listener, self.api_state()).await);
    }

    pub fn today(&self) -> NaiveDate {
        self.clock.now().with_timezone(&clock::jst()).date_naive()
    }

    pub fn in_days(&self, n: i64) -> NaiveDate {
        calendar::add_days(self.today(), n)
    }

    pub fn record(&self, id: &ResidentId) -> &Resident {
        self.residents
            .iter()
            .find(|r| &r.id == id)
            .expect("a resident of the town")
    }

    /// `n` residents not picked before, for whom `pred` holds, in register order.
    pub fn pick(&self, n: usize, pred: impl Fn(&Resident) -> bool) -> Vec<ResidentId> {
        let mut used = self.used.lock().unwrap();
        let found: Vec<ResidentId> = self
            .residents
            .iter()
            .filter(|r| !used.contains(&r.id) && pred(r))
            .take(n)
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(found.len(), n, "the fixture town has {n} such residents");
        used.extend(found.iter().cloned());
        found
    }

    /// An adult on the register whose change touches nobody else's record: not a
    /// householder, guardian or proxy, without a support measure.
    pub fn plain_adult(&self, r: &Resident) -> bool {
        r.is_current()
            && !r.support_measure
            && r.guardians.is_empty()
            && r.household
                .as_ref()
                .is_some_and(|h| !h.relationship.is_householder())
            && calendar::age_on(r.birth_date, self.today()) >= 20
            && !self.residents.iter().any(|o| {
                o.guardians.iter().any(|g| g.id == r.id) || o.proxies.iter().any(|p| p.id == r.id)
            })
    }

    /// `n` plain adults (see `plain_adult`) not picked before.
    pub fn adults(&self, n: usize) -> Vec<ResidentId> {
        self.pick(n, |r| self.plain_adult(r))
    }

    /// The municipality hands the agency its pseudonym of a person it has a case for.
    pub async fn pseudonym(&self, agency: &str, who: &ResidentId) -> String {
        self.store
            .issue_pseudonym(agency, who, self.clock.now())
            .await
            .expect("issuing a pseudonym")
            .expect("a registered agency")
    }

    /// Ingests one change feed of `lines` (their `seq` added); returns the agency events it
    /// wrote.
    pub async fn changes(&mut self, lines: Vec<Value>) -> usize {
        let mut text =
            json!({"format": "oshirase-changes", "schema_version": 1, "local_gov_code": LGC})
                .to_string();
        for mut line in lines {
            self.feed_seq += 1;
            line["seq"] = json!(self.feed_seq);
            text.push('\n');
            text.push_str(&line.to_string());
        }
        text.push('\n');
        let report = ingest(&self.store, "changes.jsonl", &text, false, self.clock.now())
            .await
            .unwrap_or_else(|e| panic!("ingesting the changes: {e}\n{text}"));
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        report.outcome.agency_events
    }

    pub fn death(&self, who: &ResidentId) -> Value {
        json!({"kind": "death", "date": calendar::day_before(self.today()), "recorded": self.today(),
               "resident": who.as_str()})
    }

    pub fn moved(&self, who: &ResidentId, text: &str) -> Value {
        json!({"kind": "address_change", "date": self.today(), "recorded": self.today(),
               "resident": who.as_str(),
               "address": {"local_gov_code": LGC, "postal_code": "100-0301", "text": text}})
    }

    pub fn correction(&self, who: &ResidentId, fields: Value) -> Value {
        json!({"kind": "correction", "date": self.today(), "recorded": self.today(),
               "resident": who.as_str(), "fields": fields})
    }

    pub fn deliverer_with(&self, name: &str, policy: DeliveryPolicy) -> Deliverer {
        Deliverer {
            name: name.to_owned(),
            store: self.store.clone(),
            sender: self.sender.clone(),
            clock: self.clock.clone(),
            policy,
            metrics: self.metrics.clone(),
            local_gov_code: LGC.to_owned(),
        }
    }

    /// The spec of agency `id` (named `name`) holding `purpose`, its client key `key`.
    pub fn spec(
        &self,
        id: &str,
        name: String,
        endpoint: Option<String>,
        key: &SigningKey,
        dictionary_version: u32,
        purpose: &str,
    ) -> AgencySpec {
        AgencySpec {
            id: id.to_owned(),
            name,
            endpoint,
            client_jwks: json!({ "keys": [key.public_jwk()] }).to_string(),
            dictionary_version,
            purposes: vec![purpose.to_owned()],
        }
    }

    /// Registers the agency of `spec` (the handshake with its endpoint, if it has one).
    pub async fn register(&self, spec: &AgencySpec) -> Verification {
        register(
            &self.store,
            &self.exchange,
            &self.sender,
            spec,
            &oshirase_exchange::cloudevent::source(LGC),
            self.clock.now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }
}
