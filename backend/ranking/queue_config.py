"""How a project's queue is built: strategy, its parameters and the batch size.

Project managers set these per project in the ML backend's extra params (JSON) in Label
Studio, or as attributes of the RectangleLabels tag (extra params win):

    al_strategy     hybrid (default) | entropy | margin | least_confidence | kcenter | prefilter
                    | dua | dcus | typiclust | random. Until the project's first promoted
                    model, every strategy but random ranks by typiclust on the project
                    encoder's embeddings (ENCODER_TRAIN_SECONDS > 0): a model that has learned
                    nothing has no uncertainty worth ranking by
    al_lambda       0..1, hybrid only: weight of uncertainty against diversity (default 0.5)
    al_aggregation  max | mean | sum: box scores -> image score (uncertainty strategies)
    al_batch_size   tasks ordered by the full strategy each ranking (default 100); the rest of
                    the queue follows by score
    al_queue_length how many of the queue's first tasks each ranking writes to Label Studio
                    (default 1000; 0: every task). Label Studio serves them first, in order;
                    the other tasks are answered from the stored ranking when Label Studio
                    asks (`/predict`), and a ranking runs again once half of the written ones
                    are annotated. Label Studio spends 5-10 ms per prediction deleted and
                    recounts every task it imports to, so this bounds each ranking's writes
    al_audit        true (default) | false: the audit slice. The tasks whose id hash falls in
                    the validation share (TRAIN_VAL_PERCENT) are never ranked by the strategy;
                    they take every (100 / TRAIN_VAL_PERCENT)-th place of the queue in random
                    order, so the labels that validate models, gate promotions and give the
                    live quality figure are an unbiased sample, not the queue's hard picks
    al_per_second   true | false (default): rank by uncertainty per predicted annotator second
                    (the model's boxes priced with analytics.cost); uncertainty strategies and
                    the hybrids' uncertainty part
    al_uncertainty  entropy (default) | margin | least_confidence | dua | dcus: the hybrids'
                    uncertainty part; dua weights classes by their AP on the validation split
                    (the audit slice), so classes the model does worst on, often the rare
                    ones, count more
    al_flip         0..1 (default 0, off): weight of flip disagreement (how much the model's
                    boxes change when the image is mirrored: localisation and existence
                    uncertainty, CALD-style) blended by rank with the class uncertainty of the
                    uncertainty strategies and the hybrids' uncertainty part; the ranking
                    then runs the detector twice per task
    al_near_duplicates  0..1 (default 0, off): tasks closer than this fraction of the pool's
                    median nearest-neighbour embedding distance are near-duplicates: one of
                    them per batch, the others after it
    al_embedding    detector (default) | encoder: the embeddings diversity is measured on
                    once the project has a promoted model: the live detector's neck
                    features, or the project encoder's (self-supervised on the project's
                    own pictures; the detector's are used where the encoder is missing)

Everything is validated at /setup, so a typo answers a clear 4xx there, not a failed ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.errors import BadRequest
from strategies import available_strategies, get_strategy
from strategies.uncertainty import AGGREGATIONS

KEYS = (
    "al_strategy",
    "al_lambda",
    "al_aggregation",
    "al_batch_size",
    "al_queue_length",
    "al_audit",
    "al_per_second",
    "al_near_duplicates",
    "al_uncertainty",
    "al_flip",
    "al_embedding",
)
DEFAULT_STRATEGY = "hybrid"
COLD_START_STRATEGY = "typiclust"  # before the first promoted model, on the project encoder
DEFAULT_LAMBDA = 0.5  # hybrid's weight of uncertainty
DEFAULT_BATCH_SIZE = 100
DEFAULT_QUEUE_LENGTH = 1000  # tasks written to Label Studio per ranking (0: all)
DEFAULT_AUDIT = True
DEFAULT_PER_SECOND = False
DEFAULT_NEAR_DUPLICATES = 0.0
DEFAULT_FLIP = 0.0
DETECTOR_EMBEDDING, ENCODER_EMBEDDING = "detector", "encoder"  # al_embedding's choices
EMBEDDINGS = (DETECTOR_EMBEDDING, ENCODER_EMBEDDING)
_DIRECT = {"entropy", "margin", "least_confidence", "dua", "dcus"}  # score strategies
_AGGREGATE_DIRECT = {"entropy", "margin", "least_confidence"}
_NESTED = {"hybrid", "prefilter"}  # their uncertainty part takes the score options


@dataclass(frozen=True)
class QueueConfig:
    """A validated strategy choice for one project."""

    strategy: str = DEFAULT_STRATEGY
    params: Mapping[str, Any] = field(default_factory=lambda: {"lam": DEFAULT_LAMBDA})
    batch_size: int = DEFAULT_BATCH_SIZE
    flip_pass: bool = False  # the strategy uses flip disagreement: detect on mirrors too
    embedding: str = DETECTOR_EMBEDDING  # al_embedding: whose embeddings diversity uses
    queue_length: int = DEFAULT_QUEUE_LENGTH  # al_queue_length: the head written (0: all)

    def build(self) -> Any:
        """The strategy object (strategies.get_strategy)."""
        return get_strategy(self.strategy, **dict(self.params))

    def build_cold_start(self) -> Any:
        """The strategy of a ranking before the project's first promoted model: typical
        cluster centres on the project encoder's embeddings, with this queue's audit slice."""
        audit = {k: v for k, v in self.params.items() if k == "audit_share"}
        return get_strategy(COLD_START_STRATEGY, **audit)


def queue_config(
    extra_params: Mapping[str, Any],
    tag_attributes: Mapping[str, Any] | None = None,
    *,
    val_percent: int,
) -> QueueConfig:
    """The project's queue config from extra params over tag attributes; BadRequest if bad.

    `val_percent` is the project's validation share (TRAIN_VAL_PERCENT): the audit slice's.
    """
    raw = {k: v for k, v in (tag_attributes or {}).items() if k in KEYS}
    raw.update({k: v for k, v in extra_params.items() if k in KEYS})
    strategy = str(raw.get("al_strategy", DEFAULT_STRATEGY)).strip().lower()
    if strategy not in available_strategies():
        raise BadRequest(
            f"al_strategy {strategy!r} is unknown; choose one of: "
            + ", ".join(available_strategies())
        )
    params: dict[str, Any] = {}
    if "al_lambda" in raw:
        if strategy != "hybrid":
            raise BadRequest("al_lambda applies only to al_strategy 'hybrid'")
        params["lam"] = _number(raw["al_lambda"], "al_lambda", 0.0, 1.0)
    elif strategy == "hybrid":
        params["lam"] = DEFAULT_LAMBDA
    score_params: dict[str, Any] = {}
    if "al_aggregation" in raw:
        how = str(raw["al_aggregation"]).strip().lower()
        if how not in AGGREGATIONS:
            raise BadRequest(
                f"al_aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}"
            )
        if strategy not in _AGGREGATE_DIRECT | _NESTED:
            raise BadRequest(f"al_aggregation does not apply to al_strategy {strategy!r}")
        score_params["aggregate"] = how
    if _flag(raw, "al_per_second", DEFAULT_PER_SECOND):
        if strategy in _DIRECT | _NESTED:
            score_params["per_second"] = True
        elif "al_per_second" in raw:
            raise BadRequest(f"al_per_second does not apply to al_strategy {strategy!r}")
    flip = _number(raw.get("al_flip", DEFAULT_FLIP), "al_flip", 0.0, 1.0)
    if flip > 0:
        if strategy not in _DIRECT | _NESTED:
            raise BadRequest(f"al_flip does not apply to al_strategy {strategy!r}")
        score_params["flip"] = flip
    if "al_uncertainty" in raw:
        if strategy not in _NESTED:
            raise BadRequest(
                f"al_uncertainty applies only to al_strategy {' or '.join(sorted(_NESTED))}"
            )
        uncertainty = str(raw["al_uncertainty"]).strip().lower()
        if uncertainty not in _DIRECT:
            raise BadRequest(f"al_uncertainty must be one of {', '.join(sorted(_DIRECT))}")
        params["uncertainty"] = uncertainty
        if uncertainty not in _AGGREGATE_DIRECT and "aggregate" in score_params:
            raise BadRequest(f"al_aggregation does not apply to al_uncertainty {uncertainty!r}")
    if strategy in _NESTED and score_params:
        params["uncertainty_params"] = score_params
    else:
        params.update(score_params)
    near = _number(
        raw.get("al_near_duplicates", DEFAULT_NEAR_DUPLICATES), "al_near_duplicates", 0.0, 1.0
    )
    if near > 0:
        params["dup_relative"] = near
    if _flag(raw, "al_audit", DEFAULT_AUDIT):
        params["audit_share"] = val_percent / 100.0
    batch_size = _integer(raw, "al_batch_size", DEFAULT_BATCH_SIZE, 1, 100_000)
    queue_length = _integer(raw, "al_queue_length", DEFAULT_QUEUE_LENGTH, 0, 10_000_000)
    embedding = str(raw.get("al_embedding", DETECTOR_EMBEDDING)).strip().lower()
    if embedding not in EMBEDDINGS:
        raise BadRequest(f"al_embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
    config = QueueConfig(
        strategy,
        params,
        batch_size,
        flip_pass=flip > 0,
        embedding=embedding,
        queue_length=queue_length,
    )
    try:
        config.build()
    except ValueError as exc:
        raise BadRequest(f"invalid queue settings: {exc}") from None
    return config


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 10**400
        raise BadRequest(f"{name} must be a number, got {value!r}") from None
    if not lo <= number <= hi:
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, got {number:g}")
    return number


def _integer(raw: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number option between `lo` and `hi`."""
    if name not in raw:
        return default
    number = _number(raw[name], name, lo, hi)
    if number != int(number):
        raise BadRequest(f"{name} must be an integer, got {raw[name]!r}")
    return int(number)


def _flag(raw: Mapping[str, Any], name: str, default: bool) -> bool:
    """A true/false option (JSON booleans, or the strings true/false/1/0)."""
    value = raw.get(name, default)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        value = value.strip().lower() in ("true", "1")
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value
