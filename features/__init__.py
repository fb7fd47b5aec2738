"""Customer features as of a cutoff, from a transaction log: the one path training and serving share."""

from features.build import build_features, fit_reference, prepare
from features.cdnow import cdnow_log, load_cdnow
from features.labels import build_labels, labelled_features
from features.reference import FeatureReference
from features.settings import ColumnMap, FeatureSettings, IngestPolicy, TierSettings
from features.transactions import TransactionDataError, TransactionLog, read_transactions

__all__ = [
    "ColumnMap", "FeatureReference", "FeatureSettings", "IngestPolicy", "TierSettings",
    "TransactionDataError", "TransactionLog", "build_features", "build_labels", "cdnow_log",
    "fit_reference", "labelled_features", "load_cdnow", "prepare", "read_transactions",
]
