"""A wedding's event history over HTTP (GET /api/weddings/{id}/events)."""
