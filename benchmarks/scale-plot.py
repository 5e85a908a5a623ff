#!/usr/bin/env python3
"""Draws hush-scale's heap per idle connection against the number of connections.

    benchmarks/scale-plot.py OUT.svg RESULT.json...

Each RESULT.json is the output of `hush-scale --json` (one run: one variant at one N).
The chart has one line per variant (hush, openssl-tls-release), N on a logarithmic axis,
heap bytes per connection (server side, summed over the server's processes) on a
logarithmic axis too, so that a flat line means a cost exactly linear in N. It also
prints a Markdown-style table of the runs on stdout, for the README.

Python's standard library only.
"""
import json
import math
import sys

COLORS = {"hush": "#1f77b4", "openssl-tls-release": "#d62728"}
W, H = 840, 420
L, R, T, B = 90, 560, 40, 350


def load(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        r["_file"] = p
        runs.append(r)
    return runs


def log_pos(v, lo, hi, a, b):
    return a + (b - a) * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


def fmt_n(n):
    n = int(n)
    if n >= 1000000 and n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def draw(runs, out):
    series = {}
    for r in runs:
        series.setdefault(r["variant"], []).append(r)
    for v in series.values():
        v.sort(key=lambda r: r["conns"])
    ns = [r["conns"] for r in runs]
    ys = [r["heap_per_conn_bytes"] for r in runs]
    xlo = 10 ** math.floor(math.log10(min(ns)))
    xhi = 10 ** math.ceil(math.log10(max(ns)))
    if xhi == xlo:
        xhi = xlo * 10
    ylo = 10 ** math.floor(math.log10(min(ys) / 1.5))
    yhi = 10 ** math.ceil(math.log10(max(ys) * 1.5))
    s = []
    s.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="12">' % (W, H))
    s.append('<rect width="100%" height="100%" fill="white"/>')
    s.append('<text x="%d" y="22" font-size="15">Server heap per idle secure connection '
             '(hush-scale)</text>' % L)
    # Grid and axes.
    d = xlo
    while d <= xhi:
        x = log_pos(d, xlo, xhi, L, R)
        s.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, T, x, B))
        s.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, B + 18, fmt_n(d)))
        d *= 10
    d = ylo
    while d <= yhi:
        y = log_pos(d, ylo, yhi, B, T)
        s.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, y, R, y))
        label = "%d B" % d if d < 1000 else "%d KB" % (d // 1000)
        s.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (L - 6, y + 4, label))
        d *= 10
    s.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, B, R, B))
    s.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (L, T, L, B))
    s.append('<text x="%d" y="%d" text-anchor="middle">connections held at once (N, log '
             'scale)</text>' % ((L + R) // 2, B + 40))
    s.append('<text transform="translate(24 %d) rotate(-90)" text-anchor="middle">heap bytes '
             'per connection (log scale)</text>' % ((T + B) // 2))
    for k, (name, rs) in enumerate(sorted(series.items())):
        c = COLORS.get(name, "#2ca02c")
        pts = [(log_pos(r["conns"], xlo, xhi, L, R),
                log_pos(r["heap_per_conn_bytes"], ylo, yhi, B, T)) for r in rs]
        s.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                 % (c, " ".join("%.1f,%.1f" % p for p in pts)))
        for i, ((x, y), r) in enumerate(zip(pts, rs)):
            s.append('<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: N=%d, %d B/conn'
                     '</title></circle>' % (x, y, c, name, r["conns"], r["heap_per_conn_bytes"]))
            # Labels above and to the right, but left of the last point (the legend).
            last_pt = i == len(pts) - 1 and i > 0
            s.append('<text x="%.1f" y="%.1f" fill="%s" text-anchor="%s">%d B</text>'
                     % (x - 7 if last_pt else x + 7, y - 8, c, "end" if last_pt else "start",
                        r["heap_per_conn_bytes"]))
        ly = T + 14 + 40 * k
        s.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>'
                 % (R + 20, ly, R + 44, ly, c))
        s.append('<text x="%d" y="%d">%s</text>' % (R + 50, ly + 4, name))
        last = rs[-1]
        s.append('<text x="%d" y="%d" fill="#555">%s B/conn at N=%s</text>'
                 % (R + 50, ly + 20, last["heap_per_conn_bytes"], fmt_n(last["conns"])))
    # The ratio at the largest N both variants reached.
    if "hush" in series and "openssl-tls-release" in series:
        tls = {r["conns"]: r for r in series["openssl-tls-release"]}
        both = [r for r in series["hush"] if r["conns"] in tls]
        if both:
            h = both[-1]
            t = tls[h["conns"]]
            s.append('<text x="%d" y="%d">TLS needs %.0fx hush\'s heap at N=%s</text>'
                     % (R + 20, T + 110, t["heap_per_conn_bytes"] / h["heap_per_conn_bytes"],
                        fmt_n(h["conns"])))
    dates = sorted(r.get("date", "") for r in runs)
    s.append('<text x="%d" y="%d" fill="#555">benchmarks/hush-scale --conns N [--variant '
             'openssl-tls-release] --json; %s</text>' % (L, H - 12, dates[-1][:10]))
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


def table(runs):
    rows = [("variant", "N", "established", "verified", "heap B/conn", "RSS B/conn",
             "kernel B/conn", "pool bufs idle", "establish s", "handshakes/s")]
    for r in sorted(runs, key=lambda r: (r["variant"], r["conns"])):
        rows.append((r["variant"], "{:,}".format(r["conns"]), "{:,}".format(r["established"]),
                     "{:,}".format(r["verified"]), str(r["heap_per_conn_bytes"]),
                     str(r["rss_per_conn_bytes"]), str(r["kernel_per_conn_bytes"]),
                     str(r["pool_buffers_idle"]), "%.1f" % r["establish_seconds"],
                     "{:,}".format(int(r["handshakes_per_s"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("    " + "  ".join(v.rjust(w) for v, w in zip(row, widths)))


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    runs = load(sys.argv[2:])
    draw(runs, sys.argv[1])
    table(runs)


if __name__ == "__main__":
    main()
