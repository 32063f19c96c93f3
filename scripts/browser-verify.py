#!/usr/bin/env python3
"""Opens the receipt page (docs/verify/index.html, or a pinned copy from `oubli verify --html`)
from a file URL in headless Chromium, driven through the DevTools protocol by Playwright, and
reads its verdicts.

    python3 scripts/browser-verify.py CASES.json [--screenshots DIR] [--details OUT.json]
        [--chromium /usr/bin/chromium]

CASES.json is `{"cases": {NAME: {"page": PATH, "receipt": PATH, "checkpoint": PATH,
"consistency": PATH, "status": PATH, "id": HEX, "salt": HEX, "key": VERIFIER_KEY}}}`, every
field but page and receipt optional: each case opens the page afresh, loads the files through the
page's own file inputs, types the fields, presses the button and waits (bounded) for the verdicts.
Prints `{NAME: {CHECK: ok}}` as JSON. --screenshots saves DIR/NAME.png of each case; --details
writes, in the page's order, each check's name, result and detail, any request the page tried to
make (it should make none) and any script error. Playwright comes from PyPI (`make python-deps`
puts it in target/python/deps); Chromium is Debian's (`make deps`): no browser is downloaded."""
import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
OPTIONAL_FILES = (("checkpoint", "#checkpoint-file"), ("consistency", "#consistency-file"), ("status", "#status-file"))
READ_VERDICTS = """els => els.map(e => ({check: e.dataset.check, ok: e.dataset.ok === "true",
    detail: e.querySelector(".detail").textContent}))"""


def run_case(context, case, timeout_ms, network, errors):
    page = context.new_page()
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else network.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(Path(case["page"]).resolve().as_uri(), timeout=timeout_ms)
    page.evaluate("document.getElementById('optional').open = true")
    if case.get("key"):
        page.fill("#log-key", case["key"], timeout=timeout_ms)
    for field, selector in OPTIONAL_FILES:
        if case.get(field):
            page.set_input_files(selector, case[field], timeout=timeout_ms)
    for field, selector in (("id", "#opening-id"), ("salt", "#salt")):
        if case.get(field):
            page.fill(selector, case[field], timeout=timeout_ms)
    page.set_input_files("#receipt-file", case["receipt"], timeout=timeout_ms)
    page.click("#check", timeout=timeout_ms)
    page.wait_for_selector('#summary[data-state="done"]', timeout=timeout_ms)
    return page, page.eval_on_selector_all("#verdicts li", READ_VERDICTS)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases")
    parser.add_argument("--screenshots")
    parser.add_argument("--details")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for each step of a case")
    args = parser.parse_args(argv)
    # The whole run is bounded too: a hung browser ends the script, not the test that runs it.
    signal.alarm(300)
    from playwright.sync_api import sync_playwright

    with open(args.cases) as f:
        cases = json.load(f)["cases"]
    verdicts, details, network, errors = {}, {}, [], []
    timeout_ms = args.timeout * 1000
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": 900}, offline=True)
        try:
            for name, case in cases.items():
                page, checks = run_case(context, case, timeout_ms, network, errors)
                verdicts[name] = {c["check"]: c["ok"] for c in checks}
                details[name] = checks
                if args.screenshots:
                    os.makedirs(args.screenshots, exist_ok=True)
                    page.screenshot(path=os.path.join(args.screenshots, name + ".png"), full_page=True)
                page.close()
        finally:
            context.close()
    if args.details:
        with open(args.details, "w") as f:
            json.dump({"cases": details, "network": network, "errors": errors}, f, indent=1)
    print(json.dumps(verdicts))


if __name__ == "__main__":
    main(sys.argv[1:])
