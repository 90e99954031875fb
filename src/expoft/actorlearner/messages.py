"""The learner-actor protocol: msgpack messages (``expoft.bases.wire``, never pickle), each
checked on arrival, so that a malformed message is refused with a reason instead of reaching the
replay buffer or the agent.

actor -> learner                              learner -> actor
``hello``  {protocol, actor, session}         ``welcome`` {protocol, run_id, config, step, episodes,
                                                           durable_step, version, weights, random_chunk,
                                                           done}
``decision`` {seq, episode, obs [k, D],        ``ack`` {seq, version, durable_step, weights (when newer than
  actions [k, A], rewards [k], next_obs,        the actor's), random_chunk, done}
  terminated [k], truncated [k], intervened    ``error`` {message}: the sender of a bad message
  [k], success, episode_ended, edited,           learns what was wrong; the learner keeps serving
  not_first, act_seconds, version}

``seq`` is the run's env step at a decision's first transition (its transitions are seq, seq + 1,
...): the learner takes the decision at its own env step, answers an older one again without
taking it twice (a resend after a lost ack), and refuses a gap. ``durable_step``: the env step of
the learner's newest checkpoint (an actor keeps its decisions from there, to send them again to a
learner restarted from it). ``session`` names an actor process: a new one cannot continue the
episode a dead one left open, which the learner then drops.
``weights`` are the arrays the agent acts with (not its online networks or optimiser states), by
their pytree path, with the ``run_id`` they belong to.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np
from jax.extend.core import Literal

from expoft.bases.wire import unpackb
from expoft.envs.chunks import Transition
from expoft.obs import PROPRIO
from expoft.obs import zeros as blank_obs
from expoft.train.online_loop import Decision

PROTOCOL = 1
MAX_MESSAGE_BYTES = 1 << 30
"""Largest message either side accepts (an EXPO agent with its optimiser states is ~30 MB at the
published sizes; a pixel agent more)."""


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what is wrong."""


class Busy(ProtocolError):
    """A refusal the sender may retry: the actor slot it asked for is held, perhaps by its own
    previous session, still closing after a reconnect. Sent with ``"retry": true``; the actor
    retries with backoff."""


BUSY = "this learner serves one actor at a time; another one is connected"


def decode(raw: Any) -> Any:
    """One received frame as a message (what ``expect`` checks next); text or bytes that are not
    msgpack are refused."""
    if not isinstance(raw, bytes):
        raise ProtocolError("messages are binary msgpack frames, got text")
    try:
        return unpackb(raw)
    except Exception as exc:  # msgpack's errors: whatever the bytes were, they are not a message
        raise ProtocolError(f"undecodable message: {exc}") from exc


def field(message: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    if name not in message:
        raise ProtocolError(f"message {message.get('type')!r} has no field {name!r}")
    value = message[name]
    if kind is int and isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProtocolError(f"field {name!r} of {message.get('type')!r} must be {names}, got {type(value).__name__}")
    return value


def expect(message: Any, kind: str) -> dict:
    """``message`` if it is a map of type ``kind``; an ``error`` message raises its text (as
    :class:`Busy` when it says ``"retry": true``)."""
    if not isinstance(message, dict) or "type" not in message:
        raise ProtocolError(f"expected a {kind!r} message, got {type(message).__name__}")
    if message["type"] == "error" and kind != "error":
        refusal = Busy if message.get("retry") is True else ProtocolError
        raise refusal(f"the other side refused: {message.get('message')}")
    if message["type"] != kind:
        raise ProtocolError(f"expected a {kind!r} message, got {message['type']!r}")
    return message


# ---- weights ---------------------------------------------------------------------------------------


def weights_of(agent: Any) -> dict[str, np.ndarray]:
    """The arrays ``agent``'s acting rule reads (:func:`acting_keys`), by their pytree path: what
    an actor needs of new weights. An EXPO agent's are its EMA base, its edit policy's parameters
    and its target critic, about a quarter of its 30 MiB (the online networks and the optimiser
    states stay with the learner)."""
    keys = acting_keys(agent)
    leaves, _ = jax.tree_util.tree_flatten_with_path(agent)
    return {k: np.asarray(leaf) for path, leaf in leaves if (k := jax.tree_util.keystr(path)) in keys}


def with_weights(template: Any, weights: dict) -> Any:
    """``template`` (an agent of the run's config) holding ``weights``: exactly the arrays of its
    acting rule (:func:`weights_of`), each with the template's shape and dtype; its other arrays
    stay as they are (acting never reads them)."""
    if not isinstance(weights, dict):
        raise ProtocolError(f"weights must be a map of arrays, got {type(weights).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    wanted = acting_keys(template)
    missing, extra = sorted(wanted - set(weights)), sorted(set(weights) - wanted)
    if missing or extra:
        raise ProtocolError(f"weights of another agent: missing {missing[:3]}, unexpected {extra[:3]}")
    arrays = []
    for key, (_, leaf) in zip(keys, leaves, strict=True):
        if key not in wanted:
            arrays.append(leaf)
            continue
        value = weights[key]
        if not isinstance(value, np.ndarray) or value.shape != np.shape(leaf) or value.dtype != np.asarray(leaf).dtype:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise ProtocolError(f"weight {key}: expected {np.asarray(leaf).dtype} {np.shape(leaf)}, got {got}")
        arrays.append(value)
    return jax.tree_util.tree_unflatten(treedef, arrays)


_ACTING_KEYS: dict[Any, frozenset[str]] = {}


def acting_keys(agent: Any) -> frozenset[str]:
    """The pytree paths of the arrays ``agent.act`` reads, found from its traced program (inputs
    no output depends on are left out), so it holds for every agent without a list to keep up to
    date. Conservative: inside loops and branches every input of a used step counts. The same
    for every agent of one config (cached by the pytree's structure, which holds the config)."""
    treedef = jax.tree_util.tree_structure(agent)
    if treedef not in _ACTING_KEYS:
        leaves, _ = jax.tree_util.tree_flatten_with_path(agent)
        obs = blank_obs(agent.obs_dim)

        def acting(arrays):
            return jax.tree_util.tree_unflatten(treedef, arrays).act(obs, jax.random.PRNGKey(0))

        closed = jax.make_jaxpr(acting)([leaf for _, leaf in leaves])
        used = _used_inputs(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
        _ACTING_KEYS[treedef] = frozenset(jax.tree_util.keystr(p) for (p, _), u in zip(leaves, used, strict=True) if u)
    return _ACTING_KEYS[treedef]


def _used_inputs(jaxpr: Any, used_outputs: list[bool]) -> list[bool]:
    """Which of ``jaxpr``'s inputs the outputs marked in ``used_outputs`` depend on: a walk back
    from them, into nested jit calls (whose unused inputs are dropped too); any other step with a
    used output (a loop, a branch) or with effects uses all of its inputs."""
    used = {v for v, u in zip(jaxpr.outvars, used_outputs, strict=True) if u and not isinstance(v, Literal)}
    for eqn in reversed(jaxpr.eqns):
        outs = [v in used for v in eqn.outvars]
        if not any(outs) and not eqn.effects:
            continue
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name in ("pjit", "jit", "closed_call") and inner is not None:
            ins = [v for v, u in zip(eqn.invars, _used_inputs(inner.jaxpr, outs), strict=True) if u]
        else:
            ins = eqn.invars
        used.update(v for v in ins if not isinstance(v, Literal))
    return [v in used for v in jaxpr.invars]


# ---- decisions -------------------------------------------------------------------------------------


def _stack(values: list) -> Any:
    if isinstance(values[0], dict):  # pixel observations
        return {k: np.stack([v[k] for v in values]) for k in values[0]}
    return np.stack(values)


def decision_message(seq: int, episode: int, version: int, decision: Decision) -> dict:
    ts = decision.transitions
    return {
        "type": "decision", "seq": seq, "episode": episode, "version": version,
        "obs": _stack([t.observation for t in ts]), "actions": np.stack([t.action for t in ts]).astype(np.float32),
        "rewards": np.asarray([t.reward for t in ts], np.float64),
        "next_obs": _stack([t.next_observation for t in ts]),
        "terminated": np.asarray([t.terminated for t in ts]), "truncated": np.asarray([t.truncated for t in ts]),
        "intervened": np.asarray([t.intervened for t in ts]),
        "success": bool(decision.success), "episode_ended": bool(decision.episode_ended),
        "edited": decision.edited, "not_first": decision.not_first, "act_seconds": float(decision.act_seconds),
        "rerecord": bool(decision.rerecord), "simulator_success": decision.simulator_success,
    }  # fmt: skip


def _rows(value: Any, name: str, k: int, shape: tuple, dtype_kind: str) -> Any:
    """``value`` checked as ``[k, *shape]`` numbers (or a map of such arrays, for pixels)."""
    if isinstance(value, dict):
        return {key: _rows(v, f"{name}[{key}]", k, np.shape(v)[1:], "uif") for key, v in value.items()}
    if not isinstance(value, np.ndarray):
        raise ProtocolError(f"{name} must be an array, got {type(value).__name__}")
    if value.shape != (k, *shape):
        raise ProtocolError(f"{name} has shape {value.shape}, expected {(k, *shape)}")
    if value.dtype.kind not in dtype_kind:
        raise ProtocolError(f"{name} has dtype {value.dtype}, expected numbers")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ProtocolError(f"{name} holds NaN or infinite values")
    return value


def decision_from_message(message: dict, obs_dim: int | None, action_dim: int, exec_len: int) -> Decision:
    """The :class:`Decision` a ``decision`` message carries, every field checked: ``obs_dim`` the
    state size (None: pixel observations, maps of arrays), actions of ``action_dim`` in [-1, 1],
    1 to ``exec_len`` steps, only the last may end the episode."""
    expect(message, "decision")
    actions = field(message, "actions", np.ndarray)
    k = actions.shape[0] if actions.ndim == 2 else -1
    if not 1 <= k <= exec_len:
        raise ProtocolError(f"actions has shape {actions.shape}, expected [1..{exec_len}, {action_dim}]")
    actions = _rows(actions, "actions", k, (action_dim,), "f")
    if np.abs(actions).max() > 1.0 + 1e-6:
        raise ProtocolError("actions must lie in [-1, 1]")
    obs_shape = () if obs_dim is None else (obs_dim,)
    obs = message.get("obs")
    next_obs = message.get("next_obs")
    if obs_dim is not None:
        obs, next_obs = _rows(obs, "obs", k, obs_shape, "f"), _rows(next_obs, "next_obs", k, obs_shape, "f")
    elif not isinstance(obs, dict) or not isinstance(next_obs, dict):
        raise ProtocolError("pixel observations must be maps of arrays")
    rewards = _rows(field(message, "rewards", np.ndarray), "rewards", k, (), "f")
    flags = {name: _rows(field(message, name, np.ndarray), name, k, (), "b") for name in
             ("terminated", "truncated", "intervened")}  # fmt: skip
    ended = field(message, "episode_ended", bool)
    ends = flags["terminated"] | flags["truncated"]
    if ends[:-1].any() or bool(ends[-1]) != ended:
        raise ProtocolError(
            "only a decision's last step may end the episode, and episode_ended must say whether it did"
        )
    success = field(message, "success", bool)
    edited, not_first = message.get("edited"), message.get("not_first")
    if not all(v is None or isinstance(v, bool) for v in (edited, not_first)):
        raise ProtocolError("edited and not_first must be booleans or nil")
    act_seconds = field(message, "act_seconds", (float, int))
    rerecord = message.get("rerecord", False)
    if not isinstance(rerecord, bool) or (rerecord and not ended):
        raise ProtocolError("rerecord must be a boolean, true only on a decision that ends its episode")
    simulator_success = message.get("simulator_success")
    if simulator_success is not None and not isinstance(simulator_success, bool):
        raise ProtocolError("simulator_success must be a boolean or nil")

    def obs_row(o, i):
        return {key: v[i] for key, v in o.items()} if isinstance(o, dict) else o[i]

    transitions = [
        Transition(
            obs_row(obs, i),
            actions[i],
            float(rewards[i]),
            obs_row(next_obs, i),
            bool(flags["terminated"][i]),
            bool(flags["truncated"][i]),
            bool(flags["intervened"][i]),
        )  # fmt: skip
        for i in range(k)
    ]
    return Decision(transitions, ended, success, edited, not_first, float(act_seconds), rerecord, simulator_success)


def transition_ids(message: dict) -> list[str]:
    """An id per transition of a ``decision`` message: a digest of its observation and action as
    the replay buffer stores them (float32), to find it there (:func:`buffer_ids`)."""
    obs, actions = message["obs"], message["actions"]
    if isinstance(obs, dict):
        obs = obs[PROPRIO]
    return [_digest(o, a) for o, a in zip(obs, actions, strict=True)]


def buffer_ids(observations: np.ndarray, actions: np.ndarray) -> list[str]:
    """The :func:`transition_ids` of replay-buffer rows (state or proprioception, action)."""
    return [_digest(o, a) for o, a in zip(observations, actions, strict=True)]


def _digest(obs: np.ndarray, action: np.ndarray) -> str:
    data = np.asarray(obs, np.float32).tobytes() + np.asarray(action, np.float32).tobytes()
    return hashlib.sha1(data).hexdigest()[:16]
