//! DPoP proofs (RFC 9449): the private party that a resident shares data with proves, on
//! each request, that it holds the key its tokens are bound to. `verify` makes the checks of
//! RFC 9449 §4.3 that need nothing but the request: `typ`, an ES256 signature by the public
//! `jwk` of the header, `htm`, `htu`, `iat` and, at a protected resource, `ath`.
//!
//! Not here, and the caller's job: refusing a `jti` already seen within the `iat` window
//! (the caller keeps them in the store, §11.1), a server-provided `nonce` (§8), and, at a
//! protected resource, checking that the returned `jkt` is the one the access token is
//! bound to (`cnf.jkt`, §6).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How far a proof's `iat` may be from the server's clock, either way, in seconds.
pub const IAT_WINDOW: i64 = 60;
/// The longest `jti` accepted (the caller keeps them).
pub const MAX_JTI: usize = 256;

/// A proof that passed: the key it was made with and what the caller must still check.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    /// RFC 7638 thumbprint of `jwk` (SHA-256, base64url): what tokens are bound to.
    pub jkt: String,
    /// The public key of the proof's header.
    pub jwk: Value,
    /// To be refused when seen again (the caller's store).
    pub jti: String,
    pub iat: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("not a DPoP proof: {0}")]
    Malformed(&'static str),
    #[error("the proof's typ must be dpop+jwt")]
    Type,
    #[error("the proof's algorithm {0:?} is not accepted (ES256 only)")]
    Algorithm(String),
    #[error("the proof's jwk: {0}")]
    Key(&'static str),
    #[error("the proof's jwk carries a private key")]
    PrivateKey,
    #[error("the proof's signature does not verify with its jwk")]
    Signature,
    #[error("the proof's claims: {0}")]
    Claim(&'static str),
    #[error("the proof is for another HTTP method")]
    Method,
    #[error("the proof is for another URL")]
    Url,
    #[error("the proof's iat is more than {IAT_WINDOW} s from now")]
    IssuedAt,
    #[error("the proof's ath is not the hash of the access token")]
    AccessTokenHash,
}

fn member<'a>(jwk: &'a Value, name: &'static str) -> Result<&'a str, DpopError> {
    jwk.get(name).and_then(Value::as_str).ok_or(DpopError::Key(
        "a required member is missing or not a string",
    ))
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: its required members in
/// lexicographic order, no whitespace. EC, OKP and RSA keys.
pub fn thumbprint(jwk: &Value) -> Result<String, DpopError> {
    let kty = member(jwk, "kty")?;
    let members: &[&'static str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        _ => return Err(DpopError::Key("unsupported kty")),
    };
    let mut canonical = serde_json::Map::new();
    for name in members {
        canonical.insert((*name).to_owned(), Value::from(member(jwk, name)?));
    }
    // serde_json's map is ordered by key and serializes without whitespace.
    let text = Value::Object(canonical).to_string();
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

/// A proof for `method` `url` made with `key` at `iat` (Unix seconds), with `ath` when it
/// comes with `access_token`: what a client (the demo's party, tests, benchmarks) sends.
pub fn proof(
    key: &crate::SigningKey,
    method: &str,
    url: &str,
    iat: i64,
    jti: &str,
    access_token: Option<&str>,
) -> String {
    let mut claims = serde_json::json!({ "jti": jti, "htm": method, "htu": url, "iat": iat });
    if let Some(t) = access_token {
        claims["ath"] = Value::from(access_token_hash(t));
    }
    key.sign_with_jwk("dpop+jwt", &claims)
}

/// base64url(SHA-256(ASCII of the token)): a proof's `ath`.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

fn decode_part(part: &str) -> Result<Value, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed("a part is not base64url"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| DpopError::Malformed("a part is not JSON"))?;
    if !value.is_object() {
        return Err(DpopError::Malformed("a part is not a JSON object"));
    }
    Ok(value)
}

/// The URL without query and fragment, normalised (RFC 3986 §6.2.2–6.2.3 as the `url`
/// crate does it: scheme and host in lower case, the default port dropped, dot segments
/// removed, an empty path as `/`).
fn request_target(url: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    if u.cannot_be_a_base() || !matches!(u.scheme(), "https" | "http") {
        return None;
    }
    u.set_query(None);
    u.set_fragment(None);
    Some(u.to_string())
}

/// Checks the DPoP proof sent with a request (`method`, and `url` as the server is reached,
/// absolute) at the server's `now` (Unix seconds); `access_token` when the proof comes
/// with one, to a protected resource. Replay is not checked here: the caller refuses a
/// `jti` it has already seen within the window (see the module's documentation).
pub fn verify(
    proof: &str,
    method: &str,
    url: &str,
    now: i64,
    access_token: Option<&str>,
) -> Result<Proof, DpopError> {
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed("not a compact JWS of three parts"));
    };
    let header = decode_part(h)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::Type);
    }
    match header.get("alg").and_then(Value::as_str) {
        Some("ES256") => {}
        other => return Err(DpopError::Algorithm(other.unwrap_or("").to_owned())),
    }
    let jwk = header.get("jwk").ok_or(DpopError::Key("missing"))?;
    if !jwk.is_object() {
        return Err(DpopError::Key("not a JSON object"));
    }
    if jwk.get("d").is_some() {
        return Err(DpopError::PrivateKey);
    }
    if member(jwk, "kty")? != "EC" || member(jwk, "crv")? != "P-256" {
        return Err(DpopError::Key("not a P-256 key (ES256)"));
    }
    let key = DecodingKey::from_ec_components(member(jwk, "x")?, member(jwk, "y")?)
        .map_err(|_| DpopError::Key("not a point of P-256"))?;
    let signed = &proof[..h.len() + 1 + p.len()];
    // A signature that is not even base64url is as bad as one that does not verify.
    let ok = jsonwebtoken::crypto::verify(sig, signed.as_bytes(), &key, Algorithm::ES256)
        .unwrap_or(false);
    if !ok {
        return Err(DpopError::Signature);
    }

    let claims = decode_part(p)?;
    let text = |name: &'static str| claims.get(name).and_then(Value::as_str);
    let jti = text("jti").ok_or(DpopError::Claim("jti missing"))?;
    if jti.is_empty() || jti.len() > MAX_JTI {
        return Err(DpopError::Claim("jti empty or too long"));
    }
    if text("htm").ok_or(DpopError::Claim("htm missing"))? != method {
        return Err(DpopError::Method);
    }
    let htu = text("htu").ok_or(DpopError::Claim("htu missing"))?;
    let (Some(claimed), Some(actual)) = (request_target(htu), request_target(url)) else {
        return Err(DpopError::Url);
    };
    if claimed != actual {
        return Err(DpopError::Url);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(DpopError::Claim("iat missing or not an integer"))?;
    if (iat - now).abs() > IAT_WINDOW {
        return Err(DpopError::IssuedAt);
    }
    if let Some(token) = access_token {
        let ath = text("ath").ok_or(DpopError::AccessTokenHash)?;
        if ath != access_token_hash(token) {
            return Err(DpopError::AccessTokenHash);
        }
    }
    Ok(Proof {
        jkt: thumbprint(jwk)?,
        jwk: jwk.clone(),
        jti: jti.to_owned(),
        iat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000;
    const URL: &str = "https://exchange.example.lg.jp/share/v1/token";

    /// The public members of a key's JWK, as a client puts it in its proof.
    fn public(key: &SigningKey) -> Value {
        let j = key.public_jwk();
        json!({"kty": j["kty"], "crv": j["crv"], "x": j["x"], "y": j["y"]})
    }

    /// A proof signed by `key` with the given header and claims, made by hand.
    fn make(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{h}.{p}");
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.to_pem().as_bytes()).unwrap();
        let sig =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &encoding, Algorithm::ES256).unwrap();
        format!("{signed}.{sig}")
    }

    fn header(key: &SigningKey) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public(key)})
    }

    fn claims() -> Value {
        json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URL, "iat": NOW})
    }

    fn with(mut v: Value, name: &str, value: Value) -> Value {
        v[name] = value;
        v
    }

    #[test]
    fn a_good_proof_gives_its_key_and_jti() {
        let key = SigningKey::generate().unwrap();
        let proof = make(&key, &header(&key), &claims());
        let p = verify(&proof, "POST", URL, NOW + 5, None).unwrap();
        // Our kid is the RFC 7638 thumbprint too.
        assert_eq!(p.jkt, key.kid());
        assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
        assert_eq!(p.iat, NOW);
        assert_eq!(p.jwk, public(&key));
    }

    #[test]
    fn the_url_is_compared_without_query_and_fragment_and_normalised() {
        let key = SigningKey::generate().unwrap();
        let htu = "HTTPS://Exchange.Example.LG.JP:443/share/v1/token";
        let proof = make(&key, &header(&key), &with(claims(), "htu", json!(htu)));
        let at = format!("{URL}?x=1#f");
        verify(&proof, "POST", &at, NOW, None).unwrap();
        // The path is compared exactly (case matters there).
        let other = "https://exchange.example.lg.jp/share/v1/Token";
        assert_eq!(
            verify(&proof, "POST", other, NOW, None),
            Err(DpopError::Url)
        );
    }

    #[test]
    fn each_refusal() {
        let key = SigningKey::generate().unwrap();
        let cases: Vec<(&str, Value, Value, DpopError)> = vec![
            (
                "wrong typ",
                with(header(&key), "typ", json!("JWT")),
                claims(),
                DpopError::Type,
            ),
            (
                "no typ",
                json!({"alg": "ES256", "jwk": public(&key)}),
                claims(),
                DpopError::Type,
            ),
            (
                "HS256",
                with(header(&key), "alg", json!("HS256")),
                claims(),
                DpopError::Algorithm("HS256".into()),
            ),
            (
                "ES384",
                with(header(&key), "alg", json!("ES384")),
                claims(),
                DpopError::Algorithm("ES384".into()),
            ),
            (
                "private key in the header",
                with(header(&key), "jwk", with(public(&key), "d", json!("AAAA"))),
                claims(),
                DpopError::PrivateKey,
            ),
            (
                "no jwk",
                json!({"typ": "dpop+jwt", "alg": "ES256"}),
                claims(),
                DpopError::Key("missing"),
            ),
            (
                "wrong method",
                header(&key),
                with(claims(), "htm", json!("GET")),
                DpopError::Method,
            ),
            (
                "wrong URL",
                header(&key),
                with(
                    claims(),
                    "htu",
                    json!("https://evil.example/share/v1/token"),
                ),
                DpopError::Url,
            ),
            (
                "old iat",
                header(&key),
                with(claims(), "iat", json!(NOW - IAT_WINDOW - 1)),
                DpopError::IssuedAt,
            ),
            (
                "iat in the future",
                header(&key),
                with(claims(), "iat", json!(NOW + IAT_WINDOW + 1)),
                DpopError::IssuedAt,
            ),
            (
                "no jti",
                header(&key),
                json!({"htm": "POST", "htu": URL, "iat": NOW}),
                DpopError::Claim("jti missing"),
            ),
            (
                "a jti too long",
                header(&key),
                with(claims(), "jti", json!("j".repeat(MAX_JTI + 1))),
                DpopError::Claim("jti empty or too long"),
            ),
        ];
        for (what, h, c, want) in cases {
            let proof = make(&key, &h, &c);
            assert_eq!(verify(&proof, "POST", URL, NOW, None), Err(want), "{what}");
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let key = SigningKey::generate().unwrap();
        let h = URL_SAFE_NO_PAD.encode(with(header(&key), "alg", json!("none")).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims().to_string());
        assert_eq!(
            verify(&format!("{h}.{p}."), "POST", URL, NOW, None),
            Err(DpopError::Algorithm("none".into()))
        );
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        // The header names `key`, `other` signs.
        let proof = make(&other, &header(&key), &claims());
        assert_eq!(
            verify(&proof, "POST", URL, NOW, None),
            Err(DpopError::Signature)
        );
        // A claim changed after signing.
        let good = make(&key, &header(&key), &claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(with(claims(), "htm", json!("GET")).to_string());
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), "GET", URL, NOW, None),
            Err(DpopError::Signature)
        );
        assert!(matches!(
            verify("a.b", "POST", URL, NOW, None),
            Err(DpopError::Malformed(_))
        ));
    }

    #[test]
    fn ath_binds_the_proof_to_its_access_token() {
        let key = SigningKey::generate().unwrap();
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwYXJ0eSJ9.c2ln";
        let c = with(claims(), "ath", json!(access_token_hash(token)));
        let proof = make(&key, &header(&key), &c);
        verify(&proof, "POST", URL, NOW, Some(token)).unwrap();
        assert_eq!(
            verify(&proof, "POST", URL, NOW, Some("another.token.value")),
            Err(DpopError::AccessTokenHash)
        );
        // A proof without ath does not go with a token.
        let bare = make(&key, &header(&key), &claims());
        assert_eq!(
            verify(&bare, "POST", URL, NOW, Some(token)),
            Err(DpopError::AccessTokenHash)
        );
    }

    #[test]
    fn the_rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // Optional members do not count; EC uses crv, kty, x, y.
        let key = SigningKey::generate().unwrap();
        assert_eq!(thumbprint(&key.public_jwk()).unwrap(), key.kid());
        assert!(thumbprint(&json!({"kty": "oct", "k": "c2VjcmV0"})).is_err());
    }
}
