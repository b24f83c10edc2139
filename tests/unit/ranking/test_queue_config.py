from __future__ import annotations

import pytest

from backend.errors import BadRequest
from backend.ranking import queue_config as module
from backend.ranking.queue_config import DEFAULT_QUEUE_LENGTH, QueueConfig


def queue_config(extra: dict, tags: dict | None = None) -> QueueConfig:
    return module.queue_config(extra, tags, val_percent=20)


def test_default_is_the_hybrid_at_lambda_one_half_with_an_audit_slice() -> None:
    config = queue_config({})
    assert config == QueueConfig("hybrid", {"lam": 0.5, "audit_share": 0.2}, 100)
    assert queue_config({"al_clusters": "false"}) == config  # a removed option is ignored
    assert type(config.build()).__name__ == "RankMix"
    assert config.build().audit_share == 0.2


def test_the_hybrids_uncertainty_part_can_weight_classes() -> None:
    config = queue_config({"al_uncertainty": "DUA", "al_per_second": True})
    assert config.params["uncertainty"] == "dua"
    assert config.params["uncertainty_params"] == {"per_second": True}
    assert type(config.build().uncertainty).__name__ == "DUA"


def test_near_duplicates_is_a_fraction_of_the_neighbour_distance() -> None:
    assert queue_config({"al_near_duplicates": "0.3"}).params["dup_relative"] == 0.3
    assert "dup_relative" not in queue_config({"al_near_duplicates": 0}).params


def test_the_audit_slice_is_the_validation_share_and_can_be_turned_off() -> None:
    assert module.queue_config({}, val_percent=10).params["audit_share"] == 0.1
    assert "audit_share" not in queue_config({"al_audit": "false"}).params


def test_queue_length_defaults_to_a_bounded_head_and_zero_means_every_task() -> None:
    assert queue_config({}).queue_length == DEFAULT_QUEUE_LENGTH > 0
    assert queue_config({"al_queue_length": "500"}).queue_length == 500
    assert queue_config({"al_queue_length": 0}).queue_length == 0


@pytest.mark.parametrize(
    ("extra", "params"),
    [
        ({"al_strategy": "margin", "al_per_second": True}, {"per_second": True}),
        ({"al_strategy": "dua", "al_per_second": "1"}, {"per_second": True}),
        (
            {"al_per_second": True, "al_aggregation": "sum"},
            {"lam": 0.5, "uncertainty_params": {"aggregate": "sum", "per_second": True}},
        ),
    ],
)
def test_per_second_reaches_the_uncertainty_part(extra: dict, params: dict) -> None:
    config = queue_config({**extra, "al_audit": False})
    assert config.params == params
    config.build()


def test_flip_weight_reaches_the_uncertainty_part_and_the_detect_stage() -> None:
    config = queue_config({"al_flip": "0.5", "al_audit": False})
    assert config.params == {"lam": 0.5, "uncertainty_params": {"flip": 0.5}}
    assert config.flip_pass is True
    assert queue_config({"al_strategy": "dua", "al_flip": 1}).params["flip"] == 1.0
    assert queue_config({"al_flip": 0}).flip_pass is False
    config.build()


def test_extra_params_override_tag_attributes() -> None:
    config = queue_config(
        {"al_lambda": 0.25}, {"al_strategy": "hybrid", "al_lambda": "0.9", "al_batch_size": "20"}
    )
    assert config.params == {"lam": 0.25, "audit_share": 0.2}
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
    assert queue_config({**extra, "al_audit": False}).params == params


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
        ({"al_queue_length": -1}, "al_queue_length must be between 0 and"),
        ({"al_queue_length": "many"}, "al_queue_length must be a number"),
        ({"al_queue_length": 10.5}, "integer"),
        ({"al_audit": 2}, "al_audit must be true or false"),
        ({"al_near_duplicates": 2}, "al_near_duplicates must be between 0 and 1"),
        ({"al_uncertainty": "vibes"}, "al_uncertainty must be one of"),
        ({"al_strategy": "entropy", "al_uncertainty": "dua"}, "applies only to"),
        ({"al_uncertainty": "dua", "al_aggregation": "sum"}, "does not apply to al_uncertainty"),
        ({"al_strategy": "kcenter", "al_per_second": True}, "does not apply"),
        ({"al_strategy": "random", "al_flip": 0.5}, "al_flip does not apply"),
        ({"al_flip": 1.5}, "al_flip must be between 0 and 1"),
    ],
)
def test_invalid_values_are_clear_errors(extra: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        queue_config(extra)


def test_embedding_choice():
    assert queue_config({}).embedding == "detector"
    assert queue_config({"al_embedding": " Encoder "}).embedding == "encoder"
    with pytest.raises(BadRequest, match="al_embedding must be one of detector, encoder"):
        queue_config({"al_embedding": "neck"})
