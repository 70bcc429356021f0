#!/usr/bin/env python3
"""A core system (基幹業務システム), written with libraries that share no code with oshirase:
`authlib` for the token (client_credentials, private_key_jwt with the ES256 client key) and
`requests` for the calls. The Rust test (exchange/tests/office.rs) runs it once:

    python3 office_client.py --client=ID --api=http://127.0.0.1:PORT --key=client.pem \
        --kid=KID --now=UNIX --after=N --plan='{"2": [["received"], ["returned", "…"]]}'

It polls `GET /office/v1/applications?after=…&limit=2` until a page is empty, checking that
the numbers it is given increase, then sets the statuses of the plan in order (seq: a list
of [status, message?]), and prints one JSON object: {"seqs": [...], "next_after": N,
"answers": [{"seq", "status", "http", "body"}]}. With `--portal=URL --resident-token=JWT
--notice=KEY` it then reads that notice from the resident's portal API, as the resident, and
adds what the portal says of the application as "portal" (tests/office_service.rs).

Exit status 3 when a package is missing: run scripts/services/agency.sh.
"""

import argparse
import json
import sys
import urllib.parse

try:
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import ECKey
except ImportError as e:  # pragma: no cover - the Rust test reports this
    print(f"office_client.py: {e}: run scripts/services/agency.sh", file=sys.stderr, flush=True)
    sys.exit(3)

NOW = {"now": None}


class ClientKeyJWT(PrivateKeyJWT):
    """A short-lived assertion dated by the test's clock; a fresh claims dict each time."""

    def sign(self, auth, token_endpoint):
        now = int(NOW["now"])
        self.claims = {"iat": now, "exp": now + 120}
        return super().sign(auth, token_endpoint)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--client", required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--kid", required=True)
    p.add_argument("--now", type=float, required=True)
    p.add_argument("--after", type=int, default=0)
    p.add_argument("--plan", default="{}")
    p.add_argument("--portal")
    p.add_argument("--resident-token")
    p.add_argument("--notice")
    args = p.parse_args()
    NOW["now"] = args.now
    api = args.api.rstrip("/")
    token_url = api + "/agency/v1/token"
    with open(args.key, "rb") as f:
        key = ECKey.import_key(f.read())
    session = OAuth2Session(args.client, key, token_endpoint_auth_method="private_key_jwt")
    session.register_client_auth_method(ClientKeyJWT(token_url, headers={"kid": args.kid}, alg="ES256"))
    session.fetch_token(token_url, grant_type="client_credentials")

    seqs = []
    after = args.after
    while True:
        r = session.get(f"{api}/office/v1/applications", params={"after": after, "limit": 2}, timeout=10)
        if r.status_code != 200:
            raise SystemExit(f"office_client.py: poll answered {r.status_code}: {r.text}")
        page = r.json()
        got = [a["seq"] for a in page["applications"]]
        if not got:
            break
        if got != sorted(got) or got[0] <= after:
            raise SystemExit(f"office_client.py: numbers out of order after {after}: {got}")
        seqs.extend(got)
        after = page["next_after"]

    answers = []
    for seq, steps in json.loads(args.plan).items():
        for step in steps:
            body = {"status": step[0]}
            if len(step) > 1:
                body["message"] = step[1]
            r = session.post(f"{api}/office/v1/applications/{seq}/status", json=body, timeout=10)
            answers.append({"seq": int(seq), "status": step[0], "http": r.status_code, "body": r.json()})
    report = {"seqs": seqs, "next_after": after, "answers": answers}
    if args.portal:
        key = urllib.parse.quote(args.notice, safe="")
        r = session.get(
            f"{args.portal.rstrip('/')}/api/notices/{key}",
            headers={"Authorization": f"Bearer {args.resident_token}"},
            timeout=10,
            withhold_token=True,
        )
        if r.status_code != 200:
            raise SystemExit(f"office_client.py: the portal answered {r.status_code}: {r.text}")
        report["portal"] = r.json().get("application_status")
    print(json.dumps(report, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
