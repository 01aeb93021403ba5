// The studio page (GET /studio): talks to the public API only, with the token the user typed.
// The token lives in sessionStorage (this tab; gone when it closes), never in a cookie or the URL.

const TOKEN_KEY = "matting.api_token";
const POLL_MS = 1000;
const PREVIEW_DEBOUNCE_MS = 120;
const MASK_TINT = [30, 144, 255, 140]; // RGBA drawn where the preview mask is the object

const $ = (id) => document.getElementById(id);

const state = {
  video: null, // StudioUpload answer of POST /studio/uploads
  frame: 0,
  points: [], // {x, y, type}
  cursor: null, // keyboard cross position {x, y} in frame pixels
  previewBusy: false,
  previewAgain: false,
  previewSeq: 0,
};

// --- API -------------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class ApiFailure extends Error {}

// Both error families: {"error": {message, details}} (mask API) and {"message"}/{"detail"} (background API).
async function failure(response) {
  let text = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body.error) text = `${body.error.message}: ${body.error.details}`;
    else text = body.message || body.detail || text;
  } catch (_) {
    /* not JSON: keep the status */
  }
  if (response.status === 403 || response.status === 401) text += " (check the api_token)";
  return new ApiFailure(text);
}

async function api(path, { method = "GET", json, form } = {}) {
  const headers = { api_token: token() };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method, headers, body });
  if (!response.ok && response.status !== 202) throw await failure(response);
  return response;
}

function showError(err) {
  $("error").textContent = err ? String(err.message || err) : "";
}

// --- token -----------------------------------------------------------------------------------

function showToken() {
  const known = Boolean(token());
  $("token-form").hidden = known;
  $("token-set").hidden = !known;
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  showToken();
  $("file").focus();
});
$("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showToken();
  $("token").focus();
});

// --- choices from the service's own OpenAPI document (one list of presets and models) ---------

function enumOf(schema) {
  if (!schema || typeof schema !== "object") return null;
  if (Array.isArray(schema.enum)) return schema.enum;
  for (const part of schema.anyOf || schema.oneOf || []) {
    const found = enumOf(part);
    if (found) return found;
  }
  return null;
}

function fill(select, values, chosen) {
  select.replaceChildren(
    ...values.map((value) => {
      const option = document.createElement("option");
      option.value = option.textContent = value;
      option.selected = value === chosen;
      return option;
    }),
  );
}

async function loadChoices() {
  const doc = await (await fetch("/openapi.json")).json();
  const schemas = doc.components.schemas;
  const presets = enumOf(schemas.MaskByKeyPointsRequest.properties.output_container_and_codec) || [];
  fill($("kp-preset"), presets, "mp4_h264");
  fill($("fg-preset"), presets, "mp4_h264");
  fill($("fg-model"), enumOf(schemas.ForegroundMaskRequest.properties.model) || ["auto"], "auto");
}

// --- opening a video -------------------------------------------------------------------------

$("open-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(null);
  const form = new FormData();
  const file = $("file").files[0];
  const url = $("url").value.trim();
  if (file) form.append("file", file, file.name);
  else if (url) form.append("video", url);
  else return showError(new Error("Choose a file or type its URL."));
  $("video-info").textContent = "Opening the video…";
  try {
    const video = await (await api("/studio/uploads", { method: "POST", form })).json();
    openVideo(video);
  } catch (err) {
    $("video-info").textContent = "";
    showError(err);
  }
});

function openVideo(video) {
  state.video = video;
  state.points = [];
  state.cursor = null;
  const trim = video.needs_auto_trim ? `; frames of its first part only (auto_trim)` : "";
  $("video-info").textContent =
    `${video.width}×${video.height}, ${video.fps} fps, ${video.duration_s} s: frames 0 to ${video.frame_count - 1}${trim}.`;
  for (const canvas of [$("frame-canvas"), $("mask-canvas")]) {
    canvas.width = video.width;
    canvas.height = video.height;
  }
  $("frame").max = String(video.frame_count - 1);
  $("input-video").src = video.video;
  $("result-video").removeAttribute("src");
  $("result-link").hidden = true;
  $("editor").hidden = false;
  $("jobs").hidden = false;
  setFrame(0);
  renderPoints();
}

// --- frame and points ------------------------------------------------------------------------

function setFrame(index) {
  const last = state.video.frame_count - 1;
  state.frame = Math.max(0, Math.min(last, index));
  $("frame").value = String(state.frame);
  $("frame-label").textContent = String(state.frame);
  schedulePreview();
}

$("frame").addEventListener("input", () => setFrame(Number($("frame").value)));
$("prev-frame").addEventListener("click", () => setFrame(state.frame - 1));
$("next-frame").addEventListener("click", () => setFrame(state.frame + 1));

function pointType() {
  return document.querySelector('input[name="point-type"]:checked').value;
}

function setPointType(type) {
  document.querySelector(`input[name="point-type"][value="${type}"]`).checked = true;
}

function addPoint(x, y) {
  const { width, height } = state.video;
  const point = {
    x: Math.max(0, Math.min(width - 1, Math.round(x))),
    y: Math.max(0, Math.min(height - 1, Math.round(y))),
    type: pointType(),
  };
  state.points.push(point);
  renderPoints();
  schedulePreview();
}

function removePoint(index) {
  state.points.splice(index, 1);
  renderPoints();
  schedulePreview();
}

function percent(value, size) {
  return `${((value + 0.5) / size) * 100}%`;
}

function renderPoints() {
  const { width, height } = state.video;
  const dots = state.points.map((point, index) => {
    const dot = document.createElement("button");
    dot.type = "button";
    dot.className = `dot ${point.type}`;
    dot.style.left = percent(point.x, width);
    dot.style.top = percent(point.y, height);
    dot.setAttribute("aria-label", `Remove ${point.type} point ${index + 1} at ${point.x}, ${point.y}`);
    dot.title = dot.getAttribute("aria-label");
    dot.addEventListener("click", (event) => {
      event.stopPropagation();
      removePoint(index);
    });
    return dot;
  });
  $("dots").replaceChildren(...dots);
  const items = state.points.map((point, index) => {
    const item = document.createElement("li");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove point ${index + 1}`);
    remove.addEventListener("click", () => removePoint(index));
    item.append(`${point.type === "positive" ? "on the object" : "not the object"} at (${point.x}, ${point.y}) `, remove);
    return item;
  });
  $("points").replaceChildren(...items);
  $("kp-submit").disabled = !state.points.some((point) => point.type === "positive");
  const cursor = $("cursor");
  cursor.hidden = state.cursor === null;
  if (state.cursor) {
    cursor.style.left = percent(state.cursor.x, width);
    cursor.style.top = percent(state.cursor.y, height);
  }
}

function framePixel(event) {
  const rect = $("frame-canvas").getBoundingClientRect();
  return {
    x: Math.floor(((event.clientX - rect.left) / rect.width) * state.video.width),
    y: Math.floor(((event.clientY - rect.top) / rect.height) * state.video.height),
  };
}

$("stage").addEventListener("click", (event) => {
  if (!state.video || event.target.classList.contains("dot")) return;
  const { x, y } = framePixel(event);
  addPoint(x, y);
});

$("stage").addEventListener("keydown", (event) => {
  if (!state.video) return;
  const step = event.shiftKey ? 10 : 1;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (!state.cursor) state.cursor = { x: state.video.width >> 1, y: state.video.height >> 1 };
  if (moves[event.key]) {
    const [dx, dy] = moves[event.key];
    state.cursor.x = Math.max(0, Math.min(state.video.width - 1, state.cursor.x + dx));
    state.cursor.y = Math.max(0, Math.min(state.video.height - 1, state.cursor.y + dy));
  } else if (event.key === "Enter" || event.key === " ") {
    addPoint(state.cursor.x, state.cursor.y);
  } else if (event.key === "p" || event.key === "P") {
    setPointType("positive");
  } else if (event.key === "n" || event.key === "N") {
    setPointType("negative");
  } else if ((event.key === "Delete" || event.key === "Backspace") && state.points.length) {
    removePoint(state.points.length - 1);
  } else {
    return;
  }
  event.preventDefault();
  renderPoints();
});

$("clear-points").addEventListener("click", () => {
  state.points = [];
  renderPoints();
  schedulePreview();
});

// --- preview (POST /mask_by_key_points/preview) -----------------------------------------------

let previewTimer = 0;

// data-busy on the status line: "yes" from a change until its preview is drawn (tests wait on it).
function schedulePreview() {
  $("preview-status").dataset.busy = "yes";
  clearTimeout(previewTimer);
  previewTimer = setTimeout(runPreview, PREVIEW_DEBOUNCE_MS);
}

// One preview in flight at a time (the service admits two per token); the latest state wins.
async function runPreview() {
  if (state.previewBusy) {
    state.previewAgain = true;
    return;
  }
  state.previewBusy = true;
  const seq = ++state.previewSeq;
  const positive = state.points.some((point) => point.type === "positive");
  $("preview-status").textContent = positive ? "Computing the mask…" : "Loading the frame…";
  const started = performance.now();
  try {
    const body = {
      video: state.video.video,
      frame_index: state.frame,
      key_points: positive ? state.points : [],
      auto_trim: state.video.needs_auto_trim,
    };
    const answer = await (await api("/mask_by_key_points/preview", { method: "POST", json: body })).json();
    if (seq === state.previewSeq) {
      await drawPreview(answer);
      const took = Math.round(performance.now() - started);
      $("preview-status").textContent = answer.mask_png
        ? `Mask of frame ${answer.frame_index} (${took} ms).`
        : `Frame ${answer.frame_index}${state.points.length ? ": add a point on the object" : ": click the object"}.`;
      $("preview-status").dataset.frame = String(answer.frame_index);
      $("preview-status").dataset.mask = answer.mask_png ? "yes" : "no";
      $("preview-status").dataset.points = String(body.key_points.length);
    }
    showError(null);
  } catch (err) {
    $("preview-status").textContent = "";
    showError(err);
  } finally {
    state.previewBusy = false;
    if (state.previewAgain) {
      state.previewAgain = false;
      runPreview();
    } else {
      $("preview-status").dataset.busy = "no";
    }
  }
}

function decodeImage(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return createImageBitmap(new Blob([bytes], { type }));
}

async function drawPreview(answer) {
  const frame = await decodeImage(answer.frame_jpeg, "image/jpeg");
  $("frame-canvas").getContext("2d").drawImage(frame, 0, 0);
  const overlay = $("mask-canvas").getContext("2d");
  overlay.clearRect(0, 0, answer.width, answer.height);
  if (!answer.mask_png) return;
  const mask = await decodeImage(answer.mask_png, "image/png");
  const scratch = new OffscreenCanvas(answer.width, answer.height).getContext("2d");
  scratch.drawImage(mask, 0, 0);
  const pixels = scratch.getImageData(0, 0, answer.width, answer.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const inside = data[i] > 127;
    data[i] = MASK_TINT[0];
    data[i + 1] = MASK_TINT[1];
    data[i + 2] = MASK_TINT[2];
    data[i + 3] = inside ? MASK_TINT[3] : 0;
  }
  overlay.putImageData(pixels, 0, 0);
}

// --- jobs --------------------------------------------------------------------------------------

function progress(percent, text) {
  $("job-progress").value = percent ?? 0;
  $("job-status").textContent = text;
}

function showResult(src) {
  const result = $("result-video");
  result.src = src;
  $("result-link").href = src;
  $("result-link").hidden = false;
  $("input-video").currentTime = 0;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Mask API jobs: poll /status/{request_id} until completed (mask_url) or failed.
async function maskJob(path, body) {
  showError(null);
  progress(0, "Submitting…");
  try {
    const accepted = await (await api(path, { method: "POST", json: body })).json();
    for (;;) {
      const status = await (await api(`/status/${accepted.request_id}`)).json();
      if (status.status === "completed") {
        progress(100, `Done${status.warning ? ` (${status.warning})` : ""}.`);
        $("job-status").dataset.state = "completed";
        return showResult(status.mask_url);
      }
      if (status.status === "failed") throw new ApiFailure(`${status.error.message}: ${status.error.details}`);
      const frames = status.total_frames ? ` (frame ${status.current_frame} of ${status.total_frames})` : "";
      progress(status.progress_percentage, `${status.status}${frames}…`);
      await sleep(POLL_MS);
    }
  } catch (err) {
    progress(0, "");
    $("job-status").dataset.state = "failed";
    showError(err);
  }
}

$("keypoint-job").addEventListener("submit", (event) => {
  event.preventDefault();
  maskJob("/mask_by_key_points", {
    video: state.video.video,
    frame_index: state.frame,
    key_points: state.points,
    output_container_and_codec: $("kp-preset").value,
    auto_trim: state.video.needs_auto_trim,
  });
});

$("foreground-job").addEventListener("submit", (event) => {
  event.preventDefault();
  maskJob("/foreground_mask", {
    video: state.video.video,
    output_container_and_codec: $("fg-preset").value,
    model: $("fg-model").value,
  });
});

// Background API: the stored video is sent as the form's file; the result downloads once (a blob).
$("background-job").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(null);
  progress(0, "Submitting…");
  try {
    const hex = $("bg-color").value;
    const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(",");
    const video = await (await fetch(state.video.video)).blob();
    const form = new FormData();
    form.append("file", video, "input");
    form.append("bg_color", rgb);
    form.append("output_format", $("bg-format").value);
    const accepted = await (await api("/video/submit/v1", { method: "POST", form })).json();
    for (;;) {
      const response = await api(`/video/result/${accepted.uuid}`);
      if (response.status === 200) {
        const type = response.headers.get("Content-Type") || "";
        const src = type.startsWith("application/json")
          ? (await response.json()).upload_link
          : URL.createObjectURL(await response.blob());
        progress(100, "Done.");
        $("job-status").dataset.state = "completed";
        return showResult(src);
      }
      const status = await response.json();
      progress(status.progress_percentage, "processing…");
      await sleep(POLL_MS);
    }
  } catch (err) {
    progress(0, "");
    $("job-status").dataset.state = "failed";
    showError(err);
  }
});

showToken();
loadChoices().catch(showError);
