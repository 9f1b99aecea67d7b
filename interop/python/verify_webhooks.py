"""Verify deliveries the broker made with the Standard Webhooks reference
library, as a receiver would.

Reads WEBHOOK_DELIVERIES (a JSON file: a list of {"headers": {...},
"body": "..."}) and the endpoint's secret from WEBHOOK_SECRET (never an
argument). Prints one line per check; exits non-zero on any failure.
"""

import json
import os
import sys

from standardwebhooks import Webhook, WebhookVerificationError


def main() -> int:
    wh = Webhook(os.environ["WEBHOOK_SECRET"])
    with open(os.environ["WEBHOOK_DELIVERIES"], encoding="utf-8") as f:
        deliveries = json.load(f)
    if not deliveries:
        print("no deliveries to verify")
        return 1
    for d in deliveries:
        payload = wh.verify(d["body"], d["headers"])
        print(f"verified {d['headers']['webhook-id']} {payload['type']}")
        tampered = d["body"].replace('"seq":', '"seq": 1', 1)
        try:
            wh.verify(tampered, d["headers"])
        except WebhookVerificationError:
            print(f"tampered {d['headers']['webhook-id']} refused")
        else:
            print(f"tampered {d['headers']['webhook-id']} ACCEPTED")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
