"""`bentoml build` makes a Bento that is the whole service: built from ``bentofile.yaml``, then
served from the Bento in a Python environment where the project is not installed.

That environment is a fresh virtualenv whose site-packages links every entry of ours except the
project's editable install (as ``tests/models/test_pyfunc.py`` loads the MLflow model without
it), started in an empty folder: the only ``serving`` it can import is the one in the Bento. The
test checks that, signs in to the dashboard (templates, static files and font come from the
Bento), and scores a customer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
from serving_support import KEYS

from serving.run import free_port, stop, wait_ready

PROJECT = Path(__file__).resolve().parents[2]
PACKAGES = ("features", "models", "crm", "training", "serving")
VIEWER = "viewer-key-for-the-bento"


def _python_without_the_project(root: Path) -> Path:
    """A virtualenv at ``root`` with our third-party libraries and not the project; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name.startswith(("__editable__", "winback-", "winback.")) or entry.name in PACKAGES:
            continue                                    # the editable install: finder, .pth, metadata
        (site / entry.name).symlink_to(entry)
    return python


def _project_files() -> set[str]:
    """Every file of the four packages, as the service may load it (modules and data alike)."""
    return {str(p.relative_to(PROJECT)) for name in PACKAGES for p in (PROJECT / name).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_built_bento_serves_the_api_and_the_dashboard_without_the_project(store, tmp_path):
    home = tmp_path / "bentoml"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("WINBACK_", "MLFLOW_", "BENTOML_", "PYTHON"))}
    base.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True")
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"],
                           env=base, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    src = next(home.glob("bentos/winback/*/src"))
    packed = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    missing = _project_files() - packed
    assert not missing, f"bentofile.yaml leaves out {sorted(missing)}"
    assert {"serving/dashboard/templates/signin.html", "serving/dashboard/static/app.css",
            "crm/static/noto-sans-tc-subset.woff2", "crm/triggers_default.toml"} <= packed
    assert not any("__pycache__" in p for p in packed)

    python = _python_without_the_project(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([str(python), "-c", "import bentoml, lightgbm, mlflow\n"
                            "try:\n import serving\nexcept ImportError:\n print('absent')\n"
                            "else:\n print(serving.__file__)"],
                           env=base, cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.strip() == "absent", probe.stdout + probe.stderr[-2000:]

    # configuration is environment only: registry, snapshot, keys
    env = {**base, "WINBACK_TRACKING_URI": store["tracking_uri"], "WINBACK_SNAPSHOT": str(store["snapshot"]),
           "WINBACK_API_KEYS": f"{KEYS[0]},viewer:{VIEWER}", "WINBACK_POLL_SECONDS": "0"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "bento.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(python), "-m", "bentoml", "serve", tag, "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, cwd=elsewhere, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(url, process, 240, log)
            scored = httpx.post(f"{url}/score", json={"customer_ids": ["00001"], "reasons": True},
                                headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=60)
            with httpx.Client(base_url=url, timeout=60) as browser:
                signin = browser.get("/ui/signin")
                csrf = re.search(r'name="csrf" value="([^"]+)"', signin.text).group(1)
                signed = browser.post("/ui/signin", data={"key": VIEWER, "csrf": csrf, "lang": "en"})
                overview = browser.get("/ui/")
                customer = browser.get("/ui/customer/00001")
                font = browser.get("/ui/static/fonts/noto-sans-tc-subset.woff2")
                css = browser.get("/ui/static/app.css")
        finally:
            stop(process)
    assert scored.status_code == 200, scored.text
    (answer,) = scored.json()["customers"]
    assert answer["status"] == "ok" and answer["customer_id"] == "00001" and answer["reasons"]
    assert scored.json()["model_version"] == str(store["version"])
    assert signin.status_code == 200 and 'id="signin-form"' in signin.text
    assert signed.status_code == 303 and signed.headers["location"].endswith("/ui/"), signed.text[:500]
    assert overview.status_code == 200 and "<html" in overview.text.lower()
    assert customer.status_code == 200 and "00001" in customer.text
    assert font.status_code == 200 and font.content[:4] == b"wOF2"
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    # the worker imported the service from the Bento: Python cached what it compiled there
    cached = {str(p.relative_to(src)) for p in src.rglob("__pycache__/*.pyc")}
    for module in ("serving/__pycache__/service", "serving/dashboard/__pycache__/app",
                   "models/__pycache__/scorer", "features/__pycache__/build"):
        assert any(c.startswith(module + ".") for c in cached), (module, sorted(cached)[:20])
