"""The plan and its runner: five steps in a fixed order, each in its own time
box cut from ``--budget-s``, each failure recorded and the run continued.

Time boxes. Before a step starts, the time left (budget minus what is spent
minus the reserve for the final charts/summary/README) is shared among the
steps still to run in proportion to their weights; a step that finishes
early hands its rest to the later ones, and the last step gets all that is
left. A box below the step's minimum skips the step ("skipped: budget").

Three guards keep the run inside its budget, softest first:

1. the steps check their ``Box`` between sub-items (``Box.take``) and stop
   when it is spent, recording every item they did not reach;
2. a SIGALRM deadline at box + grace raises ``StepTimeout`` in the step
   (between Python bytecodes: a long torch.compile is interrupted too) and
   the runner records it as "timeout"; steps put shorter ``ItemTimeout``
   limits around single risky items (a model's compile);
3. a watchdog thread, for a hang in C code that no signal interrupts (a GPU
   kernel that never finishes): at budget + a margin it writes the step table
   and the summary with what exists and ends the process (exit code 124).

After each step the step table and the one-page summary are rewritten: a run
killed at any point leaves its results and an account of them on disk."""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable


class StepTimeout(BaseException):
    """A step ran past its box + grace. BaseException: the steps' per-item
    ``except Exception`` must not swallow it."""


class ItemTimeout(StepTimeout):
    """One item ran past the limit a step put around it."""


class Alarm:
    """Nested SIGALRM deadlines: the earliest pending one fires, raising its
    exception in the main thread. A no-op outside the main thread or where
    ``signal.setitimer`` does not exist (the soft box checks still apply)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._stack: list[tuple[float, type, str]] = []
        self._previous = None
        self.usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.usable:
            self._previous = signal.signal(signal.SIGALRM, self._fire)
        return self

    def __exit__(self, *exc):
        if self.usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous or signal.SIG_DFL)
        self._stack.clear()

    def _arm(self) -> None:
        if not self.usable:
            return
        if not self._stack:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        left = min(d for d, _, _ in self._stack) - self.clock()
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def _fire(self, signum, frame):
        now = self.clock()
        due = [(d, exc, label) for d, exc, label in self._stack if d <= now + 1e-3]
        if not due:
            self._arm()
            return
        _, exc, label = due[0]  # the outermost due limit wins: a step timeout beats an item's
        self._arm()  # a later limit still pending (re-fires at once if also due)
        raise exc(label)

    class _Limit:
        def __init__(self, alarm, seconds, exc, label):
            self.alarm, self.seconds, self.exc, self.label = alarm, seconds, exc, label

        def __enter__(self):
            a = self.alarm
            a._stack.append((a.clock() + max(self.seconds, 0.0), self.exc, self.label))
            a._arm()
            return self

        def __exit__(self, *exc):
            a = self.alarm
            a._stack.pop()
            a._arm()
            return False

    def limit(self, seconds: float, exc: type = ItemTimeout, label: str = ""):
        """``with alarm.limit(s, ItemTimeout, "what"):`` raises ``exc(label)``
        in the block once ``s`` seconds have passed."""
        return Alarm._Limit(self, seconds, exc, label or f"time limit of {seconds:.0f} s")


@dataclass
class Step:
    name: str
    title: str
    weight: float
    min_box_s: float
    module: str  # "perf.gpu.correctness": its ``run(ctx, box)`` is resolved at call time
    func: str = "run"

    def resolve(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.func)


@dataclass
class StepRecord:
    step: str
    title: str
    status: str = "pending"  # ok | partial | failed | timeout | skipped | interrupted | running
    reason: str = ""
    box_s: float = 0.0
    duration_s: float = 0.0
    items_done: int = 0
    items_skipped: int = 0
    started: str = ""

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("step", "title", "status", "reason", "box_s", "duration_s",
                                             "items_done", "items_skipped", "started")}

    @property
    def shown(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


class Box:
    """A step's time box: seconds from its start, checked between sub-items."""

    def __init__(self, ctx, step: str, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.ctx, self.step, self.seconds, self.clock = ctx, step, seconds, clock
        self.start = clock()

    @property
    def deadline(self) -> float:
        return self.start + self.seconds

    def left(self) -> float:
        return self.deadline - self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def spent(self, need: float = 0.0) -> bool:
        return self.left() <= need

    def sub(self, seconds: float) -> "Box":
        """A box inside this one (a part of the step that must leave time for the rest)."""
        return Box(self.ctx, self.step, max(0.0, min(seconds, self.left())), self.clock)

    def take(self, items: Iterable, label: Callable = str, need: Callable | float = 0.0):
        """Yield items while the box has time (``need`` seconds, or a function
        of the item, must be left); the items not reached are recorded as
        skipped with reason "budget"."""
        items = list(items)
        for i, item in enumerate(items):
            want = need(item) if callable(need) else need
            if self.spent(want):
                for rest in items[i:]:
                    self.ctx.skip_item(self.step, label(rest), "budget" + (f" (needs ~{want:.0f} s)" if want else ""))
                return
            yield item


@dataclass
class Context:
    """What every step gets: the run's options, profile, device, writer, and
    the account of skipped and done items."""

    profile: object
    device: object
    writer: object
    results_dir: object
    charts_dir: object
    dry_run: bool = False
    skip: set = field(default_factory=set)
    resume: bool = False
    alarm: Alarm = field(default_factory=Alarm)
    log: Callable[[str], None] = print
    meta: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # (step, item, reason)
    done: dict = field(default_factory=dict)  # step -> items done
    records: list = field(default_factory=list)  # StepRecord, in plan order

    def skip_item(self, step: str, item: str, reason: str) -> None:
        self.skipped.append((step, str(item), reason))

    def count(self, step: str, n: int = 1) -> None:
        self.done[step] = self.done.get(step, 0) + n

    def skips(self, step: str) -> list:
        return [s for s in self.skipped if s[0] == step]

    def save_steps(self) -> None:
        self.writer.write("gpu_steps", [r.row() for r in self.records])
        self.writer.write("gpu_skipped", [dict(step=s, item=i, reason=r) for s, i, r in self.skipped])


def grace_for(box_s: float) -> float:
    """How far past its box a step may run before it is interrupted."""
    return min(30.0, max(3.0, 0.1 * box_s))


def run_plan(
    ctx: Context,
    steps: list[Step],
    budget_s: float,
    reserve_s: float,
    selected: Iterable[str] | None = None,
    after_step: Callable[[Context], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[StepRecord]:
    """Run the steps in order within ``budget_s`` (``reserve_s`` of it kept for
    what follows the last step); returns one record per step."""
    from .results import now_utc

    selected = set(s.name for s in steps) if selected is None else set(selected)
    deadline = clock() + budget_s
    ctx.records = [StepRecord(s.name, s.title) for s in steps]
    records = {r.step: r for r in ctx.records}
    for s in steps:
        r = records[s.name]
        if s.name not in selected:
            r.status, r.reason = "skipped", "not selected (--steps)"
        elif s.name in ctx.skip:
            r.status, r.reason = "skipped", f"--skip {s.name}"
    runnable = [s for s in steps if records[s.name].status == "pending"]
    interrupted = False
    for i, step in enumerate(runnable):
        rec = records[step.name]
        if interrupted:
            rec.status, rec.reason = "skipped", "interrupted"
            continue
        left = deadline - clock() - reserve_s
        weights = sum(s.weight for s in runnable[i:])
        box_s = max(0.0, left) * step.weight / weights if weights > 0 else 0.0
        rec.box_s = round(box_s, 2)
        if box_s < step.min_box_s:
            rec.status, rec.reason = "skipped", f"budget (box {box_s:.1f} s < minimum {step.min_box_s:g} s)"
            ctx.log(f"perf gpu: [{step.name}] skipped: {rec.reason}")
            _save(ctx, after_step)
            continue
        rec.status, rec.started = "running", now_utc()
        _save(ctx, after_step)  # a killed run shows which step was running
        ctx.log(f"perf gpu: [{step.name}] {step.title}: box {box_s:.0f} s")
        box = Box(ctx, step.name, box_s, clock)
        skipped_before = len(ctx.skipped)
        try:
            fn = step.resolve()
            # Never past the point where half the final reserve is left.
            hard = min(box_s + grace_for(box_s), deadline - clock() - 0.5 * reserve_s)
            with ctx.alarm.limit(max(hard, box_s), StepTimeout, f"{step.name} past its box of {box_s:.0f} s"):
                fn(ctx, box)
        except StepTimeout as e:
            rec.status, rec.reason = "timeout", str(e)
        except KeyboardInterrupt:
            rec.status, rec.reason = "interrupted", "KeyboardInterrupt"
            interrupted = True
        except Exception as e:  # recorded; the plan goes on
            rec.status, rec.reason = "failed", f"{type(e).__name__}: {e}".strip()[:500]
            ctx.log(f"perf gpu: [{step.name}] FAILED\n{traceback.format_exc()}")
        else:
            budget_skips = [s for s in ctx.skipped[skipped_before:] if s[0] == step.name and s[2].startswith("budget")]
            rec.status = "partial" if budget_skips else "ok"
            rec.reason = f"budget: {len(budget_skips)} item(s) not reached" if budget_skips else ""
        finally:
            rec.duration_s = round(box.elapsed(), 2)
            rec.items_done = ctx.done.get(step.name, 0)
            rec.items_skipped = len(ctx.skips(step.name))
            ctx.log(f"perf gpu: [{step.name}] {rec.shown} after {rec.duration_s:.1f} s")
            _save(ctx, after_step)
    return ctx.records


def _save(ctx: Context, after_step) -> None:
    """The step table, then the summary; a failure here is logged, never fatal."""
    try:
        ctx.save_steps()
        if after_step is not None:
            after_step(ctx)
    except StepTimeout:
        raise
    except Exception as e:  # pragma: no cover - disk full and the like
        ctx.log(f"perf gpu: could not save progress: {type(e).__name__}: {e}")


class Watchdog:
    """Ends the process at ``seconds`` (after ``on_fire`` wrote what it could)
    if the run has not finished: the guard against hangs no signal reaches."""

    def __init__(self, seconds: float, on_fire: Callable[[], None], code: int = 124):
        self.seconds, self.on_fire, self.code = seconds, on_fire, code
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        try:
            self.on_fire()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.code)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        return False
