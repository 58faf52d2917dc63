// multinet's page: a drawing pad, the answer of every backend, and a network trained here.
//
// The server does the picture's preprocessing (multinet's own, as `predict --image`) and
// answers with every backend. "This browser" runs the served network's ONNX export in
// onnxruntime-web on the 28x28 the server returned; "the network trained here" runs the
// training-step graph in a loop and then the inference graph with the trained weights.
// onnxruntime-web comes from the server (`--onnxruntime DIR`), never from the internet.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const CLASSES = 10;
  const SIDE = 28;
  const INK_WIDTH = 18;  // pixels of the 280-pixel pad: MNIST's strokes, once scaled to 28

  const page = {
    info: null,
    runtime: null,        // a promise of onnxruntime-web's `ort`
    served: null,         // a promise of the served network's session (/model.onnx)
    trained: null,        // {session, params}: the network trained here
    training: false,
    request: 0,           // the latest prediction asked for; older answers are dropped
    inked: false,
  };

  // --- onnxruntime-web, one run at a time -------------------------------------------------

  function loadRuntime() {
    if (!page.runtime) {
      const src = page.info && page.info.browser.onnxruntime;
      page.runtime = new Promise((resolve, reject) => {
        if (!src) {
          reject(new Error(page.info.browser.reason || "onnxruntime-web is not served"));
          return;
        }
        const script = document.createElement("script");
        script.src = src;
        script.onload = () => {
          const ort = window.ort;
          if (!ort) {
            reject(new Error(`${src} did not define onnxruntime-web's ort`));
            return;
          }
          // Its WebAssembly files sit beside the script. Several threads need
          // SharedArrayBuffer, which only a cross-origin-isolated page has.
          ort.env.wasm.wasmPaths = src.slice(0, src.lastIndexOf("/") + 1);
          ort.env.wasm.numThreads = self.crossOriginIsolated
            ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
          resolve(ort);
        };
        script.onerror = () => reject(new Error(`could not load ${src}`));
        document.head.append(script);
      });
      page.runtime.catch(() => { page.runtime = null; });
    }
    return page.runtime;
  }

  // Runs of the sessions are queued: training, its evaluations and the answers to
  // drawings take turns instead of overlapping inside the runtime.
  let queue = Promise.resolve();
  function exclusive(task) {
    const run = queue.then(task, task);
    queue = run.catch(() => {});
    return run;
  }

  function servedSession() {
    if (!page.served) {
      // Fetched here, not by the runtime, so that the server's reason for a refusal
      // (no onnx extra, say) is what the page shows.
      page.served = Promise.all([
        loadRuntime(), fetchOk("/model.onnx").then((r) => r.arrayBuffer()),
      ]).then(([ort, model]) => ort.InferenceSession.create(new Uint8Array(model),
                                                             { executionProviders: ["wasm"] }));
      page.served.catch(() => { page.served = null; });
    }
    return page.served;
  }

  function softmax(logits) {
    const top = Math.max(...logits);
    const exps = logits.map((v) => Math.exp(v - top));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / sum);
  }

  function argmax(values) {
    return values.reduce((best, v, i) => (v > values[best] ? i : best), 0);
  }

  function imagesTensor(ort, pixels, count) {
    return new ort.Tensor("uint8", pixels, [count, SIDE, SIDE]);
  }

  async function runNetwork(session, input, weights = {}) {
    const ort = await loadRuntime();
    const pixels = Uint8Array.from(input.flat());
    const out = await exclusive(() =>
      session.run({ images: imagesTensor(ort, pixels, 1), ...weights }));
    const logits = Array.from(out.logits.data);
    const probabilities = softmax(logits);
    return { logits, probabilities, prediction: argmax(probabilities) };
  }

  // --- the drawing pad --------------------------------------------------------------------

  const pad = $("pad");
  const ink = pad.getContext("2d");
  let stroke = null;  // {id, x, y} of the pointer drawing

  function clearPad() {
    ink.fillStyle = "#fff";
    ink.fillRect(0, 0, pad.width, pad.height);
    page.inked = false;
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return { x: (event.clientX - box.left) * (pad.width / box.width),
             y: (event.clientY - box.top) * (pad.height / box.height) };
  }

  function segment(from, to) {
    ink.strokeStyle = "#000";
    ink.lineWidth = INK_WIDTH;
    ink.lineCap = "round";
    ink.lineJoin = "round";
    ink.beginPath();
    ink.moveTo(from.x, from.y);
    ink.lineTo(to.x, to.y);
    ink.stroke();
    page.inked = true;
  }

  pad.addEventListener("pointerdown", (event) => {
    if (stroke || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    stroke = { id: event.pointerId, ...padPoint(event) };
    segment(stroke, stroke);  // a tap leaves a dot
  });

  pad.addEventListener("pointermove", (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    event.preventDefault();
    const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const each of coalesced.length ? coalesced : [event]) {
      const point = padPoint(each);
      segment(stroke, point);
      stroke.x = point.x;
      stroke.y = point.y;
    }
  });

  function endStroke(event) {
    if (!stroke || event.pointerId !== stroke.id) return;
    stroke = null;
    predict();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("lostpointercapture", endStroke);
  pad.addEventListener("contextmenu", (event) => event.preventDefault());

  $("clear").addEventListener("click", () => {
    page.request += 1;  // an answer still on its way is for a picture that is gone
    clearPad();
    showNothing();
  });

  // --- asking for an answer ---------------------------------------------------------------

  async function postPicture(blob) {
    const response = await fetch("/api/predict", {
      method: "POST", body: blob, headers: { "Content-Type": "image/png" },
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      throw new Error(`the server answered ${response.status} without JSON`);
    }
    if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
    return body;
  }

  async function predict() {
    if (!page.inked) return;
    const ticket = ++page.request;
    $("prediction").textContent = "";
    $("answered-by").textContent = "thinking…";
    $("error").textContent = "";
    try {
      const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
      const server = await postPicture(blob);
      if (ticket !== page.request) return;
      const engine = $("engine").value;
      const rows = Object.entries(server.backends).map(([name, answer]) => ({ name, ...answer }));
      let shown = { prediction: server.prediction, probabilities: server.probabilities,
                    by: `server: ${server.backend}` };
      if (engine === "browser") {
        const answer = await runNetwork(await servedSession(), server.input);
        shown = { ...answer, by: "this browser: onnxruntime-web (WebAssembly)" };
        rows.push({ name: "this browser (onnxruntime-web)", ...answer });
      } else if (engine === "trained" && page.trained) {
        const answer = await runNetwork(page.trained.session, server.input,
                                        page.trained.params);
        shown = { ...answer, by: "this browser: the network trained here" };
      }
      if (ticket !== page.request) return;
      window.multinetAnswer = { engine, server, ...shown };
      showInput(server.input);
      showBars(shown.probabilities, shown.prediction);
      showBackends(rows, engine === "trained");
      $("answered-by").textContent = shown.by;
      $("prediction").textContent = String(shown.prediction);
    } catch (error) {
      if (ticket !== page.request) return;
      $("answered-by").textContent = "";
      $("error").textContent = error.message;
    }
  }

  $("engine").addEventListener("change", () => {
    $("engine-note").textContent = engineNote();
    predict();
  });

  // --- showing it -------------------------------------------------------------------------

  function showNothing() {
    $("prediction").textContent = "";
    $("answered-by").textContent = "";
    $("error").textContent = "";
    showBars(null);
    const blank = $("input28").getContext("2d");
    blank.fillStyle = "#000";
    blank.fillRect(0, 0, SIDE, SIDE);
  }

  function showInput(rows) {
    const canvas = $("input28").getContext("2d");
    const picture = canvas.createImageData(SIDE, SIDE);
    rows.flat().forEach((value, i) => {
      picture.data.set([value, value, value, 255], 4 * i);
    });
    canvas.putImageData(picture, 0, 0);
  }

  function percent(p) {
    return `${(100 * p).toFixed(1)}%`;
  }

  function showBars(probabilities, predicted) {
    const bars = $("bars");
    bars.replaceChildren();
    for (let digit = 0; digit < CLASSES; digit++) {
      const p = probabilities ? probabilities[digit] : 0;
      const row = document.createElement("div");
      row.className = "bar" + (probabilities && digit === predicted ? " chosen" : "");
      row.setAttribute("role", "listitem");
      const name = document.createElement("span");
      name.className = "digit";
      name.textContent = String(digit);
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(100 * p).toFixed(2)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = probabilities ? percent(p) : "";
      row.append(name, track, value);
      bars.append(row);
    }
  }

  function showBackends(rows, otherNetwork) {
    const body = $("backends").tBodies[0];
    body.replaceChildren();
    const first = rows[0].probabilities;
    let largest = 0;
    for (const row of rows) {
      const tr = document.createElement("tr");
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = row.name;
      const prediction = document.createElement("td");
      prediction.textContent = String(row.prediction);
      tr.append(name, prediction);
      row.probabilities.forEach((p, digit) => {
        largest = Math.max(largest, Math.abs(p - first[digit]));
        const cell = document.createElement("td");
        cell.textContent = p.toFixed(4);
        cell.title = String(p);
        if (digit === row.prediction) cell.className = "chosen";
        tr.append(cell);
      });
      body.append(tr);
    }
    $("max-difference").textContent = rows.length < 2 ? "one row only"
      : largest === 0 ? "0 (identical)" : largest.toExponential(1);
    $("backends-caption").textContent = otherNetwork
      ? "The served network on the server's backends (the answer above is the network trained here)."
      : "The served network's probabilities for your digit.";
  }

  function engineNote() {
    const engine = $("engine").value;
    if (engine === "browser") {
      return "The server still prepares the picture; the served network then runs in this " +
        "browser, and its row joins the table.";
    }
    if (engine === "trained") return "The network trained below answers; the table still shows the served one.";
    const browser = page.info && page.info.browser;
    return browser && !browser.inference && browser.reason
      ? `In-browser answers are off: ${browser.reason}` : "";
  }

  function describeServer(info) {
    const c = info.checkpoint;
    const sizes = Array.isArray(c.sizes) ? c.sizes.join("-") : c.sizes;
    const accuracy = c.test_accuracy == null ? "" : `, ${percent(c.test_accuracy)} on MNIST's test set`;
    const preset = c.preset ? `, ${c.preset} preset` : "";
    $("about").textContent = `Serving ${c.name}: a ${sizes} network (${c.dtype}${preset}` +
      `${accuracy}), on ${info.backends.join(", ")}. multinet ${info.version}.`;
    const unavailable = Object.entries(info.unavailable || {});
    $("unavailable").textContent = unavailable.length
      ? "Not running here: " + unavailable.map(([name, why]) => `${name} (${why})`).join("; ")
      : "";
  }

  // --- training in the browser ------------------------------------------------------------

  function fetchOk(url) {
    return fetch(url).then(async (response) => {
      if (response.ok) return response;
      let why = `${url}: ${response.status}`;
      try { why = (await response.json()).error || why; } catch { /* not JSON */ }
      throw new Error(why);
    });
  }

  function decodeBase64(text) {
    const bytes = atob(text);
    const out = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
    return out;
  }

  function nextFrame() {
    return new Promise((resolve) => setTimeout(resolve, 0));
  }

  async function accuracyOn(ort, session, params, images, labels, count) {
    const out = await exclusive(() =>
      session.run({ images: imagesTensor(ort, images, count), ...params }));
    let right = 0;
    out.labels.data.forEach((label, i) => { if (Number(label) === labels[i]) right += 1; });
    return right / count;
  }

  async function train() {
    if (page.training) return;
    page.training = true;
    const start = $("train-start");
    start.disabled = true;
    const trainedOption = $("engine").querySelector("option[value=trained]");
    trainedOption.disabled = true;
    if ($("engine").value === "trained") $("engine").value = "server";
    page.trained = null;
    const record = { losses: [], accuracies: [], log: [], state: null, done: false };
    window.multinetTraining = record;
    const status = $("train-status");
    try {
      status.textContent = "Fetching the sample, the training step and the runtime…";
      const [setup, step, model, ort] = await Promise.all([
        fetchOk("/train/setup.json").then((r) => r.json()),
        fetchOk("/train/step.onnx").then((r) => r.arrayBuffer()),
        fetchOk("/train/model.onnx").then((r) => r.arrayBuffer()),
        loadRuntime(),
      ]);
      const options = { executionProviders: ["wasm"] };
      const stepSession = await ort.InferenceSession.create(new Uint8Array(step), options);
      const modelSession = await ort.InferenceSession.create(new Uint8Array(model), options);
      const config = setup.config;
      const wanted = Math.round(Number($("train-iterations").value));
      const steps = Number.isFinite(wanted) && wanted >= 1 ? Math.min(wanted, 5000) : config.iterations;
      $("train-iterations").value = String(steps);
      record.steps = steps;
      record.config = config;
      const images = imagesTensor(ort, decodeBase64(setup.images), config.count);
      const labels = new ort.Tensor("int64", BigInt64Array.from(setup.labels, BigInt),
                                    [config.count]);
      const testImages = decodeBase64(setup.test_images);
      const lr = new ort.Tensor("float32", Float32Array.of(config.lr), []);
      let state = {};
      for (const [name, { shape, data }] of Object.entries(setup.state)) {
        state[name] = new ort.Tensor("float32", Float32Array.from(data), shape);
      }
      const paramsOf = (all) => Object.fromEntries(
        Object.entries(all).filter(([name]) => name.startsWith("params/")));
      const began = performance.now();
      for (let i = 1; i <= steps; i++) {
        const out = await exclusive(() => stepSession.run({ images, labels, lr, ...state }));
        record.losses.push(out.loss.data[0]);
        record.accuracies.push(out.accuracy.data[0]);
        const next = {};
        for (const name of Object.keys(state)) next[name] = out[`next/${name}`];
        state = next;
        if (i === 1 || i % config.log_every === 0 || i === steps) {
          const test = await accuracyOn(ort, modelSession, paramsOf(state), testImages,
                                        setup.test_labels, config.test_count);
          record.log.push({ step: i, loss: record.losses[i - 1],
                            accuracy: record.accuracies[i - 1], test_accuracy: test });
          $("train-loss").textContent = record.losses[i - 1].toFixed(4);
          $("train-accuracy").textContent = percent(record.accuracies[i - 1]);
          $("train-test-accuracy").textContent = percent(test);
          status.textContent = `Step ${i} of ${steps}…`;
          drawCurve(record.log, steps);
          await nextFrame();  // let the page show it
        }
      }
      const seconds = (performance.now() - began) / 1000;
      record.state = Object.fromEntries(
        Object.entries(state).map(([name, tensor]) => [name, Array.from(tensor.data)]));
      record.seconds = seconds;
      page.trained = { session: modelSession, params: paramsOf(state) };
      trainedOption.disabled = false;
      $("engine").value = "trained";
      $("engine-note").textContent = engineNote();
      const last = record.log[record.log.length - 1];
      status.textContent = `Trained ${steps} steps on ${config.count} images in ` +
        `${seconds.toFixed(1)} s: ${percent(last.test_accuracy)} of the ${config.test_count} ` +
        "test images read right. Draw a digit: the network trained here answers.";
      record.done = true;
      predict();
    } catch (error) {
      record.error = error.message;
      status.textContent = `Training stopped: ${error.message}`;
    } finally {
      page.training = false;
      start.disabled = false;
    }
  }

  $("train-start").addEventListener("click", train);

  function drawCurve(log, steps) {
    const canvas = $("train-curve");
    const scale = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(width * scale)) {
      canvas.width = Math.round(width * scale);
      canvas.height = Math.round(height * scale);
    }
    const g = canvas.getContext("2d");
    g.setTransform(scale, 0, 0, scale, 0, 0);
    const style = getComputedStyle(document.body);
    const colour = (name) => style.getPropertyValue(name).trim();
    g.clearRect(0, 0, width, height);
    const left = 44, right = width - 44, top = 30, bottom = height - 28;
    const maxLoss = Math.max(...log.map((p) => p.loss), 1e-9);
    const x = (s) => left + (right - left) * (s / steps);
    g.strokeStyle = colour("--rule");
    g.lineWidth = 1;
    g.strokeRect(left, top, right - left, bottom - top);
    g.fillStyle = colour("--muted");
    g.font = "12px system-ui, sans-serif";
    g.textAlign = "right";
    g.fillText(maxLoss.toFixed(2), left - 6, top + 10);
    g.fillText("0", left - 6, bottom);
    g.textAlign = "left";
    g.fillText("100%", right + 6, top + 10);
    g.fillText("0%", right + 6, bottom);
    g.textAlign = "center";
    g.fillText(`step ${steps}`, right, bottom + 18);
    g.fillText("0", left, bottom + 18);
    const line = (value, name, max) => {
      g.strokeStyle = colour(name);
      g.lineWidth = 2;
      g.beginPath();
      log.forEach((p, i) => {
        const y = bottom - (bottom - top) * (value(p) / max);
        if (i === 0) g.moveTo(x(p.step), y); else g.lineTo(x(p.step), y);
      });
      g.stroke();
    };
    line((p) => p.loss, "--loss", maxLoss);
    line((p) => p.accuracy, "--accent", 1);
    line((p) => p.test_accuracy, "--test", 1);
    const legend = [["loss", "--loss"], ["training accuracy", "--accent"],
                    ["test accuracy", "--test"]];
    g.textAlign = "left";
    let at = left;
    for (const [label, name] of legend) {
      g.fillStyle = colour(name);
      g.fillRect(at, 9, 12, 3);
      g.fillStyle = colour("--muted");
      g.fillText(label, at + 16, 15);
      at += g.measureText(label).width + 34;
    }
  }

  // --- starting -----------------------------------------------------------------------------

  async function start() {
    clearPad();
    showNothing();
    try {
      const info = await fetchOk("/api/info").then((r) => r.json());
      page.info = info;
      describeServer(info);
      const browser = info.browser;
      const option = $("engine").querySelector("option[value=browser]");
      if (!browser.inference) {
        option.disabled = true;
        option.textContent = "this browser (unavailable)";
      }
      if (!browser.training) {
        $("train-start").disabled = true;
        $("train-status").textContent =
          `Training in this page is off: ${browser.reason || "the server cannot offer it"}`;
      }
      $("engine-note").textContent = engineNote();
    } catch (error) {
      $("about").textContent = `The server did not say what it serves: ${error.message}`;
    }
  }

  start();
})();
