//! The municipality's signing key (ES256, P-256): it signs the agencies' access tokens and
//! the data they pull (JWS), and is published as a JSON Web Key Set so that an agency can
//! verify what it keeps as evidence. Rotation: the new key signs, the old ones stay published
//! (`previous`) until nothing they signed is still kept.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: not a P-256 private key in PKCS#8 PEM ({detail})")]
    Pem { what: String, detail: String },
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// One ES256 key with its `kid` (the RFC 7638 thumbprint of its public JWK).
#[derive(Clone)]
pub struct SigningKey {
    secret: p256::SecretKey,
    /// The public point's coordinates (base64url), computed once: every DPoP proof and JWKS
    /// names them, and a scalar multiplication each time cost as much as the signature.
    x: String,
    y: String,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

fn coordinates(secret: &p256::SecretKey) -> (String, String) {
    let point = secret.public_key().to_encoded_point(false);
    let x = URL_SAFE_NO_PAD.encode(point.x().expect("an uncompressed point has x"));
    let y = URL_SAFE_NO_PAD.encode(point.y().expect("an uncompressed point has y"));
    (x, y)
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
            // Almost every 32-byte string is a valid scalar; the rest are drawn again.
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                return Ok(Self::from_secret(secret));
            }
        }
    }

    fn from_secret(secret: p256::SecretKey) -> SigningKey {
        crate::jose::install();
        let (x, y) = coordinates(&secret);
        // RFC 7638: the required members in lexicographic order, no spaces.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a P-256 key encodes as PKCS#8");
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).expect("our own PEM parses");
        let decoding = DecodingKey::from_ec_components(&x, &y).expect("our own point parses");
        SigningKey {
            secret,
            x,
            y,
            kid,
            encoding,
            decoding,
        }
    }

    /// A key from PKCS#8 PEM (`what` names where it came from, for the error).
    pub fn from_pem(what: &str, pem: &str) -> Result<SigningKey, KeyError> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::Pem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Self::from_secret(secret))
    }

    /// The key as PKCS#8 PEM, to be kept by the operator (mode 0600).
    pub fn to_pem(&self) -> String {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a P-256 key encodes as PKCS#8")
            .to_string()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "use": "sig", "alg": "ES256",
        })
    }

    /// A compact JWS of `claims`, with `typ` in its header (`at+jwt`, or the pull's type).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("claims that serialize sign with a valid key")
    }

    /// A compact JWS of `claims` whose header carries the public key itself (`jwk`) instead
    /// of its `kid`: what a DPoP proof is.
    pub fn sign_with_jwk<T: Serialize>(&self, typ: &str, claims: &T) -> String {
        let jwk = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y });
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.jwk = Some(serde_json::from_value(jwk).expect("an EC public JWK"));
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("claims that serialize sign with a valid key")
    }

    #[cfg(test)]
    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The key that verifies what this one signed.
    pub fn verifier(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The keys the exchange signs with and publishes.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Signs everything new.
    pub current: SigningKey,
    /// Published for verification only, until what they signed has expired.
    pub previous: Vec<SigningKey>,
}

impl Keys {
    /// The JSON Web Key Set: the current key first, then the previous ones.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = std::iter::once(&self.current)
            .chain(&self.previous)
            .map(SigningKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_pem_and_verifies_what_it_signed() {
        let k = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem("test", &k.to_pem()).unwrap();
        assert_eq!(k.kid(), again.kid());
        let jws = again.sign(
            "JWT",
            &serde_json::json!({"sub": "x", "exp": 4102444800u64}),
        );
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&jws, k.verifier(), &v).expect("verifies");
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(k.kid()));
        let other = SigningKey::generate().unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&jws, other.verifier(), &v).is_err());
        assert_ne!(k.kid(), other.kid());
    }

    #[test]
    fn a_bad_pem_names_where_it_came_from() {
        let e = SigningKey::from_pem("config/exchange.pem", "not a key").unwrap_err();
        assert!(e.to_string().contains("config/exchange.pem"), "{e}");
    }
}
