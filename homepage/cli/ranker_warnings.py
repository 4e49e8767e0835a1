"""The warning lines ``train`` and ``replay`` print for rankers that raised or had rows dropped."""

from __future__ import annotations


def ranker_problem_warnings(problems: dict[str, dict[str, int]], requests: int, what: str) -> list[str]:
    """One rich-markup line per ranker in ``problems`` (ranker -> {"failed", "rows dropped"} request counts) of ``requests`` ``what``."""
    return [
        f"[yellow]warning[/]: ranker {ranker} failed on {counts['failed']:,} and had rows dropped on {counts['rows dropped']:,} "
        f"of {requests:,} {what} (the log says why); its rows are missing from those pages"
        for ranker, counts in problems.items()
    ]
