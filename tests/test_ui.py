"""The web page (`hygie-w2l ui`) driven in a real headless Chromium: upload the synthetic
person, train (the lips path), render new speech, check the page plays a video as long as
the speech; a text file named .mp4 shows the error; a reload during a job shows it again
and a second browser sees the same job list. Skipped, with the reason, where Gradio,
Selenium, Chromium or its driver are not installed (`.ci/run` installs them).

HYGIE_UI_SCREENSHOTS=FOLDER keeps screenshots of the three tabs (the README's)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hygie_w2l.media import probe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
MISSING = [what for what, ok in (("gradio", importlib.util.find_spec("gradio")),
                                 ("selenium", importlib.util.find_spec("selenium")),
                                 ("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not ok]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} "
                                "(pip install '.[ui,ui-test]'; apt-get install chromium "
                                "chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("ui-home")
    port = _free_port()
    log = (home.parent / "ui-server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "hygie_w2l.cli", "ui", "--home", str(home),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, (home.parent / "ui-server.log").read_text()
            time.sleep(0.5)
    try:
        yield url, home
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1800", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = _browser()
    WATCHED[:] = [driver]
    try:
        yield driver
    finally:
        WATCHED.clear()
        driver.quit()


WATCHED: list[Any] = []  # the browser a failed wait photographs (HYGIE_UI_SCREENSHOTS)


def _wait(what: Callable[[], Any], seconds: float, why: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if got := what():
                return got
        except Exception:  # the page is still drawing: look again
            pass
        time.sleep(0.5)
    if WATCHED:
        _shot(WATCHED[0], "failed")
    raise AssertionError(f"waited {seconds:.0f} s for {why}")


def _by_id(driver: Any, elem_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id)


def _upload(driver: Any, elem_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    box = _by_id(driver, elem_id)
    box.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
    _wait(lambda: path.stem in box.text, 60, f"the upload of {path.name}")


def _type(driver: Any, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = _by_id(driver, elem_id).find_element(By.CSS_SELECTOR, "input, textarea")
    field.clear()
    field.send_keys(text)


def _tab(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]"):
        if button.text.strip() == name:
            button.click()
            return
    raise AssertionError(f"no tab {name}")


def _choose_person(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def chosen() -> bool:
        field = _by_id(driver, "render-person").find_element(By.CSS_SELECTOR, "input")
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(name)
        field.send_keys(Keys.ENTER)
        time.sleep(0.3)
        return bool(field.get_attribute("value") == name)

    _wait(chosen, 30, f"{name} among the people")


def _click(driver: Any, elem_id: str) -> None:
    button = _by_id(driver, elem_id)
    driver.execute_script("arguments[0].scrollIntoView()", button)
    button.click()


def _toast(driver: Any, text: str) -> str | None:
    """The error message the page shows (a toast) that contains ``text``."""
    from selenium.webdriver.common.by import By

    return next((t.text for t in driver.find_elements(By.CSS_SELECTOR, ".toast-body")
                 if text in t.text), None)


def _jobs(driver: Any) -> str:
    return str(_by_id(driver, "jobs").text)


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("HYGIE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"ui-{name}.png"))


def test_the_journey_in_a_real_browser(server: tuple[str, Path], browser: Any,
                                       synth_clip: tuple[Path, dict], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, home = server
    clip, _ = synth_clip
    browser.get(url)
    _wait(lambda: _by_id(browser, "train"), 60, "the page")
    assert "Consent" in _by_id(browser, "consent-text").text  # before the first training

    # Person: upload, consent, train (probe -> prepare -> index -> lips -> eval)
    _type(browser, "person-name", "synthetic")
    _upload(browser, "person-video", clip)
    _click(browser, "train")
    _wait(lambda: _toast(browser, "consent box"), 30, "the consent refusal")
    _by_id(browser, "consent").find_element(By.CSS_SELECTOR, "input").click()
    _click(browser, "train")
    _wait(lambda: "person synthetic" in _jobs(browser), 30, "the job in the list")
    # a reload during the job: the job goes on and its progress comes back
    _wait(lambda: "running" in _jobs(browser), 60, "the job to start")
    browser.refresh()
    _wait(lambda: "person synthetic" in _jobs(browser), 60, "the job after a reload")
    other = _browser()  # a second browser sees the same job list
    try:
        other.get(url)
        _wait(lambda: "person synthetic" in _jobs(other), 60, "the job in a second browser")
    finally:
        other.quit()
    _wait(lambda: "person synthetic: done" in _jobs(browser), 600, "the training to finish: "
          + _jobs(browser))
    _wait(lambda: "opening" in _by_id(browser, "report").text.lower(), 30, "the eval report")
    _shot(browser, "person")

    # Render: the person, a template and speech -> a playable video as long as the speech
    speech = tmp_path / "speech.wav"
    subprocess.run([sys.executable, "-m", "hygie_w2l.cli", "synth", "--out",
                    str(tmp_path / "other.mp4"), "--seconds", "3"], check=True,
                   capture_output=True)
    from hygie_w2l.media import run_ffmpeg

    run_ffmpeg(["-v", "error", "-i", str(tmp_path / "other.mp4"), "-vn", "-y", str(speech)],
               "cut the audio")
    _tab(browser, "Render")
    _choose_person(browser, "synthetic")
    _upload(browser, "render-template", clip)
    _upload(browser, "render-speech", speech)
    _click(browser, "render-go")
    _wait(lambda: re.search(r"render synthetic \w+: done", _jobs(browser)), 300, "the render: "
          + _jobs(browser))
    video = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#render-result video"), 60,
                  "the result video")
    duration = _wait(lambda: browser.execute_script(
        "const v = arguments[0]; return v.readyState >= 1 ? v.duration : 0;", video), 60,
        "the video's metadata")
    expected = probe(speech).duration_s
    assert abs(duration - expected) < 0.2, (duration, expected)
    _shot(browser, "render")

    # A text file named .mp4: the page says why, no traceback
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    browser.refresh()  # empty fields
    _wait(lambda: _by_id(browser, "train"), 60, "the page")
    _tab(browser, "Render")
    _choose_person(browser, "synthetic")
    _upload(browser, "render-template", fake)
    _upload(browser, "render-speech", speech)
    _click(browser, "render-go")
    message = _wait(lambda: _toast(browser, "notes.mp4"), 30, "the error message")
    assert "Traceback" not in message and "notes.mp4" in message

    # Library: the person and the render, with their numbers
    _tab(browser, "Library")
    table = _wait(lambda: _by_id(browser, "library-table").text, 30, "the library table")
    assert "synthetic" in table and "ready" in table
    _shot(browser, "library")
    assert (home / "people" / "synthetic" / "lips" / "best.pt").is_file()
