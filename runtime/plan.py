"""Run plans: the stage graph written to a file, so stages can run on several hosts.

``dfstream run ... --plan-out plan.json`` writes every stage replica's spec with
its endpoints (tcp://host:port) instead of running.  An operator edits the
addresses if stages move to other hosts, starts each moved stage there with
``dfstream stage plan.json 'detect[0]'``, and starts the rest, and the
supervisor, with ``dfstream run --plan plan.json --external 'detect[0]'``.

Hops between hosts are encrypted and authenticated with CurveZMQ: ``dfstream keys DIR``
makes the keys, every host gets a copy of DIR, and the plan names it (``"curve_keys"``,
relative to the plan's folder or absolute). A plan with an endpoint off loopback and no
keys is refused.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.config import STAGE_CONFIGS, STAGE_NAMES, ReconnectConfig, RunConfig, StreamInfo, VerdictRule
from pipeline.transport import CurveKeys, TransportError, crosses_hosts
from runtime.runner import StageSpec

PLAN_VERSION = 1


class PlanError(ValueError):
    pass


@dataclass
class RunPlan:
    control: str
    report: str
    specs: list[StageSpec]
    curve_keys: str = ""  # folder of `dfstream keys`; needed once any endpoint leaves loopback

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
    if isinstance(values.get("verdict"), dict):
        values["verdict"] = VerdictRule(**values["verdict"])
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
        "curve_keys": plan.curve_keys or None,
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
        d["then"] = [(name, _stage_config(name, c)) for name, c in d.get("then", [])]
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
    plan = RunPlan(document["control"], document["report"], specs)
    _apply_keys(plan, document.get("curve_keys"), Path(path).parent)
    return config, plan


def _endpoints(plan: RunPlan) -> list[str]:
    urls = [plan.control, plan.report]
    for spec in plan.specs:
        urls += [u for u in (spec.inbox, spec.credit_inbox, spec.finished_inbox) if u]
        urls += spec.outbox + spec.bypass + list(spec.credit_outboxes.values()) + list(spec.finished_outboxes.values())
    return urls


def _apply_keys(plan: RunPlan, curve_keys: str | None, folder: Path) -> None:
    """Give every stage the plan's CurveZMQ keys (checked readable here), or refuse a plan that
    leaves loopback without them."""
    if curve_keys:
        keys_dir = Path(curve_keys) if Path(curve_keys).is_absolute() else folder / curve_keys
        try:
            CurveKeys.load(keys_dir)
        except TransportError as exc:
            raise PlanError(str(exc)) from None
        plan.curve_keys = str(keys_dir)
        for spec in plan.specs:
            spec.curve_keys = plan.curve_keys
        return
    remote = next((url for url in _endpoints(plan) if crosses_hosts(url)), None)
    if remote is not None:
        raise PlanError(f"the plan's endpoint {remote} reaches other hosts but the plan names no curve_keys: "
                        "make them with `dfstream keys DIR` and set \"curve_keys\": \"DIR\" in the plan")
