"""The operator API (/api/admin): streams, consumers, dead letters, sessions, audit."""
