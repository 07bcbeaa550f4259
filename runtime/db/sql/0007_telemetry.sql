-- The trace context of the work that queued a delivery (W3C traceparent), so its send
-- continues that trace: a WebSocket change -> ... -> the email it caused is one trace.
ALTER TABLE deliveries ADD COLUMN traceparent text;
