"""``wedsync worker documents``: folds live documents' updates into snapshots."""

from workers.documents.worker import CONSUMER, Compactor, HeadHandler

__all__ = ["CONSUMER", "Compactor", "HeadHandler"]
