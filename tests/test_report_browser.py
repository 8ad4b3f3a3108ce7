"""Figures render in a real browser: headless Chromium loads every <img> of a page / the report.

Needs Debian's ``chromium`` (``ci/install-chromium.sh``); skips without it.

How the Snakemake (9.x) report is checked: ``report.html`` is a single-page React app. Its
figures are not ``<img>`` tags in the HTML; they are base64 ``data:`` URIs in a JS object
(``var results = {path: {mime_type, data_uri, ...}}``) and the app draws one at a time, into
an ``<img>``, when a result is clicked (``app.setView({content: "img", contentPath:
data_uri})``; ``app`` is the global the report's own code sets). The checker injects a script
into a copy of the page that, once the app is up, shows every image result in turn exactly as
a click does and records whether the ``<img>`` the app rendered loaded (``complete`` and
``naturalWidth > 0``). Chromium runs with ``--virtual-time-budget`` so the app's async
rendering and the script's waits finish, then ``--dump-dom`` gives the script's JSON verdict.
Independently, Python decodes each embedded data URI and checks it is a whole PNG (Pillow
decodes every pixel) of the size the browser saw. Plain pages: every ``<img>`` in the DOM.

Usable on any report: ``python tests/test_report_browser.py report.html [shot.png]`` or
``TAHOEFLOW_REPORT_HTML=report.html pytest tests/test_report_browser.py``.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "results" / "test-artifacts"
CHECK_ID = "tahoeflow-img-check"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]  # fmt: skip

_INJECTED = r"""
<script>
(function () {
  "use strict";
  var out = {mode: "static", phase: "start", static: [], report: [], js_errors: []};
  window.addEventListener("error", function (e) { out.js_errors.push(String(e.message || e)); });
  function publish() {
    var el = document.getElementById("%(id)s");
    if (!el) { el = document.createElement("pre"); el.id = "%(id)s"; el.style.display = "none";
               document.body.appendChild(el); }
    el.textContent = JSON.stringify(out);
    document.title = "%(id)s: " + out.phase;
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function imgState(img) {
    return {src: (img.getAttribute("src") || "").slice(0, 80), complete: img.complete,
            ok: img.complete && img.naturalWidth > 0, w: img.naturalWidth, h: img.naturalHeight};
  }
  async function settle(imgs) {
    for (var t = 0; t < 400; t++) {
      if (imgs.every(function (i) { return i.complete; })) return;
      await sleep(25);
    }
  }
  function reportApp() {  // the Snakemake report's globals: `let app` and `var results`
    try { return (typeof app !== "undefined" && app && typeof results !== "undefined") ? app : null; }
    catch (e) { return null; }
  }
  async function run() {
    await sleep(200);
    var statics = Array.prototype.slice.call(document.images);
    await settle(statics);
    out.static = statics.map(imgState);
    var a = null;
    for (var t = 0; t < 100 && !(a = reportApp()); t++) await sleep(50);
    if (a) {
      out.mode = "snakemake-report";
      var paths = Object.keys(results).filter(function (p) {
        return String(results[p].mime_type || "").indexOf("image/") === 0; });
      for (var k = 0; k < paths.length; k++) {
        var p = paths[k], uri = results[p].data_uri, img = null;
        a.setView({content: "img", contentPath: uri, resultPath: p});
        for (var t2 = 0; t2 < 400; t2++) {  // the app renders asynchronously
          img = Array.prototype.find.call(document.images, function (i) {
            return i.getAttribute("src") === uri; });
          if (img && img.complete) break;
          await sleep(25);
        }
        var st = img ? imgState(img) : {complete: false, ok: false, w: 0, h: 0};
        st.path = p; st.rendered = !!img;
        out.report.push(st);
      }
      if (paths.length) a.setView({content: "img", contentPath: results[paths[0]].data_uri,
                                   resultPath: paths[0]});  // the screenshot shows a figure
      await sleep(200);
    }
    out.phase = "done";
    publish();
  }
  window.addEventListener("load", function () {
    run().catch(function (e) { out.phase = "error: " + e; publish(); });
  });
})();
</script>
""".replace("%(id)s", CHECK_ID)


def find_chromium() -> str | None:
    for cand in (os.environ.get("TAHOEFLOW_CHROMIUM"), "/usr/bin/chromium"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def _instrument(page: str, base_dir: Path) -> str:
    """The page with a <base> (so relative image paths still resolve) and the checking script."""
    base = f'<base href="{base_dir.resolve().as_uri()}/">'
    m = re.search(r"<head[^>]*>", page, re.IGNORECASE)
    page = page[: m.end()] + base + page[m.end() :] if m else base + page
    i = page.lower().rfind("</body>")
    return page[:i] + _INJECTED + page[i:] if i >= 0 else page + _INJECTED


def _chromium(chromium: str, args: list[str], profile: Path, timeout: int) -> str:
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def embedded_report_images(page: str) -> list[dict]:
    """Decode each image in a Snakemake report's ``results`` data: [{path, ok, width, height}]."""
    from PIL import Image

    m = re.search(r"<script id=\"results\">\s*var results = (\{.*?\});\s*</script>", page, re.S)
    if not m:
        return []
    out = []
    for path, entry in json.loads(m.group(1)).items():
        if not str(entry.get("mime_type", "")).startswith("image/"):
            continue
        rec = {"path": path, "ok": False, "width": 0, "height": 0, "mime_type": entry["mime_type"]}
        uri = entry.get("data_uri", "")
        head, _, payload = uri.partition("base64,")
        try:
            data = base64.b64decode(payload, validate=True)
            if entry["mime_type"] == "image/png":
                with Image.open(io.BytesIO(data)) as im:
                    im.load()  # decodes every pixel: a truncated or corrupt PNG fails here
                    rec.update(ok=im.format == "PNG", width=im.width, height=im.height)
            else:
                rec.update(ok=head.startswith("data:image/") and len(data) > 0)
        except Exception as e:  # noqa: BLE001 - any failure to decode is the finding
            rec["error"] = str(e)[:200]
        out.append(rec)
    return out


def check_html_in_chromium(
    html_path: str | os.PathLike[str],
    screenshot_path: str | os.PathLike[str] | None,
    *,
    budget_ms: int = 30_000,
    window: tuple[int, int] = (1280, 2000),
    timeout: int = 180,
) -> dict:
    """Open ``html_path`` in headless Chromium; count images and broken images; screenshot it.

    Returns ``n_images``, ``n_broken`` (static ``<img>`` tags plus, for a Snakemake report,
    every image result shown through the app), ``mode`` (``static`` or
    ``snakemake-report``), ``static`` / ``report`` (per image: ok, natural width and height;
    a report figure is ok when the browser drew it *and* its embedded PNG decodes whole),
    ``embedded`` (Python's decode of the report's data URIs), ``js_errors``.
    """
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium found; run ci/install-chromium.sh")
    src = Path(html_path)
    page = src.read_text(encoding="utf-8", errors="replace")
    with tempfile.TemporaryDirectory(prefix="tf-chromium-") as tmp:
        tmp_dir = Path(tmp)
        probe = tmp_dir / "page.html"
        probe.write_text(_instrument(page, src.parent), encoding="utf-8")
        timing = [f"--virtual-time-budget={budget_ms}", "--run-all-compositor-stages-before-draw"]
        dom = _chromium(
            chromium, [*timing, "--dump-dom", probe.as_uri()], tmp_dir / "profile1", timeout
        )
        m = re.search(rf'<pre id="{CHECK_ID}"[^>]*>(.*?)</pre>', dom, re.S)
        if not m:
            raise RuntimeError(f"the check script did not finish (title: {_title(dom)!r})")
        result = json.loads(html_lib.unescape(m.group(1)))
        if screenshot_path is not None:
            shot = Path(screenshot_path)
            shot.parent.mkdir(parents=True, exist_ok=True)
            _chromium(
                chromium,
                [*timing, f"--window-size={window[0]},{window[1]}",
                 f"--screenshot={shot.resolve()}", probe.as_uri()],
                tmp_dir / "profile2", timeout,
            )  # fmt: skip
            if not shot.is_file():
                raise RuntimeError(f"chromium wrote no screenshot to {shot}")
    result["embedded"] = embedded_report_images(page) if result["mode"] != "static" else []
    decoded = {e["path"]: e for e in result["embedded"]}
    for fig in result["report"]:  # a browser draws a truncated PNG's top: decode it too
        fig["browser_ok"] = fig["ok"]
        fig["decoded_ok"] = decoded.get(fig["path"], {}).get("ok", False)
        fig["ok"] = fig["browser_ok"] and fig["decoded_ok"]
    images = result["static"] + result["report"]
    result["n_images"] = len(images)
    result["n_broken"] = sum(not i["ok"] for i in images)
    return result


def _title(dom: str) -> str:
    m = re.search(r"<title>(.*?)</title>", dom, re.S)
    return m.group(1) if m else ""


# --- tests -----------------------------------------------------------------------------------
pytestmark = [
    pytest.mark.workflow,
    pytest.mark.skipif(
        find_chromium() is None, reason="chromium not installed (run ci/install-chromium.sh)"
    ),
]


def _png(path: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.scatter(*rng.normal(size=(2, 300)), c=rng.uniform(size=300), s=12, cmap="viridis")
    ax.set_title(f"figure {seed}")
    fig.savefig(path)
    plt.close(fig)
    return path


def test_page_with_figures_renders(tmp_path):
    pngs = [_png(tmp_path / f"fig{i}.png", i) for i in range(3)]
    inline = base64.b64encode(pngs[2].read_bytes()).decode()
    (tmp_path / "page.html").write_text(
        "<!doctype html><html><head><title>figs</title></head><body><h1>Figures</h1>"
        '<img src="fig0.png"><img src="fig1.png">'
        f'<img src="data:image/png;base64,{inline}"></body></html>'
    )
    shot = ARTIFACTS / "browser_static_page.png"
    res = check_html_in_chromium(tmp_path / "page.html", shot)
    assert res["mode"] == "static" and res["n_images"] == 3 and res["n_broken"] == 0, res
    assert [(i["w"], i["h"]) for i in res["static"]] == [(600, 400)] * 3
    assert shot.stat().st_size > 10_000  # a real picture, not a blank page
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_images_are_counted(tmp_path):
    _png(tmp_path / "ok.png", 0)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (tmp_path / "page.html").write_text(
        '<html><body><img src="ok.png"><img src="missing.png"><img src="corrupt.png">'
        '<img src="data:image/png;base64,AAAA"></body></html>'
    )
    res = check_html_in_chromium(tmp_path / "page.html", None)
    assert res["n_images"] == 4 and res["n_broken"] == 3, res
    assert [i["ok"] for i in res["static"]] == [True, False, False, False]


def _mini_report(tmp_path: Path, corrupt: bool = False) -> Path:
    """A page with the Snakemake report's interface: `results` data + an app drawing on demand."""
    results = {}
    for i in range(3):
        data = _png(tmp_path / f"r{i}.png", 10 + i).read_bytes()
        if corrupt and i == 1:
            data = data[:200]  # a truncated PNG
        uri = "data:image/png;charset=utf8;filename=f.png;base64," + base64.b64encode(data).decode()
        results[f"results/report/figures/r{i}.png"] = {"mime_type": "image/png", "data_uri": uri}
    results["results/models/table.csv"] = {"mime_type": "text/csv", "data_uri": "data:text/csv,"}
    page = (
        "<!doctype html><html><head><title>Snakemake Report</title></head><body>"
        f'<div id="app"></div><script id="results">\n    var results = {json.dumps(results)};\n'
        "    </script><script>let app;\nclass App { constructor() { app = this; }\n"
        "  setView(v) { setTimeout(() => { document.getElementById('app').innerHTML = "
        "v.content === 'img' ? '<img src=\"' + v.contentPath + '\">' : ''; }, 30); } }\n"
        "setTimeout(() => new App(), 50);</script></body></html>"
    )
    path = tmp_path / "report.html"
    path.write_text(page)
    return path


def test_single_page_report_figures_are_walked(tmp_path):
    res = check_html_in_chromium(_mini_report(tmp_path), None)
    assert res["mode"] == "snakemake-report"
    assert res["n_images"] == 3 and res["n_broken"] == 0, res
    assert [e["ok"] for e in res["embedded"]] == [True] * 3
    (tmp_path / "corrupt").mkdir()
    bad = check_html_in_chromium(_mini_report(tmp_path / "corrupt", corrupt=True), None)
    assert bad["n_broken"] == 1 and not bad["report"][1]["ok"], bad
    # Chromium draws the top of a truncated PNG (its header gives the size); the decode catches it
    assert bad["report"][1]["browser_ok"] and not bad["report"][1]["decoded_ok"]
    assert [e["ok"] for e in bad["embedded"]] == [True, False, True]


def test_snakemake_report_renders_every_figure():
    """The real report (``TAHOEFLOW_REPORT_HTML``, e.g. after ``make report``)."""
    path = os.environ.get("TAHOEFLOW_REPORT_HTML")
    if not path:
        pytest.skip(
            "set TAHOEFLOW_REPORT_HTML=/path/to/report.html (snakemake --report) to check it"
        )
    report = Path(path)
    if not report.is_absolute():
        report = REPO / report
    assert report.is_file(), f"TAHOEFLOW_REPORT_HTML={path}: no such file"
    shot = ARTIFACTS / "browser_snakemake_report.png"
    res = check_html_in_chromium(report, shot)
    assert res["mode"] == "snakemake-report", res["mode"]
    figures = res["report"]
    assert len(figures) >= 1 and all(f["rendered"] for f in figures), figures
    assert res["n_broken"] == 0, [f for f in figures if not f["ok"]]
    decoded = {e["path"]: e for e in res["embedded"]}
    assert set(decoded) == {f["path"] for f in figures}
    for f in figures:  # what the browser drew is the embedded PNG, whole
        e = decoded[f["path"]]
        assert e["ok"] and (e["width"], e["height"]) == (f["w"], f["h"]), (f, e)
    assert not res["js_errors"], res["js_errors"]
    assert shot.stat().st_size > 10_000


if __name__ == "__main__":  # python tests/test_report_browser.py report.html [screenshot.png]
    if len(sys.argv) < 2:
        sys.exit("usage: test_report_browser.py PAGE.html [SCREENSHOT.png]")
    summary = check_html_in_chromium(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps({k: v for k, v in summary.items() if k != "static"}, indent=1))
    sys.exit(1 if summary["n_broken"] else 0)
