"""Benchmark the classical models: distinct-row weighted fits against lifetimes, and scoring speed.

Usage
-----
::

    .venv/bin/python benchmarks/bench_models.py --customers 1000000 --seed 42 \\
        [--skip-lifetimes-above N] [--models bg,mbg,pareto,gg]
    .venv/bin/python benchmarks/bench_models.py --tiny      # 2,000 customers, seconds (tests)

For every model it times, in the same run,

* our fit: validation, collapse to distinct histories, then our own likelihood (terms of the
  frequency alone summed per distinct frequency) maximised by L-BFGS-B with an analytic
  gradient (BG/NBD, MBG/NBD; central differences for Pareto/NBD); Gamma-Gamma still goes
  through ``lifetimes`` on distinct rows with weights;
* ``lifetimes`` fitting every customer row directly (no weights), unless ``--customers``
  exceeds ``--skip-lifetimes-above`` (printed as ``skipped``); the ratio is lifetimes / ours;

and, for each purchase model, the scoring throughput of P(alive), expected purchases in
30/90/365 days, P(purchase within 7/30/90 days) and the 12-month discounted CLV (with the
Gamma-Gamma model) over all simulated customers.

Simulated data
--------------
A BG/NBD summary in days, drawn with numpy only (no loop over customers) from the CDNOW
estimates of Fader, Hardie & Lee (2005) converted to days (r = 0.243, alpha = 4.414 * 7,
a = 0.793, b = 2.426) and the Gamma-Gamma estimates of Fader & Hardie (2013)
(p = 6.25, q = 3.74, gamma = 15.44):

1. ``T`` (days since the first purchase) is uniform on the whole days 0..729;
2. purchase rate lambda ~ Gamma(r, rate alpha), dropout probability p ~ Beta(a, b);
3. N ~ Poisson(lambda * T) purchase opportunities fall in (0, T]; the customer drops out
   after the J-th repeat purchase, J ~ Geometric(p), so ``frequency = min(N, J)``;
4. given N, the purchase times are uniform order statistics on (0, T], so the last observed
   one is ``T * Beta(x, N - x + 1)``; ``recency`` is that time floored to a whole day
   (0 when ``frequency`` is 0);
5. spend: nu ~ Gamma(q, rate gamma), the mean of x Gamma(p, rate nu) transaction values is
   Gamma(p * x, rate nu * x); ``monetary_value`` is it rounded to cents (at least 0.01),
   0 for customers without repeat purchase.

Whole-day ``recency`` and ``T`` make histories repeat, as in a real daily summary; the speed-up
of the weighted fit is the ratio of customers to distinct histories.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import parse_args as parse_sized_args  # noqa: E402
from measure import peak_rss, print_load

from models.clv import (  # noqa: E402
    BetaGeoModel,
    ClassicalModel,
    GammaGammaModel,
    ModifiedBetaGeoModel,
    ParetoNBDModel,
    PurchaseModel,
)
from models.clv.data import distinct_rows
from models.clv.fitting import fit_lifetimes

TRUE_PURCHASE = {"r": 0.243, "alpha": 4.414 * 7, "a": 0.793, "b": 2.426}
TRUE_SPEND = {"p": 6.25, "q": 3.74, "gamma": 15.44}
OBSERVATION_DAYS = 730
HISTORY = ["frequency", "recency", "T"]
MODELS: dict[str, type[ClassicalModel]] = {
    "bg": BetaGeoModel,
    "mbg": ModifiedBetaGeoModel,
    "pareto": ParetoNBDModel,
    "gg": GammaGammaModel,
}
LABELS = {"bg": "BG/NBD", "mbg": "MBG/NBD", "pareto": "Pareto/NBD", "gg": "Gamma-Gamma"}


def simulate_summary(n_customers: int, seed: int) -> pd.DataFrame:
    """Simulate a daily BG/NBD + Gamma-Gamma RFM summary (see the module docstring)."""
    rng = np.random.default_rng(seed)
    T = rng.integers(0, OBSERVATION_DAYS, n_customers).astype(np.float64)
    rate = rng.gamma(TRUE_PURCHASE["r"], 1 / TRUE_PURCHASE["alpha"], n_customers)
    dropout = np.clip(rng.beta(TRUE_PURCHASE["a"], TRUE_PURCHASE["b"], n_customers), 1e-12, 1.0)
    opportunities = rng.poisson(rate * T)
    frequency = np.minimum(opportunities, rng.geometric(dropout))
    repeat = frequency > 0
    x, n = frequency[repeat], opportunities[repeat]
    recency = np.zeros(n_customers)
    recency[repeat] = np.floor(T[repeat] * rng.beta(x, n - x + 1))
    scale = rng.gamma(TRUE_SPEND["q"], 1 / TRUE_SPEND["gamma"], int(repeat.sum()))
    monetary_value = np.zeros(n_customers)
    mean_spend = rng.gamma(TRUE_SPEND["p"] * x, 1 / (scale * x))
    monetary_value[repeat] = np.maximum(np.round(mean_spend, 2), 0.01)
    columns = {"frequency": frequency.astype(np.float64), "recency": recency, "T": T}
    return pd.DataFrame({**columns, "monetary_value": monetary_value})


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def fit_every_row_with_lifetimes(cls: type[ClassicalModel], summary: pd.DataFrame) -> dict[str, float]:
    """Lifetimes on every customer row, no weights, same options as our fit."""
    if cls is GammaGammaModel:
        repeat = summary[summary["frequency"] > 0]
        fitted = fit_lifetimes(
            "GammaGammaFitter", 0.0, repeat["frequency"], repeat["monetary_value"], q_constraint=True
        )
        return {"p": fitted["p"], "q": fitted["q"], "gamma": fitted["v"]}
    options = {"initial_params": np.ones(4)} if cls is ParetoNBDModel else {}   # our fixed start
    return fit_lifetimes(cls._fitter_name, 0.0, *(summary[c].to_numpy() for c in HISTORY), **options)


def max_relative_difference(ours: dict[str, float], theirs: dict[str, float]) -> float:
    return max(abs(ours[k] - theirs[k]) / abs(theirs[k]) for k in ours)


def fit_distinct_rows_with_lifetimes(cls: type[ClassicalModel], summary: pd.DataFrame) -> dict[str, float]:
    """The previous implementation: lifetimes on the distinct histories with their counts as weights."""
    rows, weights = distinct_rows({c: summary[c].to_numpy() for c in HISTORY})
    options = {"initial_params": np.ones(4)} if cls is ParetoNBDModel else {}
    return fit_lifetimes(cls._fitter_name, 0.0, *(rows[c] for c in HISTORY), weights=weights, **options)


def bench_fit(key: str, summary: pd.DataFrame, run_lifetimes: bool) -> tuple[list[str], ClassicalModel]:
    cls = MODELS[key]
    columns = ["frequency", "monetary_value"] if cls is GammaGammaModel else HISTORY
    rows = summary[summary["frequency"] > 0] if cls is GammaGammaModel else summary
    n_distinct = len(distinct_rows({c: rows[c].to_numpy() for c in columns})[1])
    ours_seconds, model = timed(lambda: cls().fit(summary))
    line = [LABELS[key], f"{len(rows):,}", f"{n_distinct:,}", f"{ours_seconds:.2f}"]
    if run_lifetimes and cls is not GammaGammaModel:
        old_seconds, _ = timed(lambda: fit_distinct_rows_with_lifetimes(cls, summary))
        line += [f"{old_seconds:.2f}", f"{old_seconds / ours_seconds:.1f}x"]
    else:
        line += ["-", "-"]
    if run_lifetimes:
        their_seconds, params = timed(lambda: fit_every_row_with_lifetimes(cls, summary))
        line += [f"{their_seconds:.2f}", f"{their_seconds / ours_seconds:.1f}x",
                 f"{max_relative_difference(model.params_, params):.1e}"]
    else:
        line += ["skipped", "-", "-"]
    return line, model


def score_everything(purchases: PurchaseModel, spend: GammaGammaModel, summary: pd.DataFrame) -> None:
    purchases.predict_p_alive(summary)
    for days in (30, 90, 365):
        purchases.predict_expected_purchases(summary, days)
    for days in (7, 30, 90):
        purchases.predict_prob_purchase_within(summary, days)
    spend.predict_clv(purchases, summary, months=12, annual_discount_rate=0.10)


def print_table(header: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        print("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="simulated customers")
    parser.add_argument("--seed", type=int, default=42, help="seed of the simulation")
    parser.add_argument("--skip-lifetimes-above", type=int, default=None, metavar="N",
                        help="do not fit lifetimes on every row when there are more than N customers")
    parser.add_argument("--models", default="bg,mbg,pareto,gg",
                        help="comma-separated subset of bg, mbg, pareto, gg")
    args = parse_sized_args(parser, argv, tiny={"customers": 2000})
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keys = [k for k in MODELS if k in args.models.split(",")]
    import lifetimes  # noqa: F401  (import cost outside every timing)

    print_load("at start")
    seconds, summary = timed(lambda: simulate_summary(args.customers, args.seed))
    print(f"simulated {args.customers:,} customers (seed {args.seed}) in {seconds:.2f} s; "
          f"{int((summary['frequency'] > 0).sum()):,} repeat buyers")
    run_lifetimes = args.skip_lifetimes_above is None or args.customers <= args.skip_lifetimes_above

    print("\nfit (seconds; old = lifetimes on distinct rows with weights, the previous implementation;"
          " ratios = their seconds / ours)")
    fitted: dict[str, ClassicalModel] = {}
    lines = []
    for key in keys:
        line, fitted[key] = bench_fit(key, summary, run_lifetimes)
        lines.append(line)
        print("  " + " | ".join(line), flush=True)
    print()
    header = ["model", "rows", "distinct rows", "ours s", "old s", "old/ours", "lifetimes s",
              "lifetimes/ours", "max rel param diff"]
    print_table(header, lines)

    print("\nfitted vs simulated parameters")
    truths = {"bg": TRUE_PURCHASE, "gg": TRUE_SPEND}
    for key in keys:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in fitted[key].params_.items())
        truth = truths.get(key)
        suffix = f"   (true: {', '.join(f'{k}={v:.4g}' for k, v in truth.items())})" if truth else ""
        print(f"  {LABELS[key]}: {shown}{suffix}")

    spend = fitted.get("gg") or GammaGammaModel().fit(summary)
    print("\nscoring all customers: p_alive + E[purchases 30/90/365 d] + P(buy within 7/30/90 d)"
          " + 12-month CLV")
    lines = []
    for key in keys:
        if key == "gg":
            continue
        seconds, _ = timed(lambda model=fitted[key]: score_everything(model, spend, summary))
        lines.append([LABELS[key], f"{seconds:.2f}", f"{args.customers / seconds:,.0f}"])
    print_table(["model", "seconds", "customers/s"], lines)
    print(f"\npeak resident memory: {peak_rss() / 2**30:.1f} GiB")
    print_load("at end")


if __name__ == "__main__":
    main()
