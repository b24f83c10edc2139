"""The ranking's own errors. Label Studio's answers (a missing project, a failed call) are
`backend.labelstudio.predictions.ProjectNotFound` and `LabelStudioApiError`."""

from __future__ import annotations

from backend.errors import BackendError


class RankingError(BackendError):
    """Ranking a project failed."""

    code = "ranking_error"


class RankingConfigError(RankingError):
    """A bad strategy name, strategy parameter or batch size."""

    status = 400
    code = "bad_ranking_request"


class RankingBusy(RankingError):
    """Another ranking of the same project is running (in this or another process)."""

    status = 409
    code = "ranking_busy"


class RankingCancelled(RankingError):
    """Raised by a progress callback to stop a ranking; work done so far is kept on disk."""

    status = 409
    code = "ranking_cancelled"
