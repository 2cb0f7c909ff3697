"""XGBoost: model() returns an XGBClassifier (trained with xgboost.dask on the partitions)."""

import xgboost


def model():
    return xgboost.XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.2, tree_method="hist")
