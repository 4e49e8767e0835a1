"""``homepage logs export``: which plays are credited to which served slot."""

from __future__ import annotations

import json

from homepage.logs_export import served_impressions


def _page(page_id: str, user: int, titles: list[list[int]]) -> tuple[str, int, str]:
    rows = [{"row_id": f"r{i}", "ranker": "top_n", "titles": t} for i, t in enumerate(titles)]
    return ("1-0", user, json.dumps({"page_id": page_id, "user_id": user, "ts": 100, "policy": "stage-wise", "rows": rows}))


def _play(user: int, page_id: str, title: int, row: int | None = None, col: int | None = None) -> tuple[str, int, str]:
    e = {"user_id": user, "title_id": title, "kind": "play", "ts": 120, "page_id": page_id, "row_index": row, "col_index": col}
    return ("2-0", user, json.dumps(e))


def test_a_play_is_credited_only_to_its_users_slot_showing_its_title() -> None:
    """A review credited title 6 at (0, 1) with a play of title 99 by another user that named that slot."""
    served = [_page("p1", 7, [[5, 6], [8, 9]]), _page("p2", 8, [[6, 5]])]
    events = [
        _play(8, "p1", 99, 0, 1),  # another user, another title, naming p1's slot
        _play(7, "p1", 9, 1, 1),  # the page's user, the title shown there
        _play(7, "p1", 5),  # no slot: by title on the page
        _play(7, "p2", 6, 0, 0),  # user 7 naming user 8's page
    ]
    frame = served_impressions(served, events)
    played = {(r.page_id, r.row_index, r.col_index) for r in frame.itertuples() if r.played}
    assert played == {("p1", 1, 1), ("p1", 0, 0)}
    assert len(frame) == 6
