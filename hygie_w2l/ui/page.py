"""``hygie-w2l ui``: a local web page (Gradio) for the whole journey, three tabs.

- **Person**: a training video -> probe (contact sheet) -> prepare -> index -> the lips
  model (the path that works on a CPU) -> eval report; live progress, Stop.
- **Render**: a person, a template (video or photo), speech (a file or the microphone) ->
  the result beside the template, playable, with a download link.
- **Library**: the people and renders on disk, their eval numbers and sizes; delete.

Everything runs through jobs.JobStore: the CLI's own commands, one job at a time, the page
only polls (a reload or a second browser sees the same jobs). The workspace (``--home``,
default ./hygie-ui) holds ``people/NAME/`` (video, dataset, lips run, library, report),
``renders/ID/`` and ``jobs/``. Nothing is fetched from the internet (no web fonts, no
telemetry); the page binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from hygie_w2l.errors import HygieError  # noqa: E402
from hygie_w2l.media import probe  # noqa: E402
from hygie_w2l.template import IMAGE_SUFFIXES  # noqa: E402
from hygie_w2l.ui.jobs import Job, JobStore, Step  # noqa: E402

MAX_UPLOAD = "2gb"  # refused above this, by the upload itself (README: the web page)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
CONSENT = ("**Consent.** Only train on and render a person who has agreed to be "
           "re-synthesised, and never to deceive. Every video made here is tagged as having "
           "a synthetic mouth. The official Wav2Lip weights, when used, are for non-commercial "
           "use only.")
THEME = gr.themes.Base(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts


class Workspace:
    """The page's folder: people, renders and the job store."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.people = self.home / "people"
        self.renders = self.home / "renders"
        for folder in (self.people, self.renders):
            folder.mkdir(parents=True, exist_ok=True)
        self.jobs = JobStore(self.home)

    def ready_people(self) -> list[str]:
        """People with a lips run and a library: the ones that can render."""
        return sorted(p.name for p in self.people.iterdir()
                      if (p / "lips" / "best.pt").is_file()
                      and (p / "library" / "meta.json").is_file())

    def person_job(self, name: str, video: str | None, consent: bool) -> str:
        if not consent:
            raise gr.Error("Tick the consent box first: the person must have agreed.")
        name = _check_name(name)
        if not video:
            raise gr.Error("Upload the person's training video first.")
        _check_media(video, need_video=True)
        folder = self.people / name
        folder.mkdir(exist_ok=True)
        copy = folder / f"video{Path(video).suffix.lower() or '.mp4'}"
        shutil.copyfile(video, copy)
        data, lips, library = (str(folder / f) for f in ("dataset", "lips", "library"))
        steps = [Step("probe", ["probe", str(copy), "--out", str(folder / "probe.png")]),
                 Step("prepare", ["prepare", str(copy), "--out", data]),
                 Step("index", ["index", data, "--out", library]),
                 Step("train", ["train", data, "--arch", "lips", "--out", lips]),
                 Step("eval", ["eval", data, "--checkpoint", lips, "--index", library,
                               "--out", str(folder / "report")])]
        job = self.jobs.submit("person", f"person {name}", steps, {"person": name})
        return f"Queued: {job.title} (prepare, index, lips model, eval)."

    def render_job(self, name: str | None, template: str | None, speech: str | None,
                   recorded: str | None, blend: str, loop: str) -> str:
        if not name or name not in self.ready_people():
            raise gr.Error("Choose a person whose training is done (Person tab).")
        if not template:
            raise gr.Error("Upload a template video or photo.")
        voice = speech or recorded
        if not voice:
            raise gr.Error("Upload the speech (any audio or video file) or record it.")
        if Path(template).suffix.lower() not in IMAGE_SUFFIXES:
            _check_media(template, need_video=True)
        _check_media(voice, need_video=False)
        job_id = uuid.uuid4().hex[:10]
        folder = self.renders / job_id
        folder.mkdir()
        face = folder / f"template{Path(template).suffix.lower()}"
        audio = folder / f"speech{Path(voice).suffix.lower() or '.wav'}"
        shutil.copyfile(template, face)
        shutil.copyfile(voice, audio)
        person = self.people / name
        argv = ["render", "--face", str(face), "--audio", str(audio), "--checkpoint",
                str(person / "lips"), "--index", str(person / "library"), "--blend", blend,
                "--loop", loop, "--out", str(folder / "out.mp4")]
        job = self.jobs.submit("render", f"render {name} {job_id}", [Step("render", argv)],
                               {"video": str(folder / "out.mp4"), "template": str(face)})
        return f"Queued: {job.title}."

    def rows(self) -> list[list[Any]]:
        """The Library tab's table: people and renders, with eval numbers and sizes."""
        out: list[list[Any]] = []
        ready = set(self.ready_people())
        for p in sorted(self.people.iterdir()):
            report = p / "report" / "metrics.json"
            r = lmd = ""
            if report.is_file():
                gen = json.loads(report.read_text())["variants"].get("generated", {})
                r, lmd = f"{gen.get('opening_r', float('nan')):.2f}", f"{gen.get('lmd', 0):.4f}"
            out.append(["person", p.name, "ready" if p.name in ready else "not ready",
                        r, lmd, _size_mb(p)])
        for d in sorted(self.renders.iterdir(), key=lambda d: d.stat().st_mtime, reverse=True):
            out.append(["render", d.name, "done" if (d / "out.mp4").is_file() else "-", "", "",
                        _size_mb(d)])
        return out

    def delete(self, what: str | None, confirm: str) -> str:
        if not what:
            raise gr.Error("Choose what to delete.")
        kind, _, name = what.partition(" ")
        if confirm.strip() != name:
            raise gr.Error(f"Type {name} in the confirmation box to delete it.")
        folder = (self.people if kind == "person" else self.renders) / name
        if not folder.is_dir() or folder.parent not in (self.people, self.renders):
            raise gr.Error(f"{what} is not on disk.")
        if any(j.state in ("queued", "running") and name in j.title for j in self.jobs.jobs()):
            raise gr.Error(f"{what} has a job queued or running: stop it first.")
        shutil.rmtree(folder)
        return f"Deleted {what}."


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise gr.Error("A person's name: letters, digits, '-' or '_', up to 40 characters.")
    return name


def _check_media(path: str, need_video: bool) -> None:
    """An upload that is not media is refused here, with ffmpeg's reason."""
    try:
        info = probe(path, count_frames=False)
    except HygieError as e:
        raise gr.Error(f"{Path(path).name}: {_reason(e)}") from None
    if need_video and not info.has_video:
        raise gr.Error(f"{Path(path).name} has no video: give a video of the face.")
    if not need_video and not info.has_audio:
        raise gr.Error(f"{Path(path).name} has no audio stream: give the speech.")


def _reason(error: HygieError) -> str:
    text = str(error).splitlines()[0]
    return text.split(": ", 1)[-1] if ": " in text else text


def _size_mb(folder: Path) -> str:
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return f"{size / 2**20:.1f} MB"


def _jobs_markdown(jobs: list[Job]) -> str:
    if not jobs:
        return "No jobs yet."
    lines = [f"- {j.summary()}" for j in jobs[:12]]
    return "\n".join(lines)


def build(space: Workspace) -> gr.Blocks:
    with gr.Blocks(title="hygie-w2l", analytics_enabled=False) as page:
        gr.Markdown("# hygie-w2l\n" + CONSENT, elem_id="consent-text")
        with gr.Tabs():
            with gr.Tab("Person", id="person"):
                with gr.Row():
                    name = gr.Textbox(label="Name", placeholder="e.g. alice", elem_id="person-name")
                    video = gr.File(label="Training video (a minute of speech, face visible)",
                                    type="filepath", elem_id="person-video")
                consent = gr.Checkbox(label="This person agreed to be re-synthesised",
                                      elem_id="consent")
                train = gr.Button("Train (prepare, mouth library, lips model, eval)",
                                  variant="primary", elem_id="train")
                person_status = gr.Markdown(elem_id="person-status")
                with gr.Row():
                    probe_sheet = gr.Image(label="Contact sheet (probe)", interactive=False)
                    plots = gr.Gallery(label="Eval report", columns=2)
                report = gr.Markdown(elem_id="report")
            with gr.Tab("Render", id="render"):
                with gr.Row():
                    who = gr.Dropdown(label="Person", choices=space.ready_people(),
                                      elem_id="render-person", allow_custom_value=False)
                    blend = gr.Radio(["poisson", "feather"], value="poisson", label="Blend")
                    loop = gr.Radio(["pingpong", "wrap"], value="pingpong",
                                    label="When the speech outlasts the template")
                with gr.Row():
                    template = gr.File(label="Template (video or photo)", type="filepath",
                                       elem_id="render-template")
                    speech = gr.File(label="Speech (any audio or video file)", type="filepath",
                                     elem_id="render-speech")
                    recorded = gr.Audio(label="... or record it", sources=["microphone"],
                                        type="filepath")
                go = gr.Button("Render", variant="primary", elem_id="render-go")
                render_status = gr.Markdown(elem_id="render-status")
                with gr.Row():
                    shown_template = gr.Video(label="Template", interactive=False,
                                              elem_id="render-template-view")
                    result = gr.Video(label="Result (synthetic mouth)", interactive=False,
                                      elem_id="render-result")
                download = gr.File(label="Download", interactive=False, elem_id="download")
            with gr.Tab("Library", id="library"):
                table = gr.Dataframe(headers=["kind", "name", "state", "held-out r", "LMD",
                                              "size"], value=space.rows(), interactive=False,
                                     elem_id="library-table")
                with gr.Row():
                    target = gr.Dropdown(label="Delete", choices=[], elem_id="delete-what")
                    confirm = gr.Textbox(label="Type its name to confirm", elem_id="delete-confirm")
                    delete = gr.Button("Delete", variant="stop", elem_id="delete")
                library_status = gr.Markdown(elem_id="library-status")
        gr.Markdown("### Jobs (one at a time; the others wait)")
        jobs_view = gr.Markdown(_jobs_markdown(space.jobs.jobs()), elem_id="jobs")
        stop = gr.Button("Stop the running job", elem_id="stop")
        shown = gr.State({"render": "", "person": ""})
        timer = gr.Timer(1.0)

        train.click(space.person_job, [name, video, consent], person_status)
        go.click(space.render_job, [who, template, speech, recorded, blend, loop], render_status)
        delete.click(space.delete, [target, confirm], library_status)
        stop.click(lambda: _stop_running(space), None, None)

        def tick(seen: dict[str, str]) -> tuple[Any, ...]:
            jobs = space.jobs.jobs()
            updates = _results(space, jobs, seen)
            rows = space.rows()  # one walk of the workspace per tick
            names = [f"{row[0]} {row[1]}" for row in rows]
            ready = [row[1] for row in rows if row[0] == "person" and row[2] == "ready"]
            return (_jobs_markdown(jobs), gr.update(choices=ready), gr.update(value=rows),
                    gr.update(choices=names), *updates, seen)

        outputs = [jobs_view, who, table, target, result, shown_template, download,
                   probe_sheet, plots, report, shown]
        page.load(tick, shown, outputs)  # a (re)loaded page shows everything at once
        timer.tick(tick, shown, outputs)
    return page


def _stop_running(space: Workspace) -> None:
    for job in space.jobs.jobs():
        if job.state == "running":
            space.jobs.stop(job.id)


def _results(space: Workspace, jobs: list[Job], seen: dict[str, str]) -> list[Any]:
    """The latest finished render and person, shown once each (not re-sent every tick)."""
    keep = gr.update()
    out: list[Any] = [keep] * 6
    done = [j for j in jobs if j.state == "done"]
    render = next((j for j in done if j.kind == "render"), None)
    if render is not None and seen.get("render") != render.id:
        seen["render"] = render.id
        out[0:3] = [render.outputs["video"], _playable(render.outputs["template"]),
                    render.outputs["video"]]
    person = next((j for j in jobs if j.kind == "person" and j.state in ("done", "failed")),
                  None)
    if person is not None and seen.get("person") != f"{person.id}:{person.state}":
        seen["person"] = f"{person.id}:{person.state}"
        folder = space.people / person.outputs["person"]
        sheet = folder / "probe.png"
        pictures = [str(p) for p in sorted((folder / "report").glob("*.png"))]
        text = (folder / "report" / "report.md")
        report = text.read_text() if text.is_file() else ""  # its pictures: the gallery
        out[3:6] = [str(sheet) if sheet.is_file() else None, pictures,
                    "\n".join(ln for ln in report.splitlines() if not ln.startswith("!["))]
    return out


def _playable(path: str) -> str | None:
    """The template as the page can play it (a photo is shown by the result alone)."""
    return None if Path(path).suffix.lower() in IMAGE_SUFFIXES else path


def serve(home: Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    space = Workspace(home)
    space.jobs.serve()
    page = build(space)
    page.queue(default_concurrency_limit=4)
    print(f"hygie-w2l ui: http://{host}:{port} (workspace {space.home}); Ctrl-C stops it",
          flush=True)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                allowed_paths=[str(space.home)], max_file_size=MAX_UPLOAD, theme=THEME,
                footer_links=[], show_error=False, quiet=True)
