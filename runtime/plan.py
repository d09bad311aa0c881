"""Run plans: the stage graph written to a file, so stages can run on several hosts.

``dfstream run ... --plan-out plan.json`` writes every stage replica's spec with
its endpoints (tcp://host:port) instead of running.  An operator edits the
addresses if stages move to other hosts, starts each moved stage there with
``dfstream stage plan.json 'detect[0]'``, and starts the rest, and the
supervisor, with ``dfstream run --plan plan.json --external 'detect[0]'``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.config import STAGE_CONFIGS, STAGE_NAMES, ReconnectConfig, RunConfig, StreamInfo
from runtime.runner import StageSpec

PLAN_VERSION = 1


class PlanError(ValueError):
    pass


@dataclass
class RunPlan:
    control: str
    report: str
    specs: list[StageSpec]

    def spec(self, label: str) -> StageSpec:
        for spec in self.specs:
            if spec.label == label:
                return spec
        raise PlanError(f"no stage {label!r} in the plan (it has {', '.join(s.label for s in self.specs)})")


def _stream(d: dict) -> StreamInfo:
    return StreamInfo(**{**d, "time_base": tuple(d["time_base"])})


def _stage_config(stage: str, d: dict):
    cls = STAGE_CONFIGS[stage]
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in d.items() if k in known}
    if "stream" in values:
        values["stream"] = _stream(values["stream"])
    if "streams" in values:
        values["streams"] = [_stream(s) for s in values["streams"]]
    if isinstance(values.get("reconnect"), dict):
        values["reconnect"] = ReconnectConfig(**values["reconnect"])
    for key in ("crop_size",):
        if key in values:
            values[key] = tuple(values[key])
    if "swap_source" in values:
        values["swap_source"] = tuple(values["swap_source"])
    return cls(**values)


def save_plan(path: str | Path, config: RunConfig, plan: RunPlan) -> None:
    document = {
        "version": PLAN_VERSION,
        "control": plan.control,
        "report": plan.report,
        "run": asdict(config),
        "stages": [{**asdict(spec), "parent_pid": 0} for spec in plan.specs],
    }
    Path(path).write_text(json.dumps(document, indent=2))


def load_plan(path: str | Path) -> tuple[RunConfig, RunPlan]:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"cannot read plan {path}: {exc}") from None
    if document.get("version") != PLAN_VERSION:
        raise PlanError(f"{path} is not a dfstream plan (version {PLAN_VERSION})")
    specs = []
    for d in document["stages"]:
        d = dict(d)
        d["config"] = _stage_config(d["stage"], d["config"])
        d["expected_eos"] = {int(k): v for k, v in d["expected_eos"].items()}
        for by_stream in ("credit_outboxes", "finished_outboxes"):  # JSON keys are strings; these are stream ids
            d[by_stream] = {int(k): v for k, v in d.get(by_stream, {}).items()}
        specs.append(StageSpec(**d))
    run = document["run"]
    per_stage = {name: _stage_config(name, run[name]) for name in STAGE_NAMES if name in run}  # sources: per stream
    if isinstance(run.get("reconnect"), dict):
        run = {**run, "reconnect": ReconnectConfig(**run["reconnect"])}
    config = RunConfig(
        streams=[_stream(s) for s in run["streams"]],
        **per_stage,
        **{k: v for k, v in run.items() if k != "streams" and k not in per_stage},
    )
    return config, RunPlan(document["control"], document["report"], specs)
