"""Networks shared by every agent: MLPs, the residual velocity/noise net, the
vectorised critic ensemble and the tanh-Gaussian head.

All modules are Flax linen; parameters are plain pytrees so agents stay
immutable and updates pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import VariableDict

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class MLP(nn.Module):
    """Dense layers with optional LayerNorm after each hidden layer."""

    hidden: Sequence[int]
    out_dim: int | None = None
    layer_norm: bool = False
    activation: Callable = nn.relu
    zero_output: bool = False
    """Initialise the output layer at zero: the network starts at exactly 0 everywhere."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = self.activation(x)
        if self.out_dim is not None:
            init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
            x = nn.Dense(self.out_dim, kernel_init=init)(x)
        return x


class FourierTime(nn.Module):
    """Learnable Fourier features of a scalar time t in [0, 1]: ``[B] -> [B, dim]``."""

    dim: int = 128
    scale: float = 1.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        freqs = self.param("freqs", nn.initializers.normal(self.scale), (self.dim // 2,))
        angles = 2.0 * jnp.pi * t[..., None] * freqs
        return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class ResidualMLP(nn.Module):
    """``out = Dense(out_dim)(trunk(Dense(width)(x)))``, the trunk's blocks
    ``h + Dense(swish(Dense(LayerNorm(h))))`` (ALGORITHMS.md: 3 blocks, width 256)."""

    out_dim: int
    width: int = 256
    blocks: int = 3

    def setup(self):
        # List attributes name their members Dense_0, Dense_1, ... and LayerNorm_0, ...: the
        # names the compact version of this module gave them, so older checkpoints still load.
        self.Dense = [nn.Dense(self.width) for _ in range(1 + 2 * self.blocks)] + [nn.Dense(self.out_dim)]
        self.LayerNorm = [nn.LayerNorm() for _ in range(self.blocks + 1)]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.trunk(self.Dense[0](x))

    def trunk(self, h: jax.Array) -> jax.Array:
        """Everything after the input layer, on its output ``h [..., width]``."""
        for i in range(self.blocks):
            y = nn.swish(self.Dense[2 * i + 1](self.LayerNorm[i](h)))
            h = h + self.Dense[2 * i + 2](y)
        return self.Dense[-1](nn.swish(self.LayerNorm[-1](h)))


class DenoisingNet(nn.Module):
    """Velocity (flow) or noise (DDPM) prediction ``f(obs, x_t, t)``.

    Shapes: obs ``[..., D]``, x ``[..., d]``, t ``[...]`` in [0, 1] -> ``[..., d]``.
    """

    action_dim: int
    width: int = 256
    blocks: int = 3
    time_features: int = 128

    @nn.compact
    def __call__(self, obs: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        feats = FourierTime(self.time_features)(t)
        inputs = jnp.concatenate([obs, x, feats], axis=-1)  # the order conditioned_denoiser splits
        return ResidualMLP(self.action_dim, self.width, self.blocks)(inputs)


def conditioned_denoiser(
    net: DenoisingNet, params: VariableDict, cond: jax.Array
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``f(x, t) = net.apply(params, cond, x, t)`` for one observation's conditioning ``cond [F]``,
    its samples ``x [N, d]`` and one time ``t`` (a scalar) shared by them.

    The same function, computed in fewer operations (equal up to float rounding, tested): the
    input layer ``W [cond; x; time features] + b`` is split by its input blocks, the observation's
    part once per observation instead of once per sample and denoising step, the time's once
    per step instead of once per row. In the base's sampling chain those two parts are about a
    third of the input layer's work and all of its sines and cosines."""
    p = params["params"]
    first = p["ResidualMLP_0"]["Dense_0"]
    obs_dim = cond.shape[-1]
    k_obs, k_x, k_time = jnp.split(first["kernel"], [obs_dim, obs_dim + net.action_dim])
    from_obs = cond @ k_obs + first["bias"]  # [W]
    time_net = FourierTime(net.time_features)
    trunk = ResidualMLP(net.action_dim, net.width, net.blocks)

    def f(x: jax.Array, t: jax.Array) -> jax.Array:
        feats = cast(jax.Array, time_net.apply({"params": p["FourierTime_0"]}, jnp.reshape(t, (1,))))  # [1, T]
        h = from_obs + x @ k_x + feats @ k_time  # [N, W]
        return cast(jax.Array, trunk.apply({"params": p["ResidualMLP_0"]}, h, method=ResidualMLP.trunk))

    return f


class Critic(nn.Module):
    """One Q-network: ``Q(obs [..., D], action [..., d]) -> [...]``.

    Its output layer starts at zero (ALGORITHMS.md, EXPO 3), so every member of an ensemble
    starts at Q = 0. With the default init, LayerNorm members start at offsets of about +-0.5,
    as large as the whole value range of a sparse success reward, and a soft-updated target
    forgets them only by e every 1 / (tau (1 - gamma)) = 20k critic steps: until then OTF's
    argmax ranks candidates by initialisation noise. The hidden layers keep their random init,
    so the output layer's gradient is non-zero from the first step."""

    hidden: Sequence[int] = (256, 256, 256)
    layer_norm: bool = True
    zero_output: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        return MLP(self.hidden, 1, self.layer_norm, zero_output=self.zero_output)(x)[..., 0]


class Ensemble:
    """E independent copies of a module with stacked parameters (leading axis E).

    Kept outside linen so that a subset of members can be evaluated by slicing
    the parameters: scoring with 2 of 10 critics costs 2 critics, not 10.
    """

    def __init__(self, module: nn.Module, size: int):
        self.module = module
        self.size = size

    def init(self, rng: jax.Array, *example) -> VariableDict:
        keys = jax.random.split(rng, self.size)
        return jax.vmap(lambda k: self.module.init(k, *example))(keys)

    def apply(self, params: dict, *args) -> jax.Array:
        """All members: ``[E, ...]``."""
        return cast(jax.Array, jax.vmap(lambda p: self.module.apply(p, *args))(params))

    def apply_subset(self, params: dict, members: jax.Array, *args) -> jax.Array:
        """Only ``members`` (int array [m]): ``[m, ...]``.

        One member after the other, each on its inputs' rows flattened to ``[rows, features]``,
        not vmapped: XLA:CPU runs a member's layer as one plain matrix product then, where the
        vmapped form is a batched product ~1.35x slower at OTF scoring's size (2 members x 256
        rows x 16 candidates; equal for small inputs; benchmarks/ensemble_apply.py). The same
        arithmetic; only the order of float sums may differ."""
        lead = jnp.broadcast_shapes(*(a.shape[:-1] for a in args))
        flat = [jnp.broadcast_to(a, (*lead, a.shape[-1])).reshape(-1, a.shape[-1]) for a in args]
        out = [cast(jax.Array, self.module.apply(jax.tree.map(lambda p, m=m: p[m], params), *flat)) for m in members]
        return jnp.stack(out).reshape(len(members), *lead, *out[0].shape[1:])

    def random_members(self, rng: jax.Array, m: int) -> jax.Array:
        return jax.random.choice(rng, self.size, (m,), replace=False)


class TanhGaussian(nn.Module):
    """Squashed Gaussian head: returns ``(mean, log_std)`` of the pre-tanh Gaussian."""

    action_dim: int
    hidden: Sequence[int] = (256, 256, 256)

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MLP(self.hidden, layer_norm=False)(x)
        mean = nn.Dense(self.action_dim)(h)
        log_std = jnp.clip(nn.Dense(self.action_dim)(h), LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


def tanh_gaussian_sample(rng: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised ``u = tanh(z)`` and ``log pi(u)`` (summed over the last axis)."""
    z = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
    u = jnp.tanh(z)
    gauss = -0.5 * (((z - mean) / jnp.exp(log_std)) ** 2 + 2.0 * log_std + jnp.log(2.0 * jnp.pi))
    # log(1 - tanh(z)^2) written stably as 2 (log 2 - z - softplus(-2z)).
    log_det = 2.0 * (jnp.log(2.0) - z - jax.nn.softplus(-2.0 * z))
    return u, jnp.sum(gauss - log_det, axis=-1)
