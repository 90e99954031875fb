"""Serve a policy over a websocket, in openpi's wire format with expoft's batched extension.

Put your own model behind a server with :func:`serve_policy` (any process, any framework; only numpy,
msgpack and websockets are needed in that process besides your model), then point
:class:`~expoft.bases.RemoteBase` at it. Protocol, every message: docs/bases.md.

Command line::

    python -m expoft.bases.server demo --port 8000      # a toy numpy base, for smoke tests
    python -m expoft.bases.server bench --batches 1 256  # localhost round-trip latency

An expoft run's pretrained base: ``expoft serve RUN_DIR --port 8000``.
"""

from __future__ import annotations

import argparse
import http
import itertools
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import websockets.exceptions
import websockets.frames
import websockets.sync.server

from expoft.bases.interface import check_chunks, check_obs
from expoft.bases.remote import PROTOCOL_VERSION
from expoft.bases.toy import ToyBase, bench
from expoft.bases.wire import packb, unpackb
from expoft.obs import ObsSpec, PixelSpec, batch_size, describe

logger = logging.getLogger("expoft.bases.server")


_PROTOCOL_KEYS = ("expoft_protocol", "obs_dim", "action_dim", "chunk_len")


def expoft_metadata(obs_dim: ObsSpec, action_dim: int, chunk_len: int, **extra: Any) -> dict:
    """The metadata an expoft-protocol server sends first: ``{"expoft_protocol": 1, "obs_dim": D,
    "action_dim": A, "chunk_len": H, "learns": False, **extra}``."""
    return {"expoft_protocol": PROTOCOL_VERSION, "obs_dim": describe(obs_dim), "action_dim": int(action_dim),
            "chunk_len": int(chunk_len), "learns": False, **extra}  # fmt: skip


def _is_base(policy: Any) -> bool:
    return all(hasattr(policy, name) for name in ("sample", "obs_dim", "action_dim", "chunk_len"))


def _health_check(connection, request):
    """``GET /healthz`` answers 200 "OK" without a websocket (as openpi's server does)."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


DEFAULT_MAX_MESSAGE_BYTES = 32 * 2**20
"""Largest request frame taken: above the largest legitimate one (an update call's next
observations on pixels, 1280 frames of 64x64x3, is 16 MB); a larger frame closes the
connection with 1009 (message too big), and the server goes on serving."""


MAX_NUM_SAMPLES = 1024


MAX_BATCH = 65_536


class BadRequest(ValueError):
    """A request this server refuses: the client's fault, answered with a one-line message."""


def _one_line(exc: BaseException) -> str:
    """What a client is told of an error: its code and message on one line, no traceback."""
    code = "bad_request" if isinstance(exc, (BadRequest, ValueError, TypeError, KeyError)) else "internal"
    message = " ".join(str(exc).split()) or type(exc).__name__
    return f"error[{code}]: {message}"


def _is_loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or (host or "").startswith("127.")


class PolicyServer:
    """A websocket server answering policy requests; one thread per connection, calls to the policy
    serialised by a lock. Build it with :func:`serve_policy`.

    ``policy`` is either

    * an :class:`~expoft.bases.ExternalBase` (has ``sample``, ``obs_dim``, ``action_dim``,
      ``chunk_len``): the server announces :func:`expoft_metadata` (plus ``metadata``) and answers
      expoft's batched requests AND openpi-style single-observation requests (``{obs_key: [obs_dim],
      optional "seed"}`` -> ``{"actions": [chunk_len, action_dim]}``), so openpi clients can use it;
    * or a function ``request: dict -> reply: dict`` (or an object with openpi's ``infer(dict) ->
      dict``): "raw" mode, every decoded request is handed to it and its reply sent back, the metadata
      is ``metadata`` as given (``{}`` by default). This is how an openpi-style policy is served.

    Every reply dict gets ``"server_timing": {"infer_ms": ..., "prev_total_ms": ...}`` as openpi's. An
    exception while answering sends ONE line as a text frame, ``error[bad_request]: ...`` (the
    request was wrong; close code 1008) or ``error[internal]: ...`` (1011), and closes the
    connection, as openpi's server closes after its error report; the traceback goes to the server's
    log only. The server goes on serving other connections.

    Untrusted clients: frames above ``max_message_bytes`` are refused (close 1009), requests above
    ``max_num_samples`` samples or ``max_batch`` observations are refused, and with ``token`` (or
    ``EXPOFT_TOKEN`` on the command line) a connection must carry ``Authorization: Api-Key <token>``
    (openpi's header: an openpi client given ``api_key`` works unchanged) or gets HTTP 401.
    Binding to a non-loopback interface without a token logs a warning.
    """

    def __init__(
        self,
        policy: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        metadata: dict | None = None,
        *,
        obs_key: str = "observation",
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_num_samples: int = MAX_NUM_SAMPLES,
        max_batch: int = MAX_BATCH,
    ):
        if min(max_message_bytes, max_num_samples, max_batch) < 1:
            raise ValueError("max_message_bytes, max_num_samples and max_batch must be >= 1")
        if token is not None and not token.strip():
            raise ValueError("token is empty: pass a secret, or None for no token")
        self.host, self.obs_key = host, obs_key
        self.token, self.max_message_bytes = token, max_message_bytes
        self.max_num_samples, self.max_batch = max_num_samples, max_batch
        self._requested_port = port
        self.base = policy if _is_base(policy) else None
        if self.base is None:
            fn = getattr(policy, "infer", policy)
            if not callable(fn):
                raise TypeError(
                    f"serve_policy needs an ExternalBase or a callable request -> reply, got {type(policy).__name__}"
                )
            self._fn: Callable[[dict], Any] = fn
            self.metadata = dict(metadata or {})
        else:
            base = self.base
            self.metadata = expoft_metadata(
                base.obs_dim, base.action_dim, base.chunk_len, learns=bool(getattr(base, "learns", False))
            )
            for key, value in (metadata or {}).items():
                if key in _PROTOCOL_KEYS and value != self.metadata[key]:
                    raise ValueError(f"metadata[{key!r}] = {value!r} contradicts the base's {self.metadata[key]!r}")
                self.metadata[key] = value
        packb(self.metadata)  # fail now, not at the first connection, if it cannot be encoded
        self._lock = threading.Lock()
        self._seeds = itertools.count()
        self._server: websockets.sync.server.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------
    def _listen(self) -> websockets.sync.server.Server:
        if self._server is None:
            if self.token is None and not _is_loopback(self.host):
                logger.warning(
                    "serving on %s without a token: anyone who reaches this address may use the policy; "
                    "pass --token (or set EXPOFT_TOKEN)", self.host,
                )  # fmt: skip
            self._server = websockets.sync.server.serve(
                self._handler, self.host, self._requested_port, compression=None, max_size=self.max_message_bytes,
                process_request=self._process_request,
            )  # fmt: skip
        return self._server

    def _process_request(self, connection, request):
        """Health checks answer without a token; every other connection needs it, when set."""
        health = _health_check(connection, request)
        if health is not None or self.token is None:
            return health
        if request.headers.get("Authorization") != f"Api-Key {self.token}":
            logger.warning("refused a connection from %s: missing or wrong token", connection.remote_address)
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Api-Key <token>'\n"
            )
        return None

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when asked for port 0)."""
        return self._listen().socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", None) else self.host
        return f"ws://{host}:{self.port}"

    def start(self) -> PolicyServer:
        """Serve from a background (daemon) thread; returns at once."""
        server = self._listen()
        if self._thread is None:
            self._thread = threading.Thread(target=server.serve_forever, name=f"expoft-policy-server-{self.port}")
            self._thread.daemon = True
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until :meth:`close` (from another thread) or Ctrl-C."""
        server = self._listen()
        logger.info("serving on %s", self.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening, close the open connections, wait for their handlers (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- one connection --------------------------------------------------
    def _handler(self, ws) -> None:
        ws.send(packb(self.metadata))
        prev_total_ms = None
        while True:
            try:
                raw = ws.recv()
            except websockets.exceptions.ConnectionClosed:
                return
            start = time.monotonic()
            try:
                if isinstance(raw, str):
                    raise ValueError("expected a binary frame holding a msgpack dict, got a text frame")
                try:
                    request = unpackb(raw)
                except Exception as exc:  # msgpack's FormatError, ExtraData, ...: say what it is
                    raise BadRequest(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
                if not isinstance(request, dict):
                    raise ValueError(f"expected a msgpack dict, got {type(request).__name__}")
                with self._lock:
                    t0 = time.monotonic()
                    reply = self._answer(request)
                    infer_ms = (time.monotonic() - t0) * 1e3
                timing = {"infer_ms": infer_ms}
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                ws.send(packb({**reply, "server_timing": timing}))
                prev_total_ms = (time.monotonic() - start) * 1e3
            except websockets.exceptions.ConnectionClosed:
                return
            except Exception as exc:
                logger.warning("error answering %s:\n%s", ws.remote_address, traceback.format_exc())
                line = _one_line(exc)
                code = (
                    websockets.frames.CloseCode.POLICY_VIOLATION
                    if line.startswith("error[bad_request]")
                    else websockets.frames.CloseCode.INTERNAL_ERROR
                )
                try:
                    ws.send(line)
                    ws.close(code, line[:120])
                except websockets.exceptions.ConnectionClosed:
                    pass
                return

    def _answer(self, request: dict) -> dict:
        if self.base is None:
            try:
                reply = self._fn(request)
            except Exception as exc:  # the served function's own failure, not the request's
                raise RuntimeError(f"the policy failed: {type(exc).__name__}: {exc}") from exc
            if not isinstance(reply, dict):
                raise TypeError(f"the policy returned {type(reply).__name__}, expected a dict like {{'actions': ...}}")
            return reply
        base = self.base
        if "expoft" in request:
            version = request["expoft"]
            if not isinstance(version, int) or version > PROTOCOL_VERSION:
                raise ValueError(f"request speaks expoft protocol {version!r}, this server {PROTOCOL_VERSION}")
            for key in ("observation", "num_samples", "seed"):
                if key not in request:
                    raise ValueError(f"expoft request without {key!r} (keys: {sorted(request)})")
            num_samples, seed = as_int(request["num_samples"], "num_samples"), as_int(request["seed"], "seed")
            if not 1 <= num_samples <= self.max_num_samples:
                raise BadRequest(f"num_samples must lie in [1, {self.max_num_samples}], got {num_samples}")
            obs = check_obs(request["observation"], base.obs_dim, "request['observation']")
            if batch_size(obs) > self.max_batch:
                raise BadRequest(f"a request holds at most {self.max_batch} observations, got {batch_size(obs)}")
            chunks = base.sample(obs, num_samples, seed)
            chunks = check_chunks(
                chunks, batch_size(obs), num_samples, base.chunk_len, base.action_dim, source="the base"
            )
            reply = {"actions": chunks}
            if "request_id" in request:
                reply["request_id"] = request["request_id"]
            return reply
        # openpi style: one observation, one chunk
        if self.obs_key not in request:
            raise ValueError(f"request has no {self.obs_key!r} key (keys: {sorted(map(str, request))})")
        if isinstance(base.obs_dim, PixelSpec):
            raise ValueError("a base of pixel observations takes expoft-protocol requests (batched), not openpi's")
        obs = np.asarray(request[self.obs_key])
        if obs.shape != (base.obs_dim,):
            raise ValueError(f"request[{self.obs_key!r}] has shape {list(obs.shape)}, expected [{base.obs_dim}]")
        sent = request.get("seed")
        seed = next(self._seeds) if sent is None else as_int(sent, "seed")
        chunks = base.sample(check_obs(obs[None], base.obs_dim), 1, seed)
        return {"actions": check_chunks(chunks, 1, 1, base.chunk_len, base.action_dim, source="the base")[0, 0]}


def as_int(value, name: str) -> int:
    """An integer of any type a client may send (Python, a numpy scalar or 0-d array, as
    msgpack-numpy decodes them) as a Python int; anything else is refused by name."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def serve_policy(
    policy: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    metadata: dict | None = None,
    *,
    block: bool = True,
    obs_key: str = "observation",
    **limits: Any,
) -> PolicyServer:
    """Serve ``policy`` (an :class:`~expoft.bases.ExternalBase`, or a function ``request dict -> reply
    dict``, see :class:`PolicyServer`) on ``host:port`` (``port=0``: any free port, see
    ``server.port``; ``host="0.0.0.0"`` to accept other machines).

    ``block=True`` serves until Ctrl-C; ``block=False`` serves from a daemon thread and returns the
    server (``server.url``, ``server.close()``; also a context manager). ``limits``: ``token``,
    ``max_message_bytes``, ``max_num_samples``, ``max_batch`` (see :class:`PolicyServer`).
    """
    server = PolicyServer(policy, host, port, metadata, obs_key=obs_key, **limits)
    if block:
        server.serve_forever()
        return server
    return server.start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m expoft.bases.server", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("demo", "bench"):
        p = sub.add_parser(name, help="serve a toy numpy base" if name == "demo" else "measure localhost latency")
        p.add_argument("--obs-dim", type=int, default=28)
        p.add_argument("--action-dim", type=int, default=5)
        p.add_argument("--chunk-len", type=int, default=5)
        if name == "demo":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8000)
        else:
            p.add_argument("--batches", type=int, nargs="+", default=[1, 256])
            p.add_argument("--calls", type=int, default=300)
            p.add_argument("--num-samples", type=int, default=8)
    for p in (sub.choices["demo"],):
        p.add_argument(
            "--token",
            default=os.environ.get("EXPOFT_TOKEN"),
            help="require 'Authorization: Api-Key TOKEN' of every client (default: $EXPOFT_TOKEN)",
        )
        p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_BYTES / 2**20,
                       help="largest request frame taken, in MiB")  # fmt: skip
    args = parser.parse_args(argv)
    limits = {}
    if args.command != "bench":
        limits = {"token": args.token, "max_message_bytes": int(args.max_message_mb * 2**20)}
    if args.command == "demo":
        logging.basicConfig(level=logging.INFO)
        server = PolicyServer(ToyBase(args.obs_dim, args.action_dim, args.chunk_len), args.host, args.port, **limits)
        print(f"serving ToyBase on {server.url}", flush=True)
        server.serve_forever()
    else:
        rows = bench(args.batches, args.calls, args.num_samples, args.obs_dim, args.action_dim, args.chunk_len)
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
