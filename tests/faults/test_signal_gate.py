"""The signal gate (``interrupts.Deferred``) on its own: Python signal
handlers wait while a gate is open in the main thread and run when the
outermost one closes or at a checkpoint, in both of its ways (clearing
``_PyRuntime.main_thread``; swapping the handlers), also across ``fork``.

Each scenario signals (and forks) in its own interpreter: a subprocess the
``scenario`` fixture starts, so a crash fails one test, never the run.
"""
from __future__ import annotations

import pytest

PRELUDE = r"""
import os, signal, sys, threading
from hotlink import interrupts

MODE = sys.argv[1]
if MODE == "word":
    gate = interrupts.GATE
    assert gate._word is not None, "_PyRuntime.main_thread was not found on this interpreter"
else:
    gate = interrupts.GATE
    gate._word = None           # the handler swap, as on an interpreter without the word

seen = []
def on_usr1(signum, frame):
    seen.append(signum)
signal.signal(signal.SIGUSR1, on_usr1)

def spin():
    # bytecodes and calls: where CPython runs pending handlers
    for _ in range(2000):
        len(())
"""

MODES = ["word", "swap"]


@pytest.mark.parametrize("mode", MODES)
def test_handlers_wait_for_the_outermost_gate(scenario, mode):
    scenario.expect_ok(PRELUDE + r"""
int_handler = signal.getsignal(signal.SIGINT)
try:
    with gate:
        with gate:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGUSR1)
            spin()
        spin()
        assert seen == [], "a handler ran inside the gate"
        if MODE == "word":      # the handlers users see never change
            assert signal.getsignal(signal.SIGINT) is int_handler
    raise SystemExit("the SIGINT was lost")
except KeyboardInterrupt:
    pass
assert signal.getsignal(signal.SIGINT) is int_handler
spin()
assert seen == [signal.SIGUSR1], seen
# and after the gate, signals come at once again
try:
    os.kill(os.getpid(), signal.SIGINT)
    spin()
    raise SystemExit("no KeyboardInterrupt outside the gate")
except KeyboardInterrupt:
    pass
""", args=[mode])


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_delivers_and_the_gate_stays_closed(scenario, mode):
    scenario.expect_ok(PRELUDE + r"""
with gate:
    gate.checkpoint()                       # nothing pending: nothing happens
    os.kill(os.getpid(), signal.SIGINT)
    spin()
    try:
        gate.checkpoint()
        raise SystemExit("the checkpoint did not deliver the SIGINT")
    except KeyboardInterrupt:
        pass
    os.kill(os.getpid(), signal.SIGUSR1)
    spin()
    assert seen == [], "the gate opened after the checkpoint"
spin()
assert seen == [signal.SIGUSR1], seen
""", args=[mode])


@pytest.mark.parametrize("mode", MODES)
def test_other_threads_pass_freely(scenario, mode):
    # a gate in another thread defers nothing: only the main thread runs handlers
    scenario.expect_ok(PRELUDE + r"""
done = threading.Event()
def other():
    with gate:
        done.wait(10)
t = threading.Thread(target=other)
t.start()
try:
    os.kill(os.getpid(), signal.SIGINT)
    spin()
    raise SystemExit("a gate of another thread deferred the main thread's SIGINT")
except KeyboardInterrupt:
    pass
finally:
    done.set()
    t.join()
""", args=[mode])


@pytest.mark.parametrize("mode", MODES)
def test_fork_inside_the_gate(scenario, mode):
    # forked by the gate's own thread: the child is still inside the gate;
    # forked by another thread: the gate's thread is gone, the child's signals come at once
    scenario.expect_ok(PRELUDE + r"""
def child_inside():
    os.kill(os.getpid(), signal.SIGUSR1)
    spin()
    if seen:
        os._exit(3)
    try:
        gate.__exit__(None, None, None)
    except KeyboardInterrupt:
        os._exit(4)
    os._exit(0 if seen == [signal.SIGUSR1] else 5)

with gate:
    pid = os.fork()
    if pid == 0:
        child_inside()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, os.waitstatus_to_exitcode(status)

def child_of_thread():
    os.kill(os.getpid(), signal.SIGUSR1)
    spin()
    os._exit(0 if seen == [signal.SIGUSR1] else 6)

statuses = []
def forker():
    pid = os.fork()
    if pid == 0:
        child_of_thread()
    statuses.append(os.waitpid(pid, 0)[1])
with gate:
    t = threading.Thread(target=forker)
    t.start()
    t.join()
assert [os.waitstatus_to_exitcode(s) for s in statuses] == [0], statuses
""", args=[mode])
