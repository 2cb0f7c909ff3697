"""scikit-learn: an estimator with partial_fit is trained chunk by chunk."""

from sklearn.linear_model import SGDClassifier


def model():
    return SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0)
