"""What the scoring service accepts and answers: pydantic models, so every request is validated
against them (a wrong type or an unparseable date is a 400 naming the field) and the OpenAPI
document (:mod:`serving.openapi`) describes them.

What a request may hold is said in the schema and checked by the same code: days and timestamps
are strings matching :data:`DAY_PATTERN` and :data:`TIMESTAMP_PATTERN` (calendar days the feature
job reads, 1970 to 2099), amounts are 0 or at least 1/10,000 in size, texts the feature job
stores hold no NUL byte. Limits that an operator configures (ids per request, customers and
transactions per posted history) are checked by the service and written into the document the
service serves, so they can change without a new schema.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]


#: Requests are strict: a field the model does not know is an error, not ignored, and values are
#: not coerced (``"reasons": "yes"`` and ``"limit": "10"`` are refused; JSON dates are strings).
STRICT = ConfigDict(extra="forbid", strict=True)

#: The largest amount (and quantity) a purchase line can plausibly have; beyond it the sums the
#: features are built from lose their meaning long before they overflow.
MAX_AMOUNT = 1e12
#: The smallest non-zero amount in size (``features.transactions.MIN_AMOUNT``: sums are exact to 1/10,000).
MIN_AMOUNT = 1e-4

# Calendar days as regular expressions, so the document says exactly which days are accepted
# (a client's validator and a property-based tester then agree with the service): month lengths
# and leap years included, years 1970-2099 (``features.transactions.PLAUSIBLE_DATES``).
_MONTH_DAY = (r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")
_LEAP_YEAR = r"(?:19(?:7[26]|8[048]|9[26])|20(?:[02468][048]|[13579][26]))"
_DAY = rf"(?:(?:19[7-9][0-9]|20[0-9][0-9])-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
#: A timestamp's day starts in 1971: with a UTC offset it is moved to the shop's time zone, up to
#: a day and more earlier, and the feature job reads nothing before 1970.
_STAMP_DAY = rf"(?:(?:197[1-9]|19[89][0-9]|20[0-9][0-9])-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
#: ``YYYY-MM-DD``, a day from 1970-01-01 to 2099-12-31.
DAY_PATTERN = rf"^{_DAY}$"
#: A day (midnight), or a day and a time (``T`` or a space; seconds and up to six decimals
#: optional), with an optional UTC offset (``Z``, ``+08:00``); days from 1971-01-01 to 2099-12-31.
TIMESTAMP_PATTERN = (rf"^{_STAMP_DAY}(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{{1,6}})?)?"
                     r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?$")
#: Text the feature job stores: no NUL byte.
NO_NUL_PATTERN = r"^[^\x00]*$"

_DAY_RE, _STAMP_RE = re.compile(DAY_PATTERN), re.compile(TIMESTAMP_PATTERN)


def _day(value: object) -> object:
    if isinstance(value, str):
        if not _DAY_RE.fullmatch(value):
            raise ValueError("must be a day written YYYY-MM-DD, from 1970-01-01 to 2099-12-31")
        return dt.date.fromisoformat(value)
    if type(value) is dt.date:                     # from Python callers; JSON gives text
        return value
    raise ValueError("must be a string: a day written YYYY-MM-DD")


def _timestamp(value: object) -> object:
    if isinstance(value, str):
        if not _STAMP_RE.fullmatch(value):
            raise ValueError("must be a day (YYYY-MM-DD) or a day and time (YYYY-MM-DDTHH:MM[:SS[.ffffff]]) "
                             "with an optional offset (Z, +08:00), from 1971-01-01 to 2099-12-31")
        return dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):             # from Python callers; JSON gives text
        return value
    raise ValueError("must be a string: a day or a day and time, like 1997-03-14T18:20:00+08:00")


def integral(value: object) -> object:
    """A JSON number with no fraction is an integer (``204.0``, as JSON Schema counts it)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _amount(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_AMOUNT or (value != 0 and abs(value) < MIN_AMOUNT):
        raise ValueError(f"must be 0, or from {MIN_AMOUNT} to {MAX_AMOUNT:.0e} in size (negative: a refund)")
    return value


Day = Annotated[dt.date, BeforeValidator(_day), WithJsonSchema(
    {"type": "string", "pattern": DAY_PATTERN, "description": "A day, YYYY-MM-DD (1970-01-01 to 2099-12-31).",
     "examples": ["1997-09-30"]})]
Timestamp = Annotated[dt.datetime, BeforeValidator(_timestamp), WithJsonSchema(
    {"type": "string", "pattern": TIMESTAMP_PATTERN,
     "description": "A day (midnight) or a day and time, with an optional UTC offset; days 1971-01-01 to "
                    "2099-12-31. With an offset it is moved to the shop's time zone, without one it is "
                    "taken as in it.", "examples": ["1997-01-03", "1997-03-14T18:20:00+08:00"]})]
Amount = Annotated[float, AfterValidator(_amount), WithJsonSchema(
    {"type": "number", "description": "0, or from 0.0001 to 1e12 in size; negative amounts are refunds.",
     "anyOf": [{"const": 0}, {"minimum": MIN_AMOUNT, "maximum": MAX_AMOUNT},
               {"minimum": -MAX_AMOUNT, "maximum": -MIN_AMOUNT}]})]
StoredText = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL_PATTERN)]

class _Strict(BaseModel):
    """Request parts refuse fields they do not know, so a misspelt field is an error, not ignored."""

    model_config = STRICT


class Transaction(_Strict):
    """One purchase line. ``timestamp`` with an offset is converted to the model's shop time zone
    (its days are the shop's days); without one it is taken as in that zone. A negative
    ``amount`` is a refund and is excluded."""

    timestamp: Timestamp
    amount: Amount
    order_id: StoredText | None = None
    quantity: float | None = Field(default=None, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    category: StoredText | None = None
    channel: StoredText | None = None


class EngagementEvent(_Strict):
    """One engagement event (a visit, an email opened, a cart, ...), for a model trained with
    an events log (``--events``). ``timestamp`` is read as a purchase's is."""

    timestamp: Timestamp
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)]


#: An attribute value: a number, a text category, or null (missing).
AttributeValue = float | int | Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL_PATTERN)] | None


class CustomerHistory(_Strict):
    """One customer's purchase lines (and, for a model that reads them, attributes and events).
    The same ``customer_id`` posted twice is one customer: their lines are read together."""

    customer_id: CustomerId
    transactions: list[Transaction] = Field(min_length=1)
    #: The customer's attributes by name (``channel``, ``age``, ...), for a model trained with a
    #: customers file (``--customers``); one missing is read as missing.
    attributes: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], AttributeValue] | None = None
    #: The customer's engagement events, for a model trained with an events log.
    events: list[EngagementEvent] = Field(default_factory=list, max_length=100_000)


class CustomerScore(BaseModel):
    """Every score for one customer. With ``status`` other than ``ok`` only ``customer_id`` is set."""

    customer_id: str
    status: Literal["ok", "unknown_customer", "no_purchases"] = "ok"
    as_of: dt.date | None = None
    churn_probability: float | None = None
    p_alive: float | None = None
    expected_purchases_30d: float | None = None
    expected_purchases_90d: float | None = None
    expected_purchases_365d: float | None = None
    p_purchase_7d: float | None = None
    p_purchase_30d: float | None = None
    p_purchase_90d: float | None = None
    next_purchase_date: dt.date | None = Field(
        default=None, description="Median next purchase day; null when not expected within the model's grid.")
    next_purchase_low: dt.date | None = Field(default=None, description="Lower end of the 80 % interval.")
    next_purchase_high: dt.date | None = Field(default=None, description="Upper end of the 80 % interval.")
    expected_order_value: float | None = None
    clv_12m: float | None = None
    winback_date: dt.date | None = Field(default=None, description="Null when no win-back is planned.")
    winback_now: bool | None = None
    value_at_risk: float | None = None
    priority: int | None = Field(
        default=None, description="Rank by value at risk among the snapshot's customers (1 = highest).")
    r_score: int | None = Field(default=None, description="RFM recency score 1-5 (5 = most recent), "
                                                             "against the model's fixed quintile edges.")
    f_score: int | None = Field(default=None, description="RFM frequency score 1-5.")
    m_score: int | None = Field(default=None, description="RFM monetary score 1-5.")
    segment: str | None = None
    segment_zh_tw: str | None = None
    tier: str | None = None
    tier_zh_tw: str | None = None
    reasons: list[str] | None = None
    reasons_zh_tw: list[str] | None = None


class ScoreResponse(BaseModel):
    """The answer of ``/score`` and ``/score_history``: the model that answered and one score per customer."""

    model_name: str
    model_version: str
    as_of: dt.date
    customers: list[CustomerScore]


class WinbackEntry(BaseModel):
    """One line of the win-back list, labels and reasons in the requested language."""

    rank: int
    customer_id: str
    value_at_risk: float
    churn_probability: float
    clv_12m: float
    winback_date: dt.date | None
    winback_now: bool
    next_purchase_date: dt.date | None
    segment: str
    tier: str
    reasons: list[str]


class WinbackResponse(BaseModel):
    """A page of the win-back list."""

    model_name: str
    model_version: str
    as_of: dt.date
    lang: Literal["en", "zh-TW"]
    total_matching: int = Field(description="Customers matching the filters, before the limit.")
    customers: list[WinbackEntry]
    next_cursor: str | None = Field(description="Send it as `cursor` (with the same filters) for the next "
                                                   "page; null on the last page.")


class ScoreLine(BaseModel):
    """One line of ``GET /scores``: a customer's ``/score`` answer without reasons; with ``since``,
    a customer who left the snapshot is a line with ``status: removed`` and only ``customer_id``."""

    customer_id: str
    status: Literal["ok", "removed"]
    as_of: dt.date | None = None
    churn_probability: float | None = None
    p_alive: float | None = None
    expected_purchases_30d: float | None = None
    expected_purchases_90d: float | None = None
    expected_purchases_365d: float | None = None
    p_purchase_7d: float | None = None
    p_purchase_30d: float | None = None
    p_purchase_90d: float | None = None
    next_purchase_date: dt.date | None = None
    next_purchase_low: dt.date | None = None
    next_purchase_high: dt.date | None = None
    expected_order_value: float | None = None
    clv_12m: float | None = None
    winback_date: dt.date | None = None
    winback_now: bool | None = None
    value_at_risk: float | None = None
    priority: int | None = None
    r_score: int | None = None
    f_score: int | None = None
    m_score: int | None = None
    segment: str | None = None
    segment_zh_tw: str | None = None
    tier: str | None = None
    tier_zh_tw: str | None = None


class TriggerEvent(BaseModel):
    """One trigger event of the ``send`` group, as ``winback triggers run`` recorded it."""

    idempotency_key: str = Field(description="The same event always has the same key: deliver it once.")
    customer_id: str
    rule: str
    as_of: dt.date
    template: str
    priority: int
    fields: dict = Field(description="What the template fills in (scores, dates, reasons).")
    status: Literal["pending", "delivered", "holdout", "skipped", "dead"]


class TriggersResponse(BaseModel):
    """A page of a day's trigger events (the ``send`` group)."""

    model_version: str
    date: dt.date
    events: list[TriggerEvent]
    next_cursor: str | None = Field(description="Send it as `cursor` (with the same date) for the next page; "
                                                   "null on the last page.")


class ErrorDetail(BaseModel):
    """One validation error (pydantic's, without the input): where (``loc``), what (``msg``)."""

    type: str
    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    """Every error answer: ``error`` says what is wrong, ``field`` (or ``detail`` for a body that
    fails its schema) says where. Never quotes the request."""

    error: str = Field(description="What is wrong, and with which field.")
    field: str | None = Field(None, description="The request field (or header) at fault.")
    detail: list[ErrorDetail] | None = Field(None, description="Each validation error of the body.")


class RegistryStatus(BaseModel):
    """Whether the registry answered the last poll."""

    reachable: bool
    last_checked: dt.datetime | None = None
    last_error: str | None = None


class SnapshotInfo(BaseModel):
    """The snapshot the scores come from."""

    file: str
    as_of: dt.date
    customers: int
    loaded_at: dt.datetime


class RealizedHealth(BaseModel):
    """Realized figures of a past snapshot whose horizon has closed."""

    churn_auc: float | None = None
    churn_brier: float | None = None
    next_purchase_cindex: float | None = None


class HealthInfo(BaseModel):
    """The latest ``winback monitor`` run on the served model (``training.monitor``)."""

    as_of: dt.date = Field(description="The day of the snapshot last monitored.")
    status: Literal["healthy", "warning", "retrain"] | None = Field(
        description="healthy, warning (the feed: drift off the main features, missing values, ranges) or "
                    "retrain (retraining advised).")
    reason: str | None = Field(None, description="Why, in one line.")
    estimated_churn_auc: float | None = Field(None, description="CBPE: the churn AUC the calibrated "
                                                                   "probabilities promise before labels exist.")
    backtest_churn_auc: float | None = None
    auc_floor: float | None = Field(None, description="The lower end of the backtest's interval at this "
                                                         "snapshot's size.")
    max_psi: float | None = None
    drifted_columns: int | None = None
    unseen_share: float | None = Field(None, description="Share of customers first seen after the "
                                                            "model's calibration origin.")
    realized: dict[str, RealizedHealth] = Field(default_factory=dict, description="Per past snapshot whose "
                                                "horizon has closed: realized churn AUC, Brier, C-index.")


class InfoResponse(BaseModel):
    """The answer of ``/info``: the model and snapshot answering, the limits, the health."""

    status: Literal["ok", "degraded"]
    model_name: str
    model_version: str
    model_alias: str | None
    model_uri: str
    run_id: str | None
    trained_at: dt.datetime | None = Field(description="When the served version was registered.")
    trained_until: str | None = Field(description="The last day of data (labels included) the served model was fit on.")
    evaluated_on: str | None = Field(None, description="The out-of-time window its recipe was evaluated on, "
                                                          "(cutoff, cutoff + horizon].")
    horizon_days: int | None = Field(None, description="The churn horizon in days.")
    feature_reference: str | None = Field(None, description="Id of the feature contract (RFM edges, "
                                                               "intervals, tiers, time zone) features are built with.")
    metrics: dict[str, float]
    snapshot: SnapshotInfo
    registry: RegistryStatus
    poll_seconds: float
    limits: dict[str, int]
    rate_limit: str | None = Field(None, description="Requests each key may make (WINBACK_RATE_LIMIT, e.g. "
                                                        "`600/60s`); null when unlimited.")
    etag: str = Field(description="The ETag of `GET /scores` now: the model version and the snapshot's id.")
    health: HealthInfo | None = Field(None, description="The latest `winback monitor` result for the "
                                                           "served model; absent until it has run.")
    selection: dict | None = Field(None, description="Which candidate model is served for churn and for "
                                                        "the next purchase, with their cross-validated figures.")


def error_answer(status: int, field: str, message: str) -> Any:
    """An error answer (:class:`serving.schemas.ErrorResponse`). Typed ``Any``, as ``serving.service._json``:
    an ``@bentoml.api`` method declares the model it answers (BentoML's output spec) and returns
    the answer already serialised, which BentoML passes through."""
    body = {"error": f"{field}: {message}", "field": field}
    from starlette.responses import Response

    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def query_params(request: Any, known: tuple[str, ...]) -> dict[str, str] | Any:
    """The query parameters ``known`` of a Starlette ``request``, each at most once, or the 400
    answer (:func:`error_answer`) naming the one given twice; other parameters are ignored."""
    values: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in known:
            continue                                   # others are ignored, as a proxy may add some
        if name in values:
            return error_answer(400, name, "given more than once")
        values[name] = value
    return values
