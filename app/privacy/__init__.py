"""Personal data: export everything about a person, and erase it everywhere it lives."""

from app.privacy.erase import Erasure, erase
from app.privacy.export import export
from app.privacy.redact import Redactor

__all__ = ["Erasure", "Redactor", "erase", "export"]
