"""Fuzzing every route of the real app: no request may be answered with a 5xx.

An adversarial probe (10,012 requests, 254 answered 500) found these classes of crash:
JSON nested ~1,000 deep, project ids >= 2**63 (and a /setup with one left every later
GET /metrics failing, even after a restart), project ids of 256+ digits, one bad image
reference failing a whole /predict batch, and oversize bodies. The tests below send
Label Studio-shaped payloads with hostile leaves, arbitrary JSON and arbitrary bytes to each
POST route, random query strings and headers to the GET routes (and Authorization headers
with basic auth on), and check after the run that the app (and a restarted one on the same
MODEL_DIR) still answers /health and /metrics. Image references cover local paths, file://,
Label Studio local-files (read from disk) and a Label Studio that refuses connections, so
nothing leaves the machine.

Every property holds for any input:
- the status is below 500;
- a 4xx answer is the backend's JSON error: {"error": ..., "message": ...};
- a /predict with a valid envelope answers 200 with one result per task, whatever the images.

One app serves the whole module, so state a request leaves behind is seen by every later one.
Runs are bounded (a few hundred requests per route) and derandomized: the same inputs each run.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from werkzeug.test import TestResponse

from backend.config import Settings
from backend.labelstudio.format import HANDLED_ACTIONS
from backend.project_params import TrainParams
from backend.ranking.queue_config import KEYS as QUEUE_KEYS
from backend.serving.app import create_app
from tests.conftest import BOX_CONFIG

POST_ROUTES = ("/setup", "/predict", "/webhook")
GET_ROUTES = ("/", "/health", "/metrics", "/analytics/1", "/versions")
MAX_REQUEST_BYTES = 256 * 1024  # small limits, so the oversize checks stay cheap
MAX_EVENT_BYTES = 64 * 1024


def _budget(examples: int) -> settings:
    """Hypothesis settings for one fuzzed route: bounded, deterministic, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


# -- the app under test ----------------------------------------------------------------------
class _LastError(logging.Handler):
    """Remembers the last error the backend logged, so a 5xx names its exception."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frame = traceback.extract_tb(record.exc_info[2])[-1]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            self.last = f"{type(exc).__name__}: {ascii(str(exc))[:300]} (raised at {where})"
        else:
            self.last = ascii(record.getMessage())[:300]


@pytest.fixture(scope="module")
def fuzz_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small real PNGs in every pixel mode, plus files that only look like images."""
    base = tmp_path_factory.mktemp("fuzz-images")
    root = base / "images"
    root.mkdir()
    Image.new("RGB", (32, 32), (0, 255, 0)).save(base / "outside.png")  # real, but not allowed
    Image.new("RGB", (64, 48), (200, 40, 40)).save(root / "rgb.png")
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(root / "rgba.png")
    Image.new("L", (33, 17), 90).save(root / "gray.png")
    Image.new("P", (20, 30), 3).save(root / "palette.png")
    Image.new("I;16", (24, 24), 4000).save(root / "deep16.png")
    Image.new("RGB", (1, 1), (255, 255, 255)).save(root / "tiny.png")
    Image.new("RGB", (1200, 2), (10, 10, 10)).save(root / "wide.png")
    Image.new("1", (9000, 9000), 0).save(root / "bomb.png")  # 81 Mpx > MAX_IMAGE_PIXELS
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "empty.png").write_bytes(b"")
    (root / "dir.png").mkdir()
    (root / "escape.png").symlink_to(base / "outside.png")  # a link out of IMAGE_ROOT
    return root


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def fuzz_settings(
    tmp_path_factory: pytest.TempPathFactory,
    trained_weights: Path,
    fuzz_images: Path,
    closed_port: int,
) -> Settings:
    """conftest's `settings`, for a module-wide app (that fixture is per test), with a Label
    Studio that refuses connections and its local-files storage on disk, so Label Studio
    references are resolved too, without a network."""
    return Settings(
        model_dir=tmp_path_factory.mktemp("fuzz-models"),
        model_path=trained_weights,
        models_root=trained_weights.parent,  # a label config's model_path may name it
        image_root=fuzz_images,
        local_files_root=fuzz_images,
        label_studio_url=f"http://127.0.0.1:{closed_port}",
        label_studio_api_key="fuzz-token",
        fetch_timeout=2.0,
        image_size=160,
        predict_batch=4,
        training_enabled=False,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_event_bytes=MAX_EVENT_BYTES,
    )


@pytest.fixture(scope="module")
def last_error() -> Iterator[_LastError]:
    handler = _LastError()
    logger = logging.getLogger("backend")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def fuzz_client(fuzz_settings: Settings, last_error: _LastError) -> Iterator[FlaskClient]:
    with create_app(fuzz_settings).test_client() as client:
        yield client


def _send(
    client: FlaskClient, errors: _LastError, method: str, path: str, **kwargs: Any
) -> TestResponse:
    """One request; fails on a 5xx (naming the logged exception) or a malformed 4xx body."""
    errors.last = ""
    response = client.open(path, method=method, **kwargs)
    status = response.status_code
    assert status < 500, (
        f"{method} {path} answered {status}: {response.get_data()[:200]!r}; "
        f"backend logged: {errors.last or 'nothing'}"
    )
    if status >= 400 and method != "HEAD":
        body = response.get_json(silent=True)
        assert isinstance(body, dict) and "error" in body and "message" in body, (
            f"{method} {path} answered {status} without a JSON error: {response.get_data()[:200]!r}"
        )
    return response


def _post_json(
    client: FlaskClient, errors: _LastError, path: str, body: object, ascii_only: bool = True
) -> TestResponse:
    """POST a Python value as JSON text (NaN and Infinity allowed, lone surrogates kept)."""
    text = json.dumps(body, allow_nan=True, ensure_ascii=ascii_only)
    data = text.encode("utf-8", "surrogatepass")
    return _send(client, errors, "POST", path, data=data, content_type="application/json")


def _assert_still_serving(client: FlaskClient, errors: _LastError) -> None:
    for path in GET_ROUTES:
        assert _send(client, errors, "GET", path).status_code == 200
    text = _send(client, errors, "GET", "/metrics", query_string="format=prometheus")
    assert text.status_code == 200


# -- hostile leaves --------------------------------------------------------------------------
HUGE_INTS = [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**300]
HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff",
    "\ufeff",
    "\u202e",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1",
    "0",
    "03",
    "+3",
    " 3",
    "3 ",
    "0x10",
    "1_000",
    "3.",
    ".3",
    "3.1712345678",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: str.isdigit() is True
    "\u00b3",  # SUPERSCRIPT THREE: isdigit() is True, int() refuses it
    "\U0001d7d1",  # MATHEMATICAL BOLD DIGIT THREE
    str(2**63),
    "9" * 300,
    "{}",
    "[]",
    "null",
    "true",
    "<View/>",
    "$image",
    "%s%n%x",
    "../" * 40,
]
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
CHARS = st.one_of(st.characters(), SURROGATES, st.sampled_from('\x00\n\r\t"\\/.$<>&%~'))

ints = st.one_of(
    st.integers(-5, 60),
    st.integers(),
    st.sampled_from(HUGE_INTS + [-n for n in HUGE_INTS] + [-(2**63) - 1]),
)
texts = st.one_of(
    st.text(CHARS, max_size=20),
    st.sampled_from(HOSTILE_STRINGS),
    st.integers(250, 5000).map(lambda n: "9" * n),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["a", "/", ".", "\x00", "\u00e9"]),
        st.integers(250, 5000),
    ),
)
leaves = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts)
keys = st.one_of(st.sampled_from(["id", "image", "project", "data", "value"]), texts)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)

# Label Studio sends 3, "3", "3.1712345678" (id.created_ts) or {"id": 3}.
projects = st.one_of(
    st.integers(1, 1000),
    ints,
    ints.map(str),
    st.tuples(ints, st.integers(0, 2**40)).map(lambda t: f"{t[0]}.{t[1]}"),
    st.integers(250, 400).map(lambda n: "9" * n),
    ints.map(lambda i: {"id": i}),
    leaves.map(lambda v: {"id": v}),
    leaves,
    json_values,
)


def _box_config(
    value: str, attr: str, attr_value: str, labels: list[str], predicted: str | None
) -> str:
    """BOX_CONFIG's shape with one hostile attribute, label names and Image value."""
    extra = f" {attr}={quoteattr(attr_value)}" if attr else ""
    mapping = f" predicted_values={quoteattr(predicted)}" if predicted is not None else ""
    tags = "".join(f"<Label value={quoteattr(label)}{mapping}/>" for label in labels)
    return (
        f'<View><Image name="image" value={quoteattr(value)}/>'
        f'<RectangleLabels name="label" toName="image"{extra}>{tags}</RectangleLabels></View>'
    )


TWO_IMAGES_CONFIG = (
    '<View><Image name="image" value="$image"/><Image name="image2" value="$image2"/>'
    '<RectangleLabels name="label" toName="image" predicted_values="square,circle">'
    '<Label value="Round" predicted_values="circle"/><Label value="Square"/></RectangleLabels>'
    '<RectangleLabels name="label2" toName="image2" model_score_threshold="0.5">'
    '<Label value="Triangle"/></RectangleLabels></View>'
)
WEIRD_CONFIGS = [
    "<View>" * 1000 + "</View>" * 1000,
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="&x;"/></RectangleLabels></View>',
    '<!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="&b;"/></RectangleLabels></View>',
    '<View><Image name="image" value="$image"/></View>',
    '<View><RectangleLabels name="label" toName="nowhere"><Label value="A"/>'
    "</RectangleLabels></View>",
    '<View><Image name="image" value="$image"',
    BOX_CONFIG.replace('toName="image"', 'toName="image" model_path="../../../../etc/passwd"'),
    BOX_CONFIG.replace('toName="image"', 'toName="image" model_path="/dev/zero"'),
    BOX_CONFIG.replace('toName="image"', 'toName="image" model_path="data"'),
    BOX_CONFIG.replace('toName="image"', 'toName="image" model_path="shapes.pt"'),
    TWO_IMAGES_CONFIG,
]
hostile_configs = st.one_of(
    st.just(BOX_CONFIG),
    st.builds(
        _box_config,
        value=st.one_of(st.just("$image"), texts.map(lambda t: "$" + t), texts),
        attr=st.sampled_from(
            [
                "",
                "model_score_threshold",
                "model_path",
                "model_skip",
                *QUEUE_KEYS,
            ]
        ),
        attr_value=st.one_of(texts, st.floats().map(str), ints.map(str)),
        labels=st.lists(
            st.one_of(st.sampled_from(["Square", "Circle", "Triangle"]), texts), max_size=4
        ),
        predicted=st.none() | texts,
    ),
    st.sampled_from(WEIRD_CONFIGS),
    texts,
    json_values,
)

# Image references no setup can load (those into the fuzz folders are BAD_LOCAL_REFS).
HOSTILE_REFS = [
    "/x\x00.jpg",
    "\ud800",
    "http://[::1",
    "http://[::1]/x.png",
    "x" * 300 + ".png",
    "/" + "a" * 300 + ".png",
    "/" + "/".join(["d"] * 2000) + ".png",
    "",
    "   ",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/proc/self/environ",
    "file:///etc/passwd",
    "file://",
    "file:///%00",
    "/data/upload/1/x.png",
    "/data/local-files/?d=x.png",
    "/data/local-files/",
    "/storage-data/x",
    "/tasks/1/presign?fileuri=eA==",
    "s3://bucket/x.png",
    "gs://bucket/x.png",
    "data:image/png;base64,iVBORw0KGgo=",
    "http://10.0.0.1/x.png",
    "https://example.com/x.png",
    "http://user:pass@[::1]:99999/x",
    "http://host:99999/x.png",
    "http://%zz/",
    "ftp://x/y.png",
    "javascript:alert(1)",
    "~/x.png",
    "~nobody-here/x.png",
    "\\\\server\\share\\x.png",
    "C:\\x.png",
]


# References that must fail to load ("{root}": the fuzz IMAGE_ROOT, "{ls}": LABEL_STUDIO_URL);
# each gives an empty result for its own task and changes nothing for the others.
BAD_LOCAL_REFS = [
    "{root}/bomb.png",
    "{root}/corrupt.png",
    "{root}/empty.png",
    "{root}/dir.png",
    "{root}/escape.png",
    "{root}/../outside.png",
    "{root}/nope.png",
    "{root}/" + "a" * 300 + ".png",
    "{root}/x\x00.png",
    "{root}/\ud800.png",
    "{root}/rgb.png/..",
    "{root}/" + "../" * 30 + "etc/passwd",
    "file://{root}/corrupt.png",
    "/data/local-files/?d=../outside.png",
    "/data/local-files/?d=corrupt.png",
    "/data/local-files/?d=%00",
    "/data/local-files/?d=" + "a" * 300,
    "{ls}/data/local-files/?d=bomb.png",
    "{ls}/data/upload/1/rgb.png",  # Label Studio refuses the connection
    "{ls}/api/projects/1",  # not a media path: the token is never sent there
    "{ls}/../../data/upload/1/rgb.png",
]
GOOD_NAMES = (
    "rgb.png",
    "rgba.png",
    "gray.png",
    "palette.png",
    "deep16.png",
    "tiny.png",
    "wide.png",
)


def _quoted(text: str) -> str:
    """Percent-encoded, lone surrogates included (as the bytes a careless client sends)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _fill(ref: object, config: Settings) -> object:
    if not isinstance(ref, str):
        return ref
    return ref.replace("{root}", str(config.image_root)).replace(
        "{ls}", str(config.label_studio_url)
    )


def _image_refs(config: Settings) -> tuple[list[str], list[str]]:
    """(good, bad) references to the fuzz images: paths, file:// and Label Studio URLs."""
    root = config.image_root
    assert root is not None
    good = [str(root / name) for name in GOOD_NAMES]
    good += [f"file://{root / 'rgb.png'}", f"  {root / 'gray.png'}  "]
    good += [
        "/data/local-files/?d=rgba.png",
        f"{config.label_studio_url}/data/local-files/?d=tiny.png",
    ]
    return good, [str(_fill(ref, config)) for ref in BAD_LOCAL_REFS]


def _bad_refs(config: Settings) -> st.SearchStrategy[object]:
    _, bad = _image_refs(config)
    return st.one_of(
        st.sampled_from(HOSTILE_REFS + bad),
        texts,
        texts.map(lambda t: f"{config.image_root}/{t}"),
        texts.map(lambda t: "/data/local-files/?d=" + _quoted(t)),
        texts.map(lambda t: f"{config.label_studio_url}/data/upload/{_quoted(t)}"),
        leaves,
        json_values,
    )


def _tasks(refs: st.SearchStrategy[object], max_tasks: int) -> st.SearchStrategy[object]:
    data = st.fixed_dictionaries(
        {"image": refs}, optional={"image2": refs, "text": texts, "meta": json_values}
    )
    task = st.fixed_dictionaries(
        {"id": st.one_of(st.integers(1, 10**6), ints, leaves), "data": data | json_values},
        optional={"annotations": json_values, "predictions": json_values, "project": projects},
    )
    return st.lists(task, min_size=1, max_size=max_tasks)


extra_params_dicts = st.dictionaries(
    st.sampled_from([*TrainParams.OVERRIDES, *QUEUE_KEYS]),
    st.one_of(
        st.sampled_from(["hybrid", "entropy", "margin", "least_confidence", "random", "prefilter"]),
        ints,
        st.floats(),
        texts,
        json_values,
    ),
    max_size=4,
)
extra_params = st.one_of(
    extra_params_dicts,
    extra_params_dicts.map(lambda d: json.dumps(d, allow_nan=True)),
    texts,
    json_values,
)
setup_bodies = st.one_of(
    st.fixed_dictionaries(
        {"project": projects, "schema": hostile_configs},
        optional={
            "extra_params": extra_params,
            "hostname": texts,
            "access_token": texts,
            "model_version": texts,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "project": projects,
            "label_config": hostile_configs,
            "extra_params": extra_params,
        },
    ),
)
annotation_objects = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(1, 10**6), ints, leaves)},
    optional={
        "project": projects,
        "task": json_values,
        "result": json_values,
        "was_cancelled": st.booleans(),
        "lead_time": st.floats(),
    },
)
webhook_bodies = st.fixed_dictionaries(
    {
        "action": st.one_of(
            st.sampled_from(sorted(HANDLED_ACTIONS) + ["TASKS_CREATED", "PROJECT_UPDATED"]),
            texts,
            leaves,
        )
    },
    optional={
        "project": projects,
        "annotation": st.one_of(
            annotation_objects, st.lists(annotation_objects, max_size=3), json_values
        ),
        "annotations": st.one_of(st.lists(annotation_objects, max_size=3), json_values),
        "task": json_values,
    },
)


# -- arbitrary bodies ------------------------------------------------------------------------
def _nested(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _in_envelope(inner: str) -> str:
    """A body that is valid for every POST route except for `inner` in each nested field."""
    return (
        f'{{"action": "ANNOTATION_CREATED", "project": 1, "schema": {json.dumps(BOX_CONFIG)}, '
        f'"label_config": {json.dumps(BOX_CONFIG)}, "extra_params": {inner}, '
        f'"tasks": [{{"id": 1, "data": {{"image": {inner}}}}}], "annotation": {{"id": 1, '
        f'"result": {inner}}}}}'
    )


RAW_JSON = [
    "1" * 5000,
    "-1e99999",
    "NaN",
    "[Infinity]",
    '"\\ud800"',
    '{"tasks": [',
    '{"a": 1, "a": 2}',
    '{"project": 18446744073709551616, "action": "START_TRAINING"}',
    '{"project": ' + "9" * 5000 + ', "action": "START_TRAINING"}',
    "\ufeff{}",
    "{}" * 1000,
    "",
]
json_texts = st.one_of(
    st.tuples(json_values, st.booleans()).map(
        lambda v: json.dumps(v[0], allow_nan=True, ensure_ascii=v[1])
    ),
    st.builds(_nested, st.integers(1, 3000), st.sampled_from(["[", "{"])),
    st.builds(_nested, st.integers(1, 1200), st.sampled_from(["[", "{"])).map(_in_envelope),
    st.sampled_from(RAW_JSON),
)
raw_bodies = st.one_of(
    json_texts.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.tuples(json_texts, st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "utf-16-be"])).map(
        lambda v: v[0].encode(v[1], "surrogatepass")
    ),
    st.binary(max_size=512),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
content_types = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/json; charset=no-such-codec",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "",
        ]
    ),
    header_text,
)


# -- the fuzz runs ---------------------------------------------------------------------------
def _setup_body(project: object, extra: object = None) -> dict[str, Any]:
    return {"project": project, "schema": BOX_CONFIG, "extra_params": extra or {"train_epochs": 2}}


def _predict_body(refs: list[object], project: object = 7) -> dict[str, Any]:
    tasks = [{"id": i + 1, "data": {"image": ref}} for i, ref in enumerate(refs)]
    return {"tasks": tasks, "project": project, "label_config": BOX_CONFIG}


def _webhook_body(project: object, annotation: object = None) -> dict[str, Any]:
    return {
        "action": "ANNOTATION_CREATED",
        "project": project,
        "annotation": annotation or {"id": 1},
    }


def test_setup_fuzz(fuzz_client: FlaskClient, last_error: _LastError) -> None:
    @_budget(300)
    @given(body=setup_bodies, ascii_only=st.booleans())
    @example(body=_setup_body(2**63), ascii_only=True)
    @example(body=_setup_body("9" * 300), ascii_only=True)
    @example(body=_setup_body({"id": 2**64}, '{"al_strategy": "margin"}'), ascii_only=True)
    @example(body=_setup_body(5, {"train_epochs": float("inf")}), ascii_only=True)
    @example(body=_setup_body(5, {"promote_tolerance": 10**400}), ascii_only=True)
    def check(body: object, ascii_only: bool) -> None:
        _post_json(fuzz_client, last_error, "/setup", body, ascii_only)
        _send(fuzz_client, last_error, "GET", "/metrics")  # nothing /setup stores breaks it

    check()
    _assert_still_serving(fuzz_client, last_error)


def test_webhook_fuzz(fuzz_client: FlaskClient, last_error: _LastError) -> None:
    @_budget(300)
    @given(body=webhook_bodies, ascii_only=st.booleans())
    @example(body=_webhook_body(2**63), ascii_only=True)
    @example(body={"action": "START_TRAINING", "project": "9" * 300}, ascii_only=True)
    @example(body=_webhook_body(3, {"id": 2**64}), ascii_only=True)
    @example(body=_webhook_body(3, {"id": 1, "result": "\ud800\x00"}), ascii_only=False)
    def check(body: object, ascii_only: bool) -> None:
        _post_json(fuzz_client, last_error, "/webhook", body, ascii_only)
        _send(fuzz_client, last_error, "GET", "/metrics")  # nothing /webhook stores breaks it

    check()
    _assert_still_serving(fuzz_client, last_error)


def test_predict_fuzz_without_decodable_images(
    fuzz_client: FlaskClient, last_error: _LastError, fuzz_settings: Settings
) -> None:
    """Hostile envelopes and references that never reach the model: cheap, so many."""
    bodies = st.fixed_dictionaries(
        {
            "tasks": _tasks(_bad_refs(fuzz_settings), 3) | json_values,
            "project": projects,
            "label_config": hostile_configs,
        },
        optional={"params": json_values, "model_version": texts},
    )

    @_budget(200)
    @given(body=bodies, ascii_only=st.booleans())
    @example(body=_predict_body(["/x\x00.jpg"], project=2**63), ascii_only=True)
    @example(body=_predict_body(["http://[::1"], project="9" * 300), ascii_only=True)
    @example(body=_predict_body([]), ascii_only=True)
    def check(body: object, ascii_only: bool) -> None:
        _post_json(fuzz_client, last_error, "/predict", body, ascii_only)

    check()
    _assert_still_serving(fuzz_client, last_error)


def test_predict_fuzz_with_the_model(
    fuzz_client: FlaskClient, last_error: _LastError, fuzz_settings: Settings
) -> None:
    """Valid envelopes, 1-3 tasks mixing real images and hostile references: 200 and one
    result per task, in order."""
    good, _ = _image_refs(fuzz_settings)
    refs = st.one_of(st.sampled_from(good), st.sampled_from(good), _bad_refs(fuzz_settings))
    assert fuzz_settings.model_path is not None
    threshold = BOX_CONFIG.replace('toName="image"', 'toName="image" model_score_threshold="0.9"')
    own_model = BOX_CONFIG.replace(
        'toName="image"', f'toName="image" model_path="{fuzz_settings.model_path.name}"'
    )
    envelopes = st.fixed_dictionaries(
        {
            "tasks": _tasks(refs, 3),
            "project": st.sampled_from([7, "7", "7.1712345678", {"id": 7}, None]),
            "label_config": st.sampled_from([BOX_CONFIG, TWO_IMAGES_CONFIG, threshold, own_model]),
        }
    )

    @_budget(60)
    @given(body=envelopes)
    def check(body: dict[str, Any]) -> None:
        response = _post_json(fuzz_client, last_error, "/predict", body)
        assert response.status_code == 200, response.get_json()
        results = response.get_json()["results"]
        assert len(results) == len(body["tasks"])
        for result in results:
            assert isinstance(result["result"], list) and result["model_version"]

    check()
    _assert_still_serving(fuzz_client, last_error)


@pytest.mark.parametrize("route", POST_ROUTES)
def test_arbitrary_bodies(fuzz_client: FlaskClient, last_error: _LastError, route: str) -> None:
    @_budget(200)
    @given(raw=raw_bodies, content_type=content_types)
    @example(raw=_nested(1000, "[").encode(), content_type="application/json")
    @example(raw=_nested(1000, "{").encode(), content_type="application/json")
    @example(raw=_nested(100_000, "[").encode(), content_type="application/json")
    @example(raw=b"[" * 100_000, content_type="text/plain")
    @example(raw=_in_envelope(_nested(500, "[")).encode(), content_type="application/json")
    @example(raw=_in_envelope(_nested(900, "[")).encode(), content_type="application/json")
    @example(raw=_in_envelope(_nested(1000, "{")).encode(), content_type="application/json")
    def check(raw: bytes, content_type: str | None) -> None:
        _send(fuzz_client, last_error, "POST", route, data=raw, content_type=content_type)

    check()
    _assert_still_serving(fuzz_client, last_error)


def test_get_routes_fuzz(fuzz_client: FlaskClient, last_error: _LastError) -> None:
    queries = st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                "format=prometheus",
                "format=json",
                "format=%ff",
                "format=prometheus&format=json",
                "%",
                "%%zz",
                "a=%00",
                "project=" + "9" * 300,
                "project=3.1712345678",
                "project=%ff",
                "&&&=",
                "format",
            ]
        ),
    )
    accepts = st.one_of(
        st.sampled_from(
            [
                "text/plain",
                "application/json",
                "*/*",
                "text/plain;q=nan",
                "text/plain;q=1e999",
                "text/plain;q=-1, application/json;q=0",
                "application/openmetrics-text; version=1.0.0",
                ",,,;;;",
            ]
        ),
        header_text,
    )

    @_budget(300)
    @given(path=st.sampled_from(GET_ROUTES), query=queries, accept=accepts)
    def check(path: str, query: str, accept: str) -> None:
        _send(fuzz_client, last_error, "GET", path, query_string=query, headers={"Accept": accept})

    check()
    _assert_still_serving(fuzz_client, last_error)


def test_other_methods_and_paths(fuzz_client: FlaskClient, last_error: _LastError) -> None:
    methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"])
    # quoted with safe="": a path starting "//" would name a host to the test client
    paths = st.one_of(
        st.sampled_from([*GET_ROUTES, *POST_ROUTES, "/predict/"]),
        texts.map(lambda t: "/" + _quoted(t)),
        texts.map(lambda t: "/predict/" + _quoted(t)),
    )

    @_budget(150)
    @given(method=methods, path=paths)
    def check(method: str, path: str) -> None:
        _send(fuzz_client, last_error, method, path)

    check()


def test_basic_auth_header_fuzz(fuzz_settings: Settings, last_error: _LastError) -> None:
    """With basic auth on, any Authorization header is a 401 (or passes), never a 5xx."""
    config = replace(
        fuzz_settings, basic_auth_user="ls", basic_auth_pass="s\u00e9cret:x", label_studio_url=None
    )
    credentials = st.one_of(
        st.binary(max_size=40),
        st.text(CHARS, max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"ls:s\xc3\xa9cret:x", b"ls", b":", b"\xff\xfe:\x00"]),
    )
    headers = st.one_of(
        credentials.map(lambda c: "Basic " + base64.b64encode(c).decode()),
        st.sampled_from(["Basic", "Basic ", "Basic ===", "Bearer x", "Digest a=b", "basic Og=="]),
        header_text,
    )

    with create_app(config).test_client() as client:

        @_budget(150)
        @given(path=st.sampled_from([*GET_ROUTES, *POST_ROUTES]), header=headers)
        def check(path: str, header: str) -> None:
            method = "POST" if path in POST_ROUTES else "GET"
            _send(client, last_error, method, path, headers={"Authorization": header}, json={})

        check()


# -- the cases the probe found, always run ---------------------------------------------------
EDGE_PROJECTS = [
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    -1,
    0,
    "9" * 256,
    "9" * 300,
    "9" * 300 + ".1712345678",
    {"id": 2**63},
    {"id": "9" * 300},
    "18446744073709551616.1712345678",
]


@pytest.mark.parametrize("project", EDGE_PROJECTS, ids=lambda p: ascii(p)[:24])
def test_edge_project_ids_on_every_route(
    fuzz_client: FlaskClient,
    fuzz_settings: Settings,
    last_error: _LastError,
    fuzz_images: Path,
    project: object,
) -> None:
    bodies = {
        "/setup": _setup_body(project),
        "/predict": _predict_body([str(fuzz_images / "rgb.png")], project),
        "/webhook": _webhook_body(project),
    }
    for route, body in bodies.items():
        _post_json(fuzz_client, last_error, route, body)
        _send(fuzz_client, last_error, "GET", "/metrics")
    with create_app(fuzz_settings).test_client() as restarted:  # what was stored, re-read
        _assert_still_serving(restarted, last_error)


@pytest.fixture(scope="module")
def good_pair(fuzz_client: FlaskClient, last_error: _LastError, fuzz_images: Path) -> list[dict]:
    """The results for two real images predicted on their own."""
    body = _predict_body([str(fuzz_images / "rgb.png"), str(fuzz_images / "gray.png")])
    response = _post_json(fuzz_client, last_error, "/predict", body)
    assert response.status_code == 200
    return response.get_json()["results"]


NON_STRING_REFS: list[object] = [None, 3, 2**64, -1.5, float("nan"), True, [], {"url": "x"}]


@pytest.mark.parametrize(
    "ref", HOSTILE_REFS + BAD_LOCAL_REFS + NON_STRING_REFS, ids=lambda r: ascii(r)[:32]
)
def test_one_bad_image_never_fails_the_batch(
    fuzz_client: FlaskClient,
    last_error: _LastError,
    fuzz_settings: Settings,
    fuzz_images: Path,
    good_pair: list[dict],
    ref: object,
) -> None:
    """A bad reference between two real images: an empty result for it, and the same results
    for its neighbours as when they are predicted without it."""
    refs = [str(fuzz_images / "rgb.png"), _fill(ref, fuzz_settings), str(fuzz_images / "gray.png")]
    response = _post_json(fuzz_client, last_error, "/predict", _predict_body(refs))
    assert response.status_code == 200, response.get_json()
    first, middle, last = response.get_json()["results"]
    assert middle["result"] == []
    assert [first, last] == good_pair


@pytest.mark.parametrize(
    ("route", "size"),
    [(route, MAX_REQUEST_BYTES) for route in POST_ROUTES] + [("/webhook", MAX_EVENT_BYTES)],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
def test_oversize_bodies_are_refused(
    fuzz_client: FlaskClient, last_error: _LastError, route: str, size: int, streamed: bool
) -> None:
    """A valid JSON object over MAX_REQUEST_BYTES (or a webhook event over MAX_EVENT_BYTES):
    413, whether its length is declared or it arrives chunked."""
    body = json.dumps({"action": "PROJECT_UPDATED", "pad": "x" * size}).encode()
    if streamed:  # chunked upload: no Content-Length, the server terminates the stream
        kwargs: dict[str, Any] = {
            "input_stream": io.BytesIO(body),
            "environ_overrides": {"wsgi.input_terminated": True},
        }
    else:
        kwargs = {"data": body}
    response = _send(
        fuzz_client, last_error, "POST", route, content_type="application/json", **kwargs
    )
    assert response.status_code == 413


def test_the_app_still_serves_after_the_fuzz_run(
    fuzz_client: FlaskClient, fuzz_settings: Settings, last_error: _LastError
) -> None:
    """Runs last: whatever the fuzz runs stored, /health and /metrics answer, also after a
    restart on the same MODEL_DIR."""
    _assert_still_serving(fuzz_client, last_error)
    with create_app(fuzz_settings).test_client() as restarted:
        _assert_still_serving(restarted, last_error)
