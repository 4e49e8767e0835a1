// Homepage viewer: pick a user, see their page as rows of cards, explain it, compare two
// policies, and (in development mode) click a card to record a play. Plain JS, no build step.
"use strict";

const KEY_FEATURES = ["pers_mean", "pop_mean", "trend_mean", "dup_share"];
const state = { cfg: null, user: null, explain: false, compare: false, policyA: null, policyB: null, pages: [], loads: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(`${url}: ${r.status} ${body.detail || r.statusText}`);
    err.status = r.status;
    err.retryAfter = Number(r.headers.get("Retry-After")) || 0;
    throw err;
  }
  return body;
}

// the config, asked again while the service answers 503 (starting: no version loaded yet) or not at all
async function getConfig() {
  for (;;) {
    try {
      return await getJSON("/viewer/config");
    } catch (e) {
      if (e.status !== undefined && e.status !== 503) {
        setStatus(`The viewer cannot start: ${e.message}`);
        return null;
      }
      const wait = Math.min(Math.max(e.retryAfter || 2, 1), 30);
      setStatus(`The service is not ready: ${e.message}; trying again in ${wait} s.`);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

function fmt(x, digits = 3) {
  return x === null || x === undefined ? "n/a" : Number(x).toFixed(digits);
}

function placeholderSrc(card) {
  return `/artwork/${card.title_id}/${encodeURIComponent(card.variant_id || "default")}.svg`;
}

function artSrc(card) {
  if (state.cfg.external_images && /^https?:\/\//i.test(card.image_url || "")) return card.image_url;
  return placeholderSrc(card);
}

// an external image that fails (404, no network) shows the variant's placeholder, not a broken image
function artNode(card, label) {
  const img = el("img", { src: artSrc(card), alt: `${label} poster`, width: 150, height: 225, loading: "lazy" });
  const fallback = placeholderSrc(card);
  img.addEventListener("error", () => {
    if (img.getAttribute("src") !== fallback) img.src = fallback;
  });
  return img;
}

function reasonText(reason) {
  const parts = [];
  if (reason.anchor_title_id !== null && reason.anchor_title_id !== undefined) parts.push(`anchor title ${reason.anchor_title_id}`);
  if (reason.genre) parts.push(reason.genre);
  if (reason.region) parts.push(`region ${reason.region}`);
  return parts.length ? `${reason.kind} (${parts.join(", ")})` : reason.kind;
}

function featureList(row, top) {
  const list = el("ul", { class: "features" });
  if (top && top.length) {
    for (const f of top) {
      const sign = f.contribution >= 0 ? "+" : "";
      const value = f.category !== null && f.category !== undefined ? f.category : fmt(f.value);
      list.append(el("li", { text: `${f.name} = ${value} (${sign}${fmt(f.contribution)})` }));
    }
  } else if (row.features) {
    for (const name of KEY_FEATURES) list.append(el("li", { text: `${name} = ${fmt(row.features[name])}` }));
  }
  return list;
}

function explainRow(row, top) {
  const stage = row.features ? row.features.stage : null;
  const dl = el("dl", { class: "explain explain-row" });
  const item = (k, v) => dl.append(el("div", {}, el("dt", { text: k }), el("dd", {}, v)));
  item("Ranker", row.ranker);
  item("Reason", reasonText(row.reason));
  item("Stage", stage === null || stage === undefined ? "n/a" : String(stage));
  item("Score", fmt(row.score));
  item(top && top.length ? "Top features (SHAP)" : "Key features", featureList(row, top));
  return dl;
}

function cardNode(card, ri, ci, ctx) {
  const only = ctx.onlyHere && !ctx.other.has(card.title_id);
  const label = `${card.name}${card.year ? ` (${card.year})` : ""}`;
  const explainId = `p${ctx.page}-r${ri}-c${ci}-explain`;
  const button = el(
    "button",
    {
      type: "button",
      class: "card" + (only ? " only-here" : ""),
      "data-title-id": card.title_id,
      "data-row": ri,
      "data-col": ci,
      tabindex: ri === 0 && ci === 0 ? 0 : -1,
      "aria-label": (state.cfg.play_enabled ? "Play " : "") + label + (only ? `, only in ${ctx.policy}` : ""),
      "data-explain": explainId,
      "aria-describedby": state.explain ? explainId : null, // a button's name hides its content
    },
    artNode(card, label),
    // dir=auto: a Hebrew or Arabic title runs right to left, so its ellipsis cuts its end, not its first words
    el("span", { class: "card-title", dir: "auto", text: label }),
    only ? el("span", { class: "badge", text: `only in ${ctx.policy}` }) : null,
    el("span", { id: explainId, class: "explain explain-card", text: `variant ${card.variant_id || "default"} · propensity ${fmt(card.propensity, 2)}` }),
  );
  button.addEventListener("click", () => play(card));
  return el("li", {}, button);
}

function pageNode(page, idx, other) {
  const headingId = `page-${idx}-heading`;
  const section = el("section", { class: "page", "aria-labelledby": headingId, "data-policy": page.policy });
  const title = `${page.policy} page for user ${page.user_id}`;
  section.append(el("h2", { id: headingId, text: title }));
  section.append(
    el("p", { class: "explain meta", text: `model ${page.model_version} · store ${page.store_version} · config ${page.config_hash}` }),
  );
  if (page.degraded) section.append(el("p", { class: "warn", text: "Degraded: the fallback page (popular rows)." }));
  if (!page.rows.length) section.append(el("p", { text: "No rows." }));
  const ctx = { page: idx, onlyHere: other !== null, other: other || new Set(), policy: page.policy };
  page.rows.forEach((row, ri) => {
    const rowId = `p${idx}-r${ri}`;
    const top = page.top_features ? page.top_features[ri] : null;
    const rowSection = el("section", { class: "row", "aria-labelledby": rowId, "data-ranker": row.ranker });
    rowSection.append(el("h3", { id: rowId, text: row.display_title }));
    rowSection.append(explainRow(row, top));
    const list = el("ul", { class: "cards", "aria-label": row.display_title });
    row.titles.forEach((card, ci) => list.append(cardNode(card, ri, ci, ctx)));
    rowSection.append(list);
    section.append(rowSection);
  });
  return section;
}

function titleSet(page) {
  return new Set(page.rows.flatMap((r) => r.titles.map((t) => t.title_id)));
}

function render() {
  const main = $("pages");
  main.replaceChildren();
  main.classList.toggle("compare", state.pages.length > 1);
  const sets = state.pages.map(titleSet);
  state.pages.forEach((page, i) => {
    const other = state.pages.length > 1 ? sets[1 - i] : null;
    main.append(pageNode(page, i, other));
  });
}

// true when this call's pages are shown; false when it failed or a later call superseded it
// (a slow answer for the previous user or policy must not replace the one asked for last).
// A new user, policy or compare is a new history entry (push), so Back returns to the last view.
async function load(push = true) {
  if (state.user === null) return false;
  saveUrl(push);
  const seq = ++state.loads;
  const user = state.user;
  const policies = state.compare ? [state.policyA, state.policyB] : [state.policyA];
  setStatus(`Loading user ${user}…`);
  let pages;
  try {
    pages = await Promise.all(policies.map((p) => getJSON(`/viewer/page/${user}?policy=${encodeURIComponent(p)}`)));
  } catch (e) {
    if (seq !== state.loads) return false;
    state.pages = []; // not the previous user's page under this user's id (a click would play for this user)
    render();
    setStatus(`Could not load the page: ${e.message}`);
    return false;
  }
  if (seq !== state.loads) return false;
  state.pages = pages;
  render();
  const rows = state.pages.map((p) => p.rows.length).join(" and ");
  setStatus(`User ${user}: ${rows} rows (${policies.join(" vs ")}).`);
  return true;
}

async function play(card) {
  if (!state.cfg.play_enabled) {
    setStatus(`${card.name}: click-to-play is off (start the service with HOMEPAGE_DEV=1 and no API key to record plays).`);
    return;
  }
  const event = { user_id: state.user, title_id: card.title_id, kind: "play", progress: 0.35, watch_seconds: 1800 };
  try {
    await getJSON("/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(event) });
  } catch (e) {
    setStatus(`Could not record the play: ${e.message}`);
    return;
  }
  if (!(await load())) return;
  setStatus(`Recorded a play of ${card.name} for user ${state.user}; the page was rebuilt.`);
  const again = document.querySelector(`.card[data-title-id="${card.title_id}"]`);
  if (again) focusCard(again);
}

// keyboard: one card in the tab order; arrows move within a row and between rows
function focusCard(target) {
  for (const c of target.closest(".page").querySelectorAll(".card[tabindex='0']")) c.tabIndex = -1;
  target.tabIndex = 0;
  target.focus();
  target.scrollIntoView({ block: "nearest", inline: "nearest" });
}

function onKey(e) {
  const card = e.target.closest && e.target.closest(".card");
  if (!card) return;
  const page = card.closest(".page");
  const rows = [...page.querySelectorAll(".row")].map((r) => [...r.querySelectorAll(".card")]);
  const ri = Number(card.dataset.row);
  const ci = Number(card.dataset.col);
  let r = ri;
  let c = ci;
  if (e.key === "ArrowRight") c += 1;
  else if (e.key === "ArrowLeft") c -= 1;
  else if (e.key === "ArrowDown") r += 1;
  else if (e.key === "ArrowUp") r -= 1;
  else if (e.key === "Home") c = 0;
  else if (e.key === "End") c = rows[ri].length - 1;
  else return;
  e.preventDefault();
  if (r < 0 || r >= rows.length) return;
  c = Math.max(0, Math.min(c, rows[r].length - 1));
  if (rows[r][c]) focusCard(rows[r][c]);
}

function fillPolicies() {
  for (const id of ["policy-a", "policy-b"]) $(id).replaceChildren(...state.cfg.policies.map((p) => el("option", { value: p, text: p })));
}

// the controls show the state (after reading the URL: at start, and on Back/Forward)
function showState() {
  const { policies, default_policy: def } = state.cfg;
  if (!policies.includes(state.policyA)) state.policyA = def;
  if (!policies.includes(state.policyB)) state.policyB = policies.find((p) => p !== state.policyA) || def;
  $("policy-a").value = state.policyA;
  $("policy-b").value = state.policyB;
  setExplain(state.explain);
  $("compare-toggle").checked = state.compare;
  $("policy-b").disabled = !state.compare;
  $("user-id").value = state.user === null ? "" : state.user;
}

async function fillSamples() {
  const list = $("samples");
  try {
    const { samples } = await getJSON("/viewer/users");
    list.replaceChildren(
      ...samples.map((s) => {
        const b = el("button", { type: "button", class: "sample", "data-user-id": s.user_id, "data-label": s.label, text: `${s.label}: user ${s.user_id} (${s.events} ${s.events === 1 ? "event" : "events"})` });
        b.addEventListener("click", () => pickUser(s.user_id));
        return el("li", {}, b);
      }),
    );
  } catch (e) {
    list.replaceChildren(el("li", { text: `No sample users: ${e.message}` }));
  }
}

function pickUser(id) {
  state.user = id;
  $("user-id").value = id;
  load();
}

function saveUrl(push) {
  const q = new URLSearchParams();
  if (state.user !== null) q.set("user", state.user);
  q.set("policy", state.policyA);
  if (state.compare) q.set("compare", state.policyB);
  if (state.explain) q.set("explain", "1");
  const search = `?${q}`;
  if (search === location.search) return;
  if (push) history.pushState(null, "", search);
  else history.replaceState(null, "", search);
}

function readUrl() {
  const q = new URLSearchParams(location.search);
  const user = q.get("user");
  state.user = user !== null && /^\d+$/.test(user) ? Number(user) : null;
  state.policyA = q.get("policy");
  state.policyB = q.get("compare");
  state.compare = q.has("compare");
  state.explain = q.get("explain") === "1";
}

function setExplain(on) {
  state.explain = on;
  document.body.classList.toggle("explaining", on);
  for (const card of document.querySelectorAll(".card")) {
    if (on) card.setAttribute("aria-describedby", card.dataset.explain);
    else card.removeAttribute("aria-describedby");
  }
  $("explain-toggle").checked = on;
}

async function init() {
  readUrl();
  state.cfg = await getConfig();
  if (state.cfg === null) return;
  fillPolicies();
  showState();
  const note = $("play-note");
  note.hidden = false;
  note.textContent = state.cfg.play_enabled
    ? "Development mode: clicking a card records a play of it and rebuilds the page."
    : "Read-only: click-to-play needs the service in development mode (HOMEPAGE_DEV=1, no API key).";
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("user-id").value;
    if (/^\d+$/.test(v)) pickUser(Number(v));
  });
  $("explain-toggle").addEventListener("change", (e) => {
    setExplain(e.target.checked);
    saveUrl(false);
  });
  $("compare-toggle").addEventListener("change", (e) => {
    state.compare = e.target.checked;
    $("policy-b").disabled = !state.compare;
    load();
  });
  $("policy-a").addEventListener("change", (e) => {
    state.policyA = e.target.value;
    load();
  });
  $("policy-b").addEventListener("change", (e) => {
    state.policyB = e.target.value;
    load();
  });
  $("pages").addEventListener("keydown", onKey);
  window.addEventListener("popstate", onHistory);
  setStatus(`Model ${state.cfg.model_version}: pick a user.`);
  await fillSamples();
  await load(false);
}

// Back/Forward: show the view the URL names (no new history entry)
function onHistory() {
  readUrl();
  showState();
  if (state.user !== null) {
    load(false);
    return;
  }
  state.loads += 1; // an answer still on its way is for a view left behind
  state.pages = [];
  render();
  setStatus(`Model ${state.cfg.model_version}: pick a user.`);
}

document.addEventListener("DOMContentLoaded", init);
