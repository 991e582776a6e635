# libgreen's gdb extension: green threads, in a live process and in a core.
#
#     info green-threads     every green thread of every run: id, name, state
#                            (running on worker N / runnable / parked in CALL
#                            on OBJECT, held by whom / finished)
#     green-thread N [full]  green thread N's backtrace: from the context it
#                            saved when it left the CPU, or, if it runs, its
#                            worker's OS thread's own (full: and each frame's
#                            locals)
#
# Loading.  `make install` puts this file where gdb auto-loads it for
# libgreen.so: $(datadir)/gdb/auto-load$(libdir)/libgreen.so.0.0.0-gdb.py
# (gdb looks there when $(datadir) is its own, /usr/share for /usr; else
# `add-auto-load-scripts-directory PREFIX/share/gdb/auto-load`).  From a
# build tree: `source gdb/libgreen-gdb.py`.  Loading twice is harmless.
#
# What it reads.  libgreen's own structures, through its debug info (the
# library is built with -g by default; Debian's is in libgreen0-dbgsym):
# the process's runs are the list `runs` of sched/dump.c (a static: read as
# dump.c's symbol), each run's workers are rt->workers[0..nworkers), and its
# threads' control blocks are the slots its pool rt->threads has handed out
# (sched/pool.c: regions[i].base + k * slot + obj_off, k * slot < used),
# those in state GREEN_T_FREE being unused.  The same walk as green_dump's
# (sched/dump.c), without stopping anything: gdb has stopped the process.
#
# A parked or runnable thread's stack.  green__ctx_switch
# (sched/switch_x86_64.S) left at t->sp: the control words (8 bytes), r15,
# r14, r13, r12, rbx, rbp, then the return address; rsp after its return is
# t->sp + 64.  gdb cannot write a core's registers ("You can't do that
# without a process to debug"), and changing a live thread's registers for
# a moment is a risk to the program, so no register is written: while
# `green-thread N` prints, a Python unwinder (the gdb.unwinder API) says that
# the caller of the selected OS thread's frame 0 has exactly those
# registers.  gdb's own unwinding (DWARF CFI, through libgreen's switch and
# preemption trampolines) then does the rest, and the frames printed are
# those from frame 1 on, renumbered from 0.  Frame 0's id is placed just
# below the saved context, so that gdb does not take the green stack for a
# corrupt one (a caller's frame must be outer to its callee's).
#
# Cores.  gdb's own `gcore` cannot save a libgreen process on Linux 6.13 and
# later: the stacks' guard pages (MADV_GUARD_INSTALL) cannot be read, and
# gdb drops the whole mapping they are in, with every stack and control
# block ("Memory read failed for corefile section").  The kernel's core
# dump (ulimit -c, a crash or kill -ABRT) has them.  See README.md,
# "Debugging".
import re

import gdb
import gdb.unwinder

# enum green__tstate (sched/thread.h); read again from the debug info.
_FREE, _RUNNABLE, _RUNNING, _PARKED, _DEAD = 0, 1, 2, 3, 4
_MAX_FRAMES = 64


class GreenError(Exception):
    pass


# ---- libgreen's structures ----------------------------------------------

def _type(name, block=None):
    try:
        return gdb.lookup_type(name, block) if block else gdb.lookup_type(name)
    except gdb.error:
        raise GreenError(
            "libgreen's debug info is not loaded (no type %s): build libgreen "
            "with -g (its default), or install its debug symbols "
            "(Debian: libgreen0-dbgsym)" % name)


def _runs_head():
    """The first run: sched/dump.c's `runs`, or None if there is none."""
    for sym in gdb.lookup_static_symbols("runs"):
        if sym.symtab and sym.symtab.filename.endswith("dump.c") and \
                str(sym.type.strip_typedefs()) == "struct green__rt *":
            return sym.value()
    try:
        return gdb.parse_and_eval("'dump.c'::runs")
    except gdb.error:
        pass
    if gdb.lookup_global_symbol("green_run") is None and \
            gdb.lookup_static_symbol("green_run") is None:
        raise GreenError("libgreen is not loaded in this program, or has no debug info")
    raise GreenError("libgreen's list of runs (sched/dump.c: runs) not found: "
                     "is its debug info loaded? (Debian: libgreen0-dbgsym)")


def _read_states():
    """The values of enum green__tstate, as libgreen was built with them."""
    global _FREE, _RUNNABLE, _RUNNING, _PARKED, _DEAD
    v = {f.name: f.enumval for f in _type("enum green__tstate").fields()}
    try:
        _FREE, _RUNNABLE, _RUNNING, _PARKED, _DEAD = (
            v["GREEN_T_FREE"], v["GREEN_T_RUNNABLE"], v["GREEN_T_RUNNING"],
            v["GREEN_T_PARKED"], v["GREEN_T_DEAD"])
    except KeyError as e:
        raise GreenError("this libgreen's thread states are not the extension's: "
                         "no %s in enum green__tstate" % e)


def _runs():
    _read_states()
    rt = _runs_head()
    while int(rt) != 0:
        yield rt
        rt = rt["runs_next"]


def _threads(rt):
    """Every control block rt's pool has handed out that is in use."""
    tptr = _type("struct green__thread").pointer()
    pool = rt["threads"]
    slot, obj_off = int(pool["slot"]), int(pool["obj_off"])
    for i in range(int(pool["nregions"])):
        region = pool["regions"][i]
        base, used = int(region["base"]), int(region["used"])
        for off in range(0, used, slot):
            t = gdb.Value(base + off + obj_off).cast(tptr)
            if int(t["state"]) != _FREE:
                yield t


def _cold(t):
    """t's cold part, at its stack's top (struct green__thread_cold), or
    None: a thread that has not run yet, or has ended, has none."""
    hi = int(t["stack_hi"])
    if not hi or int(t["on_cpu"]) == 2:      # GREEN_ON_CPU_LAUNCH
        return None
    ctype = _type("struct green__thread_cold")
    top = _type("struct green__stack_top")
    return gdb.Value(hi - top.sizeof - ctype.sizeof).cast(ctype.pointer())


def _stack_lo(t):
    stacks = t["rt"]["stacks"]
    return int(t["stack_hi"]) - (int(stacks["slot"]) - int(stacks["guard"]))


def _name(t):
    cold = _cold(t)
    try:
        name = cold["name"].string(errors="replace") if cold is not None else ""
    except gdb.error:
        name = ""
    name = "".join("?" if c < " " or c in "\"\x7f" else c for c in name)
    s = "green thread %d" % int(t["id"])
    if name:
        s += ' "%s"' % name
    if bool(t["is_main"]):
        s += " (main)"
    return s


def _fds(obj, n):
    """An fd wait's struct pollfd array (on the parked thread's stack), as
    a dump prints it: "fd 7 (in)", or "3 fds: fd 7 (in), fd 9 (out)"."""
    fds = obj.cast(gdb.lookup_type("struct pollfd").pointer())
    parts = []
    for i in range(min(n, 4)):
        ev = int(fds[i]["events"])
        kind = "+".join(k for k, bit in (("in", 1), ("out", 4)) if ev & bit)
        parts.append("fd %d (%s)" % (int(fds[i]["fd"]), kind))
    s = ", ".join(parts) + (", ..." if n > 4 else "")
    return ("%d fds: " % n if n > 1 else "") + s


def _mutex_holder(obj):
    """The id of the green thread holding green mutex obj, or 0: its layout
    is sched/mutex.h's struct green__mutex."""
    m = obj.cast(_type("struct green__mutex").pointer())
    return int(m["owner_id"]) if int(m["owner"]) else 0


class _Run:
    """A run's threads and workers, read once."""

    def __init__(self, rt):
        self.rt = rt
        self.threads = list(_threads(rt))
        self.by_id = {int(t["id"]): t for t in self.threads}
        self.worker_of = {}          # thread address: worker index
        self.pinned = set()          # addresses of preempted, pinned threads
        self.tids = []
        self.nworkers = int(rt["nworkers"])
        for i in range(self.nworkers):
            w = rt["workers"][i]
            self.tids.append(int(w["tid"]))
            cur = int(w["cur"])
            if cur and cur != int(w["g0"].address):
                self.worker_of[cur] = i
            p = w["pinned_head"]
            while int(p) != 0:
                self.pinned.add(int(p))
                self.worker_of.setdefault(int(p), i)
                p = p["next"]
        self.holds = {}              # a foreign lock: the thread holding it
        for t in self.threads:
            n = int(t["nheld"])
            for k in range(min(n, int(t["heldcap"]))):
                self.holds[int(t["held"][k])] = t

    def state(self, t):
        st = int(t["state"])
        addr = int(t)
        if st == _RUNNING:
            i = self.worker_of.get(addr)
            if i is None:
                return "running"
            return "running on worker %d (LWP %d)" % (i, self.tids[i])
        if st == _RUNNABLE:
            if addr in self.pinned:
                return "runnable, preempted and pinned to worker %d" % self.worker_of[addr]
            return "runnable"
        if st == _DEAD:
            return "finished, not yet joined"
        if st != _PARKED:
            return "in state %d" % st
        cold = _cold(t)
        try:
            what = cold["wait_what"] if cold is not None else None
            what = what.string() if what is not None and int(what) else "an unknown call"
            obj = cold["wait_obj"] if cold is not None else gdb.Value(0)
        except gdb.error:                    # its stack's top is not in the core
            return "parked"
        s = "parked in " + what
        if int(obj) and what == "green_join":
            other = obj.cast(t.type)
            s += " on green thread %d" % int(other["id"])
        elif int(obj) and what in ("green_fd_wait", "green_poll"):
            s += " on " + _fds(obj, int(cold["wait_n"]))
        elif int(obj):
            s += " on " + str(obj.cast(gdb.lookup_type("void").pointer()))
        holder = None
        if int(obj) and what == "green_mutex_lock":
            hid = _mutex_holder(obj)
            if hid:
                holder = self.by_id.get(hid)
                s += ", held by " + (("itself" if holder == t else _name(holder))
                                     if holder is not None else "green thread %d" % hid)
        elif int(obj) and not what.startswith("green_"):
            holder = self.holds.get(int(obj))
            if holder is not None:
                s += ", held by " + ("itself" if int(holder) == addr else _name(holder))
        return s


def _find(n):
    for rt in _runs():
        run = _Run(rt)
        if n in run.by_id:
            return run, run.by_id[n]
    raise GreenError("no green thread %d" % n)


# ---- A saved context, as frame 0's caller -------------------------------

class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class SavedContextUnwinder(gdb.unwinder.Unwinder):
    """While `ctx` is set: the caller of the selected OS thread's frame 0
    has the registers green__ctx_switch saved."""

    def __init__(self):
        super().__init__("libgreen saved context")
        self.ctx = None              # (gdb thread's ptid, {register: int})

    def __call__(self, pending):
        if self.ctx is None or pending.level() != 0:
            return None
        ptid, regs = self.ctx
        if gdb.selected_thread() is None or gdb.selected_thread().ptid != ptid:
            return None
        ptr = pending.read_register("rsp").type
        pc = pending.read_register("rip")
        # Inner to every frame of the green stack (see the top of the file).
        info = pending.create_unwind_info(
            _FrameId(gdb.Value(regs["rsp"] - 72).cast(ptr), pc))
        for reg, v in regs.items():
            rtype = pending.read_register(reg).type
            info.add_saved_register(reg, gdb.Value(v).cast(rtype))
        return info


_unwinder = SavedContextUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)


def _saved_regs(t):
    """The registers green__ctx_switch saved on t's stack, or a reason."""
    sp = int(t["sp"])
    if not int(t["stack_hi"]):
        raise GreenError("%s: has no stack (finished): no frames" % _name(t))
    lo, hi = _stack_lo(t), int(t["stack_hi"])
    if not sp and int(t["on_cpu"]) == 2:     # GREEN_ON_CPU_LAUNCH
        raise GreenError("%s: has not run yet: no frames" % _name(t))
    if not sp or sp < lo or sp + 64 > hi:
        raise GreenError("%s: its saved stack pointer 0x%x is not on its stack "
                         "[0x%x, 0x%x)" % (_name(t), sp, lo, hi))
    u64 = gdb.lookup_type("unsigned long").pointer()
    word = gdb.Value(sp).cast(u64)
    names = ["r15", "r14", "r13", "r12", "rbx", "rbp", "rip"]
    regs = {r: int(word[1 + k]) for k, r in enumerate(names)}
    regs["rsp"] = sp + 64
    return regs


_FRAME_NO = re.compile(r"^#(\d+)\s+")


def _print_frames(first, renumber, full):
    """Print frames from `first` outwards, as gdb's `frame` does (and each
    one's locals, as `bt full` does, if full)."""
    f, k = first, 0
    while f is not None and k < _MAX_FRAMES:
        f.select()
        text = gdb.execute("frame", to_string=True)
        line = text.split("\n", 1)[0]
        if renumber:
            line = _FRAME_NO.sub(lambda m: "#%-3d" % (int(m.group(1)) - 1), line)
        gdb.write(line + "\n")
        if full:
            try:
                local = gdb.execute("info locals", to_string=True)
            except gdb.error as e:
                local = "(%s)\n" % e
            for row in local.splitlines():
                gdb.write("        " + row + "\n")
        try:
            f = f.older()
        except gdb.error as e:
            gdb.write("(%s)\n" % e)
            f = None
            break
        k += 1
    if f is not None:
        gdb.write("(more frames follow)\n")


def _select_level(level):
    """Select the frame `level` of the current thread again, or the nearest."""
    f = gdb.newest_frame()
    for _ in range(level):
        if f.older() is None:
            break
        f = f.older()
    f.select()


def _backtrace_saved(t, full):
    regs = _saved_regs(t)
    thread = gdb.selected_thread()
    if thread is None:
        raise GreenError("no OS thread selected: is the program running, or a core loaded?")
    try:
        level = gdb.selected_frame().level()
    except gdb.error:
        level = 0
    _unwinder.ctx = (thread.ptid, regs)
    gdb.invalidate_cached_frames()
    try:
        first = gdb.newest_frame().older()
        if first is None:
            raise GreenError("%s: gdb found no frame at its saved context (pc 0x%x)"
                             % (_name(t), regs["rip"]))
        _print_frames(first, True, full)
    finally:
        _unwinder.ctx = None
        gdb.invalidate_cached_frames()
        _select_level(level)


def _backtrace_running(run, t, worker, full):
    tid = run.tids[worker]
    here = gdb.selected_thread()
    level = gdb.selected_frame().level() if here is not None else 0
    for th in gdb.selected_inferior().threads():
        if th.ptid[1] == tid:
            break
    else:
        raise GreenError("%s runs on worker %d, LWP %d, which gdb does not know"
                         % (_name(t), worker, tid))
    th.switch()
    try:
        gdb.write("(its worker's OS thread: gdb thread %d, LWP %d)\n" % (th.num, tid))
        _print_frames(gdb.newest_frame(), False, full)
    finally:
        if here is not None and here.is_valid():
            here.switch()
            _select_level(level)


# ---- The commands ----------------------------------------------------------

class InfoGreenThreads(gdb.Command):
    """List every green thread of every libgreen run: id, name, state.
Usage: info green-threads
A parked thread shows the call it waits in and the object it waits on, and
who holds that object when it is a green mutex or a lock libgreen
interposes; a running one, its worker and that worker's OS thread (LWP).
`green-thread N` shows thread N's backtrace."""

    def __init__(self):
        super().__init__("info green-threads", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        try:
            runs = list(_runs())
            gdb.write("libgreen: %d run%s\n" % (len(runs), "" if len(runs) == 1 else "s"))
            for k, rt in enumerate(runs, 1):
                run = _Run(rt)
                gdb.write("run %d: %d workers (LWP %s), %d green threads\n" % (
                    k, run.nworkers, " ".join(str(x) for x in run.tids), len(run.threads)))
                for t in sorted(run.threads, key=lambda t: int(t["id"])):
                    gdb.write("  %s: %s\n" % (_name(t), run.state(t)))
        except GreenError as e:
            raise gdb.GdbError(str(e))


class GreenThread(gdb.Command):
    """Show green thread N's backtrace.
Usage: green-thread N [full]
For a thread that is not running: unwound from the context it saved when it
left the CPU (frames numbered from 0, the innermost being libgreen's switch).
For a running thread: its worker's OS thread's backtrace.  N is the id
`info green-threads` lists (green_id).  With `full`, each frame's locals
too, as `backtrace full` shows them.  The frames are printed, not selected:
`frame K` afterwards is the OS thread's."""

    def __init__(self):
        super().__init__("green-thread", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if not 1 <= len(args) <= 2 or not args[0].isdigit() or args[1:] not in ([], ["full"]):
            raise gdb.GdbError("usage: green-thread N [full] (N: an id from info green-threads)")
        full = args[1:] == ["full"]
        try:
            run, t = _find(int(args[0]))
            state = int(t["state"])
            gdb.write("%s: %s\n" % (_name(t), run.state(t)))
            if state == _DEAD:
                gdb.write("(finished: no stack)\n")
            elif state == _RUNNING and int(t) in run.worker_of:
                _backtrace_running(run, t, run.worker_of[int(t)], full)
            else:
                if state == _RUNNING:
                    gdb.write("(on no worker: caught in the middle of a switch? "
                              "the context it saved last may be stale)\n")
                _backtrace_saved(t, full)
        except GreenError as e:
            raise gdb.GdbError(str(e))


InfoGreenThreads()
GreenThread()
