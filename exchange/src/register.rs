//! Registering an agency: every problem with its registration found at once, then the store
//! row and its streams, then the endpoint verification handshake (events go only to an
//! endpoint that proved it is the agency's).

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};

use chrono::{DateTime, FixedOffset};
use oshirase_adapters::webhook::{check_endpoint, WebhookSender};
use oshirase_engine::purposes::Exchange;
use oshirase_store::{AgencySpec, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("agency {id}: {}", .problems.join("; "))]
    Invalid { id: String, problems: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a registration ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Pull only: no endpoint.
    NoEndpoint,
    Verified,
    /// Registered, but its events wait until the endpoint answers the handshake.
    Failed(String),
}

const NO_PURPOSE: &str = "it holds no purpose";

/// What every client of the API (an agency, a core system, a party) must be: an id of 1 to
/// 64 of a-z, 0-9 and '-', and a JSON Web Key Set of public keys.
pub(crate) fn client_problems(id: &str, client_jwks: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        problems.push("the id must be 1 to 64 of a-z, 0-9 and '-'".to_owned());
    }
    match serde_json::from_str::<JwkSet>(client_jwks) {
        Err(e) => problems.push(format!("the client keys are not a JSON Web Key Set: {e}")),
        Ok(set) if set.keys.is_empty() => problems.push("the client key set has no key".to_owned()),
        Ok(set) => {
            for k in &set.keys {
                if matches!(k.algorithm, AlgorithmParameters::OctetKey(_)) {
                    problems.push(
                        "the client key set holds a symmetric key: register public keys only"
                            .to_owned(),
                    );
                }
            }
        }
    }
    problems
}

/// Every problem with a registration, at once.
pub fn check(spec: &AgencySpec, exchange: &Exchange) -> Vec<String> {
    let mut problems = client_problems(&spec.id, &spec.client_jwks);
    if spec.name.trim().is_empty() {
        problems.push("the name is empty".to_owned());
    }
    if spec.purposes.is_empty() {
        problems.push(NO_PURPOSE.to_owned());
    }
    for p in &spec.purposes {
        if exchange.purpose(p).is_none() {
            let known: Vec<&str> = exchange.purposes.keys().map(|k| k.as_str()).collect();
            problems.push(format!(
                "purpose {p:?} is not in the purpose table (known: {})",
                known.join(", ")
            ));
        }
    }
    let latest = exchange.dictionary.version();
    if spec.dictionary_version == 0 || spec.dictionary_version > latest {
        problems.push(format!(
            "dictionary version {} does not exist (1 to {latest})",
            spec.dictionary_version
        ));
    }
    if let Some(e) = &spec.endpoint {
        match url::Url::parse(e) {
            Err(err) => problems.push(format!("the endpoint is not a URL: {err}")),
            Ok(u) => {
                if let Err(why) = check_endpoint(&u) {
                    problems.push(why);
                }
            }
        }
    }
    problems
}

/// Registers (or updates) an agency and verifies its endpoint.
pub async fn register(
    store: &Store,
    exchange: &Exchange,
    sender: &WebhookSender,
    spec: &AgencySpec,
    source: &str,
    now: DateTime<FixedOffset>,
) -> Result<Verification, RegisterError> {
    let problems = check(spec, exchange);
    if !problems.is_empty() {
        return Err(RegisterError::Invalid {
            id: spec.id.clone(),
            problems,
        });
    }
    store.upsert_agency(spec, now).await?;
    verify(store, sender, spec, source, now).await
}

/// Registers (or updates) a core system (基幹業務システム, docs/office.md): a client of the
/// agencies' API that reads and sets the applications of `rules`. It may hold no purpose (it
/// is told no changes), and it pulls, so it has no endpoint to verify.
pub async fn register_office_client(
    store: &Store,
    exchange: &Exchange,
    spec: &AgencySpec,
    rules: &[oshirase_engine::ids::RuleId],
    now: DateTime<FixedOffset>,
) -> Result<(), RegisterError> {
    let mut problems = check(spec, exchange);
    if spec.purposes.is_empty() {
        problems.retain(|p| p != NO_PURPOSE);
    }
    if rules.is_empty() {
        problems.push("a core system must name the procedures whose applications it reads".into());
    }
    if !problems.is_empty() {
        return Err(RegisterError::Invalid {
            id: spec.id.clone(),
            problems,
        });
    }
    store.upsert_agency(spec, now).await?;
    store.set_office_client(&spec.id, rules, now).await?;
    Ok(())
}

/// The handshake for an agency whose endpoint is not verified yet.
pub async fn verify(
    store: &Store,
    sender: &WebhookSender,
    spec: &AgencySpec,
    source: &str,
    now: DateTime<FixedOffset>,
) -> Result<Verification, RegisterError> {
    let Some(endpoint) = &spec.endpoint else {
        return Ok(Verification::NoEndpoint);
    };
    let url = url::Url::parse(endpoint).map_err(|e| RegisterError::Invalid {
        id: spec.id.clone(),
        problems: vec![format!("the endpoint is not a URL: {e}")],
    })?;
    match sender.verify_endpoint(&url, source, now).await {
        Ok(()) => {
            store.mark_agency_verified(&spec.id, now).await?;
            Ok(Verification::Verified)
        }
        Err(why) => Ok(Verification::Failed(why)),
    }
}
