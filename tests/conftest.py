"""Shared fixtures: small hand-made datasets, one tiny generated demo set, the rendering check."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

import numpy as np
import pytest

from expoft.data.transitions import TASK_FIELDS, make_dataset
from expoft.fileio import read_metrics
from expoft.pytree_io import load_pytree


def assert_same_leaves(a, b) -> None:
    """Two pytrees (agents) equal array for array."""
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def assert_same_checkpoints(template, first, second) -> None:
    """Two agent checkpoint files (read into ``template``'s structure) equal array for array."""
    assert_same_leaves(load_pytree(template, first)[0], load_pytree(template, second)[0])


def metrics_rows(run_dir) -> list[dict]:
    """A run folder's metrics.jsonl, one dict per row, read as every reader in expoft reads it;
    strict about its end too: a run that stopped leaves no row half-written."""
    text = (run_dir / "metrics.jsonl").read_text()
    assert not text or text.endswith("\n"), f"{run_dir}/metrics.jsonl ends in a cut row: {text[-80:]!r}"
    return read_metrics(run_dir)


def episode_arrays(lengths, obs_dim=3, action_dim=2, terminal_last=None, seed=0, labelled=True):
    """Arrays of consecutive episodes with consistent next_observations.

    Observation rows are distinct random vectors; rewards are 0..N-1 so that
    sums are easy to compute by hand; ``terminal_last[e]`` makes episode e end
    in a terminal state (else it is a time-limit truncation). ``labelled=False``:
    without the task fields (rewards, terminals, episode_success), as play data.
    """
    rng = np.random.default_rng(seed)
    terminal_last = terminal_last or [False] * len(lengths)
    obs, nxt, ends, terms = [], [], [], []
    for length, term in zip(lengths, terminal_last, strict=True):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        obs.append(states[:-1])
        nxt.append(states[1:])
        e = np.zeros(length, bool)
        e[-1] = True
        ends.append(e)
        t = np.zeros(length, bool)
        t[-1] = term
        terms.append(t)
    n = sum(lengths)
    arrays = {
        "observations": np.concatenate(obs),
        "next_observations": np.concatenate(nxt),
        "actions": rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32),
        "rewards": np.arange(n, dtype=np.float32),
        "terminals": np.concatenate(terms),
        "episode_ends": np.concatenate(ends),
        "episode_success": np.array(terminal_last, bool),
    }
    return arrays if labelled else {k: v for k, v in arrays.items() if k not in TASK_FIELDS}


@pytest.fixture
def small_arrays():
    return episode_arrays([4, 3], terminal_last=[True, False])


@pytest.fixture
def small_dataset(small_arrays):
    return make_dataset(small_arrays, {"kind": "custom"})


# Cache every compiled program, however small or quick to compile (JAX's defaults skip those).
# No XLA GPU caches: JAX puts their folder, inside the cache's, into every key, so that a copy of
# the cache in another folder (xla_env) would miss every entry.
_CACHE_OPTIONS = {
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
    "jax_persistent_cache_enable_xla_caches": "none",
}


def pytest_configure(config):
    """One persistent XLA compilation cache per test session, shared by the xdist workers and by the
    training processes tests start (they inherit the environment): many tests compile the same tiny
    agents, and each resumed or killed-and-restarted run would otherwise compile everything again
    (about half of a pixel run's minute). Only compile time changes: the cache is keyed by the
    compiled program, and an unreadable entry is compiled again (JAX warns)."""
    import jax

    # The tests' networks are tiny: XLA's compile time is most of many tests' time, the compiled
    # code's speed hardly counts. LLVM at -O0 compiles a tiny run ~1.4x faster (33.6 -> 24.5 s
    # cold, 2026-12-06); every comparison in the suite runs both of its sides under the same flag.
    # Set before any computation (XLA reads it when the CPU backend starts); processes started by
    # tests inherit it. A user's own XLA_FLAGS that name an optimization level are kept.
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config._expoft_jax_cache = tempfile.mkdtemp(prefix="expoft-test-jax-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config._expoft_jax_cache
        os.environ.update({name.upper(): str(value) for name, value in _CACHE_OPTIONS.items()})
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # jax was imported before: apply to this process too
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        for name, value in _CACHE_OPTIONS.items():
            jax.config.update(name, value)


def xla_env(private=None) -> dict[str, str]:
    """This session's XLA settings (flags, compilation cache) for a process a test starts with an
    environment of its own, so that it compiles as the test's own process does (at -O0, from the
    shared cache) instead of cold at -O2 (~2x its CPU time for a tiny run). ``private``: a folder
    for a copy of the session's cache, for processes the test kills: JAX writes an entry in place,
    so a kill mid-write leaves a cut entry, read back as a miss with a warning, that other tests
    would meet. A copy taken while another worker writes may hold such an entry too (harmless)."""
    names = ["XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", *(name.upper() for name in _CACHE_OPTIONS)]
    env = {name: os.environ[name] for name in names if name in os.environ}
    if private is not None and "JAX_COMPILATION_CACHE_DIR" in env:
        shutil.copytree(env["JAX_COMPILATION_CACHE_DIR"], private, dirs_exist_ok=True)
        env["JAX_COMPILATION_CACHE_DIR"] = str(private)
    return env


def pytest_unconfigure(config):
    cache = getattr(config, "_expoft_jax_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def cube_demos():
    """Three cube-single task-1 demonstrations (about 2 s to make)."""
    from expoft.data.generate import DemosConfig, generate

    return generate(DemosConfig(env="cube-single", task=1, episodes=3, seed=0), workers=1, progress=False)


@functools.cache
def render_problem() -> str | None:
    """Why this machine cannot render offscreen with MuJoCo (None when it can); checked once."""
    import expoft.envs  # noqa: F401  (MUJOCO_GL=egl unless the user chose otherwise)

    try:
        import dm_control.mjcf  # noqa: F401  (OGBench's model builder opens an EGL display when imported)
        import mujoco

        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='0.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 16, 16)
        try:
            renderer.update_scene(mujoco.MjData(model))
            renderer.render()
        finally:
            renderer.close()
    except Exception as error:  # no EGL library, no driver, no device: MuJoCo raises several types
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture(scope="session")
def rendering():
    """Use in tests that render: skipped where offscreen rendering is unavailable, but failed when
    EXPOFT_REQUIRE_RENDER=1 (CI sets it, so that a missing EGL is never silently skipped)."""
    problem = render_problem()
    if problem is not None:
        if os.environ.get("EXPOFT_REQUIRE_RENDER") == "1":
            pytest.fail(
                f"offscreen rendering is unavailable ({problem}) but EXPOFT_REQUIRE_RENDER=1; install EGL "
                "(bash scripts/setup.sh does: libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)"
            )
        pytest.skip(f"offscreen rendering is unavailable: {problem}")


def tensorboard_images(logdir) -> dict[tuple[str, int], bytes]:
    """The encoded images (videos: animated GIFs) of a run's TensorBoard events, by (tag, step)."""
    from expoft.report.sinks import tensorboard_events

    return {
        (value.tag, int(event.step)): value.image.encoded_image_string
        for event in tensorboard_events(logdir)
        for value in event.summary.value
        if value.HasField("image")
    }


# The tiers of the suite, by file: what each pins. `pytest -m known_answer` runs the tests that
# pin what the algorithms compute; `-m unit` the pieces; `-m smoke` whole runs and processes.
TIERS = {
    "known_answer": (
        "test_expo", "test_baselines", "test_target_fidelity", "test_replay", "test_env_reward",
        "test_pixel_agent", "test_encoders",
    ),
    "unit": (
        "test_dataset", "test_generate", "test_interop", "test_chunks", "test_pixel_replay", "test_pixels_env",
        "test_bases", "test_registry", "test_logging", "test_cli", "test_bench", "test_interventions", "test_layout",
        "test_robot", "test_teleop", "test_record", "test_success_detector", "test_learn_queue",
        "test_candidate_values", "test_benchmark_scripts",
    ),
    "smoke": (
        "test_train", "test_resume", "test_offline_rl", "test_external_base", "test_pixel_bases", "test_pixel_run",
        "test_actorlearner", "test_fleet",
    ),
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    tier_of = {module: tier for tier, modules in TIERS.items() for module in modules}
    for item in items:
        module = item.path.stem
        if module not in tier_of:
            raise pytest.UsageError(f"{item.path.name} is in no tier of tests/conftest.py TIERS; add it to one")
        item.add_marker(getattr(pytest.mark, tier_of[module]))
