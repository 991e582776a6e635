#!/usr/bin/env python3
"""Draws a GREEN_TRACE timeline (Chrome trace-event JSON, sched/trace_json.c)
as an SVG picture: a row per worker with its run slices coloured by green
thread, then a row per green thread (running in its colour, parked in
grey), with preemptions (red) and steals (black) marked.  No dependencies
beyond Python 3.

  python3 docs/timeline_svg.py TRACE.json OUT.svg [--from MS] [--to MS]
          [--threads N] [--title TEXT]

--from/--to: the window, in ms from the trace's first slice (default: all);
--threads: at most N green-thread rows, named threads first (default 12).
docs/timeline.svg and docs/timeline-zoom.svg were drawn from a run of
tests/test_trace.c (README, "Timeline (GREEN_TRACE)", has the commands).
"""
import json
import sys
from collections import defaultdict
from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
           "#b07aa1", "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#a0cbe8",
           "#8cd17d", "#f1ce63", "#499894", "#fabfd2"]
WIDTH, LEFT, RIGHT, ROW, GAP = 1000, 150, 20, 18, 4


def main(argv):
    args = argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = args[0], args[1]
    opts = {"--from": None, "--to": None, "--threads": "12", "--title": None}
    rest = args[2:]
    while rest:
        k = rest.pop(0)
        if k not in opts or not rest:
            print("timeline_svg.py: bad argument %r" % k, file=sys.stderr)
            return 2
        opts[k] = rest.pop(0)
    with open(src) as f:
        doc = json.load(f)
    ev = doc["traceEvents"]

    names = {}                                   # (pid, tid) -> name
    for e in ev:
        if e["ph"] == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    xs = [e for e in ev if e["ph"] == "X"]
    t0 = min(e["ts"] for e in xs if e["pid"] == 1)
    t_end = max(e["ts"] + e["dur"] for e in xs)
    lo = t0 + float(opts["--from"]) * 1e3 if opts["--from"] else t0
    hi = t0 + float(opts["--to"]) * 1e3 if opts["--to"] else t_end
    span = max(hi - lo, 1e-3)

    def x(ts):
        return LEFT + (min(max(ts, lo), hi) - lo) / span * (WIDTH - LEFT - RIGHT)

    # Threads: named ones first, then by busy time; a colour each.
    busy = defaultdict(float)
    for e in xs:
        if e["pid"] == 2 and e["name"].startswith("run"):
            busy[e["tid"]] += e["dur"]
    tids = sorted({e["tid"] for e in ev if e.get("pid") == 2 and e["ph"] != "M"},
                  key=lambda t: (" " not in names.get((2, t), ""), -busy[t], t))
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tids)}
    shown = tids[:int(opts["--threads"])]
    workers = sorted(t for (p, t) in names if p == 1)

    rows = [("worker %d" % w, 1, w) for w in workers] + \
           [(names.get((2, t), str(t)), 2, t) for t in shown]
    top = 48
    y_of = {}
    y = top
    for i, (_, pid, tid) in enumerate(rows):
        if pid == 2 and i and rows[i - 1][1] == 1:
            y += 14
        y_of[(pid, tid)] = y
        y += ROW + GAP
    height = y + 40

    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
         'font-family="sans-serif" font-size="11">' % (WIDTH, height),
         '<rect width="100%" height="100%" fill="white"/>']
    title = opts["--title"] or "GREEN_TRACE timeline: %s" % src
    o.append('<text x="%d" y="18" font-size="13" font-weight="bold">%s</text>'
             % (LEFT, escape(title)))
    o.append('<text x="%d" y="34" fill="#555">workers: run slices coloured by green thread;'
             ' threads: running (colour), parked (grey); red ticks: preemptions;'
             ' black ticks: steals</text>' % LEFT)
    for label, pid, tid in rows:
        yy = y_of[(pid, tid)]
        o.append('<text x="%d" y="%d" text-anchor="end">%s</text>'
                 % (LEFT - 6, yy + ROW - 5, escape(label)))
        o.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#f4f4f4"/>'
                 % (LEFT, yy, WIDTH - LEFT - RIGHT, ROW))
    # Slices of one row and colour closer than a third of a pixel are
    # drawn as one rectangle (its tooltip counts them): the picture is the
    # same, the file a fraction.
    rects = []
    for e in xs:
        key = (e["pid"], e["tid"])
        if key not in y_of or e["ts"] > hi or e["ts"] + e["dur"] < lo:
            continue
        if e["pid"] == 1:
            fill = colour.get(e["args"].get("thread"), "#999")
        elif e["name"].startswith("parked"):
            fill = "#c8c8c8"
        else:
            fill = colour.get(e["tid"], "#999")
        rects.append((y_of[key], fill, x(e["ts"]), x(e["ts"] + e["dur"]), e["name"]))
    rects.sort(key=lambda r: (r[0], r[1] != "#c8c8c8", r[1], r[2]))   # grey first, under
    merged = []
    for r in rects:
        m = merged[-1] if merged else None
        if m and m[0] == r[0] and m[1] == r[1] and r[2] <= m[3] + 0.34:
            m[3] = max(m[3], r[3])
            m[5] += 1
        else:
            merged.append([r[0], r[1], r[2], r[3], r[4], 1])
    for yy, fill, a, b, name, n in merged:
        h = ROW if fill != "#c8c8c8" else ROW // 2
        title = name if n == 1 else "%s (and %d more)" % (name, n - 1)
        o.append('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"><title>%s</title></rect>'
                 % (a, yy + (ROW - h) // 2, max(b - a, 0.4), h, fill, escape(title)))
    for e in ev:
        if e["ph"] != "i" or e["name"] not in ("preempt", "steal") or not lo <= e["ts"] <= hi:
            continue
        key = (e["pid"], e["tid"])
        if key not in y_of:
            continue
        c = "#d00" if e["name"] == "preempt" else "#000"
        xx = x(e["ts"])
        o.append('<line x1="%.2f" y1="%d" x2="%.2f" y2="%d" stroke="%s" stroke-width="1.5"/>'
                 % (xx, y_of[key] - 3, xx, y_of[key] + ROW + 3, c))
    # The time axis.
    ya = y + 4
    o.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>'
             % (LEFT, ya, WIDTH - RIGHT, ya))
    step = next(s * 10 ** k for k in range(-3, 7) for s in (1, 2, 5)
                if span / 1e3 / (s * 10 ** k) <= 10)
    ms = (lo - t0) / 1e3
    tick = -(-ms // step) * step
    while tick <= (hi - t0) / 1e3 + 1e-9:
        xx = x(t0 + tick * 1e3)
        o.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333"/>'
                 '<text x="%.1f" y="%d" text-anchor="middle">%g ms</text>'
                 % (xx, ya, xx, ya + 4, xx, ya + 16, round(tick, 3)))
        tick += step
    o.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(o) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
