"""The shared runtime of the edge (``app``) and the workers: database access and migrations
(``runtime.db``), the NATS + PostgreSQL connections, a wedding's event log, the presence
table, crypto and the webhook destination guard. It imports neither ``app`` nor ``workers``."""
