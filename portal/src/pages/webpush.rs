//! Browser notifications from the preferences page: the service worker, the page's script,
//! and the two form posts that save this browser's push subscription (consent given with
//! it) and remove one. Everything goes through the service, as the API's subscriptions do.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use oshirase_engine::resident::Channel;

use super::{asset, error_page, forbidden, message, PageReader};
use crate::service::{PreferencesInput, ServiceError, SubscriptionInput, SubscriptionKeys};
use crate::PortalState;

/// The service worker, at the site's root so that its scope is every page (no
/// `Service-Worker-Allowed` needed). Revalidated on every update check: a changed worker
/// should not wait a day in a cache.
pub(crate) async fn service_worker() -> Response {
    let mut r = asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/sw.js"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-cache".parse().expect("a header"));
    r
}

pub(crate) async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/push.js"),
    )
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn not_registered(s: &PortalState) -> Response {
    message(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ブラウザ通知を登録できませんでした",
        "このブラウザの通知の宛先を確認できませんでした。ページを開き直してもう一度お試しいただくか、別のブラウザでお試しください。",
    )
}

/// Saves the browser's `PushSubscription` (its `endpoint`, `keys.p256dh`, `keys.auth`, as
/// the page's script fills them in) and, in the same step, consents to browser
/// notifications and chooses them: pressing the button is asking for them. When the
/// preferences cannot be saved the subscription is removed again, so that none is left
/// without the consent that goes with it.
pub(crate) async fn subscribe(
    State(s): State<PortalState>,
    reader: PageReader,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let (Some(endpoint), Some(p256dh), Some(auth)) = (
        field(&form, "endpoint"),
        field(&form, "keys.p256dh"),
        field(&form, "keys.auth"),
    ) else {
        return not_registered(&s);
    };
    let p = s.portal();
    let input = SubscriptionInput {
        endpoint: endpoint.to_owned(),
        keys: SubscriptionKeys {
            p256dh: p256dh.to_owned(),
            auth: auth.to_owned(),
        },
        _expiration_time: None,
    };
    match p.subscribe(&reader.id, input).await {
        Ok(_) => {}
        Err(ServiceError::Unprocessable { .. }) => return not_registered(&s),
        Err(e) => return error_page(&s, e),
    }
    let consented = async {
        let prefs = p.preferences(&reader.id).await?;
        let mut channels = prefs.channels;
        channels.push(Channel::Webpush);
        p.set_preferences(
            &reader.id,
            PreferencesInput {
                channels,
                email_consent: prefs.email_consent,
                webpush_consent: true,
            },
        )
        .await
    };
    if let Err(e) = consented.await {
        if let Err(undo) = p.unsubscribe(&reader.id, endpoint).await {
            tracing::error!(error = ?undo, "a push subscription without its consent was left");
        }
        return error_page(&s, e);
    }
    Redirect::to("/preferences?push=on").into_response()
}

/// Removes one of the reader's subscriptions (the page's script also ends it in the browser
/// when it is this one's). The consent stays as it is: other browsers may still be
/// registered, and the consent has its own checkbox. Removing one that is already gone is
/// done as well.
pub(crate) async fn unsubscribe(
    State(s): State<PortalState>,
    reader: PageReader,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !reader.csrf_ok(&form) {
        return forbidden(&s);
    }
    let Some(endpoint) = field(&form, "endpoint") else {
        return message(
            &s,
            StatusCode::UNPROCESSABLE_ENTITY,
            "入力内容を確認してください",
            "解除するブラウザを選んでください。",
        );
    };
    match s.portal().unsubscribe(&reader.id, endpoint).await {
        Ok(()) | Err(ServiceError::NotFound) => {
            Redirect::to("/preferences?push=off").into_response()
        }
        Err(e) => error_page(&s, e),
    }
}
