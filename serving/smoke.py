"""Start the service, score three CDNOW customers over HTTP with a key, print them, stop it.

    python -m serving.smoke [--port P] [--tracking-uri URI] [--snapshot PATH] [ID ...]

The end of ``make demo``: it uses the registry and the snapshot the demo just made. The key is
a random one made for this run (or ``WINBACK_API_KEYS``' first key when set).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

import httpx

from serving.run import free_port, running, service_env

DEFAULT_IDS = ("00001", "00002", "00003")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", default=list(DEFAULT_IDS), help="customer ids (default: 00001 00002 00003)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model-uri", default=None)
    parser.add_argument("--snapshot", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /readyz")
    args = parser.parse_args(argv)

    from training.registry import resolve_tracking_uri

    existing = [k for k in os.environ.get("WINBACK_API_KEYS", "").split(",") if k.strip()]
    key = existing[0].strip() if existing else secrets.token_urlsafe(24)
    env = service_env(args.tracking_uri or resolve_tracking_uri(None), args.model_uri,
                      args.snapshot.resolve() if args.snapshot else None, poll_seconds=0)
    env["WINBACK_API_KEYS"] = ",".join(dict.fromkeys([key, *existing]))
    port = args.port or free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env.setdefault("BENTOML_HOME", str(Path(tmp) / "bentoml"))
        log = Path(tmp) / "service.log"
        print(f"starting the scoring service on http://127.0.0.1:{port} ...", flush=True)
        try:
            with running(env, port=port, timeout=args.timeout, log=log) as url:
                headers = {"Authorization": f"Bearer {key}"}
                refused = httpx.post(f"{url}/score", json={"customer_ids": args.ids}).status_code
                answer = httpx.post(f"{url}/score", json={"customer_ids": args.ids}, headers=headers, timeout=60)
                answer.raise_for_status()
                print_table(answer.json())
                print(f"without a key: HTTP {refused}; service stopped.")
        except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            print(f"smoke test failed: {exc}", file=sys.stderr)
            return 1
    return 0


def print_table(body: dict) -> None:
    print(f"model {body['model_name']} version {body['model_version']}, scores as of {body['as_of']}")
    header = f"{'customer':<10} {'churn':>6} {'P(alive)':>8} {'next purchase':<13} {'win-back':<10} " \
             f"{'CLV 12m':>8} {'at risk':>8}  segment / tier"
    print(header)
    print("-" * len(header))
    for c in body["customers"]:
        if c["status"] != "ok":
            print(f"{c['customer_id']:<10} {c['status']}")
            continue
        print(f"{c['customer_id']:<10} {c['churn_probability']:>6.1%} {c['p_alive']:>8.2f} "
              f"{c['next_purchase_date'] or '—':<13} {c['winback_date'] or '—':<10} {c['clv_12m']:>8.2f} "
              f"{c['value_at_risk']:>8.2f}  {c['segment']} / {c['tier']}")
        if c.get("reasons"):
            print(f"{'':<10} why: {'; '.join(c['reasons'])}")


if __name__ == "__main__":
    sys.exit(main())
