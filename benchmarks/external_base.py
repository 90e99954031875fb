"""Latency an external base adds: round trips to a policy served by another process (protocol P3,
action-selection latency, for the VLA path of docs/bases.md).

A :class:`~expoft.bases.server.ToyBase` (numpy, negligible inference) is served on localhost by a
separate process; :class:`~expoft.bases.RemoteBase` sends ``--calls`` requests per batch size
(after 5 warm-up calls): B = 1 is one action selection, B = pool size the TD-target candidates of
an update call. What is measured is the transport (websocket + msgpack + numpy), not a model.

One JSON line per figure: ``{"metric", "value", "unit", "batch", "num_samples"}`` with metric
``remote_latency_p50_ms``, ``remote_latency_p99_ms`` or ``server_time_p50_ms``.
Run by hand: ``python benchmarks/external_base.py --batches 1 1024``.
"""

from __future__ import annotations

import argparse
import json

from expoft.bases.toy import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256, 1024])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--obs-dim", type=int, default=28)
    parser.add_argument("--action-dim", type=int, default=5)
    parser.add_argument("--chunk-len", type=int, default=5)
    args = parser.parse_args()
    rows = bench(args.batches, args.calls, args.num_samples, args.obs_dim, args.action_dim, args.chunk_len)
    names = {
        "p50_ms": "remote_latency_p50_ms",
        "p99_ms": "remote_latency_p99_ms",
        "server_p50_ms": "server_time_p50_ms",
    }
    for row in rows:
        for key, metric in names.items():
            line = {"metric": metric, "value": row[key], "unit": "ms", "batch": row["batch"],
                    "num_samples": row["num_samples"]}  # fmt: skip
            print(json.dumps(line))


if __name__ == "__main__":
    main()
