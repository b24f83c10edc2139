"""A training job, whoever runs it: the run, then (when due) the re-ranked queue."""

from __future__ import annotations

import logging

from backend.events import REQUESTED, RunState
from backend.jobs.queues import chunk_queue
from backend.ranking.errors import RankingBusy
from backend.ranking.job import rank_as_configured
from backend.ranking.store import newest_ranking
from backend.services import Services
from backend.training.trainer import execute_run

logger = logging.getLogger(__name__)


def run_job(services: Services, project_id: int, run_id: int) -> RunState:
    """Run a recorded training run, then re-rank when due; returns the run's state. What
    every launcher executes (child process, in-process, RQ worker)."""
    state = execute_run(services, project_id, run_id)
    rank_after_run(services, project_id, run_id)
    return state


def rank_after_run(services: Services, project_id: int, run_id: int) -> None:
    """Re-rank the queue after a run: always after a promotion (a new model scores every
    task anew), after a run someone asked for (START_TRAINING) even when it promoted
    nothing, e.g. a cold start with too few labels, and once half of the queue's head that
    Label Studio holds is annotated (`written_head_half_annotated`). A ranking failure never
    undoes the run."""
    run = services.events.run(project_id, run_id)
    if run is None or not (
        run["state"] == RunState.PROMOTED
        or (run["reason"] == REQUESTED and run["state"] in (RunState.REJECTED, RunState.SKIPPED))
        or written_head_half_annotated(services, project_id)
    ):
        return
    if not services.label_studio.configured:
        logger.info("project=%s: no LABEL_STUDIO_URL/API key, queue not ranked", project_id)
        return
    try:
        summary = rank_as_configured(services, project_id, offload=chunk_queue(services.settings))
    except RankingBusy:
        logger.info("project=%s: a ranking is already running", project_id)
    except Exception:
        logger.exception("project=%s run=%s: ranking the queue failed", project_id, run_id)
    else:
        logger.info(
            "project=%s run=%s ranked %d tasks with %s in %.1fs",
            project_id,
            run_id,
            summary.n_ranked,
            summary.model_version,
            summary.timings.get("total", 0.0),
        )


def written_head_half_annotated(services: Services, project_id: int) -> bool:
    """True when the newest ranking wrote only the queue's head to Label Studio
    (`al_queue_length`) and annotations created since number half of it: ranked again now,
    Label Studio never runs out of ranked tasks (past them it serves tasks at random)."""
    ranking = newest_ranking(services.settings.model_dir, project_id)
    if ranking is None:
        return False
    written, ranked = ranking.get("written"), ranking.get("n_ranked")
    if not isinstance(written, int) or not isinstance(ranked, int) or written >= ranked:
        return False
    since = float(ranking.get("created_at") or 0.0)
    return 2 * services.events.annotations_created_since(project_id, since) >= written
