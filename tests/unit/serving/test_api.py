"""The ML backend protocol through Flask's test client, with a real (tiny) trained model."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from backend.analytics.ledger import AnnotationLedger, AnnotationRecord
from backend.config import Settings
from backend.models.detector import DetectorPool
from backend.serving.app import create_app
from tests.conftest import BOX_CONFIG


def _predict(client: FlaskClient, refs: list[object], **extra: object) -> dict:
    body = {
        "tasks": [{"id": i + 1, "data": {"image": ref}} for i, ref in enumerate(refs)],
        "project": "7.1712345678",
        "label_config": BOX_CONFIG,
        **extra,
    }
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_health_reports_the_base_model(client: FlaskClient, trained_weights: Path) -> None:
    body = client.get("/health").get_json()
    assert body["status"] == "UP"
    assert body["base_model"]["source"] == "MODEL_PATH"
    assert body["base_model"]["version"].startswith("shapes-")
    assert client.get("/").status_code == 200


def test_health_without_weights_reports_the_random_init(settings: Settings) -> None:
    client = create_app(replace(settings, model_path=None)).test_client()
    model = client.get("/health").get_json()["base_model"]
    assert model["source"] == "random-init"
    assert "randomly initialised" in model["warning"]
    setup = client.post("/setup", json={"project": "5.1", "schema": BOX_CONFIG}).get_json()
    assert setup["model_version"] == model["version"] == "random-init-yolo11n"


def test_setup_returns_model_version(client: FlaskClient) -> None:
    response = client.post("/setup", json={"project": "7.1712345678", "schema": BOX_CONFIG})
    assert response.status_code == 200
    assert response.get_json()["model_version"].startswith("shapes-")


def test_predict_finds_the_synthetic_shapes(client: FlaskClient, image_root: Path) -> None:
    refs = [str(p) for p in sorted((image_root / "shapes").glob("*.jpg"))]
    body = _predict(client, refs)
    results = body["results"]
    assert len(results) == len(refs)
    labelled = 0
    for result in results:
        assert result["model_version"].startswith("shapes-")
        assert 0.0 <= result["score"] <= 1.0
        for region in result["result"]:
            assert region["type"] == "rectanglelabels"
            assert region["from_name"] == "label" and region["to_name"] == "image"
            assert (region["original_width"], region["original_height"]) == (320, 256)
            value = region["value"]
            assert value["rectanglelabels"][0] in ("Square", "Circle", "Triangle")
            assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100
            assert 0 < value["width"] <= 100 - value["x"] + 1e-6
            assert 0 < value["height"] <= 100 - value["y"] + 1e-6
            assert region["score"] >= 0.25
            labelled += 1
    assert labelled >= len(refs), "the trained model should find at least one shape per image"


def test_predict_on_bus_jpg_local_path(client: FlaskClient, image_root: Path) -> None:
    body = _predict(client, [str(image_root / "bus.jpg")])
    (result,) = body["results"]
    for region in result["result"]:
        assert (region["original_width"], region["original_height"]) == (810, 1080)
    assert isinstance(result["result"], list)


def test_regions_carry_the_original_size_of_a_large_jpeg(
    client: FlaskClient, image_root: Path
) -> None:
    """bus.jpg above may hold no region for the shapes model; this image always does, so the
    size check cannot pass on an empty list."""
    shapes = Image.open(sorted((image_root / "shapes").glob("*.jpg"))[0])
    large = image_root / "large-shapes.jpg"
    shapes.resize((800, 640)).save(large, quality=95)  # 2.5x, same aspect
    (result,) = _predict(client, [str(large)])["results"]
    assert result["result"], "the shapes model finds shapes in an upscaled shapes image"
    for region in result["result"]:
        assert (region["original_width"], region["original_height"]) == (800, 640)


def test_image_with_nothing_to_find(client: FlaskClient, image_root: Path) -> None:
    (result,) = _predict(client, [str(image_root / "blank.png")])["results"]
    assert result["result"] == []
    assert result["score"] == 0.0


def test_one_bad_image_does_not_fail_the_batch(client: FlaskClient, image_root: Path) -> None:
    good = str(sorted((image_root / "shapes").glob("*.jpg"))[0])
    refs: list[object] = [good, str(image_root / "corrupt.jpg"), "/etc/passwd", good, None]
    results = _predict(client, refs)["results"]
    assert len(results) == 5
    assert results[0]["result"] and results[3]["result"]
    assert results[0] == results[3]
    for i in (1, 2, 4):
        assert results[i]["result"] == [] and results[i]["score"] == 0.0


def test_tasks_over_the_time_budget_get_no_prediction(
    settings: Settings, image_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first detector batch always runs; none starts after PREDICT_BUDGET_SECONDS, and
    the tasks left get an empty list: Label Studio stores nothing for them and asks again."""
    refs = [str(p) for p in sorted((image_root / "shapes").glob("*.jpg"))][:6]
    tight = create_app(replace(settings, predict_batch=2, predict_budget_seconds=1e-6))
    with tight.test_client() as client:
        results = _predict(client, refs)["results"]
    assert len(results) == 6
    assert all(isinstance(r, dict) and r["result"] for r in results[:2])
    assert results[2:] == [[]] * 4
    assert "2 detected, 4 left without a prediction (over PREDICT_BUDGET_SECONDS=1e-06)" in (
        caplog.text
    )
    caplog.clear()
    caplog.set_level(logging.INFO)
    with create_app(replace(settings, predict_batch=2)).test_client() as client:
        assert _predict(client, refs)["results"][:2] == results[:2]
    assert "6 detected, 0 left without a prediction" in caplog.text
    assert "PREDICT_BUDGET_SECONDS" not in caplog.text


def test_score_threshold_attribute_filters_boxes(client: FlaskClient, image_root: Path) -> None:
    strict = BOX_CONFIG.replace('toName="image"', 'toName="image" model_score_threshold="1.0"')
    refs = [str(p) for p in sorted((image_root / "shapes").glob("*.jpg"))]
    results = _predict(client, refs, label_config=strict)["results"]
    assert all(r["result"] == [] for r in results)


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "error"),
    [
        ("/predict", {"data": "{not json", "content_type": "application/json"}, 400, "bad_request"),
        ("/predict", {"json": ["a", "list"]}, 400, "bad_request"),
        ("/predict", {"json": {"label_config": BOX_CONFIG}}, 400, "bad_request"),
        ("/predict", {"json": {"tasks": [1, 2], "label_config": BOX_CONFIG}}, 400, "bad_request"),
        ("/predict", {"json": {"tasks": []}}, 400, "bad_request"),
        (
            "/predict",
            {"json": {"tasks": [], "label_config": '<View><Text name="t" value="$t"/></View>'}},
            422,
            "unsupported_label_config",
        ),
        (
            "/setup",
            {"json": {"schema": '<View><Text name="t" value="$t"/></View>', "project": "1.2"}},
            422,
            "unsupported_label_config",
        ),
        ("/setup", {"json": {"schema": BOX_CONFIG, "project": "abc"}}, 400, "bad_request"),
        ("/webhook", {"json": {"no": "action"}}, 400, "bad_request"),
        ("/webhook", {"json": {"action": "ANNOTATION_CREATED"}}, 400, "bad_request"),
        (
            "/webhook",
            {"json": {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {}}},
            400,
            "bad_request",
        ),
        ("/nope", {"json": {}}, 404, "not_found"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    client: FlaskClient, path: str, kwargs: dict, status: int, error: str
) -> None:
    response = client.post(path, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == error
    assert body["message"]


def test_webhook_records_handled_actions_and_ignores_others(client: FlaskClient) -> None:
    created = client.post(
        "/webhook",
        json={"action": "ANNOTATION_CREATED", "project": {"id": 4}, "annotation": {"id": 11}},
    )
    assert created.status_code == 201
    assert created.get_json()["status"] == "recorded"
    ignored = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 4}})
    assert ignored.status_code == 200
    assert ignored.get_json()["status"] == "ignored"
    metrics = client.get("/metrics").get_json()
    assert metrics["projects"]["4"]["queued_events"] == 1
    text = client.get("/metrics?format=prometheus").get_data(as_text=True)
    assert 'ls_active_yolo_queued_events{project="4"} 1.0' in text
    assert "process_cpu_seconds_total" in text  # prometheus_client's process metrics


def test_metrics_carry_each_projects_annotation_figures(
    client: FlaskClient, settings: Settings
) -> None:
    edits = {"accepted": 2, "adjusted": 0, "relabeled": 0, "deleted": 1, "drawn": 1}
    AnnotationLedger(settings.paths.annotation_ledger).record(
        [AnnotationRecord(1, 8, 80, "3", 5, "v2", edits, 20.0)]
    )
    project = client.get("/metrics").get_json()["projects"]["8"]
    assert project["live_version"] is None and project["queued_events"] == 0
    figures = project["annotations"]
    assert figures["overall"]["acceptance_rate"] == pytest.approx(2 / 3)
    assert [g["group"] for g in figures["by_version"]] == ["v2"]
    assert figures["time_model"]["fitted"] == []  # one annotation: published seconds

    page = client.get("/analytics/8")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "By model version" in text and "data:image/png;base64," in text
    assert "No annotations recorded yet" in client.get("/analytics/9").get_data(as_text=True)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth_guards_everything_but_health(settings: Settings) -> None:
    app = create_app(replace(settings, basic_auth_user="ls", basic_auth_pass="s3cret"))
    client = app.test_client()
    assert client.get("/health").status_code == 200
    body = {"project": "1.1", "schema": BOX_CONFIG}
    assert client.post("/setup", json=body).status_code == 401
    wrong = client.post("/setup", json=body, headers=_basic("ls", "wrong"))
    assert wrong.status_code == 401
    assert wrong.get_json()["error"] == "unauthorized"
    assert "Basic" in wrong.headers["WWW-Authenticate"]
    assert client.post("/setup", json=body, headers=_basic("ls", "s3cret")).status_code == 200


def test_setup_validates_and_saves_extra_params(client: FlaskClient, settings: Settings) -> None:
    extra = {
        "train_epochs": 3,
        "train_warm_start": "false",
        "al_strategy": "entropy",
        "al_aggregation": "sum",
        "al_audit": False,
        "other": "x",
    }
    body = {"project": "9.1712345678", "schema": BOX_CONFIG, "extra_params": extra}
    assert client.post("/setup", json=body).status_code == 200
    saved = settings.model_dir / "projects" / "9" / "params.json"
    assert json.loads(saved.read_text()) == {
        "train_epochs": 3,
        "train_warm_start": "false",
        "al_strategy": "entropy",
        "al_aggregation": "sum",
        "al_audit": False,
    }
    as_text = {**body, "extra_params": json.dumps({"al_lambda": 0.2})}
    assert client.post("/setup", json=as_text).status_code == 200
    assert json.loads(saved.read_text()) == {"al_lambda": 0.2}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"train_epochs": "many"}, "train_epochs must be a int"),
        ({"train_epochs": 0}, "between 1 and 1000"),
        ({"train_patience": -1}, "between 0 and 1000"),
        ({"train_warm_start": "sometimes"}, "train_warm_start must be a bool"),
        ({"train_val_percent": 95}, "between 1 and 90"),
        ({"al_per_second": "yes please"}, "al_per_second must be true or false"),
        ({"al_strategy": "smartest"}, "choose one of"),
        ({"al_lambda": 1.5}, "al_lambda must be between 0 and 1"),
        ({"train_epochs": float("inf")}, "train_epochs must be a int"),  # OverflowError before
        ({"promote_tolerance": 10**400}, "promote_tolerance must be a float"),
        ({"al_lambda": 10**400}, "al_lambda must be a number"),
        ("{not json", "extra_params must be a JSON object"),
        ([1, 2], "extra_params must be a JSON object"),
    ],
)
def test_setup_rejects_bad_extra_params(client: FlaskClient, extra: object, message: str) -> None:
    body = {"project": "9.1712345678", "schema": BOX_CONFIG, "extra_params": extra}
    response = client.post("/setup", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_setup_rejects_bad_queue_attributes_on_the_tag(client: FlaskClient) -> None:
    config = BOX_CONFIG.replace('toName="image"', 'toName="image" al_strategy="nope"')
    response = client.post("/setup", json={"project": "9.1", "schema": config})
    assert response.status_code == 400
    assert "al_strategy 'nope' is unknown" in response.get_json()["message"]


def test_predict_answers_ranked_tasks_from_the_stored_ranking(
    client: FlaskClient, settings: Settings, image_root: Path
) -> None:
    """Once ranked, /setup and every /predict answer carry the queue version the project
    serves, so Label Studio shows what /predict returns and does not ask for it again."""
    from backend.ranking.store import ranking_path, save_ranking

    version = client.post("/setup", json={"project": "7.1", "schema": BOX_CONFIG}).get_json()[
        "model_version"
    ]
    queue = f"{version}.q3"
    shapes = sorted((image_root / "shapes").glob("*.jpg"))
    stored = [{"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": {}}]
    save_ranking(
        ranking_path(settings.model_dir, 7, version),
        {
            "project_id": 7,
            "model_version": version,
            "queue_version": queue,
            "tasks": {"1": {"result": stored, "score": 0.25, "ref": str(shapes[0])}},
        },
    )
    setup = client.post("/setup", json={"project": "7.1", "schema": BOX_CONFIG}).get_json()
    other = client.post("/setup", json={"project": "8.1", "schema": BOX_CONFIG}).get_json()
    assert (setup["model_version"], other["model_version"]) == (queue, version)
    body = {
        "tasks": [
            {"id": 1, "data": {"image": str(shapes[0])}},  # ranked: answered from the file
            {"id": 2, "data": {"image": str(shapes[1])}},  # not ranked: detector, queued after
            {"id": 1, "data": {"image": str(shapes[2])}},  # image changed since ranking
        ],
        "project": "7.1",
        "label_config": BOX_CONFIG,
    }
    first, second, changed = client.post("/predict", json=body).get_json()["results"]
    assert first == {"result": stored, "score": 0.25, "model_version": queue}
    assert second["result"] and 1.0 <= second["score"] <= 2.0
    assert changed["result"] != stored and changed["score"] >= 1.0
    assert second["model_version"] == changed["model_version"] == queue


def test_predict_resolves_each_controls_model_once(
    client: FlaskClient, image_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion landing mid-request must not pair one version's regions with another's
    model_version: /predict asks which model serves a control once, and uses that answer."""
    calls: list[str] = []
    original = DetectorPool.source_for

    def counting(self: DetectorPool, *args: object, **kwargs: object) -> object:
        calls.append("source_for")
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DetectorPool, "source_for", counting)
    refs = [str(p) for p in sorted((image_root / "shapes").glob("*.jpg"))[:3]]
    results = _predict(client, refs)["results"]
    assert len(calls) == 1  # one control in BOX_CONFIG
    assert len({r["model_version"] for r in results}) == 1
