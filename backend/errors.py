"""The backend's exception hierarchy.

Core modules raise these; only the HTTP edge (the error handlers in `backend.serving.app`)
turns them into answers, so every client error carries a status and a message a Label Studio
user can act on.
"""

from __future__ import annotations

import errno


class BackendError(Exception):
    """Base of every error the backend raises on purpose."""

    status = 500
    code = "internal_error"


class ConfigError(BackendError):
    """A setting (environment variable or CLI flag) has an invalid value."""

    code = "config_error"


class BadRequest(BackendError):
    """The request body is malformed or misses a required field."""

    status = 400
    code = "bad_request"


class LabelConfigError(BackendError):
    """The label config holds nothing this backend can serve, or an invalid attribute."""

    status = 422
    code = "unsupported_label_config"


class NotFound(BackendError):
    """What the request names is not there (a project without a live model, a live model
    without a checked ONNX export)."""

    status = 404
    code = "not_found"


class Unauthorized(BackendError):
    """Basic-auth credentials are missing or wrong."""

    status = 401
    code = "unauthorized"


class ImageError(BackendError):
    """One task's image could not be resolved, fetched or decoded.

    Never fails a whole batch: the service logs it and answers an empty prediction for that task.
    """

    status = 422
    code = "image_error"


class ModelError(BackendError):
    """Model weights are missing or cannot be loaded."""

    status = 503
    code = "model_unavailable"


class PayloadTooLarge(BackendError):
    """A request body is over its size limit (MAX_REQUEST_BYTES, or MAX_EVENT_BYTES for
    a webhook event)."""

    status = 413
    code = "payload_too_large"


class StorageError(BackendError):
    """MODEL_DIR cannot be written (read-only, I/O error): nothing was stored, retry later."""

    status = 503
    code = "storage_unavailable"


class StorageFull(StorageError):
    """MODEL_DIR's disk is full: nothing was stored; free space and retry."""

    status = 507
    code = "storage_full"


def storage_error(exc: BaseException, doing: str) -> StorageError:
    """The StorageError for an OS or SQLite failure while `doing` something under MODEL_DIR."""
    text = str(exc)
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "full" in text.lower()
    kind = StorageFull if full else StorageError
    return kind(f"{doing} failed: {text or type(exc).__name__}")
