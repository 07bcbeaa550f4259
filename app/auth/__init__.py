"""Authentication (JWT), contact-detail encryption and rate limits."""

from app.auth.crypto import ContactCipher
from app.auth.guard import AuthContext, client_ip, limit_by_ip, provide_identity
from app.auth.guest_contacts import GuestContacts
from app.auth.ratelimit import RateLimits
from app.auth.tokens import Identity, TokenVerifier, issue_token

__all__ = [
    "AuthContext",
    "ContactCipher",
    "GuestContacts",
    "Identity",
    "RateLimits",
    "TokenVerifier",
    "client_ip",
    "issue_token",
    "limit_by_ip",
    "provide_identity",
]
