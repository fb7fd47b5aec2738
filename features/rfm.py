"""RFM: recency, frequency and monetary scores, and the segment they name.

Scores run 1 (worst) to 5 (best) against quintile edges of the customer population as of the
cutoff, or against edges fixed earlier (a :class:`~features.reference.FeatureReference`), so
that one customer scored alone by the service gets the score training would have given it.
Ties always get the same score, so row order never changes a score.

Segments follow the common R×F map (R and F scores), with "Lost" split off the coldest corner:

=================== ============ ========== ==========
segment             zh-TW        R score    F score
=================== ============ ========== ==========
Champions           冠軍客戶      5          4–5
Loyal               忠誠客戶      3–4        4–5
Potential loyalist  潛力忠誠客戶   4–5        2–3
New                 新客戶        5          1
Promising           潛力新客      4          1
Need attention      需要關注      3          3
About to sleep      即將沉睡      3          1–2
At risk             流失風險      1–2        3–4
Can't lose          不能失去      1–2        5
Hibernating         沉睡客戶      2          1–2
Lost                已流失        1          1–2
=================== ============ ========== ==========
"""

from __future__ import annotations

SEGMENTS: tuple[tuple[str, str, str], ...] = (
    # (English, zh-TW, SQL condition on r_score, f_score)
    ("Champions", "冠軍客戶", "r_score = 5 AND f_score >= 4"),
    ("Loyal", "忠誠客戶", "r_score BETWEEN 3 AND 4 AND f_score >= 4"),
    ("Potential loyalist", "潛力忠誠客戶", "r_score >= 4 AND f_score BETWEEN 2 AND 3"),
    ("New", "新客戶", "r_score = 5 AND f_score = 1"),
    ("Promising", "潛力新客", "r_score = 4 AND f_score = 1"),
    ("Need attention", "需要關注", "r_score = 3 AND f_score = 3"),
    ("About to sleep", "即將沉睡", "r_score = 3 AND f_score <= 2"),
    ("At risk", "流失風險", "r_score <= 2 AND f_score BETWEEN 3 AND 4"),
    ("Can't lose", "不能失去", "r_score <= 2 AND f_score = 5"),
    ("Hibernating", "沉睡客戶", "r_score = 2 AND f_score <= 2"),
    ("Lost", "已流失", "r_score = 1 AND f_score <= 2"),
)
SEGMENT_ZH_TW = {en: zh for en, zh, _ in SEGMENTS}

#: RFM input -> the customer-level column its score is computed from.
SCORED = {"recency": "days_since_last_purchase", "frequency": "orders", "monetary": "total_spend"}
QUANTILES = (0.2, 0.4, 0.6, 0.8)


def edges_sql(source: str) -> str:
    """A SELECT of the quintile edges of each scored column over the table ``source``."""
    parts = ", ".join(
        f"quantile_cont({col}, [{', '.join(map(str, QUANTILES))}]) AS {name}"
        for name, col in SCORED.items())
    return f"SELECT {parts} FROM {source}"


def _score(column: str, edges: list[float], higher_is_better: bool) -> str:
    above = " + ".join(f"CAST({column} > {float(e)!r} AS INTEGER)" for e in edges)
    return f"(1 + {above})" if higher_is_better else f"(5 - ({above}))"


def _case(pick: int) -> str:
    arms = " ".join(f"WHEN {cond} THEN '{seg[pick].replace(chr(39), chr(39) * 2)}'"
                    for *seg, cond in SEGMENTS)
    return f"CASE {arms} END"


def score_columns(edges: dict[str, list[float]]) -> list[str]:
    """Expressions for ``r_score``, ``f_score`` and ``m_score`` over the customer-level columns."""
    return [
        f"{_score(SCORED['recency'], edges['recency'], higher_is_better=False)} AS r_score",
        f"{_score(SCORED['frequency'], edges['frequency'], higher_is_better=True)} AS f_score",
        f"{_score(SCORED['monetary'], edges['monetary'], higher_is_better=True)} AS m_score",
    ]


def segment_columns() -> list[str]:
    """Expressions for ``segment`` and ``segment_zh_tw`` over ``r_score`` and ``f_score``."""
    return [f"{_case(0)} AS segment", f"{_case(1)} AS segment_zh_tw"]


def rfm_sql(source: str, edges: dict[str, list[float]]) -> str:
    """A SELECT of customer_id, the R/F/M scores and the segment, from ``source``."""
    return f"""
        SELECT customer_id, r_score, f_score, m_score, {', '.join(segment_columns())}
        FROM (SELECT customer_id, {', '.join(score_columns(edges))} FROM {source})"""
