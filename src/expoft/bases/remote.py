"""A base policy behind a websocket server (openpi's wire format), and that wire format's encoding.

Wire format (compatible with openpi's ``openpi_client.msgpack_numpy`` and its websocket policy
server/client; see docs/bases.md for every message):

* every message is one binary websocket frame holding one msgpack value (maps, lists, str, bytes, ints,
  floats, bools, nil);
* a numpy array is the map ``{b"__ndarray__": True, b"data": <C-order bytes>, b"dtype": <dtype.str,
  e.g. "<f4">, b"shape": [d0, d1, ...]}`` (keys are msgpack *bin*, i.e. Python bytes); a numpy scalar
  is ``{b"__npgeneric__": True, b"data": <its Python value>, b"dtype": <dtype.str>}``; object, void and
  complex dtypes are refused (no pickle, ever);
* a text frame from the server is an error report (a traceback), after which the server closes the
  connection.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

import numpy as np
import websockets
import websockets.exceptions
import websockets.frames
import websockets.sync.client
import websockets.uri

from expoft.bases.interface import BaseOutputError, Normalization, check_chunks, check_obs
from expoft.bases.wire import packb, unpackb
from expoft.obs import ObsSpec, PixelSpec, batch_size, describe, take_rows

PROTOCOL_VERSION = 1
"""Version of expoft's extension of the openpi protocol (``metadata["expoft_protocol"]``)."""


_CLOSE_TIMEOUT_S = 1.0  # longest wait for the closing handshake when dropping a connection


DEFAULT_MAX_REPLY_BYTES = 256 * 2**20
"""Largest reply frame taken from a server (a reply is untrusted network input: unbounded, a broken
or hostile server could exhaust the learner's memory). Above the largest legitimate one: the
target candidates of an update call, 20 x 256 next observations x 32 samples x chunks of 10 x
14 action dims in float32, are 92 MB."""


class LatencyStats:
    """Wall-clock durations of calls (8 bytes each), summarised as percentiles."""

    def __init__(self):
        self._seconds = array("d")

    def add(self, seconds: float) -> None:
        self._seconds.append(seconds)

    def __len__(self) -> int:
        return len(self._seconds)

    def summary(self) -> dict[str, float]:
        """``{"calls", "p50_ms", "p99_ms", "mean_ms", "max_ms"}`` (NaN times when there were no calls)."""
        if not self._seconds:
            return {"calls": 0, "p50_ms": math.nan, "p99_ms": math.nan, "mean_ms": math.nan, "max_ms": math.nan}
        ms = np.frombuffer(self._seconds, dtype=np.float64) * 1e3
        p50, p99 = np.percentile(ms, [50, 99])
        return {"calls": len(ms), "p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(ms.mean()),
                "max_ms": float(ms.max())}  # fmt: skip


# ---- the client ------------------------------------------------------------------------------------


class RemoteBaseError(RuntimeError):
    """A remote base failed: server unreachable or gone after the retries, no reply within the timeout,
    an error reported by the server, a reply that is not what was expected, or dimensions that do not
    match the server's."""


_TRANSIENT = (OSError, EOFError, websockets.exceptions.ConnectionClosed, websockets.exceptions.InvalidHandshake)
"""Failures worth a reconnect and a retry (TimeoutError and ConnectionRefusedError are OSErrors)."""


def _default_obs_to_request(obs: np.ndarray) -> dict:
    return {"observation": obs}


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {list(value.shape)}"
    if isinstance(value, dict):
        return f"dict with keys {sorted(map(str, value))}"
    return f"{type(value).__name__} {value!r:.80}"


class RemoteBase:
    """An :class:`~expoft.bases.ExternalBase` served over a websocket (see :mod:`expoft.bases.server`).

    Args:
        url: ``"ws://host:port"`` (or ``"host:port"``; ``wss://`` for TLS).
        obs_dim, action_dim, chunk_len: what expoft expects; checked against the server's metadata
            when it connects (a mismatch is a :class:`RemoteBaseError`, never retried).
        timeout_s: longest wait for any one message (the metadata, a reply). A server that does not
            answer in time is treated like a lost connection: the connection is dropped (a late reply
            can never be taken for the next one) and the request retried.
        connect_timeout_s: longest wait for the TCP + websocket handshake (default ``timeout_s``).
        retries: how many times a failed request is re-sent (over a new connection) before
            :class:`RemoteBaseError`; 0 means one attempt.
        backoff, max_backoff: the wait before retry ``k`` (1-based) is ``min(max_backoff, backoff *
            2**(k-1))`` seconds. :attr:`max_wait_s` bounds a whole call.
        normalization: maps between expoft's spaces and the model's: observations are sent as
            ``normalization.obs_to_base(obs)``, replies are native actions mapped to [-1, 1].
        openpi_compat: talk to a plain openpi policy server: one request per observation and sample,
            ``obs_to_request(obs_row) -> dict`` (default ``{"observation": row}``; an openpi model
            wants its own keys, e.g. ``{"observation/state": row, "prompt": "..."}``), reply
            ``{"actions": [H, action_dim]}`` with ``H >= chunk_len`` (the first ``chunk_len`` steps are
            kept). Seeds cannot be passed, so samples are not reproducible.
        out_of_range: what :func:`~expoft.bases.check_chunks` does with actions outside [-1, 1].
        api_key: sent as ``Authorization: Api-Key <key>`` (as openpi's client does).
        max_reply_bytes: a larger reply frame (or metadata) closes the connection and is a
            :class:`RemoteBaseError`, never retried (the same request would get the same reply).

    A remote base is frozen (``learns = False``): the server owns the weights; :meth:`state` is ``{}``.
    Latency of every successful :meth:`sample` (including retries) is in :meth:`latency`.
    """

    learns = False

    def __init__(
        self,
        url: str,
        obs_dim: ObsSpec,
        action_dim: int,
        chunk_len: int,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        normalization: Normalization | None = None,
        openpi_compat: bool = False,
        obs_to_request: Callable[[np.ndarray], dict] | None = None,
        out_of_range: str = "error",
        api_key: str | None = None,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ):
        if "://" not in url:
            url = "ws://" + url
        try:
            websockets.uri.parse_uri(url)
        except websockets.exceptions.InvalidURI as exc:
            raise ValueError(f"RemoteBase: invalid url {url!r}: {exc}") from exc
        if timeout_s <= 0 or retries < 0 or backoff < 0:
            raise ValueError("RemoteBase: timeout_s must be > 0, retries and backoff >= 0")
        if max_reply_bytes < 1:
            raise ValueError(f"RemoteBase: max_reply_bytes must be >= 1, got {max_reply_bytes}")
        self.max_reply_bytes = int(max_reply_bytes)
        self.url = url
        self.obs_dim = obs_dim if isinstance(obs_dim, PixelSpec) else int(obs_dim)
        self.action_dim, self.chunk_len = int(action_dim), int(chunk_len)
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(timeout_s if connect_timeout_s is None else connect_timeout_s)
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.normalization = normalization or Normalization()
        self.normalization.check_dims(self.obs_dim, self.action_dim)
        self.openpi_compat = openpi_compat
        self.obs_to_request = obs_to_request or _default_obs_to_request
        self.out_of_range = out_of_range
        self.api_key = api_key
        self.server_metadata: dict | None = None
        self._conn: websockets.sync.client.ClientConnection | None = None
        self._lock = threading.Lock()
        self._request_id = 0
        self._latency = LatencyStats()
        self._server_ms = LatencyStats()
        self._counts = {"retries": 0, "reconnects": 0, "connects": 0, "failed_calls": 0}

    # ---- public ----------------------------------------------------------
    @property
    def max_wait_s(self) -> float:
        """Upper bound on one request's duration: every attempt's connect, metadata and reply waits,
        plus closing the connection and the backoffs (an openpi_compat :meth:`sample` makes
        ``B * num_samples`` requests)."""
        waits = sum(min(self.max_backoff, self.backoff * 2 ** (k - 1)) for k in range(1, self.retries + 1))
        return (self.retries + 1) * (self.connect_timeout_s + 2 * self.timeout_s + _CLOSE_TIMEOUT_S) + waits

    def sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        """``obs float32 [B, obs_dim]`` -> ``float32 [B, num_samples, chunk_len, action_dim]`` in [-1, 1]."""
        obs = check_obs(obs, self.obs_dim)
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        num_samples, seed = int(num_samples), int(seed)
        start = time.perf_counter()
        with self._lock:
            try:
                native = (
                    self._sample_openpi(obs, num_samples)
                    if self.openpi_compat
                    else self._sample(obs, num_samples, seed)
                )
                chunks = self.normalization.actions_from_base(native)
                try:
                    chunks = check_chunks(
                        chunks, batch_size(obs), num_samples, self.chunk_len, self.action_dim,
                        out_of_range=self.out_of_range, source=f"the server at {self.url}",
                    )  # fmt: skip
                except BaseOutputError as exc:
                    raise RemoteBaseError(f"malformed reply: {exc}") from exc
            except BaseException:
                self._counts["failed_calls"] += 1
                raise
        self._latency.add(time.perf_counter() - start)
        return chunks

    def latency(self) -> dict[str, float]:
        """Over the successful :meth:`sample` calls so far: ``calls``, ``p50_ms``, ``p99_ms``, ``mean_ms``,
        ``max_ms`` (client wall clock, retries included), ``server_p50_ms`` / ``server_p99_ms`` (the
        server's own inference time where it reports one), and the counters ``retries``, ``reconnects``,
        ``connects``, ``failed_calls``."""
        out: dict[str, float] = dict(self._latency.summary())
        server = self._server_ms.summary()
        out.update(server_p50_ms=server["p50_ms"], server_p99_ms=server["p99_ms"])
        out.update(self._counts)
        return out

    def imitation_update(self, obs: np.ndarray, chunks: np.ndarray) -> dict[str, float]:
        raise NotImplementedError(f"RemoteBase({self.url}) is frozen: the server owns the model's weights")

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"RemoteBase has no state to load, got {sorted(state)}")

    def connect(self) -> dict:
        """Connect now (otherwise the first :meth:`sample` does) and return the server's metadata."""
        with self._lock:
            self._request(None)
        return dict(self.server_metadata or {})

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> RemoteBase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- expoft protocol -------------------------------------------------
    def _sample(self, obs: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
        self._request_id += 1
        request = {
            "expoft": PROTOCOL_VERSION,
            "request_id": self._request_id,
            "observation": self.normalization.obs_to_base(obs),
            "num_samples": num_samples,
            "seed": seed,
        }
        reply = self._request(request)
        if reply.get("request_id", self._request_id) != self._request_id:
            raise RemoteBaseError(
                f"malformed reply from {self.url}: request_id {reply.get('request_id')!r}, expected {self._request_id}"
            )
        return self._actions(reply, (batch_size(obs), num_samples, self.chunk_len, self.action_dim))

    # ---- openpi protocol -------------------------------------------------
    def _sample_openpi(self, obs: np.ndarray, num_samples: int) -> np.ndarray:
        out = np.empty((batch_size(obs), num_samples, self.chunk_len, self.action_dim), np.float32)
        native = self.normalization.obs_to_base(obs)
        for b in range(batch_size(obs)):
            row = take_rows(native, b)
            for n in range(num_samples):
                request = self.obs_to_request(row)
                if not isinstance(request, dict):
                    raise TypeError(f"obs_to_request returned {type(request).__name__}, expected a dict")
                actions = self._actions(self._request(request), (None, self.action_dim))
                if actions.shape[0] < self.chunk_len:
                    raise RemoteBaseError(
                        f"malformed reply from {self.url}: {actions.shape[0]} action steps, chunk_len={self.chunk_len}"
                    )
                out[b, n] = actions[: self.chunk_len]
        return out

    def _actions(self, reply: dict, shape: tuple) -> np.ndarray:
        """``reply["actions"]``: a float array of ``shape`` (None: any size on that axis)."""
        want = "[" + ", ".join("H" if d is None else str(d) for d in shape) + "]"
        actions = reply.get("actions")
        ok = (
            isinstance(actions, np.ndarray)
            and actions.dtype.kind == "f"
            and actions.ndim == len(shape)
            and all(d is None or d == s for d, s in zip(shape, actions.shape, strict=True))
        )
        if not ok:
            raise RemoteBaseError(
                f"malformed reply from {self.url}: expected a dict with 'actions' a float array {want}, got "
                f"'actions' = {_describe(actions) if 'actions' in reply else 'missing'} (reply: {_describe(reply)})"
            )
        assert isinstance(actions, np.ndarray), "ok holds only for an array"
        timing = reply.get("server_timing")
        if isinstance(timing, dict) and isinstance(timing.get("infer_ms"), int | float):
            self._server_ms.add(float(timing["infer_ms"]) / 1e3)
        return actions

    # ---- transport -------------------------------------------------------
    def _request(self, message: dict | None) -> dict:
        """Send ``message`` and return the decoded reply (None: only make sure we are connected), with
        reconnects and bounded retries on transient failures."""
        data = None if message is None else packb(message)
        start, last = time.monotonic(), None
        for attempt in range(self.retries + 1):
            if attempt:
                self._counts["retries"] += 1
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                conn = self._ensure_connected()
                if data is None:
                    return {}
                self._send(conn, data)
                raw = conn.recv(timeout=self.timeout_s)
            except TimeoutError as exc:
                last = f"no message within timeout_s={self.timeout_s}s ({exc or 'timeout'})"
                self._drop()
            except _TRANSIENT as exc:
                self._drop()
                sent = getattr(exc, "sent", None)  # our close frame, when we closed the connection
                if sent is not None and sent.code == websockets.frames.CloseCode.MESSAGE_TOO_BIG:
                    raise RemoteBaseError(
                        f"{self.url} sent a message over max_reply_bytes={self.max_reply_bytes} ({sent.reason}); "
                        "if the server's replies are this large, pass a larger max_reply_bytes"
                    ) from None
                last = f"{type(exc).__name__}: {exc}"
            else:
                return self._decode(raw, "reply")
        raise RemoteBaseError(
            f"{self.url}: no reply after {self.retries + 1} attempt(s) over {time.monotonic() - start:.1f}s; last "
            f"failure: {last}"
        )

    def _ensure_connected(self) -> websockets.sync.client.ClientConnection:
        if self._conn is not None:
            return self._conn
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        conn = websockets.sync.client.connect(
            self.url,
            open_timeout=self.connect_timeout_s,
            close_timeout=_CLOSE_TIMEOUT_S,
            compression=None,
            max_size=self.max_reply_bytes,
            additional_headers=headers,
            legacy=True,  # a plain connection object (not the context-manager form)
        )
        try:
            metadata = self._decode(conn.recv(timeout=self.timeout_s), "metadata")
            self._check_metadata(metadata)
        except BaseException:
            conn.close()
            raise
        if self._counts["connects"]:
            self._counts["reconnects"] += 1
        self._counts["connects"] += 1
        self.server_metadata = metadata
        self._conn = conn
        return conn

    def _send(self, conn, data: bytes) -> None:
        if len(data) < 1 << 20:  # small messages fit the socket buffers: send() cannot block
            conn.send(data)
            return
        # A large message to a frozen peer could block in sendall(): close the socket at the deadline.
        timer = threading.Timer(self.timeout_s, getattr(conn, "close_socket", conn.close))
        timer.start()
        try:
            conn.send(data)
        finally:
            timer.cancel()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is already broken; nothing to salvage
                pass

    def _decode(self, raw: Any, what: str) -> dict:
        if isinstance(raw, str):
            self._drop()  # the server closes after an error report
            raise RemoteBaseError(f"the server at {self.url} reported an error instead of a {what}:\n{raw}")
        try:
            value = unpackb(raw)
        except Exception as exc:
            self._drop()
            raise RemoteBaseError(f"malformed {what} from {self.url}: not msgpack / numpy ({exc})") from exc
        if not isinstance(value, dict):
            raise RemoteBaseError(f"malformed {what} from {self.url}: expected a dict, got {_describe(value)}")
        return value

    def _check_metadata(self, metadata: dict) -> None:
        if "expoft_protocol" not in metadata:
            if self.openpi_compat:
                return
            raise RemoteBaseError(
                f"the server at {self.url} does not speak expoft's protocol (its metadata has keys "
                f"{sorted(map(str, metadata))}, no 'expoft_protocol'); for a plain openpi server use "
                "RemoteBase(..., openpi_compat=True)"
            )
        version = metadata["expoft_protocol"]
        if not isinstance(version, int) or version > PROTOCOL_VERSION:
            raise RemoteBaseError(
                f"the server at {self.url} speaks expoft protocol {version!r}; this client {PROTOCOL_VERSION}"
            )
        mismatched = [
            f"{key}: server {metadata.get(key)!r}, client {mine}"
            for key, mine in (
                ("obs_dim", describe(self.obs_dim)),
                ("action_dim", self.action_dim),
                ("chunk_len", self.chunk_len),
            )  # fmt: skip
            if metadata.get(key) != mine
        ]
        if mismatched:
            raise RemoteBaseError(f"the base at {self.url} does not match this RemoteBase: " + "; ".join(mismatched))
