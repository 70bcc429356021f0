//! Server-rendered pages for residents (Japanese, readable on a phone, no external assets).
//! A login opens the portal's own session (`session.rs`), its id in an HttpOnly,
//! SameSite=Strict cookie; forms carry the session's CSRF token. Everything goes through the same service as the API.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use axum::Form;
use indexmap::IndexMap;
use minijinja::{context, Environment, Value as Jv};
use serde::Deserialize;
use serde_json::Value;

use crate::api::notice_key;
use crate::auth::Reader;
use crate::service::{NoticeSummary, PreferencesInput, ServiceError};
use crate::session::{self, csrf_matches, NoSession, Session, SessionCheck};
use crate::PortalState;
use oshirase_engine::resident::Channel;
use oshirase_engine::rule::{Application, FieldKind, FieldSpec};
use oshirase_engine::wording;
use oshirase_store::DraftState;

pub(crate) mod me;
pub(crate) mod records;
pub(crate) mod sharing;
pub(crate) mod webpush;

pub(crate) fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("../templates/base.html")),
        ("inbox.html", include_str!("../templates/inbox.html")),
        ("notice.html", include_str!("../templates/notice.html")),
        ("draft.html", include_str!("../templates/draft.html")),
        (
            "preferences.html",
            include_str!("../templates/preferences.html"),
        ),
        ("login.html", include_str!("../templates/login.html")),
        ("message.html", include_str!("../templates/message.html")),
        ("contact.html", include_str!("../templates/contact.html")),
        ("records.html", include_str!("../templates/records.html")),
        ("consent.html", include_str!("../templates/consent.html")),
        ("me.html", include_str!("../templates/me.html")),
        ("sharing.html", include_str!("../templates/sharing.html")),
    ] {
        env.add_template(name, src)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env.add_filter("jdate", |s: String| -> String {
        date_text(&s).unwrap_or(s)
    });
    env.add_filter("host", |s: String| -> String {
        url::Url::parse(&s)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default()
    });
    env
}

/// A `YYYY-MM-DD` date as the notices write it (`2026年10月21日（水）`), else `None`.
fn date_text(iso: &str) -> Option<String> {
    chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d")
        .ok()
        .map(|d| wording::date(d, wording::DateStyle::Seireki))
}

fn render(state: &PortalState, status: StatusCode, name: &str, ctx: Jv) -> Response {
    match state
        .templates()
        .get_template(name)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "page rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A signed-in reader: the live session the middleware found for the cookie.
pub(crate) struct PageReader {
    id: Reader,
    session: Session,
}

impl PageReader {
    fn csrf(&self) -> &str {
        &self.session.csrf
    }

    fn csrf_ok(&self, form: &[(String, String)]) -> bool {
        form.iter()
            .find(|(n, _)| n == "csrf")
            .is_some_and(|(_, v)| csrf_matches(&self.session, v))
    }
}

/// Not signed in: the login hint, with a same-site link back to the page asked for (a
/// SameSite=Strict cookie is not sent on a link followed from another site, a webmail).
pub(crate) struct LoginHint {
    state: PortalState,
    status: StatusCode,
    retry: Option<String>,
    problem: Option<&'static str>,
    /// The login page itself: the form a login link's token is posted through.
    form: bool,
}

impl LoginHint {
    fn new(state: &PortalState, problem: Option<&'static str>) -> Self {
        Self {
            state: state.clone(),
            status: StatusCode::UNAUTHORIZED,
            retry: None,
            problem,
            form: false,
        }
    }
}

impl IntoResponse for LoginHint {
    fn into_response(self) -> Response {
        render(
            &self.state,
            self.status,
            "login.html",
            context! { retry => self.retry, problem => self.problem, form => self.form },
        )
    }
}

impl FromRequestParts<PortalState> for PageReader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        let hint = |problem| {
            let mut h = LoginHint::new(state, problem);
            // The query too: a party's authorization request lives in it.
            h.retry = (parts.method == axum::http::Method::GET).then(|| {
                parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned())
            });
            h.into_response()
        };
        let Some(SessionCheck(check)) = parts.extensions.get::<SessionCheck>() else {
            return Err(hint(None));
        };
        match check {
            Ok(session) => Ok(PageReader {
                id: session.who.clone(),
                session: session.clone(),
            }),
            Err(NoSession::Missing) => Err(hint(None)),
            Err(NoSession::Idle) => Err(hint(Some(
                "しばらく操作がなかったため、ログインの有効期限が切れました。もう一度ログインしてください。",
            ))),
            Err(NoSession::Expired) => Err(hint(Some(
                "ログインの有効期限が切れました。もう一度ログインしてください。",
            ))),
            Err(NoSession::Unavailable) => Err(message(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "ただいま表示できません",
                "しばらくしてからもう一度お試しください。",
            )),
        }
    }
}

fn message(state: &PortalState, status: StatusCode, heading: &str, text: &str) -> Response {
    render(
        state,
        status,
        "message.html",
        context! { reader => true, heading, text },
    )
}

/// A service error as a page. Missing and not allowed look the same.
fn error_page(state: &PortalState, e: ServiceError) -> Response {
    match e {
        ServiceError::NotFound => message(
            state,
            StatusCode::NOT_FOUND,
            "お知らせが見つかりません",
            "このお知らせは存在しないか、表示できません。",
        ),
        ServiceError::Conflict { state: s } => message(
            state,
            StatusCode::CONFLICT,
            "この申請書は受付済みです",
            if s == DraftState::Submitted {
                "この申請書はすでに提出されています。"
            } else {
                "この手続はすでに「申請しない」として受け付けました。"
            },
        ),
        ServiceError::Taken(_) => message(
            state,
            StatusCode::CONFLICT,
            "この端末はほかの方の通知に登録されています",
            "登録した方がこの端末の通知を解除してから、もう一度お試しください。",
        ),
        ServiceError::Unprocessable { message: m, .. } => message(
            state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "入力内容を確認してください",
            &m,
        ),
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "portal page failed");
            message(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "ただいま表示できません",
                "しばらくしてからもう一度お試しください。",
            )
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    token: Option<String>,
}

/// The login page: the form the login link's script posts the token through. A token in
/// the query is refused: a URL is kept in logs, histories and referrers.
pub(crate) async fn login(State(s): State<PortalState>, Query(q): Query<LoginQuery>) -> Response {
    let mut page = LoginHint::new(&s, None);
    if q.token.is_some() {
        page.status = StatusCode::BAD_REQUEST;
        page.problem = Some(
            "このリンクではログインできません。マイナポータルなどのログイン画面から、もう一度開いてください。",
        );
    } else {
        page.status = StatusCode::OK;
        page.form = true;
    }
    page.into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Signs in with the identity provider's token (posted by it, or by the login page's
/// script from a link's fragment): opens the portal's own session and goes to `next`.
pub(crate) async fn login_post(
    State(s): State<PortalState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let Ok(v) = s.verify(&f.token) else {
        return LoginHint::new(
            &s,
            Some("ログイン用のリンクが無効か、有効期限が切れています。"),
        )
        .into_response();
    };
    let id = match s
        .sessions()
        .open(&v.reader, session::cookie::<Reader>(&headers), s.now())
        .await
    {
        Ok(id) => id,
        Err(e) => return error_page(&s, ServiceError::Internal(e.to_string())),
    };
    // Only a path on this site: never an open redirect.
    let next = f
        .next
        .as_deref()
        .and_then(local_path)
        .unwrap_or_else(|| "/inbox".to_owned());
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie::<Reader>(Some(&id), s.secure()),
    );
    r
}

/// A file of the site's own, so that the CSP needs no inline style or script.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // No personal data: browsers may keep it for a day.
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../assets/portal.css"),
    )
}

pub(crate) async fn login_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/login.js"),
    )
}

/// `next` as a path on this site, or `None`: parsed, not prefix-tested. Browsers drop tabs
/// and newlines from a URL and read `\` as `/` (`/\t/evil.example` becomes
/// `//evil.example`), so a control character, a space or a backslash anywhere refuses it;
/// what is left must parse as a path with no scheme or host.
fn local_path(next: &str) -> Option<String> {
    if next
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    let uri: axum::http::Uri = next.parse().ok()?;
    let pq = uri.path_and_query()?;
    let local = uri.scheme().is_none()
        && uri.authority().is_none()
        && pq.path().starts_with('/')
        && !pq.path().starts_with("//");
    local.then(|| pq.as_str().to_owned())
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

/// Ends the session on the server (its cookie, replayed, is nobody's) and clears it.
pub(crate) async fn logout(
    State(s): State<PortalState>,
    check: Option<Extension<SessionCheck>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(Extension(SessionCheck(Ok(session)))) = &check {
        if !csrf_matches(session, &f.csrf) {
            return forbidden(&s);
        }
        if let Some(cookie) = session::cookie::<Reader>(&headers) {
            if let Err(e) = s.sessions().end(cookie).await {
                return error_page(&s, ServiceError::Internal(e.to_string()));
            }
        }
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie::<Reader>(None, s.secure()),
    );
    r
}

pub(crate) async fn home() -> Redirect {
    Redirect::to("/inbox")
}

pub(crate) async fn inbox(State(s): State<PortalState>, reader: PageReader) -> Response {
    match s.portal().notices(&reader.id).await {
        Ok(notices) => {
            let groups: Vec<Jv> = inbox_groups(notices)
                .into_iter()
                .map(|(heading, words, notices)| {
                    context! { heading, words, notices => Jv::from(minijinja::value::Serde(&notices)) }
                })
                .collect();
            render(
                &s,
                StatusCode::OK,
                "inbox.html",
                context! { reader => true, groups },
            )
        }
        Err(e) => error_page(&s, e),
    }
}

/// The inbox as the resident reads it: the notices of one life event (a birth, a death)
/// together under the event, the one that needs no application (the おくやみ案内) first;
/// the others together by the person they are about. Groups and notices keep the order of
/// `notices` (urgent first, then by deadline).
fn inbox_groups(
    notices: Vec<NoticeSummary>,
) -> Vec<(String, Option<&'static str>, Vec<NoticeSummary>)> {
    let mut groups: Vec<(String, String, Vec<NoticeSummary>)> = Vec::new();
    for n in notices {
        let key = n
            .event
            .clone()
            .unwrap_or_else(|| format!("about {}", n.about));
        match groups.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, list)) => list.push(n),
            None => {
                let heading = match n.event.as_deref().and_then(|e| e.split('-').next()) {
                    Some(kind) => format!("{}：{}", n.about, event_heading(kind)),
                    None => format!("{}のお知らせ", n.about),
                };
                groups.push((key, heading, vec![n]));
            }
        }
    }
    groups
        .into_iter()
        .map(|(key, heading, mut list)| {
            list.sort_by_key(|n| n.application != Application::None);
            // Said once for the event, not once per procedure.
            let words = key
                .starts_with("death-")
                .then_some("心よりお悔やみ申し上げます。");
            (heading, words, list)
        })
        .collect()
}

fn event_heading(kind: &str) -> &'static str {
    match kind {
        "birth" => "ご出生に伴うお手続",
        "death" => "ご逝去に伴うお手続",
        "move_in" => "転入に伴うお手続",
        "move_out" => "転出に伴うお手続",
        _ => "世帯の変更に伴うお手続",
    }
}

pub(crate) async fn notice(
    State(s): State<PortalState>,
    reader: PageReader,
    Path(key): Path<String>,
) -> Response {
    let key = match notice_key(&key) {
        Ok(k) => k,
        Err(e) => return error_page(&s, e),
    };
    let p = s.portal();
    let n = match p.notice(&reader.id, &key).await {
        Ok(n) => n,
        Err(e) => return error_page(&s, e),
    };
    // Opening the page is reading it.
    if let Err(e) = p.mark_read(&reader.id, &key).await {
        return error_page(&s, e);
    }
    render(
        &s,
        StatusCode::OK,
        "notice.html",
        context! { reader => true, notice => Jv::from(minijinja::value::Serde(&n)) },
    )
}

/// The form's fields: label (the rule's, else the field name), value, whether it can be
/// corrected here, and the input its kind asks for. A computed value shows as a notice
/// writes it (`2026年10月21日（水）`, `15,000円`) with how it was computed.
fn field_list(
    fields: &IndexMap<String, Value>,
    form: &IndexMap<String, FieldSpec>,
    application: &Application,
) -> Vec<Jv> {
    fields
        .iter()
        .map(|(name, v)| {
            let spec = form.get(name);
            let kind = spec.map_or(FieldKind::Text, |s| s.kind);
            let computed = spec.is_some_and(|s| s.computed);
            let (value, scalar) = crate::service::display(v);
            let editable = scalar && !computed && *application == Application::Form;
            let shown = match (kind, v) {
                (FieldKind::Amount, Value::Number(n)) => {
                    n.as_i64().map_or_else(|| value.clone(), wording::yen)
                }
                (FieldKind::Date, Value::String(t)) => {
                    date_text(t).unwrap_or_else(|| value.clone())
                }
                (_, Value::Bool(b)) => (if *b { "はい" } else { "いいえ" }).to_owned(),
                (_, Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("、"),
                _ => value.clone(),
            };
            let label = spec
                .and_then(|s| s.label.as_ref())
                .map_or_else(|| name.clone(), |l| l.ja.clone());
            context! {
                name,
                label,
                value,
                shown,
                editable,
                kind => kind.name(),
                help => spec.and_then(|s| s.help.clone()),
                choices => spec.map(|s| s.choices.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct DraftQuery {
    done: Option<String>,
}

pub(crate) async fn draft(
    State(s): State<PortalState>,
    reader: PageReader,
    Path(key): Path<String>,
    Query(q): Query<DraftQuery>,
) -> Response {
    let key = match notice_key(&key) {
        Ok(k) => k,
        Err(e) => return error_page(&s, e),
    };
    match s.portal().draft(&reader.id, &key).await {
        Ok(d) => {
            let submitted = d
                .submitted_fields
                .as_ref()
                .map(|f| field_list(f, &d.form, &Application::None));
            render(
                &s,
                StatusCode::OK,
                "draft.html",
                context! {
                    reader => true,
                    csrf => reader.csrf(),
                    fields => field_list(&d.fields, &d.form, &d.application),
                    counter => matches!(d.application, Application::Counter { .. }),
                    submitted,
                    just_done => q.done.is_some(),
                    draft => Jv::from(minijinja::value::Serde(&d)),
                },
            )
        }
        Err(e) => error_page(&s, e),
    }
}

pub(crate) async fn draft_post(
    State(s): State<PortalState>,
    reader: PageReader,
    Path(key): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let key = match notice_key(&key) {
        Ok(k) => k,
        Err(e) => return error_page(&s, e),
    };
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let p = s.portal();
    let action = form
        .iter()
        .find(|(n, _)| n == "action")
        .map(|(_, v)| v.as_str());
    let result = match action {
        Some("decline") => p.decline(&reader.id, &key).await.map(|_| "declined"),
        Some("submit") => {
            let inputs = form
                .iter()
                .filter_map(|(n, v)| Some((n.strip_prefix("field.")?.to_owned(), v.clone())))
                .collect();
            p.submit_form(&reader.id, &key, inputs)
                .await
                .map(|_| "submitted")
        }
        _ => {
            return message(
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                "入力内容を確認してください",
                "申請するか、申請しないかを選んでください。",
            )
        }
    };
    match result {
        Ok(done) => Redirect::to(&format!("/drafts/{key}?done={done}")).into_response(),
        Err(e) => error_page(&s, e),
    }
}

fn forbidden(s: &PortalState) -> Response {
    message(
        s,
        StatusCode::FORBIDDEN,
        "操作を確認できませんでした",
        "ページを開き直してから、もう一度お試しください。",
    )
}

pub(crate) async fn preferences(
    State(s): State<PortalState>,
    reader: PageReader,
    uri: Uri,
) -> Response {
    let p = s.portal();
    let prefs = match p.preferences(&reader.id).await {
        Ok(x) => x,
        Err(e) => return error_page(&s, e),
    };
    let subscriptions = match p.subscriptions(&reader.id).await {
        Ok(x) => x,
        Err(e) => return error_page(&s, e),
    };
    // A channel is ticked only when notices go there: chosen and consented to. The register's
    // default is every channel whatever the consents, and a channel saved without its
    // consent carries nothing.
    let receives = context! {
        email => prefs.email_consent && prefs.channels.contains(&Channel::Email),
        webpush => prefs.webpush_consent && prefs.channels.contains(&Channel::Webpush),
    };
    render(
        &s,
        StatusCode::OK,
        "preferences.html",
        context! {
            reader => true,
            csrf => reader.csrf(),
            receives,
            prefs => Jv::from(minijinja::value::Serde(&prefs)),
            subscriptions => Jv::from(minijinja::value::Serde(&subscriptions)),
            saved_now => uri.query() == Some("saved=1"),
            push_done => uri.query().and_then(|q| q.strip_prefix("push=")),
            vapid_public_key => s.config().vapid_public_key.clone(),
        },
    )
}

pub(crate) async fn preferences_post(
    State(s): State<PortalState>,
    reader: PageReader,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let has = |k: &str| form.iter().any(|(n, _)| n == k);
    let mut channels = vec![Channel::Portal];
    if has("email") {
        channels.push(Channel::Email);
    }
    if has("webpush") {
        channels.push(Channel::Webpush);
    }
    let input = PreferencesInput {
        channels,
        email_consent: has("email_consent"),
        webpush_consent: has("webpush_consent"),
    };
    match s.portal().set_preferences(&reader.id, input).await {
        Ok(_) => Redirect::to("/preferences?saved=1").into_response(),
        Err(e) => error_page(&s, e),
    }
}
