//! The portal test harness: a fresh database (a SQLite file, or a new database on the
//! PostgreSQL server named by OSHIRASE_TEST_PG, default postgres://postgres@127.0.0.1:5432/test),
//! a small register with committed decisions, and the portal serving on a free port.

#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;
use oshirase_engine::clock::{Clock, FixedClock};
use oshirase_engine::eval::{Decision, DecisionKey, Recipient, RenderedMessages, Role};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::resident::{Channel, Resident};
use oshirase_engine::rule::{Category, Titles};
use oshirase_portal::{mint_token, PortalConfig};
use oshirase_store::Store;
use serde_json::{json, Value};
use tokio::sync::watch;

pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
pub const ISSUER: &str = "https://idp.example.jp";

pub use oshirase_testkit::{d, on_both};

pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub type Db = oshirase_testkit::TestDb;

/// A fresh database of `backend` (`sqlite`, `postgres`) for the portal's tests.
pub async fn fresh(backend: &str) -> Db {
    oshirase_testkit::fresh(backend, "oshirase_p").await
}

/// The test register: an adult with two proxies (one scoped to pensions, one whose
/// authority ended yesterday), a child with a guardian, an unrelated adult.
pub fn register(changes: &[(&str, Value)]) -> Vec<Resident> {
    let addr = json!({"local_gov_code": "133621", "text": "東京都利島村1番地"});
    let mut rows = vec![
        json!({"id": "R10001", "name": {"kanji": "山田 花子", "kana": "ヤマダ ハナコ"}, "birth_date": "1960-05-01", "sex": 2,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true},
               "proxies": [{"id": "R10005", "scopes": ["pension"]},
                           {"id": "R10006", "scopes": ["all"], "until": "2026-09-30"}]}),
        json!({"id": "R10002", "name": {"kanji": "佐藤 陽", "kana": "サトウ ヒナタ"}, "birth_date": "2021-04-10", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "guardians": [{"id": "R10003"}]}),
        json!({"id": "R10003", "name": {"kanji": "佐藤 一郎", "kana": "サトウ イチロウ"}, "birth_date": "1990-01-01", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true},
               "preferences": {"channels": ["portal", "email"]}, "consents": {"email": true}}),
        json!({"id": "R10004", "name": {"kanji": "鈴木 次郎", "kana": "スズキ ジロウ"}, "birth_date": "1985-03-03", "sex": 1,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true}}),
        json!({"id": "R10005", "name": {"kanji": "田中 三郎", "kana": "タナカ サブロウ"}, "birth_date": "1970-01-01", "sex": 1,
               "status": {"kind": "external"}, "address": addr, "contact": {"portal": true}}),
        json!({"id": "R10006", "name": {"kanji": "高橋 四郎", "kana": "タカハシ シロウ"}, "birth_date": "1975-01-01", "sex": 1,
               "status": {"kind": "external"}, "address": addr, "contact": {"portal": true}}),
        // A death: the widow is told as a survivor, and her proxy with her.
        json!({"id": "R10007", "name": {"kanji": "伊藤 五郎", "kana": "イトウ ゴロウ"}, "birth_date": "1940-01-01", "sex": 1,
               "status": {"kind": "deceased", "date": "2026-09-30"}, "address": addr,
               "household": {"id": "H7", "relationship": "世帯主"}}),
        json!({"id": "R10008", "name": {"kanji": "伊藤 和子", "kana": "イトウ カズコ"}, "birth_date": "1945-01-01", "sex": 2,
               "status": {"kind": "resident"}, "address": addr, "contact": {"portal": true},
               "household": {"id": "H7", "relationship": "妻"},
               "proxies": [{"id": "R10010", "scopes": ["all"]}]}),
        json!({"id": "R10010", "name": {"kanji": "伊藤 健", "kana": "イトウ ケン"}, "birth_date": "1970-01-01", "sex": 1,
               "status": {"kind": "external"}, "address": addr, "contact": {"portal": true}}),
    ];
    for (id, patch) in changes {
        let row = rows.iter_mut().find(|r| r["id"] == *id).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            row[k] = v.clone();
        }
    }
    rows.into_iter()
        .map(|r| serde_json::from_value(r).unwrap())
        .collect()
}

pub async fn ingest(store: &Store, residents: &[Resident], now: DateTime<FixedOffset>) {
    let content = serde_json::to_vec(residents).unwrap();
    store
        .apply_ingest(oshirase_store::IngestBatch {
            source: "register.jsonl",
            kind: oshirase_store::IngestKind::Snapshot,
            content: &content,
            as_of: Some(d("2026-10-01")),
            rows_in: residents.len(),
            state: residents,
            events: &[],
            feed_position: None,
            read_at: None,
            now,
        })
        .await
        .unwrap();
}

pub fn recipient(id: &str, role: Role, channels: &[Channel]) -> Recipient {
    Recipient {
        id: ResidentId::parse(id).unwrap(),
        role,
        channels: channels.to_vec(),
    }
}

pub fn decision(
    rule: &str,
    category: Category,
    subject: &str,
    title: &str,
    recipients: Vec<Recipient>,
    prefill: Vec<(&str, Value)>,
    recommend: &[&str],
) -> Decision {
    let rule = RuleId::parse(rule).unwrap();
    let subject = ResidentId::parse(subject).unwrap();
    // In the rule's order, as the evaluator writes it.
    let prefill: IndexMap<String, Value> = prefill
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Decision {
        key: DecisionKey::new(&rule, &subject, "2026-10-01"),
        rule,
        rule_version: 1,
        category,
        subject,
        occurrence: d("2026-10-01"),
        event_id: None,
        notify_on: d("2026-10-01"),
        deadline: Some(d("2026-10-15")),
        deadline_moved_from: None,
        recipients,
        staff_review: None,
        prefill,
        form: Default::default(),
        application: Default::default(),
        contact: None,
        recommend: recommend
            .iter()
            .map(|r| RuleId::parse(r).unwrap())
            .collect(),
        legal_basis: String::new(),
        title: Titles {
            ja: title.to_owned(),
            en: None,
        },
        message: RenderedMessages {
            ja: format!("{title}のお知らせです。申請書は入力済みです。"),
            en: None,
        },
        channels: vec![Channel::Portal, Channel::Email],
        critical: false,
        urgent: false,
    }
}

pub const PENSION: &str = "kokumin-nenkin-shutoku/R10001/2026-10-01";
pub const HEALTH: &str = "kokuho-kanyu/R10001/2026-10-01";
pub const CHILD: &str = "jidou-teate-nintei/R10002/2026-10-01";
pub const OTHER: &str = "kokumin-nenkin-shutoku/R10004/2026-10-01";
pub const DEATH: &str = "sousaihi/R10007/2026-10-01";
pub const MISSING: &str = "kokumin-nenkin-shutoku/R10009/2026-10-01";

/// The decisions of the test day, as the evaluator would have made them then.
pub fn decisions() -> Vec<Decision> {
    use Channel::*;
    vec![
        decision(
            "kokumin-nenkin-shutoku",
            Category::Pension,
            "R10001",
            "国民年金の手続",
            vec![
                recipient("R10001", Role::Subject, &[Portal, Email]),
                recipient("R10005", Role::Proxy, &[Portal]),
                recipient("R10006", Role::Proxy, &[Portal]),
            ],
            vec![
                ("name", json!("山田 花子")),
                ("address", json!("東京都利島村1番地")),
                ("birth_date", json!("1960-05-01")),
                ("annual_income", json!(1200000)),
            ],
            &["kokuho-kanyu"],
        ),
        // The pension proxy has a row here too, but its scope does not cover health insurance.
        decision(
            "kokuho-kanyu",
            Category::HealthInsurance,
            "R10001",
            "国民健康保険の加入",
            vec![
                recipient("R10001", Role::Subject, &[Portal]),
                recipient("R10005", Role::Proxy, &[Portal]),
            ],
            vec![
                ("name", json!("山田 花子")),
                ("insured_from", json!("2026-10-01")),
                ("members", json!(["山田 花子"])),
            ],
            &[],
        ),
        decision(
            "jidou-teate-nintei",
            Category::Childcare,
            "R10002",
            "児童手当の認定請求",
            vec![recipient("R10003", Role::Guardian, &[Portal, Email])],
            vec![
                ("claimant", json!("佐藤 一郎")),
                ("child_name", json!("佐藤 陽")),
                ("address", json!("東京都利島村1番地")),
            ],
            &[],
        ),
        decision(
            "sousaihi",
            Category::Bereavement,
            "R10007",
            "葬祭費の支給申請",
            vec![
                recipient("R10008", Role::Survivor, &[Portal]),
                recipient("R10010", Role::Proxy, &[Portal]),
            ],
            vec![("deceased_name", json!("伊藤 五郎"))],
            &[],
        ),
        decision(
            "kokumin-nenkin-shutoku",
            Category::Pension,
            "R10004",
            "国民年金の手続",
            vec![recipient("R10004", Role::Subject, &[Portal])],
            vec![
                ("name", json!("鈴木 次郎")),
                ("address", json!("東京都利島村1番地")),
            ],
            &[],
        ),
    ]
}

pub fn config() -> PortalConfig {
    PortalConfig::with_hs256_secret(SECRET)
        .issuer(ISSUER)
        .public_url("https://portal.example.jp")
        .cors_origins(["https://app.example.jp"])
        .rate_limit(1000.0, 1000)
}

/// A running portal over a fresh database holding the test register and decisions.
pub struct App {
    /// The delivery counters the portal renders at /metrics.
    pub delivery: Arc<oshirase_service::metrics::DeliveryMetrics>,
    pub base: String,
    pub store: Store,
    pub config: PortalConfig,
    pub clock: Arc<FixedClock>,
    pub http: reqwest::Client,
    pub db: Db,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app(backend: &str) -> App {
    spawn_app_with(backend, config()).await
}

pub async fn spawn_app_with(backend: &str, config: PortalConfig) -> App {
    let db = fresh(backend).await;
    let store = Store::open(&db.url).await.unwrap();
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
    start(db, store, config, clock).await
}

pub async fn start(db: Db, store: Store, config: PortalConfig, clock: Arc<FixedClock>) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = watch::channel(false);
    let delivery = Arc::new(oshirase_service::metrics::DeliveryMetrics::default());
    let task = tokio::spawn(oshirase_portal::serve(
        listener,
        store.clone(),
        config.clone(),
        clock.clone(),
        delivery.clone(),
        rx,
    ));
    App {
        base,
        delivery,
        store,
        config,
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        db,
        stop,
        task,
    }
}

/// Percent-encodes a decision key for an API path segment.
pub fn enc(key: &str) -> String {
    key.replace('/', "%2F")
}

/// The page without its tags' attributes (links hold decision keys, which name the subject).
pub fn visible(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

impl App {
    /// Signs in through `/login` as a browser does: the session cookie (`name=value`).
    pub async fn session_cookie(&self, who: &str) -> String {
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .form(&[("token", self.token(who))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "signing in as {who}");
        let set = r.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    /// A page with a session cookie: its status and its HTML, the templates' `&#x2f;` read
    /// back as `/`.
    pub async fn page(&self, cookie: &str, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap().replace("&#x2f;", "/"))
    }

    pub fn token(&self, who: &str) -> String {
        mint_token(
            &self.config,
            who,
            self.clock.now(),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    pub async fn get(&self, who: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token(who))
            .send()
            .await
            .unwrap()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        who: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(who));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    pub async fn post(&self, who: &str, path: &str, body: Option<Value>) -> reqwest::Response {
        self.send(reqwest::Method::POST, who, path, body).await
    }

    /// Status and JSON body.
    pub async fn json(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Keys of the reader's notice list.
    pub async fn keys(&self, who: &str) -> Vec<String> {
        let (status, body) = Self::json(self.get(who, "/api/notices").await).await;
        assert_eq!(status, 200, "{body}");
        body["notices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["key"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn shutdown(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the portal stops on the shutdown signal")
            .unwrap()
            .unwrap();
    }
}

/// The real catalogue over the fixture town in a fresh SQLite database, decided day by day
/// with `decide`; `start` then serves it.
pub struct Town {
    pub db: Db,
    pub store: Store,
    pub rules: oshirase_engine::RuleSet,
    pub snap: oshirase_engine::Snapshot,
    pub clock: Arc<FixedClock>,
}

impl Town {
    pub async fn new(clock_day: &str) -> Town {
        let db = fresh("sqlite").await;
        let store = Store::open(&db.url).await.unwrap();
        let rules =
            oshirase_engine::load_dir(&root().join("rules")).unwrap_or_else(|e| panic!("{e}"));
        let snap = oshirase_engine::load_snapshot(&root().join("fixtures/town.jsonl")).unwrap();
        let clock = Arc::new(FixedClock::at_noon(d(clock_day)));
        ingest(&store, snap.population.residents(), clock.now()).await;
        store
            .record_rule_set(&rules.version, rules.rules().len(), "rules", clock.now())
            .await
            .unwrap();
        Town {
            db,
            store,
            rules,
            snap,
            clock,
        }
    }

    /// Evaluates `day` and commits its decisions, which it returns.
    pub async fn decide(&self, day: chrono::NaiveDate) -> Vec<Decision> {
        let result = oshirase_engine::evaluate_day(&self.rules, &self.snap.population, day);
        self.store
            .commit_day(
                day,
                &self.rules.version,
                0,
                &result.decisions,
                self.clock.now(),
            )
            .await
            .unwrap();
        result.decisions
    }

    pub async fn serve(self) -> App {
        start(self.db, self.store, config(), self.clock).await
    }
}

pub const STAFF_SECRET: &str = "staff-idp-secret-0123456789abcdef0123";
pub const STAFF_ISSUER: &str = "https://staff-idp.example.lg.jp";
/// A death in a single-person household: nobody on the register to tell, staff must.
pub const LONELY_DEATH: &str = "sousaihi/R10020/2026-10-01";

/// The staff console's configuration for the test decisions' procedures: pensions, health
/// insurance and funerals at 保険年金係, the child allowance at 子育て支援係.
pub fn console_config() -> oshirase_portal::ConsoleConfig {
    use oshirase_portal::{JwtConfig, JwtKey, Secret};
    let depts = [
        ("hoken_nenkin", "住民課 保険年金係"),
        ("kosodate", "福祉課 子育て支援係"),
    ];
    let rules = [
        ("kokumin-nenkin-shutoku", "hoken_nenkin"),
        ("kokuho-kanyu", "hoken_nenkin"),
        ("sousaihi", "hoken_nenkin"),
        ("jidou-teate-nintei", "kosodate"),
    ];
    oshirase_portal::ConsoleConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: "http://127.0.0.1".into(),
        jwt: JwtConfig {
            issuer: STAFF_ISSUER.into(),
            audience: Some("oshirase-office".into()),
            key: JwtKey::Hs256(Secret::new(STAFF_SECRET)),
            leeway_seconds: 30,
        },
        session: Default::default(),
        local_gov_code: "133621".into(),
        departments: depts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        rule_departments: rules
            .iter()
            .map(|(r, d)| (RuleId::parse(r).unwrap(), (*d).to_owned()))
            .collect(),
    }
}

/// Commits `LONELY_DEATH`, with its staff review reason.
pub async fn add_lonely_death(app: &App) {
    let mut lonely = decision(
        "sousaihi",
        Category::Bereavement,
        "R10020",
        "葬祭費の支給申請",
        vec![],
        vec![("deceased_name", json!("渡辺 六郎"))],
        &[],
    );
    lonely.key = DecisionKey::parse(LONELY_DEATH).unwrap();
    lonely.staff_review = Some(
        "nobody on the register can receive this notice: contact the family through staff".into(),
    );
    app.store
        .commit_day(d("2026-10-01"), "test-rules", 0, &[lonely], app.clock.now())
        .await
        .unwrap();
}

/// Serves the staff console over the app's store: its base URL, its configuration, and the
/// sender that stops it (dropped, it stops too).
pub async fn serve_console(
    app: &App,
) -> (String, oshirase_portal::ConsoleConfig, watch::Sender<bool>) {
    let config = console_config();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state =
        oshirase_portal::ConsoleState::new(app.store.clone(), config.clone(), app.clock.clone())
            .unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(oshirase_portal::serve_console(listener, state, rx));
    (base, config, stop)
}

/// The portal for the sharing pages: the test register (with `changes`) and decisions in a
/// fresh database of `backend` opened with the data-item dictionary, and `party` registered.
pub async fn serve_with_party(
    backend: &str,
    party: &oshirase_store::PartySpec,
    changes: &[(&str, Value)],
    config: PortalConfig,
) -> App {
    let db = fresh(backend).await;
    let exchange = oshirase_engine::purposes::load_dir(&root().join("rules"))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&db.url)
        .await
        .unwrap()
        .with_exchange(Arc::new(exchange));
    let clock = Arc::new(FixedClock::at_noon(d("2026-10-01")));
    ingest(&store, &register(changes), clock.now()).await;
    store.upsert_party(party, clock.now()).await.unwrap();
    // The notices a guardian or a proxy receives tell whom the consent page offers them.
    store
        .record_rule_set("test-rules", 4, "tests", clock.now())
        .await
        .unwrap();
    store
        .commit_day(d("2026-10-01"), "test-rules", 0, &decisions(), clock.now())
        .await
        .unwrap();
    start(db, store, config, clock).await
}
