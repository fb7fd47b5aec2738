"""Customer features as of a cutoff, from a transaction log: the one path training and serving share."""

from features.attributes import CustomerAttributes, attributes_as_of, read_customers
from features.build import build_features, fit_reference, prepare
from features.cdnow import cdnow_log, load_cdnow
from features.events import EngagementLog, read_events
from features.labels import build_labels, labelled_features
from features.reference import AttributeSpec, FeatureReference
from features.settings import ColumnMap, FeatureSettings, IngestPolicy, TierSettings
from features.side import SideData
from features.transactions import TransactionDataError, TransactionLog, read_transactions

__all__ = [
    "AttributeSpec", "ColumnMap", "CustomerAttributes", "EngagementLog", "FeatureReference",
    "FeatureSettings", "IngestPolicy", "SideData", "TierSettings", "TransactionDataError",
    "TransactionLog", "attributes_as_of", "build_features", "build_labels", "cdnow_log",
    "fit_reference", "labelled_features", "load_cdnow", "prepare", "read_customers", "read_events",
    "read_transactions",
]
