#!/usr/bin/env python3
"""Checks one captured webhook request with libraries that share no code with ours.

    python3 verify_webhook.py CAPTURE.json

CAPTURE.json holds {"headers": {name: value}, "body_b64": "...", "whsec": "whsec_...",
"whpk": "whpk_..."}. The `v1` signature must pass the PyPI `standardwebhooks` package
(`Webhook(secret).verify(body, headers)`, which also checks the timestamp against this
machine's clock), the `v1a` signature must pass `cryptography`'s Ed25519 verification with the
key built from the `whpk_` text, and both must fail for the body with one byte changed.

Exit status: 0 verified; 1 a check failed (the reason on stderr); 3 a package is missing.
"""

import base64
import importlib.metadata
import json
import sys

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    import cryptography
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as e:
    print(f"verify_webhook.py: {e}: run scripts/services/agency.sh", file=sys.stderr)
    sys.exit(3)


def fail(why):
    print(f"verify_webhook.py: {why}", file=sys.stderr)
    sys.exit(1)


def b64(text):
    # The spec's base64 is the standard alphabet; tolerate missing padding as the package does.
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def v1a_signatures(header):
    return [b64(entry[len("v1a,"):]) for entry in header.split(" ") if entry.startswith("v1a,")]


def v1a_verifies(key, headers, body):
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for sig in v1a_signatures(headers["webhook-signature"]):
        try:
            key.verify(sig, signed)
            return True
        except InvalidSignature:
            pass
    return False


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        capture = json.load(f)
    headers = {k.lower(): v for k, v in capture["headers"].items()}
    body = base64.b64decode(capture["body_b64"])
    tampered = bytearray(body)
    tampered[len(tampered) // 2] ^= 0x01
    tampered = bytes(tampered)

    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if name not in headers:
            fail(f"the request has no {name} header")
    if not headers["webhook-timestamp"].isdigit():
        fail(f"webhook-timestamp {headers['webhook-timestamp']!r} is not integer unix seconds")

    # v1: HMAC-SHA256 with the whsec_ secret, checked by the reference package.
    wh = Webhook(capture["whsec"])
    try:
        wh.verify(body, headers)
    except WebhookVerificationError as e:
        fail(f"standardwebhooks refuses the v1 signature: {e}")
    try:
        wh.verify(tampered, headers)
        fail("standardwebhooks accepts the v1 signature for a tampered body")
    except WebhookVerificationError:
        pass

    # v1a: Ed25519; the whpk_ text is the raw 32-byte public key in base64.
    whpk = capture["whpk"]
    if not whpk.startswith("whpk_"):
        fail("the public key does not start with whpk_")
    raw = b64(whpk[len("whpk_"):])
    if len(raw) != 32:
        fail(f"the whpk_ key is {len(raw)} bytes, not 32")
    key = Ed25519PublicKey.from_public_bytes(raw)
    if not v1a_signatures(headers["webhook-signature"]):
        fail("the webhook-signature header has no v1a signature")
    if not v1a_verifies(key, headers, body):
        fail("cryptography refuses the v1a signature")
    if v1a_verifies(key, headers, tampered):
        fail("cryptography accepts the v1a signature for a tampered body")

    print(
        f"verified: v1 with standardwebhooks {importlib.metadata.version('standardwebhooks')}, "
        f"v1a with cryptography {cryptography.__version__}; a tampered body fails both"
    )


if __name__ == "__main__":
    main()
