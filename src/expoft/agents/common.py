"""Pieces every agent shares: trainable state, Polyak/EMA updates, Q-guided selection."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class Trainable:
    """Parameters with their optimiser state; the optimiser itself is static."""

    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> Trainable:
        return cls(params=params, opt_state=tx.init(params), tx=tx)

    def apply_gradients(self, grads: Any) -> Trainable:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state)


def polyak(target: Any, online: Any, rate: float) -> Any:
    """``target <- (1 - rate) * target + rate * online``: soft target updates and EMAs alike."""
    return jax.tree.map(lambda t, o: (1.0 - rate) * t + rate * o, target, online)


def q_guided_select(candidates: jax.Array, scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pick the highest-scoring candidate per row.

    Args:
        candidates: ``[B, C, d]``; scores: ``[B, C]``.

    Returns:
        ``(actions [B, d], index [B])``. The one selection rule EXPO uses for
        acting, evaluation and TD targets.
    """
    index = jnp.argmax(scores, axis=-1)
    return jnp.take_along_axis(candidates, index[:, None, None], axis=1)[:, 0], index


def count_nonfinite(tree: Any) -> jax.Array:
    """Number of NaN/inf entries in a pytree (reported as a metric, never replaced)."""
    leaves = jax.tree.leaves(tree)
    return sum(jnp.sum(~jnp.isfinite(x)) for x in leaves)
