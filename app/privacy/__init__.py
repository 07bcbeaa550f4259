"""Personal data: export everything about a person, and erase what is theirs."""

from app.privacy.erase import Erasure, erase
from app.privacy.export import export
from app.privacy.redact import Identifiers, Redactor, erase_event

__all__ = ["Erasure", "Identifiers", "Redactor", "erase", "erase_event", "export"]
