"""The page's ONNX files (``multinet/web/browser.py``), and the page in a real browser:
``multinet serve`` driven through headless Chromium.

Digits are drawn on ``#pad`` with real pointer events (W3C actions through Selenium:
mouse, touch and pen), and what the page shows is checked against multinet itself:
``multinet predict --image --json`` for the picture the canvas holds, Python onnxruntime
for the in-browser inference, and, for the network trained in the page, Python
onnxruntime running the same step graph from the same state, the NumPy backend's own
float32 steps and the float64 reference, within ``multinet.parity``'s tolerance.

The browser tests need Selenium, and Chromium and chromedriver on the PATH (Debian's
``chromium`` and ``chromium-driver``); they skip, saying what is missing, without them.
The in-browser runs also need onnxruntime-web's files: ``$MULTINET_ONNXRUNTIME_WEB``, a
folder ``npm install onnxruntime-web@1.30.0`` made (node_modules/onnxruntime-web).
Screenshots go to a temporary folder; with ``$MULTINET_SCREENSHOT`` set, the last one
is also written there (docs/web.png).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import SAMPLE_MNIST, run_cli
from multinet import export, parity, pretrained
from multinet.data import load_dataset
from multinet.errors import MultinetError
from multinet.initializers import draw_params
from multinet.registry import get_backend
from multinet.web import browser as web_browser

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = ("Selenium is not installed (pip install selenium)" if webdriver is None
              else None if CHROMIUM and CHROMEDRIVER
              else f"{'chromedriver' if CHROMIUM else 'chromium'} is not on the PATH (apt "
                   "install chromium chromium-driver)")
RUNTIME = os.environ.get("MULTINET_ONNXRUNTIME_WEB")
needs_runtime = pytest.mark.skipif(
    not RUNTIME, reason="in-browser runs need onnxruntime-web: set "
                        "MULTINET_ONNXRUNTIME_WEB to node_modules/onnxruntime-web (npm install "
                        "onnxruntime-web@1.30.0)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1100,1900")
#: Full-batch steps trained in the page for the comparison: docs/parity.md's runs.
STEPS = 100
SIDE = 280  # the pad's pixels
STATIC = Path(web_browser.__file__).parent / "static"


# --- Without a browser: the files the page is given ---------------------------------------

def test_the_runtime_folder_is_found_in_it_or_its_dist_and_missing_files_are_named(tmp_path):
    dist = tmp_path / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in web_browser.RUNTIME_FILES:
        (dist / name).write_bytes(b"")
    found = web_browser.ort_folder(tmp_path / "onnxruntime-web")
    assert list(found) == [web_browser.ENTRY_SCRIPT, *web_browser.RUNTIME_FILES[1:]]
    assert found == web_browser.ort_folder(dist) == {n: dist / n for n in found}
    (dist / "ort-wasm-simd-threaded.wasm").unlink()
    with pytest.raises(MultinetError, match=r"^onnxruntime='.*': .*dist lacks "
                                            r"ort-wasm-simd-threaded\.wasm \(") as info:
        web_browser.ort_folder(tmp_path / "onnxruntime-web")
    assert "\n" not in str(info.value)
    with pytest.raises(MultinetError, match="no such folder .*npm install onnxruntime-web@"):
        web_browser.ort_folder(tmp_path / "nowhere")


def test_the_page_asks_nothing_of_the_internet():
    """No address outside the server: every script, style, picture and request of the
    page names a path of its own (onnxruntime-web comes from ``/api/info``)."""
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(?i)\b(?:https?:|wss?:)?//[a-z0-9]", text), path.name
    page = (STATIC / "index.html").read_text()
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == [
        "data:,", "/static/style.css", "/static/app.js"]


@pytest.fixture(scope="module")
def training_files():
    pytest.importorskip("onnxruntime")
    sample = load_dataset(data_dir=SAMPLE_MNIST, verify=False)
    return sample, web_browser.training_files(lambda: sample, count=500, test_count=100)


def test_the_training_files_start_the_notebook_network_on_the_first_images(training_files):
    sample, files = training_files
    setup = json.loads(files["setup.json"])
    assert setup["config"] == {"lr": 0.2, "iterations": 500, "log_every": 10, "seed": 0,
                               "count": 500, "test_count": 100, "sizes": [784, 10, 10],
                               "dtype": "float32"}
    # Where every backend starts: the seed-0 uniform draw, rounded once to float32.
    drawn = {f"params/{k}": v.astype(np.float32)
             for k, v in draw_params((784, 10, 10), seed=0).items()}
    assert list(setup["state"]) == [*drawn, "opt/t"]
    assert setup["state"]["opt/t"] == {"shape": [], "data": [0.0]}
    for name, value in drawn.items():
        assert setup["state"][name]["shape"] == list(value.shape)
        assert (np.asarray(setup["state"][name]["data"], np.float32) == value.ravel()).all()
    for key, images, labels in (("", sample.train_images[:500], sample.train_labels[:500]),
                                ("test_", sample.test_images[:100], sample.test_labels[:100])):
        assert base64.b64decode(setup[f"{key}images"]) == images.tobytes()
        assert setup[f"{key}labels"] == labels.tolist()
    step = export.open_model(files["step.onnx"])
    assert step.inputs["images"][0] == (500, 28, 28)
    model = export.open_model(files["model.onnx"])
    assert list(model.inputs) == ["images", "params/W1", "params/b1", "params/W2", "params/b2"]


def test_the_step_graph_trains_as_the_numpy_backend_does(training_files):
    """Python onnxruntime, 100 steps of the page's step graph: the NumPy backend's float32
    run and the float64 reference, within the parity tolerance (the same check the page's
    own run passes below, without a browser)."""
    sample, files = training_files
    losses, state = _onnxruntime_run(files["step.onnx"], json.loads(files["setup.json"]),
                                     STEPS)
    params = {k.removeprefix("params/"): v for k, v in state.items() if "params/" in k}
    problem = parity.mnist_problem(sample, samples=500, steps=STEPS)
    for own in (parity.run(get_backend("numpy"), "float32", problem),
                parity.reference(problem)):
        assert parity.relative_error(losses, own.losses) <= parity.tolerance("float32", STEPS)
        assert parity.max_relative_error(params, own.snapshots[STEPS]) <= parity.tolerance(
            "float32", STEPS)


# --- In a browser --------------------------------------------------------------------------

def _line(start, end, step=6.0):
    """Points from ``start`` to ``end`` every ``step`` pixels or so."""
    count = max(1, math.ceil(math.dist(start, end) / step))
    return [(start[0] + (end[0] - start[0]) * i / count,
             start[1] + (end[1] - start[1]) * i / count) for i in range(count + 1)]


def _ellipse(centre, rx, ry, points=48):
    return [(centre[0] + rx * math.sin(2 * math.pi * i / points),
             centre[1] - ry * math.cos(2 * math.pi * i / points)) for i in range(points + 1)]


#: Digits as strokes on the 280x280 pad, each drawn with another kind of pointer.
DIGITS = {1: ("touch", [_line((112, 78), (146, 48)) + _line((146, 48), (146, 232))]),
          0: ("pen", [_ellipse((140, 140), 58, 88)]),
          7: ("mouse", [_line((86, 58), (196, 58)) + _line((196, 58), (124, 236))])}


@contextlib.contextmanager
def _serving(folder: Path, *options):
    """The URL of ``multinet serve --port 0 OPTIONS`` (the pretrained weights), the
    committed MNIST sample as its training data; stopped with SIGTERM afterwards."""
    log = folder / "stderr.txt"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "multinet", "serve", "--port", "0", "--no-verify", *options],
            stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, "MULTINET_DATA": str(SAMPLE_MNIST)})
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline().decode() if ready else ""
        assert line.startswith("serving on http://127.0.0.1:"), (line, log.read_text())
        yield line.split()[-1]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The page served with every backend that runs here, and onnxruntime-web if given."""
    with _serving(tmp_path_factory.mktemp("serve"),
                  *(["--onnxruntime", RUNTIME] if RUNTIME else [])) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium, with a profile of its own."""
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    try:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(CHROMEDRIVER))
    except WebDriverException as exc:
        pytest.skip(f"Chromium did not start: {str(exc).splitlines()[0]}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def _open(driver, url):
    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "about").text.startswith("Serving"))


def _text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def _draw(driver, strokes, kind="mouse"):
    """Draw ``strokes`` (lists of pad points) with one kind of pointer, as a person
    would: down, moves, up for each."""
    pad = driver.find_element(By.ID, "pad")
    scale = pad.size["width"] / SIDE
    for points in strokes:
        actions = ActionBuilder(driver, mouse=PointerInput(kind, f"{kind}-pointer"),
                                duration=10)
        pointer = actions.pointer_action
        offset = [((x - SIDE / 2) * scale, (y - SIDE / 2) * scale) for x, y in points]
        pointer.move_to(pad, *map(round, offset[0])).pointer_down()
        for x, y in offset[1:]:
            pointer.move_to(pad, round(x), round(y))
        pointer.pointer_up()
        actions.perform()


def _answer(driver, answered_by, timeout=60):
    """``window.multinetAnswer`` once ``#prediction`` shows the answer of ``answered_by``."""
    WebDriverWait(driver, timeout).until(
        lambda d: _text(d, "error") or (_text(d, "prediction")
                                        and answered_by in _text(d, "answered-by")))
    assert not _text(driver, "error")
    answer = driver.execute_script("return window.multinetAnswer")
    assert _text(driver, "prediction") == str(answer["prediction"])
    return answer


def _pad_png(driver) -> bytes:
    url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def _shown_input(driver) -> np.ndarray:
    """The 28x28 ``#input28`` shows, from its pixels."""
    rgba = driver.execute_script(
        "return Array.from(document.getElementById('input28').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data)")
    return np.asarray(rgba, dtype=np.uint8).reshape(28, 28, 4)[..., 0]


def _get(url):
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def test_digits_drawn_with_mouse_touch_and_pen_are_read_right_and_as_predict_reads_them(
        browser, server, shots, tmp_path):
    _open(browser, server)
    info = json.loads(_get(server + "api/info"))
    pictures, answers = [], []
    for digit, (kind, strokes) in DIGITS.items():
        browser.find_element(By.ID, "clear").click()
        assert _text(browser, "prediction") == ""
        _draw(browser, strokes, kind)
        answer = _answer(browser, f"server: {info['backends'][0]}")
        browser.save_screenshot(str(shots / f"drawn-{digit}.png"))
        assert answer["prediction"] == digit, f"a {digit} drawn with {kind} read as {answer}"
        assert (_shown_input(browser) == np.asarray(answer["server"]["input"])).all()
        # Every backend the server runs is a row, and their largest difference is shown.
        rows = browser.find_elements(By.CSS_SELECTOR, "#backends tbody tr")
        assert [r.find_element(By.TAG_NAME, "th").text for r in rows] == info["backends"]
        assert float(_text(browser, "max-difference").split()[0]) == pytest.approx(
            answer["server"]["max_difference"], rel=0.05, abs=1e-12)
        pictures.append(tmp_path / f"drawn-{digit}.png")
        pictures[-1].write_bytes(_pad_png(browser))
        answers.append(answer)
    result = run_cli("predict", str(pretrained.path()), "--image", *map(str, pictures),
                     "--json", "--backend", info["backends"][0])
    assert result.returncode == 0, result.stderr
    # predict reads the three as one batch, the server each alone: the same arithmetic
    # in another blocking, so equal within float32's tolerance, not bit for bit.
    for answer, expected in zip(answers, json.loads(result.stdout)):
        assert answer["prediction"] == expected["prediction"]
        assert parity.relative_error(answer["probabilities"], expected["probabilities"]
                                     ) <= parity.tolerance("float32")


def test_without_onnxruntime_web_the_page_answers_through_the_server_and_says_why(
        browser, tmp_path):
    with _serving(tmp_path, "--backend", "numpy") as url:
        browser.get_log("browser")  # what earlier pages logged
        _open(browser, url)
        reason = json.loads(_get(url + "api/info"))["browser"]["reason"]
        assert "--onnxruntime" in reason
        option = browser.find_element(By.CSS_SELECTOR, "#engine option[value=browser]")
        assert option.get_attribute("disabled") and "unavailable" in option.text
        assert _text(browser, "engine-note") == f"In-browser answers are off: {reason}"
        assert not browser.find_element(By.ID, "train-start").is_enabled()
        assert _text(browser, "train-status") == f"Training in this page is off: {reason}"
        _draw(browser, DIGITS[7][1])
        assert _answer(browser, "server: numpy")["prediction"] == 7
        assert _text(browser, "max-difference") == "one row only"
        # Nothing was asked of a runtime that is not there: no failed request, no error.
        assert not [entry for entry in browser.get_log("browser")
                    if entry["level"] == "SEVERE"]


@needs_runtime
def test_the_browser_runs_the_served_network_as_the_server_does(browser, server, shots):
    browser.get_log("browser")  # what earlier pages logged
    _open(browser, server)
    Select(browser.find_element(By.ID, "engine")).select_by_value("browser")
    _draw(browser, DIGITS[7][1])
    answer = _answer(browser, "this browser: onnxruntime-web (WebAssembly)")
    browser.save_screenshot(str(shots / "browser-inference.png"))
    assert answer["engine"] == "browser" and answer["prediction"] == 7
    assert answer["prediction"] == answer["server"]["prediction"]
    error = parity.relative_error(answer["probabilities"], answer["server"]["probabilities"])
    assert error <= parity.tolerance("float32"), error
    # The browser's row joins the server's backends in the table.
    rows = browser.find_elements(By.CSS_SELECTOR, "#backends tbody th")
    assert rows[-1].text == "this browser (onnxruntime-web)"
    # The runtime ran under the server's Content-Security-Policy, which refused nothing
    # of the page's own; an address elsewhere is refused by the browser itself.
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    outcome = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('http://192.0.2.1/').then(() => done('fetched'), e => done(String(e)));")
    assert outcome.startswith("TypeError"), outcome
    assert any("Content Security Policy" in entry["message"]
               for entry in browser.get_log("browser")), "the fetch was not refused by policy"


@pytest.fixture(scope="module")
def trained_in_page(browser, server):
    """``(record, setup, step graph, model graph)``: ``STEPS`` steps trained in the page
    (``window.multinetTraining``) and the files the page trained from."""
    _open(browser, server)
    field = browser.find_element(By.ID, "train-iterations")
    field.clear()
    field.send_keys(str(STEPS))
    browser.find_element(By.ID, "train-start").click()
    WebDriverWait(browser, 300).until(lambda d: d.execute_script(
        "const t = window.multinetTraining; return t && (t.done || t.error)"))
    record = browser.execute_script("return window.multinetTraining")
    assert record["done"], record.get("error")
    setup = json.loads(_get(server + "train/setup.json"))
    return (record, setup, _get(server + "train/step.onnx"),
            _get(server + "train/model.onnx"))


def _onnxruntime_run(step_graph, setup, steps):
    """``(losses, state)``: the step graph in Python onnxruntime from the setup's state."""
    model = export.open_model(step_graph)
    config = setup["config"]
    count = config["count"]
    feeds = {"images": np.frombuffer(base64.b64decode(setup["images"]),
                                     np.uint8).reshape(count, 28, 28),
             "labels": np.asarray(setup["labels"], dtype=np.int64),
             "lr": np.asarray(config["lr"], dtype=np.float32)}
    state = {name: np.asarray(value["data"], np.float32).reshape(value["shape"])
             for name, value in setup["state"].items()}
    losses = []
    for _ in range(steps):
        out = model.run({**feeds, **state})
        losses.append(float(out["loss"]))
        state = {name: out[f"next/{name}"] for name in state}
    return np.asarray(losses), state


@needs_runtime
def test_a_network_trained_in_the_page_equals_onnxruntime_and_numpy(trained_in_page):
    record, setup, step_graph, _ = trained_in_page
    config = setup["config"]
    assert record["steps"] == STEPS and len(record["losses"]) == STEPS
    # The page starts where every backend starts: the notebook's seed-0 uniform draw,
    # rounded once to float32, on the first images of the training set.
    sample = load_dataset(data_dir=SAMPLE_MNIST, verify=False)
    count = config["count"]
    assert count == len(sample.train_labels) == 2048 and config["lr"] == 0.2
    drawn = draw_params((784, 10, 10), seed=0)
    assert all((np.asarray(setup["state"][f"params/{k}"]["data"], np.float32)
                == v.astype(np.float32).ravel()).all() for k, v in drawn.items())
    assert (np.frombuffer(base64.b64decode(setup["images"]), np.uint8)
            == sample.train_images[:count].ravel()).all()
    assert setup["labels"] == sample.train_labels[:count].tolist()

    page_losses = np.asarray(record["losses"])
    page_params = {k.removeprefix("params/"): np.asarray(v).reshape(
        setup["state"][k]["shape"]) for k, v in record["state"].items()
        if k.startswith("params/")}
    tolerance = parity.tolerance("float32", STEPS)

    # Python onnxruntime, the same graph from the same state.
    losses, state = _onnxruntime_run(step_graph, setup, STEPS)
    for i in range(3):  # the first steps, one by one
        assert parity.relative_error(page_losses[i], losses[i]) <= parity.tolerance(
            "float32", i)
    assert parity.relative_error(page_losses, losses) <= tolerance
    ort_params = {k.removeprefix("params/"): v for k, v in state.items()
                  if k.startswith("params/")}
    assert parity.max_relative_error(page_params, ort_params) <= tolerance
    assert record["state"]["opt/t"] == [STEPS]

    # The NumPy backend's own float32 steps, and the float64 reference.
    problem = parity.mnist_problem(sample, samples=count, steps=STEPS)
    for own in (parity.run(get_backend("numpy"), "float32", problem),
                parity.reference(problem)):
        assert parity.relative_error(page_losses[:3], own.losses[:3]) <= parity.tolerance(
            "float32", 3)
        assert parity.relative_error(page_losses, own.losses) <= tolerance
        assert parity.max_relative_error(page_params, own.snapshots[STEPS]) <= tolerance


@needs_runtime
def test_the_page_shows_the_training_and_then_answers_with_the_network_it_trained(
        trained_in_page, browser, shots):
    record, setup, _, model_graph = trained_in_page
    log = record["log"]
    assert [p["step"] for p in log] == [1, *range(10, STEPS + 1, 10)]
    assert _text(browser, "train-loss") == f"{record['losses'][-1]:.4f}"
    assert _text(browser, "train-accuracy") == f"{100 * record['accuracies'][-1]:.1f}%"
    assert _text(browser, "train-test-accuracy") == f"{100 * log[-1]['test_accuracy']:.1f}%"
    assert f"Trained {STEPS} steps" in _text(browser, "train-status")
    assert log[-1]["loss"] < log[0]["loss"] / 3 and log[-1]["test_accuracy"] > 0.5

    # Drawing now answers with the trained weights, as Python onnxruntime does with them.
    assert browser.find_element(By.ID, "engine").get_attribute("value") == "trained"
    browser.find_element(By.ID, "clear").click()
    _draw(browser, DIGITS[0][1])
    answer = _answer(browser, "this browser: the network trained here")
    model = export.open_model(model_graph)
    weights = {k: np.asarray(v, np.float32).reshape(setup["state"][k]["shape"])
               for k, v in record["state"].items() if k.startswith("params/")}
    out = model.run({"images": np.asarray([answer["server"]["input"]], np.uint8), **weights})
    logits = out["logits"][0].astype(np.float64)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert answer["prediction"] == int(out["labels"][0])
    assert parity.relative_error(answer["probabilities"], expected) <= parity.tolerance(
        "float32")

    # The served network in the browser again, beside the server's backends: the picture
    # docs/web.md shows.
    Select(browser.find_element(By.ID, "engine")).select_by_value("browser")
    _answer(browser, "this browser: onnxruntime-web (WebAssembly)")
    picture = shots / "web.png"
    browser.save_screenshot(str(picture))
    target = os.environ.get("MULTINET_SCREENSHOT")
    if target:
        _small_copy(picture, Path(target))


def _small_copy(picture: Path, target: Path) -> None:
    """``picture`` reduced to a palette of 64 colours, for the docs (a tenth of the bytes)."""
    from PIL import Image

    with Image.open(picture) as image:
        image.convert("RGB").quantize(colors=64).save(target, optimize=True)
