"""schemathesis against the live server: `ls-active-yolo serve` (gunicorn) with the tiny model.

The description is loaded from the server's own /openapi.json; 500 requests are generated from
it (valid ones, and ones that break it: wrong types, missing fields), the same each run, and
every answer must be below 500, carry a documented status and content type, fit that status's
schema, and a request that breaks the description must be refused with a 4xx.

No request reaches the network: LABEL_STUDIO_URL and ALLOWED_IMAGE_HOSTS are unset, so an image
URL on any host is refused before connecting (that task gets an empty result). Webhook events
the generator sends are stored in a throwaway MODEL_DIR.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis import checks as st_checks

from devkit.demo import BackendServer
from devkit.local_label_studio import find_free_port
from tests.conftest import BOX_CONFIG

REQUESTS = 500
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
]
@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, trained_weights: Path, image_root: Path
) -> Iterator[str]:
    """`ls-active-yolo serve` on a free port, no trainer; yields its base URL.

    Only these settings reach it (BackendServer drops the caller's others), so no generated
    request can leave the machine or needs credentials."""
    folder = tmp_path_factory.mktemp("schemathesis")
    env = {
        "MODEL_DIR": str(folder / "models"),
        "MODEL_PATH": str(trained_weights),
        "IMAGE_ROOT": str(image_root),
        "IMAGE_SIZE": "160",
        "TRAINING": "0",
        "WORKERS": "1",
        "THREADS": "2",
    }
    server = BackendServer(find_free_port(), env, folder).start()
    try:
        yield server.url
    finally:
        server.stop(timeout=30)
    log = server.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def schema(live_server: str) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json", timeout=10)


@pytest.mark.slow
@pytest.mark.schemathesis
def test_generated_requests_against_the_live_server(
    live_server: str, schema: BaseSchema, image_root: Path
) -> None:
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE),
        schema.as_strategy(GenerationMode.NEGATIVE),
    )
    # one request that reaches the detector, whatever the generator makes of the rest
    image = str(sorted((image_root / "shapes").glob("*.jpg"))[0])
    real = schema["/predict"]["POST"].Case(
        body={
            "tasks": [{"id": 1, "data": {"image": image}}, {"id": 2, "data": {"image": "x"}}],
            "project": "3.1712345678",
            "label_config": BOX_CONFIG,
        },
        media_type="application/json",
    )
    session = requests.Session()

    def send(case: Case) -> None:
        case.call_and_validate(base_url=live_server, session=session, checks=CHECKS, timeout=60)

    send(real)

    @settings(
        max_examples=REQUESTS,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def check(case: Case) -> None:
        send(case)

    check()
    assert requests.get(f"{live_server}/health", timeout=5).status_code == 200
