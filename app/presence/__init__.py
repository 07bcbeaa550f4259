"""Presence over HTTP: who is in a wedding room now, and presence minutes. The records
themselves are the gateway's (:mod:`app.gateway.tracker`) and the table is shared runtime
(:mod:`runtime.presence`)."""
