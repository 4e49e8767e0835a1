"""Page-model training data built in forked worker processes equals the data built in one process."""

from __future__ import annotations

import numpy as np
from inner_split_world import inner_split_world

from homepage.pagebuilder.training import StageData, stage_data
from homepage.replay.protocol import ReplayProtocol, sample_requests


def test_stage_data_in_two_workers_equals_one_process() -> None:
    w = inner_split_world()
    log, models, inner, until = w.log, w.models, w.inner, w.until
    requests = sample_requests(log, ReplayProtocol(split_time=inner, requests_per_user=2, max_requests=80, seed=5), until=until)
    seen: list[int] = []
    one = stage_data(log, models, requests, w.half_life, 10, 10)
    two = stage_data(log, models, requests, w.half_life, 10, 10, progress=seen.append, workers=2)
    assert one.groups.size > 20
    assert sum(seen) == len(requests)
    assert np.all(np.diff(two.request_of_group) >= 0)  # groups in request order
    assert np.array_equal(two.groups, one.groups)
    assert np.array_equal(two.request_of_group, one.request_of_group)
    assert np.array_equal(two.y, one.y)
    assert np.array_equal(two.X, one.X, equal_nan=True)  # NaN: features undefined at that stage


def test_chunks_are_put_back_in_request_order() -> None:
    def part(owners: list[int], sizes: list[int]) -> StageData:
        n = sum(sizes)
        X = np.arange(n * 2, dtype=np.float64).reshape(n, 2) + 100 * owners[0]
        return StageData(X, np.arange(n, dtype=np.int32), np.array(sizes, np.int64), np.array(owners, np.int64))

    late, early = part([7, 7, 9], [2, 1, 3]), part([2, 4], [1, 2])
    got = StageData.in_request_order([late, early])
    assert got.request_of_group.tolist() == [2, 4, 7, 7, 9]
    assert got.groups.tolist() == [1, 2, 2, 1, 3]
    assert np.array_equal(got.X, np.concatenate([early.X, late.X]))
    assert got.y.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5]
