//! The data a resident shares with a private party, as an SD-JWT (RFC 9901) of the SD-JWT VC
//! kind (`typ: dc+sd-jwt`): signed by the municipality, every item selectively disclosable,
//! bound to the party's key (`cnf.jwk`, the key of its DPoP proofs). The party (the holder)
//! presents it onwards with only the disclosures it chooses and its own key-binding JWT; we
//! issue without one.
//!
//! Each item is a Disclosure `base64url(["<salt>", "<item code>", <value>])` with a fresh
//! 128-bit salt, and only its digest, `base64url(SHA-256(<the Disclosure's ASCII>))`, is in
//! the signed payload (`_sd`, sorted so that the order says nothing of the items).

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::SigningKey;

/// The JOSE header's `typ` (SD-JWT VC).
pub const TYP: &str = "dc+sd-jwt";
/// The digests' hash (`_sd_alg`), named as in the IANA Named Information registry.
pub const SD_ALG: &str = "sha-256";
/// Bytes of randomness in each salt (RFC 9901 §9.3 recommends at least 128 bits).
const SALT_BYTES: usize = 16;

/// Claim names an item may not take: SD-JWT's own (§4.2.1), the SD-JWT VC claims that must
/// stay in clear, and the other claims of our payload (a Disclosure may not repeat one).
const RESERVED: &[&str] = &[
    "_sd",
    "...",
    "_sd_alg",
    "iss",
    "sub",
    "iat",
    "nbf",
    "exp",
    "vct",
    "vct#integrity",
    "cnf",
    "status",
];

/// What to issue.
#[derive(Debug, Clone)]
pub struct Issue<'a> {
    /// `iss`: the municipality's URL.
    pub issuer: &'a str,
    /// `vct`, e.g. `urn:oshirase:resident-extract:1`.
    pub vct: &'a str,
    /// `sub`: a pseudonym for the party, never the register's id.
    pub subject_pseudonym: Option<&'a str>,
    /// Each one selectively disclosable: (item code as the claim name, value).
    pub items: &'a [(String, Value)],
    /// The party's public key (from its DPoP proof), as `cnf.jwk`.
    pub holder_jwk: &'a Value,
    pub issued_at: i64,
    pub expires_at: i64,
    /// (`idx`, `uri`) in a status list: `status: {status_list: {idx, uri}}`.
    pub status: Option<(u64, &'a str)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdJwtError {
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("item {0:?} has a reserved claim name")]
    Reserved(String),
    #[error("item {0:?} is given twice")]
    Duplicate(String),
    #[error("the holder's key must be a public JWK (an object with kty and no d)")]
    HolderKey,
    #[error("expires_at must be after issued_at")]
    Validity,
    #[error("not an SD-JWT: {0}")]
    Malformed(&'static str),
    #[error("the issuer's signature: {0}")]
    Signature(&'static str),
    #[error("expired")]
    Expired,
    #[error("a disclosure's digest is not in _sd: {0:?}")]
    Undisclosed(String),
    #[error("a key-binding JWT is present; this verifies an issued SD-JWT, not a presentation")]
    KeyBinding,
}

/// One Disclosure: the exact string given (its digest is over that string) and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Disclosure {
    pub encoded: String,
    pub digest: String,
    pub salt: String,
    pub name: String,
    pub value: Value,
}

/// An SD-JWT split up and decoded, the signature not checked (see `verify`).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The issuer-signed JWT.
    pub jwt: String,
    pub header: Value,
    pub payload: Value,
    pub disclosures: Vec<Disclosure>,
    /// The key-binding JWT of a presentation, if any.
    pub key_binding: Option<String>,
}

/// base64url(SHA-256(ASCII of `text`)): a Disclosure's digest, a KB-JWT's `sd_hash`.
pub fn digest(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

/// Issues `spec` signed by `key`: `<issuer-signed JWT>~<Disclosure>~…~`.
pub fn issue(key: &SigningKey, spec: &Issue) -> Result<String, SdJwtError> {
    if spec.expires_at <= spec.issued_at {
        return Err(SdJwtError::Validity);
    }
    let jwk = spec.holder_jwk;
    if !jwk.get("kty").is_some_and(Value::is_string) || jwk.get("d").is_some() {
        return Err(SdJwtError::HolderKey);
    }
    let mut names = BTreeSet::new();
    for (name, _) in spec.items {
        if RESERVED.contains(&name.as_str()) {
            return Err(SdJwtError::Reserved(name.clone()));
        }
        if !names.insert(name.as_str()) {
            return Err(SdJwtError::Duplicate(name.clone()));
        }
    }
    // All the salts in one call to the random source.
    let mut random = vec![0u8; SALT_BYTES * spec.items.len()];
    getrandom::fill(&mut random).map_err(|e| SdJwtError::Random(e.to_string()))?;

    let mut disclosures = Vec::with_capacity(spec.items.len());
    let mut digests = Vec::with_capacity(spec.items.len());
    for ((name, value), salt) in spec.items.iter().zip(random.chunks_exact(SALT_BYTES)) {
        let salt = URL_SAFE_NO_PAD.encode(salt);
        let array = serde_json::to_string(&(salt, name, value)).expect("a JSON value serializes");
        let encoded = URL_SAFE_NO_PAD.encode(array);
        digests.push(digest(&encoded));
        disclosures.push(encoded);
    }
    digests.sort_unstable();

    let mut payload = Map::new();
    payload.insert("iss".into(), json!(spec.issuer));
    if let Some(sub) = spec.subject_pseudonym {
        payload.insert("sub".into(), json!(sub));
    }
    payload.insert("iat".into(), json!(spec.issued_at));
    payload.insert("exp".into(), json!(spec.expires_at));
    payload.insert("vct".into(), json!(spec.vct));
    payload.insert("cnf".into(), json!({ "jwk": jwk }));
    if let Some((idx, uri)) = spec.status {
        payload.insert(
            "status".into(),
            json!({"status_list": {"idx": idx, "uri": uri}}),
        );
    }
    payload.insert("_sd_alg".into(), json!(SD_ALG));
    payload.insert("_sd".into(), json!(digests));

    let jwt = key.sign(TYP, &Value::Object(payload));
    let mut out = String::with_capacity(
        jwt.len() + disclosures.iter().map(|d| d.len() + 1).sum::<usize>() + 1,
    );
    out.push_str(&jwt);
    out.push('~');
    for d in &disclosures {
        out.push_str(d);
        out.push('~');
    }
    Ok(out)
}

fn decode_json(part: &str) -> Result<Value, SdJwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| SdJwtError::Malformed("a part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| SdJwtError::Malformed("a part is not JSON"))
}

fn disclosure(encoded: &str) -> Result<Disclosure, SdJwtError> {
    let Value::Array(mut a) = decode_json(encoded)? else {
        return Err(SdJwtError::Malformed("a disclosure is not a JSON array"));
    };
    // Only object properties ([salt, name, value]): we disclose no array elements.
    if a.len() != 3 {
        return Err(SdJwtError::Malformed(
            "a disclosure is not [salt, name, value]",
        ));
    }
    let value = a.pop().expect("three elements");
    let (Some(Value::String(name)), Some(Value::String(salt))) = (a.pop(), a.pop()) else {
        return Err(SdJwtError::Malformed(
            "a disclosure's salt or name is not a string",
        ));
    };
    Ok(Disclosure {
        encoded: encoded.to_owned(),
        digest: digest(encoded),
        salt,
        name,
        value,
    })
}

/// Splits an SD-JWT (or SD-JWT+KB) and decodes its parts. Nothing is verified.
pub fn parse(sd_jwt: &str) -> Result<Parsed, SdJwtError> {
    let mut parts: Vec<&str> = sd_jwt.split('~').collect();
    if parts.len() < 2 {
        return Err(SdJwtError::Malformed("no ~ after the issuer-signed JWT"));
    }
    let last = parts.pop().expect("at least two parts");
    let key_binding = (!last.is_empty()).then(|| last.to_owned());
    let jwt = parts.remove(0);
    let mut segments = jwt.split('.');
    let (Some(h), Some(p), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(SdJwtError::Malformed(
            "the issuer-signed JWT is not a compact JWS",
        ));
    };
    let header = decode_json(h)?;
    let payload = decode_json(p)?;
    if !header.is_object() || !payload.is_object() {
        return Err(SdJwtError::Malformed("a JWT part is not a JSON object"));
    }
    let disclosures = parts
        .into_iter()
        .map(|d| {
            if d.is_empty() {
                Err(SdJwtError::Malformed("an empty disclosure"))
            } else {
                disclosure(d)
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Parsed {
        jwt: jwt.to_owned(),
        header,
        payload,
        disclosures,
        key_binding,
    })
}

/// What a verified SD-JWT says: the signed payload and the disclosed items, in the order
/// of the disclosures.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub payload: Value,
    pub claims: Vec<(String, Value)>,
}

/// Verifies an SD-JWT as issued (no key-binding JWT), as its holder would on receipt: the
/// issuer's ES256 signature by the key of `jwks` (a JWK Set) named by `kid`, `typ`, `exp`
/// after `now`, `_sd_alg`, and every disclosure's digest in `_sd`, once.
pub fn verify(sd_jwt: &str, jwks: &Value, now: i64) -> Result<Verified, SdJwtError> {
    let parsed = parse(sd_jwt)?;
    if parsed.key_binding.is_some() {
        return Err(SdJwtError::KeyBinding);
    }
    let header = &parsed.header;
    if header.get("typ").and_then(Value::as_str) != Some(TYP) {
        return Err(SdJwtError::Malformed("typ is not dc+sd-jwt"));
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(SdJwtError::Signature("alg is not ES256"));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let jwk = jwks
        .get("keys")
        .and_then(Value::as_array)
        .and_then(|keys| {
            keys.iter()
                .find(|k| kid.is_some() && k.get("kid").and_then(Value::as_str) == kid)
        })
        .ok_or(SdJwtError::Signature("no key of the set has the kid"))?;
    let coordinate = |name| jwk.get(name).and_then(Value::as_str).unwrap_or("");
    let key = DecodingKey::from_ec_components(coordinate("x"), coordinate("y"))
        .map_err(|_| SdJwtError::Signature("the key is not a P-256 point"))?;
    let (signed, sig) = parsed.jwt.rsplit_once('.').expect("a compact JWS has dots");
    let ok = jsonwebtoken::crypto::verify(sig, signed.as_bytes(), &key, Algorithm::ES256)
        .unwrap_or(false);
    if !ok {
        return Err(SdJwtError::Signature("does not verify"));
    }
    let payload = parsed.payload;
    match payload.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now => {}
        _ => return Err(SdJwtError::Expired),
    }
    if payload.get("_sd_alg").and_then(Value::as_str) != Some(SD_ALG) {
        return Err(SdJwtError::Malformed("_sd_alg is not sha-256"));
    }
    let sd: BTreeSet<&str> = payload
        .get("_sd")
        .and_then(Value::as_array)
        .ok_or(SdJwtError::Malformed("no _sd array"))?
        .iter()
        .map(|d| {
            d.as_str()
                .ok_or(SdJwtError::Malformed("a digest is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let mut seen = BTreeSet::new();
    let mut claims = Vec::with_capacity(parsed.disclosures.len());
    for d in parsed.disclosures {
        if !sd.contains(d.digest.as_str()) {
            return Err(SdJwtError::Undisclosed(d.name));
        }
        if !seen.insert(d.digest.clone()) {
            return Err(SdJwtError::Malformed("a disclosure is given twice"));
        }
        if RESERVED.contains(&d.name.as_str()) || payload.get(&d.name).is_some() {
            return Err(SdJwtError::Malformed(
                "a disclosure repeats a claim in clear",
            ));
        }
        claims.push((d.name, d.value));
    }
    Ok(Verified { payload, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn items() -> Vec<(String, Value)> {
        vec![
            ("shimei".into(), json!("山田 花子")),
            ("jusho".into(), json!("東京都千代田区霞が関1-1")),
            ("seinengappi".into(), json!("1990-04-01")),
            ("setai".into(), json!({"members": 3, "head": false})),
        ]
    }

    fn issue_for(key: &SigningKey, holder: &SigningKey, items: &[(String, Value)]) -> String {
        let jwk = holder.public_jwk();
        issue(
            key,
            &Issue {
                issuer: "https://city.example.lg.jp",
                vct: "urn:oshirase:resident-extract:1",
                subject_pseudonym: Some("p-7f3a"),
                items,
                holder_jwk: &jwk,
                issued_at: NOW,
                expires_at: NOW + 600,
                status: Some((42, "https://city.example.lg.jp/status/1")),
            },
        )
        .unwrap()
    }

    #[test]
    fn digests_match_and_items_are_only_in_disclosures() {
        let key = SigningKey::generate().unwrap();
        let holder = SigningKey::generate().unwrap();
        let items = items();
        let sd_jwt = issue_for(&key, &holder, &items);
        assert!(sd_jwt.ends_with('~'));
        let p = parse(&sd_jwt).unwrap();
        assert_eq!(p.key_binding, None);
        assert_eq!(p.header["typ"], TYP);
        assert_eq!(p.header["alg"], "ES256");
        assert_eq!(p.header["kid"], key.kid());
        let sd: Vec<&str> = p.payload["_sd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let mut sorted = sd.clone();
        sorted.sort_unstable();
        assert_eq!(sd, sorted, "the digests are sorted");
        assert_eq!(sd.len(), items.len());
        for (d, (name, value)) in p.disclosures.iter().zip(&items) {
            assert_eq!(d.digest, digest(&d.encoded));
            assert!(sd.contains(&d.digest.as_str()));
            assert_eq!((&d.name, &d.value), (name, value));
            assert_eq!(URL_SAFE_NO_PAD.decode(&d.salt).unwrap().len(), SALT_BYTES);
        }
        // Neither a name nor a value is in the signed payload in clear.
        let payload = p.payload.to_string();
        for (name, value) in &items {
            assert!(!payload.contains(name.as_str()), "{name} in clear");
            let v = value.to_string();
            assert!(!payload.contains(v.trim_matches('"')), "{v} in clear");
        }
        assert_eq!(p.payload["iss"], "https://city.example.lg.jp");
        assert_eq!(p.payload["sub"], "p-7f3a");
        assert_eq!(p.payload["iat"], NOW);
        assert_eq!(p.payload["exp"], NOW + 600);
        assert_eq!(p.payload["_sd_alg"], "sha-256");
        assert_eq!(p.payload["cnf"]["jwk"], holder.public_jwk());
        assert_eq!(p.payload["status"]["status_list"]["idx"], 42);
    }

    #[test]
    fn the_same_data_twice_has_other_salts_and_digests() {
        let key = SigningKey::generate().unwrap();
        let holder = SigningKey::generate().unwrap();
        let a = parse(&issue_for(&key, &holder, &items())).unwrap();
        let b = parse(&issue_for(&key, &holder, &items())).unwrap();
        for (x, y) in a.disclosures.iter().zip(&b.disclosures) {
            assert_eq!(x.value, y.value);
            assert_ne!(x.salt, y.salt);
            assert_ne!(x.digest, y.digest);
        }
    }

    #[test]
    fn the_signature_verifies_with_the_public_jwk() {
        let key = SigningKey::generate().unwrap();
        let holder = SigningKey::generate().unwrap();
        let sd_jwt = issue_for(&key, &holder, &items());
        let jwt = sd_jwt.split('~').next().unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
        assert_eq!(data.claims["vct"], "urn:oshirase:resident-extract:1");

        let jwks = json!({"keys": [key.public_jwk()]});
        let ok = verify(&sd_jwt, &jwks, NOW + 1).unwrap();
        assert_eq!(ok.claims, items());
        assert_eq!(verify(&sd_jwt, &jwks, NOW + 600), Err(SdJwtError::Expired));
        let others = json!({"keys": [SigningKey::generate().unwrap().public_jwk()]});
        assert!(matches!(
            verify(&sd_jwt, &others, NOW),
            Err(SdJwtError::Signature(_))
        ));
        // A disclosure made up by someone else is not among the digests.
        let forged = URL_SAFE_NO_PAD.encode(r#"["c2FsdA","shimei","別人"]"#);
        let (head, _) = sd_jwt.split_once('~').unwrap();
        let tampered = format!("{head}~{forged}~");
        assert_eq!(
            verify(&tampered, &jwks, NOW),
            Err(SdJwtError::Undisclosed("shimei".into()))
        );
        // Only some disclosures: still valid (that is what selective disclosure is).
        let some: Vec<&str> = sd_jwt.split('~').take(3).collect();
        let fewer = format!("{}~", some.join("~"));
        assert_eq!(verify(&fewer, &jwks, NOW).unwrap().claims.len(), 2);
    }

    fn spec<'a>(items: &'a [(String, Value)], jwk: &'a Value) -> Issue<'a> {
        Issue {
            issuer: "https://city.example.lg.jp",
            vct: "urn:oshirase:resident-extract:1",
            subject_pseudonym: None,
            items,
            holder_jwk: jwk,
            issued_at: NOW,
            expires_at: NOW + 60,
            status: None,
        }
    }

    #[test]
    fn what_may_not_be_issued() {
        let key = SigningKey::generate().unwrap();
        let jwk = SigningKey::generate().unwrap().public_jwk();
        let exp = [("exp".to_owned(), json!(1))];
        assert_eq!(
            issue(&key, &spec(&exp, &jwk)),
            Err(SdJwtError::Reserved("exp".into()))
        );
        let twice = [("a".to_owned(), json!(1)), ("a".to_owned(), json!(2))];
        assert_eq!(
            issue(&key, &spec(&twice, &jwk)),
            Err(SdJwtError::Duplicate("a".into()))
        );
        let one = [("a".to_owned(), json!(1))];
        let private = json!({"kty": "EC", "d": "x"});
        assert_eq!(
            issue(&key, &spec(&one, &private)),
            Err(SdJwtError::HolderKey)
        );
        let mut backwards = spec(&one, &jwk);
        backwards.expires_at = NOW;
        assert_eq!(issue(&key, &backwards), Err(SdJwtError::Validity));
        // No status, no sub: neither claim appears.
        let p = parse(&issue(&key, &spec(&one, &jwk)).unwrap()).unwrap();
        assert!(p.payload.get("status").is_none() && p.payload.get("sub").is_none());
    }
}
