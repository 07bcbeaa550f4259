// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.
/** The server refused a frame (`forbidden`, `invalid`, `too_large`, ...): nothing stored.
 * Also thrown before sending for a frame the server would refuse without naming it (an
 * unknown channel, a malformed entity id: it cannot decode the frame's id), code `invalid`. */
export class ServerError extends Error {
    code;
    constructor(code, message) {
        super(`${code}: ${message}`);
        this.name = "ServerError";
        this.code = code;
    }
}
/** The room stopped for good: left by the app, or refused by the server (`code`). */
export class RoomClosed extends Error {
    code;
    reason;
    constructor(code, reason) {
        super(code === null ? `closed: ${reason}` : `closed (${code}): ${reason}`);
        this.name = "RoomClosed";
        this.code = code;
        this.reason = reason;
    }
}
/** An HTTP call of the API answered with an error body `{code, message}`. */
export class HttpError extends Error {
    status;
    code;
    constructor(status, code, message) {
        super(`HTTP ${status} ${code}: ${message}`);
        this.name = "HttpError";
        this.status = status;
        this.code = code;
    }
}
