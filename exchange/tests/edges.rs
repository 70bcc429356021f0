//! Edges of the agencies' exchange (①) that the end-to-end suite (`agencies.rs`, with Python
//! receivers) leaves out, in Rust only, on SQLite and PostgreSQL: retention (410 and the
//! resident's record), dead letters by age and by refusal, `as_of` pulls verified against the
//! JWKS, interest restricted to items, heartbeats, and the `/metrics` endpoint.
//!
//! The agencies' API runs on 127.0.0.1:0 and is called with reqwest; each agency's endpoint is
//! a tiny axum receiver in this process that checks every webhook's `v1a` signature against
//! the FixedClock, answers the handshake, and answers events and heartbeats with the status
//! the test sets (or a closed port). `Deliverer::drain` returns only after its sends were
//! answered, so what a receiver got is known when it returns: nothing here waits on time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{json, Value};

use oshirase_engine::calendar;
use oshirase_engine::clock::{self, Clock, FixedClock};
use oshirase_engine::ids::ResidentId;
use oshirase_exchange::cloudevent::HEARTBEAT;
use oshirase_exchange::register::Verification;
use oshirase_exchange::{Deliverer, DeliveryPolicy, PassReport, SigningKey};
use oshirase_store::Stream;
use oshirase_testkit::on_both;

mod common;

use common::{bundled, client_assertion, policy, Client, Town, DAY, DIED, HOUR, LGC, NOBODY};

const MINUTE: Duration = Duration::from_secs(60);
const VERIFICATION: &str = "jp.lg.oshirase.endpoint.verification";

// ---------------------------------------------------------------------------------------------
// An agency's endpoint: a receiver in this process
// ---------------------------------------------------------------------------------------------

/// One webhook request as the receiver saw it.
#[derive(Debug, Clone)]
struct Hit {
    webhook_id: String,
    body: Value,
    /// The `v1a` signature checked against our public key at the FixedClock's now.
    verified: Result<(), String>,
    answered: u16,
}

impl Hit {
    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
    fn seq(&self) -> Option<i64> {
        self.body["data"]["sequence"].as_i64()
    }
}

struct Inbox {
    public_key: String,
    clock: Arc<FixedClock>,
    /// The status answered to events and to heartbeats.
    events: AtomicU16,
    heartbeats: AtomicU16,
    hits: Mutex<Vec<Hit>>,
}

struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
}

async fn webhook(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if value["type"] == VERIFICATION {
        return axum::Json(json!({ "challenge": value["data"]["challenge"] })).into_response();
    }
    let webhook_id = header("webhook-id");
    let timestamp = header("webhook-timestamp").parse::<i64>().unwrap_or(0);
    let verified = oshirase_adapters::webhook::verify(
        &inbox.public_key,
        &webhook_id,
        timestamp,
        &body,
        &header("webhook-signature"),
        inbox.clock.now().timestamp(),
    );
    let answer = if value["type"] == HEARTBEAT {
        inbox.heartbeats.load(Ordering::SeqCst)
    } else {
        inbox.events.load(Ordering::SeqCst)
    };
    inbox.hits.lock().unwrap().push(Hit {
        webhook_id,
        body: value,
        verified,
        answered: answer,
    });
    (
        StatusCode::from_u16(answer).expect("a status code"),
        format!("the receiver answers {answer}"),
    )
        .into_response()
}

impl Receiver {
    async fn start(public_key: String, clock: Arc<FixedClock>) -> Receiver {
        let inbox = Arc::new(Inbox {
            public_key,
            clock,
            events: AtomicU16::new(200),
            heartbeats: AtomicU16::new(200),
            hits: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/webhook", axum::routing::post(webhook))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the receiver");
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inbox }
    }

    /// What it answers events (and, with `answer_heartbeats`, heartbeats) from now on.
    fn answer(&self, status: u16) {
        self.inbox.events.store(status, Ordering::SeqCst);
    }

    fn answer_heartbeats(&self, status: u16) {
        self.inbox.heartbeats.store(status, Ordering::SeqCst);
    }

    /// Every request but the handshake, each checked: a bad signature fails the test.
    fn hits(&self) -> Vec<Hit> {
        let hits = self.inbox.hits.lock().unwrap().clone();
        for h in &hits {
            assert!(h.verified.is_ok(), "a webhook that does not verify: {h:?}");
            assert_eq!(
                Some(h.webhook_id.as_str()),
                h.body["id"].as_str(),
                "the webhook-id is the event's id"
            );
        }
        hits
    }

    fn events(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.kind() != HEARTBEAT)
            .collect()
    }

    fn heartbeats(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.kind() == HEARTBEAT)
            .collect()
    }
}

/// What a receiver got, in short: (type, sequence, answer).
fn trail(hits: &[Hit]) -> Vec<(String, Option<i64>, u16)> {
    hits.iter()
        .map(|h| (h.kind().to_owned(), h.seq(), h.answered))
        .collect()
}

/// A URL on which nothing listens: a port bound and let go.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/webhook")
}

// ---------------------------------------------------------------------------------------------
// The municipality: store, API, webhook keys, clock
// ---------------------------------------------------------------------------------------------

/// An HTTP answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Town {
    async fn new(backend: &str) -> Town {
        Town::open(backend, "oshirase_edges", bundled(), false).await
    }

    async fn receiver(&self) -> Receiver {
        Receiver::start(self.webhook_keys.public_key(), self.clock.clone()).await
    }

    fn deliverer(&self, policy: DeliveryPolicy) -> Deliverer {
        self.deliverer_with("edges", policy)
    }

    async fn drain_with(&self, policy: DeliveryPolicy) -> PassReport {
        self.deliverer(policy)
            .drain()
            .await
            .unwrap_or_else(|e| panic!("delivering: {e}"))
    }

    async fn drain(&self) -> PassReport {
        self.drain_with(policy()).await
    }

    async fn stream(&self, agency: &str) -> Stream {
        let mut streams = self.store.streams(Some(agency)).await.expect("the streams");
        assert_eq!(streams.len(), 1, "{agency} holds one purpose");
        streams.remove(0)
    }

    /// Registers an agency holding `purpose` (its endpoint, or none: it pulls only).
    async fn agency(
        &self,
        id: &str,
        purpose: &str,
        endpoint: Option<&str>,
    ) -> (Client, Verification) {
        let key = SigningKey::generate().expect("an ES256 key");
        let spec = self.spec(
            id,
            format!("{id} agency"),
            endpoint.map(str::to_owned),
            &key,
            self.exchange.dictionary.version(),
            purpose,
        );
        let v = self.register(&spec).await;
        (
            Client {
                id: id.to_owned(),
                key,
            },
            v,
        )
    }

    /// A client assertion (RFC 7523) of `c` with a fresh `jti`.
    fn assertion(&self, c: &Client) -> String {
        let n = self.jti.fetch_add(1, Ordering::SeqCst);
        let now = self.clock.now().timestamp();
        client_assertion(&c.id, &c.key, &self.token_url(), now, &format!("edges-{n}"))
    }
    async fn token(&self, c: &Client) -> String {
        let (status, body) = self.token_request(&self.assertion(c)).await;
        assert_eq!(status, 200, "a token for {}: {body}", c.id);
        body["access_token"].as_str().expect("a token").to_owned()
    }

    /// A call to the API with a fresh token of `c`.
    async fn call(&self, c: &Client, method: Method, path: &str, body: Option<Value>) -> Reply {
        let token = self.token(c).await;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("the API answers");
        Reply {
            status: r.status().as_u16(),
            content_type: r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: r.text().await.expect("a body"),
        }
    }

    async fn get(&self, c: &Client, path: &str) -> Reply {
        self.call(c, Method::GET, path, None).await
    }

    async fn status(&self, c: &Client) -> Value {
        let r = self.get(c, "/agency/v1/status").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    async fn events_after(&self, c: &Client, purpose: &str, after: i64) -> Reply {
        self.get(
            c,
            &format!("/agency/v1/events?purpose={purpose}&after={after}"),
        )
        .await
    }

    /// The municipality hands the agency its pseudonym of `who`, and the agency follows them.
    async fn follow(
        &self,
        c: &Client,
        purpose: &str,
        who: &ResidentId,
        items: Option<&[&str]>,
    ) -> String {
        let p = self
            .store
            .issue_pseudonym(&c.id, who, self.clock.now())
            .await
            .expect("issuing a pseudonym")
            .expect("a registered agency");
        let mut body = json!({"purpose": purpose, "subject": p, "valid_to": self.in_days(90)});
        if let Some(items) = items {
            body["items"] = json!(items);
        }
        let r = self
            .call(c, Method::POST, "/agency/v1/interests", Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        p
    }

    async fn follow_municipality(&self, c: &Client, purpose: &str) {
        let body =
            json!({"purpose": purpose, "scope": "municipality", "valid_to": self.in_days(90)});
        let r = self
            .call(c, Method::POST, "/agency/v1/interests", Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }

    async fn pull(&self, c: &Client, pseudonym: &str, query: &str) -> Reply {
        self.get(c, &format!("/agency/v1/persons/{pseudonym}?{query}"))
            .await
    }

    /// A pulled extract verified as an agency does: against the key in our JWKS named by
    /// the header's `kid`, for this agency (`aud`) from this API (`iss`). Checked again with
    /// `SigningKey::verifier`, and refused once tampered with.
    async fn verify_extract(&self, c: &Client, r: &Reply) -> Value {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.content_type, "application/jwt");
        let jwks: JwkSet = self
            .http
            .get(format!("{}/agency/v1/jwks.json", self.api_url))
            .send()
            .await
            .expect("the JWKS")
            .json()
            .await
            .expect("a JWK set");
        let header = jsonwebtoken::decode_header(&r.body).expect("a JWS header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.typ.as_deref(), Some("oshirase-extract+jwt"));
        let kid = header.kid.expect("a kid");
        let jwk = jwks.find(&kid).expect("the extract's key is in the JWKS");
        let key = DecodingKey::from_jwk(jwk).expect("an EC JWK");
        let mut v = Validation::new(Algorithm::ES256);
        // An extract is evidence to keep: it has no `exp`.
        v.required_spec_claims = ["iss", "aud", "sub"].map(str::to_owned).into();
        v.validate_exp = false;
        v.set_audience(&[c.id.as_str()]);
        v.set_issuer(&[self.api_url.as_str()]);
        let claims = jsonwebtoken::decode::<Value>(&r.body, &key, &v)
            .unwrap_or_else(|e| panic!("the extract does not verify with the JWKS: {e}"))
            .claims;
        let again = jsonwebtoken::decode::<Value>(&r.body, self.api_keys.current.verifier(), &v)
            .expect("the extract verifies with the signing key's verifier")
            .claims;
        assert_eq!(claims, again);
        // The payload changed after signing: refused.
        let parts: Vec<&str> = r.body.split('.').collect();
        let mut forged: Value = claims.clone();
        forged["as_of"] = json!("1999-01-01");
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(
            jsonwebtoken::decode::<Value>(&tampered, &key, &v).is_err(),
            "a tampered extract verified"
        );
        claims
    }
}

fn items_of(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Array(a) => a.iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
        Value::Object(m) => m.keys().cloned().collect(),
        _ => panic!("no items in {v}"),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn seqs_listed(r: &Reply) -> Vec<i64> {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"]["sequence"].as_i64().unwrap())
        .collect()
}

/// The value of the metric line `name{labels}` in a Prometheus text.
fn metric<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

fn stream_series(name: &str, agency: &str, purpose: &str) -> String {
    format!("{name}{{agency=\"{agency}\",purpose=\"{purpose}\"}}")
}

fn agency_series(name: &str, agency: &str) -> String {
    format!("{name}{{agency=\"{agency}\"}}")
}

// ---------------------------------------------------------------------------------------------
// 1. Retention
// ---------------------------------------------------------------------------------------------

/// Events past the retention are moved into the residents' record: a replay from before them
/// is a 410 that says which numbers are gone, a replay from the last one archived still
/// works, and the record of what was provided keeps every delivered event. A pending event is
/// never archived; a dead letter (never provided) goes without a trace in the record.
async fn archived_events_are_gone_from_the_stream_and_kept_in_the_record(backend: &str) {
    let mut town = Town::new(backend).await;
    let rx = town.receiver().await;
    let (kouki, v) = town.agency("kouki", "kouki-shikaku", Some(&rx.url)).await;
    assert_eq!(v, Verification::Verified);
    town.follow_municipality(&kouki, "kouki-shikaku").await;
    let people = town.adults(4);

    // 1 and 2 delivered, 3 refused (a dead letter), 4 pending: all of the first day.
    let lines = vec![
        town.moved(&people[0], "東京都利島村800番地"),
        town.moved(&people[1], "東京都利島村801番地"),
    ];
    assert_eq!(town.changes(lines).await, 2);
    assert_eq!(town.drain().await.delivered, 2);
    rx.answer(400);
    assert_eq!(
        town.changes(vec![town.moved(&people[2], "東京都利島村802番地")])
            .await,
        1
    );
    let report = town.drain().await;
    assert_eq!((report.delivered, report.dead), (0, 1), "{report:?}");
    rx.answer(503);
    assert_eq!(
        town.changes(vec![town.moved(&people[3], "東京都利島村803番地")])
            .await,
        1
    );
    let report = town.drain().await;
    assert_eq!((report.delivered, report.retried), (0, 1), "{report:?}");

    let mut before = Vec::new();
    for p in &people {
        before.push(town.store.provisions(p).await.unwrap());
    }
    for (i, p) in before.iter().enumerate().take(2) {
        assert_eq!(p.len(), 1, "person {i}: {p:?}");
        assert_eq!(
            (p[0].action.as_str(), p[0].accessor_id.as_str()),
            ("event", "kouki")
        );
    }
    assert!(
        before[2].is_empty(),
        "a dead letter was never provided: {:?}",
        before[2]
    );
    assert!(
        before[3].is_empty(),
        "a pending event was not provided yet: {:?}",
        before[3]
    );

    // A month on, the events of thirty days ago and more are archived.
    town.clock.advance(31 * DAY);
    let cutoff = clock::before(town.clock.now(), 30 * DAY);
    let archived = town.store.archive_agency_events(cutoff).await.unwrap();
    assert_eq!(
        archived, 3,
        "the delivered ones and the dead letter; not the pending one"
    );

    let r = town.events_after(&kouki, "kouki-shikaku", 0).await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    let problem = r.json();
    assert_eq!(problem["status"], 410);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("up to 3"),
        "the detail names the numbers gone: {detail}"
    );
    for after in [1, 2] {
        let r = town.events_after(&kouki, "kouki-shikaku", after).await;
        assert_eq!(r.status, 410, "after={after}: {}", r.body);
    }
    let r = town.events_after(&kouki, "kouki-shikaku", 3).await;
    assert_eq!(seqs_listed(&r), vec![4], "the pending event is kept");
    assert_eq!(r.json()["last_sequence"], 4);

    // The record keeps what was provided, now from the access log, exactly as before.
    for (i, p) in people.iter().enumerate() {
        let after = town.store.provisions(p).await.unwrap();
        assert_eq!(
            after, before[i],
            "person {i}'s record changed with the archive"
        );
    }

    // The receiver is back: the pending event goes out, into the record, and is archived
    // in its turn; with nothing kept, a replay from before the last number is a 410 too.
    rx.answer(200);
    let report = town.drain().await;
    assert_eq!(report.delivered, 1, "{report:?}");
    let got = town.store.provisions(&people[3]).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].action, "event");
    assert_eq!(town.store.archive_agency_events(cutoff).await.unwrap(), 1);
    assert_eq!(town.store.provisions(&people[3]).await.unwrap(), got);
    let r = town.events_after(&kouki, "kouki-shikaku", 3).await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert!(
        r.json()["detail"].as_str().unwrap().contains("up to 4"),
        "{}",
        r.body
    );
    let r = town.events_after(&kouki, "kouki-shikaku", 4).await;
    assert_eq!(seqs_listed(&r), Vec::<i64>::new());
    assert_eq!(r.json()["last_sequence"], 4);
    // Archiving again moves nothing twice.
    assert_eq!(town.store.archive_agency_events(cutoff).await.unwrap(), 0);
    for p in &people[..2] {
        assert_eq!(town.store.provisions(p).await.unwrap().len(), 1);
    }
}
on_both!(
    retention,
    archived_events_are_gone_from_the_stream_and_kept_in_the_record
);

// ---------------------------------------------------------------------------------------------
// 2. Dead letters
// ---------------------------------------------------------------------------------------------

/// An endpoint that never takes an event (answering 503, or a closed port): the event is
/// retried until `dead_after`, then given up on; the stream goes on to the next, the status
/// and the metrics show the dead letter, and the event can still be read by sequence.
async fn an_event_undelivered_too_long_is_a_dead_letter(backend: &str) {
    let mut town = Town::new(backend).await;
    let rx = town.receiver().await;
    let (kouki, v) = town.agency("kouki", "kouki-shikaku", Some(&rx.url)).await;
    assert_eq!(v, Verification::Verified);
    // An endpoint that answered its handshake once; nothing listens there now.
    let closed = closed_port().await;
    let (down, v) = town
        .agency("kouki-down", "kouki-shikaku", Some(&closed))
        .await;
    assert!(matches!(v, Verification::Failed(_)), "{v:?}");
    town.store
        .mark_agency_verified("kouki-down", town.clock.now())
        .await
        .unwrap();
    town.follow_municipality(&kouki, "kouki-shikaku").await;
    town.follow_municipality(&down, "kouki-shikaku").await;
    rx.answer(503);
    rx.answer_heartbeats(503);
    let short = DeliveryPolicy {
        dead_after: HOUR,
        heartbeat: DAY,
        ..policy()
    };
    let [a, b]: [ResidentId; 2] = town.adults(2).try_into().unwrap();

    assert_eq!(
        town.changes(vec![town.moved(&a, "東京都利島村810番地")])
            .await,
        2
    );
    let report = town.drain_with(short.clone()).await;
    assert_eq!(
        (report.delivered, report.retried, report.dead),
        (0, 2, 0),
        "{report:?}"
    );
    for (c, why) in [
        (&kouki, "503".to_owned()),
        (&down, closed[7..].split('/').next().unwrap().to_owned()),
    ] {
        let s = &town.status(c).await["streams"][0];
        assert_eq!(
            (
                s["pending"].as_i64(),
                s["dead_letters"].as_i64(),
                s["attempts"].as_i64()
            ),
            (Some(1), Some(0), Some(1)),
            "{}: {s:#}",
            c.id
        );
        assert!(
            s["last_error"].as_str().is_some_and(|e| e.contains(&why)),
            "{}: {s:#}",
            c.id
        );
    }

    // The second event is made 40 minutes later; 70 minutes after the first, the first is
    // past `dead_after` (an hour) and the second is not.
    town.clock.advance(40 * MINUTE);
    assert_eq!(
        town.changes(vec![town.moved(&b, "東京都利島村811番地")])
            .await,
        2
    );
    town.clock.advance(30 * MINUTE);
    let report = town.drain_with(short.clone()).await;
    assert_eq!(
        (report.delivered, report.dead, report.retried),
        (0, 2, 2),
        "{report:?}"
    );
    let rendered = town
        .metrics
        .render(&town.store.streams(None).await.unwrap(), town.clock.now());
    for c in [&kouki, &down] {
        let status = town.status(c).await;
        let s = &status["streams"][0];
        assert_eq!(
            (
                s["last_sequence"].as_i64(),
                s["delivered_sequence"].as_i64(),
                s["pending"].as_i64(),
                s["dead_letters"].as_i64(),
            ),
            (Some(2), Some(1), Some(1), Some(1)),
            "{}: the stream went on past the dead letter: {status:#}",
            c.id
        );
        assert!(
            s["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{status:#}"
        );
        assert_eq!(
            metric(
                &rendered,
                &stream_series("oshirase_agency_dead_letters", &c.id, "kouki-shikaku")
            ),
            Some("1"),
            "{rendered}"
        );
        assert_eq!(
            metric(
                &rendered,
                &stream_series("oshirase_agency_backlog", &c.id, "kouki-shikaku")
            ),
            Some("1"),
            "{rendered}"
        );
        let states: Vec<String> = town
            .store
            .agency_events_after(&c.id, "kouki-shikaku", 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(states, ["dead", "pending"], "{}", c.id);
        // The dead letter is still there to be read by sequence.
        let r = town.events_after(c, "kouki-shikaku", 0).await;
        assert_eq!(seqs_listed(&r), vec![1, 2], "{}", r.body);
    }
    let s = &town.status(&kouki).await["streams"][0];
    assert!(s["last_error"].as_str().unwrap().contains("503"), "{s:#}");
    // And on the API's own /metrics.
    let scraped = town
        .http
        .get(format!("{}/metrics", town.api_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &scraped,
            &stream_series("oshirase_agency_dead_letters", "kouki", "kouki-shikaku")
        ),
        Some("1"),
        "{scraped}"
    );
    let first_tries = rx.events().iter().filter(|h| h.seq() == Some(1)).count();
    assert_eq!(first_tries, 2, "{:?}", rx.events());

    // The receiver is back: the second event is delivered; the first is never sent again.
    rx.answer(200);
    town.clock.advance(MINUTE);
    let report = town.drain_with(short.clone()).await;
    assert_eq!((report.delivered, report.dead), (1, 0), "{report:?}");
    let events = rx.events();
    assert_eq!(
        events.iter().filter(|h| h.seq() == Some(1)).count(),
        first_tries
    );
    let delivered: Vec<i64> = events
        .iter()
        .filter(|h| h.answered == 200)
        .filter_map(Hit::seq)
        .collect();
    assert_eq!(delivered, vec![2]);
    let stream = town.stream("kouki").await;
    assert_eq!(
        (
            stream.last_seq,
            stream.delivered_seq,
            stream.dead,
            stream.attempts
        ),
        (2, 2, 1, 0),
        "{stream:?}"
    );
    // Only what reached the agency is in b's record; a's event never did.
    assert!(town.store.provisions(&a).await.unwrap().is_empty());
    let got = town.store.provisions(&b).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|p| p.accessor_id.as_str())
            .collect::<Vec<_>>(),
        ["kouki"]
    );
}
on_both!(dead_by_age, an_event_undelivered_too_long_is_a_dead_letter);

/// A 4xx answer is a refusal for good: a dead letter at once, never retried, and the next
/// event goes out.
async fn a_refused_event_is_a_dead_letter_at_once(backend: &str) {
    let mut town = Town::new(backend).await;
    let rx = town.receiver().await;
    let (kouki, v) = town.agency("kouki", "kouki-shikaku", Some(&rx.url)).await;
    assert_eq!(v, Verification::Verified);
    town.follow_municipality(&kouki, "kouki-shikaku").await;
    let [a, b]: [ResidentId; 2] = town.adults(2).try_into().unwrap();
    rx.answer(400);
    assert_eq!(
        town.changes(vec![town.moved(&a, "東京都利島村820番地")])
            .await,
        1
    );
    let report = town.drain().await;
    assert_eq!(
        (report.delivered, report.dead, report.retried),
        (0, 1, 0),
        "{report:?}"
    );
    let status = town.status(&kouki).await;
    let s = &status["streams"][0];
    assert_eq!(
        (
            s["delivered_sequence"].as_i64(),
            s["pending"].as_i64(),
            s["dead_letters"].as_i64(),
            s["attempts"].as_i64()
        ),
        (Some(1), Some(0), Some(1), Some(0)),
        "{status:#}"
    );
    assert!(s["next_attempt_at"].is_null(), "nothing waits: {status:#}");
    // Not retried, however long one waits.
    town.clock.advance(10 * MINUTE);
    let report = town.drain().await;
    assert_eq!(
        (report.delivered, report.dead, report.retried),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(rx.events().len(), 1, "{:?}", rx.events());
    let rendered = town
        .metrics
        .render(&town.store.streams(None).await.unwrap(), town.clock.now());
    assert_eq!(
        metric(
            &rendered,
            &stream_series("oshirase_agency_dead_letters", "kouki", "kouki-shikaku")
        ),
        Some("1"),
        "{rendered}"
    );
    assert_eq!(
        metric(
            &rendered,
            &agency_series("oshirase_agency_delivery_refusals_total", "kouki")
        ),
        Some("1"),
        "{rendered}"
    );
    rx.answer(200);
    assert_eq!(
        town.changes(vec![town.moved(&b, "東京都利島村821番地")])
            .await,
        1
    );
    assert_eq!(town.drain().await.delivered, 1);
    let sent: Vec<(Option<i64>, u16)> = rx.events().iter().map(|h| (h.seq(), h.answered)).collect();
    assert_eq!(sent, [(Some(1), 400), (Some(2), 200)]);
    let r = town.events_after(&kouki, "kouki-shikaku", 0).await;
    assert_eq!(seqs_listed(&r), vec![1, 2]);
    let stream = town.stream("kouki").await;
    assert_eq!((stream.delivered_seq, stream.dead), (2, 1), "{stream:?}");
}
on_both!(refused, a_refused_event_is_a_dead_letter_at_once);

// ---------------------------------------------------------------------------------------------
// 3. as_of
// ---------------------------------------------------------------------------------------------

/// A person moves: a pull as of the day before gives the old address, today's the new one,
/// a future day is refused, and each extract verifies against the JWKS.
async fn a_pull_as_of_a_day_gives_the_register_of_that_day(backend: &str) {
    let mut town = Town::new(backend).await;
    let (nenkin, v) = town.agency("nenkin", "nenkin-kyufu", None).await;
    assert_eq!(v, Verification::NoEndpoint);
    let who = town.adults(1).remove(0);
    let p = town.follow(&nenkin, "nenkin-kyufu", &who, None).await;
    let old = town.record(&who).address.text.clone();
    let first_day = town.today();
    town.clock.advance(DAY);
    let new = "東京都利島村830番地";
    assert_ne!(old, new);
    assert_eq!(town.changes(vec![town.moved(&who, new)]).await, 1);
    let today = town.today();
    let yesterday = calendar::day_before(today);
    assert_eq!(yesterday, first_day);

    let r = town
        .pull(
            &nenkin,
            &p,
            &format!("purpose=nenkin-kyufu&as_of={yesterday}"),
        )
        .await;
    let claims = town.verify_extract(&nenkin, &r).await;
    assert_eq!(claims["as_of"], yesterday.to_string());
    assert_eq!(
        claims["items"]["address"]["text"],
        old.as_str(),
        "{claims:#}"
    );
    assert_eq!(claims["sub"], p.as_str());

    let r = town
        .pull(&nenkin, &p, &format!("purpose=nenkin-kyufu&as_of={today}"))
        .await;
    let claims = town.verify_extract(&nenkin, &r).await;
    assert_eq!(claims["as_of"], today.to_string());
    assert_eq!(claims["items"]["address"]["text"], new, "{claims:#}");
    // Without `as_of`: today.
    let r = town.pull(&nenkin, &p, "purpose=nenkin-kyufu").await;
    let claims = town.verify_extract(&nenkin, &r).await;
    assert_eq!(claims["as_of"], today.to_string());
    assert_eq!(claims["items"]["address"]["text"], new);

    let tomorrow = calendar::day_after(today);
    let r = town
        .pull(
            &nenkin,
            &p,
            &format!("purpose=nenkin-kyufu&as_of={tomorrow}"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    let r = town
        .pull(&nenkin, &p, "purpose=nenkin-kyufu&as_of=2026-13-01")
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Before the register held the person at all: no such person, as for a pseudonym of
    // nobody.
    let before = calendar::day_before(first_day);
    let r = town
        .pull(&nenkin, &p, &format!("purpose=nenkin-kyufu&as_of={before}"))
        .await;
    let nobody = town.pull(&nenkin, NOBODY, "purpose=nenkin-kyufu").await;
    assert_eq!(nobody.status, 404);
    assert_eq!(r, nobody);
    // Three pulls answered are in the person's record; the refused ones are not.
    let pulls = town
        .store
        .provisions(&who)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.action == "pull")
        .count();
    assert_eq!(pulls, 3);
}
on_both!(as_of, a_pull_as_of_a_day_gives_the_register_of_that_day);

// ---------------------------------------------------------------------------------------------
// 4. Interest restricted to items
// ---------------------------------------------------------------------------------------------

/// An interest in two items hears only of changes to them, and a pull under it gives only
/// them.
async fn an_interest_in_some_items_hears_and_reads_only_those(backend: &str) {
    let mut town = Town::new(backend).await;
    let (nenkin, _) = town.agency("nenkin", "nenkin-kyufu", None).await;
    let [p, q]: [ResidentId; 2] = town.adults(2).try_into().unwrap();
    let pp = town
        .follow(
            &nenkin,
            "nenkin-kyufu",
            &p,
            Some(&["status", "status_date"]),
        )
        .await;
    let pq = town.follow(&nenkin, "nenkin-kyufu", &q, None).await;
    let r = town.get(&nenkin, "/agency/v1/interests").await;
    let listed = r.json();
    let of = |subject: &str| {
        listed["interests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["subject"] == subject)
            .cloned()
            .unwrap_or_else(|| panic!("{listed:#}"))
    };
    assert_eq!(items_of(&of(&pp)["items"]), set(&["status", "status_date"]));
    assert!(of(&pq)["items"].is_null());

    // A move is no news under an interest in the status alone; it is under the other.
    assert_eq!(
        town.changes(vec![town.moved(&p, "東京都利島村840番地")])
            .await,
        0
    );
    assert_eq!(
        town.changes(vec![town.moved(&q, "東京都利島村841番地")])
            .await,
        1
    );
    // A death is.
    town.clock.advance(DAY);
    assert_eq!(town.changes(vec![town.death(&p)]).await, 1);
    let r = town.events_after(&nenkin, "nenkin-kyufu", 0).await;
    let events = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2, "{:#}", r.json());
    assert_eq!(events[0]["subject"], pq.as_str());
    assert_eq!(items_of(&events[0]["data"]["items"]), set(&["address"]));
    assert_eq!(events[1]["subject"], pp.as_str());
    assert_eq!(events[1]["type"], DIED);
    assert_eq!(
        items_of(&events[1]["data"]["items"]),
        set(&["status", "status_date"])
    );

    // The pull without `items=` gives the interest's two.
    let r = town.pull(&nenkin, &pp, "purpose=nenkin-kyufu").await;
    let claims = town.verify_extract(&nenkin, &r).await;
    assert_eq!(
        items_of(&claims["items"]),
        set(&["status", "status_date"]),
        "{claims:#}"
    );
    assert_eq!(claims["items"]["status"]["kind"], "deceased");
    let r = town
        .pull(&nenkin, &pp, "purpose=nenkin-kyufu&items=status")
        .await;
    assert_eq!(
        items_of(&town.verify_extract(&nenkin, &r).await["items"]),
        set(&["status"])
    );
    // An item of the purpose outside the interest: no such person.
    let nobody = town.pull(&nenkin, NOBODY, "purpose=nenkin-kyufu").await;
    for items in ["address", "name,status"] {
        let r = town
            .pull(&nenkin, &pp, &format!("purpose=nenkin-kyufu&items={items}"))
            .await;
        assert_eq!(r, nobody, "items={items}");
    }
    // The other interest reads every item of the purpose.
    let purpose = town.exchange.purpose("nenkin-kyufu").unwrap();
    let permitted: BTreeSet<String> = town
        .exchange
        .permitted(purpose, town.exchange.dictionary.version(), None)
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let r = town.pull(&nenkin, &pq, "purpose=nenkin-kyufu").await;
    assert_eq!(
        items_of(&town.verify_extract(&nenkin, &r).await["items"]),
        permitted
    );
}
on_both!(items, an_interest_in_some_items_hears_and_reads_only_those);

// ---------------------------------------------------------------------------------------------
// 5. Heartbeats
// ---------------------------------------------------------------------------------------------

/// An idle stream with a verified endpoint gets a heartbeat naming its last sequence; a
/// failed one is not retried like an event, and shows as the stream's last error. A stream
/// whose endpoint is not verified gets none.
async fn an_idle_stream_gets_heartbeats(backend: &str) {
    let mut town = Town::new(backend).await;
    let rx = town.receiver().await;
    let (kouki, v) = town.agency("kouki", "kouki-shikaku", Some(&rx.url)).await;
    assert_eq!(v, Verification::Verified);
    let (unverified, v) = town
        .agency(
            "kouki-unverified",
            "kouki-shikaku",
            Some(&closed_port().await),
        )
        .await;
    assert!(matches!(v, Verification::Failed(_)), "{v:?}");
    town.follow_municipality(&kouki, "kouki-shikaku").await;
    town.follow_municipality(&unverified, "kouki-shikaku").await;
    let a = town.adults(1).remove(0);
    assert_eq!(
        town.changes(vec![town.moved(&a, "東京都利島村850番地")])
            .await,
        2
    );
    let report = town.drain().await;
    assert_eq!((report.delivered, report.heartbeats), (1, 0), "{report:?}");
    assert_eq!(
        town.drain().await,
        PassReport::default(),
        "not idle long enough"
    );

    town.clock.advance(HOUR + MINUTE);
    let report = town.drain().await;
    assert_eq!(
        report,
        PassReport {
            heartbeats: 1,
            ..PassReport::default()
        }
    );
    let stream = town.stream("kouki").await;
    let beats = rx.heartbeats();
    assert_eq!(beats.len(), 1, "{beats:?}");
    let beat = &beats[0].body;
    assert_eq!(beat["type"], HEARTBEAT);
    assert_eq!(beat["source"], oshirase_exchange::cloudevent::source(LGC));
    assert_eq!(beat["data"]["purpose"], "kouki-shikaku");
    assert_eq!(
        beat["data"]["last_sequence"].as_i64(),
        Some(stream.last_seq)
    );
    assert_eq!(stream.last_seq, 1);
    assert!(
        beat.get("subject").is_none(),
        "a heartbeat names nobody: {beat}"
    );
    assert_eq!(stream.last_sent_at, Some(town.clock.now()));
    assert_eq!(stream.last_error, None);

    // The endpoint fails a heartbeat: shown, not retried as an event would be.
    rx.answer_heartbeats(503);
    town.clock.advance(HOUR + MINUTE);
    let report = town.drain().await;
    assert_eq!(
        report,
        PassReport::default(),
        "a failed heartbeat is no retry: {report:?}"
    );
    assert_eq!(rx.heartbeats().len(), 2);
    let stream = town.stream("kouki").await;
    assert_eq!(
        (stream.attempts, stream.delivered_seq, stream.last_seq),
        (0, 1, 1),
        "{stream:?}"
    );
    let error = stream.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("heartbeat") && error.contains("503"),
        "{stream:?}"
    );
    let status = town.status(&kouki).await;
    let s = &status["streams"][0];
    assert_eq!(
        (s["attempts"].as_i64(), s["pending"].as_i64()),
        (Some(0), Some(0)),
        "{status:#}"
    );
    assert!(s["next_attempt_at"].is_null(), "{status:#}");
    assert_eq!(s["last_error"].as_str(), Some(error.as_str()));
    for wait in [Duration::ZERO, 10 * MINUTE, 30 * MINUTE] {
        town.clock.advance(wait);
        assert_eq!(town.drain().await, PassReport::default());
        assert_eq!(
            rx.heartbeats().len(),
            2,
            "a failed heartbeat was sent again"
        );
    }
    // The next comes after the interval, and clears the error.
    rx.answer_heartbeats(200);
    town.clock.advance(HOUR);
    assert_eq!(town.drain().await.heartbeats, 1);
    assert_eq!(rx.heartbeats().len(), 3);
    assert_eq!(town.stream("kouki").await.last_error, None);
    assert_eq!(rx.events().len(), 1, "only the one event, once");

    // The unverified endpoint's stream has its event waiting, and was never sent a thing.
    let other = town.stream("kouki-unverified").await;
    assert_eq!((other.last_seq, other.delivered_seq), (1, 0), "{other:?}");
    assert_eq!((other.last_sent_at, other.attempts), (None, 0), "{other:?}");
}
on_both!(heartbeat, an_idle_stream_gets_heartbeats);

/// A stream whose event waits out its backoff is not idle: a heartbeat must not go out in the
/// middle of the wait and cut it short (nor replace the event's error in the status).
async fn a_heartbeat_does_not_cut_a_retry_short(backend: &str) {
    let mut town = Town::new(backend).await;
    let rx = town.receiver().await;
    let (kouki, v) = town.agency("kouki", "kouki-shikaku", Some(&rx.url)).await;
    assert_eq!(v, Verification::Verified);
    town.follow_municipality(&kouki, "kouki-shikaku").await;
    let slow = DeliveryPolicy {
        base: 10 * MINUTE,
        max_backoff: HOUR,
        ..policy()
    };
    rx.answer(503);
    let a = town.adults(1).remove(0);
    assert_eq!(
        town.changes(vec![town.moved(&a, "東京都利島村860番地")])
            .await,
        1
    );
    let report = town.drain_with(slow.clone()).await;
    assert_eq!((report.delivered, report.retried), (0, 1), "{report:?}");
    let waiting = town.stream("kouki").await;
    assert!(
        waiting.next_attempt_at >= clock::after(town.clock.now(), 5 * MINUTE),
        "{waiting:?}"
    );
    let tried = rx.events().len();
    // Nothing is due until the retry time: passes in the meantime do not try the event again
    // (a heartbeat may go out or not), and leave its retry time, attempts and error alone.
    for _ in 0..2 {
        let report = town.drain_with(slow.clone()).await;
        assert_eq!(
            (report.delivered, report.retried, report.dead),
            (0, 0, 0),
            "a pass before the retry time tried the event: {:?}",
            trail(&rx.hits())
        );
    }
    assert_eq!(
        rx.events().len(),
        tried,
        "the event was sent again before its retry time, after a heartbeat: {:?}",
        trail(&rx.hits())
    );
    let after = town.stream("kouki").await;
    assert_eq!(
        (after.next_attempt_at, after.attempts, &after.last_error),
        (
            waiting.next_attempt_at,
            waiting.attempts,
            &waiting.last_error
        ),
        "the wait for the retry was changed by passes with nothing due"
    );
    let status = town.status(&kouki).await;
    assert!(
        status["streams"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503") && !e.starts_with("heartbeat")),
        "{status:#}"
    );
    // At its time, the event is tried again.
    town.clock.advance(HOUR);
    let report = town.drain_with(slow.clone()).await;
    assert_eq!(report.retried, 1, "{report:?}");
    assert_eq!(rx.events().len(), tried + 1);
}
on_both!(heartbeat_backoff, a_heartbeat_does_not_cut_a_retry_short);

// ---------------------------------------------------------------------------------------------
// 6. The metrics endpoint
// ---------------------------------------------------------------------------------------------

/// `/metrics` answers the service's own machine with every agency's counters and streams,
/// and nobody else.
async fn metrics_are_served_to_loopback_only(backend: &str) {
    let mut town = Town::new(backend).await;
    let rx = town.receiver().await;
    let (kouki, _) = town.agency("kouki", "kouki-shikaku", Some(&rx.url)).await;
    let (nenkin, _) = town.agency("nenkin", "nenkin-kyufu", None).await;
    town.follow_municipality(&kouki, "kouki-shikaku").await;
    let [a, b]: [ResidentId; 2] = town.adults(2).try_into().unwrap();
    let pa = town.follow(&nenkin, "nenkin-kyufu", &a, None).await;
    let lines = vec![
        town.moved(&a, "東京都利島村870番地"),
        town.moved(&b, "東京都利島村871番地"),
    ];
    assert_eq!(town.changes(lines).await, 1 + 2);
    assert_eq!(town.drain().await.delivered, 2);
    assert_eq!(
        town.pull(&nenkin, &pa, "purpose=nenkin-kyufu").await.status,
        200
    );
    assert_eq!(
        town.pull(&nenkin, NOBODY, "purpose=nenkin-kyufu")
            .await
            .status,
        404
    );
    // A replayed assertion is a refused token.
    let once = town.assertion(&nenkin);
    assert_eq!(town.token_request(&once).await.0, 200);
    assert_eq!(town.token_request(&once).await.0, 401);

    let r = town
        .http
        .get(format!("{}/metrics", town.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = r.text().await.unwrap();
    let want = [
        (
            agency_series("oshirase_agency_deliveries_total", "kouki"),
            "2",
        ),
        (
            agency_series("oshirase_agency_delivery_refusals_total", "kouki"),
            "0",
        ),
        (agency_series("oshirase_agency_pulls_total", "nenkin"), "1"),
        (
            agency_series("oshirase_agency_pulls_refused_total", "nenkin"),
            "1",
        ),
        // Interest, two pulls and the assertion used twice.
        (agency_series("oshirase_agency_tokens_total", "nenkin"), "4"),
        (
            agency_series("oshirase_agency_tokens_refused_total", "nenkin"),
            "1",
        ),
        (agency_series("oshirase_agency_tokens_total", "kouki"), "1"),
        (
            stream_series("oshirase_agency_last_sequence", "kouki", "kouki-shikaku"),
            "2",
        ),
        (
            stream_series("oshirase_agency_backlog", "kouki", "kouki-shikaku"),
            "0",
        ),
        (
            stream_series("oshirase_agency_lag_seconds", "kouki", "kouki-shikaku"),
            "0",
        ),
        (
            stream_series("oshirase_agency_dead_letters", "kouki", "kouki-shikaku"),
            "0",
        ),
        (
            stream_series("oshirase_agency_last_sequence", "nenkin", "nenkin-kyufu"),
            "1",
        ),
        (
            stream_series("oshirase_agency_dead_letters", "nenkin", "nenkin-kyufu"),
            "0",
        ),
    ];
    for (series, value) in want {
        assert_eq!(metric(&text, &series), Some(value), "{series} in:\n{text}");
    }
    for name in [
        "oshirase_agency_deliveries_total",
        "oshirase_agency_dead_letters",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{text}");
    }

    // The same API, reached from another machine (the peer another address), or where the
    // peer is not known: refused.
    let remote = axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(SocketAddr::from((
                    [192, 0, 2, 7],
                    40000,
                ))));
            next.run(req).await
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let from_afar = format!("http://{}", listener.local_addr().unwrap());
    let app = oshirase_exchange::router(town.api_state()).layer(remote);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unknown = format!("http://{}", listener.local_addr().unwrap());
    let app = oshirase_exchange::router(town.api_state());
    tokio::spawn(async move { axum::serve(listener, app).await });
    for base in [&from_afar, &unknown] {
        let r = town
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{base}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("oshirase_agency"), "{body}");
        // The agencies' calls are not limited so.
        let r = town
            .http
            .get(format!("{base}/agency/v1/jwks.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{base}");
    }
}
on_both!(metrics, metrics_are_served_to_loopback_only);
