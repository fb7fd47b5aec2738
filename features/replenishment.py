"""Replenishment: when a customer's favourite category is due again.

Only where the log has a category column. A customer's favourite category is the one they
bought on the most days (ties: alphabetical). Its repurchase interval is the customer's own
median gap between purchase days of that category when they have at least two such gaps, and
otherwise the category's typical interval: the median gap over all customers, taken from the
:class:`~features.reference.FeatureReference`. ``replenish_due_in_days`` is negative when the
customer is overdue.
"""

from __future__ import annotations

from features.transactions import sql_escape

COLUMNS = ("top_category", "replenish_interval_days", "replenish_due_in_days")
MIN_OWN_GAPS = 2



def gap_over(day: str) -> str:
    """The days from the previous row of the customer and category (by ``day``) to ``day``:
    a window. Over rows that repeat a day, the first of them has the gap and the others 0."""
    return f"date_diff('day', lag({day}) OVER (PARTITION BY customer_id, category ORDER BY {day}), {day})"


#: The gap before each purchase day of a category (NULL for the first), over distinct days;
#: staged once per log as ``cat_days.gap``.
GAP = gap_over("day")

#: The gaps over any table ``cat_days`` of customer_id, category and day.
GAPS_SQL = f"""
    SELECT customer_id, category, day, {GAP} AS gap
    FROM cat_days"""


def category_intervals_sql() -> str:
    """A SELECT of each category's median repurchase gap in days, over all customers, from the
    staged ``cat_days`` (with its ``gap``).

    Exactly ``median(gap)`` (the mean of the two middle gaps when their number is even), read
    from a histogram of the gaps: one row per category and gap length instead of every gap held
    at once, so a 100M-row log does not run out of memory here.
    """
    histogram = "SELECT category, gap, count(*) AS n FROM cat_days WHERE gap IS NOT NULL GROUP BY category, gap"
    cumulative = f"""
        SELECT category, gap,
            sum(n) OVER (PARTITION BY category ORDER BY gap ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto,
            sum(n) OVER (PARTITION BY category) AS total
        FROM ({histogram})"""
    return f"""
        SELECT category, (min(gap) FILTER (WHERE upto >= floor((total - 1) / 2) + 1)
                          + min(gap) FILTER (WHERE upto >= floor(total / 2) + 1)) / 2.0 AS median_gap
        FROM ({cumulative}) GROUP BY category"""


def _values(intervals: dict[str, float]) -> str:
    if not intervals:
        return "SELECT NULL::VARCHAR AS category, NULL::DOUBLE AS interval_days WHERE false"
    rows = ", ".join(f"('{sql_escape(c)}', {float(v)!r})" for c, v in intervals.items())
    return f"SELECT * FROM (VALUES {rows}) AS t(category, interval_days)"


#: Each customer's categories: days bought, the last, the median gap and the number of gaps.
PER_CATEGORY_SQL = """
    SELECT customer_id, category, count(*) AS n_days, max(day) AS last_day,
        list_median(list(gap) FILTER (WHERE gap IS NOT NULL)) AS own_median, count(gap) AS n_gaps
    FROM cat_days GROUP BY customer_id, category"""


def favourites_sql(per_category: str = PER_CATEGORY_SQL) -> str:
    """A SELECT of each customer's favourite category from ``per_category`` (rows of
    customer_id, category, n_days, last_day, own_median and n_gaps; default: from the staged
    ``cat_days``): customer_id, ``category``, its ``last_day``, ``own_median`` and ``n_gaps``.

    The favourite is the one with the largest ``key``: days bought, then the alphabetical rank
    (so ties go to the first name), and every column of it is taken with ``arg_max`` on that
    key in one GROUP BY (no window to rank the categories). ``own_median`` is read only when
    that category has gaps, as DuckDB's ``arg_max`` skips NULL values.
    """
    ranks = """
        SELECT category, dense_rank() OVER (ORDER BY category DESC) AS name_rank
        FROM (SELECT DISTINCT category FROM per_category)"""
    picked = ", ".join(f"arg_max({c}, key) AS {c}" for c in ("category", "last_day", "own_median", "n_gaps"))
    return f"""
        WITH per_category AS ({per_category})
        SELECT customer_id, {picked}
        FROM (SELECT c.*, c.n_days * 4294967296 + r.name_rank AS key
              FROM per_category AS c JOIN ({ranks}) AS r USING (category))
        GROUP BY customer_id"""


#: :func:`features.build.features_sql`'s ``favourites`` when the customers table itself holds each
#: customer's favourite as ``fav_category``, ``fav_last_day``, ``fav_own_median``, ``fav_n_gaps``.
INLINE = "inline"


def inline_columns(cutoff: str, intervals: dict[str, float], table: str) -> str:
    """The replenishment columns from ``table``'s ``fav_*`` columns, the reference's intervals
    looked up by a CASE: the values of :func:`replenishment_sql`, with no join."""
    lookup = (f"CASE {table}.fav_category " + " ".join(
        f"WHEN '{sql_escape(c)}' THEN {float(v)!r}" for c, v in intervals.items()) + " END"
              if intervals else "NULL::DOUBLE")
    interval = f"(CASE WHEN {table}.fav_n_gaps >= {MIN_OWN_GAPS} THEN {table}.fav_own_median ELSE {lookup} END)"
    return (f"{table}.fav_category AS top_category, {interval} AS replenish_interval_days, "
            f"{interval} - date_diff('day', {table}.fav_last_day, {cutoff}) AS replenish_due_in_days")


def replenishment_sql(cutoff: str, intervals: dict[str, float], favourites: str | None = None) -> str:
    """A SELECT of customer_id and the replenishment columns from each customer's favourite
    category (``favourites``, default :func:`favourites_sql`), as of ``cutoff``."""
    interval = (f"CASE WHEN p.n_gaps >= {MIN_OWN_GAPS} THEN p.own_median "
                f"ELSE ref.interval_days END")
    return f"""
        SELECT p.customer_id, p.category AS top_category,
            {interval} AS replenish_interval_days,
            {interval} - date_diff('day', p.last_day, {cutoff}) AS replenish_due_in_days
        FROM ({favourites or favourites_sql()}) AS p
        LEFT JOIN ({_values(intervals)}) AS ref ON ref.category = p.category"""
