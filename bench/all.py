"""Runs every benchmark and writes one summary: each target line (PASS or FAIL) they printed, and
their figures without a target (rows/s of imports, lines ending "(no target)").

    make bench        # or: .venv/bin/python -m bench.all
The full output of each goes to bench/results/<name>.txt, the summary to bench/results/summary.txt.
"""

import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS = ("rebuild", "commands", "http", "queries", "imports")
OPTIONS = {"queries": ["--diagnose", "none"]}  # the summary wants figures; diagnose by running it alone
RESULTS = Path(__file__).parent / "results"
VERDICT = re.compile(r"(PASS|FAIL)\s*$")


def run(name: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *OPTIONS.get(name, [])],
                          capture_output=True, text=True)
    output = done.stdout + done.stderr
    (RESULTS / f"{name}.txt").write_text(output)
    lines = [line.strip() for line in output.splitlines()
             if VERDICT.search(line) or "rows/s" in line or line.rstrip().endswith("(no target)")]
    if done.returncode not in (0, 1) and not lines:
        lines = [f"did not finish (exit {done.returncode}); see bench/results/{name}.txt"]
    return lines


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    header = (f"lastmeter benchmarks, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{platform.node()}, {platform.processor() or platform.machine()}")
    summary = [header, "=" * len(header)]
    for name in BENCHMARKS:
        print(f"running bench.{name} ...", flush=True)
        summary += ["", f"[{name}]"] + [f"  {line}" for line in run(name)]
    text = "\n".join(summary) + "\n"
    (RESULTS / "summary.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
