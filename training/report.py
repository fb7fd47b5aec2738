"""``winback report``: the marketer's reports as one self-contained HTML file to mail."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from features.build import build_features, parse_cutoff
from features.output import atomic_path, check_output_path
from features.reference import FeatureReference
from features.settings import FeatureSettings
from features.transactions import TransactionLog
from serving.dashboard.reports import TEXT, report_html
from training.batch import current_umask


def write_report(log: TransactionLog, as_of: dt.date | str, out: Path, lang: str = "en",
                 currency: str | None = None, model_uri: str | None = None, *,
                 tracking_uri: str | None = None, reference: FeatureReference | None = None,
                 settings: FeatureSettings | None = None) -> Path:
    """Write the reports as of ``as_of`` to ``out`` (``.html`` or ``.htm``), atomically.

    The document is built in memory first and written through a temporary file renamed onto
    ``out``, so a failure never leaves half a file. The tier calendar reads features built from
    the log with a model's feature reference (its tier thresholds, review period and time
    zone: the tiers the service's snapshot has), taken from ``reference`` or loaded from
    ``model_uri`` (e.g. ``models:/winback@champion``); without either, with ``settings``
    (default :class:`FeatureSettings`). Money is shown in ``currency`` (default NT$ in zh-TW,
    else $).
    """
    out = check_output_path(out, (".html", ".htm"))
    if lang not in TEXT:
        raise ValueError(f"--lang must be one of {', '.join(TEXT)}, got {lang!r}")
    day = parse_cutoff(as_of)
    if reference is None and model_uri:
        from training.registry import load_scorer

        reference = load_scorer(model_uri, tracking_uri)[0].reference_
    if reference is not None:
        tiers = reference.settings.tiers
        features = build_features(log, day, reference=reference)
    else:
        tiers = (settings or FeatureSettings()).tiers
        features = build_features(log, day, settings=settings or FeatureSettings())
    document = report_html(log, day, lang, currency, features, tiers=tiers)
    with atomic_path(out) as tmp:
        tmp.write_text(document, encoding="utf-8")
        os.chmod(tmp, 0o666 & ~current_umask())          # as any file a program creates, not mkstemp's 0600
    return out
