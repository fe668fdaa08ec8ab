"""``hotlink demo``: a live autotuner.

Native threads (started by JIT code) and a Python thread call a dot-product
kernel through its entry stub in a loop while the tuner compiles
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

from .frontend.llvm import target_machine

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

# Native worker threads, started by JIT code: each calls the kernel through
# its entry stub in a loop, checks the result, counts, and reports quiescence.
DRIVER_IR = r"""
@stop = global i32 0
@bad = global i64 0
@counts = global [8 x i64] zeroinitializer
@threads = global [8 x i64] zeroinitializer
@A = global double* null
@B = global double* null
@N = global i64 0
@expected = global double 0.0
declare i32 @pthread_create(i64*, i8*, i8* (i8*)*, i8*)
declare i32 @pthread_join(i64, i8**)
declare i32 @hotlink_thread_online()
declare void @hotlink_quiescent()
declare void @hotlink_thread_offline()
declare double @dot(double*, double*, i64)
declare double @llvm.fabs.f64(double)

define i8* @worker(i8* %arg) {
entry:
  %k = ptrtoint i8* %arg to i64
  %on = call i32 @hotlink_thread_online()
  br label %loop
loop:
  %s = load atomic i32, i32* @stop acquire, align 4
  %done = icmp ne i32 %s, 0
  br i1 %done, label %exit, label %body
body:
  %a = load double*, double** @A
  %b = load double*, double** @B
  %n = load i64, i64* @N
  %x = call double @dot(double* %a, double* %b, i64 %n)
  %e = load double, double* @expected
  %d = fsub double %x, %e
  %ad = call double @llvm.fabs.f64(double %d)
  %ae = call double @llvm.fabs.f64(double %e)
  %tol = fmul double %ae, 1.0e-9
  %wrong = fcmp ogt double %ad, %tol
  br i1 %wrong, label %count_bad, label %count
count_bad:
  %ob = atomicrmw add i64* @bad, i64 1 monotonic
  br label %count
count:
  %slot = getelementptr [8 x i64], [8 x i64]* @counts, i64 0, i64 %k
  %old = atomicrmw add i64* %slot, i64 1 monotonic
  call void @hotlink_quiescent()
  br label %loop
exit:
  call void @hotlink_thread_offline()
  ret i8* null
}

define i32 @start(i64 %nthreads, double* %a, double* %b, i64 %n, double %expected) {
entry:
  store double* %a, double** @A
  store double* %b, double** @B
  store i64 %n, i64* @N
  store double %expected, double* @expected
  br label %loop
loop:
  %k = phi i64 [0, %entry], [%k1, %loop]
  %t = getelementptr [8 x i64], [8 x i64]* @threads, i64 0, i64 %k
  %arg = inttoptr i64 %k to i8*
  %rc = call i32 @pthread_create(i64* %t, i8* null, i8* (i8*)* @worker, i8* %arg)
  %k1 = add i64 %k, 1
  %more = icmp ult i64 %k1, %nthreads
  br i1 %more, label %loop, label %done
done:
  ret i32 0
}

define i64 @stop_all(i64 %nthreads) {
entry:
  store atomic i32 1, i32* @stop release, align 4
  br label %loop
loop:
  %k = phi i64 [0, %entry], [%k1, %loop]
  %t = getelementptr [8 x i64], [8 x i64]* @threads, i64 0, i64 %k
  %tid = load i64, i64* %t
  %rc = call i32 @pthread_join(i64 %tid, i8** null)
  %k1 = add i64 %k, 1
  %more = icmp ult i64 %k1, %nthreads
  br i1 %more, label %loop, label %done
done:
  %b = load atomic i64, i64* @bad monotonic, align 8
  ret i64 %b
}

define i64 @calls(i64 %k) {
  %slot = getelementptr [8 x i64], [8 x i64]* @counts, i64 0, i64 %k
  %c = load atomic i64, i64* %slot monotonic, align 8
  ret i64 %c
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
    tm = target_machine("host", "", 3)
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


def compile_driver() -> bytes:
    import llvmlite.binding as llvm
    return target_machine("host", "", 3).emit_object(llvm.parse_assembly(DRIVER_IR))


def main(seconds_per_variant: float = 2.0, native_threads: int = 2) -> int:
    try:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table
    except ImportError:               # rich is the [display] extra: plain text without it
        from .plaintext import Console, Live, Table  # type: ignore[assignment]

    from . import Session

    console = Console()
    variants = compile_variants()
    a = (ctypes.c_double * N)(*[i * 0.5 for i in range(N)])
    b = (ctypes.c_double * N)(*[1.0 / (i + 1) for i in range(N)])
    expected = sum(x * y for x, y in zip(a, b))
    py_calls = [0]
    py_errors: list[str] = []
    stop = threading.Event()

    with Session() as session:
        kernels = session.library("kernels", patchable=True)
        unit = kernels.add(variants[0][1], name=variants[0][0])
        driver = session.library("driver", link_order=[kernels])
        driver.add(compile_driver(), name="driver")
        calls_of = driver.function("calls", ctypes.c_int64, [ctypes.c_int64])
        driver.function("start", ctypes.c_int, [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                                ctypes.c_int64, ctypes.c_double])(native_threads, a, b, N, expected)
        dot = kernels.function("dot", ctypes.c_double, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64])

        def python_worker() -> None:
            while not stop.is_set():      # one callable for the whole run: the stub is stable
                r = dot(a, b, N)
                if abs(r - expected) > 1e-9 * abs(expected):
                    py_errors.append(f"wrong result {r}")
                py_calls[0] += 1

        py_thread = threading.Thread(target=python_worker, daemon=True)
        py_thread.start()

        def total_calls() -> int:
            return sum(calls_of(k) for k in range(native_threads)) + py_calls[0]

        results: list[Result] = []
        patches = 0
        punched_before = session.arena.punched
        retired_total = 0

        def view(current: str, rate: float) -> Table:
            mem = session.memory()
            t = Table(title=f"hotlink live autotuner: dot product of {N} doubles, "
                            f"{native_threads} native threads + 1 Python thread calling")
            t.add_column("variant")
            t.add_column("calls/s", justify="right")
            t.add_column("code bytes", justify="right")
            for r in results:
                t.add_row(r.label, f"{r.calls_per_s:,.0f}", str(r.code_bytes))
            t.add_row(f"[bold]{current}[/]", f"{rate:,.0f}", "")
            t.caption = (f"patches: {patches}   live: {mem.used} B   retired (waiting for a grace period): "
                         f"{mem.retired} B   freed: {retired_total - mem.retired} B   pages back to the OS: "
                         f"{(session.arena.punched - punched_before) // 4096}")
            return t

        with Live(view(variants[0][0], 0), console=console, refresh_per_second=8) as live:
            for i, (label, obj) in enumerate(variants):
                if i:
                    retired_total += session.memory().libraries["kernels"].used
                    unit = kernels.replace(unit, obj, name=label)   # while all threads keep calling
                    patches += 1
                start_calls, start = total_calls(), time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds_per_variant:
                    time.sleep(0.125)
                    live.update(view(label, (total_calls() - start_calls) / elapsed))
                results.append(Result(label, (total_calls() - start_calls) / elapsed,
                                      session.memory().libraries["kernels"].used))
            best = max(results, key=lambda r: r.calls_per_s)
            retired_total += session.memory().libraries["kernels"].used
            unit = kernels.replace(unit, dict(variants)[best.label], name=best.label)
            patches += 1
            start_calls, start = total_calls(), time.perf_counter()
            while (elapsed := time.perf_counter() - start) < 1.0:
                time.sleep(0.125)
                live.update(view(best.label + " (winner)", (total_calls() - start_calls) / elapsed))
        stop.set()
        py_thread.join()
        bad = driver.function("stop_all", ctypes.c_int64, [ctypes.c_int64])(native_threads)
        session.synchronize()
        mem = session.memory()
        freed_pages = (session.arena.punched - punched_before) // 4096
        console.print(f"[bold green]winner:[/] {best.label}: {best.calls_per_s:,.0f} calls/s, "
                      f"{best.calls_per_s / results[0].calls_per_s:.1f}x the O0 variant")
        console.print(f"{patches} patches applied while {native_threads} native threads and 1 Python "
                      f"thread kept calling: {total_calls():,} calls, {bad + len(py_errors)} wrong results")
        console.print(f"retired code: {retired_total} bytes, all freed after grace periods "
                      f"(still retired: {mem.retired}); {freed_pages} page(s) returned to the OS; "
                      f"{mem.used} bytes live")
    return 1 if bad or py_errors or mem.retired else 0
