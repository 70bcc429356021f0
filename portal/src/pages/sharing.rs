//! A resident shares their own data with a registered party (docs/sharing.md): the OAuth 2.0
//! authorization endpoint with PKCE (S256 only) and rich authorization requests (RFC 9396)
//! naming the items, the consent page that shows the party, its purpose, each item with its
//! value and the expiry, and the resident's dashboard of grants with one-click revocation.
//!
//! Nothing about the request is trusted twice: the approving form posts the request's
//! parameters back, and they are checked again against the party's registration.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, FixedOffset};
use minijinja::context;
use oshirase_engine::clock::after;
use oshirase_store::{NewGrant, PartySpec, DETAILS_TYPE};
use serde::Deserialize;
use serde_json::Value;

use super::{forbidden, message, render, PageReader};
use crate::PortalState;

/// How long a code may wait for the token endpoint.
const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The authorization request, as the party's link (and the consent form) carries it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    authorization_details: Option<String>,
    /// Whose data: the reader's own (absent), or someone they may act for (the consent
    /// page's own parameter, not OAuth's).
    #[serde(rename = "for")]
    for_id: Option<String>,
}

/// One `authorization_details` entry (RFC 9396) of our type.
#[derive(Debug, Clone, Deserialize)]
struct Details {
    #[serde(rename = "type")]
    kind: String,
    /// Items the party needs.
    #[serde(default)]
    items: Vec<String>,
    /// Items the resident may leave out.
    #[serde(default)]
    optional_items: Vec<String>,
    /// A shorter grant than the party's longest.
    #[serde(default)]
    max_days: Option<u32>,
}

/// A checked request: what the consent page shows and the approval writes.
struct Checked {
    /// The issuer the redirect names (RFC 9207).
    issuer: String,
    party: PartySpec,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    required: Vec<String>,
    optional: Vec<String>,
    days: u32,
}

/// Why a request is refused: before its redirect URI is known to be the party's, on a page
/// (never a redirect to an unchecked address); after, back to the party with the error.
enum Refusal {
    Page(&'static str),
    Redirect {
        uri: String,
        issuer: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// A redirect back to the party with `params` and the issuer as `iss` (RFC 9207), so that a
/// party talking to several authorization servers knows whose answer this is (mix-up attacks).
fn redirect_with(uri: &str, issuer: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(uri) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad redirect URI").into_response(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        q.append_pair("iss", issuer);
    }
    Redirect::to(url.as_str()).into_response()
}

impl Refusal {
    fn respond(self, s: &PortalState) -> Response {
        match self {
            Refusal::Page(text) => message(
                s,
                StatusCode::BAD_REQUEST,
                "この連携の依頼は受け付けられません",
                text,
            ),
            Refusal::Redirect {
                uri,
                issuer,
                state,
                error,
                description,
            } => {
                let mut params = vec![("error", error), ("error_description", &description)];
                if let Some(st) = &state {
                    params.push(("state", st));
                }
                redirect_with(&uri, &issuer, &params)
            }
        }
    }
}

async fn check(s: &PortalState, q: &AuthorizeQuery) -> Result<Checked, Refusal> {
    let store = &s.portal().store;
    let Some(issuer) = s.config().share_issuer.clone() else {
        return Err(Refusal::Page(
            "この自治体では、外部のサービスへの情報の提供を受け付けていません。",
        ));
    };
    let Some(client_id) = q.client_id.as_deref() else {
        return Err(Refusal::Page("連携先（client_id）が指定されていません。"));
    };
    let party = match store.party(client_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(Refusal::Page("登録されていない連携先です。")),
        Err(e) => {
            tracing::error!(error = %e, "reading a party failed");
            return Err(Refusal::Page("しばらくしてからもう一度お試しください。"));
        }
    };
    let Some(redirect_uri) = q
        .redirect_uri
        .as_deref()
        .filter(|u| party.redirect_uris.iter().any(|r| r == u))
    else {
        return Err(Refusal::Page(
            "戻り先のアドレスが、連携先の登録と一致しません。",
        ));
    };
    let back = |error, description: String| Refusal::Redirect {
        uri: redirect_uri.to_owned(),
        issuer: issuer.clone(),
        state: q.state.clone(),
        error,
        description,
    };
    if q.response_type.as_deref() != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "response_type must be code".into(),
        ));
    }
    let Some(state) = q.state.clone().filter(|s| !s.is_empty() && s.len() <= 512) else {
        return Err(back("invalid_request", "state is required".into()));
    };
    let challenge_ok = |c: &&String| {
        c.len() == 43
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let (Some(challenge), Some("S256")) = (
        q.code_challenge.as_ref().filter(challenge_ok),
        q.code_challenge_method.as_deref(),
    ) else {
        return Err(back(
            "invalid_request",
            "PKCE with code_challenge_method S256 is required".into(),
        ));
    };
    let details: Vec<Details> = match q.authorization_details.as_deref().map(serde_json::from_str) {
        Some(Ok(d)) => d,
        _ => {
            return Err(back(
                "invalid_authorization_details",
                "authorization_details must be a JSON array".into(),
            ))
        }
    };
    let [d] = details.as_slice() else {
        return Err(back(
            "invalid_authorization_details",
            format!("exactly one entry of type {DETAILS_TYPE} is expected"),
        ));
    };
    if d.kind != DETAILS_TYPE {
        return Err(back(
            "invalid_authorization_details",
            format!("the type must be {DETAILS_TYPE}"),
        ));
    }
    let dictionary = store.exchange().map(|x| &x.dictionary);
    for item in d.items.iter().chain(&d.optional_items) {
        if !party.items.contains(item) {
            return Err(back(
                "invalid_authorization_details",
                format!("{item} is not an item this party may ask for"),
            ));
        }
        if dictionary.is_none_or(|dict| dict.get(item).is_none()) {
            return Err(back(
                "invalid_authorization_details",
                format!("{item} is not an item of the data-item dictionary"),
            ));
        }
    }
    if d.items.is_empty() && d.optional_items.is_empty() {
        return Err(back(
            "invalid_authorization_details",
            "no item is asked for".into(),
        ));
    }
    let days = d
        .max_days
        .map_or(party.max_grant_days, |m| m.min(party.max_grant_days))
        .max(1);
    Ok(Checked {
        issuer,
        redirect_uri: redirect_uri.to_owned(),
        state,
        code_challenge: challenge.clone(),
        required: d.items.clone(),
        optional: d
            .optional_items
            .iter()
            .filter(|i| !d.items.contains(i))
            .cloned()
            .collect(),
        days,
        party,
    })
}

/// Whose data a consent is about: the reader's own, or a person the reader may act for on
/// their record (a guardian for a minor, a proxy with scope `all`); anyone else, or a
/// malformed id, answers like nobody.
async fn whose(
    s: &PortalState,
    reader: &PageReader,
    q: &AuthorizeQuery,
) -> Result<oshirase_engine::ids::ResidentId, Response> {
    let Some(id) = q.for_id.as_deref().filter(|f| !f.is_empty()) else {
        return Ok(reader.id.id().clone());
    };
    let refused = || {
        message(
            s,
            StatusCode::NOT_FOUND,
            "この方の情報は提供できません",
            "代理人として同意できるのは、包括的な代理の権限（範囲「すべて」）がある方の情報だけです。",
        )
    };
    let Ok(whom) = oshirase_engine::ids::ResidentId::parse(id) else {
        return Err(refused());
    };
    if &whom == reader.id.id() {
        return Ok(whom);
    }
    match s.portal().acts_for(&reader.id, &whom).await {
        Ok(true) => Ok(whom),
        Ok(false) => Err(refused()),
        Err(e) => Err(super::error_page(s, e)),
    }
}

/// One item as the consent page shows it.
#[derive(serde::Serialize)]
struct ItemView {
    code: String,
    name: String,
    value: String,
    optional: bool,
    /// Withheld: a support measure forbids sharing the address.
    withheld: bool,
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "（登録なし）".to_owned(),
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .map_or_else(|| v.to_string(), str::to_owned),
        other => other.to_string(),
    }
}

async fn item_views(
    s: &PortalState,
    whom: &oshirase_engine::ids::ResidentId,
    c: &Checked,
) -> Result<Vec<ItemView>, Response> {
    let store = &s.portal().store;
    let resident = match store.resident(whom.as_str()).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(message(
                s,
                StatusCode::NOT_FOUND,
                "住民記録が見つかりません",
                "この方の住民記録がないため、情報を提供できません。",
            ))
        }
        Err(e) => return Err(super::error_page(s, e.into())),
    };
    let Some(dict) = store.exchange().map(|x| &x.dictionary) else {
        return Err(super::error_page(
            s,
            crate::service::ServiceError::Internal("no data-item dictionary".into()),
        ));
    };
    Ok(c.required
        .iter()
        .map(|code| (code, false))
        .chain(c.optional.iter().map(|code| (code, true)))
        .filter_map(|(code, optional)| {
            let item = dict.get(code)?;
            let withheld = resident.support_measure && dict.is_address(item);
            Some(ItemView {
                code: code.clone(),
                name: item.name.clone(),
                value: if withheld {
                    "支援措置のため提供できません".to_owned()
                } else {
                    shown(&dict.value(item, &resident))
                },
                optional,
                withheld,
            })
        })
        .collect())
}

fn expiry_text(now: DateTime<FixedOffset>, days: u32) -> String {
    let until = after(
        now,
        std::time::Duration::from_secs(u64::from(days) * 86_400),
    );
    oshirase_engine::wording::date(
        until.date_naive(),
        oshirase_engine::wording::DateStyle::Seireki,
    )
}

pub(crate) async fn authorize(
    State(s): State<PortalState>,
    reader: PageReader,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let c = match check(&s, &q).await {
        Ok(c) => c,
        Err(r) => return r.respond(&s),
    };
    let whom = match whose(&s, &reader, &q).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let items = match item_views(&s, &whom, &c).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    // Whom else the reader may consent for: the page offers to switch.
    let others = match s.portal().acting_for(&reader.id).await {
        Ok(o) => o,
        Err(e) => return super::error_page(&s, e),
    };
    let whose_options: Vec<minijinja::Value> = std::iter::once(context! {
        id => "", label => "ご自身の情報", selected => &whom == reader.id.id(),
    })
    .chain(others.iter().map(|p| {
        context! {
            id => p.for_id.as_str(), label => format!("{}の情報", p.about),
            selected => p.for_id == whom,
        }
    }))
    .collect();
    // Chrome holds a form's redirect to `form-action` too: the answer to 提供する goes to
    // the party's (checked) redirect URI, so its origin is allowed, and only that.
    let origin = url::Url::parse(&c.redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let mut page = render(
        &s,
        StatusCode::OK,
        "consent.html",
        context! {
            reader => true,
            csrf => reader.csrf(),
            party => context! { name => c.party.name.clone(), purpose => c.party.purpose.clone() },
            items => minijinja::Value::from(minijinja::value::Serde(&items)),
            until => expiry_text(s.now(), c.days),
            whose_options => if others.is_empty() { None } else { Some(whose_options) },
            for_id => (&whom != reader.id.id()).then(|| whom.as_str().to_owned()),
            request => minijinja::Value::from(minijinja::value::Serde(&[
                ("response_type", q.response_type.clone()),
                ("client_id", q.client_id.clone()),
                ("redirect_uri", q.redirect_uri.clone()),
                ("state", q.state.clone()),
                ("code_challenge", q.code_challenge.clone()),
                ("code_challenge_method", q.code_challenge_method.clone()),
                ("authorization_details", q.authorization_details.clone()),
            ])),
        },
    );
    if let Some(csp) = crate::csp_with_form_action(&origin) {
        page.headers_mut()
            .insert(axum::http::header::CONTENT_SECURITY_POLICY, csp);
    }
    page
}

fn random_text(bytes: usize) -> Result<String, getrandom::Error> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

pub(crate) async fn approve(
    State(s): State<PortalState>,
    reader: PageReader,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let q = AuthorizeQuery {
        response_type: get("response_type"),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        state: get("state"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        authorization_details: get("authorization_details"),
        for_id: get("for"),
    };
    let c = match check(&s, &q).await {
        Ok(c) => c,
        Err(r) => return r.respond(&s),
    };
    let whom = match whose(&s, &reader, &q).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if get("action").as_deref() != Some("approve") {
        return redirect_with(
            &c.redirect_uri,
            &c.issuer,
            &[
                ("error", "access_denied"),
                ("error_description", "the resident declined"),
                ("state", &c.state),
            ],
        );
    }
    let views = match item_views(&s, &whom, &c).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    // The required items, and the optional ones left ticked; never a withheld one.
    let ticked: Vec<String> = form
        .iter()
        .filter(|(n, _)| n == "item")
        .map(|(_, v)| v.clone())
        .collect();
    let items: Vec<String> = views
        .iter()
        .filter(|v| !v.withheld && (!v.optional || ticked.contains(&v.code)))
        .map(|v| v.code.clone())
        .collect();
    if items.is_empty() {
        return redirect_with(
            &c.redirect_uri,
            &c.issuer,
            &[
                ("error", "access_denied"),
                ("error_description", "no item can be shared"),
                ("state", &c.state),
            ],
        );
    }
    let (Ok(id), Ok(code)) = (random_text(16), random_text(32)) else {
        return super::error_page(
            &s,
            crate::service::ServiceError::Internal("no randomness".into()),
        );
    };
    let now = s.now();
    let grant_id = format!("g_{id}");
    let hash = oshirase_store::secret_digest(&code);
    let grant = NewGrant {
        id: &grant_id,
        resident_id: whom.as_str(),
        granted_by: reader.id.as_str(),
        party_id: &c.party.id,
        items: &items,
        purpose: &c.party.purpose,
        expires_at: after(
            now,
            std::time::Duration::from_secs(u64::from(c.days) * 86_400),
        ),
        code_hash: &hash,
        redirect_uri: &c.redirect_uri,
        code_challenge: &c.code_challenge,
        code_expires_at: after(now, CODE_TTL),
        now,
    };
    if let Err(e) = s.portal().store.create_grant(&grant).await {
        return super::error_page(&s, e.into());
    }
    redirect_with(
        &c.redirect_uri,
        &c.issuer,
        &[("code", &code), ("state", &c.state)],
    )
}

/// The resident's dashboard: every grant of their data, with revocation.
pub(crate) async fn dashboard(
    State(s): State<PortalState>,
    reader: PageReader,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let store = &s.portal().store;
    let grants = match store.grants_of_resident(reader.id.as_str()).await {
        Ok(g) => g,
        Err(e) => return super::error_page(&s, e.into()),
    };
    let dict = store.exchange().map(|x| &x.dictionary);
    let now = s.now();
    let mut views = Vec::new();
    for g in &grants {
        let party = match store.party(&g.party_id).await {
            Ok(p) => p.map_or_else(|| g.party_id.clone(), |p| p.name),
            Err(e) => return super::error_page(&s, e.into()),
        };
        let items: Vec<String> = g
            .items
            .iter()
            .map(|c| {
                dict.and_then(|d| d.get(c))
                    .map_or_else(|| c.clone(), |i| i.name.clone())
            })
            .collect();
        let day = |t: DateTime<FixedOffset>| {
            oshirase_engine::wording::date(
                t.with_timezone(&oshirase_engine::clock::jst()).date_naive(),
                oshirase_engine::wording::DateStyle::Seireki,
            )
        };
        views.push(context! {
            id => g.id.clone(),
            party,
            purpose => g.purpose.clone(),
            items => items.join("、"),
            since => day(g.created_at),
            until => day(g.expires_at),
            last_used => g.last_used_at.map(day),
            live => g.live(now),
            revoked => g.revoked_at.is_some(),
        });
    }
    render(
        &s,
        StatusCode::OK,
        "sharing.html",
        context! {
            reader => true, csrf => reader.csrf(), grants => views,
            revoked_now => raw.as_deref() == Some("revoked=1"),
        },
    )
}

pub(crate) async fn revoke(
    State(s): State<PortalState>,
    reader: PageReader,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let actor = format!("resident:{}", reader.id.as_str());
    match s
        .portal()
        .store
        .revoke_grant(&id, reader.id.as_str(), &actor, s.now())
        .await
    {
        Ok(true) => Redirect::to("/sharing?revoked=1").into_response(),
        Ok(false) => message(
            &s,
            StatusCode::NOT_FOUND,
            "提供の許可が見つかりません",
            "この許可は存在しないか、すでに取り消されています。",
        ),
        Err(e) => super::error_page(&s, e.into()),
    }
}
