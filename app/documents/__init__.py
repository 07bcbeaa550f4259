"""Live documents (Yjs) of a wedding: the HTTP routes, the y-websocket endpoint, the rooms
of one process, and all their SQL (docs/documents.md)."""

from app.documents.rooms import DocumentHub
from app.documents.routes import DocumentController
from app.documents.socket import document_socket

__all__ = ["DocumentController", "DocumentHub", "document_socket"]
