"""Open a `flashseg report` page in headless Chromium: every image loads, the page is not blank.

    python benchmarks/check_report_chromium.py REPORT_DIR [--screenshot page.png]

Needs Debian's `chromium` (apt-get install chromium); tests/test_report.py
runs it when chromium is on the PATH. Steps:

1. a copy of REPORT_DIR/index.html, beside it, with a small script added that
   waits for the page's load event and writes, into the DOM, how many
   <img> elements there are and how many loaded (complete, with a natural
   width > 0); `chromium --headless --dump-dom` prints that DOM;
2. a screenshot of the page itself (`--screenshot`), read back: it must hold
   more than a few distinct colours and a fair share of non-white pixels.

Both open the page as a file:// URL, from a copy of the directory, with
every network request sent to a dead proxy, so the page passes only if it
works offline. Prints one line per check; exits 1 when one fails, 2 when
chromium is missing.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

PROBE = """<script>
window.addEventListener("load", function () {
  var images = document.images, loaded = 0, broken = [];
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) loaded++;
    else broken.push(images[i].getAttribute("src"));
  }
  var out = document.createElement("pre");
  out.id = "flashseg-probe";
  out.textContent = "IMAGES " + loaded + "/" + images.length + " BROKEN [" + broken.join(",") + "]";
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], profile: str) -> subprocess.CompletedProcess:
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
            "--proxy-server=http://127.0.0.1:9", "--allow-file-access-from-files"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


def check(report_dir: str, screenshot: str | None = None) -> list[tuple[bool, str]]:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    results = []
    with tempfile.TemporaryDirectory(prefix="flashseg-chromium-") as work:
        copy = os.path.join(work, "report")
        shutil.copytree(report_dir, copy)
        page = os.path.join(copy, "index.html")
        with open(page, encoding="utf-8") as handle:
            text = handle.read()
        probe = os.path.join(copy, "probe.html")
        with open(probe, "w", encoding="utf-8") as handle:
            handle.write(text.replace("</body>", PROBE + "</body>"))
        proc = _run(browser, ["--virtual-time-budget=10000", "--dump-dom", "file://" + probe],
                    os.path.join(work, "profile1"))
        match = re.search(r"IMAGES (\d+)/(\d+) BROKEN \[([^\]]*)\]", proc.stdout)
        if match is None:
            results.append((False, f"the probe did not run (chromium exit {proc.returncode}): "
                                   f"{proc.stderr.strip()[-300:]}"))
        else:
            loaded, total, broken = int(match.group(1)), int(match.group(2)), match.group(3)
            ok = total > 0 and loaded == total
            results.append((ok, f"images loaded: {loaded}/{total}" + (f" (broken: {broken})" if broken else "")))
        shot = screenshot or os.path.join(work, "page.png")
        proc = _run(browser, ["--window-size=1280,2000", "--hide-scrollbars", f"--screenshot={shot}",
                              "file://" + page], os.path.join(work, "profile2"))
        if not os.path.exists(shot):
            results.append((False, f"no screenshot (chromium exit {proc.returncode}): {proc.stderr.strip()[-300:]}"))
        else:
            import numpy as np
            from PIL import Image

            pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
            colours = len(np.unique(pixels.astype(np.uint32) @ np.array([65536, 256, 1], dtype=np.uint32)))
            inked = float(np.mean(pixels.min(axis=1) < 245))
            ok = colours > 16 and inked > 0.02
            results.append((ok, f"screenshot {pixels.shape[0]:,} pixels: {colours:,} distinct colours, "
                                f"{100 * inked:.1f}% not white"))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir")
    parser.add_argument("--screenshot", help="keep the screenshot here")
    args = parser.parse_args()
    try:
        results = check(args.report_dir, args.screenshot)
    except FileNotFoundError as exc:
        print(exc)
        return 2
    for ok, line in results:
        print(("ok    " if ok else "FAIL  ") + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
