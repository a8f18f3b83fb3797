"""Errors: the daemon's JSON-RPC error answers as typed exceptions, and the
client's own (a lost connection, a protocol violation, a gap in a
subscription)."""

import re

__all__ = [
    "WavemeterError", "RpcError", "ParseError", "InvalidRequest", "MethodNotFound",
    "InvalidParams", "InternalError", "Unauthorized", "Timeout", "DeviceUnavailable",
    "RateLimited", "Busy", "NotReady", "StorageFailed", "LaserLocked", "NoActuator",
    "LaserFault", "OutOfRange", "ConnectionLost", "ProtocolError", "SubscriptionGap",
    "error_from_answer",
]


class WavemeterError(Exception):
    """Base of every exception this package raises on purpose (besides the
    built-in TimeoutError for a client-side deadline)."""


class RpcError(WavemeterError):
    """An error answer from the daemon: ``code``, ``message``, ``data``
    (None when the answer had none), ``method`` (the call it answered)."""

    code = None

    def __init__(self, code, message, data=None, method=None):
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data
        self.method = method

    def __str__(self):
        s = "%s (%d)" % (self.message, self.code)
        if self.method:
            s = "%s: %s" % (self.method, s)
        if self.data is not None:
            s += " data=%r" % (self.data,)
        return s


class ParseError(RpcError):
    code = -32700


class InvalidRequest(RpcError):
    code = -32600


class MethodNotFound(RpcError):
    code = -32601


class InvalidParams(RpcError):
    """-32602. Range errors carry the allowed range in ``data``
    (e.g. ``{min_thz, max_thz, requested_thz}``)."""
    code = -32602


class InternalError(RpcError):
    code = -32603


class Unauthorized(RpcError):
    code = -32001


class Timeout(RpcError):
    """-32002: the daemon timed out (not the client's own deadline, which
    raises the built-in TimeoutError)."""
    code = -32002


class DeviceUnavailable(RpcError):
    code = -32003


class RateLimited(RpcError):
    """-32004. ``retry_after`` is the wait in seconds the daemon asked for
    (from ``data.retry_after_s`` or the message's "try again in N s"), or
    None."""
    code = -32004

    @property
    def retry_after(self):
        if isinstance(self.data, dict):
            v = self.data.get("retry_after_s")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        m = re.search(r"try again in ([0-9]+(?:\.[0-9]+)?) ?s", self.message or "")
        return float(m.group(1)) if m else None


class Busy(RpcError):
    """-32005: too many clients, an answer over the client's budget (``data``
    ``{need_bytes, budget_bytes}``), or an actuator write in flight."""
    code = -32005


class NotReady(RpcError):
    code = -32006


class StorageFailed(RpcError):
    """-32007: the change WAS applied, but the state file could not be
    written; it may not survive a restart."""
    code = -32007


class LaserLocked(RpcError):
    code = -32010


class NoActuator(RpcError):
    code = -32011


class LaserFault(RpcError):
    code = -32012


class OutOfRange(RpcError):
    code = -32013


_BY_CODE = {cls.code: cls for cls in (
    ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError, Unauthorized,
    Timeout, DeviceUnavailable, RateLimited, Busy, NotReady, StorageFailed, LaserLocked,
    NoActuator, LaserFault, OutOfRange)}


def error_from_answer(err, method=None):
    """The exception for one answer's ``error`` member."""
    if not isinstance(err, dict):
        return ProtocolError("malformed error member: %r" % (err,))
    code = err.get("code")
    cls = _BY_CODE.get(code, RpcError)
    return cls(code, err.get("message", ""), err.get("data"), method)


class ConnectionLost(WavemeterError, ConnectionError):
    """The connection dropped (or could not be made again) and the call was
    not retried: a write method that was already sent may or may not have
    been applied; check with a read (e.g. ``laser()``)."""


class ProtocolError(WavemeterError):
    """The daemon sent something that is not the JSON-RPC this client
    expects (bad JSON, an answer to a request never made)."""


class SubscriptionGap(WavemeterError):
    """Raised by a subscription made with ``gaps="raise"`` when the
    connection dropped and it was subscribed again: events in between are
    lost. ``gap`` is the Gap marker. The subscription goes on: iterate it
    again."""

    def __init__(self, gap):
        super().__init__(str(gap))
        self.gap = gap
