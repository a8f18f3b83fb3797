"""wavemeter: a client for wavemeterd (newline-delimited JSON-RPC 2.0 over
TCP). Pure standard library, Python >= 3.9.

    from wavemeter import Client
    with Client("127.0.0.1", 7420) as wm:
        print(wm.read("399")["frequency_thz"])

See docs/PYTHON.md in the wavemeterd sources."""

from ._common import READ_METHODS, Gap
from .aio import AsyncClient, AsyncSubscription
from .client import Client, Subscription
from .errors import (Busy, ConnectionLost, DeviceUnavailable, InternalError, InvalidParams,
                     InvalidRequest, LaserFault, LaserLocked, MethodNotFound, NoActuator,
                     NotReady, OutOfRange, ParseError, ProtocolError, RateLimited, RpcError,
                     StorageFailed, SubscriptionGap, Timeout, Unauthorized, WavemeterError,
                     error_from_answer)

__version__ = "0.1.0"

__all__ = [
    "Client", "Subscription", "AsyncClient", "AsyncSubscription", "Gap", "READ_METHODS",
    "WavemeterError", "RpcError", "ParseError", "InvalidRequest", "MethodNotFound",
    "InvalidParams", "InternalError", "Unauthorized", "Timeout", "DeviceUnavailable",
    "RateLimited", "Busy", "NotReady", "StorageFailed", "LaserLocked", "NoActuator",
    "LaserFault", "OutOfRange", "ConnectionLost", "ProtocolError", "SubscriptionGap",
    "error_from_answer", "read_token",
]


def read_token(path):
    """The token in a file (the daemon's cookie, access.token_file): its
    first line, without the newline."""
    with open(path, encoding="utf-8") as f:
        return f.readline().strip()
