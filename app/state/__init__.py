"""A wedding's current state over HTTP (``GET /api/weddings/{id}/state``), folded by the
conflicts worker."""
