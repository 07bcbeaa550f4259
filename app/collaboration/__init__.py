"""The session API (``/api/collaboration/join/{wedding_id}``: join, inspect, leave) and the
session rows."""
