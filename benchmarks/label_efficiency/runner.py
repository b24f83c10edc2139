"""Runs a whole benchmark: the shared base model, each scenario's full-data reference, and one
process-parallel unit per scenario and seed (`simulation.SeedRun`); then the summary.

Reference models are recorded in the workdir with the inputs they came from and reused by a
later run with the same inputs. partial.json is rewritten as units finish, so a run cut short
still leaves its curves (`--summarise` turns it into a report).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.logs import configure_logging
from benchmarks.label_efficiency.config import BenchConfig, base_data, scenario_data
from benchmarks.label_efficiency.digits_data import BASE_CLASS, generate, summary
from benchmarks.label_efficiency.metrics import summarise
from benchmarks.label_efficiency.report import write_outputs
from benchmarks.label_efficiency.simulation import REFERENCE_PROJECT, Scenario, SeedResult, SeedRun
from benchmarks.label_efficiency.training import Trainer

logger = logging.getLogger(__name__)


def bench_settings(settings: Settings, config: BenchConfig, workdir: Path) -> Settings:
    """The product settings every simulated project runs under (the product defaults, at the
    benchmark's image size, with training left to the simulation). No backbone pretraining:
    it is time-bounded, so the shared base model would depend on the machine's speed."""
    return replace(
        settings,
        model_dir=workdir / "references",
        image_root=(workdir / "data").resolve(),
        image_size=config.image_size,
        train_image_size=config.image_size,
        train_epochs=config.epochs,
        train_batch=config.train_batch,
        train_val_percent=config.val_percent,
        train_min_images=4,
        promote_tolerance=config.tolerance,
        training_enabled=False,
        backbone_pretrain_seconds=0.0,
        label_studio_url=None,
        device=config.device,
        torch_threads=max(1, (os.cpu_count() or 1) // config.jobs),
    )


def _cached(
    workdir: Path, name: str, key: dict[str, Any], make: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A reference's record, reused when its inputs (`key`) match the recorded ones."""
    path = workdir / "references" / f"{name}.json"
    canonical = json.dumps(key, sort_keys=True, default=str)
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == canonical and Path(stored["result"]["weights"]).is_file():
            logger.info("reusing the %s model recorded in %s", name, workdir)
            return dict(stored["result"])
    result = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": canonical, "result": result}, indent=2), encoding="utf-8")
    return result


def train_base(config: BenchConfig, settings: Settings, workdir: Path) -> dict[str, Any]:
    """The stand-in for the pretrained weights a user brings (MODEL_PATH): one class, "digit",
    trained through the product's path on scenes of digit samples no pool uses."""
    data = base_data(config.n_base)
    key = {"data": asdict(data), "epochs": config.base_epochs, "settings": _recipe(settings)}

    def make() -> dict[str, Any]:
        started = time.perf_counter()
        dataset = generate(workdir / "data" / "base", data)
        root = workdir / "references" / "base"
        shutil.rmtree(root, ignore_errors=True)
        trainer = Trainer(replace(settings, model_dir=root, model_path=None), config)
        details = trainer.product(
            REFERENCE_PROJECT,
            dataset.labeled("base", class_agnostic=True),
            [BASE_CLASS],
            # every epoch, the last kept: a fixed recipe, whatever the product's
            replace(trainer.params, epochs=config.base_epochs, patience=0, time_limit=0.0),
        )
        live = trainer.registry.live(REFERENCE_PROJECT)
        assert live is not None  # a first run has nothing to lose against
        return {
            "images": len(dataset.splits["base"]),
            "classes": [BASE_CLASS],
            "epochs": config.base_epochs,
            "weights": str(live.weights),
            "val_map50": details["metrics"]["map50"],
            "duration_s": round(time.perf_counter() - started, 1),
        }

    return _cached(workdir, "base", key, make)


def full_reference(
    config: BenchConfig, settings: Settings, workdir: Path, name: str, base_weights: str
) -> dict[str, Any]:
    """The 100% model of a scenario: the converged recipe on every pool label."""
    key = {
        "data": asdict(scenario_data(name, config.n_pool, config.n_test)),
        "base": base_weights,
        "recipe": [config.converged_max_epochs, config.converged_patience],
        "settings": _recipe(settings),
    }

    def make() -> dict[str, Any]:
        started = time.perf_counter()
        root = workdir / "references" / f"full-{name}"
        trainer = Trainer(replace(settings, model_dir=root / "models"), config)
        scenario = Scenario.load(name, config, workdir, root, trainer)
        weights = trainer.converged(
            Path(base_weights),
            scenario.pool,
            scenario.dataset.labeled("val"),
            scenario.classes,
            root / "train",
        )
        metrics = trainer.test(weights, scenario.test_yaml, scenario.classes, root / "eval")
        return {
            "images": len(scenario.pool),
            "boxes": scenario.boxes(range(len(scenario.pool))),
            "weights": str(weights),
            "map50": float(metrics["map50"]),
            "map50_95": float(metrics["map50_95"]),
            "per_class_ap50": metrics["per_class_ap50"],
            "duration_s": round(time.perf_counter() - started, 1),
        }

    return _cached(workdir, f"full-{name}", key, make)


def _recipe(settings: Settings) -> list[str]:
    """What a reference model's training depends on besides its data and epochs."""
    return [
        settings.model_yaml,
        settings.device,
        str(settings.train_image_size),
        str(settings.train_batch),
    ]


def _seed_unit(
    config: BenchConfig, settings: Settings, workdir: Path, name: str, seed: int, base: str
) -> SeedResult:
    return SeedRun(config, settings, workdir, name, seed, Path(base)).run()


def run_benchmark(
    config: BenchConfig,
    settings: Settings,
    out_dir: Path,
    workdir: Path | None = None,
    mode: str = "custom",
) -> dict[str, Any]:
    """Every scenario, seed, arm and recipe, then results.json, summary.json, report, plots."""
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="label-efficiency-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = bench_settings(settings, config, workdir)
    try:
        base = train_base(config, settings, workdir)
        pools = {  # generated once, before the processes share the folder
            name: summary(
                generate(workdir / "data" / name, scenario_data(name, config.n_pool, config.n_test))
            )
            for name in config.scenarios
        }
        references: dict[str, dict[str, Any]] = {}
        rows: list[Any] = []
        full_pool: dict[str, Any] = {}
        coldstart: dict[str, Any] = {}
        head = {
            "mode": mode,
            "config": asdict(config),
            "base_model": base,
            "pools": pools,
            "settings": {
                "model_yaml": settings.model_yaml,
                "score_threshold": settings.score_threshold,
                "device": settings.device,
                "torch_threads": settings.torch_threads,
            },
        }
        with ProcessPoolExecutor(
            config.jobs,
            mp_context=get_context("spawn"),
            initializer=configure_logging,
            initargs=(logging.getLevelName(logging.getLogger().level),),
        ) as pool:
            futures: dict[Future[Any], tuple[str, int | None]] = {}
            for name in config.scenarios:
                futures[
                    pool.submit(full_reference, config, settings, workdir, name, base["weights"])
                ] = (name, None)
            for seed in config.seeds:  # seed-major: a run cut short covers every scenario
                for name in config.scenarios:
                    futures[
                        pool.submit(
                            _seed_unit, config, settings, workdir, name, seed, base["weights"]
                        )
                    ] = (name, seed)
            for future in as_completed(futures):
                name, seed = futures[future]
                if seed is None:
                    references[name] = future.result()
                    logger.info("%s full-data mAP50 %.3f", name, references[name]["map50"])
                else:
                    unit: SeedResult = future.result()
                    rows += unit.rows
                    full_pool.setdefault(name, {})[str(seed)] = unit.full_pool
                    coldstart.setdefault(name, {})[str(seed)] = unit.coldstart
                    logger.info(
                        "%s seed %s done after %.0fs", name, seed, time.perf_counter() - started
                    )
                _write(
                    out_dir / "partial.json",
                    {
                        **head,
                        "references": references,
                        "rows": [asdict(r) for r in rows],
                        "full_pool": full_pool,
                        "coldstart": coldstart,
                        "complete": False,
                        "wall_s": round(time.perf_counter() - started, 1),
                    },
                )
        result = {
            **head,
            "references": references,
            "rows": [asdict(r) for r in rows],
            "full_pool": full_pool,
            "coldstart": coldstart,
            "complete": True,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        result.update(summarise(result))
        write_outputs(result, out_dir)
        (out_dir / "partial.json").unlink(missing_ok=True)
        return result
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


def _write(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, default=str) + "\n", encoding="utf-8")
