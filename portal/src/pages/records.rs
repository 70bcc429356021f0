//! The 「情報の提供記録」 page: what was provided about the reader (or about someone they may
//! read it for, `?for=`) to agencies, by month, newest first. Everything comes from the
//! service, as the API's `/api/records` does.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Timelike;
use minijinja::{context, Value as Jv};

use super::{error_page, message, render, PageReader};
use crate::api::for_param;
use crate::service::{ProvisionView, RecordsView, ServiceError};
use crate::PortalState;
use oshirase_engine::eval::Role;
use oshirase_engine::wording::{self, DateStyle};

/// One entry as the page shows it: the date and time as a notice writes them
/// (`2026年10月1日（木）`, `14時05分`, in Asia/Tokyo, as the service gives it), the items by
/// name.
fn entry(r: &ProvisionView) -> (String, Jv) {
    let day = r.at.date_naive();
    let month = wording::month(day, DateStyle::Seireki);
    let date = wording::date(day, DateStyle::Seireki);
    let time = format!("{}時{:02}分", r.at.hour(), r.at.minute());
    let names = |items: &[crate::service::ProvidedItem]| -> Vec<String> {
        items.iter().map(|i| i.name.clone()).collect()
    };
    let ctx = context! {
        at => r.at.to_rfc3339(),
        date,
        time,
        accessor => r.accessor.as_str(),
        party => r.accessor_kind == "party",
        basis => r.basis.as_str(),
        body => r.body.as_deref(),
        duty => r.duty.as_deref(),
        // The purpose table separates laws with `;`: one a line.
        laws => r.legal_basis.as_deref().map(laws),
        action => r.action.as_str(),
        action_text => r.action_text.as_str(),
        items => names(&r.items),
        withheld => names(&r.withheld),
    };
    (month, ctx)
}

/// The laws of a legal basis, which the purpose table separates with `;`.
fn laws(basis: &str) -> Vec<String> {
    basis
        .split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The entries by month, in the record's order (newest first).
fn months(v: &RecordsView) -> Vec<Jv> {
    let mut groups: Vec<(String, Vec<Jv>)> = Vec::new();
    for r in &v.records {
        let (month, ctx) = entry(r);
        match groups.last_mut() {
            Some((m, list)) if *m == month => list.push(ctx),
            _ => groups.push((month, vec![ctx])),
        }
    }
    groups
        .into_iter()
        .map(|(month, entries)| context! { month, entries })
        .collect()
}

pub(crate) async fn records(
    State(s): State<PortalState>,
    reader: PageReader,
    RawQuery(query): RawQuery,
) -> Response {
    let whom = for_param(query.as_deref());
    match s.portal().records(&reader.id, whom.as_deref()).await {
        Ok(v) => {
            // Links to the others' records carry their id, as notice links carry keys; the
            // page's text names them.
            let others: Vec<Jv> = v
                .others
                .iter()
                .map(|o| context! { id => o.for_id.as_str(), about => o.about.as_str() })
                .collect();
            render(
                &s,
                StatusCode::OK,
                "records.html",
                context! {
                    reader => true,
                    own => v.role == Role::Subject,
                    about => v.about.as_str(),
                    whose => v.whose.as_str(),
                    months => months(&v),
                    others,
                },
            )
        }
        // Missing, malformed and not the reader's to read: one page.
        Err(ServiceError::NotFound) => message(
            &s,
            StatusCode::NOT_FOUND,
            "提供の記録を表示できません",
            "この方の記録は存在しないか、表示できません。",
        ),
        Err(e) => error_page(&s, e),
    }
}
