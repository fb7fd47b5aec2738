"""Start the service, score three CDNOW customers over HTTP with a key, print them, show the
dashboard's address, save screenshots of its pages in both languages, stop it.

    python -m serving.smoke [--port P] [--tracking-uri URI] [--snapshot PATH | --dataset cdnow --as-of DAY]
                            [--screenshots DIR] [ID ...]

The end of ``make demo``: it uses the registry and the snapshot the demo just made (or, with
``--dataset``, builds the features from the log in the service, which the Reports page needs).
The keys are random ones made for this run (or ``WINBACK_API_KEYS``' first key when set): a
scorer key for the API and an admin key to sign in to the dashboard. Screenshots (Overview,
Win-back list, Customer, Reports, Model, in English and Traditional Chinese) go to
``out/screenshots/`` when Chromium is installed (``/usr/bin/chromium``).
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
    """Start the service, score a few customers, print the answer, stop; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m serving.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", default=list(DEFAULT_IDS), help="customer ids (default: 00001 00002 00003)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model-uri", default=None)
    parser.add_argument("--snapshot", type=Path, default=None)
    parser.add_argument("--dataset", choices=["cdnow"], default=None, help="build the features from this log instead")
    parser.add_argument("--as-of", default=None, help="the as-of day for --dataset (default: the log's last day)")
    parser.add_argument("--screenshots", type=Path, default=Path("out/screenshots"), help="where to save them")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /readyz")
    args = parser.parse_args(argv)

    from training.registry import resolve_tracking_uri

    existing = [k for k in os.environ.get("WINBACK_API_KEYS", "").split(",") if k.strip()]
    key = existing[0].strip() if existing else secrets.token_urlsafe(24)
    from serving.config import LogSource

    source = LogSource(dataset=args.dataset, as_of=args.as_of) if args.dataset else None
    env = service_env(args.tracking_uri or resolve_tracking_uri(None), args.model_uri,
                      args.snapshot.resolve() if args.snapshot else None, poll_seconds=0, log_source=source)
    admin = secrets.token_urlsafe(24)
    env["WINBACK_API_KEYS"] = ",".join(dict.fromkeys([key, *existing, f"admin:{admin}"]))
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
                print(f"without a key: HTTP {refused}")
                print(f"dashboard: {url}/ui/ (sign in with a viewer or admin key of WINBACK_API_KEYS)", flush=True)
                shots = save_screenshots(url, admin, args.screenshots, args.ids[0])
                if shots:
                    print(f"screenshots of the dashboard: {len(shots)} files in {args.screenshots}/")
                print("service stopped.")
        except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            print(f"smoke test failed: {exc}", file=sys.stderr)
            return 1
    return 0


PAGES = ("overview", "list", "customer", "reports", "model")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def save_screenshots(url: str, key: str, out: Path, customer_id: str) -> list[Path]:
    """Sign in with ``key`` and save ``<page>-<lang>.png`` of every dashboard page in both
    languages under ``out``; nothing (and a note) when Chromium or Playwright is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("no screenshots: playwright is not installed", file=sys.stderr)
        return []
    if not CHROMIUM.exists():
        print(f"no screenshots: no browser at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return []
    out.mkdir(parents=True, exist_ok=True)
    paths = {"overview": "/ui/", "list": "/ui/list", "customer": f"/ui/customer/{customer_id}",
             "reports": "/ui/reports", "model": "/ui/model"}
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for lang in ("en", "zh-TW"):
                context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.goto(f"/ui/signin?lang={lang}")
                page.fill("#key", key)
                page.click("#signin-form button[type=submit]")
                page.wait_for_load_state()
                for name in PAGES:
                    page.goto(paths[name])
                    page.wait_for_load_state("networkidle")
                    page.evaluate("document.fonts.ready.then(() => true)")
                    page.wait_for_timeout(300)                  # Plotly's transitions
                    saved.append(out / f"{name}-{lang}.png")
                    page.screenshot(path=str(saved[-1]), full_page=True)
                context.close()
        finally:
            browser.close()
    return saved


def print_table(body: dict) -> None:
    """Print the scored customers of a ``/score`` answer as a table."""
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
