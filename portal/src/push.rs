//! Checks on a browser's push subscription before it is stored: the keys the right sizes.
//! The endpoint rule (a known push service over https) is the web push channel's own
//! (`oshirase_adapters::check_endpoint`), so what the portal stores the channel will send to.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A subscription key that cannot be right, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("keys.{0} is not base64url")]
    NotBase64(&'static str),
    #[error("keys.p256dh must be an uncompressed P-256 public key (65 bytes, on the curve)")]
    P256dh,
    #[error("keys.auth must be 16 bytes")]
    Auth,
}

fn b64url(what: &'static str, s: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| KeyError::NotBase64(what))
}

/// `p256dh`: an uncompressed P-256 point (65 bytes, 0x04 first); `auth`: 16 bytes.
pub(crate) fn check_keys(p256dh: &str, auth: &str) -> Result<(), KeyError> {
    let p = b64url("p256dh", p256dh)?;
    // On the curve too: the message is encrypted to this key, and a point off the curve
    // (or the zero point) would only fail at every send.
    if p.len() != 65 || p[0] != 4 || p256::PublicKey::from_sec1_bytes(&p).is_err() {
        return Err(KeyError::P256dh);
    }
    if b64url("auth", auth)?.len() != 16 {
        return Err(KeyError::Auth);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        // The P-256 base point.
        let g = "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";
        let p = g.to_owned();
        let a = URL_SAFE_NO_PAD.encode([1u8; 16]);
        assert_eq!(check_keys(&p, &a), Ok(()));
        assert!(check_keys(&URL_SAFE_NO_PAD.encode([3u8; 65]), &a).is_err());
        assert!(check_keys(&p, &URL_SAFE_NO_PAD.encode([1u8; 15])).is_err());
        assert_eq!(check_keys("!!", &a), Err(KeyError::NotBase64("p256dh")));
        assert_eq!(check_keys(&p, "!!"), Err(KeyError::NotBase64("auth")));
    }
}
