"""External base policies: encoding, validation, CallableBase, the websocket server and RemoteBase."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
import warnings

import msgpack
import numpy as np
import pytest
import websockets.sync.client

from expoft.bases import (
    BaseOutputError,
    CallableBase,
    ExternalBase,
    Normalization,
    RemoteBase,
    RemoteBaseError,
    ToyBase,
    base_learns,
    base_state,
    check_chunks,
    expoft_metadata,
    packb,
    serve_policy,
    unpackb,
)
from expoft.bases.toy import demo_command, free_port

D, A, H = 6, 2, 3


def _obs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, D)).astype(np.float32)


# ---- encoding ------------------------------------------------------------------------------------
_base = np.arange(24, dtype=np.float64).reshape(4, 6)
ARRAYS = {
    "f32-2d": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "f64-0d": np.array(3.25),
    "f16": np.array([0.5, -2.0, np.inf], dtype=np.float16),
    "f64-big-endian": np.arange(5, dtype=">f8"),
    "i8-3d": np.arange(-12, 12, dtype=np.int8).reshape(2, 3, 4),
    "u16": np.array([0, 1, 65535], dtype=np.uint16),
    "i64": np.array([-(2**62), 2**62]),
    "bool": np.array([[True, False], [False, True]]),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "strings": np.array(["pick", "place the cube"]),
    "non-contiguous": _base[:, ::2],
    "transposed": _base.T,
    "nan": np.array([np.nan, -np.inf, 1.0]),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_array_round_trip(name):
    arr = ARRAYS[name]
    out = unpackb(packb({"x": arr, "nested": [arr, {"y": arr}]}))
    for got in (out["x"], out["nested"][0], out["nested"][1]["y"]):
        assert isinstance(got, np.ndarray)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
        assert got.flags.writeable and got.flags.c_contiguous


def test_scalars_and_plain_values_round_trip():
    value = {"f": np.float32(1.5), "i": np.int64(-7), "b": np.bool_(True), "s": "text", "n": None, "l": [1, 2.5]}
    out = unpackb(packb(value))
    assert type(out["f"]) is np.float32 and out["f"] == np.float32(1.5)
    assert type(out["i"]) is np.int64 and out["i"] == -7
    assert type(out["b"]) is np.bool_ and out["b"]
    assert out["s"] == "text" and out["n"] is None and out["l"] == [1, 2.5]


def test_wire_format_is_openpis():
    """The exact maps openpi's msgpack_numpy writes and reads: bin keys, dtype.str, C-order bytes."""
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::-1]  # a non-contiguous view
    raw = msgpack.unpackb(packb(arr), raw=False)
    assert set(raw) == {b"__ndarray__", b"data", b"dtype", b"shape"}
    assert raw[b"__ndarray__"] is True and raw[b"dtype"] == "<f4" and raw[b"shape"] == [2, 3]
    assert raw[b"data"] == np.ascontiguousarray(arr).tobytes()
    scalar = msgpack.unpackb(packb(np.int32(5)), raw=False)
    assert scalar == {b"__npgeneric__": True, b"data": 5, b"dtype": "<i4"}
    # what openpi's packer produces (shape as a tuple) decodes here
    theirs = msgpack.packb(
        {"actions": {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}},
        use_bin_type=True,
    )
    np.testing.assert_array_equal(unpackb(theirs)["actions"], arr)


def test_encoding_refusals():
    with pytest.raises(TypeError, match="object"):
        packb(np.array([{}, None], dtype=object))
    with pytest.raises(TypeError, match="complex"):
        packb(np.array([1 + 2j]))
    with pytest.raises(TypeError, match="cannot encode"):
        packb({"x": object()})
    short = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]})
    with pytest.raises(ValueError, match="7 bytes"):
        unpackb(short)
    pickled = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(ValueError, match="refused"):
        unpackb(pickled)


# ---- interface -----------------------------------------------------------------------------------
def test_normalization_maps_and_checks():
    norm = Normalization(
        obs_mean=np.arange(D), obs_std=np.full(D, 2.0), action_low=[0.0, -5.0], action_high=[10.0, 5.0]
    )
    obs = _obs(4)
    np.testing.assert_allclose(norm.obs_to_base(obs), (obs - np.arange(D)) / 2, rtol=1e-6)
    np.testing.assert_allclose(norm.obs_from_base(norm.obs_to_base(obs)), obs, atol=1e-6)
    native = np.array([[0.0, -5.0], [10.0, 5.0], [5.0, 0.0]])
    np.testing.assert_allclose(norm.actions_from_base(native), [[-1, -1], [1, 1], [0, 0]], atol=1e-7)
    chunks = np.random.default_rng(0).uniform(-1, 1, (4, 8, H, A))
    np.testing.assert_allclose(norm.actions_from_base(norm.actions_to_base(chunks)), chunks, atol=1e-6)
    assert norm.actions_from_base(native).dtype == np.float32
    again = Normalization.from_arrays(norm.to_arrays())
    np.testing.assert_array_equal(again.action_high, norm.action_high)
    fitted = Normalization.from_data(observations=obs, actions=native)
    np.testing.assert_allclose(fitted.action_low, [0.0, -5.0])
    np.testing.assert_allclose(fitted.obs_mean, obs.mean(0), rtol=1e-6)
    identity = Normalization()
    assert identity.actions_from_base(native) is not None and np.array_equal(identity.obs_to_base(obs), obs)
    with pytest.raises(ValueError, match="both obs_mean and obs_std"):
        Normalization(obs_mean=np.zeros(D))
    with pytest.raises(ValueError, match="obs_std must be > 0"):
        Normalization(obs_mean=np.zeros(2), obs_std=[1.0, 0.0])
    with pytest.raises(ValueError, match="action_high must be > action_low"):
        Normalization(action_low=[0.0, 1.0], action_high=[1.0, 1.0])
    with pytest.raises(ValueError, match="obs_dim=7"):
        norm.check_dims(7, A)


def test_check_chunks():
    good = np.zeros((2, 3, H, A), np.float64)
    out = check_chunks(good, 2, 3, H, A)
    assert out.dtype == np.float32 and out.shape == (2, 3, H, A)
    with pytest.raises(BaseOutputError, match=r"shape \[2, 3, 2\].*samples axis is missing"):
        check_chunks(np.zeros((2, H, A)), 2, 3, H, A)
    with pytest.raises(BaseOutputError, match="flattened"):
        check_chunks(np.zeros((2, 3, H * A)), 2, 3, H, A)
    with pytest.raises(BaseOutputError, match="dtype int64"):
        check_chunks(np.zeros((2, 3, H, A), np.int64), 2, 3, H, A)
    bad = good.copy()
    bad[1, 2, 0, 1] = np.nan
    with pytest.raises(BaseOutputError, match=r"NaN/inf in 1 of 6 chunks \(first: observation 1, sample 2\)"):
        check_chunks(bad, 2, 3, H, A)
    near = good + 1.0005  # round-off beyond 1: clipped silently
    assert check_chunks(near, 2, 3, H, A).max() == 1.0
    far = good + 3.0
    with pytest.raises(BaseOutputError, match=r"outside \[-1, 1\].*Normalization"):
        check_chunks(far, 2, 3, H, A)
    with pytest.warns(RuntimeWarning, match="clipped"):
        assert check_chunks(far, 2, 3, H, A, out_of_range="clip").max() == 1.0


# ---- CallableBase --------------------------------------------------------------------------------
W = np.random.default_rng(3).standard_normal((D, H * A)).astype(np.float32) / np.sqrt(D)


def _mean(obs):  # [M, D] -> [M, H, A], in [-0.8, 0.8]
    return 0.8 * np.tanh(obs @ W).reshape(len(obs), H, A)


def test_callable_batched_stochastic():
    calls = []

    def fn(obs, rng):
        calls.append(obs.shape)
        return _mean(obs) + 0.1 * rng.standard_normal((len(obs), H, A))

    base = CallableBase(fn, D, A, H, takes_rng=True)
    assert isinstance(base, ExternalBase) and not base_learns(base) and base_state(base) == {}
    obs = _obs(5)
    chunks = base.sample(obs, 4, seed=1)
    assert chunks.shape == (5, 4, H, A) and chunks.dtype == np.float32
    assert calls == [(20, D)]  # one call, each observation repeated num_samples times
    np.testing.assert_allclose(chunks.mean(1), _mean(obs), atol=0.25)
    assert not np.allclose(chunks[:, 0], chunks[:, 1])  # distinct candidates
    np.testing.assert_array_equal(base.sample(obs, 4, seed=1), chunks)  # reproducible from the seed
    assert not np.array_equal(base.sample(obs, 4, seed=2), chunks)
    calls.clear()
    CallableBase(fn, D, A, H, takes_rng=True, max_batch=6).sample(obs, 4, 0)
    assert calls == [(6, D), (6, D), (6, D), (2, D)]


def test_callable_unbatched_and_normalization():
    calls = []

    def fn(row):  # one observation, actions in native units [0, 10]
        calls.append(row.shape)
        return (_mean(row[None])[0] + 1.0) * 5.0

    norm = Normalization(action_low=np.zeros(A), action_high=np.full(A, 10.0))
    base = CallableBase(fn, D, A, H, normalization=norm, batched=False, deterministic=True)
    obs = _obs(3)
    chunks = base.sample(obs, 5, seed=0)
    assert calls == [(D,)] * 3  # deterministic: one call per observation
    assert chunks.shape == (3, 5, H, A)
    np.testing.assert_allclose(chunks, np.repeat(_mean(obs)[:, None], 5, axis=1), atol=1e-5)


def test_callable_deterministic_collapse_warns_once():
    base = CallableBase(_mean, D, A, H)
    with pytest.warns(RuntimeWarning, match="collapse"):
        chunks = base.sample(_obs(2), 3, seed=0)
    assert np.all(chunks == chunks[:, :1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base.sample(_obs(2), 3, seed=1)  # warned once only


def test_callable_errors():
    obs = _obs(2)
    with pytest.raises(BaseOutputError, match=r"shape \[2, 2\].*batched=False"):
        CallableBase(lambda o: o[:, :2], D, A, H).sample(obs, 1, 0)
    with pytest.raises(BaseOutputError, match=r"NaN/inf in 2 of 2 chunks"):
        CallableBase(lambda o: np.full((len(o), H, A), np.nan), D, A, H).sample(obs, 1, 0)
    with pytest.raises(BaseOutputError, match="dtype int64"):
        CallableBase(lambda o: np.zeros((len(o), H, A), np.int64), D, A, H).sample(obs, 1, 0)
    longer = CallableBase(lambda o: np.zeros((len(o), H + 4, A)), D, A, H)
    with pytest.raises(BaseOutputError, match="7 steps.*truncate=True"):
        longer.sample(obs, 1, 0)
    truncated = CallableBase(lambda o: np.zeros((len(o), H + 4, A)), D, A, H, truncate=True, deterministic=True)
    assert truncated.sample(obs, 2, 0).shape == (2, 2, H, A)
    with pytest.raises(BaseOutputError, match=r"outside \[-1, 1\]"):
        CallableBase(lambda o: np.full((len(o), H, A), 4.0), D, A, H).sample(obs, 1, 0)
    with pytest.raises(ValueError, match=r"shape \(6,\).*obs\[None\]"):
        CallableBase(_mean, D, A, H).sample(obs[0], 1, 0)
    with pytest.raises(ValueError, match="NaN/inf"):
        CallableBase(_mean, D, A, H).sample(np.full((1, D), np.nan), 1, 0)
    with pytest.raises(NotImplementedError, match="frozen"):
        CallableBase(_mean, D, A, H).imitation_update(obs, np.zeros((2, H, A)))


def test_callable_learning_and_state():
    seen = {}
    weights = {"w": np.ones(3)}

    def update(obs, chunks):
        seen.update(obs=obs, chunks=chunks)
        return {"loss": np.float32(0.5)}

    norm = Normalization(action_low=np.zeros(A), action_high=np.full(A, 2.0))
    base = CallableBase(
        _mean, D, A, H, normalization=norm, update_fn=update, state_fn=lambda: weights,
        load_state_fn=lambda s: weights.update(s),
    )  # fmt: skip
    assert base_learns(base)
    metrics = base.imitation_update(_obs(4), np.zeros((4, H, A)))
    assert metrics == {"loss": 0.5} and isinstance(metrics["loss"], float)
    np.testing.assert_allclose(seen["chunks"], 1.0)  # 0 in [-1, 1] is the middle of [0, 2]
    with pytest.raises(ValueError, match=r"expected \[B, chunk_len, action_dim\]"):
        base.imitation_update(_obs(4), np.zeros((4, H + 1, A)))
    base.load_state({"w": np.zeros(3)})
    np.testing.assert_array_equal(base_state(base)["w"], np.zeros(3))


# ---- server and RemoteBase -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_server():
    server = serve_policy(ToyBase(D, A, H), port=0, block=False)
    yield server
    server.close()


def test_remote_matches_local(toy_server):
    toy = ToyBase(D, A, H)
    with RemoteBase(toy_server.url, D, A, H, timeout_s=10) as base:
        assert isinstance(base, ExternalBase) and not base_learns(base) and base.state() == {}
        for batch, num_samples, seed in ((1, 1, 0), (7, 4, 3), (64, 8, 11)):
            obs = _obs(batch, seed)
            chunks = base.sample(obs, num_samples, seed)
            assert chunks.shape == (batch, num_samples, H, A) and chunks.dtype == np.float32
            np.testing.assert_array_equal(chunks, toy.sample(obs, num_samples, seed))
        stats = base.latency()
        assert stats["calls"] == 3 and 0 < stats["p50_ms"] <= stats["p99_ms"] and stats["connects"] == 1
        assert stats["server_p50_ms"] >= 0 and stats["retries"] == 0
        assert base.server_metadata["obs_dim"] == D and base.server_metadata["expoft_protocol"] == 1
    with urllib.request.urlopen(toy_server.url.replace("ws://", "http://") + "/healthz", timeout=5) as reply:
        assert reply.status == 200 and reply.read() == b"OK\n"


def test_server_answers_an_openpi_client(toy_server):
    """What openpi's client does: read the metadata, send one dict observation, read {"actions": [H, A]}."""
    row = _obs(1, 5)[0]
    with websockets.sync.client.connect(toy_server.url, compression=None, max_size=None) as ws:
        assert unpackb(ws.recv(timeout=5))["chunk_len"] == H
        ws.send(packb({"observation": row, "seed": 3}))
        reply = unpackb(ws.recv(timeout=5))
    np.testing.assert_array_equal(reply["actions"], ToyBase(D, A, H).sample(row[None], 1, 3)[0, 0])
    assert reply["server_timing"]["infer_ms"] >= 0
    with RemoteBase(toy_server.url, D, A, H, openpi_compat=True) as base:  # the default request {"observation": row}
        assert base.sample(_obs(2), 3, 0).shape == (2, 3, H, A)


def test_server_honours_seeds_of_any_integer_type(toy_server):
    """A numpy seed gives what the same plain int gives (issue 39, finding 4); a non-integer seed
    is refused by name."""
    row = _obs(1, 5)[0]
    expected = ToyBase(D, A, H).sample(row[None], 1, 3)[0, 0]
    with websockets.sync.client.connect(toy_server.url, compression=None, max_size=None) as ws:
        ws.recv(timeout=5)
        for seed in (3, np.int64(3), np.int32(3), np.array(3)):
            ws.send(packb({"observation": row, "seed": seed}))
            np.testing.assert_array_equal(unpackb(ws.recv(timeout=5))["actions"], expected)
        ws.send(packb({"observation": row, "seed": 3.5}))
        reply = ws.recv(timeout=5)  # errors come back as a text frame
    assert "seed must be an integer" in str(reply)


def test_server_bounds_what_it_takes_and_keeps_serving():
    """Issue 39, finding 3: an oversized frame is refused with close code 1009 and the server serves
    the next client; too many samples or observations, and malformed msgpack, get one line with a
    code and no traceback."""
    with serve_policy(ToyBase(D, A, H), port=0, block=False, max_message_bytes=2**20) as server:
        with websockets.sync.client.connect(server.url, compression=None, max_size=None) as ws:
            ws.recv(timeout=5)
            ws.send(b"\0" * (2**20 + 1))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        for request, expected in (
            ({"expoft": 1, "observation": _obs(1), "num_samples": 5000, "seed": 0}, "num_samples must lie in"),
            ({"expoft": 1, "observation": _obs(2), "num_samples": 1, "seed": 0}, None),
            (b"\xc1", "not a msgpack message"),
        ):
            with websockets.sync.client.connect(server.url, compression=None, max_size=None) as ws:
                ws.recv(timeout=5)
                ws.send(request if isinstance(request, bytes) else packb(request))
                reply = ws.recv(timeout=5)
            if expected is None:  # still serving
                assert unpackb(reply)["actions"].shape == (2, 1, H, A)
            else:
                assert reply.startswith("error[bad_request]: ") and expected in reply
                assert "\n" not in reply and "Traceback" not in reply
    with serve_policy(ToyBase(D, A, H), port=0, block=False, max_batch=3) as server:
        with RemoteBase(server.url, D, A, H, retries=0) as base:
            with pytest.raises(RemoteBaseError, match="at most 3 observations, got 4"):
                base.sample(_obs(4), 1, 0)


def test_server_token_refuses_clients_without_it():
    with serve_policy(ToyBase(D, A, H), port=0, block=False, token="s3cret") as server:
        for key in (None, "wrong"):
            with RemoteBase(server.url, D, A, H, retries=0, api_key=key) as base:
                with pytest.raises(RemoteBaseError, match="401"):
                    base.sample(_obs(1), 1, 0)
        with RemoteBase(server.url, D, A, H, retries=0, api_key="s3cret") as base:  # openpi's api_key header
            np.testing.assert_array_equal(base.sample(_obs(1), 2, 7), ToyBase(D, A, H).sample(_obs(1), 2, 7))
        with urllib.request.urlopen(server.url.replace("ws://", "http://") + "/healthz", timeout=5) as reply:
            assert reply.status == 200  # health checks need no token
    with pytest.raises(ValueError, match="token is empty"):
        serve_policy(ToyBase(D, A, H), port=0, block=False, token=" ")


def test_remote_dims_mismatch(toy_server):
    with RemoteBase(toy_server.url, D, A, H + 1, retries=5) as base:
        start = time.monotonic()
        with pytest.raises(RemoteBaseError, match=f"chunk_len: server {H}, client {H + 1}"):
            base.sample(_obs(1), 1, 0)
        assert time.monotonic() - start < 2  # a configuration error is not retried


def test_remote_timeout():
    release = threading.Event()

    def never(request):
        release.wait(30)
        return {"actions": np.zeros((1, 1, H, A), np.float32)}

    server = serve_policy(never, port=0, metadata=expoft_metadata(D, A, H), block=False)
    try:
        base = RemoteBase(server.url, D, A, H, timeout_s=0.3, retries=1, backoff=0.05)
        start = time.monotonic()
        with pytest.raises(RemoteBaseError, match=r"no reply after 2 attempt\(s\).*timeout_s=0.3"):
            base.sample(_obs(1), 1, 0)
        elapsed = time.monotonic() - start
        assert 0.6 <= elapsed < base.max_wait_s
        assert base.latency()["failed_calls"] == 1 and base.latency()["calls"] == 0
        base.close()
    finally:
        release.set()
        server.close()


def test_remote_malformed_replies():
    def fn(request):
        mode = request["seed"]
        batch, n = request["observation"].shape[0], request["num_samples"]
        if mode == 0:
            return {"actions": np.zeros((batch, n, H, A), np.float32), "request_id": request["request_id"]}
        if mode == 1:
            return {"actions": np.zeros((batch, n, H + 1, A), np.float32)}
        if mode == 2:
            return {"act": 1}
        if mode == 3:
            return {"actions": np.zeros((batch, n, H, A), np.int32)}
        if mode == 4:
            return {"actions": np.full((batch, n, H, A), 7.0, np.float32)}
        if mode == 5:
            return {"actions": np.zeros((batch, n, H, A), np.float32), "request_id": -1}
        raise RuntimeError("model exploded")

    server = serve_policy(fn, port=0, metadata=expoft_metadata(D, A, H), block=False)
    try:
        with RemoteBase(server.url, D, A, H, timeout_s=5) as base:
            obs = _obs(2)
            assert base.sample(obs, 3, 0).shape == (2, 3, H, A)
            with pytest.raises(
                RemoteBaseError, match=r"'actions' a float array \[2, 3, 3, 2\].*array float32 \[2, 3, 4, 2\]"
            ):
                base.sample(obs, 3, 1)
            with pytest.raises(RemoteBaseError, match="'actions' = missing.*keys \\['act', 'server_timing'\\]"):
                base.sample(obs, 3, 2)
            with pytest.raises(RemoteBaseError, match="array int32"):
                base.sample(obs, 3, 3)
            with pytest.raises(RemoteBaseError, match=r"malformed reply.*outside \[-1, 1\]"):
                base.sample(obs, 3, 4)
            with pytest.raises(RemoteBaseError, match="request_id -1"):
                base.sample(obs, 3, 5)
            with pytest.raises(RemoteBaseError, match="(?s)reported an error.*RuntimeError: model exploded"):
                base.sample(obs, 3, 6)
            assert base.sample(obs, 3, 0).shape == (2, 3, H, A)  # reconnects after the server closed on error
            assert base.latency()["failed_calls"] == 6 and base.latency()["connects"] == 2
    finally:
        server.close()


def test_remote_bounds_the_replies_it_takes():
    """A reply is untrusted input: one over max_reply_bytes is refused at once (no retry would get
    another) and the client goes on with the next request over a new connection."""

    def fn(request):
        batch, n = request["observation"].shape[0], request["num_samples"]
        return {"actions": np.zeros((batch, n, H, A), np.float32), "pad": b"x" * (50_000 if request["seed"] else 0)}

    server = serve_policy(fn, port=0, metadata=expoft_metadata(D, A, H), block=False)
    try:
        with pytest.raises(ValueError, match="max_reply_bytes must be >= 1"):
            RemoteBase(server.url, D, A, H, max_reply_bytes=0)
        with RemoteBase(server.url, D, A, H, timeout_s=5, retries=3, max_reply_bytes=20_000) as base:
            assert base.sample(_obs(2), 3, 0).shape == (2, 3, H, A)
            with pytest.raises(RemoteBaseError, match=r"sent a message over max_reply_bytes=20000.*pass a larger"):
                base.sample(_obs(2), 3, 1)
            assert base.latency()["retries"] == 0
            assert base.sample(_obs(2), 3, 0).shape == (2, 3, H, A)
            assert base.latency()["connects"] == 2
    finally:
        server.close()


def _wait_for(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    with RemoteBase(f"127.0.0.1:{port}", D, A, H, retries=200, backoff=0.05, max_backoff=0.1) as probe:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                probe.connect()
                return
            except RemoteBaseError:
                continue
    raise AssertionError(f"the demo server did not come up (exit code {proc.poll()})")


def test_remote_survives_server_restart():
    port = free_port()
    toy = ToyBase(D, A, H)
    procs = [subprocess.Popen(demo_command(port, D, A, H), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for(procs[0], port)
        base = RemoteBase(f"ws://127.0.0.1:{port}", D, A, H, timeout_s=5, retries=40, backoff=0.05, max_backoff=0.25)
        results = {}
        for seed in range(4):
            results[seed] = base.sample(_obs(3, seed), 2, seed)
        procs[0].kill()  # the server dies between two calls
        procs[0].wait(timeout=10)
        impatient = RemoteBase(f"ws://127.0.0.1:{port}", D, A, H, timeout_s=1, retries=1, backoff=0.05)
        with pytest.raises(RemoteBaseError, match=r"no reply after 2 attempt\(s\)"):
            impatient.sample(_obs(1), 1, 0)  # a short retry window gives up with a clear error

        def restart():
            time.sleep(0.5)
            procs.append(subprocess.Popen(demo_command(port, D, A, H), stdout=subprocess.DEVNULL))

        threading.Thread(target=restart, daemon=True).start()
        start = time.monotonic()
        results[4] = base.sample(_obs(3, 4), 2, 4)  # during the outage: retried until the new server answers
        assert time.monotonic() - start >= 0.5
        for seed in range(5, 8):
            results[seed] = base.sample(_obs(3, seed), 2, seed)
        for seed, chunks in results.items():  # nothing lost, nothing changed: every call as from a local base
            np.testing.assert_array_equal(chunks, toy.sample(_obs(3, seed), 2, seed))
        stats = base.latency()
        assert stats["calls"] == 8 and stats["reconnects"] == 1 and stats["retries"] >= 1 and stats["failed_calls"] == 0
        base.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def test_openpi_compat_against_an_openpi_only_server():
    """A server that speaks only openpi's format: its own observation keys, one observation per
    request, a longer horizon than expoft's chunk, actions in its own units, metadata without dims."""
    requests = []

    def infer(request):  # like openpi's Policy.infer
        requests.append(request)
        state = request["observation/state"]
        assert state.shape == (D,) and request["prompt"] == "stack the cubes"
        horizon = np.concatenate([_mean(state[None])[0], np.zeros((7, A))])  # [H + 7, A] in [-1, 1]
        return {"actions": 2.0 * horizon, "state": state}  # native units [-2, 2]

    server = serve_policy(infer, port=0, metadata={"reset_pose": np.zeros(7)}, block=False)
    try:
        norm = Normalization(action_low=np.full(A, -2.0), action_high=np.full(A, 2.0))
        with RemoteBase(
            server.url, D, A, H, openpi_compat=True, normalization=norm,
            obs_to_request=lambda row: {"observation/state": row, "prompt": "stack the cubes"},
        ) as base:  # fmt: skip
            obs = _obs(3)
            chunks = base.sample(obs, 2, seed=0)
            assert len(requests) == 6  # one request per observation and sample
            np.testing.assert_allclose(chunks, np.repeat(_mean(obs)[:, None], 2, axis=1), atol=1e-6)
            assert set(base.server_metadata) == {"reset_pose"} and base.latency()["calls"] == 1
        with pytest.raises(RemoteBaseError, match="does not speak expoft's protocol.*openpi_compat=True"):
            RemoteBase(server.url, D, A, H).sample(_obs(1), 1, 0)
    finally:
        server.close()


def test_expoft_serve_serves_a_runs_base(tmp_path, monkeypatch):
    """`expoft serve RUN` puts a pretrained run's base behind the server; a RemoteBase gets the
    same samples as the run's base asked directly (``expoft.train.build.run_base``)."""
    import os
    import sys

    from expoft.cli import main
    from expoft.train.build import run_base

    monkeypatch.setenv("EXPOFT_DATA_DIR", str(tmp_path / "data"))
    pre = tmp_path / "pre"
    assert main(["pretrain", "--preset", "tiny", "--pretrain-steps", "20", "--out", str(pre), "--no-progress"]) == 0
    local = run_base(pre)
    port = free_port()
    cmd = [sys.executable, "-m", "expoft.cli", "serve", str(pre), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        obs = np.random.default_rng(0).standard_normal((3, local.obs_dim)).astype(np.float32)
        dims = (local.obs_dim, local.action_dim, local.chunk_len)
        # up to ~2 minutes for the server process to import JAX and load the run: on a loaded
        # 2-core machine 30 s was not always enough (a failure seen beside two training runs)
        with RemoteBase(f"ws://127.0.0.1:{port}", *dims, retries=240, backoff=0.2, max_backoff=0.5) as remote:
            chunks = remote.sample(obs, 4, 7)
        assert chunks.shape == (3, 4, local.chunk_len, local.action_dim)
        np.testing.assert_allclose(chunks, local.sample(obs, 4, 7), atol=1e-6)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
