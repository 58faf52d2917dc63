"""``multinet serve`` as a client sees it, without a browser: the routes, the answers of
``POST /api/predict`` against ``multinet predict --image --json``, every bad input
(oversized, undecodable and empty bodies, wrong methods, unknown paths and path
traversal, a foreign ``Host``), many clients at once, slow and vanishing ones, the
signals that stop it, and the one-line errors of its options. The page in a real
browser is tests/test_browser.py."""

import http.client
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("PIL", reason="Pillow is not installed (pip install 'multinet[web]')")
pytest.importorskip("waitress", reason="waitress is not installed (pip install 'multinet[web]')")
from PIL import Image  # noqa: E402

from helpers import SAMPLE_MNIST, assert_one_line_error, run_cli, run_python  # noqa: E402
from multinet import checkpoint, network, pictures, pretrained  # noqa: E402
from multinet.parity import tolerance  # noqa: E402
from multinet.web import browser, running, server  # noqa: E402

#: The server's environment: the committed sample as its data, the default backend order.
ENV = {**{k: v for k, v in os.environ.items() if k != "MULTINET_BACKEND"},
       "MULTINET_DATA": str(SAMPLE_MNIST)}
#: The upload limit of the module's server, in megabytes.
LIMIT_MB = 1


def start(*args, env=ENV):
    """``multinet serve --port 0 ARGS`` in a fresh process, once it serves: ``(process,
    (host, port))`` from the one line it prints."""
    process = subprocess.Popen([sys.executable, "-m", "multinet", "serve", "--port", "0",
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("serving on http://"):
        process.kill()
        pytest.fail(f"no 'serving on' line: {line!r}; stderr: {process.communicate()[1]}")
    assert line.endswith("/\n"), line
    where = urlsplit(line.split()[2])
    return process, (where.hostname, where.port)


def stop(process, signum=signal.SIGTERM):
    """Send ``signum`` and wait: ``(exit status, stderr)``."""
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def request(address, method, path, body=None, headers=None, timeout=30):
    """One request, the path sent as it is written: ``(status, headers, body)``."""
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def predict(address, picture: bytes):
    status, _, body = request(address, "POST", "/api/predict", picture)
    assert status == 200, body
    return json.loads(body)


def assert_json_error(status, headers, body, expected, *fragments):
    assert status == expected, (status, body)
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)["error"]
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def png(digit, size=112) -> bytes:
    """An MNIST digit as people draw it: dark ink on white, four times the size."""
    out = io.BytesIO()
    Image.fromarray(255 - digit).resize((size, size)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served():
    """The pretrained network (no CKPT) on every backend that can run here, with a 1 MB
    upload limit: ``(address, process)``."""
    process, address = start("--max-upload", str(LIMIT_MB))
    yield address, process
    code, err = stop(process)
    assert code == 0 and err.strip().endswith("multinet: stopped"), err


def test_the_page_its_files_and_its_information_are_served(served):
    address, _ = served
    status, headers, body = request(address, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and info["checkpoint"]["name"] == pretrained.NAME
    assert info["checkpoint"]["test_accuracy"] == pretrained.TEST_ACCURACY
    assert info["backends"][0] == "numpy" and "strict" in info["backends"]
    assert info["max_upload"] == LIMIT_MB * 1_000_000
    assert info["browser"]["onnxruntime"] is None and info["browser"]["reason"]
    for name in server.static_files():
        status, headers, body = request(address, "GET", f"/static/{name}")
        assert status == 200 and body == (server.STATIC / name).read_bytes()
    status, headers, body = request(address, "GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == server.CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert body == (server.STATIC / "index.html").read_bytes()
    status, headers, body = request(address, "HEAD", "/")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


@pytest.mark.parametrize("path", [
    "/nothing", "/static/", "/static/missing.js", "/static/../server.py",
    "/static/%2e%2e/server.py", "/static/%2e%2e%2fserver.py", "/static/..%2f..%2fpyproject.toml",
    "//etc/passwd", "/static//etc/passwd", "/ort/../answers.py", "/ort/ort.wasm.min.js",
    "/static/./index.html", "/api/../static/index.html", "/static/index.html/",
])
def test_unknown_paths_and_path_traversal_are_404(served, path):
    status, headers, body = request(served[0], "GET", path)
    assert_json_error(status, headers, body, 404, "no such")


def test_a_host_name_that_is_not_loopback_is_refused(served):
    """DNS rebinding: a page of another site pointing its own name at 127.0.0.1."""
    status, headers, body = request(served[0], "GET", "/api/info",
                                    headers={"Host": f"evil.example:{served[0][1]}"})
    assert_json_error(status, headers, body, 403, "evil.example")
    for host in ("localhost", f"127.0.0.1:{served[0][1]}", "[::1]:80"):
        assert request(served[0], "GET", "/api/info", headers={"Host": host})[0] == 200


def test_a_picture_gets_the_answer_of_predict_json(served, sample, tmp_path):
    picture = png(sample.test_images[0])
    answer = predict(served[0], picture)
    (tmp_path / "seven.png").write_bytes(picture)
    result = run_cli("predict", str(pretrained.path()), "--image", str(tmp_path / "seven.png"),
                     "--json", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout)[0]
    assert answer["backend"] == "numpy" and answer["prediction"] == expected["prediction"] == 7
    assert answer["probabilities"] == expected["probabilities"]
    assert answer["backends"]["numpy"] == {"prediction": 7,
                                           "probabilities": expected["probabilities"]}
    assert answer["input"] == pictures.mnist_digit(tmp_path / "seven.png").tolist()


def test_every_backend_agrees_within_the_float32_tolerance(served, sample):
    """Each backend's probabilities lie within what parity allows of the NumPy float64
    network: logits off by ``tolerance * ||logits||``, which moves a softmax output by
    at most half that; two backends, by at most the whole."""
    answer = predict(served[0], png(sample.test_images[1]))
    assert len(answer["backends"]) >= 2, answer["backends"].keys()
    params = {k: v.astype(np.float64) for k, v in checkpoint.load(pretrained.path()).params.items()}
    x = np.asarray(answer["input"], dtype=np.float64).reshape(1, 784) / 255.0
    logits = np.asarray(network.forward(params, x))[0]
    allowed = tolerance("float32") * np.linalg.norm(logits)
    first = np.asarray(answer["probabilities"])
    differences = {name: float(np.max(np.abs(np.asarray(b["probabilities"]) - first)))
                   for name, b in answer["backends"].items()}
    assert max(differences.values()) <= allowed, differences
    assert answer["max_difference"] == max(differences.values())
    assert {b["prediction"] for b in answer["backends"].values()} == {int(np.argmax(logits))}


def test_bad_bodies_and_methods_get_their_statuses(served):
    address, _ = served
    # Refused on the headers alone, before the body is sent (and kept).
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                     f"{LIMIT_MB * 1_000_000 + 1}\r\n\r\n".encode() + b"x" * 1000)
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
    # A body of exactly the limit is read (and, not being a picture, answered 400).
    assert_json_error(*request(address, "POST", "/api/predict", b"x" * LIMIT_MB * 1_000_000),
                      400, "cannot read the picture")
    message = assert_json_error(*request(address, "POST", "/api/predict", b"not a picture"),
                                400, "cannot read the picture")
    assert "0x" not in message  # no memory address of the buffer read
    assert_json_error(*request(address, "POST", "/api/predict", b""), 400, "empty")
    blank = io.BytesIO()
    Image.new("L", (50, 50), 255).save(blank, format="PNG")
    assert_json_error(*request(address, "POST", "/api/predict", blank.getvalue()), 400)
    # A small file declaring more pixels than a server decodes is refused unread.
    bomb = io.BytesIO()
    Image.new("1", (5000, 4000), 1).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 100_000
    assert_json_error(*request(address, "POST", "/api/predict", bomb.getvalue()), 400,
                      "too large")
    status, headers, body = request(address, "GET", "/api/predict")
    assert_json_error(status, headers, body, 405, "POST")
    assert headers["Allow"] == "POST"
    assert_json_error(*request(address, "PUT", "/"), 405)
    assert request(address, "GET", "/api/info")[0] == 200  # still serving


def test_twenty_concurrent_requests_are_each_answered_right(served, sample):
    address, _ = served
    bodies = [png(digit) for digit in sample.test_images[:20]]
    alone = [predict(address, body) for body in bodies]
    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda body: predict(address, body), bodies))
    assert together == alone
    assert [a["prediction"] for a in alone] == [int(y) for y in sample.test_labels[:20]]


def test_slow_and_vanishing_clients_do_not_block_the_others(served, sample):
    """More stalled clients than worker threads: headers half sent, a body half sent,
    and clients gone mid-body; an answer still comes at once."""
    address, _ = served
    picture = png(sample.test_images[2])
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
            f"{len(picture)}\r\n\r\n").encode()
    stalled = []
    try:
        for i in range(2 * running.THREADS):
            sock = socket.create_connection(address, timeout=10)
            sock.sendall(b"GET /api/info HTTP/1.1\r\nHo" if i % 2 else head + picture[:100])
            stalled.append(sock)
        for _ in range(4):
            with socket.create_connection(address, timeout=10) as gone:
                gone.sendall(head + picture[:200])
        began = time.monotonic()
        answer = predict(address, picture)
        assert time.monotonic() - began < 2.0
        assert answer["prediction"] == int(sample.test_labels[2])
        stalled[0].sendall(picture[100:])  # a slow client that finishes is answered too
        assert b"200 OK" in stalled[0].recv(100)
    finally:
        for sock in stalled:
            sock.close()


def test_more_slow_clients_than_connections_once_allowed_are_cut_off_while_others_are_answered(
        sample):
    """150 clients sending a byte every two seconds (slowloris) and 150 that send
    nothing: an answer still comes at once, and each of them is closed within
    ``REQUEST_DEADLINE`` (or ``IDLE_TIMEOUT``) and one look."""
    process, address = start("--backend", "numpy")
    picture = png(sample.test_images[2])
    sockets = []
    try:
        for _ in range(300):
            sockets.append(socket.create_connection(address, timeout=10))
        began = time.monotonic()
        dripping, closed = sockets[:150], set()
        answer = predict(address, picture)
        assert time.monotonic() - began < 2.0
        assert answer["prediction"] == int(sample.test_labels[2])
        limit = max(running.REQUEST_DEADLINE, running.IDLE_TIMEOUT) + 2 * running.CLEANUP_INTERVAL
        while len(closed) < len(sockets) and time.monotonic() - began < limit + 5:
            for sock in dripping:
                if sock not in closed:
                    try:
                        sock.sendall(b"G")
                    except OSError:
                        closed.add(sock)
            readable, _, _ = select.select([s for s in sockets if s not in closed], [], [], 2)
            for sock in readable:
                try:
                    if sock.recv(100) == b"":
                        closed.add(sock)
                except OSError:
                    closed.add(sock)
        assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} still open"
        assert time.monotonic() - began > running.IDLE_TIMEOUT - 1  # not cut at once
    finally:
        for sock in sockets:
            sock.close()
        code, err = stop(process)
    assert code == 0, err


def test_answers_under_way_at_sigterm_are_finished_and_sent(sample):
    process, address = start("--backend", "numpy")
    picture = png(sample.test_images[2])
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(request, address, "POST", "/api/predict", picture)
                   for _ in range(20)]
        time.sleep(0.05)
        code, err = stop(process)
        statuses = [future.result()[0] for future in futures]
    assert statuses == [200] * 20 and code == 0, err


def test_ctrl_c_while_it_starts_stops_it_there_in_one_line():
    process = subprocess.Popen([sys.executable, "-m", "multinet", "serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV)
    time.sleep(1.0)  # importing the libraries, or loading the backends
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    if out:  # it had started: a clean stop
        assert process.returncode == 0 and err.endswith("multinet: stopped\n"), err
    else:
        assert process.returncode == 130 and err == "multinet: interrupted\n", err


def test_a_checkpoint_given_is_served_on_the_backends_named_once_each(small_checkpoint, sample,
                                                                    tmp_path):
    process, address = start(str(small_checkpoint), "--backend", "numpy", "--backend",
                             "strict", "numpy")
    try:
        info = json.loads(request(address, "GET", "/api/info")[2])
        assert info["checkpoint"]["name"] == small_checkpoint.name
        assert info["backends"] == ["numpy", "strict"] and info["unavailable"] == {}
        (tmp_path / "three.png").write_bytes(png(sample.test_images[18]))
        answer = predict(address, (tmp_path / "three.png").read_bytes())
    finally:
        code, err = stop(process)
    assert code == 0 and err == "multinet: stopped\n", err
    result = run_cli("predict", str(small_checkpoint), "--image", str(tmp_path / "three.png"),
                     "--json", "--backend", "numpy")
    assert json.loads(result.stdout)[0]["probabilities"] == answer["probabilities"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_it_and_free_the_port(signum):
    process, address = start("--backend", "numpy")
    assert request(address, "GET", "/api/info")[0] == 200
    code, err = stop(process, signum)
    assert code == 0 and err == "multinet: stopped\n", err
    with socket.create_server(address):  # free again
        pass


def test_a_host_reachable_from_the_network_is_warned_of_in_one_line():
    process, (_, port) = start("--host", "0.0.0.0", "--backend", "numpy")
    try:
        status, _, _ = request(("127.0.0.1", port), "GET", "/api/info",
                               headers={"Host": "some.name.example"})
    finally:
        code, err = stop(process)
    assert status == 200 and code == 0  # any Host: the user chose to be reachable
    lines = err.splitlines()
    assert len(lines) == 2 and "reachable from the network" in lines[0], err
    assert f"http://localhost:{port}/" in lines[0]


def test_a_port_in_use_is_one_line():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--backend", "numpy", env=ENV)
    assert_one_line_error(result, f"--port {port}", "already in use")


@pytest.mark.parametrize("args, fragments", [
    (["--backend", "nope"], ["unknown backend 'nope'"]),
    (["--backend", "numpy", "module://no_such_library"], ["no_such_library"]),
    (["--backend", "numpy", "--onnxruntime", "/no/such/folder"], ["--onnxruntime", "no such folder"]),
    (["--max-upload", "26"], ["--max-upload", "26"]),
    (["--max-upload", "1e-7"], ["--max-upload", "1e-7"]),
    (["--offline"], ["unrecognized arguments: --offline"]),
    (["--port", "65536"], ["--port", "65536"]),
    (["/no/such.safetensors", "--backend", "numpy"], ["/no/such.safetensors"]),
    (["--host", "no.such.host.invalid", "--backend", "numpy"], ["--host no.such.host.invalid"]),
])
def test_bad_options_are_one_line(args, fragments):
    assert_one_line_error(run_cli("serve", *args, env=ENV), *fragments)


def test_an_onnxruntime_folder_without_the_files_names_them(tmp_path):
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "ort.wasm.min.js").write_text("")
    result = run_cli("serve", "--backend", "numpy", "--onnxruntime", str(tmp_path), env=ENV)
    assert_one_line_error(result, "ort-wasm-simd-threaded.wasm")


def test_the_browser_gets_the_runtime_files_and_the_graphs(tmp_path, sample):
    """Only onnxruntime-web's files the page needs are served from its folder (others
    there, and paths out of it, are 404), with the content types browsers require of
    them; the graphs are built when first asked for."""
    onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'multinet[onnx]'")
    dist = tmp_path / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in (*browser.RUNTIME_FILES, "ort.min.js", "ort.wasm.min.js.map", "notes.txt"):
        (dist / name).write_bytes(name.encode())
    process, address = start("--backend", "numpy", "--onnxruntime", str(dist.parent),
                             "--data-dir", str(SAMPLE_MNIST), "--no-verify")
    try:
        info = json.loads(request(address, "GET", "/api/info")[2])["browser"]
        assert info == {"onnxruntime": f"/ort/{browser.ENTRY_SCRIPT}", "inference": True,
                        "training": True, "reason": None}
        types = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
                 ".wasm": "application/wasm"}
        for name in browser.RUNTIME_FILES:
            status, headers, body = request(address, "GET", f"/ort/{name}")
            assert status == 200 and body == name.encode(), name
            assert headers["Content-Type"] == types[os.path.splitext(name)[1]]
        for name in ("ort.min.js", "ort.wasm.min.js.map", "notes.txt", "../dist/ort.min.js",
                     "%2e%2e/dist/ort.min.js", ""):
            assert_json_error(*request(address, "GET", f"/ort/{name}"), 404)
        status, _, model = request(address, "GET", "/model.onnx")
        assert status == 200 and model == browser.inference_graph(pretrained.path())
        status, _, body = request(address, "GET", "/train/setup.json")
        setup = json.loads(body)
        assert status == 200 and setup["labels"][:20] == sample.train_labels[:20].tolist()
        for name in ("step.onnx", "model.onnx"):
            status, headers, body = request(address, "GET", f"/train/{name}")
            assert status == 200 and onnx.load_model_from_string(body).graph.node, name
    finally:
        code, err = stop(process)
    assert code == 0, err


def test_without_waitress_it_names_the_extra():
    result = run_python("""
        import sys
        sys.modules["waitress"] = None
        from multinet.cli import main
        sys.exit(main(["serve", "--backend", "numpy"]))
    """, **ENV)
    assert_one_line_error(result, 'pip install "multinet[web]"')


def test_a_cnn_checkpoint_answers_on_each_backend_as_its_run_does(cnn_checkpoint, sample):
    """What the server answers with (``multinet.web.answers``), without a socket: a
    convolutional network is described by its layers, and answers a picture on every
    backend as its ``Run`` does."""
    from multinet.api.run import load
    from multinet.web.answers import Answers

    answers = Answers.open(cnn_checkpoint, ["numpy", "strict"])
    info = answers.describe()
    assert info["sizes"] == "conv:2:3x3:valid, relu, maxpool:2, flatten, dense:10"
    answer = answers.answer(png(sample.test_images[18]))
    digit = np.array(answer["input"], dtype=np.uint8)
    expected = load(cnn_checkpoint).probabilities(digit[None])[0]
    assert answer["probabilities"] == expected.tolist()
    assert answer["max_difference"] <= tolerance("float32", 1)
