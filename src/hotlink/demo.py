"""``hotlink demo``: a live autotuner.

Worker threads call a dot-product kernel in a loop while the tuner compiles
variants of it from LLVM IR (different optimisation levels, unrolling and
vectorisation), swaps each one in with ``Library.replace`` while the calls
keep running, measures its throughput live, and finally keeps the fastest.
Replaced variants are unloaded and their memory returned; the summary shows
how much.  Needs llvmlite only (no C compiler).
"""
from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass

KERNEL_IR = r"""
define double @dot(double* %a, double* %b, i64 %n) {
entry:
  %c = icmp sgt i64 %n, 0
  br i1 %c, label %loop, label %exit
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %acc = phi double [0.0, %entry], [%acc1, %loop]
  %pa = getelementptr double, double* %a, i64 %i
  %pb = getelementptr double, double* %b, i64 %i
  %x = load double, double* %pa
  %y = load double, double* %pb
  %m = fmul fast double %x, %y
  %acc1 = fadd fast double %acc, %m
  %i1 = add i64 %i, 1
  %d = icmp slt i64 %i1, %n
  br i1 %d, label %loop, label %exit
exit:
  %r = phi double [0.0, %entry], [%acc1, %loop]
  ret double %r
}
"""

VARIANTS = [  # (label, speed level, vectorize, unroll)
    ("O0", 0, False, False),
    ("O1", 1, False, False),
    ("O2 unrolled", 2, False, True),
    ("O3 vectorized", 3, True, False),
    ("O3 vectorized+unrolled", 3, True, True),
]
N = 4096


@dataclass
class Result:
    label: str
    calls_per_s: float = 0.0
    code_bytes: int = 0


def compile_variants() -> list[tuple[str, bytes]]:
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(),
                                      opt=3, reloc="pic", codemodel="small")
    out = []
    for label, level, vec, unroll in VARIANTS:
        mod = llvm.parse_assembly(KERNEL_IR)
        pto = llvm.PipelineTuningOptions(speed_level=level)
        pto.loop_vectorization = pto.slp_vectorization = vec
        pto.loop_unrolling = unroll
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        out.append((label, tm.emit_object(mod)))
    return out


def main(seconds_per_variant: float = 1.5, workers: int = 2) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from . import Session, SessionClosedError

    console = Console()
    variants = compile_variants()
    a = (ctypes.c_double * N)(*[i * 0.5 for i in range(N)])
    b = (ctypes.c_double * N)(*[1.0 / (i + 1) for i in range(N)])
    expected = sum(x * y for x, y in zip(a, b))
    calls = [0] * workers
    errors: list[str] = []
    stop = threading.Event()

    with Session() as session:
        lib = session.library("kernels")
        unit = lib.add(variants[0][1], name=variants[0][0])

        def worker(k: int) -> None:
            fn = lib.function("dot", ctypes.c_double, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64])
            while not stop.is_set():
                try:
                    r = fn(a, b, N)
                except SessionClosedError:      # replaced under us: look the new one up
                    fn = lib.function("dot", ctypes.c_double,
                                      [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64])
                    continue
                if abs(r - expected) > 1e-6 * abs(expected):
                    errors.append(f"wrong result {r}")
                calls[k] += 1

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(workers)]
        for t in threads:
            t.start()
        results: list[Result] = []
        replaced = 0
        freed_before = session._arena.punched

        def view(current: str, rate: float) -> Table:
            mem = session.memory()
            t = Table(title="hotlink live autotuner — dot product, %d doubles" % N)
            t.add_column("variant")
            t.add_column("calls/s", justify="right")
            t.add_column("code bytes", justify="right")
            for r in results:
                t.add_row(r.label, f"{r.calls_per_s:,.0f}", str(r.code_bytes))
            t.add_row(f"[bold]{current}[/] (running)", f"{rate:,.0f}", "")
            t.caption = (f"replaces: {replaced}   live bytes: {mem.used}   retired: {mem.retired}   "
                         f"pages returned to the OS: {(session._arena.punched - freed_before) // 4096}")
            return t

        with Live(view(variants[0][0], 0), console=console, refresh_per_second=8) as live:
            for i, (label, obj) in enumerate(variants):
                if i:
                    unit = lib.replace(unit, obj, name=label)
                    replaced += 1
                start_calls, start = sum(calls), time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds_per_variant:
                    time.sleep(0.1)
                    live.update(view(label, (sum(calls) - start_calls) / elapsed))
                results.append(Result(label, (sum(calls) - start_calls) / elapsed,
                                      session.memory().libraries["kernels"].used))
            best = max(results, key=lambda r: r.calls_per_s)
            obj = dict(variants)[best.label]
            unit = lib.replace(unit, obj, name=best.label)
            replaced += 1
            live.update(view(best.label + " (winner)", 0))
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        session.synchronize()
        mem = session.memory()
        console.print(f"[bold green]winner:[/] {best.label} at {best.calls_per_s:,.0f} calls/s "
                      f"({best.calls_per_s / results[0].calls_per_s:.1f}x the O0 variant)")
        console.print(f"replaced {replaced} times while {workers} threads kept calling; "
                      f"{sum(calls):,} calls, {len(errors)} wrong results")
        console.print(f"memory now: {mem.used} bytes live, {mem.retired} retired, "
                      f"{mem.resident} resident in the arena; "
                      f"{(session._arena.punched - freed_before)} bytes of pages returned to the OS")
    return 1 if errors else 0
