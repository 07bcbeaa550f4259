/** The server refused a frame (`forbidden`, `invalid`, `too_large`, ...): nothing stored.
 * Also thrown before sending for a frame the server would refuse without naming it (an
 * unknown channel, a malformed entity id: it cannot decode the frame's id), code `invalid`. */
export class ServerError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "ServerError";
    this.code = code;
  }
}

/** The room stopped for good: left by the app, or refused by the server (`code`). */
export class RoomClosed extends Error {
  readonly code: number | null;
  readonly reason: string;
  constructor(code: number | null, reason: string) {
    super(code === null ? `closed: ${reason}` : `closed (${code}): ${reason}`);
    this.name = "RoomClosed";
    this.code = code;
    this.reason = reason;
  }
}

/** An HTTP call of the API answered with an error body `{code, message}`. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(`HTTP ${status} ${code}: ${message}`);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
  }
}
