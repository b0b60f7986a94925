// convir web page: plain JavaScript over the JSON API (no build step).
// The session id lives in the URL fragment (#session=ID) so a reload continues the
// conversation. Sessions are private: creating one sets the owner secret as an HttpOnly,
// SameSite=Strict cookie that this script cannot read and the browser sends with every API
// call, so the link works in this browser only. A token given as #token=... is moved to
// sessionStorage and removed from the address bar, then sent as "Authorization: Bearer".
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const main = $("main");
  const TOKEN_KEY = "convir-token";
  let token = sessionStorage.getItem(TOKEN_KEY);
  let session = null;
  let busy = false;
  let llm = null;
  let blobUrls = [];

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function hashParams() {
    return new URLSearchParams(location.hash.slice(1));
  }

  // adds a query parameter to a URL that may already have some (thumbnail URLs do: ?id=...)
  function withParam(url, key, value) {
    return url + (url.includes("?") ? "&" : "?") + encodeURIComponent(key) + "=" + encodeURIComponent(value);
  }

  function writeHash() {
    const url = location.pathname + location.search + (session ? "#session=" + encodeURIComponent(session.id) : "");
    history.replaceState(null, "", url);
  }

  async function api(method, path, body, raw) {
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path.replace(/^\//, ""), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) {
      const given = window.prompt("This server needs an access token:");
      if (given && given.trim()) {
        token = given.trim();
        sessionStorage.setItem(TOKEN_KEY, token);
        return api(method, path, body, raw);
      }
      throw new ApiError(401, "unauthorized", "An access token is needed to use this server.");
    }
    if (raw && res.ok) return res;
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const detail = (data && data.detail) || res.statusText || "request failed";
      throw new ApiError(res.status, (data && data.error) || "http_error", detail);
    }
    return data;
  }

  function setBusy(on, label) {
    main.setAttribute("aria-busy", on ? "true" : "false");
    $("progress").hidden = !on;
    $("progress-text").textContent = label || "";
    for (const b of document.querySelectorAll("main button")) b.disabled = on || b.dataset.off === "1";
  }

  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message || "";
  }

  async function run(label, fn) {
    if (busy) return;
    busy = true;
    showError("");
    setBusy(true, label);
    try {
      await fn();
    } catch (e) {
      showError(e.message || String(e));
      if (e.status === 409 && session) {
        try {
          render(await api("GET", "api/sessions/" + session.id));
        } catch (ignored) {
          /* keep the message above */
        }
      }
    } finally {
      busy = false;
      setBusy(false);
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  async function loadImage(img, url) {
    try {
      const res = await api("GET", url, undefined, true);
      const blob = await res.blob();
      const u = URL.createObjectURL(blob);
      blobUrls.push(u);
      img.src = u;
    } catch (e) {
      img.replaceWith(el("div", { class: "placeholder", text: "image unavailable" }));
    }
  }

  // a photo's own metadata (issue 31): when, where, with what camera
  function photoLine(m) {
    const parts = [];
    if (typeof m.taken === "string" && m.taken_source !== "file") parts.push(m.taken.slice(0, 10));
    const p = m.place;
    if (p && typeof p === "object") parts.push([p.city, p.country].filter(Boolean).join(", "));
    if (typeof m.camera === "string") parts.push(m.camera);
    return parts.filter(Boolean).join(" · ");
  }

  function renderResults(v) {
    const finished = v.status === "found";
    const list = $("results");
    list.replaceChildren();
    for (const r of v.results) {
      const label = r.caption || r.id;
      const figure = el("figure");
      if (r.thumbnail) {
        const img = el("img", { alt: label, width: "320", height: "240", decoding: "async" });
        figure.append(img);
        loadImage(img, withParam(r.thumbnail, "size", 320));
      } else {
        figure.append(el("div", { class: "placeholder", text: "no image" }));
      }
      figure.append(
        el(
          "figcaption",
          {},
          el("span", { class: "rank", text: String(r.rank) }),
          el("span", {
            class: "caption",
            text: r.generated && !r.captions.length ? `${r.caption} (generated)` : r.caption,
            title: r.generated && !r.captions.length ? `generated by ${r.generated.captioner}` : "",
          }),
          el("code", { class: "item-id", text: r.id })
        )
      );
      const about = photoLine(r.meta || {});
      if (about) figure.append(el("p", { class: "photo-meta muted", text: about }));
      const button = el("button", {
        type: "button",
        class: "pick",
        "data-id": r.id,
        "aria-label": "This is it: " + label + " (" + r.id + ")",
        text: r.id === v.found ? "Found" : "This is it",
      });
      button.dataset.off = finished ? "1" : "0";
      button.disabled = finished;
      // relevance feedback: results like / unlike this one move up / down
      const more = el("button", {
        type: "button",
        class: "more",
        "data-id": r.id,
        "aria-label": "More like this: " + label,
        text: "More like this",
      });
      const less = el("button", {
        type: "button",
        class: "less",
        "data-id": r.id,
        "aria-label": "Not this: " + label,
        text: "Not this",
      });
      for (const b of [more, less]) {
        b.dataset.off = finished ? "1" : "0";
        b.disabled = finished;
      }
      // a new session that starts from this photo (its vector fused with the words)
      const like = el("button", {
        type: "button",
        class: "like",
        "data-id": r.id,
        "aria-label": "Start from this result: " + label,
        text: "Start from this",
      });
      const item = el(
        "li",
        { class: "result" + (r.id === v.found ? " is-found" : "") + (r.duplicate_of ? " is-duplicate" : "") },
        figure,
        button,
        el("div", { class: "feedback" }, more, less, like)
      );
      item.dataset.id = r.id;
      list.append(item);
    }
  }

  // an image-choice question: "which of these is closest?" with a picture (or caption) each
  function renderChoices(v) {
    const choices = v.choices || [];
    $("choices-box").hidden = !choices.length;
    const list = $("choices");
    list.replaceChildren();
    for (const c of choices) {
      const label = c.caption || c.id;
      const figure = el("figure");
      if (c.thumbnail) {
        const img = el("img", { alt: label, width: "320", height: "240", decoding: "async" });
        figure.append(img);
        loadImage(img, withParam(c.thumbnail, "size", 320));
      } else {
        figure.append(el("blockquote", { class: "placeholder", text: label }));
      }
      figure.append(el("figcaption", {}, el("span", { class: "rank", text: String(c.number) }), " " + label));
      const button = el("button", {
        type: "button",
        class: "choose",
        "data-id": c.id,
        "aria-label": "Closest: option " + c.number + ", " + label,
        text: "Closest to mine",
      });
      list.append(el("li", { class: "result" }, figure, button));
    }
  }

  function renderImages(v) {
    const box = $("images-box");
    box.hidden = !v.images.length;
    const list = $("images");
    list.replaceChildren();
    for (const im of v.images) {
      const figure = el("figure");
      if (im.url) {
        const img = el("img", { alt: "Generated: " + im.prompt, width: "320", height: "240" });
        figure.append(img);
        loadImage(img, im.url);
      } else {
        figure.append(el("blockquote", { class: "placeholder", text: im.prompt }));
      }
      figure.append(el("figcaption", { text: im.prompt }));
      list.append(el("li", {}, figure));
    }
    $("image-question").textContent = v.image_question || "";
  }

  function renderHistory(v) {
    const list = $("history");
    list.replaceChildren();
    for (const t of v.history) {
      const item = el("li");
      if (t.turn === 0) item.append(el("p", {}, el("strong", { text: "You: " }), t.text));
      else if (t.question) {
        item.append(el("p", {}, el("strong", { text: "Q: " }), t.question));
        item.append(el("p", {}, el("strong", { text: "A: " }), t.text === "unknown" ? "(skipped)" : t.text));
      } else item.append(el("p", {}, el("strong", { text: "You added: " }), t.text));
      if (t.top.length) item.append(el("p", { class: "muted small", text: "top: " + t.top.join(", ") }));
      list.append(item);
    }
  }

  function render(v) {
    for (const u of blobUrls) URL.revokeObjectURL(u);
    blobUrls = [];
    session = v;
    writeHash();
    const finished = v.status === "found";
    $("conversation").hidden = false;
    $("found-banner").hidden = !finished;
    $("found-banner").textContent = finished
      ? "Found " + v.found + " after " + v.turn + (v.turn === 1 ? " turn." : " turns.") + " Start a new search any time."
      : "";
    $("question-box").hidden = finished;
    const choosing = (v.choices || []).length > 0;
    $("question").textContent = choosing
      ? "Which of these is closest to the photo you want?"
      : v.question || "No question right now: add a detail below.";
    $("answer-form").hidden = !v.question || choosing;
    $("query").textContent = v.query ? "for \u201c" + v.query + "\u201d" : "";
    renderResults(v);
    renderChoices(v);
    renderImages(v);
    renderHistory(v);
  }

  function focusNext(v) {
    if (v.status === "found") $("found-banner").focus();
    else if ((v.choices || []).length) $("choices").querySelector("button").focus();
    else if (v.question) $("answer-text").focus();
    else $("say-text").focus();
  }

  function thinking() {
    return llm ? "Thinking (the language model is working)…" : "Searching…";
  }

  function turn(body) {
    const feedback = $("image-feedback").value.trim();
    if (feedback && !$("images-box").hidden) body.image_feedback = feedback;
    body.version = session.version;
    return run(thinking(), async () => {
      const v = await api("POST", "api/sessions/" + session.id + "/turns", body);
      $("answer-text").value = "";
      $("say-text").value = "";
      $("image-feedback").value = "";
      render(v);
      focusNext(v);
    });
  }

  $("describe-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const description = $("description").value.trim();
    if (!description) {
      showError("Describe the image first.");
      $("description").focus();
      return;
    }
    const body = { description };
    for (const key of ["strategy", "questioner", "imagine"]) {
      const value = $(key).value;
      if (value) body[key] = value;
    }
    run(thinking(), async () => {
      const v = await api("POST", "api/sessions", body);
      render(v);
      focusNext(v);
    });
  });

  $("answer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("answer-text").value.trim();
    if (!text) {
      showError("Type an answer, or press Skip.");
      $("answer-text").focus();
      return;
    }
    turn({ kind: "answer", text });
  });

  $("skip-btn").addEventListener("click", () => turn({ kind: "skip" }));

  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("say-text").value.trim();
    if (!text) {
      showError("Type a detail to add.");
      $("say-text").focus();
      return;
    }
    turn({ kind: "say", text });
  });

  // "hide duplicates": results that nearly duplicate a higher-ranked one (duplicate_of)
  $("hide-duplicates").addEventListener("change", (e) => {
    $("results").classList.toggle("hide-duplicates", e.target.checked);
  });

  // "start from this result": a new session whose query is this item fused with the detail
  // typed in the say box, if any ("like this, but at night")
  function startFrom(id) {
    const body = { like: id, description: $("say-text").value.trim() };
    for (const key of ["strategy", "questioner", "imagine"]) {
      const value = $(key).value;
      if (value) body[key] = value;
    }
    run(thinking(), async () => {
      const v = await api("POST", "api/sessions", body);
      $("say-text").value = "";
      $("description").value = body.description || "like " + id;
      render(v);
      focusNext(v);
    });
  }

  $("results").addEventListener("click", (e) => {
    const like = e.target.closest("button.like");
    if (like && !like.disabled) return startFrom(like.dataset.id);
    const button = e.target.closest("button.pick, button.more, button.less");
    if (!button || button.disabled) return;
    const kind = button.classList.contains("pick") ? "found" : button.classList.contains("more") ? "more" : "less";
    turn({ kind, item_id: button.dataset.id });
  });

  $("choices").addEventListener("click", (e) => {
    const button = e.target.closest("button.choose");
    if (button && !button.disabled) turn({ kind: "choose", item_id: button.dataset.id });
  });

  $("none-btn").addEventListener("click", () => turn({ kind: "choose", item_id: null }));

  $("new-btn").addEventListener("click", () => {
    session = null;
    writeHash();
    $("conversation").hidden = true;
    showError("");
    $("description").value = "";
    $("description").focus();
  });

  function fillSelect(select, names, chosen, needsLlm) {
    select.replaceChildren();
    for (const [name, help] of Object.entries(names)) {
      const disabled = needsLlm(name) && !llm;
      const option = el("option", { value: name, title: help, text: name + (disabled ? " (needs an LLM)" : "") });
      option.disabled = disabled;
      option.selected = name === chosen;
      select.append(option);
    }
  }

  async function init() {
    const params = hashParams();
    if (params.get("token")) {
      token = params.get("token");
      sessionStorage.setItem(TOKEN_KEY, token);
      history.replaceState(null, "", location.pathname + location.search);
    }
    try {
      const opts = await api("GET", "api/options");
      llm = opts.llm;
      const needs = opts.needs_llm || {};
      fillSelect($("strategy"), opts.strategies, opts.defaults.strategy, (n) => (needs.strategies || []).includes(n));
      fillSelect($("questioner"), opts.questioners, opts.defaults.questioner, (n) =>
        (needs.questioners || []).includes(n)
      );
      if (opts.imagination.length) {
        $("imagine-label").hidden = false;
        const methods = { "": "off" };
        for (const m of opts.imagination) methods[m] = m;
        fillSelect($("imagine"), methods, opts.defaults.imagine || "", () => false);
        $("imagine").options[0].textContent = "off";
      }
    } catch (e) {
      showError(e.message);
    }
    const id = params.get("session");
    if (id) {
      await run("Loading the session…", async () => {
        try {
          render(await api("GET", "api/sessions/" + encodeURIComponent(id)));
        } catch (e) {
          if (e.status === 404) {
            session = null;
            writeHash();
            throw new Error(
              "That search is not available here: it was deleted, or it was started in another browser " +
                "(searches are private to the browser that started them)."
            );
          }
          throw e;
        }
      });
    }
    if (!session) $("description").focus();
  }

  init();
})();
