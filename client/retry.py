"""When to send again what the server did not store: one gate per client.

``unavailable``, ``overloaded`` and ``rate_limited`` mean the frame was not stored and may
be sent again with the same id. Re-sending each refused frame on its own short timer turns
an outage into an error storm: every pending frame bounces back twice a second for as long
as it lasts, and the whole backlog lands at once when the service returns. So the client
shuts a gate at the first refusal instead:

* nothing more goes out (new sends are held too, in order);
* after a full-jitter wait, ``uniform(0, min(cap, base * 2**n))`` for the n-th refused
  round (at least the server's ``retry_after`` when it gave one, plus up to ``base`` of
  jitter), exactly one frame goes out: the probe (the oldest held frame);
* its ack opens the gate and everything held goes out in send order, with the ids it had
  (the server stores each once); a refusal of the probe starts the next, longer, wait.

During an outage of any length the client sends about one frame per wait, and clients
that lost the same server come back spread over the wait, not in lockstep. Pure logic (the
caller passes the time and does the sending), so it is tested without a network.
"""

from __future__ import annotations

from client.backoff import Backoff

#: error codes meaning "not stored: send the same id again later"
RETRYABLE = frozenset({"unavailable", "overloaded", "rate_limited"})


class RetryGate:
    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.held: dict[str, None] = {}  # client ids waiting for the gate, in send order
        self.probe: str | None = None  # the one frame sent to test the service
        self.probe_at = 0.0  # when the probe was (last) sent
        self.rounds = 0  # refused rounds in a row: the backoff attempt
        self.reopen_at = 0.0  # before this (monotonic) time nothing is sent

    @property
    def shut(self) -> bool:
        """Frames are held: do not send new ones, hold them (:meth:`hold`)."""
        return bool(self.held) or self.probe is not None

    def hold(self, client_id: str) -> None:
        self.held[client_id] = None

    def refused(self, client_id: str, retry_after: float | None, now: float) -> None:
        """``client_id`` came back not stored. The first refusal once the last wait is
        over (the probe's, typically) starts a new, longer wait; refusals of frames that
        were in flight when the gate shut just join the held ones."""
        if client_id == self.probe:
            self.probe = None
        self.held[client_id] = None
        if now >= self.reopen_at:
            self.reopen_at = now + self.backoff.delay(self.rounds)
            self.rounds += 1
        if retry_after is not None and retry_after > 0:  # the server knows: at least that
            self.reopen_at = max(self.reopen_at, now + retry_after + self.backoff.delay(0))

    def next_probe(self, now: float) -> str | None:
        """The frame to send now, if the wait is over and no probe is out."""
        if self.probe is not None or not self.held or now < self.reopen_at:
            return None
        self.probe = next(iter(self.held))
        del self.held[self.probe]
        self.probe_at = now
        return self.probe

    def acked(self, client_id: str) -> list[str]:
        """An ack arrived; the ids to send now (all held ones once the probe is stored)."""
        if client_id != self.probe:
            self.held.pop(client_id, None)
            return []
        self.probe, self.rounds = None, 0
        released = list(self.held)
        self.held.clear()
        return released

    def settled(self, client_id: str) -> None:
        """``client_id`` was answered otherwise (refused for good) or given up."""
        self.held.pop(client_id, None)
        if client_id == self.probe:
            self.probe = None  # the next one probes, the wait being over

    def overdue(self, now: float, timeout: float) -> bool:
        """The probe is out for longer than ``timeout`` without an answer."""
        return self.probe is not None and now - self.probe_at >= timeout

    def clear(self) -> None:
        self.held.clear()
        self.probe, self.rounds, self.reopen_at = None, 0, 0.0
