"""The retention worker: archive old events to PostgreSQL, clean up what expires."""

from workers.retention.archive import ArchiveJob
from workers.retention.cleanup import CleanupJob
from workers.retention.jobs import InvariantError, Job, JobBusy, Progress, run_job
from workers.retention.scheduler import RetentionScheduler

__all__ = [
    "ArchiveJob",
    "CleanupJob",
    "InvariantError",
    "Job",
    "JobBusy",
    "Progress",
    "RetentionScheduler",
    "run_job",
]
