"""Credentials in both directions: LS -> backend (basic auth), backend -> LS (API tokens)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from backend.events import Event, EventStore
from backend.layout import ModelDir
from devkit.datagen import ls_regions, write_images
from devkit.demo import BackendServer, retrieve_predictions
from devkit.local_label_studio import LocalLabelStudio

from .conftest import BackendFactory, MakeProject, ShapesProject, stored_predictions
from .shapes import agreement, wait_for

CREDENTIALS = ("ls-ml", "correct-horse-battery-7")
BASIC_HEADER = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()


@pytest.fixture(scope="session")
def basic_auth_backend(
    backend_factory: BackendFactory, label_studio: LocalLabelStudio, ls_document_root: Path
) -> BackendServer:
    return backend_factory.start(
        "basic-auth",
        api_key=label_studio.legacy_token,
        document_root=ls_document_root,
        basic_auth=CREDENTIALS,
    )


def _add_backend(
    label_studio: LocalLabelStudio, project_id: int, url: str, payload: dict[str, str]
) -> requests.Response:
    return requests.post(
        f"{label_studio.url}/api/ml",
        json={"url": url, "project": project_id, "title": "ls-active-yolo", **payload},
        headers=label_studio.auth_headers(),
        timeout=60,
    )


def test_wrong_or_missing_basic_auth_is_refused_clearly(
    label_studio: LocalLabelStudio,
    basic_auth_backend: BackendServer,
    shapes_project: ShapesProject,
    make_project: MakeProject,
) -> None:
    project_id, _ = make_project(
        "e2e basic auth refused", [shapes_project.files[min(shapes_project.files)]]
    )
    attempts = {
        "none": {},
        "wrong password": {
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": CREDENTIALS[0],
            "basic_auth_pass": "not-the-password",
        },
    }
    for name, payload in attempts.items():
        answer = _add_backend(label_studio, project_id, basic_auth_backend.url, payload)

        assert answer.status_code == 400, (name, answer.text)
        [message] = answer.json()["validation_errors"]["non_field_errors"]
        # /health is open, so LS reaches the backend; /setup is where the credentials count.
        assert message.startswith(f"Successfully connected to {basic_auth_backend.url} but"), name
        assert f"401 Client Error: UNAUTHORIZED for url: {basic_auth_backend.url}/setup" in message
    client = label_studio.client()
    assert client.ml.list(project=project_id) == []
    assert client.webhooks.list(project=str(project_id)) == []  # nothing half-created


def test_right_basic_auth_connects_and_predicts(
    label_studio: LocalLabelStudio,
    basic_auth_backend: BackendServer,
    shapes_project: ShapesProject,
    make_project: MakeProject,
) -> None:
    tasks = sorted(shapes_project.files)[:2]
    project_id, task_ids = make_project("e2e basic auth", [shapes_project.files[t] for t in tasks])

    connection = label_studio.connect_ml_backend(
        project_id, basic_auth_backend.url, basic_auth=CREDENTIALS
    )
    retrieve_predictions(label_studio, project_id)

    assert connection.state == "CO"
    backend = label_studio.client().ml.get(connection.id)
    assert (backend.auth_method, backend.basic_auth_user) == ("BASIC_AUTH", CREDENTIALS[0])
    predictions = stored_predictions(label_studio, project_id)
    assert sorted(predictions) == sorted(task_ids)
    per_image = [
        agreement(predictions[new][0].result, shapes_project.truth[old])
        for new, old in zip(task_ids, tasks, strict=True)
    ]
    assert all(a.found >= 1 for a in per_image), per_image  # real boxes on every image
    unauthenticated = requests.post(f"{basic_auth_backend.url}/predict", json={}, timeout=10)
    assert unauthenticated.status_code == 401


def _pending_events(backend: BackendServer, project_id: int) -> list[Event]:
    """Events the backend's store holds for the project, read from its SQLite file."""
    store = EventStore(ModelDir(Path(backend.settings["MODEL_DIR"])).events_db)
    try:
        return store.pending(project_id)
    finally:
        store.close()


def test_basic_auth_backend_receives_annotation_events(
    label_studio: LocalLabelStudio,
    basic_auth_backend: BackendServer,
    shapes_project: ShapesProject,
    make_project: MakeProject,
) -> None:
    """LS creates the backend's webhook without credentials; the backend, called at /setup,
    adds its basic-auth header to that webhook, so events get past its own auth."""
    source = min(shapes_project.files)
    project_id, [task] = make_project("e2e basic auth events", [shapes_project.files[source]])
    label_studio.connect_ml_backend(project_id, basic_auth_backend.url, basic_auth=CREDENTIALS)
    client = label_studio.client()

    [hook] = wait_for(
        lambda: client.webhooks.list(project=str(project_id)),
        lambda hooks: len(hooks) == 1 and (hooks[0].headers or {}).get("Authorization"),
        "the backend's credentials on its Label Studio webhook",
    )
    created = client.annotations.create(id=task, result=ls_regions(shapes_project.truth[source]))

    assert hook.url == f"{basic_auth_backend.url}/webhook"
    assert hook.headers == {"Authorization": BASIC_HEADER}
    events = wait_for(
        lambda: _pending_events(basic_auth_backend, project_id),
        lambda found: len(found) >= 1,
        "an ANNOTATION_CREATED event at the basic-auth backend",
    )
    assert [(e.action, e.annotation_ids) for e in events] == [("ANNOTATION_CREATED", (created.id,))]
    # The header is what lets it in: the same event without credentials is refused.
    refused = requests.post(f"{basic_auth_backend.url}/webhook", json=events[0].payload, timeout=10)
    assert refused.status_code == 401


# -- the backend's own calls to Label Studio: legacy token and personal access token --------


@dataclass(frozen=True)
class TokenBackend:
    """A backend holding one kind of LS token, with no document root: it must download."""

    kind: str
    server: BackendServer


@pytest.fixture(scope="session", params=["legacy", "pat"])
def downloading_backend(
    request: pytest.FixtureRequest, backend_factory: BackendFactory, label_studio: LocalLabelStudio
) -> TokenBackend:
    kind = str(request.param)
    token = label_studio.legacy_token if kind == "legacy" else label_studio.personal_access_token()
    server = backend_factory.start(f"download-{kind}", api_key=token, document_root=None)
    assert "LOCAL_FILES_DOCUMENT_ROOT" not in server.settings
    return TokenBackend(kind, server)


def test_backend_downloads_images_from_label_studio_with_its_token(
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    downloading_backend: TokenBackend,
    make_project: MakeProject,
) -> None:
    kind, backend = downloading_backend.kind, downloading_backend.server
    written = write_images(ls_document_root / f"download-{kind}", 2, seed=11)
    urls = [label_studio.local_file_url(path) for path, _ in written]
    log_before = label_studio.log_path.read_text(encoding="utf-8", errors="replace")
    assert not any(url in log_before for url in urls)
    project_id, task_ids = make_project(f"e2e download {kind}", [path for path, _ in written])
    label_studio.connect_ml_backend(project_id, backend.url)

    retrieve_predictions(label_studio, project_id)

    log = label_studio.log_path.read_text(encoding="utf-8", errors="replace")
    for url in urls:  # the backend fetched each image from LS, and LS served it
        assert f'"GET {url} HTTP/1.1" 200' in log, url
    predictions = stored_predictions(label_studio, project_id)
    per_image = [
        agreement(predictions[task][0].result, sample)
        for task, (_, sample) in zip(task_ids, written, strict=True)
    ]
    assert all(a.found >= 1 for a in per_image), per_image  # the pixels were the real image
    # An image the backend cannot load is logged per task and predicted empty.
    assert f"project={project_id} task=" not in backend.log_path.read_text(encoding="utf-8")
