"""Pluggable pretrained base policies ("external bases"): a model expoft samples from but does not own.

* :class:`ExternalBase` - the interface (numpy in/out, outside jit), :class:`Normalization`,
  :func:`check_chunks`;
* :class:`CallableBase` - any Python callable (a torch / LeRobot model, a numpy function);
* :class:`RemoteBase` - a model behind a websocket server in openpi's wire format;
* :func:`serve_policy` - put your own model behind such a server.

See docs/bases.md.
"""

from __future__ import annotations

from typing import Any

from expoft.bases.callable import CallableBase
from expoft.bases.interface import (
    BaseOutputError,
    ExternalBase,
    Normalization,
    base_learns,
    base_state,
    check_chunks,
    check_obs,
)
from expoft.bases.remote import PROTOCOL_VERSION, LatencyStats, RemoteBase, RemoteBaseError
from expoft.bases.wire import packb, unpackb

_SERVER_NAMES = ("PolicyServer", "ToyBase", "expoft_metadata", "serve_policy")


def __getattr__(name: str) -> Any:
    # The server module is imported on first use, so that ``python -m expoft.bases.server`` does not
    # find it already imported by this package.
    if name in _SERVER_NAMES:
        from expoft.bases import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROTOCOL_VERSION",
    "BaseOutputError",
    "CallableBase",
    "ExternalBase",
    "LatencyStats",
    "Normalization",
    "PolicyServer",
    "RemoteBase",
    "RemoteBaseError",
    "ToyBase",
    "base_learns",
    "base_state",
    "check_chunks",
    "check_obs",
    "expoft_metadata",
    "packb",
    "serve_policy",
    "unpackb",
]
