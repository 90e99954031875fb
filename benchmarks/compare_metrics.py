"""Compare two run folders' metrics.jsonl row by row, ignoring wall-clock columns (names with
time, seconds or per_s): a behaviour-preserving change must log identical metrics on CPU.

    python benchmarks/compare_metrics.py RUN_A RUN_B    # one JSON line; exit 1 if they differ
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLOCK = ("time/", "wall_seconds", "update_seconds", "critic_steps_per_s", "cpu_seconds")


def rows(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith(CLOCK)}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def main(a: str, b: str) -> int:
    ra, rb = rows(Path(a)), rows(Path(b))
    differing = [i for i, (x, y) in enumerate(zip(ra, rb, strict=False)) if x != y]
    count = len(differing) + abs(len(ra) - len(rb))
    print(json.dumps({"metric": "differing_metric_rows", "value": count, "unit": "rows", "rows": [len(ra), len(rb)],
                      "first_differing": differing[:3], "a": a, "b": b}))  # fmt: skip
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
