"""What the scoring service accepts and answers: pydantic models, so BentoML validates every
request against them (a wrong type or an unparseable date is a 400 naming the field) and the
OpenAPI document describes them.

Limits that an operator configures (ids per request, customers and transactions per posted
history) are checked by the service, not here, so they can change without a new schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]


#: Requests are strict: a field the model does not know is an error, not ignored, and values are
#: not coerced (``"reasons": "yes"`` and ``"limit": "10"`` are refused; JSON dates are strings).
STRICT = ConfigDict(extra="forbid", strict=True)

#: The largest amount (and quantity) a purchase line can plausibly have; beyond it the sums the
#: features are built from lose their meaning long before they overflow.
MAX_AMOUNT = 1e12


class _Strict(BaseModel):
    """Request parts refuse fields they do not know, so a misspelt field is an error, not ignored."""

    model_config = STRICT


class Transaction(_Strict):
    """One purchase line. ``timestamp`` with an offset is converted to the model's shop time zone
    (its days are the shop's days); without one it is taken as in that zone. A negative
    ``amount`` is a refund and is excluded."""

    timestamp: dt.datetime = Field(strict=False)            # a date alone ("1997-01-03") is midnight
    amount: float = Field(allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    order_id: Optional[Annotated[str, StringConstraints(max_length=128)]] = None
    quantity: Optional[float] = Field(default=None, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    category: Optional[Annotated[str, StringConstraints(max_length=128)]] = None
    channel: Optional[Annotated[str, StringConstraints(max_length=128)]] = None


class EngagementEvent(_Strict):
    """One engagement event (a visit, an email opened, a cart, ...), for a model trained with
    an events log (``--events``). ``timestamp`` is read as a purchase's is."""

    timestamp: dt.datetime = Field(strict=False)
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]


#: An attribute value: a number, a text category, or null (missing).
AttributeValue = Optional[float | int | Annotated[str, StringConstraints(max_length=256)]]


class CustomerHistory(_Strict):
    customer_id: CustomerId
    transactions: list[Transaction] = Field(min_length=1)
    #: The customer's attributes by name (``channel``, ``age``, ...), for a model trained with a
    #: customers file (``--customers``); one missing is read as missing.
    attributes: Optional[dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], AttributeValue]] = None
    #: The customer's engagement events, for a model trained with an events log.
    events: list[EngagementEvent] = Field(default_factory=list, max_length=100_000)


class CustomerScore(BaseModel):
    """Every score for one customer. With ``status`` other than ``ok`` only ``customer_id`` is set."""

    customer_id: str
    status: Literal["ok", "unknown_customer", "no_purchases"] = "ok"
    as_of: Optional[dt.date] = None
    churn_probability: Optional[float] = None
    p_alive: Optional[float] = None
    expected_purchases_30d: Optional[float] = None
    expected_purchases_90d: Optional[float] = None
    expected_purchases_365d: Optional[float] = None
    p_purchase_7d: Optional[float] = None
    p_purchase_30d: Optional[float] = None
    p_purchase_90d: Optional[float] = None
    next_purchase_date: Optional[dt.date] = Field(
        default=None, description="Median next purchase day; null when not expected within the model's grid.")
    next_purchase_low: Optional[dt.date] = Field(default=None, description="Lower end of the 80 % interval.")
    next_purchase_high: Optional[dt.date] = Field(default=None, description="Upper end of the 80 % interval.")
    expected_order_value: Optional[float] = None
    clv_12m: Optional[float] = None
    winback_date: Optional[dt.date] = Field(default=None, description="Null when no win-back is planned.")
    winback_now: Optional[bool] = None
    value_at_risk: Optional[float] = None
    priority: Optional[int] = Field(
        default=None, description="Rank by value at risk among the snapshot's customers (1 = highest).")
    r_score: Optional[int] = Field(default=None, description="RFM recency score 1-5 (5 = most recent), "
                                                             "against the model's fixed quintile edges.")
    f_score: Optional[int] = Field(default=None, description="RFM frequency score 1-5.")
    m_score: Optional[int] = Field(default=None, description="RFM monetary score 1-5.")
    segment: Optional[str] = None
    segment_zh_tw: Optional[str] = None
    tier: Optional[str] = None
    tier_zh_tw: Optional[str] = None
    reasons: Optional[list[str]] = None
    reasons_zh_tw: Optional[list[str]] = None


class ScoreResponse(BaseModel):
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
    winback_date: Optional[dt.date]
    winback_now: bool
    next_purchase_date: Optional[dt.date]
    segment: str
    tier: str
    reasons: list[str]


class WinbackResponse(BaseModel):
    model_name: str
    model_version: str
    as_of: dt.date
    lang: Literal["en", "zh-TW"]
    total_matching: int = Field(description="Customers matching the filters, before the limit.")
    customers: list[WinbackEntry]


class RegistryStatus(BaseModel):
    reachable: bool
    last_checked: Optional[dt.datetime] = None
    last_error: Optional[str] = None


class SnapshotInfo(BaseModel):
    file: str
    as_of: dt.date
    customers: int
    loaded_at: dt.datetime


class RealizedHealth(BaseModel):
    churn_auc: Optional[float] = None
    churn_brier: Optional[float] = None
    next_purchase_cindex: Optional[float] = None


class HealthInfo(BaseModel):
    """The latest ``winback monitor`` run on the served model (``training.monitor``)."""

    as_of: dt.date = Field(description="The day of the snapshot last monitored.")
    status: str = Field(description="healthy, warning (the feed: drift off the main features, missing "
                                    "values, ranges) or retrain (retraining advised).")
    reason: Optional[str] = Field(None, description="Why, in one line.")
    estimated_churn_auc: Optional[float] = Field(None, description="CBPE: the churn AUC the calibrated "
                                                                   "probabilities promise before labels exist.")
    backtest_churn_auc: Optional[float] = None
    auc_floor: Optional[float] = Field(None, description="The lower end of the backtest's interval at this "
                                                         "snapshot's size.")
    max_psi: Optional[float] = None
    drifted_columns: Optional[int] = None
    unseen_share: Optional[float] = Field(None, description="Share of customers first seen after the "
                                                            "model's calibration origin.")
    realized: dict[str, RealizedHealth] = Field(default_factory=dict, description="Per past snapshot whose "
                                                "horizon has closed: realized churn AUC, Brier, C-index.")


class InfoResponse(BaseModel):
    status: Literal["ok", "degraded"]
    model_name: str
    model_version: str
    model_alias: Optional[str]
    model_uri: str
    run_id: Optional[str]
    trained_at: Optional[dt.datetime] = Field(description="When the served version was registered.")
    trained_until: Optional[str] = Field(description="The last day of data (labels included) the served model was fit on.")
    evaluated_on: Optional[str] = Field(None, description="The out-of-time window its recipe was evaluated on, "
                                                          "(cutoff, cutoff + horizon].")
    horizon_days: Optional[int] = Field(None, description="The churn horizon in days.")
    feature_reference: Optional[str] = Field(None, description="Id of the feature contract (RFM edges, "
                                                               "intervals, tiers, time zone) features are built with.")
    metrics: dict[str, float]
    snapshot: SnapshotInfo
    registry: RegistryStatus
    poll_seconds: float
    limits: dict[str, int]
    health: Optional[HealthInfo] = Field(None, description="The latest `winback monitor` result for the "
                                                           "served model; absent until it has run.")
    selection: Optional[dict] = Field(None, description="Which candidate model is served for churn and for "
                                                        "the next purchase, with their cross-validated figures.")
