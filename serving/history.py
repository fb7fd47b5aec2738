"""Score posted purchase histories: the request becomes a transaction log, and the scorer builds
features from it with :func:`features.build_features`, exactly as in training.

Problems the feature code finds (:class:`features.TransactionDataError`, ``ValueError``) become
a :class:`HistoryError` naming the request field, e.g. ``customers[2].transactions[0].amount``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pandas as pd

from features import IngestPolicy, TransactionDataError
from features.attributes import CustomerAttributes
from features.events import EngagementLog
from features.side import SideData
from models.scorer import WinbackScorer
from serving.config import Limits
from serving.schemas import CustomerHistory
from serving.state import DATE_COLUMNS, FLOAT_COLUMNS, OTHER_COLUMNS, json_column, json_values

#: Timestamps outside this range cannot be a purchase (and pandas cannot hold some of them).
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2200, 1, 1)
OPTIONAL = ("order_id", "quantity", "category", "channel")


class HistoryError(ValueError):
    """A posted history that cannot be scored; ``field`` names the request field."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


def transactions_frame(as_of: dt.date, customers: Sequence[CustomerHistory],
                       limits: Limits, timezone: str = "UTC") -> tuple[pd.DataFrame, list[str]]:
    """The posted histories as a transaction DataFrame (customer_id, timestamp, amount, and
    the optional columns some line sets), and each row's request field prefix.

    Each customer's id is replaced by a stand-in (:func:`stand_ins`), so the feature job's
    handling of ids (trimming, NUL bytes) cannot change which answer is whose; a customer_id
    posted twice is one customer, their lines read together. Timestamps with an offset are
    converted to the shop's ``timezone`` (the model's: its days are the shop's days); naive ones
    are taken as already in it. Lines dated after ``as_of`` there are left out (the scores are
    as of that day)."""
    zone = ZoneInfo(timezone)
    if len(customers) > limits.max_customers:               # the document's maxItems: a 400
        raise HistoryError(400, "customers", f"at most {limits.max_customers:,} customers per request "
                                             f"(WINBACK_MAX_CUSTOMERS), got {len(customers):,}")
    for i, customer in enumerate(customers):
        if len(customer.transactions) > limits.max_transactions:
            raise HistoryError(400, f"customers[{i}].transactions",
                               f"at most {limits.max_transactions:,} transactions (WINBACK_MAX_TRANSACTIONS), "
                               f"got {len(customer.transactions):,}")
    total = sum(len(c.transactions) for c in customers)
    if total > limits.max_transactions:
        raise HistoryError(413, "customers[].transactions",
                           f"at most {limits.max_transactions:,} transactions per request "
                           f"(WINBACK_MAX_TRANSACTIONS), got {total:,}")
    if not EARLIEST <= as_of < LATEST:
        raise HistoryError(400, "as_of", f"must be between {EARLIEST} and {LATEST}")
    ids = stand_ins(customers)
    last = dt.datetime.combine(as_of, dt.time()) + dt.timedelta(days=1)
    rows, fields = [], []
    for i, customer in enumerate(customers):
        for j, line in enumerate(customer.transactions):
            stamp = line.timestamp
            out_of_range = HistoryError(400, f"customers[{i}].transactions[{j}].timestamp",
                                        f"must be between {EARLIEST} and {LATEST}")
            try:                                            # 9999-12-31T23:59:59-14:00 overflows
                if stamp.tzinfo is not None:
                    stamp = stamp.astimezone(zone).replace(tzinfo=None)
            except (OverflowError, ValueError):
                raise out_of_range from None
            if not EARLIEST <= stamp.date() < LATEST:
                raise out_of_range
            if stamp >= last:
                continue
            rows.append({"customer_id": ids[customer.customer_id], "timestamp": stamp, "amount": line.amount,
                         **{c: getattr(line, c) for c in OPTIONAL}})
            fields.append(f"customers[{i}].transactions[{j}]")
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", *OPTIONAL])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    unused = [c for c in OPTIONAL if frame[c].isna().all()]
    return frame.drop(columns=unused), fields


def stand_ins(customers: Sequence[CustomerHistory]) -> dict[str, str]:
    """Each posted customer_id's stand-in in the transaction log: its rank among the posted ids,
    zero-padded, so the stand-ins sort as the ids do (ties in value at risk rank by id)."""
    return {cid: f"{rank:09d}" for rank, cid in enumerate(sorted({c.customer_id for c in customers}))}


def score_history(scorer: WinbackScorer, as_of: dt.date, customers: Sequence[CustomerHistory],
                  limits: Limits, reasons: bool = True) -> list[dict]:
    """JSON-ready scores, one per posted customer in request order (a customer_id posted twice
    gets its one answer twice). A customer with no purchase on or before ``as_of`` (or only
    refunds) gets ``status: no_purchases``."""
    frame, fields = transactions_frame(as_of, customers, limits, scorer.reference_.timezone)
    side = side_data(scorer, customers)
    if not (frame["amount"] > 0).any():                     # nothing to build features from
        return [{"customer_id": c.customer_id, "status": "no_purchases"} for c in customers]
    try:
        scores = scorer.score(frame, as_of, reasons=reasons, side=side)
    except TransactionDataError as exc:
        field = "customers"
        if exc.row is not None and 1 <= exc.row <= len(fields):
            field = fields[exc.row - 1] + (f".{exc.column}" if exc.column else "")
        raise HistoryError(400, field, _without_source(str(exc))) from None
    except ValueError as exc:
        raise HistoryError(400, "customers", str(exc)) from None
    columns = {c: json_column(scores[c]) for c in FLOAT_COLUMNS + DATE_COLUMNS + OTHER_COLUMNS}
    names = list(columns)
    values = zip(*(json_values(kind, array) for kind, array in columns.values()))
    by_id = {cid: dict(zip(names, row)) for cid, row in zip(scores["customer_id"].astype(str), values)}
    if reasons:
        for cid, en, zh in zip(scores["customer_id"].astype(str), scores["reasons"], scores["reasons_zh_tw"]):
            by_id[cid]["reasons"], by_id[cid]["reasons_zh_tw"] = list(en), list(zh)
    day = as_of.isoformat()
    ids = stand_ins(customers)
    return [{"customer_id": c.customer_id, "status": "ok", "as_of": day, **by_id[ids[c.customer_id]]}
            if ids[c.customer_id] in by_id else {"customer_id": c.customer_id, "status": "no_purchases"}
            for c in customers]


def side_data(scorer: WinbackScorer, customers: Sequence[CustomerHistory]) -> SideData | None:
    """The posted attributes and events as :class:`features.side.SideData` (by stand-in id), for a
    model whose feature reference reads them (None otherwise, and then posting them is an error).
    A customer_id posted twice may give its attributes once, or the same twice (else a 409)."""
    reference = scorer.reference_
    posted_attributes = any(c.attributes for c in customers)
    posted_events = any(c.events for c in customers)
    if posted_attributes and not reference.attributes:
        raise HistoryError(400, "customers[].attributes", "this model was trained without customer attributes")
    if posted_events and not reference.event_types:
        raise HistoryError(400, "customers[].events", "this model was trained without engagement events")
    if not reference.side_columns:
        return None
    ids = stand_ins(customers)
    policy = IngestPolicy(timezone=reference.timezone)
    attributes = None
    if reference.attributes and posted_attributes:
        names = [spec.name for spec in reference.attributes]
        given: dict[str, dict] = {}
        for i, c in enumerate(customers):
            unknown = sorted(set(c.attributes or {}) - set(names))
            if unknown:
                raise HistoryError(400, f"customers[{i}].attributes.{unknown[0]}",
                                   f"not an attribute of this model ({', '.join(names)})")
            if c.attributes:
                earlier = given.setdefault(ids[c.customer_id], dict(c.attributes))
                if earlier != dict(c.attributes):
                    raise HistoryError(409, f"customers[{i}].attributes", "the same customer_id was posted "
                                       "earlier with other attributes: send them once")
        try:
            attributes = CustomerAttributes.from_records(
                {cid: given.get(cid, {}) for cid in ids.values()}, policy, source="customers[].attributes")
        except (TransactionDataError, ValueError) as exc:
            raise HistoryError(400, "customers[].attributes", _without_source(str(exc))) from None
    events = None
    if reference.event_types:
        zone = ZoneInfo(reference.timezone)
        rows = [{"customer_id": ids[c.customer_id], "event_type": e.event_type,
                 "timestamp": e.timestamp.astimezone(zone).replace(tzinfo=None) if e.timestamp.tzinfo else e.timestamp}
                for c in customers for e in c.events]
        frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type"]).astype(
            {"customer_id": object, "event_type": object})
        frame["timestamp"] = pd.to_datetime(frame["timestamp"])
        try:                       # a customer who sent no events had none: counts 0, as in a log
            events = EngagementLog.from_frame(frame, policy=policy, source="customers[].events", allow_empty=True)
        except (TransactionDataError, ValueError) as exc:
            raise HistoryError(400, "customers[].events", _without_source(str(exc))) from None
    return SideData(attributes, events)


def _without_source(message: str) -> str:
    return message.replace("<DataFrame>: ", "").replace("<DataFrame> ", "")
