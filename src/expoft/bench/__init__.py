"""`expoft bench`: methods side by side on one protocol (runner), and their comparison (report)."""

from expoft.bench.runner import Bench, BenchReport, parse_bench

__all__ = ["Bench", "BenchReport", "parse_bench"]
