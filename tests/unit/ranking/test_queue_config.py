from __future__ import annotations

import pytest

from backend.errors import BadRequest
from backend.ranking.queue_config import QueueConfig, queue_config


def test_default_is_the_hybrid_at_lambda_one_half() -> None:
    config = queue_config({})
    assert config == QueueConfig("hybrid", {"lam": 0.5}, 100, True)
    assert queue_config({"al_clusters": "false"}).clusters is False
    assert type(config.build()).__name__ == "RankMix"


def test_extra_params_override_tag_attributes() -> None:
    config = queue_config(
        {"al_lambda": 0.25}, {"al_strategy": "hybrid", "al_lambda": "0.9", "al_batch_size": "20"}
    )
    assert config.params == {"lam": 0.25}
    assert config.batch_size == 20


@pytest.mark.parametrize(
    ("extra", "params"),
    [
        ({"al_strategy": "Entropy", "al_aggregation": "sum"}, {"aggregate": "sum"}),
        (
            {"al_strategy": "prefilter", "al_aggregation": "mean"},
            {"uncertainty_params": {"aggregate": "mean"}},
        ),
        ({"al_strategy": "kcenter"}, {}),
    ],
)
def test_aggregation_reaches_the_right_parameter(extra: dict, params: dict) -> None:
    assert queue_config(extra).params == params


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"al_strategy": "best"}, "unknown"),
        ({"al_lambda": "x"}, "must be a number"),
        ({"al_lambda": True}, "must be a number"),
        ({"al_strategy": "random", "al_lambda": 0.3}, "only to al_strategy 'hybrid'"),
        ({"al_aggregation": "median"}, "al_aggregation must be one of"),
        ({"al_strategy": "dua", "al_aggregation": "max"}, "does not apply"),
        ({"al_batch_size": 0}, "between 1 and"),
        ({"al_batch_size": 2.5}, "integer"),
        ({"al_clusters": "sometimes"}, "al_clusters must be true or false"),
    ],
)
def test_invalid_values_are_clear_errors(extra: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        queue_config(extra)
