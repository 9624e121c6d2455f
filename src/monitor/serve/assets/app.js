// filtermon dashboard: one script for every page; the path picks the view. Data comes from
// the JSON API; server-sent events say when to fetch it again. Text from the store (run and
// filter names, errors) only ever reaches the page as text nodes, never as HTML.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

// What the browser test reads: the charts drawn and how many times the view was refreshed.
window.filtermon = { charts: [], refreshes: 0, view: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class Unauthorized extends Error {}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (r.status === 401) throw new Unauthorized();
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

const fmt = (x, d = 4) => (x === null || x === undefined || !isFinite(x) ? "–" : Number(x).toFixed(d));
const ci = (lo, hi, d = 4) => (lo === null || hi === null || lo === undefined ? "" : `[${fmt(lo, d)}, ${fmt(hi, d)}]`);
const isRecall = (f) => f.startsWith("recall.");

function tokensText(t) {
  if (t >= 1e12) return (t / 1e12).toFixed(2) + "T";
  if (t >= 1e9) return (t / 1e9).toFixed(2) + "B";
  if (t >= 1e6) return (t / 1e6).toFixed(2) + "M";
  if (t >= 1e3) return (t / 1e3).toFixed(1) + "k";
  return String(t);
}

function ago(rfc) {
  if (!rfc) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(rfc)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

// A gap whose interval lies above zero is a regression against the baseline, below zero an
// improvement; otherwise the runs are not told apart yet.
function gapClass(r) {
  if (r.gap === null || r.gap === undefined || r.gap_ci_lo === null) return "";
  if (r.gap_ci_lo > 0) return "worse";
  if (r.gap_ci_hi < 0) return "better";
  return "even";
}

function params() {
  return new URLSearchParams(location.search);
}

function setParam(key, value) {
  const p = params();
  if (value === null || value === undefined || value === "") p.delete(key);
  else p.set(key, value);
  history.replaceState(null, "", `${location.pathname}?${p}`);
}

function select(name, options, current, onchange) {
  const s = el("select", { name, onchange: (e) => onchange(e.target.value) },
    options.map((o) => el("option", { value: o, selected: o === current }, o)));
  return el("label", {}, `${name} `, s);
}

// ---- overview -------------------------------------------------------------------------

async function overview(main) {
  const [data, alerts] = await Promise.all([api("/api/runs"), api("/api/alerts")]);
  const evalsets = [...new Set(data.runs.flatMap((r) => r.latest.map((x) => x.evalset)))].sort();
  const evalset = evalsets.includes(params().get("evalset")) ? params().get("evalset") : evalsets[0];
  const q = data.queue;
  main.replaceChildren(
    el("section", {},
      el("h2", {}, "Runs"),
      el("p", { class: "queue", id: "queue" },
        `queue: ${q.queued} queued, ${q.running} running, ${q.done} done, ${q.failed} failed`),
      runsTable(data.runs)),
    el("section", {},
      el("h2", {}, "Latest filtered loss"),
      evalsets.length ? select("evalset", evalsets, evalset, (v) => { setParam("evalset", v); refresh(); }) : null,
      evalset ? latestTable(data.runs, evalset) : el("p", {}, "nothing scored yet")),
    alertsSection(alerts),
    failuresSection(data.failures) || "");
}

function runsTable(runs) {
  if (!runs.length) return el("p", {}, "no runs yet");
  return el("table", { id: "runs" },
    el("thead", {}, el("tr", {}, ["run", "arch", "baseline", "done", "queued", "running", "failed", "tokens", "last scored"].map((h) => el("th", {}, h)))),
    el("tbody", {}, runs.map((r) => {
      const tokens = Math.max(0, ...r.latest.map((x) => x.tokens));
      const c = r.checkpoints;
      return el("tr", { "data-run": r.name },
        el("td", {}, r.name, r.waiting_for_folder ? el("span", { class: "muted" }, " (waiting for its folder)") : null),
        el("td", {}, r.arch), el("td", {}, r.baseline || "–"),
        el("td", { class: "num" }, c.done), el("td", { class: "num" }, c.queued),
        el("td", { class: "num" }, c.running), el("td", { class: c.failed ? "num worse" : "num" }, c.failed),
        el("td", { class: "num" }, r.latest.length ? tokensText(tokens) : "–"),
        el("td", {}, ago(r.last_scored_at)));
    })));
}

function latestTable(runs, evalset) {
  const filters = [];
  for (const r of runs) for (const x of r.latest) if (x.evalset === evalset && !isRecall(x.filter) && !filters.includes(x.filter)) filters.push(x.filter);
  return el("div", { class: "scroll" }, el("table", { id: "latest" },
    el("thead", {}, el("tr", {}, el("th", {}, "run"), el("th", {}, "checkpoint"), filters.map((f) =>
      el("th", {}, el("a", { href: `/curves?evalset=${encodeURIComponent(evalset)}&filter=${encodeURIComponent(f)}` }, f))))),
    el("tbody", {}, runs.map((r) => {
      const rows = r.latest.filter((x) => x.evalset === evalset);
      const ck = rows[0];
      return el("tr", { "data-run": r.name },
        el("td", {}, r.name),
        el("td", {}, ck ? el("a", { href: `/checkpoints/${ck.checkpoint_id}` }, `${ck.checkpoint} (${ck.kind})`) : "–"),
        filters.map((f) => {
          const x = rows.find((y) => y.filter === f);
          if (!x) return el("td", {}, "–");
          const gap = x.gap === null ? null : el("div", { class: "gap" }, `gap ${x.gap >= 0 ? "+" : ""}${fmt(x.gap)} ${ci(x.gap_ci_lo, x.gap_ci_hi)}`);
          return el("td", { class: `cell ${gapClass(x)}`, title: `n = ${x.n}, top-1 ${fmt(x.top1, 3)}` },
            el("div", {}, fmt(x.mean)), el("div", { class: "ci" }, ci(x.ci_lo, x.ci_hi)), gap);
        }));
    }))));
}

function alertsSection(alerts) {
  const open = alerts.filter((a) => !a.acked_at);
  const acked = alerts.filter((a) => a.acked_at);
  const row = (a) => el("tr", { "data-alert": a.id },
    el("td", {}, a.fired_at.replace("T", " ").slice(0, 19)), el("td", {}, a.rule), el("td", {}, a.run),
    el("td", {}, `${a.evalset}/${a.filter}`), el("td", {}, a.message),
    el("td", {}, a.acked_at ? `acknowledged ${a.acked_at.replace("T", " ").slice(0, 19)}` :
      el("button", { onclick: () => ack(a.id) }, "Acknowledge")));
  return el("section", { id: "alerts" },
    el("h2", {}, `Alerts (${open.length} open)`),
    open.length ? el("table", {}, el("tbody", {}, open.map(row))) : el("p", {}, "no open alerts"),
    acked.length ? el("details", {}, el("summary", {}, `${acked.length} acknowledged`), el("table", {}, el("tbody", {}, acked.map(row)))) : null);
}

async function ack(id) {
  try {
    await api("/api/alerts", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ack: id }) });
    refresh();
  } catch (e) {
    if (e instanceof Unauthorized) askToken("Acknowledging needs the dashboard's token.");
    else alert(e.message);
  }
}

function failuresSection(failures) {
  if (!failures.length) return null;
  return el("section", { id: "failures" }, el("h2", {}, "Failures"),
    el("table", {}, el("tbody", {}, failures.map((f) => el("tr", {},
      el("td", {}, `${f.run}/${f.checkpoint}`), el("td", {}, f.evalset),
      el("td", { class: f.state === "failed" ? "worse" : "" }, f.state === "failed" ? "failed for good" : "will retry"),
      el("td", {}, `${f.attempts} attempt(s), ${f.lost_leases} lost lease(s)`), el("td", { class: "error" }, f.error))))));
}

// ---- charts -------------------------------------------------------------------------

// One chart of `field` over x for every run: the stable checkpoints as a line with dots, the
// annealed ones as a dashed line with larger points, as in the PNG charts. The legend shows
// the hovered value with its interval; clicking a run's entry hides it.
function lineChart(target, title, rows, field, x, logX) {
  const key = (r) => (x === "step" ? r.step : r.tokens);
  const usable = rows.filter((r) => r[field] !== null && r[field] !== undefined && (!logX || key(r) > 0));
  const xs = [...new Set(usable.map(key))].sort((a, b) => a - b);
  const runs = [...new Set(usable.map((r) => r.run))].sort();
  const data = [xs];
  const series = [{ label: x === "step" ? "step" : "tokens", value: (u, v) => (v === null ? "–" : x === "step" ? v : tokensText(v)) }];
  const bands = [];
  runs.forEach((run, i) => {
    for (const kind of ["stable", "anneal"]) {
      const mine = usable.filter((r) => r.run === run && r.kind === kind);
      if (!mine.length) continue;
      const at = new Map(mine.map((r) => [key(r), r]));
      const ys = xs.map((t) => (at.has(t) ? at.get(t)[field] : null));
      const lo = xs.map((t) => (at.has(t) ? at.get(t)[field === "gap" ? "gap_ci_lo" : "ci_lo"] : null));
      const hi = xs.map((t) => (at.has(t) ? at.get(t)[field === "gap" ? "gap_ci_hi" : "ci_hi"] : null));
      const color = COLORS[i % COLORS.length];
      series.push({
        label: kind === "anneal" ? `${run} (annealed)` : run,
        stroke: color,
        width: kind === "anneal" ? 1.5 : 2,
        dash: kind === "anneal" ? [6, 4] : undefined,
        spanGaps: true,
        points: { show: true, size: kind === "anneal" ? 9 : 5, fill: kind === "anneal" ? "#fff" : color },
        value: (u, v, s, idx) => (v === null || idx === null ? "–" : `${fmt(v)} ${ci(lo[idx], hi[idx])}`),
      });
      data.push(ys);
      bands.push({ lo, hi });
    }
  });
  const width = Math.max(360, Math.min(1100, target.clientWidth || 900));
  const chart = new uPlot({
    title, width, height: 320,
    scales: { x: { time: false, distr: logX ? 3 : 1 } },
    axes: [{ label: x === "step" ? "step" : "tokens seen", values: (u, ticks) => ticks.map((t) => (x === "step" ? t : tokensText(t))) },
      { label: field === "gap" ? "gap to baseline (nats)" : "mean NLL (nats)", size: 70 }],
    series,
  }, data, target);
  chart.filtermonRuns = runs;
  window.filtermon.charts.push(chart);
  return chart;
}

async function curves(main) {
  const runsData = await api("/api/runs");
  const evalsets = [...new Set(runsData.runs.flatMap((r) => r.latest.map((x) => x.evalset)))].sort();
  if (!evalsets.length) {
    main.replaceChildren(el("p", {}, "nothing scored yet"));
    return;
  }
  const p = params();
  const evalset = evalsets.includes(p.get("evalset")) ? p.get("evalset") : evalsets[0];
  const rows = await api(`/api/curves?evalset=${encodeURIComponent(evalset)}`);
  const filters = [...new Set(rows.map((r) => r.filter))];
  const filter = filters.includes(p.get("filter")) ? p.get("filter") : filters[0];
  const x = p.get("x") === "step" ? "step" : "tokens";
  const logX = p.get("log") === "1";
  const mine = rows.filter((r) => r.filter === filter);
  const lossBox = el("div", { class: "chart", id: "loss-chart" });
  const gapBox = el("div", { class: "chart", id: "gap-chart" });
  main.replaceChildren(
    el("div", { class: "controls" },
      select("evalset", evalsets, evalset, (v) => { setParam("evalset", v); refresh(); }),
      select("filter", filters, filter, (v) => { setParam("filter", v); refresh(); }),
      select("x", ["tokens", "step"], x, (v) => { setParam("x", v === "step" ? "step" : null); refresh(); }),
      el("label", {}, el("input", { type: "checkbox", checked: logX, onchange: (e) => { setParam("log", e.target.checked ? "1" : null); refresh(); } }), " log x")),
    lossBox, gapBox);
  window.filtermon.charts = [];
  lineChart(lossBox, `${evalset} / ${filter}: loss`, mine, "mean", x, logX);
  if (mine.some((r) => r.gap !== null)) lineChart(gapBox, `${evalset} / ${filter}: gap to baseline`, mine, "gap", x, logX);
  else gapBox.append(el("p", { class: "muted" }, "no paired gaps: no run has a baseline checkpoint at the same tokens"));
}

// ---- recall ---------------------------------------------------------------------------

// The recall rows of each run's latest scored checkpoint, as curves over their bin: retrieval
// gain by gap (probe evalsets), the recall cliff by copy distance, and loss by repeat length.
async function recall(main) {
  const rows = (await api("/api/curves")).filter((r) => isRecall(r.filter) && r.mean !== null && r.n > 0);
  const evalsets = [...new Set(rows.map((r) => r.evalset))].sort();
  if (!evalsets.length) {
    main.replaceChildren(el("p", {}, "no recall rows yet"));
    return;
  }
  const evalset = evalsets.includes(params().get("evalset")) ? params().get("evalset") : evalsets[0];
  const mine = rows.filter((r) => r.evalset === evalset);
  const latest = new Map();
  for (const r of mine) {
    const best = latest.get(r.run);
    if (!best || r.tokens > best.tokens || (r.tokens === best.tokens && r.kind === "anneal")) latest.set(r.run, r);
  }
  const pick = mine.filter((r) => latest.get(r.run).checkpoint === r.checkpoint);
  const families = [
    ["recall.gain@", "retrieval gain by gap (nats)", "gap (tokens)"],
    ["recall.copy5@", "recall cliff: COPY-5 loss by copy distance (nats)", "copy distance bin"],
    ["recall.copy_n@", "copy-n: loss by repeat length (nats)", "repeat length n"],
  ];
  main.replaceChildren(el("div", { class: "controls" },
    select("evalset", evalsets, evalset, (v) => { setParam("evalset", v); refresh(); }),
    el("span", { class: "muted" }, `latest checkpoint per run: ${[...latest.values()].map((r) => `${r.run} ${r.checkpoint}`).join(", ")}`)));
  window.filtermon.charts = [];
  for (const [prefix, title, xLabel] of families) {
    const fam = pick.filter((r) => r.filter.startsWith(prefix));
    if (!fam.length) continue;
    const bins = [...new Set(fam.map((r) => r.filter.slice(prefix.length)))].sort((a, b) => parseInt(a) - parseInt(b));
    const runs = [...new Set(fam.map((r) => r.run))].sort();
    const box = el("div", { class: "chart" });
    main.append(box);
    const series = [{ label: xLabel, value: (u, v) => (v === null ? "–" : bins[v]) }];
    const data = [bins.map((_, i) => i)];
    runs.forEach((run, i) => {
      const at = new Map(fam.filter((r) => r.run === run).map((r) => [r.filter.slice(prefix.length), r]));
      data.push(bins.map((b) => (at.has(b) ? at.get(b).mean : null)));
      series.push({
        label: run, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 6 },
        value: (u, v, s, idx) => {
          const r = idx === null ? null : at.get(bins[idx]);
          return r ? `${fmt(r.mean)} ${ci(r.ci_lo, r.ci_hi)} n=${r.n}` : "–";
        },
      });
    });
    window.filtermon.charts.push(new uPlot({
      title, width: Math.max(360, Math.min(1100, main.clientWidth || 900)), height: 280,
      scales: { x: { time: false } },
      axes: [{ label: xLabel, values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) && bins[t] !== undefined ? bins[t] : "")) }, { size: 70 }],
      series,
    }, data, box));
  }
}

// ---- checkpoint -----------------------------------------------------------------------

async function checkpoint(main, id) {
  const d = await api(`/api/checkpoints/${encodeURIComponent(id)}`);
  const resultTable = el("table", { id: "results" },
    el("thead", {}, el("tr", {}, ["evalset", "filter", "mean", "95% CI", "n", "top-1", "top-5", "gap", "gap CI"].map((h) => el("th", {}, h)))),
    el("tbody", {}, d.results.map((r) => el("tr", {},
      el("td", {}, r.evalset), el("td", {}, r.filter), el("td", { class: "num" }, fmt(r.mean)), el("td", {}, ci(r.ci_lo, r.ci_hi)),
      el("td", { class: "num" }, r.n), el("td", { class: "num" }, fmt(r.top1, 3)), el("td", { class: "num" }, fmt(r.top5, 3)),
      el("td", { class: `num ${gapClass(r)}` }, fmt(r.gap)), el("td", {}, ci(r.gap_ci_lo, r.gap_ci_hi))))));
  const domainTable = d.domains.length ? el("table", { id: "domains" },
    el("thead", {}, el("tr", {}, ["evalset", "domain", "filter", "mean", "95% CI", "n", "top-1"].map((h) => el("th", {}, h)))),
    el("tbody", {}, d.domains.map((r) => el("tr", {},
      el("td", {}, r.evalset), el("td", {}, r.domain), el("td", {}, r.filter), el("td", { class: "num" }, fmt(r.mean)),
      el("td", {}, ci(r.ci_lo, r.ci_hi)), el("td", { class: "num" }, r.n), el("td", { class: "num" }, fmt(r.top1, 3))))))
    : el("p", { class: "muted" }, d.domains_error ? `no per-domain table: ${d.domains_error}` : "no per-domain table yet");
  main.replaceChildren(
    el("h2", {}, `${d.run} / ${d.checkpoint}`),
    el("p", {}, `step ${d.step}, ${tokensText(d.tokens)} tokens, ${d.kind}; ready ${d.ready_at.replace("T", " ").slice(0, 19)}; `, el("code", {}, d.path)),
    el("h3", {}, "Jobs"),
    el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ["evalset", "state", "attempts", "lost leases", "scoring (s)", "queued", "finished", "error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.jobs.map((j) => el("tr", {},
        el("td", {}, j.evalset), el("td", { class: j.state === "failed" ? "worse" : "" }, j.state), el("td", { class: "num" }, j.attempts),
        el("td", { class: "num" }, j.lost_leases), el("td", { class: "num" }, fmt(j.score_secs, 2)),
        el("td", {}, j.queued_at.replace("T", " ").slice(0, 19)), el("td", {}, j.finished_at ? j.finished_at.replace("T", " ").slice(0, 19) : "–"),
        el("td", { class: "error" }, j.error || ""))))),
    el("h3", {}, "Results"), resultTable,
    el("h3", {}, "By domain"), domainTable);
}

// ---- shell ----------------------------------------------------------------------------

function askToken(why) {
  const main = document.getElementById("main");
  const input = el("input", { type: "password", name: "token", autocomplete: "off" });
  main.replaceChildren(el("form", { class: "token", onsubmit: (e) => {
    e.preventDefault();
    document.cookie = `filtermon_token=${encodeURIComponent(input.value)}; path=/; SameSite=Strict`;
    location.reload();
  } }, el("p", {}, why), el("label", {}, "token ", input), el("button", { type: "submit" }, "Open")));
}

let running = null;
let again = false;

// Draws the current view; a refresh asked for while one runs happens once it is done.
async function refresh() {
  if (running) {
    again = true;
    return running;
  }
  const main = document.getElementById("main");
  const path = location.pathname;
  const m = path.match(/^\/checkpoints\/([^/]+)$/);
  const view = m ? "checkpoint" : path === "/curves" ? "curves" : path === "/recall" ? "recall" : "overview";
  window.filtermon.view = view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  running = (async () => {
    try {
      if (view === "overview") await overview(main);
      else if (view === "curves") await curves(main);
      else if (view === "recall") await recall(main);
      else await checkpoint(main, decodeURIComponent(m[1]));
      window.filtermon.refreshes += 1;
    } catch (e) {
      if (e instanceof Unauthorized) askToken("This dashboard is private: enter its token.");
      else main.replaceChildren(el("p", { class: "error" }, `error: ${e.message}`));
    }
  })();
  await running;
  running = null;
  if (again) {
    again = false;
    refresh();
  }
}

function listen() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  };
  events.addEventListener("hello", () => { live.textContent = "live"; live.className = "live on"; });
  for (const kind of ["results", "alerts", "queue", "resync"]) events.addEventListener(kind, soon);
  events.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
}

refresh();
listen();
