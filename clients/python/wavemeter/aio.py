"""The asyncio client."""

import asyncio
import json
import time

from ._common import (Api, DEFAULT_PORT, READ_METHODS, SubscriptionState, encode,
                      is_notification, states_of)
from .errors import ConnectionLost, ProtocolError, RpcError, error_from_answer

__all__ = ["AsyncClient", "AsyncSubscription"]

# The longest line accepted from the daemon (its answers to one client are
# bounded by limits.write_queue_max_bytes, 1 MiB by default).
LINE_LIMIT = 64 * 1024 * 1024


class _Dropped(Exception):
    """Internal: the connection dropped while a call waited."""


class AsyncClient(Api):
    """The same calls as Client, as coroutines, on one connection that a
    reader task serves: calls from many tasks may be in flight at once.

    ``async with AsyncClient(...) as c`` connects (one attempt; or
    ``await c.connect()``); a call made first connects too. After a drop
    the next call connects again (read methods in flight are sent again
    once, write methods in flight raise ConnectionLost); while
    subscriptions are open, a background task reconnects at once, backing
    off from 50 ms to ``max_backoff``, subscribes them again and queues a
    Gap in each. It gives up after ``reconnect_timeout`` s (None: never):
    the subscriptions then raise ConnectionLost."""

    def __init__(self, host="127.0.0.1", port=DEFAULT_PORT, timeout=10.0, token=None,
                 reconnect_timeout=60.0, max_backoff=2.0, keepalive=300.0):
        self.host, self.port = host, port
        self.timeout = timeout
        self.token = token
        self.reconnect_timeout = reconnect_timeout
        self.max_backoff = max_backoff
        self.keepalive = keepalive
        self._last_sent = time.monotonic()
        self.connects = 0
        self._writer = None
        self._reader_task = None
        self._keepalive_task = None
        self._gen = 0                 # connection generation
        self._next_id = 1
        self._pending = {}            # id -> (future, on_answer)
        self._subs = {}               # daemon subscription id -> AsyncSubscription
        self._active = []             # open subscriptions
        self._conn_lock = None
        self._reconnect_task = None
        self._dropped_at = None
        self._dropped_at_unix = None
        self._drop_reason = None
        self.unclaimed_pushes = 0   # pushes of no open subscription (dropped)
        self._closed = False

    # ---- life ----

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()
        return False

    @property
    def connected(self):
        return self._writer is not None

    async def connect(self):
        """Connect now (one attempt), unless connected."""
        await self._ensure(time.monotonic() + self.timeout, attempts=1)

    async def close(self):
        self._closed = True
        for s in self._active:
            s.closed = True
            s._put(ConnectionLost("the client is closed"))
        self._active = []
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._disconnect("the client is closed")
        rt, self._reader_task = self._reader_task, None
        if rt is not None and rt is not asyncio.current_task():
            rt.cancel()
            try:
                await rt
            except (asyncio.CancelledError, Exception):
                pass

    def _disconnect(self, reason):
        self._gen += 1
        ka, self._keepalive_task = self._keepalive_task, None
        if ka is not None and ka is not asyncio.current_task():
            ka.cancel()
        w, self._writer = self._writer, None
        if w is not None:
            w.close()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(_Dropped(reason))
        self._pending = {}
        self._subs = {}

    def _lost(self, reason):
        """The reader saw the connection go."""
        if self._dropped_at is None:
            self._dropped_at = time.monotonic()
            self._dropped_at_unix = time.time()
            self._drop_reason = str(reason)
        self._disconnect(reason)
        if self._active and not self._closed and (self._reconnect_task is None or
                                                  self._reconnect_task.done()):
            self._reconnect_task = asyncio.ensure_future(self._reconnect_in_background())

    async def _reconnect_in_background(self):
        try:
            await self._ensure(self._reconnect_deadline(None))
        except ConnectionLost as e:
            for s in self._active:
                s._put(e)
            self._active = []
        except asyncio.CancelledError:
            raise
        except RpcError as e:  # e.g. auth refused
            for s in self._active:
                s._put(e)
            self._active = []

    def _reconnect_deadline(self, deadline):
        if self.reconnect_timeout is None or self._dropped_at is None:
            return deadline
        d = self._dropped_at + self.reconnect_timeout
        return d if deadline is None else min(d, deadline)

    async def _ensure(self, deadline, attempts=None):
        if self._writer is not None:
            return
        if self._closed:
            raise ConnectionLost("the client is closed")
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
        async with self._conn_lock:
            delay, n = 0.05, 0
            while self._writer is None:
                if self._closed:
                    raise ConnectionLost("the client is closed")
                n += 1
                try:
                    left = None if deadline is None else deadline - time.monotonic()
                    await asyncio.wait_for(self._open(deadline),
                                           None if left is None else max(0.05, left))
                    return
                except RpcError:  # auth refused: no use trying again
                    self._disconnect("auth refused")
                    raise
                except (OSError, _Dropped, asyncio.TimeoutError) as e:
                    self._disconnect(str(e))
                    err = e
                if attempts is not None and n >= attempts:
                    if isinstance(err, OSError):
                        raise err
                    raise ConnectionLost("cannot connect to %s:%s: %s" % (self.host, self.port, err))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ConnectionLost("cannot connect to %s:%s again: %s" %
                                         (self.host, self.port, err or "timed out"))
                await asyncio.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, self.max_backoff)

    async def _open(self, deadline):
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=LINE_LIMIT)
        self._gen += 1
        gen = self._gen
        self._writer = writer
        self.connects += 1
        self._reader_task = asyncio.ensure_future(self._read_loop(reader, gen))
        if self.keepalive is not None:
            self._keepalive_task = asyncio.ensure_future(self._keepalive(gen))
        if self.token is not None:
            await self._roundtrip("auth", {"token": self.token}, deadline)
        for s in list(self._active):
            if s.closed:
                continue
            try:
                await self._roundtrip("subscribe", s.params, deadline, on_answer=s._subscribed)
            except RpcError as e:
                s._put(e)
                self._active.remove(s)
        self._dropped_at = None

    async def _keepalive(self, gen):
        """While subscriptions are open, ping after keepalive s of sending
        nothing, so idle_timeout_s does not close a quiet subscription."""
        while gen == self._gen and not self._closed:
            wait = self._last_sent + self.keepalive - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            if self._active:
                try:
                    await self._roundtrip("ping", None, time.monotonic() + self.timeout)
                except (_Dropped, TimeoutError, RpcError):
                    pass
            else:
                self._last_sent = time.monotonic()

    async def _read_loop(self, reader, gen):
        reason = "connection closed by the daemon"
        try:
            while gen == self._gen:
                line = await reader.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    break  # a last line cut short by the close
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    reason = "not JSON from the daemon: %r" % line[:200]
                    break
                if gen != self._gen:
                    return
                self._deliver(msg)
        except asyncio.CancelledError:
            return
        except (OSError, asyncio.LimitOverrunError, ValueError) as e:
            reason = str(e) or type(e).__name__
        if gen == self._gen:
            self._lost(reason)

    def _deliver(self, msg):
        if is_notification(msg):
            p = msg.get("params")
            if isinstance(p, dict):
                s = self._subs.get(p.get("subscription"))
                if s is not None:
                    s._put(p)
                    return
            self.unclaimed_pushes += 1
            return
        if not isinstance(msg, dict):
            return
        mid = msg.get("id")
        if mid is None and "error" in msg and self._pending:
            mid = next(iter(self._pending))  # e.g. "too many clients": the oldest call's
        entry = self._pending.pop(mid, None)
        if entry is None:
            return  # its call timed out
        fut, on_answer = entry
        if on_answer is not None and "result" in msg:
            on_answer(msg["result"])  # at once: pushes may follow on the next line
        if not fut.done():
            fut.set_result(msg)

    async def _roundtrip(self, method, params, deadline, on_answer=None):
        """Send on the present connection and wait for the answer."""
        loop = asyncio.get_running_loop()
        req_id = self._next_id
        self._next_id += 1
        fut = loop.create_future()
        self._pending[req_id] = (fut, on_answer)
        writer = self._writer
        if writer is None:
            self._pending.pop(req_id, None)
            raise _Dropped(self._drop_reason or "not connected")
        try:
            writer.write(encode(req_id, method, params))
            self._last_sent = time.monotonic()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait_for(writer.drain(), left)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = await asyncio.wait_for(fut, left)
        except asyncio.TimeoutError:
            self._pending.pop(req_id, None)
            raise TimeoutError("%s: no answer within the deadline" % method) from None
        except (OSError, RuntimeError) as e:  # RuntimeError: transport closing
            self._pending.pop(req_id, None)
            raise _Dropped(str(e)) from None
        if "error" in msg:
            raise error_from_answer(msg["error"], method)
        if "result" not in msg:
            raise ProtocolError("answer without result or error: %r" % (msg,))
        return msg["result"]

    # ---- calls ----

    async def call(self, method, params=None, timeout=None, _on_answer=None):
        """One call; as Client.call."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        retried = False
        while True:
            await self._ensure(self._reconnect_deadline(deadline),
                               attempts=1 if self.connects == 0 else None)
            try:
                return await self._roundtrip(method, params, deadline, _on_answer)
            except _Dropped as e:
                if method in READ_METHODS and not retried:
                    retried = True
                    continue
                raise ConnectionLost(
                    "connection to %s:%s lost after %s was sent (%s); it may or may not "
                    "have been applied" % (self.host, self.port, method, e)) from None

    def subscribe(self, topics, lasers=None, channels=None, max_rate_hz=None, gaps="yield",
                  idle_timeout=None):
        """An AsyncSubscription: ``sub = await c.subscribe(...)``,
        ``async with c.subscribe(...) as sub``, or ``async for n in
        c.subscribe(...)`` all subscribe."""
        return AsyncSubscription(self, topics, lasers, channels, max_rate_hz, gaps, idle_timeout)

    async def wait_for_state(self, laser, state, timeout=30.0):
        """As Client.wait_for_state."""
        want = states_of(state)
        deadline = time.monotonic() + timeout
        async with self.subscribe(["locks"], lasers=[laser]) as sub:
            cur = await self.laser(laser)
            last = cur.get("state")
            while last not in want:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("laser %r is %r, not %s, after %s s" %
                                       (laser, last, "/".join(want), timeout))
                try:
                    item = await sub.get(timeout=left)
                except TimeoutError:
                    continue
                cur = item["lock"] if isinstance(item, dict) else await self.laser(laser)
                last = cur.get("state")
            return cur


class AsyncSubscription(SubscriptionState):
    """A subscription of an AsyncClient: an async iterator of notification
    params dicts, with Gap markers (or SubscriptionGap) after a reconnection;
    ``missed``, ``id``, ``close()`` as Subscription."""

    def __init__(self, client, topics, lasers, channels, max_rate_hz, gaps, idle_timeout):
        self._init_state(topics, lasers, channels, max_rate_hz, gaps)
        self._client = client
        self._queue = None
        self._started = False
        self.idle_timeout = idle_timeout

    async def _start(self):
        if not self._started:
            self._started = True
            self._queue = asyncio.Queue()
            c = self._client
            await c.call("subscribe", self.params, _on_answer=self._subscribed)
            c._active.append(self)
        return self

    def _subscribed(self, info):
        """The answer to subscribe, taken by the reader before the next line."""
        c = self._client
        new_id = info["subscription"]
        if self.id is not None:
            self._put(self._gap(new_id, info, c._drop_reason, c._dropped_at_unix))
        self.id, self.info = new_id, info
        c._subs[new_id] = self

    def _put(self, item):
        if self._queue is not None:
            self._queue.put_nowait(item)

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self):
        return await self._start()

    async def __aexit__(self, *exc):
        await self.close()
        return False

    def __aiter__(self):
        return self

    async def __anext__(self):
        await self._start()
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        return await self.get(self.idle_timeout)

    async def get(self, timeout=None):
        """The next push (or Gap); TimeoutError after ``timeout`` s."""
        await self._start()
        if self.closed and self._queue.empty():
            raise ConnectionLost("subscription is closed")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no push within %s s" % timeout) from None
        return self._take(item)

    async def close(self):
        """Unsubscribe: no push of it follows."""
        if self.closed:
            return
        self.closed = True
        c = self._client
        if self in c._active:
            c._active.remove(self)
        if self.id is not None and c._subs.get(self.id) is self:
            del c._subs[self.id]
            if c.connected:
                try:
                    await c._roundtrip("unsubscribe", {"subscription": self.id},
                                       time.monotonic() + c.timeout)
                except _Dropped:
                    pass  # it ended with the connection
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait()
