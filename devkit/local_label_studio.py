"""Run a real, throw-away Label Studio on 127.0.0.1 for the e2e tests and ``make demo``.

Label Studio lives in its own virtualenv (``make install-ls``) because its pins clash with the
backend's, so it is driven as a subprocess, never imported. What this module knows about
Label Studio 1.23.2, checked against a running server:

* ``--internal-host`` is the address the server binds (default ``0.0.0.0``); ``--host`` only
  sets the public URL LS writes into links and into the ML ``/setup`` call (``hostname``).
* ``label-studio start`` migrates an empty database on every fresh data dir (~22 s of a ~25 s
  start-up). A migrated, user-free database is built once with ``label-studio version`` (which
  migrates and exits), cached, and copied into each new data dir: start-up drops to ~3 s.
* Organisations start with personal access tokens (PATs) on and legacy tokens off; legacy
  tokens are switched on from a logged-in session (``POST /api/jwt/settings``). A user holds at
  most one live PAT (``POST /api/token/`` answers 409 otherwise).
* ``ML_BLOCK_LOCAL_IP`` and ``SSRF_PROTECTION_ENABLED`` default to true: LS refuses ML
  backends and webhooks on loopback or private addresses. Both are off here, where the backend
  runs on 127.0.0.1 too.
* ``/data/local-files/?d=<path>`` is served only for files inside a Local Files storage of a
  project the user can see, and such a storage must be a subdirectory of the document root.
* Left to its defaults LS calls PyPI, Sentry and analytics endpoints; these are turned off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from devkit.processes import ManagedProcess

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LS_EXECUTABLE = REPO_ROOT / ".venv-ls" / "bin" / "label-studio"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "label-studio"
DB_NAME = "label_studio.sqlite3"
LOG_NAME = "label-studio.log"
CREDENTIALS_NAME = "admin-credentials.json"

_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken"\s+value="([^"]+)"')


class LabelStudioError(RuntimeError):
    """Label Studio could not be started, or answered an API call with an error."""


@dataclass(frozen=True)
class MLBackendConnection:
    """An ML backend attached to a project, as Label Studio reports it.

    ``state`` is LS's code: ``CO`` connected, ``DI`` disconnected, ``ER`` error,
    ``TR`` training, ``PR`` predicting.
    """

    id: int
    state: str


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalLabelStudio(ManagedProcess):
    """One Label Studio server in its own process group, with an admin user and tokens.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``stop`` kills the whole
    process group, so nothing is left running even when a test fails. On Linux the server is
    also told to exit when the thread that started it ends, so start it from a thread that
    lives as long as it should (the main thread, normally).
    """

    name = "Label Studio"
    error = LabelStudioError

    def __init__(
        self,
        data_dir: Path,
        document_root: Path,
        *,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str | None = None,
        legacy_token: str | None = None,
        executable: Path = DEFAULT_LS_EXECUTABLE,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        startup_timeout: float = 120.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.document_root = Path(document_root).resolve()
        self.port = port or find_free_port()
        self.username = username
        # LS creates the admin once per data dir and ignores other credentials later, so the
        # first ones are kept next to the database. Random by default: nothing guessable.
        stored = self._stored_credentials()
        self.password = password or stored.get("password") or secrets.token_urlsafe(16)
        self.legacy_token = legacy_token or stored.get("legacy_token") or secrets.token_hex(20)
        self.executable = Path(executable)
        self.cache_dir = Path(cache_dir)
        self.startup_timeout = startup_timeout
        self.log_path = self.data_dir / LOG_NAME
        self._process = None
        self._session: requests.Session | None = None
        self._pat: str | None = None

    @property
    def url(self) -> str:
        """Base URL of the server, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalLabelStudio:
        """Start the server, wait until it is healthy and turn legacy tokens on."""
        self._refuse_if_running()
        if not self.executable.is_file():
            raise LabelStudioError(
                f"{self.executable} not found: run `make install-ls` to install Label Studio"
            )
        if len(self.legacy_token) < 6:
            # LS silently ignores shorter tokens and keeps a random one.
            raise ValueError("legacy_token must be at least 6 characters")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.document_root.mkdir(parents=True, exist_ok=True)
        self._seed_database()
        self._store_credentials()

        def ready() -> None:
            self._wait_for_health(self.startup_timeout)
            self.enable_legacy_tokens()

        self._launch(
            [
                str(self.executable),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            ready,
            env=self._environment(),
            cwd=self.data_dir,
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the whole process group; kill it if it outlives ``timeout`` seconds."""
        if self._session is not None:
            self._session.close()
            self._session = None
        super().stop(timeout)

    def _stored_credentials(self) -> dict[str, str]:
        """Credentials saved by an earlier start on this data dir, if any."""
        path = self.data_dir / CREDENTIALS_NAME
        if not path.exists():
            return {}
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("username") != self.username:
            return {}
        return {key: str(stored[key]) for key in ("password", "legacy_token") if key in stored}

    def _store_credentials(self) -> None:
        """Save the admin's credentials, readable by the owner only, for the next start."""
        path = self.data_dir / CREDENTIALS_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "username": self.username,
                    "password": self.password,
                    "legacy_token": self.legacy_token,
                },
                handle,
            )

    def _environment(self) -> dict[str, str]:
        """Environment for LS: the caller's, minus any LS settings it carries, plus ours."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LABEL_STUDIO_", "HEARTEX_"))
        }
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_DATABASE_NAME": str(self.data_dir / DB_NAME),
                "LABEL_STUDIO_HOST": self.url,
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.legacy_token,
                # The ML backend runs on this machine too; LS blocks local addresses by default.
                "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
                # Else adding a local backend answers 403 yet half-creates it (no webhook), and
                # webhooks to 127.0.0.1 are never delivered.
                "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
                # No calls home: PyPI version check, Sentry (server and page), analytics.
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                "LABEL_STUDIO_SENTRY_DSN": "",
                "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            }
        )
        return env

    def _seed_database(self) -> None:
        """Copy a migrated, empty database into a fresh data dir, building it once if needed."""
        target = self.data_dir / DB_NAME
        if target.exists():
            return  # an existing data dir: LS applies any missing migrations itself
        template = self._template_database()
        shutil.copyfile(template, target)
        logger.debug("Seeded %s from %s", target, template)

    def _template_database(self) -> Path:
        """Path of the cached empty database for this LS install, built on first use."""
        template = self.cache_dir / f"empty-{_installed_version(self.executable)}.sqlite3"
        if template.exists():
            return template
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("Building Label Studio's empty database once (about 25 s): %s", template)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as scratch:
            env = self._environment()
            env["LABEL_STUDIO_BASE_DATA_DIR"] = scratch
            env["LABEL_STUDIO_DATABASE_NAME"] = str(Path(scratch) / DB_NAME)
            # `version` applies migrations, prints versions and exits; it creates no user.
            result = subprocess.run(
                [str(self.executable), "version"],
                env=env,
                cwd=scratch,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            built = Path(scratch) / DB_NAME
            if result.returncode != 0 or not built.exists():
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
                raise LabelStudioError(
                    f"building the empty Label Studio database failed "
                    f"(exit {result.returncode}):\n{tail}"
                )
            # Atomic: a concurrent builder can only ever see a complete file.
            os.replace(built, template)
        return template

    # -- auth ------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A ``requests.Session`` logged in through the real login form (cookie auth).

        Unsafe methods need the CSRF token in ``X-CSRFToken``; the session sends it.
        """
        if self._session is not None:
            return self._session
        session = requests.Session()
        login_url = f"{self.url}/user/login/"
        page = session.get(login_url, timeout=30)
        page.raise_for_status()
        match = _CSRF_FIELD.search(page.text)
        if match is None:
            raise LabelStudioError("no CSRF token on Label Studio's login page")
        answer = session.post(
            login_url,
            data={
                "csrfmiddlewaretoken": match.group(1),
                "email": self.username,
                "password": self.password,
            },
            headers={"Referer": login_url},
            allow_redirects=False,
            timeout=30,
        )
        # Success is a redirect away from the form; a failed login re-renders it with 200.
        # (LS sets a sessionid cookie for anonymous visitors too, so it proves nothing.)
        if answer.status_code != 302 or "/user/login" in answer.headers.get("Location", ""):
            raise LabelStudioError(
                f"login as {self.username} failed (HTTP {answer.status_code}); LS keeps the "
                f"admin credentials of the first start on {self.data_dir}"
            )
        csrf = session.cookies.get("csrftoken")
        if csrf is None:
            raise LabelStudioError("Label Studio set no CSRF cookie at login")
        session.headers.update({"X-CSRFToken": csrf, "Referer": self.url})
        self._session = session
        return session

    def enable_legacy_tokens(self) -> None:
        """Allow ``Authorization: Token <legacy_token>`` for the organisation (off by default)."""
        answer = self.session().post(
            f"{self.url}/api/jwt/settings",
            json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True},
            timeout=30,
        )
        _check(answer, "enabling legacy API tokens")

    def personal_access_token(self) -> str:
        """The admin's personal access token (a JWT refresh token), created on first call.

        LS allows one live PAT per user: if one exists from an earlier run on this data dir
        (its secret is unknown here), it is revoked and a new one created.
        """
        if self._pat is not None:
            return self._pat
        session = self.session()
        answer = session.post(f"{self.url}/api/token/", timeout=30)
        if answer.status_code == 409:
            listed = session.get(f"{self.url}/api/token/", timeout=30)
            _check(listed, "listing API tokens")
            for item in listed.json():
                revoked = session.post(
                    f"{self.url}/api/token/blacklist/", json={"refresh": item["token"]}, timeout=30
                )
                _check(revoked, "revoking an old API token")
            answer = session.post(f"{self.url}/api/token/", timeout=30)
        _check(answer, "creating a personal access token")
        self._pat = str(answer.json()["token"])
        return self._pat

    def client(self, token: str | None = None) -> Any:
        """A ``label_studio_sdk.LabelStudio`` client; legacy token unless ``token`` is given."""
        from label_studio_sdk import LabelStudio  # heavy import, only where needed

        return LabelStudio(base_url=self.url, api_key=token or self.legacy_token)

    def auth_headers(self) -> dict[str, str]:
        """Headers for plain ``requests`` calls with the legacy token."""
        return {"Authorization": f"Token {self.legacy_token}"}

    # -- thin API helpers ------------------------------------------------------------------

    def create_project(self, title: str, label_config: str) -> int:
        """Create a project and return its id."""
        with _sdk_errors("creating a project"):
            project = self.client().projects.create(title=title, label_config=label_config)
        return int(project.id)

    def local_file_url(self, path: Path) -> str:
        """Task URL under which LS serves ``path``, a file below the document root."""
        resolved = Path(path).resolve()
        if self.document_root not in resolved.parents:
            raise ValueError(f"{resolved} is not inside the document root {self.document_root}")
        relative = resolved.relative_to(self.document_root).as_posix()
        return f"/data/local-files/?d={quote(relative, safe='/')}"

    def add_local_storage(self, project_id: int, directory: Path) -> int:
        """Register ``directory`` as the project's Local Files storage; return its id.

        LS 1.23 serves ``/data/local-files/`` only for files inside such a storage of a project
        the user can see (404 otherwise), and the storage must be a strict subdirectory of the
        document root. It is not synced: tasks come from :meth:`import_images`.
        """
        resolved = Path(directory).resolve()
        with _sdk_errors(f"adding local storage {resolved}"):
            storage = self.client().import_storage.local.create(
                project=project_id, path=str(resolved), title=resolved.name
            )
        return int(storage.id)

    def import_images(
        self, project_id: int, paths: Iterable[Path], key: str = "image"
    ) -> list[int]:
        """Import one task per local image as ``{key: "/data/local-files/?d=..."}``; return ids.

        Images must sit in subdirectories of the document root; each directory not yet a
        storage of the project is added as one, so LS will serve the files. Ids come back in
        the order of ``paths``.
        """
        images = [Path(path).resolve() for path in paths]
        tasks = [{key: self.local_file_url(image)} for image in images]
        client = self.client()
        with _sdk_errors("listing local storages"):
            covered = {
                Path(storage.path)
                for storage in client.import_storage.local.list(project=project_id)
                if storage.path
            }
        for directory in sorted({image.parent for image in images}):
            if directory == self.document_root:
                raise ValueError(
                    f"{directory} is the document root itself; LS 1.23 serves local files only "
                    "from its subdirectories"
                )
            if not any(root == directory or root in directory.parents for root in covered):
                self.add_local_storage(project_id, directory)
                covered.add(directory)
        with _sdk_errors(f"importing {len(tasks)} tasks"):
            answer = client.projects.import_tasks(project_id, request=tasks, return_task_ids=True)
        task_ids = (answer.model_extra or {}).get("task_ids")
        if not isinstance(task_ids, list) or len(task_ids) != len(tasks):
            raise LabelStudioError(f"import of {len(tasks)} tasks returned ids {task_ids!r}")
        return [int(task_id) for task_id in task_ids]

    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str = "ls-active-yolo",
        basic_auth: tuple[str, str] | None = None,
        interactive: bool = False,
    ) -> MLBackendConnection:
        """Attach the ML backend at ``url`` to a project.

        LS calls the backend's ``/health`` and ``/setup`` before it accepts it, so the backend
        must already be serving. ``basic_auth`` is ``(user, password)`` that LS will send;
        ``interactive`` turns on "Use for interactive preannotations" (smart tools).
        """
        payload: dict[str, Any] = {"url": url, "project": project_id, "title": title}
        if interactive:
            payload["is_interactive"] = True
        if basic_auth is not None:
            payload.update(
                auth_method="BASIC_AUTH",
                basic_auth_user=basic_auth[0],
                basic_auth_pass=basic_auth[1],
            )
        answer = requests.post(
            f"{self.url}/api/ml", json=payload, headers=self.auth_headers(), timeout=60
        )
        _check(answer, f"connecting ML backend {url}")
        body = answer.json()
        return MLBackendConnection(id=int(body["id"]), state=str(body["state"]))


def _check(answer: requests.Response, what: str) -> None:
    """Raise ``LabelStudioError`` with LS's own message when a call did not succeed."""
    if answer.status_code >= 400:
        raise LabelStudioError(f"{what} failed: HTTP {answer.status_code}: {answer.text[:500]}")


@contextmanager
def _sdk_errors(what: str) -> Iterator[None]:
    """Turn the SDK's ``ApiError`` into ``LabelStudioError`` with status and body only.

    ``ApiError``'s own text includes the response headers, session cookie among them.
    """
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as error:
        raise LabelStudioError(
            f"{what} failed: HTTP {error.status_code}: {str(error.body)[:500]}"
        ) from None


def _installed_version(executable: Path) -> str:
    """LS version of the virtualenv holding ``executable``, read from its dist-info.

    Keys the database cache, so upgrading Label Studio builds a fresh template.
    """
    venv = executable.resolve().parent.parent
    found = sorted(venv.glob("lib/python*/site-packages/label_studio-*.dist-info"))
    if not found:
        return "unknown"
    return found[-1].name.removeprefix("label_studio-").removesuffix(".dist-info")
