"""The blocking client."""

import collections
import json
import socket
import threading
import time

from ._common import (Api, DEFAULT_PORT, READ_METHODS, SubscriptionState, encode,
                      is_notification, states_of)
from .errors import ConnectionLost, ProtocolError, RpcError, error_from_answer

__all__ = ["Client", "Subscription"]


class _Dropped(Exception):
    """Internal: the connection is gone (reason in args[0])."""


def _deadline_left(deadline):
    return None if deadline is None else deadline - time.monotonic()


class Client(Api):
    """One TCP connection to wavemeterd, used synchronously.

    ``timeout`` bounds each call (seconds), reconnecting included.
    ``token``: sent with ``auth`` on every (re)connection.
    ``reconnect_timeout``: how long after a drop subscriptions keep trying
    to connect again (None: for ever); the attempts back off from 50 ms to
    ``max_backoff``. ``keepalive``: while a subscription is read, a ping
    after that many seconds of sending nothing, so the daemon's
    ``idle_timeout_s`` does not close a quiet subscription (None: never).

    The connection is made here (one attempt: a refused connection raises
    at once). A Client may be shared by threads: calls are serialized.
    """

    def __init__(self, host="127.0.0.1", port=DEFAULT_PORT, timeout=10.0, token=None,
                 reconnect_timeout=60.0, max_backoff=2.0, keepalive=300.0):
        self.host, self.port = host, port
        self.timeout = timeout
        self.token = token
        self.reconnect_timeout = reconnect_timeout
        self.max_backoff = max_backoff
        self.keepalive = keepalive
        self.last_error = None      # an error the daemon sent unasked (id null)
        self._last_sent = time.monotonic()
        self.connects = 0           # successful connections so far
        self._lock = threading.RLock()
        self._sock = None
        self._buf = b""
        self._next_id = 1
        self._abandoned = set()     # ids of calls that timed out: their answers are skipped
        self._subs = {}             # daemon subscription id -> Subscription
        self._active = []           # every open Subscription, subscribed or waiting to be
        self._dropped_at = None
        self._drop_reason = None
        self._dropped_at_unix = None
        self.unclaimed_pushes = 0   # pushes of no open subscription (dropped)
        self._closed = False
        try:
            self._open(time.monotonic() + timeout)
        except _Dropped as e:
            self._close_sock()
            raise ConnectionLost("connection to %s:%s lost at once: %s" %
                                 (host, port, e.args[0])) from None
        except BaseException:
            self._close_sock()
            raise

    # ---- context manager and closing ----

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Close the connection (its subscriptions end with it)."""
        with self._lock:
            self._closed = True
            for s in self._active:
                s.closed = True
            self._active = []
            self._subs = {}
            self._close_sock()

    def _close_sock(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buf = b""

    # ---- connecting ----

    def _open(self, deadline):
        """One connection attempt, then auth and subscribing again."""
        left = _deadline_left(deadline)
        sock = socket.create_connection(
            (self.host, self.port), timeout=max(0.05, min(self.timeout, left) if left else self.timeout))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buf = sock, b""
        self._abandoned.clear()
        self._subs = {}
        self.connects += 1
        try:
            self._setup(deadline)
        except RpcError:  # auth refused: not a connection to keep
            self._close_sock()
            raise

    def _setup(self, deadline):
        if self.token is not None:
            self._roundtrip("auth", {"token": self.token}, deadline)
        for s in list(self._active):
            if s.closed:
                continue
            try:
                info = self._roundtrip("subscribe", s.params, deadline)
            except RpcError as e:  # e.g. its laser is no longer configured
                s._queue.append(e)
                self._active.remove(s)
                continue
            if s.id is None:          # first subscribe of this one
                s.id, s.info = info["subscription"], info
            else:
                s._queue.append(s._gap(info["subscription"], info, self._drop_reason,
                                       self._dropped_at_unix))
            self._subs[s.id] = s
        self._dropped_at = None

    def _drop(self, reason):
        self._close_sock()
        if self._dropped_at is None:
            self._dropped_at = time.monotonic()
            self._dropped_at_unix = time.time()
            self._drop_reason = str(reason)
        self._subs = {}

    def _reconnect(self, deadline):
        """Connect again, backing off, until deadline (None: for ever)."""
        if self._closed:
            raise ConnectionLost("the client is closed")
        delay = 0.05
        while True:
            try:
                self._open(deadline)
                return
            except (OSError, _Dropped) as e:
                self._drop(e if isinstance(e, OSError) else e.args[0])
                err = e
            left = _deadline_left(deadline)
            if left is not None and left <= 0:
                raise ConnectionLost("cannot connect to %s:%s again: %s" %
                                     (self.host, self.port, err)) from None
            time.sleep(delay if left is None else min(delay, left))
            delay = min(delay * 2, self.max_backoff)

    def _reconnect_deadline(self, deadline):
        if self.reconnect_timeout is None or self._dropped_at is None:
            return deadline
        d = self._dropped_at + self.reconnect_timeout
        return d if deadline is None else min(d, deadline)

    def _alive(self):
        """Whether the connection is still there, without blocking: takes
        what has arrived (pushes are queued) and notices a close."""
        if self._sock is None:
            return False
        self._sock.settimeout(0.0)
        while True:
            try:
                chunk = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._take_lines()
                self._drop(e)
                return False
            if not chunk:
                self._take_lines()
                self._drop("connection closed by the daemon")
                return False
            self._buf += chunk
        self._take_lines()
        return True

    def _take_lines(self):
        """Dispatch the complete lines already received."""
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                return
            line, self._buf = self._buf[:i], self._buf[i + 1:]
            if line.strip():
                msg = self._parse(line)
                if not self._dispatch(msg):
                    self._stray(msg)

    # ---- reading ----

    def _parse(self, line):
        try:
            return json.loads(line)
        except ValueError as e:
            raise ProtocolError("not JSON from the daemon: %r (%s)" % (line[:200], e)) from None

    def _dispatch(self, msg):
        """Queue a push for its subscription; True if msg was one."""
        if not is_notification(msg):
            return False
        p = msg.get("params")
        if isinstance(p, dict):
            s = self._subs.get(p.get("subscription"))
            if s is not None:
                s._queue.append(p)
                return True
        self.unclaimed_pushes += 1
        return True  # pushes of a subscription no longer ours are dropped

    def _stray(self, msg):
        """An answer nobody waits for: fine if its call timed out."""
        if isinstance(msg, dict) and msg.get("id") in self._abandoned:
            self._abandoned.discard(msg["id"])
            return
        if isinstance(msg, dict) and msg.get("id", 0) is None and "error" in msg:
            self.last_error = error_from_answer(msg["error"])  # e.g. before a close
            return
        raise ProtocolError("unexpected answer: %r" % (msg,))

    def _read_msg(self, deadline):
        """The next message, or TimeoutError at deadline, or _Dropped."""
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 1:]
                if line.strip():
                    return self._parse(line)
                continue
            if self._sock is None:
                raise _Dropped(self._drop_reason or "not connected")
            left = _deadline_left(deadline)
            if left is not None and left <= 0:
                raise TimeoutError("no answer from %s:%s in time" % (self.host, self.port))
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                self._drop(e)
                raise _Dropped(str(e)) from None
            if not chunk:
                self._drop("connection closed by the daemon")
                raise _Dropped("connection closed by the daemon")
            self._buf += chunk

    def _roundtrip(self, method, params, deadline):
        """Send one request on the present connection and wait for its
        answer; pushes meanwhile are queued. Raises _Dropped."""
        req_id = self._next_id
        self._next_id += 1
        try:
            self._sock.sendall(encode(req_id, method, params))
            self._last_sent = time.monotonic()
        except OSError as e:
            self._drop(e)
            raise _Dropped(str(e)) from None
        try:
            while True:
                msg = self._read_msg(deadline)
                if self._dispatch(msg):
                    continue
                if isinstance(msg, dict) and msg.get("id") == req_id:
                    break
                if isinstance(msg, dict) and msg.get("id") is None and "error" in msg:
                    break  # e.g. "too many clients" before the daemon closes
                self._stray(msg)
        except TimeoutError:
            self._abandoned.add(req_id)
            raise TimeoutError("%s: no answer within the deadline" % method) from None
        if "error" in msg:
            raise error_from_answer(msg["error"], method)
        if "result" not in msg:
            raise ProtocolError("answer without result or error: %r" % (msg,))
        return msg["result"]

    # ---- calls ----

    def call(self, method, params=None, timeout=None):
        """One JSON-RPC call; returns its result or raises its RpcError.

        After a dropped connection a read method is sent again once on a
        new connection; a write method raises ConnectionLost if it had been
        sent (if the drop is noticed before sending, the client reconnects
        first). A client-side deadline raises TimeoutError."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        retried = False
        with self._lock:
            while True:
                if self._closed:
                    raise ConnectionLost("the client is closed")
                if not self._alive():
                    self._reconnect(self._reconnect_deadline(deadline))
                try:
                    return self._roundtrip(method, params, deadline)
                except _Dropped as e:
                    if method in READ_METHODS and not retried:
                        retried = True
                        continue
                    raise ConnectionLost(
                        "connection to %s:%s lost after %s was sent (%s); it may or may not "
                        "have been applied" % (self.host, self.port, method, e.args[0])) from None

    # ---- subscriptions ----

    def subscribe(self, topics, lasers=None, channels=None, max_rate_hz=None, gaps="yield",
                  idle_timeout=None):
        """Subscribe to ``topics`` ("readings", "locks", "status"), narrowed
        to ``lasers``/``channels``, at most ``max_rate_hz`` per laser and
        topic. Returns a Subscription: iterate it for the notification
        params dicts ({subscription, seq, missed?, reading|lock|status})."""
        s = Subscription(self, topics, lasers, channels, max_rate_hz, gaps, idle_timeout)
        with self._lock:
            info = self.call("subscribe", s.params)
            s.id, s.info = info["subscription"], info
            self._subs[s.id] = s
            self._active.append(s)
        return s

    def _unsubscribe(self, s):
        with self._lock:
            if s in self._active:
                self._active.remove(s)
            sid = s.id
            if self._subs.get(sid) is s:
                del self._subs[sid]
                if self._alive():
                    try:
                        self._roundtrip("unsubscribe", {"subscription": sid},
                                        time.monotonic() + self.timeout)
                    except _Dropped:
                        pass  # it ended with the connection

    def _next_push(self, s, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if s._queue:
                    return s._take(s._queue.popleft())
                if s.closed:
                    raise StopIteration
                if self._sock is None:
                    rd = self._reconnect_deadline(None)
                    end = rd if deadline is None else (deadline if rd is None else min(rd, deadline))
                    try:
                        self._reconnect(end)
                    except ConnectionLost:
                        if rd is not None and time.monotonic() >= rd:
                            s.closed = True
                            raise
                        raise TimeoutError("no push within %s s (reconnecting)" % timeout) from None
                    continue
                if self.keepalive is not None and \
                        time.monotonic() - self._last_sent > self.keepalive:
                    try:
                        self._roundtrip("ping", None, time.monotonic() + self.timeout)
                    except (_Dropped, TimeoutError):
                        pass  # noticed below, or next time
                    continue
                # Read in slices so other threads' calls get their turn.
                left = _deadline_left(deadline)
                slice_end = time.monotonic() + (0.2 if left is None else max(0.0, min(0.2, left)))
                try:
                    msg = self._read_msg(slice_end)
                    if not self._dispatch(msg):
                        self._stray(msg)
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError("no push within %s s" % timeout) from None
                except _Dropped:
                    pass

    # ---- helpers ----

    def wait_for_state(self, laser, state, timeout=30.0):
        """Block until ``laser``'s lock state is ``state`` (a string or a
        collection of them) and return the lock dict that says so (the
        push's ``lock``, or ``laser.get``'s answer if it already was).
        Built on a ``locks`` subscription; TimeoutError after ``timeout``."""
        want = states_of(state)
        deadline = time.monotonic() + timeout
        with self.subscribe(["locks"], lasers=[laser]) as sub:
            cur = self.laser(laser)
            last = cur.get("state")
            while last not in want:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("laser %r is %r, not %s, after %s s" %
                                       (laser, last, "/".join(want), timeout))
                try:
                    item = sub.get(timeout=left)
                except TimeoutError:
                    continue
                if isinstance(item, dict):
                    cur = item["lock"]
                else:  # a gap: ask again
                    cur = self.laser(laser)
                last = cur.get("state")
            return cur


class Subscription(SubscriptionState):
    """A live subscription of a Client. Iterating blocks for the next push
    (``idle_timeout`` s at most, then TimeoutError; None: no limit) and
    yields its params dict; after a reconnection it yields a Gap (or raises
    SubscriptionGap with ``gaps="raise"``). ``missed``: pushes the daemon
    dropped for a slow reader, in total; ``id``: the daemon's number for it.
    ``close()`` (or leaving a ``with`` block) unsubscribes."""

    def __init__(self, client, topics, lasers, channels, max_rate_hz, gaps, idle_timeout):
        self._init_state(topics, lasers, channels, max_rate_hz, gaps)
        self._client = client
        self._queue = collections.deque()
        self.idle_timeout = idle_timeout

    def get(self, timeout=None):
        """The next push (or Gap); TimeoutError after ``timeout`` s."""
        if self.closed and not self._queue:
            raise ConnectionLost("subscription is closed")
        try:
            return self._client._next_push(self, timeout)
        except StopIteration:
            raise ConnectionLost("subscription is closed") from None

    def __iter__(self):
        return self

    def __next__(self):
        if self.closed and not self._queue:
            raise StopIteration
        return self._client._next_push(self, self.idle_timeout)

    def close(self):
        """Unsubscribe: no push of it follows."""
        if not self.closed:
            self.closed = True
            self._client._unsubscribe(self)
        self._queue.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
