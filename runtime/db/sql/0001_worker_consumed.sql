-- Which stream messages each worker consumer has committed the effects of.
-- Written in the same transaction as a handler's effects, so a redelivered message
-- (crash between commit and ack) is recognised and changes nothing twice.
CREATE TABLE worker_consumed (
    consumer    text        NOT NULL,
    stream      text        NOT NULL,
    stream_seq  bigint      NOT NULL,
    consumed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream, stream_seq)
);
