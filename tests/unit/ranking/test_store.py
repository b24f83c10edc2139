"""The stored ranking `/setup` and `/predict` answer from: its file format, its place, its
reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.layout import ModelDir
from backend.ranking.store import (
    load_ranking,
    precomputed_prediction,
    ranking_document,
    ranking_entry,
    ranking_path,
    remove_other_rankings,
    save_ranking,
    stored_queue_version,
)

REGION = [{"from_name": "label", "value": {"x": 1}}]


def stored(version: str = "v3") -> dict[str, Any]:
    return {
        "project_id": 4,
        "model_version": version,
        "queue_version": f"{version}.q2",
        "tasks": {
            "11": {"result": REGION, "score": 0.0, "ref": "/data/a.jpg"},
            "12": {"result": [], "score": 0.5, "ref": "/data/b.jpg"},
        },
    }


def test_precomputed_prediction_answers_for_the_current_version(tmp_path: Path) -> None:
    save_ranking(ranking_path(tmp_path, 4, "v3"), stored())

    found = precomputed_prediction(tmp_path, 4, 11, "v3")

    # answered with the queue version Label Studio's project serves
    assert found == {"result": REGION, "score": 0.0, "model_version": "v3.q2"}
    assert precomputed_prediction(tmp_path, 4, 12, "v3", image_ref="/data/b.jpg") == {
        "result": [],
        "score": 0.5,
        "model_version": "v3.q2",
    }
    assert precomputed_prediction(tmp_path, 4, 12, "v3", image_ref="/data/other.jpg") is None
    assert precomputed_prediction(tmp_path, 4, 13, "v3") is None
    assert precomputed_prediction(tmp_path, 4, 11, "v4") is None
    assert precomputed_prediction(tmp_path, 5, 11, "v3") is None
    assert found is not None
    found["result"][0]["value"]["x"] = 99  # callers get copies
    assert precomputed_prediction(tmp_path, 4, 11, "v3")["result"] == REGION  # type: ignore[index]


def test_a_rewritten_ranking_is_read_afresh(tmp_path: Path) -> None:
    path = ranking_path(tmp_path, 4, "v3")
    save_ranking(path, stored())
    assert precomputed_prediction(tmp_path, 4, 12, "v3")["score"] == 0.5  # type: ignore[index]
    newer = stored()
    newer["tasks"]["12"]["score"] = 0.25
    newer["tasks"]["14"] = {"result": [], "score": 0.75, "ref": "c"}
    save_ranking(path, newer)

    assert precomputed_prediction(tmp_path, 4, 12, "v3")["score"] == 0.25  # type: ignore[index]
    assert load_ranking(tmp_path, 4, "v3") == json.loads(path.read_text())
    assert sorted(p.name for p in ModelDir(tmp_path).project(4).ranking.iterdir()) == ["v3.json"]


def test_the_queue_version_is_the_stored_rankings_of_that_model(tmp_path: Path) -> None:
    save_ranking(ranking_path(tmp_path, 4, "v3"), stored())
    assert stored_queue_version(tmp_path, 4, "v3") == "v3.q2"
    assert stored_queue_version(tmp_path, 4, "v4") is None  # no ranking of that model
    assert stored_queue_version(tmp_path, 5, "v3") is None
    # a file written before queue versions: nothing is answered from it
    old = {k: v for k, v in stored().items() if k != "queue_version"}
    save_ranking(ranking_path(tmp_path, 4, "v3"), old)
    assert stored_queue_version(tmp_path, 4, "v3") is None
    assert precomputed_prediction(tmp_path, 4, 11, "v3") is None


def test_an_unreadable_ranking_answers_none(tmp_path: Path) -> None:
    path = ranking_path(tmp_path, 4, "v3")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert precomputed_prediction(tmp_path, 4, 11, "v3") is None


def test_the_file_format_is_what_predict_and_people_read() -> None:
    entry = ranking_entry(
        result=REGION, score=0.25, rank=1, strategy_rank=4, strategy_score=0.75, ref="/data/a.jpg"
    )
    document = ranking_document(
        project_id=4,
        model_version="v3",
        queue_version="v3.q2",
        strategy="hybrid",
        created_at=12.5,
        tasks={"11": entry},
        written=1,
    )

    assert json.dumps(document, separators=(",", ":")) == (
        '{"project_id":4,"model_version":"v3","queue_version":"v3.q2","strategy":"hybrid",'
        '"created_at":12.5,"n_ranked":1,"written":1,"tasks":{"11":{"result":[{'
        '"from_name":"label","value":{"x":1}}],"score":0.25,"rank":1,"strategy_rank":4,"strategy_score":0.75,'
        '"ref":"/data/a.jpg"}}}'
    )


def test_rankings_live_in_the_projects_ranking_folder(tmp_path: Path) -> None:
    path = ranking_path(tmp_path, 4, "v3")
    assert path == ModelDir(tmp_path).project(4).ranking / "v3.json"
    assert save_ranking(path, stored()) == path
    assert json.loads(path.read_text()) == stored()


def test_remove_other_rankings_keeps_the_version_and_other_files(tmp_path: Path) -> None:
    for version in ("v1", "v2", "v3"):
        save_ranking(ranking_path(tmp_path, 4, version), stored(version))
    save_ranking(ranking_path(tmp_path, 5, "v1"), stored("v1"))
    folder = ModelDir(tmp_path).project(4).ranking
    (folder / "v1.detections.npz").write_bytes(b"cache")
    (folder / ".lock").write_text("")

    removed = remove_other_rankings(tmp_path, 4, "v2")

    assert removed == [folder / "v1.json", folder / "v3.json"]
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "v1.detections.npz", "v2.json"]
    assert load_ranking(tmp_path, 5, "v1") == stored("v1")  # other projects are left alone
    assert remove_other_rankings(tmp_path, 6, "v1") == []
