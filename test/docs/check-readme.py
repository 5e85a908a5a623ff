#!/usr/bin/env python3
"""Checks that the README's figure tables still match what their scripts print.

Every table of figures in the README comes from a program or script in this
repository. A table is found by its header line; its row labels (the text before the
first run of two or more spaces followed by a figure) must equal, in order, the labels
that its source prints today:

- "measured in this run": examples/hush-demo (`make demo`), run here at a small scale;
- "measured by run-hushpipe-e2e.sh": the `figure "LABEL"` rows of that script;
- "benchmark ... hush ...": each row's benchmark name must be one that
  `benchmarks/hush-bench --list` names.

Each table must also be introduced by the command that draws it (the text before it
names the command). Speaks TAP.
"""
import os
import re
import subprocess
import sys

SRC = os.environ.get("HUSH_SRCDIR", ".")
BUILD = os.environ.get("HUSH_BUILDDIR", ".")
ROW = re.compile(r"^\s*(\S.*?)\s{2,}[-0-9]")

results = []


def report(ok, what, detail=""):
    results.append((ok, what, detail))


def table(lines, header):
    """The row labels of the table whose header line starts with header, and the
    30 lines of text before it; None when the README has no such table."""
    for i, line in enumerate(lines):
        if line.strip().startswith(header):
            labels = []
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                m = ROW.match(row)
                labels.append(m.group(1).strip() if m else row.strip())
            return labels, "\n".join(lines[max(0, i - 30):i])
    return None, ""


def compare(what, readme_labels, source_labels):
    if readme_labels is None:
        report(False, what, "the README has no such table")
    elif readme_labels != source_labels:
        detail = "README rows: %r\nsource rows: %r" % (readme_labels, source_labels)
        report(False, what, detail)
    else:
        report(True, what)


def main():
    with open(os.path.join(SRC, "README"), encoding="utf-8") as f:
        readme = f.read().splitlines()

    # make demo's table: run the demo small and read its closing table.
    labels, before = table(readme, "measured in this run")
    demo = os.path.join(BUILD, "examples", "hush-demo")
    out = subprocess.run([demo, "--conns", "40", "--busy", "10", "--seconds", "1"],
                         capture_output=True, text=True, timeout=300)
    printed, _ = table(out.stdout.splitlines(), "measured in this run")
    if out.returncode != 0 or printed is None:
        report(False, "hush-demo ran and printed its table", out.stdout + out.stderr)
    else:
        compare("the README's demo table has the rows hush-demo prints", labels, printed)
    report("make demo" in before, "the demo table names its command (make demo)")

    # The e2e suite's table: the labels of its figure rows.
    labels, before = table(readme, "measured by run-hushpipe-e2e.sh")
    with open(os.path.join(SRC, "test", "e2e", "run-hushpipe-e2e.sh"), encoding="utf-8") as f:
        script = f.read()
    printed = [m.strip() for m in re.findall(r'^\s*figure "([^"]*)"', script, re.M)]
    compare("the README's hushpipe table has the rows run-hushpipe-e2e.sh prints",
            labels, printed)
    report("make check-e2e" in before, "the hushpipe table names its command (make check-e2e)")

    # hush-bench's table: every benchmark it names exists.
    labels, before = table(readme, "benchmark ")
    bench = os.path.join(BUILD, "benchmarks", "hush-bench")
    out = subprocess.run([bench, "--list"], capture_output=True, text=True, timeout=60)
    names = {line.split("/")[0] for line in out.stdout.split()}
    if labels is None or out.returncode != 0:
        report(False, "the README's benchmark table and hush-bench --list", out.stderr)
    else:
        # A row of its own starts at the table's indent of four spaces; deeper rows
        # continue the one above.
        start = next(i for i, l in enumerate(readme) if l.strip().startswith("benchmark "))
        named = []
        for row in readme[start + 1:]:
            if not row.strip():
                break
            if re.match(r"^    [A-Za-z]", row):
                named.append(row.split()[0])
        unknown = [n for n in named if n not in names]
        report(named and not unknown,
               "every benchmark the README's table names is one hush-bench runs",
               "unknown: %r; hush-bench has %r" % (unknown, sorted(names)))
    report("hush-bench" in before or "make bench" in before,
           "the benchmark table names its command")

    print("1..%d" % len(results))
    for n, (ok, what, detail) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", n, what))
        if not ok and detail:
            for line in detail.splitlines():
                print("# " + line)
    return 0 if all(r[0] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
