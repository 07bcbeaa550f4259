"""Independent JetStream workers and the runner they share."""

from workers.registry import WORKERS, WorkerDefinition
from workers.runner import ConsumerRunner, Delivery, Handler, retry_delay

__all__ = ["WORKERS", "ConsumerRunner", "Delivery", "Handler", "WorkerDefinition", "retry_delay"]
