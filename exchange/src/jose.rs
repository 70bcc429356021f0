//! The signature backend of `jsonwebtoken` for this process: ES256, which signs and verifies
//! every token, assertion, DPoP proof and extract here, by `ring`; every other algorithm (the
//! parties' and agencies' RS256, PS256, EdDSA and ES384 client assertions, the portal's HS256)
//! by RustCrypto as before. RustCrypto's P-256 took about 0.28 ms a signature or a
//! verification; a token request does three, so they were most of the token endpoint's time
//! (docs/performance.md).

use std::sync::LazyLock;

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Makes this backend the process's, unless one is in use already (then that one stays: it
/// is as correct, only slower). The binary calls it first thing; the exchange's keys call it
/// too, for tests and benchmarks.
pub fn install() {
    let _ = PROVIDER.install_default();
}

struct Es256Signer(EcdsaKeyPair);

impl signature::Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .0
            .sign(&rng, msg)
            .map_err(|_| signature::Error::new())?;
        Ok(sig.as_ref().to_vec())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct Es256Verifier(Vec<u8>);

impl signature::Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if *alg != Algorithm::ES256 {
        return (rust_crypto::DEFAULT_PROVIDER.signer_factory)(alg, key);
    }
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes(), &rng)
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    Ok(Box::new(Es256Signer(pair)))
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *alg != Algorithm::ES256 {
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    }
    // An EC public key: the uncompressed SEC1 point, which is what ring reads. A key of
    // another family is refused as RustCrypto refuses it.
    match key.try_get_as_bytes() {
        Ok(point) if key.family() == jsonwebtoken::AlgorithmFamily::Ec => {
            Ok(Box::new(Es256Verifier(point.to_vec())))
        }
        _ => Err(ErrorKind::InvalidKeyFormat.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ring's signatures verify with RustCrypto and the other way round, and a changed
    /// message or signature fails with both: the two backends agree on ES256.
    #[test]
    fn ring_and_rustcrypto_agree_on_es256() {
        install();
        assert!(
            std::ptr::eq(CryptoProvider::try_get_default().unwrap(), &*PROVIDER),
            "this backend is the process's"
        );
        let key = crate::SigningKey::generate().unwrap();
        let msg = b"header.payload";
        let ours = jsonwebtoken::crypto::sign(msg, key.encoding(), Algorithm::ES256).unwrap();
        let theirs = {
            let s =
                (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&Algorithm::ES256, key.encoding())
                    .unwrap();
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                s.try_sign(msg).unwrap(),
            )
        };
        let rc = |sig: &str, m: &[u8]| {
            let v =
                (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::ES256, key.verifier())
                    .unwrap();
            let raw =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            v.verify(m, &raw).is_ok()
        };
        let ring_ok = |sig: &str, m: &[u8]| {
            jsonwebtoken::crypto::verify(sig, m, key.verifier(), Algorithm::ES256).unwrap()
        };
        assert!(rc(&ours, msg), "RustCrypto verifies ring's signature");
        assert!(
            ring_ok(&theirs, msg),
            "ring verifies RustCrypto's signature"
        );
        assert!(ring_ok(&ours, msg));
        assert!(!ring_ok(&ours, b"header.payloaD"));
        assert!(!rc(&ours, b"header.payloaD"));
        let mut bent = ours.into_bytes();
        bent[10] = if bent[10] == b'A' { b'B' } else { b'A' };
        assert!(!ring_ok(std::str::from_utf8(&bent).unwrap(), msg));
    }
}
