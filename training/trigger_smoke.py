"""Run the day's triggers into a local webhook receiver and print what arrived: the end of ``make demo``.

    python -m training.trigger_smoke [--as-of 1998-06-30] [--state-uri sqlite:///out/triggers.db]

The receiver listens on 127.0.0.1 (a free port), checks every batch's HMAC signature with a
random secret made for this run, and counts the events per rule. The triggers run through the
real CLI (``winback triggers run --dataset cdnow ...``) against the champion in ``mlruns/``.
Run it twice: the second run records and sends nothing new (exactly once).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from crm.delivery import SIGNATURE_HEADER, verify_signature


def receiver(secret: str) -> tuple[ThreadingHTTPServer, Counter]:
    """A webhook receiver on 127.0.0.1 that verifies signatures and counts events per rule."""
    received: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:                                   # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not verify_signature(secret, self.headers.get(SIGNATURE_HEADER), body):
                self.send_response(401)
                self.end_headers()
                return
            for event in json.loads(body)["events"]:
                received[event["rule"]] += 1
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:                        # quiet: the demo prints a table
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def main(argv: list[str] | None = None) -> int:
    """Run the day's triggers into a local receiver and print what arrived; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.trigger_smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default="1998-06-30")
    parser.add_argument("--state-uri", default="sqlite:///out/triggers.db")
    parser.add_argument("--out-dir", default="out/triggers")
    args = parser.parse_args(argv)

    from training.cli import app

    secret = secrets.token_hex(24)
    os.environ["WINBACK_WEBHOOK_SECRET"] = secret
    server, received = receiver(secret)
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    print(f"webhook receiver on {url} (signatures checked)", flush=True)
    try:
        app(["triggers", "run", "--dataset", "cdnow", "--as-of", args.as_of, "--state-uri", args.state_uri,
             "--out-dir", args.out_dir, "--webhook-url", url], standalone_mode=False)
    finally:
        server.shutdown()
    print("received by the webhook: " + (", ".join(f"{rule} {n:,}" for rule, n in sorted(received.items()))
                                          or "nothing new (already sent: exactly once)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
