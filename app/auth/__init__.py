"""Authentication (JWT), contact-detail encryption and rate limits."""

from app.auth.guard import (
    AuthContext,
    admit_handshake,
    bearer,
    client_ip,
    is_admin_token,
    limit_request,
    provide_identity,
)
from app.auth.ratelimit import RateLimits
from app.auth.tokens import Identity, TokenVerifier, issue_token
from runtime.crypto import ContactCipher
from runtime.guest_contacts import GuestContacts

__all__ = [
    "AuthContext",
    "ContactCipher",
    "GuestContacts",
    "Identity",
    "RateLimits",
    "TokenVerifier",
    "admit_handshake",
    "bearer",
    "client_ip",
    "is_admin_token",
    "issue_token",
    "limit_request",
    "provide_identity",
]
