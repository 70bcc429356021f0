//! The events an agency receives, as CloudEvents 1.0 JSON. Thin by design (the Dutch
//! CloudEvents profile): no personal data in any attribute or in `data` — the subject is the
//! agency's pseudonym, the data names the items that changed, and the agency pulls the values
//! it is entitled to.

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde_json::{json, Value};

use oshirase_store::AgencyEvent;

/// The CloudEvents `type` of a heartbeat: sent on a stream that was silent for a while, so
/// that the agency can tell "nothing happened" from "we lost the connection".
pub const HEARTBEAT: &str = "jp.lg.oshirase.stream.heartbeat";

/// The `source` of a municipality's events: its local government code as a URN.
pub fn source(local_gov_code: &str) -> String {
    format!("urn:jp:lg-code:{local_gov_code}")
}

/// The event's id: the same for every delivery of it (the `webhook-id`), so a receiver
/// drops a duplicate by id.
pub fn event_id(e: &AgencyEvent) -> String {
    // Standard Webhooks ids may not contain '.' (it separates the signed parts).
    format!("{}:{}:{}", e.agency_id, e.purpose_id, e.seq)
}

fn time(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One change event.
pub fn event(e: &AgencyEvent) -> Value {
    json!({
        "specversion": "1.0",
        "id": event_id(e),
        "source": source(&e.local_gov_code),
        "type": e.kind,
        "subject": e.subject,
        "time": time(e.time),
        // The CloudEvents sequence extension: a string, contiguous per stream.
        "sequence": e.seq.to_string(),
        "datacontenttype": "application/json",
        "data": {
            "purpose": e.purpose_id,
            "sequence": e.seq,
            "items": e.items.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "dictionary_version": e.dictionary_version,
        },
    })
}

/// A heartbeat on an idle stream, carrying the stream's last sequence number: a receiver
/// whose own last number is lower has missed events and fetches them (`GET /agency/v1/events`).
pub fn heartbeat(
    agency: &str,
    purpose: &str,
    last_seq: i64,
    local_gov_code: &str,
    now: DateTime<FixedOffset>,
) -> (String, Value) {
    let id = format!("{agency}:{purpose}:heartbeat:{}", now.timestamp());
    let body = json!({
        "specversion": "1.0",
        "id": id,
        "source": source(local_gov_code),
        "type": HEARTBEAT,
        "time": time(now),
        "datacontenttype": "application/json",
        "data": { "purpose": purpose, "last_sequence": last_seq },
    });
    (id, body)
}
