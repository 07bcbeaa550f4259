"""The WebSocket protocol and the event envelope stored on JetStream (msgspec tagged unions).

Client frames and server frames are JSON objects discriminated by ``"type"``. Stored events
are the exact bytes the gateway splices into ``event`` frames, so an event is encoded once
when accepted and never re-encoded per receiver.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated, Any

import msgspec

from streams.limits import INT64_MAX, Unstorable, check, decode_error, utf8_over
from streams.notifications import Notification, NotificationFrame
from streams.permissions import Access, Channel, Role, WeddingStatus
from streams.presence import Editing, Status, UserPresence
from streams.state import EntityId, EntityKind, Op

ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

#: ``Sec-WebSocket-Protocol``: a client offers ``[SUBPROTOCOL, TOKEN_PREFIX + token]`` and
#: the server answers ``SUBPROTOCOL`` (it never echoes the token).
SUBPROTOCOL = "wedsync.v1"
TOKEN_PREFIX = "wedsync.token."


# -- errors and close codes (docs/protocol.md: "Error codes", "Close codes") -------------


class ErrorCode(StrEnum):
    """The ``code`` of an error frame: the frame was refused, the socket stays open. The one
    list of them (docs/protocol.md checks against it); spelled as the HTTP taxonomy spells
    the same errors (app/errors.py). ``ErrorFrame.code`` stays a plain string on the wire,
    so a client built against an older list still decodes a newer code."""

    INVALID = "invalid"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"


class Close(IntEnum):
    """WebSocket close codes: 4000-4499 the client may reconnect (and resume); 4500-4999 not."""

    GOING_AWAY = 4000  # server shutting down
    SLOW_CONSUMER = 4001  # outgoing queue overflowed: reconnect and resume
    SERVER_ERROR = 4002  # unexpected server failure: reconnect (with backoff) and resume
    RECONNECT = 4005  # an operator asked the client to reconnect (and resume)
    AUTH_TIMEOUT = 4008  # no token and no ``auth`` frame in time: reconnect and authenticate
    TRY_LATER = 4029  # too many connections for this user right now
    INVALID_SESSION = 4500  # unknown, expired or ended session token
    FORBIDDEN = 4503  # not (or no longer) a member of this wedding, or wrong wedding
    SESSION_ENDED = 4504  # the session was ended (leave, member removed, cap, operator)
    DISCONNECTED = 4505  # disconnected by an operator: do not reconnect by yourself


# -- client → server ---------------------------------------------------------------------


class MessageFrame(msgspec.Struct, tag="message", forbid_unknown_fields=True):
    id: ClientId
    channel: Channel
    data: dict[str, Any]


Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]


class ResumeFrame(msgspec.Struct, tag="resume", forbid_unknown_fields=True):
    after_seq: Seq
    epoch: str | None = None  # from the welcome; another epoch means seqs were reset


class PingFrame(msgspec.Struct, tag="ping", forbid_unknown_fields=True):
    pass


class PresenceFrame(msgspec.Struct, tag="presence", forbid_unknown_fields=True):
    """Update your own presence; absent fields are unchanged, ``editing: null`` clears."""

    status: Status | msgspec.UnsetType = msgspec.UNSET
    location: Annotated[str, msgspec.Meta(max_length=256)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    editing: Editing | msgspec.UnsetType | None = msgspec.UNSET


class ChangeFrame(msgspec.Struct, tag="change", forbid_unknown_fields=True):
    """Create, update or delete one entity; ``base_version`` is the version the author
    saw (null on create). Acked once stored on WEDSYNC_CHANGES; applied by the worker."""

    id: ClientId
    entity: EntityKind
    entity_id: EntityId
    op: Op
    fields: dict[str, Any] = {}
    base_version: Seq | None = None


class SignalKind(StrEnum):
    TYPING = "typing"  # in ``channel`` (one the sender may write): "Ann is typing..."
    VIEWING = "viewing"  # ``target`` (e.g. "seating_chart"), in ``channel`` if given


#: seconds a receiver shows a signal that is not renewed (a sender renews every few seconds
#: while it lasts, and sends ``active: false`` when it ends)
SIGNAL_TTL = 5.0
SignalTarget = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class SignalFrame(msgspec.Struct, tag="signal", forbid_unknown_fields=True):
    """An ephemeral signal ("typing...", "looking at the seating chart"): relayed live to
    the room over core NATS, never stored, never acked; rate limited like presence."""

    kind: SignalKind
    channel: Channel | None = None
    target: SignalTarget | None = None
    active: bool = True


ClientFrame = MessageFrame | ResumeFrame | PingFrame | PresenceFrame | ChangeFrame | SignalFrame

_client_frame = msgspec.json.Decoder(ClientFrame)


class FrameRefused(Exception):
    """A client frame the gateway answers with an error frame (``code``: ``too_large`` or
    ``invalid``) without acting on it; the socket stays open."""

    def __init__(self, code: ErrorCode, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.frame_id = code, message[:200], frame_id


def decode_client_frame(raw: str, max_bytes: int) -> ClientFrame:
    """One text frame as the gateway accepts it: at most ``max_bytes`` of UTF-8, a valid
    client frame, and storable as a whole (:mod:`streams.limits`), else
    :class:`FrameRefused`. A frame too deep for the decoder itself is refused alike."""
    if utf8_over(raw, max_bytes):
        raise FrameRefused(ErrorCode.TOO_LARGE, f"frame over {max_bytes} bytes")
    if not raw:
        message = "empty or binary frame: frames are JSON text messages"
        raise FrameRefused(ErrorCode.INVALID, message)
    try:
        frame = _client_frame.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        message = decode_error(str(exc), raw) if isinstance(exc, msgspec.DecodeError) else str(exc)
        raise FrameRefused(ErrorCode.INVALID, message) from None
    except RecursionError:
        raise FrameRefused(ErrorCode.INVALID, "nested too deeply to decode") from None
    try:
        check(frame, from_json=True)
    except Unstorable as exc:  # a well-formed frame: its id settles the sender's promise
        raise FrameRefused(ErrorCode.INVALID, str(exc), getattr(frame, "id", None)) from None
    return frame


class AuthFrame(msgspec.Struct, tag="auth", forbid_unknown_fields=True):
    """The first frame of a socket opened without a token (docs/protocol.md, "Auth");
    not a :data:`ClientFrame`: anywhere else it is ``invalid``."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


# -- stored on JetStream -----------------------------------------------------------------


class Actor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who authored an event. ``server`` is only ever true for :data:`SERVER_ACTOR` (the
    gateway never sets it for a member), and is left out of the JSON when false."""

    user_id: str
    role: Role
    server: bool = False


#: The author of server events (``POST /api/admin/weddings/{id}/events``): operators and
#: backends, not a member. ``server: true`` is what marks it (a member's JWT ``sub`` could
#: be "server" too); the planner role is what role-based readers treat it as.
SERVER_ACTOR = Actor(user_id="server", role=Role.PLANNER, server=True)
#: The author of changes the system makes itself (an approval's expiry, an erase clearing
#: a task's assignee): published on WEDSYNC_CHANGES like a member's, applied by the worker.
SYSTEM_ACTOR = Actor(user_id="system", role=Role.PLANNER)
#: The audit log's actor for what the admin API did.
ADMIN_API_ACTOR = "admin-api"

#: User ids that name the system, never a person: refused as a JWT ``sub`` (401
#: ``reserved_subject``) and as a member id, so no member can be taken for the system in
#: the audit log, the history or an export (compared case-insensitively, trimmed).
RESERVED_USER_IDS = frozenset({SERVER_ACTOR.user_id, SYSTEM_ACTOR.user_id, ADMIN_API_ACTOR})


def reserved_user_id(user_id: str) -> bool:
    return user_id.strip().casefold() in RESERVED_USER_IDS


class Event(msgspec.Struct, frozen=True):
    """The envelope of every event in WEDSYNC_EVENTS."""

    id: str
    type: str
    channel: Channel
    actor: Actor
    data: dict[str, Any]
    ts: float


# -- server → client ---------------------------------------------------------------------


class WelcomeFrame(msgspec.Struct, tag="welcome"):
    session_id: str
    user_id: str
    role: Role
    permissions: dict[str, Access]
    last_seq: int
    epoch: str  # identifies the event stream's life: seqs are comparable within one epoch
    presence: list[UserPresence] = []  # who is here, as this member may see it


class PermissionsFrame(msgspec.Struct, tag="permissions"):
    """What this socket may do changed (a role change, the wedding completed): from now on
    writes are checked against these, as the welcome's were."""

    role: Role
    status: WeddingStatus
    permissions: dict[str, Access]


class AckFrame(msgspec.Struct, tag="ack"):
    id: str
    seq: int


class ErrorFrame(msgspec.Struct, tag="error", omit_defaults=True):
    """``id`` names the frame refused (when there is one); ``retry_after`` (seconds) comes
    with ``overloaded``: resend the same frame, same id, no sooner than that."""

    code: str
    message: str
    id: str | None = None
    retry_after: float | None = None  # seconds, on `overloaded`: send again no sooner


class ResumedFrame(msgspec.Struct, tag="resumed"):
    after_seq: int
    last_seq: int
    recovered: bool
    epoch: str


class EventFrame(msgspec.Struct, tag="event"):
    """Built by :func:`event_frame` on the server (no re-encoding); decoded by clients."""

    seq: int
    event: Event


class PongFrame(msgspec.Struct, tag="pong"):
    pass


class PresenceDiffFrame(msgspec.Struct, tag="presence_diff"):
    """Changes since the last diff; each entry lists only the connections concerned."""

    joins: list[UserPresence]
    leaves: list[UserPresence]
    updates: list[UserPresence]


class EditingPeer(msgspec.Struct):
    user_id: str
    display_name: str | None
    connection_id: str


class EditingConflictFrame(msgspec.Struct, tag="editing_conflict"):
    """Advisory: someone else is editing the same field right now."""

    editing: Editing
    peers: list[EditingPeer]


class PeerSignalFrame(msgspec.Struct, tag="peer_signal"):
    """Another member's :class:`SignalFrame`, to the members who may read its channel and
    see its sender (presence visibility); show it for ``SIGNAL_TTL`` seconds unless renewed
    or ended (``active: false``)."""

    user_id: str
    display_name: str | None
    connection_id: str
    kind: SignalKind
    channel: Channel | None
    target: str | None
    active: bool


ServerFrame = (
    WelcomeFrame
    | EventFrame
    | AckFrame
    | ErrorFrame
    | ResumedFrame
    | PongFrame
    | PresenceDiffFrame
    | EditingConflictFrame
    | NotificationFrame
    | PermissionsFrame
    | PeerSignalFrame
)


def event_frame(seq: int, stored: bytes) -> str:
    """``{"type":"event","seq":N,"event":<stored bytes>}`` without decoding the event."""
    return '{"type":"event","seq":%d,"event":%s}' % (seq, stored.decode())  # noqa: UP031


class EventPage(msgspec.Struct):
    """``GET /api/weddings/{id}/events``: events after ``after_seq``, oldest first."""

    events: list[dict[str, Any]]
    last_seq: int
    next_after_seq: int | None


# -- across gateway processes (core NATS, never stored) -----------------------------------
#
# On ``wedsync.control.<wedding_id>``, each one tells every gateway process to act at once on
# its sockets of the wedding: one Struct per ``kind`` (the tag), one decoder for the subject.
# The JSON is the one the single ControlMessage struct of earlier versions wrote, less its
# null fields: an old process decodes a new message and a new one an old message (unknown
# fields are ignored), so a rolling upgrade keeps control messages working both ways.


class _Control(msgspec.Struct, frozen=True, tag_field="kind"):
    pass


class SessionsEnded(_Control, frozen=True, tag="sessions_ended"):
    """Close these sessions' sockets with 4504."""

    session_ids: list[str]


class RoleChanged(_Control, frozen=True, tag="role_changed"):
    """``user_id``'s new role (a ``permissions`` frame); None: removed, closed with 4503."""

    user_id: str
    role: Role | None


class StatusChanged(_Control, frozen=True, tag="status_changed"):
    """The wedding's new status (completed: read-only; cancelled: closed with 4503)."""

    status: WeddingStatus


class NotificationSent(_Control, frozen=True, tag="notification"):
    """A ``notification`` frame for ``user_id``'s sockets in the wedding."""

    user_id: str
    notification: Notification


class Disconnect(_Control, frozen=True, tag="disconnect"):
    """Close ``user_id``'s sockets in the wedding with ``code`` (DISCONNECTED, RECONNECT or
    SESSION_ENDED: the admin API's disconnect) and ``reason``."""

    user_id: str
    code: Close
    reason: str


ControlMessage = SessionsEnded | RoleChanged | StatusChanged | NotificationSent | Disconnect
