"""The web page's job runner (no browser needed): the CLI's own commands, one job at a
time; a failing command's one-line message is the job's; Stop ends a running command the
way SIGTERM does (nothing half-written left); a queued job waits for the running one."""

from __future__ import annotations

import time
from pathlib import Path

from hygie_w2l.ui.jobs import Job, JobStore, Step


def _until(store: JobStore, job: Job, states: tuple[str, ...], seconds: float = 120) -> Job:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = store.get(job.id)
        if now is not None and now.state in states:
            return now
        time.sleep(0.2)
    raise AssertionError(f"{job.title} never reached {states}: {store.get(job.id)}")


def test_jobs_run_one_at_a_time_fail_with_the_cli_message_and_stop(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "home")
    store.serve()
    long = store.submit("render", "long synth", [Step("synth", [
        "synth", "--out", str(tmp_path / "long.mp4"), "--seconds", "600"])], {})
    bad = store.submit("person", "missing video", [Step("info", [
        "info", str(tmp_path / "missing.mp4")])], {})
    running = _until(store, long, ("running",))
    assert store.get(bad.id).state == "queued"  # one job at a time
    assert "synth (1/1)" in running.summary()
    time.sleep(2)
    store.stop(long.id)
    stopped = _until(store, long, ("stopped", "failed", "done"))
    assert stopped.state == "stopped", stopped
    assert not (tmp_path / "long.mp4").exists()  # written atomically: nothing half-done
    failed = _until(store, bad, ("failed", "done"))
    assert failed.state == "failed" and "missing.mp4" in failed.message
    assert "Traceback" not in failed.message
    # a restarted page sees the same jobs
    again = JobStore(tmp_path / "home")
    assert {j.id: j.state for j in again.jobs()} == {long.id: "stopped", bad.id: "failed"}
