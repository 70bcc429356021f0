//! The staff console (docs/office.md): server-rendered Japanese pages on their own listener
//! (the municipality's internal network, apart from the residents' portal), over the same
//! store. Staff sign in with their own identity provider's token (roles 窓口, 担当課, 管理者;
//! a 担当課 member's department; the municipality's code), which opens a staff session in a
//! cookie of its own; forms carry the session's CSRF token.
//!
//! What a staff member sees follows their roles: 窓口 (the counter, the おくやみコーナー) the
//! notices only a person can deliver and the dead letters of every procedure, and a
//! resident's notices at a counter visit; 担当課 those of their department's procedures, and
//! the applications waiting for 受付 and the rule failures of them; 管理者 everything. An item
//! outside a member's scope answers like a missing one. Every page that shows a person, and
//! every action, is in the audit log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, FixedOffset};
use minijinja::{context, Value as Jv};
use oshirase_engine::clock::Clock;
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_store::{
    ApplicationStatus, Handled, StatusChange, StatusOutcome, Store, WorkKind, MAX_STAFF_NOTE,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::auth::{Claims, TokenError, Verifier};
use crate::config::{ConfigError, JwtConfig, JwtKey, SessionConfig};
use crate::session::{self, csrf_matches, NoSession, Owner, Session, SessionCheck, Sessions};

/// The console's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// The address staff reach the console at (an `https` URL makes its cookie `Secure`).
    pub public_url: String,
    /// The staff identity provider: its issuer, audience and key.
    pub jwt: JwtConfig,
    pub session: SessionConfig,
    /// The municipality's local government code: a staff token must carry it as `lg_code`.
    pub local_gov_code: String,
    /// The departments (id → name) of the catalogue.
    pub departments: BTreeMap<String, String>,
    /// Each procedure's department.
    pub rule_departments: BTreeMap<RuleId, String>,
}

impl ConsoleConfig {
    /// Every problem with the configuration, at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems: Vec<String> = self
            .jwt
            .problems()
            .into_iter()
            .chain(crate::config::public_url_problem(&self.public_url))
            .map(|p| format!("console: {p}"))
            .collect();
        for (rule, dept) in &self.rule_departments {
            if !self.departments.contains_key(dept) {
                problems.push(format!(
                    "console: rule {rule} names department {dept:?}, which the catalogue does not define"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// A console role, as the staff token's `roles` claim names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// 窓口: the counter.
    Counter,
    /// 担当課: a department's procedures.
    Department,
    /// 管理者.
    Admin,
}

impl StaffRole {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "窓口" | "counter" => Some(StaffRole::Counter),
            "担当課" | "department" => Some(StaffRole::Department),
            "管理者" | "admin" => Some(StaffRole::Admin),
            _ => None,
        }
    }

    pub fn ja(self) -> &'static str {
        match self {
            StaffRole::Counter => "窓口",
            StaffRole::Department => "担当課",
            StaffRole::Admin => "管理者",
        }
    }
}

/// A signed-in staff member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Staff {
    pub(crate) id: String,
    pub(crate) roles: Vec<StaffRole>,
    pub(crate) department: Option<String>,
}

impl Owner for Staff {
    const COOKIE: &'static str = "oshirase_staff";

    fn to_row(&self) -> (String, Option<String>) {
        (
            self.id.clone(),
            Some(serde_json::to_string(self).unwrap_or_default()),
        )
    }

    fn from_row(_resident_id: &str, staff: Option<&str>) -> Option<Self> {
        serde_json::from_str(staff?).ok()
    }
}

/// Which procedures a staff member sees of one kind of work: `None` not at all,
/// `Some(None)` every procedure, `Some(Some(rules))` those.
type Scope = Option<Option<Vec<RuleId>>>;

impl Staff {
    fn actor(&self) -> String {
        format!("staff:{}", self.id)
    }

    fn has(&self, role: StaffRole) -> bool {
        self.roles.contains(&role)
    }

    fn department_rules(&self, config: &ConsoleConfig) -> Vec<RuleId> {
        let Some(dept) = &self.department else {
            return Vec::new();
        };
        config
            .rule_departments
            .iter()
            .filter(|(_, d)| *d == dept)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The widest scope the member's roles give for `kind`.
    fn scope(&self, kind: WorkKind, config: &ConsoleConfig) -> Scope {
        if self.has(StaffRole::Admin) {
            return Some(None);
        }
        let counter_sees = matches!(
            kind,
            WorkKind::StaffNotice | WorkKind::DeadLetter | WorkKind::CorrectionRequest
        );
        if self.has(StaffRole::Counter) && counter_sees {
            return Some(None);
        }
        // The register is the counter's: no department corrects it.
        if kind == WorkKind::CorrectionRequest {
            return None;
        }
        self.has(StaffRole::Department)
            .then(|| Some(self.department_rules(config)))
    }

    /// For a resident lookup: the counter and administrators see every procedure.
    fn resident_scope(&self, config: &ConsoleConfig) -> Option<Vec<RuleId>> {
        if self.has(StaffRole::Admin) || self.has(StaffRole::Counter) {
            None
        } else {
            Some(self.department_rules(config))
        }
    }
}

/// Why a staff token opens no session. The page says the first, never which claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum StaffTokenError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("sub is not a staff id (1 to 64 of A-Z a-z 0-9 . _ @ -)")]
    BadId,
    #[error("the token names no console role (窓口, 担当課, 管理者)")]
    NoRole,
    #[error("a 担当課 member's token must name a department of the catalogue")]
    Department,
    #[error("the token is for another municipality")]
    Municipality,
}

fn staff_from(claims: Claims, config: &ConsoleConfig) -> Result<Staff, StaffTokenError> {
    let id_ok = (1..=64).contains(&claims.sub.len())
        && claims
            .sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !id_ok {
        return Err(StaffTokenError::BadId);
    }
    if claims.lg_code.as_deref() != Some(config.local_gov_code.as_str()) {
        return Err(StaffTokenError::Municipality);
    }
    let mut roles: Vec<StaffRole> = claims
        .roles
        .unwrap_or_default()
        .iter()
        .filter_map(|r| StaffRole::parse(r))
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(StaffTokenError::NoRole);
    }
    let department = claims
        .department
        .filter(|d| config.departments.contains_key(d));
    if roles == [StaffRole::Department] && department.is_none() {
        return Err(StaffTokenError::Department);
    }
    Ok(Staff {
        id: claims.sub,
        roles,
        department,
    })
}

/// Mints an HS256 staff token, as the staff identity provider would (for the demo and
/// tests). Fails for a configuration with a public key.
pub fn mint_staff_token(
    config: &ConsoleConfig,
    staff_id: &str,
    roles: &[&str],
    department: Option<&str>,
    now: DateTime<FixedOffset>,
    ttl: std::time::Duration,
) -> Result<String, TokenError> {
    let JwtKey::Hs256(secret) = &config.jwt.key else {
        return Err(TokenError::Key(
            "tokens can only be minted with an HS256 shared secret".into(),
        ));
    };
    let mut claims = Claims::new(&config.jwt, staff_id, now, ttl);
    claims.roles = Some(roles.iter().map(|r| (*r).to_owned()).collect());
    claims.department = department.map(str::to_owned);
    claims.lg_code = Some(config.local_gov_code.clone());
    claims.sign(secret)
}

/// Everything a console request needs, shared.
#[derive(Clone)]
pub struct ConsoleState(Arc<Inner>);

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    config: ConsoleConfig,
    verifier: Verifier,
    sessions: Sessions<Staff>,
    templates: minijinja::Environment<'static>,
}

impl ConsoleState {
    pub fn new(
        store: Store,
        config: ConsoleConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.check()?;
        let verifier =
            Verifier::new(&config.jwt).map_err(|e| ConfigError(vec![format!("console: {e}")]))?;
        Ok(Self(Arc::new(Inner {
            sessions: Sessions::new(store.clone(), config.session),
            store,
            clock,
            verifier,
            templates: templates(),
            config,
        })))
    }

    fn now(&self) -> DateTime<FixedOffset> {
        self.0.clock.now()
    }

    fn secure(&self) -> bool {
        self.0.config.public_url.starts_with("https:")
    }

    fn render(&self, status: StatusCode, name: &str, ctx: Jv) -> Response {
        match self
            .0
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "console page rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    fn message(&self, status: StatusCode, heading: &str, text: &str) -> Response {
        self.render(
            status,
            "console_message.html",
            context! { heading, text, signed_in => true },
        )
    }

    fn failed(&self, e: impl std::fmt::Display) -> Response {
        tracing::error!(error = %e, "console request failed");
        self.message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ただいま処理できません",
            "しばらくしてからもう一度お試しください。",
        )
    }

    fn department_name(&self, rule: &RuleId) -> String {
        self.0
            .config
            .rule_departments
            .get(rule)
            .and_then(|d| self.0.config.departments.get(d))
            .cloned()
            .unwrap_or_default()
    }
}

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, src) in [
        (
            "console_base.html",
            include_str!("../templates/console_base.html"),
        ),
        (
            "console_login.html",
            include_str!("../templates/console_login.html"),
        ),
        (
            "console_queue.html",
            include_str!("../templates/console_queue.html"),
        ),
        (
            "console_resident.html",
            include_str!("../templates/console_resident.html"),
        ),
        (
            "console_message.html",
            include_str!("../templates/console_message.html"),
        ),
    ] {
        env.add_template(name, src)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
}

/// The console's router.
pub fn console_router(state: ConsoleState) -> Router {
    Router::new()
        .route("/office/", get(queue))
        .route("/office", get(|| async { Redirect::to("/office/") }))
        .route("/office/login", get(login).post(login_post))
        .route("/office/logout", post(logout))
        .route("/office/items/{kind}/{*item}", post(handle_item))
        .route("/office/applications/{seq}/receive", post(receive))
        .route("/office/residents", get(resident))
        .route("/office/assets/portal.css", get(crate::pages::stylesheet))
        .route("/office/assets/login.js", get(crate::pages::login_script))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(state.clone(), find_session))
        .layer(middleware::from_fn_with_state(state.clone(), headers))
        .with_state(state)
}

async fn headers(State(s): State<ConsoleState>, req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    crate::security_headers_on(r.headers_mut(), s.secure());
    r
}

async fn find_session(State(s): State<ConsoleState>, mut req: Request, next: Next) -> Response {
    if let Some(cookie) = session::cookie::<Staff>(req.headers()).map(str::to_owned) {
        let check = s.0.sessions.check(&cookie, s.now()).await;
        req.extensions_mut().insert(check);
    }
    let rotated = req
        .extensions()
        .get::<SessionCheck<Staff>>()
        .and_then(|c| c.0.as_ref().ok())
        .and_then(|s| s.rotated.clone());
    let mut r = next.run(req).await;
    if let Some(id) = rotated {
        if !r.headers().contains_key(header::SET_COOKIE) {
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie::<Staff>(Some(&id), s.secure()),
            );
        }
    }
    r
}

/// A signed-in staff member, or the login page.
struct SignedIn(Session<Staff>);

impl axum::extract::FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let problem = match parts.extensions.get::<SessionCheck<Staff>>() {
            Some(SessionCheck(Ok(session))) => return Ok(SignedIn(session.clone())),
            Some(SessionCheck(Err(NoSession::Idle | NoSession::Expired))) => {
                Some("ログインの有効期限が切れました。もう一度ログインしてください。")
            }
            Some(SessionCheck(Err(NoSession::Unavailable))) => {
                return Err(s.message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ただいま表示できません",
                    "しばらくしてからもう一度お試しください。",
                ))
            }
            _ => None,
        };
        Err(s.render(
            StatusCode::UNAUTHORIZED,
            "console_login.html",
            context! { problem, form => false },
        ))
    }
}

impl SignedIn {
    fn staff(&self) -> &Staff {
        &self.0.who
    }

    fn csrf_ok(&self, given: &str) -> bool {
        csrf_matches(&self.0, given)
    }

    fn view(&self) -> Jv {
        let st = self.staff();
        context! {
            id => st.id.clone(),
            roles => st.roles.iter().map(|r| r.ja()).collect::<Vec<_>>().join("・"),
            csrf => self.0.csrf.clone(),
        }
    }
}

async fn login(State(s): State<ConsoleState>) -> Response {
    s.render(
        StatusCode::OK,
        "console_login.html",
        context! { problem => None::<&str>, form => true },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_post(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let staff =
        s.0.verifier
            .claims(&f.token, s.now())
            .map_err(StaffTokenError::from)
            .and_then(|c| staff_from(c, &s.0.config));
    let staff = match staff {
        Ok(st) => st,
        Err(e) => {
            tracing::warn!(error = %e, "console login refused");
            return s.render(
                StatusCode::UNAUTHORIZED,
                "console_login.html",
                context! {
                    problem => "ログインできませんでした。職員用のログイン画面から、もう一度開いてください。",
                    form => false,
                },
            );
        }
    };
    let audit = oshirase_store::AuditEntry::new(
        s.now(),
        &staff.actor(),
        "staff.login",
        "console",
        Some(
            serde_json::json!({ "roles": staff.roles, "department": staff.department }).to_string(),
        ),
    );
    let opened = match s.0.store.append_audit(&[audit]).await {
        Ok(()) => {
            s.0.sessions
                .open(&staff, session::cookie::<Staff>(&headers), s.now())
                .await
        }
        Err(e) => Err(e),
    };
    match opened {
        Ok(id) => {
            let mut r = Redirect::to("/office/").into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie::<Staff>(Some(&id), s.secure()),
            );
            r
        }
        Err(e) => s.failed(e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(s): State<ConsoleState>,
    who: SignedIn,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !who.csrf_ok(&f.csrf) {
        return forbidden(&s);
    }
    if let Some(cookie) = session::cookie::<Staff>(&headers) {
        if let Err(e) = s.0.sessions.end(cookie).await {
            return s.failed(e);
        }
    }
    let mut r = Redirect::to("/office/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie::<Staff>(None, s.secure()),
    );
    r
}

fn forbidden(s: &ConsoleState) -> Response {
    s.message(
        StatusCode::FORBIDDEN,
        "操作を確認できませんでした",
        "ページを開き直してから、もう一度お試しください。",
    )
}

/// What to do about an item of a kind, as the queue says it.
fn what_to_do(kind: WorkKind) -> (&'static str, &'static str) {
    match kind {
        WorkKind::StaffNotice => (
            "職員からの連絡が必要なお知らせ",
            "この方には通知が届きません（理由を確認してください）。電話・郵送・訪問などで連絡し、連絡したら「対応済みにする」を押して内容を記録してください。",
        ),
        WorkKind::DeadLetter => (
            "届かなかった通知",
            "通知を送れませんでした。連絡先を確認し、別の方法でお知らせしてから「対応済みにする」を押してください。",
        ),
        WorkKind::Application => (
            "受付待ちの申請",
            "申請内容を確認し、「受付する」を押してください（基幹業務システムで受け付けると、ここからも消えます）。",
        ),
        WorkKind::CorrectionRequest => (
            "住民記録の訂正の申出",
            "住民の方から、住民記録の内容が違うとの申出がありました。本人確認のうえ記録を確認し、訂正が必要なら住民記録システムで訂正して、「対応済みにする」を押してください（ここで記録は変わりません）。",
        ),
        WorkKind::RuleFailure => (
            "前回の実行で評価できなかったルール",
            "ルールがこの方について評価できませんでした。ルールの担当者に連絡して修正を依頼し、「確認済みにする」を押してください。",
        ),
    }
}

#[derive(Deserialize)]
struct QueueQuery {
    done: Option<String>,
}

async fn queue(
    State(s): State<ConsoleState>,
    who: SignedIn,
    Query(q): Query<QueueQuery>,
) -> Response {
    let config = &s.0.config;
    let mut lists = Vec::new();
    for kind in [
        WorkKind::StaffNotice,
        WorkKind::Application,
        WorkKind::DeadLetter,
        WorkKind::CorrectionRequest,
        WorkKind::RuleFailure,
    ] {
        let Some(scope) = who.staff().scope(kind, config) else {
            continue;
        };
        let list = match s.0.store.work_list(kind, scope.as_deref()).await {
            Ok(l) => l,
            Err(e) => return s.failed(e),
        };
        let (heading, todo) = what_to_do(kind);
        let items: Vec<Jv> = list
            .items
            .iter()
            .map(|i| {
                let role = (kind == WorkKind::Application).then(|| {
                    serde_json::from_value(serde_json::Value::String(i.reason.clone()))
                        .map(|r| oshirase_store::role_ja(r, None))
                        .unwrap_or_else(|_| i.reason.clone())
                });
                context! {
                    item => Jv::from(minijinja::value::Serde(i)),
                    department => i.rule.as_ref().map(|r| s.department_name(r)),
                    since => local_time(&i.since),
                    role,
                }
            })
            .collect();
        lists.push(context! {
            kind => kind.name(), heading, todo, total => list.total, items,
        });
    }
    // The queue names residents: who looked is in the log.
    let audit = oshirase_store::AuditEntry::new(
        s.now(),
        &who.staff().actor(),
        "staff.queue.read",
        "console",
        None,
    );
    if let Err(e) = s.0.store.append_audit(&[audit]).await {
        return s.failed(e);
    }
    s.render(
        StatusCode::OK,
        "console_queue.html",
        context! {
            staff => who.view(), lists, done => q.done, signed_in => true,
            max_note => MAX_STAFF_NOTE,
        },
    )
}

/// An RFC 3339 time in Asia/Tokyo (`2026-10-01 12:00`), or the text as it is (a day).
fn local_time(t: &str) -> String {
    DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&oshirase_engine::clock::jst())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| t.to_owned())
}

#[derive(Deserialize)]
struct HandleForm {
    csrf: String,
    #[serde(default)]
    note: String,
}

async fn handle_item(
    State(s): State<ConsoleState>,
    who: SignedIn,
    Path((kind, item)): Path<(String, String)>,
    Form(f): Form<HandleForm>,
) -> Response {
    if !who.csrf_ok(&f.csrf) {
        return forbidden(&s);
    }
    let Some(kind) = WorkKind::from_name(&kind).filter(|k| *k != WorkKind::Application) else {
        return missing(&s);
    };
    let Some(scope) = who.staff().scope(kind, &s.0.config) else {
        return missing(&s);
    };
    let note = f.note.trim();
    if note.chars().count() > MAX_STAFF_NOTE {
        return s.message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "記録が長すぎます",
            &format!("対応の記録は{MAX_STAFF_NOTE}文字までにしてください。"),
        );
    }
    let note = (!note.is_empty()).then_some(note);
    match s
        .0
        .store
        .handle_work_item(
            kind,
            &item,
            &who.staff().actor(),
            note,
            scope.as_deref(),
            s.now(),
        )
        .await
    {
        Ok(Handled::Done) => Redirect::to("/office/?done=handled").into_response(),
        Ok(Handled::Already) => s.message(
            StatusCode::CONFLICT,
            "対応済みです",
            "この項目は、ほかの職員がすでに対応済みにしています。",
        ),
        Ok(Handled::Missing) => missing(&s),
        Err(e) => s.failed(e),
    }
}

fn missing(s: &ConsoleState) -> Response {
    s.message(
        StatusCode::NOT_FOUND,
        "見つかりません",
        "この項目は存在しないか、担当の範囲外です。",
    )
}

async fn receive(
    State(s): State<ConsoleState>,
    who: SignedIn,
    Path(seq): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !who.csrf_ok(&f.csrf) {
        return forbidden(&s);
    }
    let Some(scope) = who.staff().scope(WorkKind::Application, &s.0.config) else {
        return missing(&s);
    };
    let all: Vec<RuleId>;
    let rules = match &scope {
        Some(r) => r.as_slice(),
        None => {
            all = s.0.config.rule_departments.keys().cloned().collect();
            all.as_slice()
        }
    };
    let actor = who.staff().actor();
    let change = StatusChange {
        seq,
        to: ApplicationStatus::Received,
        message: None,
        actor: &actor,
        rules,
        now: s.now(),
    };
    match s.0.store.change_application_status(change).await {
        Ok(StatusOutcome::Changed(_)) => Redirect::to("/office/?done=received").into_response(),
        Ok(StatusOutcome::Missing) => missing(&s),
        Ok(StatusOutcome::Refused(e)) => {
            s.message(StatusCode::CONFLICT, "受付できませんでした", &e.to_string())
        }
        Err(e) => s.failed(e),
    }
}

#[derive(Deserialize)]
struct ResidentQuery {
    id: Option<String>,
}

async fn resident(
    State(s): State<ConsoleState>,
    who: SignedIn,
    Query(q): Query<ResidentQuery>,
) -> Response {
    let query = q.id.as_deref().map(str::trim).unwrap_or_default();
    let (problem, overview) = if query.is_empty() {
        (None, None)
    } else if query.len() == 12 && query.bytes().all(|b| b.is_ascii_digit()) {
        (
            Some("個人番号（マイナンバー）では検索できません。住民番号（宛名番号）で検索してください。"),
            None,
        )
    } else {
        match ResidentId::parse(query) {
            Err(_) => (
                Some("住民番号の形式ではありません。英数字とハイフンで入力してください。"),
                None,
            ),
            Ok(id) => {
                let scope = who.staff().resident_scope(&s.0.config);
                match s
                    .0
                    .store
                    .resident_overview(id.as_str(), scope.as_deref(), &who.staff().actor(), s.now())
                    .await
                {
                    Ok(o) => (None, Some(o)),
                    Err(e) => return s.failed(e),
                }
            }
        }
    };
    let notices: Vec<Jv> = overview
        .iter()
        .flat_map(|o| o.notices.iter())
        .map(|n| {
            let status = n
                .application
                .as_ref()
                .and_then(|(_, st)| ApplicationStatus::from_name(st))
                .map(|st| st.ja());
            context! {
                notice => Jv::from(minijinja::value::Serde(n)),
                department => s.department_name(&n.rule),
                created => local_time(&n.created_at),
                draft => n.draft.as_deref().map(|d| match d {
                    "open" => "未提出",
                    "submitted" => "提出済み",
                    "declined" => "申請しない",
                    _ => "—",
                }),
                status,
            }
        })
        .collect();
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    s.render(
        status,
        "console_resident.html",
        context! {
            staff => who.view(), query, problem, signed_in => true,
            overview => overview.as_ref().map(|o| Jv::from(minijinja::value::Serde(o))), notices,
        },
    )
}

/// Serves the console on `listener` until `shutdown` turns true.
pub async fn serve_console(
    listener: tokio::net::TcpListener,
    state: ConsoleState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "staff console listening");
    }
    axum::serve(
        listener,
        console_router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
}
