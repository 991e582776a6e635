#!/usr/bin/env python3
"""Checks a GREEN_TRACE timeline (sched/trace_json.c) -- used by
tests/test_trace.c, and by hand: python3 tests/timeline_check.py FILE.

  timeline_check.py FILE [--expect spawn,park,...] [--calls CALL,...] [--dropped]

Exits 0 when the file is well-formed JSON in Chrome's trace-event format
and:
  - per worker (pid 1), the run slices ("X") never overlap;
  - every park of a green thread (pid 2) is followed by a wake of the same
    thread before its next park, or the trace ends with it parked (then
    its last "parked" slice says so);
  - every event named in --expect occurs at least once, and a park in
    every call named in --calls (green_mutex_lock, green_chan_recv, ...);
  - with --dropped, otherData says events were dropped; without it, none.
Otherwise prints what is wrong, one line each, and exits 1.
"""
import json
import sys
from collections import defaultdict

# Timestamps and durations are written in microseconds to 3 decimals, each
# rounded on its own: an end may pass the next start by a rounding step.
EPS = 0.0021


def check(path, expect, calls, dropped):
    errors = []
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["no traceEvents list"]
    events = doc["traceEvents"]
    other = doc.get("otherData", {})
    for i, e in enumerate(events):
        if not isinstance(e, dict) or "ph" not in e or "pid" not in e or "name" not in e:
            errors.append("event %d lacks ph, pid or name: %r" % (i, e))
        elif e["ph"] in ("X", "i") and not isinstance(e.get("ts"), (int, float)):
            errors.append("event %d has no ts: %r" % (i, e))
        elif e["ph"] == "X" and not (isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0):
            errors.append("slice %d has no duration >= 0: %r" % (i, e))
    if errors:
        return errors

    workers = set()
    slices = defaultdict(list)
    for e in events:
        if e["ph"] == "M" and e["pid"] == 1 and e["name"] == "thread_name":
            workers.add(e["tid"])
        if e["ph"] == "X" and e["pid"] == 1:
            slices[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    for w, v in sorted(slices.items()):
        if w not in workers:
            errors.append("slices on worker %s, which has no name" % w)
        v.sort()
        for a, b in zip(v, v[1:]):
            if a[1] > b[0] + EPS:
                errors.append("worker %s: slice %r [%.3f, %.3f] overlaps %r [%.3f, %.3f]"
                              % (w, a[2], a[0], a[1], b[2], b[0], b[1]))

    # Parks and wakes in file order (the file is in time order; a park and
    # its wake at the same time stamp come park first).
    state = {}
    for e in events:
        if e["ph"] != "i" or e["pid"] != 2 or e["name"] not in ("park", "wake"):
            continue
        t = e["tid"]
        if e["name"] == "park":
            if state.get(t):
                errors.append("thread %s parks at %.3f, still parked since %.3f"
                              % (t, e["ts"], state[t]))
            state[t] = e["ts"]
        else:
            if t in state and state[t] is not None and e["ts"] < state[t]:
                errors.append("thread %s woken at %.3f, before it parked at %.3f"
                              % (t, e["ts"], state[t]))
            state[t] = None
    unended = {t for t, ts in state.items() if ts is not None}
    for e in events:
        if e["ph"] == "X" and e["pid"] == 2 and e["tid"] in unended and \
                e["name"].startswith("parked") and \
                e.get("args", {}).get("by", "").startswith("nobody"):
            unended.discard(e["tid"])
    for t in sorted(unended):
        errors.append("thread %s parked at %.3f: no wake, and no parked slice to the end"
                      % (t, state[t]))

    seen = {e["name"] for e in events if e["ph"] == "i"}
    for name in expect:
        if name not in seen:
            errors.append("no %r event (seen: %s)" % (name, ", ".join(sorted(seen))))
    parked_in = {e.get("args", {}).get("call") for e in events
                 if e["ph"] == "i" and e["name"] == "park"}
    for call in calls:
        if call not in parked_in:
            errors.append("no park in %s (parks in: %s)"
                          % (call, ", ".join(sorted(str(c) for c in parked_in))))
    if dropped and not other.get("dropped_events"):
        errors.append("expected dropped events, otherData says %r" % other.get("dropped_events"))
    if not dropped and other.get("dropped_events"):
        errors.append("%s events dropped" % other.get("dropped_events"))
    if not slices:
        errors.append("no slices at all")
    return errors


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    expect, calls, dropped = [], [], False
    args = argv[2:]
    while args:
        a = args.pop(0)
        if a == "--expect" and args:
            expect = [x for x in args.pop(0).split(",") if x]
        elif a == "--calls" and args:
            calls = [x for x in args.pop(0).split(",") if x]
        elif a == "--dropped":
            dropped = True
        else:
            print("timeline_check.py: unknown argument %r" % a, file=sys.stderr)
            return 2
    try:
        errors = check(argv[1], expect, calls, dropped)
    except (OSError, ValueError) as ex:
        errors = ["%s: %s" % (argv[1], ex)]
    for e in errors[:20]:
        print("timeline_check.py: " + e)
    if len(errors) > 20:
        print("timeline_check.py: ... and %d more" % (len(errors) - 20))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
