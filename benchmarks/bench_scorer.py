"""Scoring throughput of the whole WinbackScorer from a feature table, vs lifetimes alone.

    python benchmarks/bench_scorer.py [--customers 1000000] [--seed 42] [--fit-customers N]
    python benchmarks/bench_scorer.py --tiny     # 2,000 rows, fitted on 3,000 CDNOW customers (tests)

Fits a scorer on the real CDNOW log (``--fit-customers``: only its first N customers; 6 origins of
90-day labels before 1997-12-31), then builds
a feature table of N customers by resampling CDNOW's 1997-12-31 feature rows with new ids
(seeded), and times, in one run:

* compiling the LightGBM trees with lleaves (:mod:`models.ml.forest`), once per loaded scorer,
  printed apart (a batch job or service pays it at load; ``score`` would otherwise pay it on
  its first batch of 200,000 tree rows or more);
* ``scorer.score(table, as_of, reasons=False)``: every output (churn, P(alive), expected
  purchases, next-purchase distribution and dates, CLV, win-back policy);
* the same with reasons for the top 1,000 by value at risk;
* lifetimes' own BG/NBD + Gamma-Gamma calls for P(alive), expected purchases and CLV on the
  same rows: what a user would otherwise run for the classical part alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import parse_args, print_load  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="feature rows scored")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fit-customers", type=int, default=None, metavar="N",
                        help="fit on CDNOW's first N customers only (default: all 23,570)")
    args = parse_args(parser, argv, tiny={"customers": 2000, "fit_customers": 3000})

    from features import TransactionLog, build_features, labelled_features, load_cdnow, prepare
    from features.cdnow import CDNOW_COLUMNS
    from models.scorer import WinbackScorer

    print_load("at start")
    raw = load_cdnow()
    if args.fit_customers:
        raw = raw[raw["customer_id"].astype(int) <= args.fit_customers]
    log = TransactionLog.from_frame(raw, CDNOW_COLUMNS)
    cutoff, horizon = pd.Timestamp("1997-12-31"), 90
    calibration = cutoff - pd.Timedelta(days=horizon)
    origins = [calibration - pd.Timedelta(days=15 * k) for k in range(6, 0, -1)]
    started = time.perf_counter()
    _, _, reference = prepare(log, calibration)           # the model's feature contract, for every origin
    train = pd.concat([labelled_features(log, o, horizon, reference) for o in origins])
    scorer = WinbackScorer(horizon_days=horizon).fit(train, labelled_features(log, calibration, horizon, reference),
                                                     reference)
    print(f"fitted on {raw['customer_id'].nunique():,} CDNOW customers in {time.perf_counter() - started:.1f} s "
          f"(next purchase: {scorer.next_purchase_method_})")

    base = build_features(log, cutoff, reference=scorer.reference_)
    rng = np.random.default_rng(args.seed)
    table = base.iloc[rng.integers(0, len(base), args.customers)].reset_index(drop=True)
    table["customer_id"] = [f"C{i:08d}" for i in range(len(table))]

    t = time.perf_counter()
    compiled = [model.compile_trees() for model in (scorer.churn_model_, scorer.hazard_model_)
                if model is not None]
    print(f"compiled the trees for batch scoring in {time.perf_counter() - t:.2f} s, once per loaded "
          f"scorer (lleaves: {'yes' if all(compiled) else 'no, LightGBM predicts'})")

    rows = []
    t = time.perf_counter()
    scores = scorer.score(table, cutoff, reasons=False)
    ours = time.perf_counter() - t
    rows.append(("winback scorer, every output", ours))
    t = time.perf_counter()
    scorer.score(table, cutoff, reasons=1000)
    rows.append(("same + reasons for the top 1,000", time.perf_counter() - t))

    from lifetimes import BetaGeoFitter, GammaGammaFitter

    bg = BetaGeoFitter()
    bg.params_ = pd.Series(scorer.purchase_model_.params_)
    bg.predict = bg.conditional_expected_number_of_purchases_up_to_time   # set by fit() in lifetimes
    gg = GammaGammaFitter()
    p = scorer.spend_model_.params_
    gg.params_ = pd.Series({"p": p["p"], "q": p["q"], "v": p["gamma"]})
    t = time.perf_counter()
    bg.conditional_probability_alive(table["frequency"], table["recency"], table["T"])
    for days in (30, 90, 365):
        bg.conditional_expected_number_of_purchases_up_to_time(days, table["frequency"], table["recency"], table["T"])
    gg.customer_lifetime_value(bg, table["frequency"], table["recency"], table["T"],
                               table["monetary_value"].where(table["frequency"] > 0, 1.0),
                               time=12, freq="D", discount_rate=0.0079)
    rows.append(("lifetimes: P(alive) + 3 horizons + CLV only", time.perf_counter() - t))

    print(f"\n{args.customers:,} customers (resampled CDNOW feature rows, seed {args.seed})")
    print(f"{'what':<46} {'seconds':>8} {'customers/s':>12} {'vs lifetimes':>13}")
    lifetimes_s = rows[-1][1]
    for name, seconds in rows:
        print(f"{name:<46} {seconds:>8.2f} {args.customers / seconds:>12,.0f} {lifetimes_s / seconds:>12.2f}x")
    print_load("at end")
    assert len(scores) == args.customers


if __name__ == "__main__":
    main()
