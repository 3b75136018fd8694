"""The page's jobs: each is a list of ``hygie-w2l`` commands run one after the other, each
in a process of its own (the CLI itself: no second implementation), one job at a time per
workspace, the others queued. A job's state lives in a JSON file of the workspace, so a
reloaded page, a second browser or a restarted server all see the same list.

Progress is the last progress-bar line the running command printed (tqdm: stage,
frames/s or steps/s, time left); Stop sends SIGTERM, which every command handles like
Ctrl-C (temporary files removed; prepare and training keep what they did and resume when
the job is run again). A failed command's last stderr line is the message: the CLI writes
exactly one line for every error a user can cause.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from hygie_w2l.atomic import atomic_path

JobState = Literal["queued", "running", "done", "failed", "stopped"]
POLL_S = 0.5  # how often the scheduler looks for a queued job and the runner for output
PROGRESS = re.compile(r"(\d+%\|.*|\d+/\d+ \[.*)")  # a tqdm line


@dataclasses.dataclass
class Step:
    name: str  # what the page shows ("prepare", "render" ...)
    argv: list[str]  # the hygie-w2l arguments


@dataclasses.dataclass
class Job:
    id: str
    kind: str  # "person" or "render"
    title: str
    steps: list[Step]
    outputs: dict[str, str]  # what the page shows when done: name -> path
    state: JobState = "queued"
    step: int = 0  # the step running (or that stopped the job)
    progress: str = ""
    message: str = ""  # the error line, or what the job did
    created: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None

    def summary(self) -> str:
        """One line for the job list."""
        where = f"{self.steps[self.step].name} ({self.step + 1}/{len(self.steps)})" \
            if self.steps and self.state in ("running", "failed", "stopped") else ""
        took = f", {self.ended - self.started:.0f} s" if self.ended and self.started else ""
        parts = [f"{self.title}: {self.state}", where, self.progress if self.state == "running"
                 else "", self.message]
        return " - ".join(p for p in parts if p) + took

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(**{**data, "steps": [Step(**s) for s in data["steps"]]})


class JobStore:
    """The workspace's jobs on disk (``jobs/ID.json``) and the one scheduler that runs them."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.folder = home / "jobs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_asked: set[str] = set()
        for job in self.jobs():  # a server that died mid-job: say so, do not pretend
            if job.state == "running":
                job.state, job.message = "stopped", "the page's server stopped during it"
                self.save(job)

    def submit(self, kind: str, title: str, steps: list[Step], outputs: dict[str, str]) -> Job:
        job = Job(uuid.uuid4().hex[:10], kind, title, steps, outputs)
        self.save(job)
        return job

    def save(self, job: Job) -> None:
        with self._lock, atomic_path(self.folder / f"{job.id}.json") as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(job), indent=1))

    def get(self, job_id: str) -> Job | None:
        try:
            return Job.from_json(json.loads((self.folder / f"{job_id}.json").read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        out = [j for p in self.folder.glob("*.json") if (j := self.get(p.stem)) is not None]
        return sorted(out, key=lambda j: j.created, reverse=True)

    def stop(self, job_id: str) -> None:
        """Stop a running job (SIGTERM: the command cleans up) or drop a queued one."""
        job = self.get(job_id)
        if job is None or job.state not in ("queued", "running"):
            return
        self._stop_asked.add(job_id)
        if job.state == "queued":
            job.state, job.message = "stopped", "removed from the queue"
            self.save(job)
        elif self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)

    def serve(self) -> threading.Thread:
        """Start the scheduler: queued jobs run one at a time, oldest first."""
        thread = threading.Thread(target=self._loop, name="hygie-ui-jobs", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        while True:
            queued = [j for j in self.jobs() if j.state == "queued"]
            if queued:
                self._run(min(queued, key=lambda j: j.created))
            else:
                time.sleep(POLL_S)

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", time.time()
        self.save(job)
        for i, step in enumerate(job.steps):
            job.step, job.progress = i, ""
            self.save(job)
            code, last = self._command(job, step)
            if job.id in self._stop_asked:
                job.state, job.message = "stopped", ("stopped: run it again to resume"
                                                     if job.kind == "person" else "stopped")
                break
            if code != 0:
                job.state, job.message = "failed", last or f"{step.name} exited with {code}"
                break
        else:
            job.state, job.message = "done", ""
        job.progress, job.ended = "", time.time()
        self.save(job)

    def _command(self, job: Job, step: Step) -> tuple[int, str]:
        """Run one command; keep its progress line in the job. (exit code, last stderr line)

        Its stderr is a pseudo-terminal, as in a shell: the progress bars draw only there."""
        log = self.folder / f"{job.id}.log"
        master, slave = pty.openpty()
        with log.open("ab") as out:
            out.write(f"$ hygie-w2l {' '.join(step.argv)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen([sys.executable, "-m", "hygie_w2l.cli", *step.argv],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=slave,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1",
                                               "COLUMNS": "100"})
            os.close(slave)
            lines: list[str] = []
            pending = b""
            while chunk := _read(master):
                out.write(chunk)
                pending += chunk
                *done, pending = re.split(rb"[\r\n]", pending)
                lines += [d.decode(errors="replace").strip() for d in done if d.strip()]
                progress = [ln for ln in lines[-5:] if PROGRESS.search(ln)]
                if progress and progress[-1] != job.progress:
                    job.progress = progress[-1]
                    self.save(job)
            os.close(master)
            code = self._proc.wait()
            self._proc = None
        if pending.strip():
            lines.append(pending.decode(errors="replace").strip())
        errors = [ln for ln in lines if not PROGRESS.search(ln)]
        return code, errors[-1] if errors else ""


def _read(fd: int) -> bytes:
    """The next output of a pseudo-terminal; b"" once the command has closed it."""
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other side is closed
        return b""
