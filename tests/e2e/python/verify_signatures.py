"""Verifies Eddy's outbound signatures with the official Standard Webhooks package.

Input (JSON file): {"secret": "whsec_...", "calls": [{"headers": {...}, "body": "..."}]}.
Every call must verify; the same call with a tampered body, and with a timestamp ten minutes
old (re-signed by nobody), must be rejected. Exits non-zero naming the first failure.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    webhook = Webhook(request["secret"])
    for index, call in enumerate(request["calls"]):
        headers = call["headers"]
        body = call["body"]
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError as error:
            print(f"call {index}: a genuine call did not verify: {error}")
            return 1
        try:
            webhook.verify(body + " ", headers)
            print(f"call {index}: a tampered body verified")
            return 1
        except WebhookVerificationError:
            pass
        stale = dict(headers)
        stale["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 600)
        try:
            webhook.verify(body, stale)
            print(f"call {index}: a stale timestamp verified")
            return 1
        except WebhookVerificationError:
            pass
    print(f"{len(request['calls'])} calls verified; tampered and stale copies rejected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
