"""Plans: the stage graph in a file, and a stage started by hand as on another host."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.plan import PlanError, load_plan
from tests.conftest import REPO, needs_shared_data, run_dfstream, shared
from tests.video_helpers import video_facts

CLIP = "real/liveportrait_driving_videos/d0.mp4"


@needs_shared_data
def test_plan_out_writes_every_replica_with_tcp_endpoints_and_reads_back(tmp_path, tiny_detector):
    plan_file = tmp_path / "plan.json"
    result = run_dfstream("run", "-s", shared(CLIP), "-m", tiny_detector, "--replicas", "2",
                          "-o", tmp_path / "out.mp4", "--plan-out", plan_file)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out.mp4").exists()  # a plan is not a run
    config, plan = load_plan(plan_file)
    labels = [s.label for s in plan.specs]
    assert labels == ["source[0]", "detect[0]", "detect[1]", "batch[0]", "infer[0]", "infer[1]", "annotate+sink[0]"]
    assert all(s.inbox.startswith("tcp://") for s in plan.specs if s.inbox)
    assert config.streams[0].url == str(shared(CLIP))
    assert plan.spec("detect[1]").config.crop_size == (64, 64)
    # the verdict lines come back whole, the same for the stage that draws them and the one that reports them
    from pipeline.config import VerdictRule

    from pipeline.config import SinkConfig

    annotate_and_sink = plan.spec("annotate+sink[0]")  # one process, two stages
    (name, sink), = annotate_and_sink.then
    assert name == "sink" and isinstance(sink, SinkConfig) and sink.output_pattern.endswith("out.mp4")
    verdict = annotate_and_sink.config.verdict
    assert isinstance(verdict, VerdictRule) and verdict == sink.verdict == config.annotate.verdict


@needs_shared_data
def test_a_live_plan_keeps_the_stream_ids_of_its_reverse_channels(tmp_path, tiny_detector):
    """Credits (detect -> source) and finished frames (sink -> source) are keyed by stream id."""
    plan_file = tmp_path / "plan.json"
    result = run_dfstream("run", "-s", shared(CLIP), "--live", "-m", tiny_detector, "-o", tmp_path / "out.mp4",
                          "--plan-out", plan_file)
    assert result.returncode == 0, result.stderr
    _, plan = load_plan(plan_file)
    source = plan.spec("source[0]")
    assert source.finished_inbox.startswith("tcp://") and source.latency_budget_s == 1.0
    assert plan.spec("annotate+sink[0]").finished_outboxes == {0: source.finished_inbox}
    assert plan.spec("detect[0]").credit_outboxes == {0: source.credit_inbox}


@needs_shared_data
def test_a_stage_started_by_hand_joins_the_run_of_a_plan(tmp_path, tiny_detector):
    plan_file = tmp_path / "plan.json"
    out = tmp_path / "out.mp4"
    assert run_dfstream("run", "-s", shared(CLIP), "-m", tiny_detector, "-o", out, "--plan-out", plan_file).returncode == 0
    env = dict(os.environ)
    remote = subprocess.Popen([sys.executable, "-m", "dfstream", "stage", str(plan_file), "detect[0]"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_dfstream("run", "--plan", plan_file, "--external", "detect[0]", timeout=180)
        assert result.returncode == 0, result.stderr
        assert remote.wait(timeout=30) == 0
    finally:
        if remote.poll() is None:
            remote.kill()
    assert video_facts(out).frames == video_facts(shared(CLIP)).frames


@needs_shared_data
def test_an_unknown_external_stage_is_refused(tmp_path, tiny_detector):
    plan_file = tmp_path / "plan.json"
    assert run_dfstream("run", "-s", shared(CLIP), "-m", tiny_detector, "-o", tmp_path / "o.mp4",
                        "--plan-out", plan_file).returncode == 0
    result = run_dfstream("run", "--plan", plan_file, "--external", "detect[7]")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "detect[7]" in result.stderr


def _plan_leaving_loopback(tmp_path, tiny_detector):
    """A plan whose detect[0] was moved to another host (its address edited, as an operator would)."""
    import json

    plan_file = tmp_path / "plan.json"
    assert run_dfstream("run", "-s", shared(CLIP), "-m", tiny_detector, "-o", tmp_path / "o.mp4",
                        "--plan-out", plan_file).returncode == 0
    document = json.loads(plan_file.read_text())
    moved = next(s for s in document["stages"] if s["stage"] == "detect")["inbox"]
    remote = "tcp://192.0.2.20:" + moved.rsplit(":", 1)[1]
    plan_file.write_text(plan_file.read_text().replace(moved, remote))
    return plan_file, remote


@needs_shared_data
def test_a_plan_reaching_another_host_without_curve_keys_is_refused(tmp_path, tiny_detector):
    plan_file, remote = _plan_leaving_loopback(tmp_path, tiny_detector)
    for command in (("run", "--plan", plan_file, "--external", "detect[0]"), ("stage", plan_file, "detect[0]")):
        result = run_dfstream(*command)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert remote in result.stderr and "curve_keys" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@needs_shared_data
def test_a_plan_naming_curve_keys_gives_them_to_every_stage(tmp_path, tiny_detector):
    import json

    plan_file, _ = _plan_leaving_loopback(tmp_path, tiny_detector)
    assert run_dfstream("keys", tmp_path / "keys").returncode == 0
    document = json.loads(plan_file.read_text())
    document["curve_keys"] = "keys"  # relative to the plan's folder
    plan_file.write_text(json.dumps(document))
    _, plan = load_plan(plan_file)
    assert plan.curve_keys == str(tmp_path / "keys")
    assert {s.curve_keys for s in plan.specs} == {str(tmp_path / "keys")}
    document["curve_keys"] = "nowhere"
    plan_file.write_text(json.dumps(document))
    with pytest.raises(PlanError, match="dfstream keys"):
        load_plan(plan_file)
