"""`GET /versions` through Flask's test client: the version list Label Studio's
`GET /api/ml/{id}/versions` passes on, consistent with what `/setup` answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from backend.config import Settings
from backend.models.registry import ModelRegistry
from backend.ranking.store import ranking_document, ranking_path, save_ranking
from backend.serving.app import create_app
from tests.conftest import BOX_CONFIG

BASE = "random-init-yolo11n"  # what serves a project without a model (no MODEL_PATH here)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def client(model_dir: Path) -> FlaskClient:
    settings = Settings(model_dir=model_dir, training_enabled=False)
    return create_app(settings).test_client()


def _store(model_dir: Path, project: int, count: int, live: str | None) -> None:
    """`count` registry versions of `project` (v1 ... vN), `live` promoted."""
    weights = model_dir.parent / "weights.pt"
    weights.write_bytes(b"not loaded by /versions")
    registry = ModelRegistry(model_dir)
    for _ in range(count):
        registry.create_version(project, weights, {})
    if live is not None:
        registry.promote(project, live, reason="test")


def _versions(client: FlaskClient, query: str = "") -> dict[str, object]:
    answer = client.get(f"/versions{query}")
    assert answer.status_code == 200, answer.get_json()
    return dict(answer.get_json())


def _setup_version(client: FlaskClient, project: int) -> str:
    body = {"project": f"{project}.1712345678", "schema": BOX_CONFIG}
    return str(client.post("/setup", json=body).get_json()["model_version"])


def test_without_models_the_base_version_alone(client: FlaskClient) -> None:
    assert _versions(client) == {"versions": [BASE], "model_version": BASE}
    assert _versions(client, "?project=5") == {"versions": [BASE], "model_version": BASE}
    assert _setup_version(client, 5) == BASE


def test_live_version_first_then_the_others_newest_first(
    client: FlaskClient, model_dir: Path
) -> None:
    _store(model_dir, 5, count=11, live="v9")  # v10 and v11: trained, kept out by the gate

    answer = _versions(client, "?project=5.1712345678")

    assert answer["versions"] == ["v9", "v11", "v10", *(f"v{n}" for n in range(8, 0, -1))]
    assert answer["model_version"] == "v9" == _setup_version(client, 5)


def test_a_ranked_live_version_is_listed_under_its_queue_version(
    client: FlaskClient, model_dir: Path
) -> None:
    """Once ranked, Label Studio's project serves the queue version (`v2.q3`): the list names
    the live model by it, as /setup does, so it matches the project's model_version."""
    _store(model_dir, 5, count=2, live="v2")
    document = ranking_document(
        project_id=5,
        model_version="v2",
        queue_version="v2.q3",
        strategy="hybrid",
        created_at=0.0,
        tasks={},
        written=0,
    )
    save_ranking(ranking_path(model_dir, 5, "v2"), document)

    assert _versions(client, "?project=5") == {
        "versions": ["v2.q3", "v1"],
        "model_version": "v2.q3",
    }
    assert _setup_version(client, 5) == "v2.q3"


def test_without_a_live_version_the_base_model_serves_first(
    client: FlaskClient, model_dir: Path
) -> None:
    _store(model_dir, 5, count=1, live=None)  # trained once, rejected by the gate
    assert _versions(client, "?project=5")["versions"] == [BASE, "v1"]


def test_no_project_named_means_the_one_project_holding_versions(
    client: FlaskClient, model_dir: Path
) -> None:
    """Label Studio 1.23 sends `GET /versions` without a project."""
    _store(model_dir, 5, count=2, live="v1")
    assert _versions(client)["versions"] == ["v1", "v2"]
    assert _versions(client, "?project=8")["versions"] == [BASE]  # a project without models


def test_no_project_named_among_several_is_a_clear_400(
    client: FlaskClient, model_dir: Path
) -> None:
    _store(model_dir, 5, count=1, live="v1")
    _store(model_dir, 6, count=2, live="v2")

    answer = client.get("/versions")

    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_request"
    assert "?project=<id>" in answer.get_json()["message"]
    assert _versions(client, "?project=6")["versions"] == ["v2", "v1"]


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "5x", "99999999999999999999", "1e3"])
def test_a_bad_project_id_is_a_400_naming_it(client: FlaskClient, bad: str) -> None:
    answer = client.get("/versions", query_string={"project": bad})
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "bad_request"
    assert "invalid project reference" in body["message"]
