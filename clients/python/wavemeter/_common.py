"""What the blocking and the asyncio client share: which methods are safe
to send twice, the gap marker, and the convenience methods (each builds
its params and returns ``self.call(...)``, so on the asyncio client they
return a coroutine)."""

import json

# Methods that change nothing: after a dropped connection they are sent
# again (once) on a new one. Everything else (laser.*, sim.*) is not, since
# it may already have been applied. subscribe is safe too: a subscription
# ends with its connection, so subscribing again cannot make a second one.
READ_METHODS = frozenset({"ping", "version", "status", "channels", "read", "lasers",
                          "laser.get", "history", "auth", "subscribe"})

DEFAULT_PORT = 7420


def encode(req_id, method, params):
    req = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        req["params"] = params
    return (json.dumps(req, separators=(",", ":"), allow_nan=False) + "\n").encode()


def is_notification(msg):
    return isinstance(msg, dict) and "method" in msg and "id" not in msg


def subscribe_params(topics, lasers, channels, max_rate_hz):
    if isinstance(topics, str):
        topics = [topics]
    p = {"topics": list(topics)}
    if lasers is not None:
        p["lasers"] = [lasers] if isinstance(lasers, (str, int)) else list(lasers)
    if channels is not None:
        p["channels"] = [channels] if isinstance(channels, int) else list(channels)
    if max_rate_hz is not None:
        p["max_rate_hz"] = max_rate_hz
    return p


def states_of(state):
    return (state,) if isinstance(state, str) else tuple(state)


class Gap:
    """Yielded by a subscription (``gaps="yield"``, the default) when its
    connection dropped and it was subscribed again on a new one: pushes
    between ``time_lost`` and now were lost, and ``seq`` starts again at 1.

    ``previous``: the old subscription id; ``subscription``: the new one;
    ``last_seq``: the last seq seen before the drop (0 if none);
    ``reason``: why the connection dropped."""

    __slots__ = ("previous", "subscription", "last_seq", "reason", "time_lost")

    def __init__(self, previous, subscription, last_seq, reason, time_lost):
        self.previous = previous
        self.subscription = subscription
        self.last_seq = last_seq
        self.reason = reason
        self.time_lost = time_lost

    def __repr__(self):
        return ("Gap(previous=%r, subscription=%r, last_seq=%r, reason=%r)" %
                (self.previous, self.subscription, self.last_seq, self.reason))


class SubscriptionState:
    """Bookkeeping both subscription kinds share."""

    def _init_state(self, topics, lasers, channels, max_rate_hz, gaps):
        if gaps not in ("yield", "raise"):
            raise ValueError('gaps must be "yield" or "raise"')
        self.params = subscribe_params(topics, lasers, channels, max_rate_hz)
        self.id = None          # the daemon's subscription number on this connection
        self.info = None        # the answer to subscribe
        self.last_seq = 0       # seq of the last push taken
        self.missed = 0         # total pushes the daemon said were missed
        self.gaps = 0           # reconnections survived
        self.closed = False
        self._gaps_mode = gaps

    def _take(self, item):
        """A queued item, as the consumer should get it."""
        from .errors import SubscriptionGap
        if isinstance(item, BaseException):
            self.closed = True
            raise item
        if isinstance(item, Gap):
            self.gaps += 1
            self.last_seq = 0
            if self._gaps_mode == "raise":
                raise SubscriptionGap(item)
            return item
        self.missed += int(item.get("missed", 0) or 0)
        self.last_seq = item.get("seq", self.last_seq)
        return item

    def _gap(self, new_id, info, reason, time_lost):
        g = Gap(self.id, new_id, self.last_seq, reason, time_lost)
        self.id = new_id
        self.info = info
        return g


class Api:
    """Convenience methods over ``call``. Lasers are named by string (or by
    integer for lasers named like numbers)."""

    def ping(self):
        return self.call("ping")

    def version(self):
        return self.call("version")

    def status(self):
        return self.call("status")

    def channels(self):
        return self.call("channels")

    def read(self, laser=None, channel=None):
        """The latest reading of one laser or channel (a dict), or of every
        channel (a list of dicts) without arguments."""
        if laser is not None and channel is not None:
            raise ValueError("give laser or channel, not both")
        if laser is not None:
            return self.call("read", {"laser": laser})
        if channel is not None:
            return self.call("read", {"channel": channel})
        return self.call("read")

    def lasers(self):
        return self.call("lasers")

    def laser(self, name):
        """``laser.get``: the laser's state, setpoint, gains, limits, reading."""
        return self.call("laser.get", {"laser": name})

    def set_setpoint(self, laser, frequency_thz=None, wavelength_nm=None, ramp_mhz_per_s=None):
        if (frequency_thz is None) == (wavelength_nm is None):
            raise ValueError("give exactly one of frequency_thz and wavelength_nm")
        p = {"laser": laser}
        if frequency_thz is not None:
            p["frequency_thz"] = frequency_thz
        else:
            p["wavelength_nm"] = wavelength_nm
        if ramp_mhz_per_s is not None:
            p["ramp_mhz_per_s"] = ramp_mhz_per_s
        return self.call("laser.set_setpoint", p)

    def lock(self, laser):
        return self.call("laser.lock", {"laser": laser})

    def unlock(self, laser):
        return self.call("laser.unlock", {"laser": laser})

    def set_gains(self, laser, kp=None, ki=None, kd=None):
        p = {"laser": laser}
        for k, v in (("kp", kp), ("ki", ki), ("kd", kd)):
            if v is not None:
                p[k] = v
        return self.call("laser.set_gains", p)

    def set_output(self, laser, output_v):
        return self.call("laser.set_output", {"laser": laser, "output_v": output_v})

    def history(self, laser=None, seconds=None, channel=None):
        if (laser is None) == (channel is None):
            raise ValueError("give exactly one of laser and channel")
        p = {"laser": laser} if laser is not None else {"channel": channel}
        if seconds is not None:
            p["seconds"] = seconds
        return self.call("history", p)
