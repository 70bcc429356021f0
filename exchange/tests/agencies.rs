//! Agencies told of updates (①), end to end, on SQLite and PostgreSQL: a fresh store with the
//! bundled purposes attached, the agencies' API on 127.0.0.1:0, the Deliverer, and each agency
//! as an independent Python process (`agency_receiver.py`) that checks every webhook with the
//! PyPI `standardwebhooks` package (v1) and `cryptography` (v1a), takes its access tokens with
//! `authlib` (client_credentials + private_key_jwt, ES256), replays what it missed through
//! `GET /agency/v1/events`, and verifies the pulled JWS with `jwcrypto` against our JWKS.
//!
//! Python 3 and those packages are required, never skipped: scripts/services/agency.sh.
//!
//! One fixed clock rules both sides: the municipality's `FixedClock` and each receiver's own
//! clock (told on every move), so webhook timestamps and client assertions agree with it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::watch;

use oshirase_adapters::webhook::SigningKeys;
use oshirase_engine::calendar;
use oshirase_engine::clock::{self, Clock};
use oshirase_engine::ids::ResidentId;
use oshirase_engine::items::{ItemCode, ItemSource};
use oshirase_engine::purposes::{self, Exchange, ProtectedAddress};
use oshirase_exchange::register::Verification;
use oshirase_exchange::{Deliverer, DeliveryPolicy, PassReport, SigningKey};
use oshirase_store::StreamProgress;
use oshirase_testkit::on_both;

mod common;

use common::{assertion, bundled, policy, root, Town, DAY, DIED, HOUR, LGC, NOBODY, WAIT};

const CHANGED: &str = "jp.lg.oshirase.resident.changed";

fn receiver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agency_receiver.py")
}

/// The bundled purposes and one more that must never see a protected address: every bundled
/// purpose gives it marked (`provide_marked`), so the other branch needs a purpose of its own.
const WITHHOLDING: &str = "test-soudan";

fn with_withholding_purpose() -> Exchange {
    let rules = root().join("rules");
    let dictionary_file = rules.join(purposes::DICTIONARY_FILE);
    let dictionary = std::fs::read_to_string(&dictionary_file).expect("the dictionary");
    let mut files: Vec<(String, String)> = std::fs::read_dir(rules.join(purposes::PURPOSES_DIR))
        .expect("the purposes folder")
        .map(|e| e.expect("a purpose file").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a purpose file");
            (p.display().to_string(), text)
        })
        .collect();
    files.sort();
    files.push((
        format!("{WITHHOLDING}.yaml"),
        format!(
            "id: {WITHHOLDING}\nbody: 福祉事務所（試験）\nduty: 相談支援（試験のための目的）\n\
             legal_basis: 試験のみ\nitems: [name, birth_date, address, status]\n\
             following: persons\nprotected_address: withhold\n"
        ),
    ));
    purposes::compile_sources(
        (&dictionary_file.display().to_string(), &dictionary),
        &files,
    )
    .unwrap_or_else(|e| panic!("the purposes with {WITHHOLDING}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The municipality: the shared town (common), and the agencies' receivers it tells of the clock
// ---------------------------------------------------------------------------------------------

impl Town {
    async fn new(backend: &str) -> Town {
        Town::with(backend, bundled()).await
    }

    async fn with(backend: &str, exchange: Exchange) -> Town {
        Town::open(backend, "oshirase_agencies", exchange, true).await
    }

    /// Moves the municipality's clock and every agency's.
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        let now = self.clock.now().timestamp();
        let agents = self.agents.lock().unwrap().clone();
        for url in agents {
            let r = self
                .http
                .post(format!("{url}/control"))
                .json(&json!({ "now": now }))
                .send()
                .await
                .expect("a receiver answers");
            assert!(r.status().is_success());
        }
    }

    fn deliverer(&self, name: &str) -> Deliverer {
        self.deliverer_with(name, policy())
    }

    async fn drain(&self, name: &str) -> PassReport {
        self.deliverer(name)
            .drain()
            .await
            .unwrap_or_else(|e| panic!("delivering: {e}"))
    }

    /// An agency that pulls only (no endpoint), with its client key.
    async fn pull_only(&self, id: &str, purpose: &str) -> SigningKey {
        let key = SigningKey::generate().expect("an ES256 key");
        let spec = self.spec(
            id,
            format!("{id} (pull only)"),
            None,
            &key,
            self.exchange.dictionary.version(),
            purpose,
        );
        let v = self.register(&spec).await;
        assert_eq!(v, Verification::NoEndpoint);
        key
    }
    /// Starts the agency's receiver and registers the agency with its endpoint (the
    /// handshake must pass).
    async fn agency(&self, id: &str, purpose: &str, dictionary_version: u32) -> Agent {
        let key = SigningKey::generate().expect("an ES256 key");
        let key_file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(key_file.path(), key.to_pem()).expect("writing the client key");
        let mut child = tokio::process::Command::new("python3")
            .arg(receiver_script())
            // `--name=value`: a kid (base64url) may begin with '-'.
            .arg("--port=0")
            .arg(format!("--agency={id}"))
            .arg(format!("--purpose={purpose}"))
            .arg(format!("--api={}", self.api_url))
            .arg(format!("--kid={}", key.kid()))
            .arg(format!("--key={}", key_file.path().display()))
            .arg(format!("--now={}", self.clock.now().timestamp()))
            .env("AGENCY_WHSEC", self.webhook_keys.hmac_secret().expect("an HMAC secret"))
            .env("AGENCY_WHPK", self.webhook_keys.public_key())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("python3 does not run ({e}): install Python 3, then run scripts/services/agency.sh")
            });
        // What it says on stderr, kept for the failure messages.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line()).await;
        let port = match first {
            Ok(Ok(Some(line))) => serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["port"].as_u64())
                .unwrap_or_else(|| {
                    panic!("agency_receiver.py printed {line:?}, not {{\"port\": N}}")
                }),
            other => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "the agency receiver did not start ({other:?}, exit {status:?}); run scripts/services/agency.sh\n{}",
                    stderr.lock().unwrap()
                )
            }
        };
        let url = format!("http://127.0.0.1:{port}");
        let agent = Agent {
            id: id.to_owned(),
            purpose: purpose.to_owned(),
            url: url.clone(),
            key,
            _key_file: key_file,
            _child: child,
            stderr,
            http: self.http.clone(),
        };
        let spec = self.spec(
            id,
            format!("{id} agency"),
            Some(format!("{url}/webhook")),
            &agent.key,
            dictionary_version,
            purpose,
        );
        let v = self.register(&spec).await;
        assert_eq!(
            v,
            Verification::Verified,
            "{}",
            agent.stderr.lock().unwrap()
        );
        assert_eq!(
            agent.state().await["challenges"],
            1,
            "the handshake reached the agency"
        );
        self.agents.lock().unwrap().push(url);
        agent
    }
}

// ---------------------------------------------------------------------------------------------
// An agency: its receiver process
// ---------------------------------------------------------------------------------------------

struct Agent {
    id: String,
    purpose: String,
    url: String,
    key: SigningKey,
    _key_file: tempfile::NamedTempFile,
    _child: tokio::process::Child,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

/// An HTTP answer, as the agency saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Agent {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("{} receiver: {e}\n{}", self.id, self.stderr.lock().unwrap())
            });
        let status = r.status();
        let v: Value = r.json().await.expect("the receiver answers JSON");
        assert!(
            status.is_success(),
            "{} receiver {path}: {status} {v}",
            self.id
        );
        v
    }

    async fn state(&self) -> Value {
        self.http
            .get(format!("{}/state", self.url))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("{} receiver: {e}\n{}", self.id, self.stderr.lock().unwrap())
            })
            .json()
            .await
            .expect("the receiver's state is JSON")
    }

    async fn control(&self, c: Value) {
        self.post("/control", c).await;
    }

    /// A call to the API with the agency's own token (authlib, private_key_jwt).
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = json!({ "method": method, "path": path });
        if let Some(b) = body {
            req["json"] = b;
        }
        let v = self.post("/control/api", req).await;
        Reply {
            status: v["status"].as_u64().expect("a status") as u16,
            content_type: v["content_type"].as_str().map(str::to_owned),
            body: v["body"].as_str().expect("a body").to_owned(),
        }
    }

    /// A pull of a person, verified by the agency (`verified`, `claims`, `header`).
    async fn pull(&self, subject: &str, purpose: &str, items: Option<&str>) -> Value {
        let mut req = json!({ "subject": subject, "purpose": purpose });
        if let Some(i) = items {
            req["items"] = json!(i);
        }
        self.post("/control/pull", req).await
    }

    async fn follow(&self, town: &Town, who: &ResidentId, valid_to: NaiveDate) -> String {
        let p = town.pseudonym(&self.id, who).await;
        let r = self
            .api(
                "POST",
                "/agency/v1/interests",
                Some(json!({ "purpose": self.purpose, "subject": p, "valid_to": valid_to })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        p
    }

    async fn follow_municipality(&self, valid_to: NaiveDate) {
        let r = self
            .api(
                "POST",
                "/agency/v1/interests",
                Some(json!({ "purpose": self.purpose, "scope": "municipality", "valid_to": valid_to })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Polls the receiver's state until `done` holds, or fails with the state after `WAIT`.
    async fn wait_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let polled = tokio::time::timeout(WAIT, async {
            loop {
                let s = self.state().await;
                if done(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        match polled {
            Ok(s) => s,
            Err(_) => panic!(
                "{}: waited {WAIT:?} for {what}; its state:\n{:#}\n{}",
                self.id,
                self.state().await,
                self.stderr.lock().unwrap()
            ),
        }
    }
}

fn events(state: &Value) -> &Vec<Value> {
    state["events"].as_array().expect("events")
}

fn seqs(state: &Value) -> Vec<i64> {
    events(state)
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect()
}

fn vias(state: &Value) -> Vec<&str> {
    events(state)
        .iter()
        .map(|e| e["via"].as_str().unwrap())
        .collect()
}

fn count(state: &Value, key: &str) -> usize {
    state[key].as_array().map_or(0, Vec::len)
}

fn duplicates(state: &Value) -> Vec<&Value> {
    state["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["duplicate"] == true)
        .collect()
}

fn items_of(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Array(a) => a.iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
        Value::Object(m) => m.keys().cloned().collect(),
        _ => panic!("no items in {v}"),
    }
}

fn codes(set: &BTreeSet<ItemCode>) -> BTreeSet<String> {
    set.iter().map(|c| c.as_str().to_owned()).collect()
}

/// What every agency's receiver must show after a scenario: nothing refused, nothing it
/// could not pull or authenticate for, and every event once, in order.
fn clean(state: &Value, n: i64) {
    clean_but_refused(state, n, 0);
}

/// `clean`, with `refused` webhooks refused on purpose.
fn clean_but_refused(state: &Value, n: i64, refused: usize) {
    assert_eq!(
        count(state, "refused"),
        refused,
        "refused webhooks: {:#}",
        state["refused"]
    );
    assert_eq!(
        count(state, "pull_errors"),
        0,
        "failed pulls: {:#}",
        state["pull_errors"]
    );
    assert_eq!(
        count(state, "token_errors"),
        0,
        "refused tokens: {:#}",
        state["token_errors"]
    );
    assert_eq!(
        count(state, "foreign"),
        0,
        "events of another purpose: {:#}",
        state["foreign"]
    );
    assert_eq!(
        seqs(state),
        (1..=n).collect::<Vec<_>>(),
        "every event once, in order: {state:#}"
    );
    for g in state["gaps"].as_array().unwrap() {
        assert!(g.get("error").is_none(), "an unrecovered gap: {g}");
    }
    // One id per event, the same on every delivery of it: the CloudEvent's id.
    let mut ids = BTreeSet::new();
    for e in events(state) {
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_owned()),
            "two events with one id: {e}"
        );
        if e["via"] == "webhook" {
            assert_eq!(e["webhook_id"], e["id"], "the webhook-id is the event's id");
        }
    }
    assert_eq!(
        count(state, "stale"),
        0,
        "an old event under a new id: {:#}",
        state["stale"]
    );
    // A duplicate is a delivery of an event it has, by that event's id; any other delivery
    // has an id never delivered before.
    let mut seen = BTreeSet::new();
    for d in state["deliveries"].as_array().unwrap() {
        let id = d["webhook_id"].as_str().unwrap();
        if d["duplicate"] == true {
            assert!(ids.contains(id), "a duplicate of no event it has: {d}");
        } else {
            assert!(
                seen.insert(id.to_owned()),
                "a new delivery with an id seen before: {d}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Who hears of a change
// ---------------------------------------------------------------------------------------------

async fn a_death_reaches_those_who_follow_the_person(backend: &str) {
    let mut town = Town::new(backend).await;
    let pension = town.agency("nenkin", "nenkin-kyufu", 2).await;
    let insurer = town.agency("kouki", "kouki-shikaku", 2).await;
    let school = town.agency("gakurei", "gakureibo", 2).await;
    let [a, b, e, f]: [ResidentId; 4] = town.adults(4).try_into().unwrap();
    let child = town
        .pick(1, |r| {
            r.is_current()
                && !r.support_measure
                && !r.guardians.is_empty()
                && calendar::age_on(r.birth_date, town.today()) < 15
        })
        .remove(0);
    let month = town.in_days(30);
    let pa = pension.follow(&town, &a, month).await;
    // An interest that holds through today only.
    let pe = pension.follow(&town, &e, town.today()).await;
    let pf = pension.follow(&town, &f, month).await;
    insurer.follow_municipality(month).await;
    let sc = school.follow(&town, &child, month).await;

    // a and b die; the child moves house. The pension office follows a, not b; the insurer
    // everybody; the school board only the child.
    let written = town
        .changes(vec![
            town.death(&a),
            town.death(&b),
            town.moved(&child, "東京都利島村300番地"),
        ])
        .await;
    assert_eq!(written, 1 + 3 + 1);
    let report = town.drain("d1").await;
    assert_eq!(
        (report.delivered, report.dead, report.retried),
        (5, 0, 0),
        "{report:?}"
    );

    let s = pension
        .wait_until("a's death", |s| count(s, "events") == 1)
        .await;
    clean(&s, 1);
    let ev = &events(&s)[0];
    assert_eq!(ev["type"], DIED);
    assert_eq!(
        ev["subject"],
        pa.as_str(),
        "named by the pension office's own pseudonym"
    );
    assert_eq!(ev["purpose"], "nenkin-kyufu");
    let purpose = town.exchange.purpose("nenkin-kyufu").unwrap();
    let told = items_of(&ev["items"]);
    assert!(
        told.contains("status") && told.contains("status_date"),
        "{told:?}"
    );
    assert!(told.is_subset(&codes(&purpose.items)), "{told:?}");
    // It pulled the person it was told of: signed, verified, deceased.
    let person = &s["persons"][pa.as_str()];
    assert_eq!(
        person["claims"]["items"]["status"]["kind"], "deceased",
        "{person:#}"
    );
    assert_eq!(person["claims"]["sub"], pa.as_str());
    assert_eq!(person["claims"]["aud"], "nenkin");
    assert_eq!(person["tamper_rejected"], true);

    let s = insurer
        .wait_until("the three changes", |s| count(s, "events") == 3)
        .await;
    clean(&s, 3);
    let ka = town.pseudonym("kouki", &a).await;
    let kb = town.pseudonym("kouki", &b).await;
    let kc = town.pseudonym("kouki", &child).await;
    assert_ne!(ka, pa, "two agencies' pseudonyms of one person differ");
    let got: Vec<(&str, &str)> = events(&s)
        .iter()
        .map(|e| (e["subject"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    let mut want = vec![
        (ka.as_str(), DIED),
        (kb.as_str(), DIED),
        (kc.as_str(), CHANGED),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want);

    // The school board follows only the child: it hears of the move, and of no death.
    let s = school
        .wait_until("the child's move", |s| count(s, "events") == 1)
        .await;
    clean(&s, 1);
    let ev = &events(&s)[0];
    assert_eq!(
        (ev["subject"].as_str(), ev["type"].as_str()),
        (Some(sc.as_str()), Some(CHANGED))
    );
    assert_eq!(
        items_of(&ev["items"]),
        BTreeSet::from(["address".to_owned()])
    );
    let pulled = &s["persons"][sc.as_str()]["claims"]["items"];
    assert_eq!(pulled["address"]["text"], "東京都利島村300番地");
    // The child's guardians, named by the school board's pseudonyms, never by register ids.
    let mut guardians = BTreeSet::new();
    for g in &town.record(&child).guardians {
        guardians.insert(town.pseudonym("gakurei", &g.id).await);
        assert!(
            !pulled.to_string().contains(g.id.as_str()),
            "a register id in a pull: {pulled}"
        );
    }
    assert!(!guardians.is_empty());
    assert_eq!(items_of(&pulled["guardians"]), guardians);

    // The events are thin: neither a register id nor a name in them.
    let r = pension
        .api(
            "GET",
            "/agency/v1/events?purpose=nenkin-kyufu&after=0",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains(a.as_str()),
        "a register id in an event: {}",
        r.body
    );
    assert!(
        !r.body.contains(&town.record(&a).name.kanji),
        "a name in an event"
    );
    assert_eq!(r.json()["last_sequence"], 1);

    // The next day the interest in e has ended: e's move is news to the insurer only.
    town.advance(DAY).await;
    let written = town
        .changes(vec![
            town.moved(&e, "東京都利島村301番地"),
            town.moved(&f, "東京都利島村302番地"),
        ])
        .await;
    assert_eq!(
        written,
        1 + 2,
        "f for the pension office, e and f for the insurer"
    );
    let report = town.drain("d2").await;
    assert_eq!((report.delivered, report.dead), (3, 0), "{report:?}");
    let s = pension
        .wait_until("f's move", |s| count(s, "events") == 2)
        .await;
    clean(&s, 2);
    // Yesterday's access token had expired: authlib took a new one with a new assertion.
    assert_eq!(s["tokens"], 2, "{s:#}");
    assert_eq!(events(&s)[1]["subject"], pf.as_str());
    assert!(
        events(&s).iter().all(|ev| ev["subject"] != pe.as_str()),
        "an expired interest heard of e: {s:#}"
    );
    let s = insurer
        .wait_until("e's and f's moves", |s| count(s, "events") == 5)
        .await;
    clean(&s, 5);
    let s = school.state().await;
    assert_eq!(
        count(&s, "events"),
        1,
        "the school board heard of strangers: {s:#}"
    );
    // Nor may the pension office read e any more: the answer of a pseudonym of nobody.
    let expired = pension.pull(&pe, "nenkin-kyufu", None).await;
    let nobody = pension.pull(NOBODY, "nenkin-kyufu", None).await;
    assert_eq!(expired["status"], 404, "{expired}");
    assert_eq!(
        (
            &expired["status"],
            &expired["content_type"],
            &expired["body"]
        ),
        (&nobody["status"], &nobody["content_type"], &nobody["body"])
    );
    let streams = town.store.streams(Some("gakurei")).await.unwrap();
    assert_eq!((streams[0].last_seq, streams[0].delivered_seq), (1, 1));
}
on_both!(death, a_death_reaches_those_who_follow_the_person);

// ---------------------------------------------------------------------------------------------
// What a pull gives
// ---------------------------------------------------------------------------------------------

async fn a_pull_gives_only_the_purposes_items(backend: &str) {
    let town = Town::new(backend).await;
    let pension = town.agency("nenkin", "nenkin-kyufu", 2).await;
    let [a, g]: [ResidentId; 2] = town.adults(2).try_into().unwrap();
    let pa = pension.follow(&town, &a, town.in_days(30)).await;
    // Issued, but with no interest registered.
    let pg = town.pseudonym("nenkin", &g).await;
    let purpose = town.exchange.purpose("nenkin-kyufu").unwrap();
    let permitted = codes(&town.exchange.permitted(purpose, 2, None));
    let outside: Vec<String> = town
        .exchange
        .dictionary
        .items()
        .iter()
        .filter(|i| !purpose.items.contains(&i.code))
        .map(|i| i.code.as_str().to_owned())
        .collect();
    assert!(
        !outside.is_empty(),
        "the pension purpose leaves some items out"
    );

    let got = pension.pull(&pa, "nenkin-kyufu", None).await;
    assert_eq!(got["status"], 200, "{got:#}");
    assert_eq!(got["content_type"], "application/jwt");
    assert_eq!(
        got["verified"], true,
        "jwcrypto verifies the extract: {got:#}"
    );
    assert_eq!(got["tamper_rejected"], true);
    assert_eq!(got["header"]["alg"], "ES256");
    assert_eq!(got["header"]["kid"], town.api_keys.current.kid());
    let claims = &got["claims"];
    assert_eq!(
        items_of(&claims["items"]),
        permitted,
        "exactly the purpose's items"
    );
    assert_eq!(claims["items"]["name"], town.record(&a).name.kanji.as_str());
    assert_eq!(
        claims["items"]["birth_date"],
        town.record(&a).birth_date.to_string()
    );
    assert_eq!(claims["sub"], pa.as_str());
    assert_eq!(claims["aud"], "nenkin");
    assert_eq!(claims["iss"], town.api_url.as_str());
    assert_eq!(claims["purpose"], "nenkin-kyufu");
    assert_eq!(claims["legal_basis"], purpose.legal_basis.as_str());
    assert_eq!(claims["as_of"], town.today().to_string());

    let one = pension.pull(&pa, "nenkin-kyufu", Some("name")).await;
    assert_eq!(
        items_of(&one["claims"]["items"]),
        BTreeSet::from(["name".to_owned()])
    );

    // Every refusal is the answer for a pseudonym of nobody, byte for byte.
    let nobody = pension.pull(NOBODY, "nenkin-kyufu", None).await;
    assert_eq!(nobody["status"], 404, "{nobody:#}");
    let same = |r: &Value| {
        (
            r["status"].clone(),
            r["content_type"].clone(),
            r["body"].clone(),
        )
    };
    let mut refusals = Vec::new();
    for code in &outside {
        refusals.push((
            format!("item {code}"),
            pension.pull(&pa, "nenkin-kyufu", Some(code)).await,
        ));
    }
    refusals.push((
        "a permitted item with one outside".into(),
        pension
            .pull(&pa, "nenkin-kyufu", Some(&format!("name,{}", outside[0])))
            .await,
    ));
    refusals.push((
        "not an item code".into(),
        pension.pull(&pa, "nenkin-kyufu", Some("NAME!")).await,
    ));
    refusals.push((
        "no interest".into(),
        pension.pull(&pg, "nenkin-kyufu", None).await,
    ));
    refusals.push((
        "a purpose not held".into(),
        pension.pull(&pa, "gakureibo", None).await,
    ));
    for (why, r) in &refusals {
        assert_eq!(same(r), same(&nobody), "{why}: {r:#}");
    }
    // Only what was given is in the person's record of provisions.
    let provided: Vec<_> = town
        .store
        .provisions(&a)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.action == "pull")
        .collect();
    assert_eq!(provided.len(), 2, "{provided:?}");
    assert!(provided
        .iter()
        .all(|p| p.accessor_id == "nenkin" && p.outcome == "provided"));
    let all: BTreeSet<String> = provided
        .iter()
        .flat_map(|p| p.items.iter().map(|c| c.as_str().to_owned()))
        .collect();
    assert_eq!(all, permitted);
    assert!(
        town.store.provisions(&g).await.unwrap().is_empty(),
        "a refused pull provided nothing"
    );
}
on_both!(pull, a_pull_gives_only_the_purposes_items);

// ---------------------------------------------------------------------------------------------
// Delivery: down, duplicates, gaps, crashes
// ---------------------------------------------------------------------------------------------

async fn a_receiver_down_for_a_while_gets_everything_in_order(backend: &str) {
    let mut town = Town::new(backend).await;
    let insurer = town.agency("kouki", "kouki-shikaku", 2).await;
    insurer.follow_municipality(town.in_days(30)).await;
    insurer.control(json!({ "down": true })).await;
    // The worker runs on its own; with no backoff (the clock stands still) it tries again
    // every poll while the receiver is down.
    let (stop, stopped) = watch::channel(false);
    let worker = town.deliverer_with(
        "worker",
        DeliveryPolicy {
            base: Duration::ZERO,
            ..policy()
        },
    );
    let task = tokio::spawn(async move { worker.work(stopped).await });

    let people = town.adults(7);
    let lines = people[..5]
        .iter()
        .enumerate()
        .map(|(i, p)| town.moved(p, &format!("東京都利島村{}番地", 400 + i)))
        .collect();
    assert_eq!(town.changes(lines).await, 5);
    let s = insurer
        .wait_until("several attempts refused", |s| {
            s["down_answers"].as_u64() >= Some(3)
        })
        .await;
    assert_eq!(count(&s, "events"), 0);
    // The agency sees the backlog and why in its status.
    let r = insurer.api("GET", "/agency/v1/status", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let status = r.json();
    assert_eq!(status["endpoint_verified"], true);
    let stream = &status["streams"][0];
    assert_eq!(
        (stream["last_sequence"].as_i64(), stream["pending"].as_i64()),
        (Some(5), Some(5)),
        "{status:#}"
    );
    assert!(
        stream["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{status:#}"
    );

    insurer.control(json!({ "down": false })).await;
    let s = insurer
        .wait_until("all five, once it is back", |s| count(s, "events") == 5)
        .await;
    clean(&s, 5);
    assert!(
        vias(&s).iter().all(|v| *v == "webhook"),
        "no gap to fill: {s:#}"
    );
    assert_eq!(duplicates(&s).len(), 0);

    // The agency records two events but its answers are lost (503): they come again, with
    // the same ids, and are dropped as duplicates.
    insurer.control(json!({ "fail_after": 2 })).await;
    let lines = people[5..]
        .iter()
        .map(|p| town.moved(p, "東京都利島村410番地"))
        .collect();
    assert_eq!(town.changes(lines).await, 2);
    let s = insurer
        .wait_until("two more, each sent again", |s| {
            count(s, "events") == 7 && duplicates(s).len() >= 2
        })
        .await;
    clean(&s, 7);

    // The operator replays the stream: every event again, with its own id, nothing new.
    let before = duplicates(&s).len();
    assert!(town
        .store
        .rewind_stream("kouki", "kouki-shikaku", 0)
        .await
        .unwrap());
    let s = insurer
        .wait_until("the replay", |s| duplicates(s).len() >= before + 7)
        .await;
    clean(&s, 7);
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the worker stops")
        .unwrap();
    let stream = town.store.streams(Some("kouki")).await.unwrap().remove(0);
    assert_eq!(
        (stream.last_seq, stream.delivered_seq, stream.dead),
        (7, 7, 0),
        "{stream:?}"
    );
}
on_both!(down, a_receiver_down_for_a_while_gets_everything_in_order);

async fn a_gap_is_found_and_filled_through_the_pull_api(backend: &str) {
    let mut town = Town::new(backend).await;
    let insurer = town.agency("kouki", "kouki-shikaku", 2).await;
    insurer.follow_municipality(town.in_days(30)).await;
    let people = town.adults(6);
    let moved =
        |town: &Town, i: usize| town.moved(&people[i], &format!("東京都利島村{}番地", 500 + i));

    // The agency loses the first event: the second shows the gap.
    insurer.control(json!({ "drop": 1 })).await;
    let lines = (0..3).map(|i| moved(&town, i)).collect();
    assert_eq!(town.changes(lines).await, 3);
    assert_eq!(town.drain("d").await.delivered, 3);
    let s = insurer
        .wait_until("the first three", |s| count(s, "events") == 3)
        .await;
    clean(&s, 3);
    assert_eq!(s["dropped"][0]["sequence"], "1");
    assert_eq!(vias(&s), ["pull", "webhook", "webhook"]);
    assert_eq!(s["gaps"][0]["why"], "sequence");
    assert_eq!(s["gaps"][0]["recovered"], json!([1]));
    assert!(s["tokens"].as_u64() >= Some(1), "authlib took a token");

    // It loses the last one: nothing follows it but the heartbeat, which names it.
    insurer.control(json!({ "drop": 1 })).await;
    assert_eq!(town.changes(vec![moved(&town, 3)]).await, 1);
    assert_eq!(town.drain("d").await.delivered, 1);
    assert_eq!(count(&insurer.state().await, "events"), 3);
    town.advance(2 * HOUR).await;
    let report = town.drain("d").await;
    assert_eq!(report.heartbeats, 1, "{report:?}");
    let s = insurer
        .wait_until("the fourth, through the pull API", |s| {
            count(s, "events") == 4
        })
        .await;
    clean(&s, 4);
    assert_eq!(
        s["heartbeats"].as_array().unwrap().last().unwrap()["last_sequence"],
        4
    );
    assert_eq!(s["gaps"][1]["why"], "heartbeat");
    assert_eq!(s["gaps"][1]["recovered"], json!([4]));

    // The municipality's side skips one (settled without being sent): the next shows it.
    let lines = (4..6).map(|i| moved(&town, i)).collect();
    assert_eq!(town.changes(lines).await, 2);
    let now = town.clock.now();
    let claimed = town
        .store
        .claim_streams(
            "operator",
            32,
            now,
            clock::after(now, Duration::from_secs(60)),
            clock::before(now, HOUR),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let skip = StreamProgress {
        settled_upto: 5,
        dead: Vec::new(),
        retry: None,
        delivered: 0,
        sent_at: None,
        heartbeat_error: None,
    };
    assert!(town
        .store
        .settle_stream("operator", "kouki", "kouki-shikaku", &skip, now)
        .await
        .unwrap());
    assert_eq!(town.drain("d").await.delivered, 1);
    let s = insurer
        .wait_until("all six", |s| count(s, "events") == 6)
        .await;
    clean(&s, 6);
    assert_eq!(
        vias(&s),
        ["pull", "webhook", "webhook", "pull", "pull", "webhook"]
    );
    assert_eq!(s["gaps"][2]["recovered"], json!([5]));
    assert_eq!(count(&s, "gaps"), 3);

    // The agency's clock runs ten minutes fast: it refuses the next event (401), a dead
    // letter. Once its clock is right, the one after shows the gap and the pull fills it.
    let [g, h]: [ResidentId; 2] = town.adults(2).try_into().unwrap();
    insurer
        .control(json!({ "now": town.clock.now().timestamp() + 600 }))
        .await;
    assert_eq!(
        town.changes(vec![town.moved(&g, "東京都利島村510番地")])
            .await,
        1
    );
    let report = town.drain("d").await;
    assert_eq!((report.delivered, report.dead), (0, 1), "{report:?}");
    let r = insurer.api("GET", "/agency/v1/status", None).await;
    assert_eq!(r.json()["streams"][0]["dead_letters"], 1, "{}", r.body);
    insurer
        .control(json!({ "now": town.clock.now().timestamp() }))
        .await;
    assert_eq!(
        town.changes(vec![town.moved(&h, "東京都利島村511番地")])
            .await,
        1
    );
    assert_eq!(town.drain("d").await.delivered, 1);
    let s = insurer
        .wait_until("all eight", |s| count(s, "events") == 8)
        .await;
    clean_but_refused(&s, 8, 1);
    assert!(
        s["refused"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("too old"),
        "{:#}",
        s["refused"]
    );
    assert_eq!(s["gaps"][3]["recovered"], json!([7]));
}
on_both!(gap, a_gap_is_found_and_filled_through_the_pull_api);

async fn a_crash_between_ingest_and_delivery_loses_nothing(backend: &str) {
    let mut town = Town::new(backend).await;
    let insurer = town.agency("kouki", "kouki-shikaku", 2).await;
    let pension = town.agency("nenkin", "nenkin-kyufu", 2).await;
    insurer.follow_municipality(town.in_days(30)).await;
    let people = town.adults(4);
    pension.follow(&town, &people[0], town.in_days(30)).await;
    pension.follow(&town, &people[1], town.in_days(30)).await;
    let deliverer = town.deliverer("before");
    let lines = vec![
        town.death(&people[0]),
        town.moved(&people[1], "東京都利島村600番地"),
        town.moved(&people[2], "東京都利島村601番地"),
        town.death(&people[3]),
    ];
    assert_eq!(town.changes(lines).await, 4 + 2);
    // The process dies before its deliverer sends anything.
    drop(deliverer);
    town.restart().await;
    // And a worker of another process claimed the streams and died holding them.
    let now = town.clock.now();
    let claimed = town
        .store
        .claim_streams(
            "crashed",
            32,
            now,
            clock::after(now, Duration::from_secs(60)),
            clock::before(now, HOUR),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        town.drain("after").await,
        PassReport::default(),
        "the dead worker's lease holds"
    );
    assert_eq!(count(&insurer.state().await, "deliveries"), 0);
    town.advance(Duration::from_secs(61)).await;
    let report = town.drain("after").await;
    assert_eq!((report.delivered, report.dead), (6, 0), "{report:?}");
    let s = insurer
        .wait_until("all four", |s| count(s, "events") == 4)
        .await;
    clean(&s, 4);
    assert!(vias(&s).iter().all(|v| *v == "webhook"));
    assert_eq!(duplicates(&s).len(), 0);
    let s = pension
        .wait_until("both", |s| count(s, "events") == 2)
        .await;
    clean(&s, 2);
    assert_eq!(events(&s)[0]["type"], DIED);
    assert_eq!(
        s["persons"].as_object().unwrap().len(),
        2,
        "pulled through the API restarted"
    );
}
on_both!(crash, a_crash_between_ingest_and_delivery_loses_nothing);

// ---------------------------------------------------------------------------------------------
// Dictionary versions
// ---------------------------------------------------------------------------------------------

async fn a_version_1_reader_never_sees_a_version_2_item(backend: &str) {
    let mut town = Town::new(backend).await;
    let purpose = town.exchange.purpose("kouki-shikaku").unwrap().clone();
    let newer: Vec<_> = town
        .exchange
        .dictionary
        .items()
        .iter()
        .filter(|i| i.since > 1 && purpose.items.contains(&i.code))
        .cloned()
        .collect();
    assert!(
        !newer.is_empty(),
        "the insurer's purpose has a version-2 item"
    );
    let newer_codes: BTreeSet<String> = newer.iter().map(|i| i.code.as_str().to_owned()).collect();
    // A version-2 item read from the record's attributes: a correction can change it alone.
    let (code, attribute) = newer
        .iter()
        .find_map(|i| match &i.source {
            ItemSource::Attribute(a) => Some((i.code.as_str().to_owned(), a.clone())),
            _ => None,
        })
        .expect("a version-2 item read from the attributes");
    let old = town.agency("kouki-v1", "kouki-shikaku", 1).await;
    let new = town.agency("kouki-v2", "kouki-shikaku", 2).await;
    old.follow_municipality(town.in_days(30)).await;
    new.follow_municipality(town.in_days(30)).await;
    let [p, q]: [ResidentId; 2] = town
        .pick(2, |r| {
            town.plain_adult(r) && !r.attributes.contains_key(&attribute)
        })
        .try_into()
        .unwrap();
    let gained = |town: &Town, who: &ResidentId| {
        let mut attributes = town.record(who).attributes.clone();
        attributes.insert(attribute.clone(), json!(true));
        town.correction(who, json!({ "attributes": attributes }))
    };

    // Only a version-2 item changes: news to the version-2 reader alone.
    let line = gained(&town, &p);
    assert_eq!(town.changes(vec![line]).await, 1);
    assert_eq!(town.drain("d").await.delivered, 1);
    let s = new
        .wait_until("p's new qualification", |s| count(s, "events") == 1)
        .await;
    clean(&s, 1);
    assert_eq!(
        items_of(&events(&s)[0]["items"]),
        BTreeSet::from([code.clone()])
    );
    let old_stream = town
        .store
        .streams(Some("kouki-v1"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        old_stream.last_seq, 0,
        "no event for an item the reader does not know"
    );

    // The qualification and the address change together: the old reader hears of the
    // address only.
    let lines = vec![gained(&town, &q), town.moved(&q, "東京都利島村700番地")];
    assert_eq!(town.changes(lines).await, 2);
    let report = town.drain("d").await;
    assert_eq!((report.delivered, report.dead), (2, 0), "{report:?}");
    let s = old
        .wait_until("q's move", |s| count(s, "events") == 1)
        .await;
    clean(&s, 1);
    let ev = &events(&s)[0];
    assert_eq!(
        items_of(&ev["items"]),
        BTreeSet::from(["address".to_owned()])
    );
    assert_eq!(ev["dictionary_version"], 1);
    let oq = town.pseudonym("kouki-v1", &q).await;
    let pulled = &s["persons"][oq.as_str()]["claims"];
    assert_eq!(pulled["dictionary_version"], 1, "{s:#}");
    let pulled_items = items_of(&pulled["items"]);
    assert!(pulled_items.contains("address"));
    assert!(pulled_items.is_disjoint(&newer_codes), "{pulled_items:?}");
    let s = new
        .wait_until("q's move and qualification", |s| count(s, "events") == 2)
        .await;
    clean(&s, 2);
    let told = items_of(&events(&s)[1]["items"]);
    assert!(told.contains("address") && told.contains(&code), "{told:?}");
    let nq = town.pseudonym("kouki-v2", &q).await;
    assert_eq!(
        s["persons"][nq.as_str()]["claims"]["items"][code.as_str()],
        true
    );

    // Asked for by name, a version-2 item is no such person; nor may it be followed.
    let nobody = old.pull(NOBODY, "kouki-shikaku", None).await;
    for code in &newer_codes {
        let r = old.pull(&oq, "kouki-shikaku", Some(code)).await;
        assert_eq!(
            (&r["status"], &r["content_type"], &r["body"]),
            (&nobody["status"], &nobody["content_type"], &nobody["body"]),
            "{code}"
        );
        let r = old
            .api(
                "POST",
                "/agency/v1/interests",
                Some(json!({"purpose": "kouki-shikaku", "subject": oq, "items": [code], "valid_to": town.in_days(30)})),
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.json()["errors"][0]["field"], "items[0]");
    }
    // Its dictionary is version 1's.
    let r = old.api("GET", "/agency/v1/dictionary", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let dict = r.json();
    assert_eq!(
        (dict["version"].as_u64(), dict["latest_version"].as_u64()),
        (Some(1), Some(u64::from(town.exchange.dictionary.version())))
    );
    let listed: BTreeSet<String> = dict["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.is_disjoint(&newer_codes), "{listed:?}");
    assert!(items_of(&dict["purposes"][0]["items"]).is_disjoint(&newer_codes));
    let r = new.api("GET", "/agency/v1/dictionary", None).await;
    assert!(items_of(&r.json()["purposes"][0]["items"]).is_superset(&newer_codes));
}
on_both!(dictionary, a_version_1_reader_never_sees_a_version_2_item);

// ---------------------------------------------------------------------------------------------
// Support measures (支援措置)
// ---------------------------------------------------------------------------------------------

async fn a_protected_address_is_withheld_or_marked(backend: &str) {
    let town = Town::with(backend, with_withholding_purpose()).await;
    let pension = town.agency("nenkin", "nenkin-kyufu", 2).await;
    let soudan = town.agency("soudan", WITHHOLDING, 2).await;
    let protected = town
        .pick(1, |r| {
            r.is_current()
                && r.support_measure
                && calendar::age_on(r.birth_date, town.today()) >= 18
        })
        .remove(0);
    let plain = town.adults(1).remove(0);
    let month = town.in_days(30);
    for agent in [&pension, &soudan] {
        let purpose = town.exchange.purpose(&agent.purpose).unwrap();
        let mode = purpose.protected_address;
        let pp = agent.follow(&town, &protected, month).await;
        let pn = agent.follow(&town, &plain, month).await;
        let got = agent.pull(&pp, &agent.purpose, None).await;
        assert_eq!(got["verified"], true, "{got:#}");
        let claims = &got["claims"];
        match mode {
            ProtectedAddress::Withhold => {
                assert!(claims["items"].get("address").is_none(), "{claims:#}");
                assert_eq!(claims["withheld"], json!({ "address": "support_measure" }));
                assert!(claims.get("protected_address").is_none());
            }
            ProtectedAddress::ProvideMarked => {
                assert_eq!(
                    claims["items"]["address"]["text"],
                    town.record(&protected).address.text.as_str()
                );
                assert_eq!(claims["protected_address"], true, "{claims:#}");
                assert!(claims.get("withheld").is_none());
            }
        }
        // Nothing is held back or marked for anyone else.
        let got = agent.pull(&pn, &agent.purpose, None).await;
        let claims = &got["claims"];
        assert_eq!(
            claims["items"]["address"]["text"],
            town.record(&plain).address.text.as_str()
        );
        assert!(
            claims.get("withheld").is_none() && claims.get("protected_address").is_none(),
            "{claims:#}"
        );
    }
    assert_eq!(
        town.exchange
            .purpose(WITHHOLDING)
            .unwrap()
            .protected_address,
        ProtectedAddress::Withhold
    );
    // The protected person's record says what each agency was given, and what was held back.
    let provisions = town.store.provisions(&protected).await.unwrap();
    let of = |agency: &str, outcome: &str| -> Vec<BTreeSet<String>> {
        provisions
            .iter()
            .filter(|p| p.accessor_id == agency && p.outcome == outcome && p.action == "pull")
            .map(|p| p.items.iter().map(|c| c.as_str().to_owned()).collect())
            .collect()
    };
    let address = BTreeSet::from(["address".to_owned()]);
    assert_eq!(
        of("soudan", "withheld"),
        vec![address.clone()],
        "{provisions:?}"
    );
    assert_eq!(of("soudan", "provided").len(), 1);
    assert!(of("soudan", "provided")[0].is_disjoint(&address));
    assert_eq!(of("nenkin", "provided").len(), 1);
    assert!(of("nenkin", "provided")[0].contains("address"));
    assert!(of("nenkin", "withheld").is_empty());
    assert!(provisions
        .iter()
        .all(|p| p.accessor_kind == "agency"
            && (p.basis == "nenkin-kyufu" || p.basis == WITHHOLDING)));
}
on_both!(support_measure, a_protected_address_is_withheld_or_marked);

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

async fn bad_input_is_refused_and_nothing_is_stored(backend: &str) {
    let town = Town::new(backend).await;
    let key = town.pull_only("nenkin", "nenkin-kyufu").await;
    let other_key = town.pull_only("gakurei", "gakureibo").await;
    let now = town.clock.now().timestamp();
    let claims = |aud: &str, jti: &str| json!({"iss": "nenkin", "sub": "nenkin", "aud": aud, "iat": now, "exp": now + 60, "jti": jti});
    let token_url = town.token_url();

    // The client's own assertion: a token, once.
    let good = assertion(&key, Some(key.kid()), &claims(&token_url, "jti-1"));
    let (status, body) = town.token_request(&good).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = town.token_request(&good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "a replayed jti: {body}"
    );
    // Signed by another key, under the client's kid or none.
    let stranger = SigningKey::generate().unwrap();
    for (why, a) in [
        (
            "forged under the client's kid",
            assertion(&stranger, Some(key.kid()), &claims(&token_url, "jti-2")),
        ),
        (
            "forged without a kid",
            assertion(&stranger, None, &claims(&token_url, "jti-3")),
        ),
        (
            "another agency's key",
            assertion(
                &other_key,
                Some(other_key.kid()),
                &claims(&token_url, "jti-4"),
            ),
        ),
        (
            "the API's URL as aud",
            assertion(&key, Some(key.kid()), &claims(&town.api_url, "jti-5")),
        ),
        (
            "the token URL with a slash",
            assertion(
                &key,
                Some(key.kid()),
                &claims(&format!("{token_url}/"), "jti-6"),
            ),
        ),
        (
            "an hour-long assertion",
            assertion(
                &key,
                Some(key.kid()),
                &json!({"iss": "nenkin", "sub": "nenkin", "aud": token_url, "iat": now, "exp": now + 3600, "jti": "jti-7"}),
            ),
        ),
    ] {
        let (status, body) = town.token_request(&a).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{why}: {body}"
        );
    }

    // Interests: each mistake named by its field, and nothing stored.
    let who = town.adults(1).remove(0);
    let mine = town.pseudonym("nenkin", &who).await;
    let theirs = town.pseudonym("gakurei", &who).await;
    let outside = town
        .exchange
        .dictionary
        .items()
        .iter()
        .find(|i| {
            !town
                .exchange
                .purpose("nenkin-kyufu")
                .unwrap()
                .items
                .contains(&i.code)
        })
        .unwrap()
        .code
        .as_str()
        .to_owned();
    let month = town.in_days(30).to_string();
    let post = |body: String| {
        let r = town
            .http
            .post(format!("{}/agency/v1/interests", town.api_url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "an unknown field",
            json!({"purpose": "nenkin-kyufu", "subject": mine, "valid_to": month, "colour": "red"}),
            400,
            "colour",
        ),
        (
            "a bad date",
            json!({"purpose": "nenkin-kyufu", "subject": mine, "valid_to": "2026-13-45"}),
            400,
            "valid_to",
        ),
        (
            "an unknown purpose",
            json!({"purpose": "no-such-purpose", "subject": mine, "valid_to": month}),
            422,
            "purpose",
        ),
        (
            "a purpose held by another",
            json!({"purpose": "gakureibo", "subject": mine, "valid_to": month}),
            422,
            "purpose",
        ),
        (
            "an item outside the purpose",
            json!({"purpose": "nenkin-kyufu", "subject": mine, "items": [outside], "valid_to": month}),
            422,
            "items[0]",
        ),
        (
            "another agency's pseudonym",
            json!({"purpose": "nenkin-kyufu", "subject": theirs, "valid_to": month}),
            422,
            "subject",
        ),
        (
            "a date in the past",
            json!({"purpose": "nenkin-kyufu", "subject": mine, "valid_to": town.in_days(-1)}),
            422,
            "valid_to",
        ),
        (
            "the municipality for a purpose that follows persons",
            json!({"purpose": "nenkin-kyufu", "scope": "municipality", "valid_to": month}),
            422,
            "scope",
        ),
    ];
    for (why, body, status, field) in cases {
        let (got, text) = post(body.to_string()).await;
        assert_eq!(got, status, "{why}: {text}");
        let problem: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{why}: {e}: {text}"));
        let fields: Vec<&str> = problem["errors"].as_array().map_or(Vec::new(), |e| {
            e.iter()
                .map(|f| f["field"].as_str().unwrap_or(""))
                .collect()
        });
        assert!(
            fields.contains(&field),
            "{why}: the field {field:?} is not named: {problem:#}"
        );
    }
    assert!(
        town.store.interests("nenkin").await.unwrap().is_empty(),
        "a refused interest was stored"
    );

    // An oversized body is refused before it is read.
    let big = json!({"purpose": "nenkin-kyufu", "subject": mine, "valid_to": month, "note": "x".repeat(17 * 1024)});
    let (got, text) = post(big.to_string()).await;
    assert_eq!(got, 413, "{text}");
    let r = town
        .http
        .post(town.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_assertion={}",
            "x".repeat(17 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(town.store.interests("nenkin").await.unwrap().is_empty());

    // And the same interest, well formed, is stored: the refusals above were for their faults.
    let (got, text) =
        post(json!({"purpose": "nenkin-kyufu", "subject": mine, "valid_to": month}).to_string())
            .await;
    assert_eq!(got, 201, "{text}");
    assert_eq!(town.store.interests("nenkin").await.unwrap().len(), 1);
    let listed: Value = town
        .http
        .get(format!("{}/agency/v1/interests", town.api_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["interests"][0]["subject"],
        mine.as_str(),
        "{listed:#}"
    );
    assert_eq!(listed["interests"][0]["scope"], "person");

    // The events and the pull need a token we issued.
    let client_signed = assertion(&key, Some(key.kid()), &claims(&town.api_url, "jti-8"));
    for path in [
        "/agency/v1/events?purpose=nenkin-kyufu".to_owned(),
        format!("/agency/v1/persons/{mine}?purpose=nenkin-kyufu"),
    ] {
        for (why, auth) in [
            ("no token", None),
            ("not a JWT", Some("Bearer nonsense".to_owned())),
            (
                "signed by the client, not by us",
                Some(format!("Bearer {client_signed}")),
            ),
        ] {
            let mut req = town.http.get(format!("{}{path}", town.api_url));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path}, {why}");
            assert!(
                r.headers()
                    .get("www-authenticate")
                    .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
                "{path}, {why}"
            );
        }
        let r = town
            .http
            .get(format!("{}{path}", town.api_url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
    }
    let provided = town.store.provisions(&who).await.unwrap();
    assert_eq!(
        provided.len(),
        1,
        "only the pull with a token provided anything: {provided:?}"
    );

    // Ending the interest: a malformed request changes nothing; then it ends once.
    let delete = |body: Value| {
        let r = town
            .http
            .delete(format!("{}/agency/v1/interests", town.api_url))
            .bearer_auth(&token)
            .json(&body);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        delete(json!({"purpose": "nenkin-kyufu", "subject": mine, "colour": "red"})).await,
        400
    );
    assert_eq!(
        delete(json!({"purpose": "nenkin-kyufu", "subject": theirs})).await,
        404
    );
    assert_eq!(town.store.interests("nenkin").await.unwrap().len(), 1);
    assert_eq!(
        delete(json!({"purpose": "nenkin-kyufu", "subject": mine})).await,
        204
    );
    assert_eq!(
        delete(json!({"purpose": "nenkin-kyufu", "subject": mine})).await,
        404
    );
    assert!(town.store.interests("nenkin").await.unwrap().is_empty());
}
on_both!(bad_input, bad_input_is_refused_and_nothing_is_stored);

/// A client assertion is good until `exp` plus the clock skew the token endpoint allows; its
/// `jti` must be remembered that long, or the assertion can be used again in between.
async fn an_assertion_cannot_be_replayed_while_it_is_still_accepted(backend: &str) {
    let town = Town::new(backend).await;
    let key = town.pull_only("nenkin", "nenkin-kyufu").await;
    let token_url = town.token_url();
    let claims = |jti: &str| {
        let now = town.clock.now().timestamp();
        json!({"iss": "nenkin", "sub": "nenkin", "aud": token_url, "iat": now, "exp": now + 60, "jti": jti})
    };
    let first = assertion(&key, Some(key.kid()), &claims("first"));
    assert_eq!(town.token_request(&first).await.0, 200);
    // Ten seconds past its `exp`, inside the endpoint's leeway for clock skew; meanwhile
    // the agency takes another token.
    town.advance(Duration::from_secs(70)).await;
    let second = assertion(&key, Some(key.kid()), &claims("second"));
    assert_eq!(town.token_request(&second).await.0, 200);
    let (status, body) = town.token_request(&first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "the first assertion was accepted a second time: its jti was forgotten at `exp`, \
         while the endpoint still accepts it for the clock-skew leeway after: {body}"
    );
}
on_both!(
    assertion_replay,
    an_assertion_cannot_be_replayed_while_it_is_still_accepted
);

/// The receiver itself refuses what it must: a bad v1 or v1a signature, a stale timestamp, a
/// replay once the tolerance has passed. Without this, a receiver that accepted everything
/// would pass every scenario above.
async fn the_receiver_refuses_bad_signatures_and_replays(backend: &str) {
    let town = Town::new(backend).await;
    let agent = town.agency("kouki", "kouki-shikaku", 2).await;
    let http = reqwest::Client::new();
    let send = |id: &str, ts: i64, body: &str, signature: String| {
        let req = http
            .post(format!("{}/webhook", agent.url))
            .header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let event = |seq: i64| {
        json!({"specversion": "1.0", "id": format!("kouki-{seq}"), "source": oshirase_exchange::cloudevent::source(LGC),
               "type": CHANGED, "subject": NOBODY, "time": "2026-10-20T03:00:00.000Z", "sequence": seq.to_string(),
               "datacontenttype": "application/json",
               "data": {"purpose": "kouki-shikaku", "sequence": seq, "items": ["address"], "dictionary_version": 2}})
        .to_string()
    };
    agent.control(json!({ "pull": false })).await;
    let now = town.clock.now().timestamp();
    let keys = &town.webhook_keys;
    let body = event(1);
    // Signed well: accepted.
    assert_eq!(
        send(
            "kouki-1",
            now,
            &body,
            keys.sign("kouki-1", now, body.as_bytes())
        )
        .await,
        200
    );
    // Only one of the two signatures.
    let both = keys.sign("kouki-2", now, event(2).as_bytes());
    let v1a_only: String = both.split(' ').filter(|s| s.starts_with("v1a,")).collect();
    let v1_only: String = both.split(' ').filter(|s| s.starts_with("v1,")).collect();
    assert_eq!(
        send("kouki-2", now, &event(2), v1a_only).await,
        401,
        "no v1"
    );
    assert_eq!(
        send("kouki-2", now, &event(2), v1_only).await,
        401,
        "no v1a"
    );
    // Signed by a stranger's Ed25519 key, with our HMAC.
    let stranger = SigningKeys::from_secret(
        &SigningKeys::generate().ed25519_secret(),
        keys.hmac_secret().as_deref(),
    )
    .unwrap();
    assert_eq!(
        send(
            "kouki-2",
            now,
            &event(2),
            stranger.sign("kouki-2", now, event(2).as_bytes())
        )
        .await,
        401
    );
    // A body changed after signing.
    let sig = keys.sign("kouki-2", now, event(2).as_bytes());
    assert_eq!(
        send("kouki-2", now, &event(2).replace("address", "name"), sig).await,
        401
    );
    // Six minutes old.
    let old = now - 360;
    assert_eq!(
        send(
            "kouki-2",
            old,
            &event(2),
            keys.sign("kouki-2", old, event(2).as_bytes())
        )
        .await,
        401
    );
    // The first message again: within the tolerance a duplicate, after it a stale replay.
    assert_eq!(
        send(
            "kouki-1",
            now,
            &body,
            keys.sign("kouki-1", now, body.as_bytes())
        )
        .await,
        200
    );
    town.advance(Duration::from_secs(360)).await;
    assert_eq!(
        send(
            "kouki-1",
            now,
            &body,
            keys.sign("kouki-1", now, body.as_bytes())
        )
        .await,
        401
    );
    let s = agent.state().await;
    assert_eq!(seqs(&s), vec![1]);
    assert_eq!(count(&s, "refused"), 6, "{:#}", s["refused"]);
    assert_eq!(duplicates(&s).len(), 1);
    let reasons: Vec<&str> = s["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains("standardwebhooks") && reasons[1].contains("v1a"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("cryptography") && reasons[3].contains("standardwebhooks"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].contains("too old") && reasons[5].contains("too old"),
        "{reasons:?}"
    );
}
on_both!(receiver, the_receiver_refuses_bad_signatures_and_replays);
