//! The OpenAPI 3.1 description of every route, written by hand; a test checks it against the
//! router's route table both ways.

use serde_json::{json, Value};

fn err(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn html(description: &str) -> Value {
    json!({ "description": description, "content": { "text/html": { "schema": { "type": "string" } } } })
}

fn key_param(wildcard: bool) -> Value {
    if wildcard {
        return json!({
            "name": "key", "in": "path", "required": true,
            "description": "The decision key (rule/subject/occurrence), slashes as they are.",
            "schema": { "type": "string" }
        });
    }
    // The shape `DecisionKey::parse` accepts (a rule id, a resident id, an occurrence); a key
    // of another shape is answered like a missing one. The example's slashes tell clients
    // (and fuzzers) that the value holds `/`, sent as `%2F`.
    json!({
        "name": "key", "in": "path", "required": true,
        "description": "The decision key (rule/subject/occurrence), percent-encoded: `/` as `%2F`. A key of another shape is answered like a missing one (404).",
        "schema": { "type": "string", "pattern": "^[a-z][a-z0-9-]{2,63}/[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,96}$" },
        "example": "example-rule/R10001/2026-10-01"
    })
}

/// Responses every authenticated API call may give.
fn authed(mut responses: Value) -> Value {
    let r = responses.as_object_mut().expect("an object");
    r.insert("401".into(), err("Missing, expired, forged or wrong-issuer token. `WWW-Authenticate: Bearer error=\"invalid_token\"`."));
    r.insert(
        "429".into(),
        err("Rate limit for this token; see `Retry-After`."),
    );
    responses
}

fn api_op(summary: &str, responses: Value) -> Value {
    json!({ "summary": summary, "security": [{ "bearer": [] }], "responses": authed(responses) })
}

fn api_key_op(summary: &str, responses: Value) -> Value {
    let mut op = api_op(summary, responses);
    op["parameters"] = json!([key_param(false)]);
    op
}

fn page(summary: &str, key: bool) -> Value {
    let mut op = json!({
        "summary": summary,
        "tags": ["pages"],
        "security": [{ "session": [] }],
        "responses": {
            "200": html("The page."),
            "401": html("Not signed in, or the session ended (idle, past its lifetime, logged out): the login hint page."),
            "404": html("Missing or not the reader's (the same page)."),
            "503": html("The session could not be checked (the database does not answer)."),
        }
    });
    if key {
        op["parameters"] = json!([key_param(true)]);
    }
    op
}

fn form_post(summary: &str, key: bool) -> Value {
    let mut op = page(summary, key);
    op["requestBody"] = json!({ "content": { "application/x-www-form-urlencoded": { "schema": { "type": "object", "properties": { "csrf": { "type": "string" } }, "required": ["csrf"] } } } });
    op["responses"]["303"] = json!({ "description": "Done: redirect to the confirmation." });
    op["responses"]["403"] = html("Missing or wrong CSRF token.");
    op
}

/// A form post of the preferences page's browser notifications, with its fields.
fn push_form_post(summary: &str, fields: Value) -> Value {
    let mut op = with_fields(
        form_post(summary, false),
        fields,
        "A missing field, or an endpoint or keys the portal refuses (as `POST /api/push-subscriptions` does).",
    );
    op["responses"]["409"] = html("The endpoint is registered for another resident.");
    op
}

/// The pages of the resident's own record and of sharing it (docs/sharing.md).
fn sharing_paths() -> Value {
    json!({
            "/me": { "get": {
                "summary": "自分の情報: the reader's register record item by item (or, with `for`, that of someone they may act for) and the notices about them; audited (`record.read`).",
                "tags": ["pages"],
                "security": [{ "session": [] }],
                "parameters": [for_param()],
                "responses": {
                    "200": html("The page."),
                    "401": html("Not signed in, or the session ended: the login hint page."),
                    "404": html("`for` names someone the reader may not act for (the same page).") } } },
            "/me/corrections": { "post": with_fields(
                form_post("Asks for a correction of the record (recorded for the counter's staff; the register does not change). Redirects to `/me?requested=1`.", false),
                json!({ "item": { "type": "string", "description": "A data-item code." },
                        "message": { "type": "string", "maxLength": 1000 } }),
                "An unknown item, an empty or too long message.",
            ) },
            "/oauth/authorize": {
                "get": {
                    "summary": "The OAuth 2.0 authorization endpoint of a party a resident shares data with (docs/sharing.md): PKCE S256 and `authorization_details`; the consent page.",
                    "tags": ["pages"],
                    "security": [{ "session": [] }],
                    "parameters": authorize_params(),
                    "responses": {
                        "200": html("The consent page."),
                        "303": { "description": "Back to the party's registered redirect URI with `error` and `state`." },
                        "400": html("An unknown party or a redirect URI not registered for it: a page, never a redirect."),
                        "401": html("Not signed in: the login hint, with a link back to the whole request."),
                        "404": html("`for` names someone the reader may not consent for.") } },
                "post": form_post("Approves (`action=approve`, the optional items left ticked as `item`) or declines; the request's parameters are checked again. Redirects to the party with `code` and `state`, or `error`.", false)
            },
            "/sharing": { "get": page("情報の提供先: every grant of the reader's data, with revocation.", false) },
            "/sharing/{id}/revoke": { "post": {
                "summary": "Revokes one of the reader's grants at once. Redirects to `/sharing?revoked=1`.",
                "tags": ["pages"],
                "security": [{ "session": [] }],
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "content": { "application/x-www-form-urlencoded": { "schema": { "type": "object", "properties": { "csrf": { "type": "string" } }, "required": ["csrf"] } } } },
                "responses": {
                    "303": { "description": "Revoked." },
                    "401": html("Not signed in."),
                    "403": html("Missing or wrong CSRF token."),
                    "404": html("No live grant of the reader's with this id.") } } }
    })
}

/// The authorization request's query parameters (and the consent page's own `for`).
fn authorize_params() -> Vec<Value> {
    [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "authorization_details",
        "for",
    ]
    .iter()
    .map(|n| json!({ "name": n, "in": "query", "required": false, "schema": { "type": "string" } }))
    .collect()
}

/// `op` with more required form fields, and a 422 for them.
fn with_fields(mut op: Value, fields: Value, refused: &str) -> Value {
    let schema = &mut op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
    let mut required = vec![json!("csrf")];
    for (name, field) in fields.as_object().expect("an object") {
        schema["properties"][name] = field.clone();
        required.push(json!(name));
    }
    schema["required"] = json!(required);
    op["responses"]["422"] = html(refused);
    op
}

/// The properties of the preferences a reader saves, and with `saved` those they read back.
fn preference_fields(saved: bool) -> Value {
    let mut p = json!({
        "channels": { "type": "array", "items": { "type": "string", "enum": ["portal", "email", "webpush"] } },
        "email_consent": { "type": "boolean" },
        "webpush_consent": { "type": "boolean" }
    });
    if saved {
        p["saved"] = json!({ "type": "boolean", "description": "False while the register's preferences apply." });
    }
    p
}

/// A register item named in a provision (never its value).
fn provided_item_schema() -> Value {
    json!({ "type": "object", "required": ["code", "name"], "properties": {
                    "code": { "type": "string", "description": "The data-item dictionary's code (`name_kana`)." },
                    "name": { "type": "string", "description": "Its Japanese name (氏名（フリガナ）); the code when the dictionary does not know it. Never the value." } } })
}

/// One provision of the record of what was provided.
fn provision_schema() -> Value {
    json!({ "type": "object", "required": ["at", "accessor_kind", "accessor", "basis", "action", "action_text", "items", "withheld"], "properties": {
                    "at": { "type": "string", "format": "date-time", "description": "When, in Asia/Tokyo." },
                    "accessor_kind": { "type": "string", "description": "`agency` (or `party`, a third party the resident granted access)." },
                    "accessor": { "type": "string", "description": "Whom it was provided to: the agency's registered name." },
                    "basis": { "type": "string", "description": "The purpose id (or the grant) it was provided under." },
                    "body": { "type": ["string", "null"], "description": "The purpose's kind of body (日本年金機構); null when the purpose table does not know `basis`." },
                    "duty": { "type": ["string", "null"], "description": "The purpose's duty (年金給付の支給に関する事務)." },
                    "legal_basis": { "type": ["string", "null"], "description": "The law that lets the agency receive the items." },
                    "action": { "type": "string", "description": "`event` (told of a change) or `pull` (the agency asked for the items)." },
                    "action_text": { "type": "string", "description": "The action in words: 変更の通知, 情報の照会・提供." },
                    "items": { "type": "array", "description": "The items provided, in the dictionary's order.", "items": { "$ref": "#/components/schemas/ProvidedItem" } },
                    "withheld": { "type": "array", "description": "The items held back because of a support measure (支援措置).", "items": { "$ref": "#/components/schemas/ProvidedItem" } } } })
}

/// A person's record of what was provided (`GET /api/records`).
fn records_schema() -> Value {
    json!({ "type": "object", "required": ["about", "whose", "role", "records", "others"], "properties": {
                    "about": { "type": "string", "description": "Whose record, for this reader, by name (「ご本人」, 「陽さん（お子さま）」, 「山田 花子さん（代理人として）」)." },
                    "whose": { "type": "string", "description": "The same in a sentence (「あなた」, 「陽さん」)." },
                    "role": { "type": "string", "enum": ["subject", "guardian", "proxy"] },
                    "records": { "type": "array", "description": "Newest first.", "items": { "$ref": "#/components/schemas/Provision" } },
                    "others": { "type": "array", "description": "On the reader's own record: whose record they may also read, each with the `for` to ask with.", "items": { "type": "object", "required": ["for", "about", "role"], "properties": {
                        "for": { "type": "string" }, "about": { "type": "string" }, "role": { "type": "string", "enum": ["guardian", "proxy"] } } } } } })
}

/// `?for=`: whose record of provisions to read, when not the reader's own.
fn for_param() -> Value {
    json!({
        "name": "for", "in": "query", "required": false,
        "description": "The resident id of someone the reader may read the record for (a minor as their guardian, a principal as a proxy with the scope `all`), as `others[].for` gives it. Without it, the reader's own record. Someone the reader may not read for, a missing person and a malformed id all answer 404.",
        "schema": { "type": "string" },
        "example": "R10002"
    })
}

pub(crate) fn spec() -> Value {
    let mut spec = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "oshirase resident portal",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Notices and prefilled drafts for residents, their guardians and proxies. A reader sees exactly the notices addressed to them through the portal, re-checked against the register; a notice that is not the reader's answers exactly like a missing one."
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "session": { "type": "apiKey", "in": "cookie", "name": "oshirase_session" }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": { "type": "string", "enum": ["invalid_token", "not_found", "conflict", "unprocessable", "rate_limited", "internal"] },
                    "message": { "type": "string" },
                    "field": { "type": ["string", "null"], "description": "The offending field (422)." },
                    "state": { "type": "string", "description": "The draft's state (409)." }
                } },
                "NoticeSummary": { "type": "object", "required": ["key", "title", "subject", "category", "role", "created", "critical", "read", "about", "urgent", "application", "url"], "properties": {
                    "key": { "type": "string" }, "title": { "type": "string" }, "subject": { "type": "string" },
                    "category": { "type": "string" },
                    "role": { "type": "string", "enum": ["subject", "guardian", "householder", "spouse", "survivor", "proxy"] },
                    "deadline": { "type": ["string", "null"], "format": "date" },
                    "created": { "type": "string", "format": "date-time" },
                    "critical": { "type": "boolean" }, "read": { "type": "boolean" },
                    "draft_state": { "type": ["string", "null"], "enum": ["open", "submitted", "declined", null] },
                    "event": { "type": ["string", "null"], "description": "The life event (a birth, a death) this notice is one of: notices of one event share it." },
                    "urgent": { "type": "boolean", "description": "Its deadline had passed when it was made." },
                    "application": { "$ref": "#/components/schemas/Application" },
                    "application_status": { "oneOf": [ { "type": "null" }, { "$ref": "#/components/schemas/ApplicationStatus" } ] },
                    "about": { "type": "string", "description": "Whom the notice is about, for this reader, by name (「陽さん（お子さま）について」, 「ご本人あて」)." },
                    "url": { "type": "string", "format": "uri" }
                } },
                "ApplicationStatus": { "type": "object", "description": "Where the office has the latest application submitted from the draft: 申請済み → 受付 → 審査中 → 完了, or 差戻し (with the office's message; the draft is open again to correct and resubmit) or 却下 (docs/office.md).", "required": ["seq", "version", "status", "label", "step", "updated"], "properties": {
                    "seq": { "type": "integer", "description": "The application's number at the office (受付番号)." },
                    "version": { "type": "integer", "description": "1, then one more for each resubmission after 差戻し." },
                    "status": { "type": "string", "enum": ["submitted", "received", "in_review", "completed", "returned", "rejected"] },
                    "label": { "type": "string", "description": "申請済み, 受付, 審査中, 完了, 差戻し or 却下." },
                    "step": { "type": "integer", "minimum": 0, "maximum": 4, "description": "How many of 申請済み → 受付 → 審査中 → 完了 are reached; 0 for 差戻し and 却下." },
                    "message": { "type": ["string", "null"], "description": "The office's message to the resident." },
                    "updated": { "type": "string", "format": "date-time" } } },
                "NoticeList": { "type": "object", "required": ["notices"], "properties": {
                    "notices": { "type": "array", "items": { "$ref": "#/components/schemas/NoticeSummary" } } } },
                "Notice": { "allOf": [ { "$ref": "#/components/schemas/NoticeSummary" }, { "type": "object", "required": ["message", "recommendations"], "properties": {
                    "message": { "type": "string" },
                    "recommendations": { "type": "array", "description": "Related procedures that apply to the same person (their rule decided for them), each with its own notice's page when this reader receives it.", "items": { "type": "object", "required": ["rule", "title", "why"], "properties": {
                        "rule": { "type": "string" }, "title": { "type": "string" }, "why": { "type": "string" },
                        "deadline": { "type": ["string", "null"], "format": "date" }, "url": { "type": ["string", "null"], "format": "uri" } } } },
                    "contact": { "oneOf": [ { "type": "null" }, { "type": "object", "required": ["name"], "properties": {
                        "name": { "type": "string" }, "phone": { "type": "string" }, "hours": { "type": "string" },
                        "counter": { "type": "string" }, "url": { "type": "string" } } } ], "description": "Whom to ask (問い合わせ先)." } } } ] },
                "Application": { "description": "Whether the resident applies: with the form here, at a counter (where, what to bring), or not at all.", "oneOf": [
                    { "type": "string", "enum": ["none", "form"] },
                    { "type": "object", "required": ["counter"], "properties": { "counter": { "type": "object", "required": ["place", "bring"], "properties": {
                        "place": { "type": "string" }, "bring": { "type": "array", "items": { "type": "string" } } } } } } ] },
                "Draft": { "type": "object", "required": ["key", "title", "state", "fields", "updated_at"], "properties": {
                    "key": { "type": "string" }, "title": { "type": "string" },
                    "deadline": { "type": ["string", "null"], "format": "date" },
                    "state": { "type": "string", "enum": ["open", "submitted", "declined"] },
                    "fields": { "type": "object", "description": "Prefilled fields in the rule's order." },
                    "form": { "type": "object", "description": "How each field is shown and checked.", "additionalProperties": { "type": "object", "properties": {
                        "label": { "type": "object", "required": ["ja"], "properties": { "ja": { "type": "string" }, "en": { "type": "string" } } },
                        "kind": { "type": "string", "enum": ["text", "kana", "date", "amount", "choice", "person"] },
                        "help": { "type": "string" }, "choices": { "type": "array", "items": { "type": "string" } },
                        "computed": { "type": "boolean", "description": "Read-only: worked out from the register and the rule." } } } },
                    "application": { "$ref": "#/components/schemas/Application" },
                    "contact": { "type": ["object", "null"], "description": "Whom to ask (問い合わせ先), as in Notice." },
                    "submitted_fields": { "type": ["object", "null"] },
                    "decided_by": { "type": ["string", "null"] },
                    "updated_at": { "type": "string" }
                } },
                "Submit": { "type": "object", "additionalProperties": false, "properties": {
                    "corrections": { "type": "object", "description": "Field name to corrected value (string, number, boolean or null); only fields of the draft.",
                        "additionalProperties": { "type": ["string", "number", "boolean", "null"] } } } },
                "PushSubscription": { "type": "object", "required": ["endpoint", "keys"], "properties": {
                    "endpoint": { "type": "string", "format": "uri", "description": "https on a known push service (loopback only when the portal allows it)." },
                    "expirationTime": { "type": ["number", "null"] },
                    "keys": { "type": "object", "required": ["p256dh", "auth"], "properties": {
                        "p256dh": { "type": "string", "description": "base64url, 65-byte uncompressed P-256 point" },
                        "auth": { "type": "string", "description": "base64url, 16 bytes" } } } } },
                "Subscription": { "type": "object", "required": ["id", "endpoint"], "properties": {
                    "id": { "type": "integer" }, "endpoint": { "type": "string" } } },
                "SubscriptionList": { "type": "object", "required": ["subscriptions"], "properties": {
                    "subscriptions": { "type": "array", "items": { "$ref": "#/components/schemas/Subscription" } } } },
                "Unsubscribe": { "type": "object", "required": ["endpoint"], "additionalProperties": false, "properties": {
                    "endpoint": { "type": "string" } } },
                "ProvidedItem": provided_item_schema(),
                "Provision": provision_schema(),
                "Records": records_schema(),
                "PreferencesInput": { "type": "object", "additionalProperties": false, "required": ["channels", "email_consent", "webpush_consent"], "properties": preference_fields(false) },
                // Not an allOf over PreferencesInput: its `additionalProperties` would refuse `saved`.
                "Preferences": { "type": "object", "required": ["channels", "email_consent", "webpush_consent", "saved"], "properties": preference_fields(true) }
            }
        },
        "paths": {
            "/api/notices": {
                "get": api_op("The reader's notices, newest first.", json!({ "200": ok_json("Notices.", "NoticeList") }))
            },
            "/api/notices/{key}": {
                "get": api_key_op("One notice with its message and recommended procedures (audited).", json!({
                    "200": ok_json("The notice.", "Notice"), "404": err("Missing or not the reader's.") }))
            },
            "/api/notices/{key}/read": {
                "post": api_key_op("Marks the notice read by this reader.", json!({
                    "204": { "description": "Marked." }, "404": err("Missing or not the reader's.") }))
            },
            "/api/drafts/{key}": {
                "get": api_key_op("The prefilled draft and its state (audited).", json!({
                    "200": ok_json("The draft.", "Draft"), "404": err("Missing or not the reader's.") }))
            },
            "/api/drafts/{key}/submit": {
                "post": {
                    "summary": "Submits the draft with corrections (audited, field names only).",
                    "security": [{ "bearer": [] }],
                    "parameters": [key_param(false)],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Submit" } } } },
                    "responses": authed(json!({
                        "200": ok_json("Submitted.", "Draft"),
                        "404": err("Missing or not the reader's."),
                        "409": err("Already submitted or declined."),
                        "422": err("A field that is not in the draft (named in `field`), or a bad value.") }))
                }
            },
            "/api/drafts/{key}/decline": {
                "post": api_key_op("Declines the procedure (audited).", json!({
                    "200": ok_json("Declined.", "Draft"), "404": err("Missing or not the reader's."),
                    "409": err("Already submitted or declined.") }))
            },
            "/api/push-subscriptions": {
                "get": api_op("The reader's web push subscriptions.", json!({ "200": ok_json("Subscriptions.", "SubscriptionList") })),
                "post": {
                    "summary": "Registers a browser's push subscription.",
                    "security": [{ "bearer": [] }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PushSubscription" } } } },
                    "responses": authed(json!({ "201": ok_json("Registered, or renewed for the same reader.", "Subscription"), "409": err("The endpoint is subscribed for another resident."), "422": err("Endpoint (a known push service, at most 2048 bytes) or keys (a P-256 point on the curve, 16 auth bytes) refused.") }))
                },
                "delete": {
                    "summary": "Removes the reader's subscription for an endpoint.",
                    "security": [{ "bearer": [] }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Unsubscribe" } } } },
                    "responses": authed(json!({ "204": { "description": "Removed." }, "404": err("No such subscription of the reader's."), "422": err("No JSON body (`Content-Type: application/json`), or not an `{endpoint}` object.") }))
                }
            },
            "/api/records": {
                "get": {
                    "summary": "The record of what was provided about the reader (or, with `for`, about someone they may read it for) to agencies: change events and data pulls, with the items by name and those withheld (audited).",
                    "security": [{ "bearer": [] }],
                    "parameters": [for_param()],
                    "responses": authed(json!({
                        "200": ok_json("The record.", "Records"),
                        "404": err("`for` names someone the reader may not read for, nobody, or is not a resident id (the same answer).") }))
                }
            },
            "/api/preferences": {
                "get": api_op("The reader's channel preferences and consents (the register's until saved here).", json!({ "200": ok_json("Preferences.", "Preferences") })),
                "put": {
                    "summary": "Saves the reader's preferences; delivery honours them from now on.",
                    "security": [{ "bearer": [] }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PreferencesInput" } } } },
                    "responses": authed(json!({ "200": ok_json("Saved.", "Preferences"), "404": err("The reader is not (or no longer) a living resident on the register."), "422": err("Bad input.") }))
                }
            },
            "/openapi.json": { "get": { "summary": "This document.", "tags": ["operations"], "responses": { "200": { "description": "OpenAPI 3.1.", "content": { "application/json": {} } } } } },
            "/health": { "get": { "summary": "Database reachable and every delivery worker running: `{status, database, workers: [{name, channel, state, failures?, idle_seconds?, reason?}]}`.", "tags": ["operations"], "responses": {
                "200": { "description": "Healthy.", "content": { "application/json": {} } },
                "503": { "description": "The database does not answer, or a delivery worker is failing (store errors, retrying), stuck (no progress for longer than its lease) or stopped.", "content": { "application/json": {} } } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics: HTTP requests and latency by route, delivery attempts by channel.", "tags": ["operations"], "responses": {
                "200": { "description": "Prometheus text format 0.0.4.", "content": { "text/plain": {} } },
                "401": { "description": "No metrics token (when one is configured), or a client on another machine (when none is)." } } } },
            "/": { "get": { "summary": "Redirects to the inbox.", "tags": ["pages"], "responses": { "303": { "description": "To /inbox." } } } },
            "/login": {
                "get": {
                    "summary": "The login page: its script posts a login link's token (`/login#token=…&next=…`, in the fragment, never sent) to `POST /login`. A token in the query is refused.",
                    "tags": ["pages"],
                    "security": [],
                    "responses": { "200": html("The login page."), "400": html("A token in the query: nobody is signed in.") } },
                "post": {
                    "summary": "Signs in with the identity provider's token (its form post, or the login page's): opens the portal's own session (HttpOnly SameSite=Strict cookie with a random id; idle timeout, lifetime, rotated) and redirects to `next` (a path on this site) or /inbox. A session cookie the browser had is ended.",
                    "tags": ["pages"],
                    "security": [],
                    "requestBody": { "required": true, "content": { "application/x-www-form-urlencoded": { "schema": { "type": "object", "properties": { "token": { "type": "string" }, "next": { "type": "string" } }, "required": ["token"] } } } },
                    "responses": { "303": { "description": "Signed in." }, "401": html("A bad or expired token: the login hint page.") } } },
            "/logout": { "post": form_post("Signs out: ends the session on the server and clears the cookie.", false) },
            "/assets/portal.css": { "get": {
                "summary": "The pages' stylesheet (no personal data; cacheable).",
                "tags": ["pages"],
                "security": [],
                "responses": { "200": { "description": "The stylesheet.", "content": { "text/css": { "schema": { "type": "string" } } } } } } },
            "/assets/login.js": { "get": {
                "summary": "The login page's script (no personal data; cacheable).",
                "tags": ["pages"],
                "security": [],
                "responses": { "200": { "description": "The script.", "content": { "text/javascript": { "schema": { "type": "string" } } } } } } },
            "/assets/push.js": { "get": {
                "summary": "The preferences page's script: subscribes the browser for notices and posts the subscription to `POST /preferences/push` (no personal data; cacheable).",
                "tags": ["pages"],
                "security": [],
                "responses": { "200": { "description": "The script.", "content": { "text/javascript": { "schema": { "type": "string" } } } } } } },
            "/sw.js": { "get": {
                "summary": "The service worker (root scope): shows a pushed notice's `title` and `body` and opens its `url`, a page of this site, on click. Revalidated on every update check.",
                "tags": ["pages"],
                "security": [],
                "responses": { "200": { "description": "The worker.", "content": { "text/javascript": { "schema": { "type": "string" } } } } } } },
            "/inbox": { "get": page("The reader's notices.", false) },
            "/notices/{key}": { "get": page("One notice (the link in e-mails and pushes); opening it marks it read.", true) },
            "/drafts/{key}": {
                "get": page("The draft as a form of its prefilled fields, or its confirmation.", true),
                "post": form_post("Submits the form's corrections (`action=submit`, fields as `field.NAME`) or declines (`action=decline`).", true)
            },
            "/records": { "get": {
                "summary": "情報の提供記録: what was provided about the reader (or, with `for`, about someone they may read it for) to agencies, by month, newest first (audited).",
                "tags": ["pages"],
                "security": [{ "session": [] }],
                "parameters": [for_param()],
                "responses": {
                    "200": html("The page."),
                    "401": html("Not signed in, or the session ended: the login hint page."),
                    "404": html("`for` names someone the reader may not read for, nobody, or is not a resident id (the same page)."),
                    "503": html("The session could not be checked (the database does not answer).") } } },
            "/preferences": {
                "get": page("Channel preferences and consents.", false),
                "post": form_post("Saves preferences.", false)
            },
            "/preferences/push": { "post": push_form_post(
                "Saves this browser's push subscription (the fields of `PushSubscription.toJSON()`, as the page's script fills them in) and, in the same step, consents to browser notifications and chooses them. Redirects to `/preferences?push=on`.",
                json!({ "endpoint": { "type": "string" }, "keys.p256dh": { "type": "string" }, "keys.auth": { "type": "string" } }),
            ) },
            "/preferences/push/unsubscribe": { "post": push_form_post(
                "Removes one of the reader's push subscriptions (the consent stays); one already gone is done too. Redirects to `/preferences?push=off`.",
                json!({ "endpoint": { "type": "string" } }),
            ) }
        }
    });
    // Apart, so that no one `json!` nests too deep for the macro.
    if let (Some(paths), Value::Object(more)) = (spec["paths"].as_object_mut(), sharing_paths()) {
        paths.extend(more);
    }
    spec
}
