"""The backend's one way to talk to Label Studio: a `label_studio_sdk.LabelStudio` client.

Built lazily from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY; the SDK tells a legacy token from a
personal access token (a JWT refresh token) and refreshes access tokens itself.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from label_studio_sdk.core.api_error import ApiError

from backend.errors import ConfigError

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

logger = logging.getLogger(__name__)


class LabelStudioClient:
    """Lazily built, shared SDK client plus the auth headers for raw file downloads."""

    def __init__(self, url: str | None, api_key: str | None, timeout: float = 30.0) -> None:
        self.url = url
        self._api_key = api_key
        self._timeout = timeout
        self._sdk: LabelStudio | None = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.url and self._api_key)

    @property
    def sdk(self) -> LabelStudio:
        """The SDK client; raises ConfigError when URL or key are missing."""
        if not self.configured:
            raise ConfigError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must both be set")
        with self._lock:
            if self._sdk is None:
                from label_studio_sdk import LabelStudio  # noqa: PLC0415  (heavy import)

                self._sdk = LabelStudio(
                    base_url=self.url, api_key=self._api_key, timeout=self._timeout
                )
            return self._sdk

    def auth_headers(self) -> dict[str, str]:
        """`Authorization` for Label Studio URLs (Token for legacy keys, Bearer access JWT).

        The SDK exposes no public accessor for these; its client wrapper builds them (and
        refreshes an expired access token) on every SDK call, so we ask it the same way.
        """
        headers = self.sdk._client_wrapper.get_headers()
        return {"Authorization": headers["Authorization"]}

    def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """One call to a Label Studio endpoint the SDK has no method for (`path` relative to
        the URL, e.g. "api/projects/3/model-versions"), through the SDK's own HTTP client and
        auth; returns the JSON answer (None when empty). A non-2xx answer raises the SDK's
        ApiError, as its own methods do; `timeout` (seconds) overrides the client's."""
        options: dict[str, Any] = {"max_retries": 0}
        if timeout is not None:
            options["timeout"] = timeout
        answer = self.sdk._client_wrapper.httpx_client.request(
            path,
            method=method,
            json=json,
            request_options=options,  # type: ignore[arg-type]
        )
        if not 200 <= answer.status_code < 300:
            try:
                body: Any = answer.json()
            except ValueError:
                body = answer.text
            raise ApiError(status_code=answer.status_code, body=body)
        return answer.json() if answer.content else None

    def ensure_webhook_credentials(
        self, project_id: int, webhook_url: str, authorization: str
    ) -> bool:
        """Give the project's webhook to `webhook_url` our basic-auth header.

        Label Studio creates the webhook for an ML backend without credentials, so a backend
        behind basic auth would refuse every event. Returns True once the webhook carries the
        header (patched now or already), False if no such webhook exists (yet).
        """
        target = webhook_url.rstrip("/")
        for hook in self.sdk.webhooks.list(project=str(project_id)):
            if str(hook.url or "").rstrip("/") != target:
                continue
            headers = dict(hook.headers or {})
            if headers.get("Authorization") == authorization:
                return True
            headers["Authorization"] = authorization
            self.sdk.webhooks.update(hook.id, headers=headers)
            logger.info(
                "project=%s webhook %s now sends basic-auth credentials", project_id, hook.id
            )
            return True
        return False
