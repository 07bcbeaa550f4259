"""Sessions: one per device that joined a wedding (the rows behind the session API and the
WebSocket handshake), their expiry and ending."""
