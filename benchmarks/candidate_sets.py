"""Where a finished policy's success comes from: the same checkpoint (same critic, same base)
choosing among other candidate sets, on the same reset seeds. Run by hand, not by CI.

    python benchmarks/candidate_sets.py RUN [RUN ...] --sets 8+0 16+0 32+0 8+8:mean --episodes 50

For each run (a run folder with checkpoints: `expoft bench` keeps them in its RUNS_DIR, the
exports drop them): its own OTF rule, its base alone, and each set ``N+M`` (N base samples, M of
them also edited; ``8+0`` is the critic's choice among 8 base samples without the edit policy;
``N+M:mean`` scores them by the mean of the whole target ensemble instead of the run's rule),
all evaluated by `expoft eval`'s code on the run's own evaluation seeds, so that each pairs with
the others episode by episode. One JSON line per (run, policy): success, its Wilson interval,
episode length, the paired difference against the run's own rule and against its base alone
(mean and normal interval over the episodes), the fraction of decisions that took an edited
candidate. Machine: whatever runs it (CPU; ~1 minute per 50 scene episodes on one core); seeds:
the runs' own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from expoft.agents.expo import ACT_SCORES
from expoft.train.evaluate import evaluate_run, paired_difference

SCORES = " or ".join(ACT_SCORES)


def parse_set(text: str) -> dict:
    """``N+M`` or ``N+M:SCORE`` -> the ``choice`` of ``evaluate_run``."""
    counts, _, score = text.partition(":")
    try:
        base, edits = (int(x) for x in counts.split("+"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a candidate set is N+M or N+M:SCORE (N base samples, M edited, SCORE {SCORES}), got {text!r}"
        ) from None
    if score and score not in ACT_SCORES:
        raise argparse.ArgumentTypeError(f"SCORE of {text!r} must be {SCORES}")
    return {"num_base_samples": base, "num_edit_samples": edits, "act_score": score or None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with checkpoints")
    parser.add_argument("--sets", nargs="+", default=["8+0"], help="candidate sets N+M or N+M:SCORE")
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    if args.episodes < 2:
        parser.error("--episodes must be >= 2 (a paired interval needs two episodes)")
    try:
        sets = {text: parse_set(text) for text in args.sets}
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    for run in args.runs:
        own = evaluate_run(run, args.episodes)
        base = evaluate_run(run, args.episodes, policy="base")
        rows = [("own", own, "eval"), ("base", base, "eval_base")]
        rows += [(name, evaluate_run(run, args.episodes, choice=choice), "eval") for name, choice in sets.items()]
        own_s, base_s = own["eval/successes"], base["eval_base/successes"]
        for name, result, prefix in rows:
            successes = result[f"{prefix}/successes"]
            print(json.dumps({
                "run": str(run), "env_step": result["env_step"], "seed": result["seed"], "policy": name,
                "choice": result.get("choice"), "episodes": args.episodes,
                "success": result[f"{prefix}/success"],
                "success_ci": [result[f"{prefix}/success_ci_low"], result[f"{prefix}/success_ci_high"]],
                "episode_length": result[f"{prefix}/episode_length"],
                "edited_frac": result.get(f"{prefix}/edited_frac"),
                "minus_own": paired_difference(successes, own_s),
                "minus_base": paired_difference(successes, base_s),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
