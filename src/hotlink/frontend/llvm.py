"""LLVM IR and bitcode to an ELF object, with llvmlite.

Always PIC with the small code model: the arena sits within ±2 GiB of libc,
far above 2 GiB, so code must be position-independent (``PLT32``/``PC32``/
``GOTPCREL``); absolute 32-bit relocations could not be satisfied.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..errors import CompileError
from .jobs import CompileJob
from .source import is_bitcode

# llvmlite ships no type hints: its objects are Any to mypy. These aliases say what they are.
TargetMachine = Any                    # llvmlite.binding.TargetMachine

_binding: list[ModuleType] = []        # llvmlite.binding, initialised once per process
_targets: dict[tuple[str, str], tuple[str, str, str]] = {}      # (cpu, features) -> (triple, cpu, features)
_machines: dict[tuple[str, str, int], TargetMachine] = {}       # (cpu, features, opt) -> target machine
_stderr_lock = threading.Lock()
_UNKNOWN = ("is not a recognized processor", "is not a recognized feature")


def binding() -> ModuleType:
    """``llvmlite.binding``, with the native target initialised; CompileError if llvmlite is missing."""
    if not _binding:
        try:
            import llvmlite.binding as llvm
        except ImportError as e:
            raise CompileError(f"compiling LLVM IR needs llvmlite, which cannot be imported ({e}); "
                               f"pip install llvmlite") from None
        from ..tls import pin_cxx_runtime
        pin_cxx_runtime()     # before LLVM's std::call_once makes libstdc++'s thread-locals dynamic
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.initialize_native_asmparser()      # inline asm (forkcopy.py, and users' IR)
        _binding.append(llvm)
    return _binding[0]




def target(cpu: str, features: str) -> tuple[str, str, str]:
    """(triple, cpu name, feature string) that ``cpu``/``features`` resolve to here."""
    key = (cpu, features)
    if key not in _targets:
        llvm = binding()
        name = llvm.get_host_cpu_name() if cpu == "host" else cpu
        feats = llvm.get_host_cpu_features().flatten() if cpu == "host" else ""
        feats = ",".join(f for f in (feats, features) if f)
        _targets[key] = (llvm.get_process_triple(), name, feats)
    return _targets[key]


def toolchain_id() -> str:
    import llvmlite
    llvm = binding()
    return f"llvmlite {llvmlite.__version__} llvm {'.'.join(map(str, llvm.llvm_version_info))}"


def target_machine(cpu: str, features: str, opt: int) -> TargetMachine:
    """A cached PIC, small-code-model target machine for this process (the arena's needs)."""
    key = (cpu, features, opt)
    tm = _machines.get(key)
    if tm is None:
        llvm = binding()
        triple, name, feats = target(cpu, features)

        def create() -> TargetMachine:
            return llvm.Target.from_triple(triple).create_target_machine(
                cpu=name, features=feats, opt=opt, reloc="pic", codemodel="small")

        if cpu == "host" and not features:
            tm = create()                     # LLVM's own name and features for this CPU
        else:
            tm = _checked(create, cpu, features)
        _machines[key] = tm
    return tm


def _checked(create: Callable[[], TargetMachine], cpu: str, features: str) -> TargetMachine:
    """``create()``, refusing a CPU name or feature LLVM does not know.

    LLVM only prints a warning for those (to fd 2) and carries on with a
    generic CPU, which then aborts the process with "LLVM ERROR: 64-bit code
    requested on a subtarget that doesn't support it" at code generation. So
    fd 2 is captured while the target machine is made (once per cpu, features
    and opt level in a process); other output in that moment is passed on.
    """
    with _stderr_lock:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(2)
        except OSError:                       # no fd 2 (a daemon): nothing to capture, nor to read
            return create()
        with tempfile.TemporaryFile(prefix="hotlink-llvm-") as tmp:
            try:
                os.dup2(tmp.fileno(), 2)
                try:
                    tm = create()
                finally:
                    os.dup2(saved, 2)
            finally:
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
    lines = text.splitlines(keepends=True)
    unknown = [ln.strip() for ln in lines if any(u in ln for u in _UNKNOWN)]
    rest = "".join(ln for ln in lines if not any(u in ln for u in _UNKNOWN))
    if rest:
        os.write(2, rest.encode())
    if unknown:
        names = sorted({("processor " if "processor" in ln else "feature ") + ln.split(" is not", 1)[0]
                        for ln in unknown})
        raise ValueError(f"cpu={cpu!r}, features={features!r}: LLVM does not know {', '.join(names)} "
                         f"for this target; expected an LLVM CPU name (\"host\", \"x86-64\", \"skylake\", ...) "
                         f"and features like \"+avx2,-fma\"")
    return tm


def compile_ir(job: CompileJob) -> bytes:
    """The object for ``job`` (IR text or bitcode); CompileError with LLVM's message."""
    llvm = binding()
    o = job.options
    try:
        tm = target_machine(o.cpu, o.features, o.opt)
    except ValueError as e:
        raise CompileError(f"{job.origin}: {e}") from None
    ctx = llvm.create_context()       # a context per module: the global one would grow forever
    mod = None
    try:
        try:
            if is_bitcode(job.data):
                mod = llvm.parse_bitcode(job.data, context=ctx)
            else:
                mod = llvm.parse_assembly(job.data.decode("utf-8", "replace"), context=ctx)
            _check_triple(mod.triple, job)
            mod.triple = tm.triple
            mod.data_layout = str(tm.target_data)
            mod.verify()
        except RuntimeError as e:
            raise CompileError(f"{job.origin}: invalid LLVM IR", str(e).strip()) from None
        if o.opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=o.opt)
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
        return bytes(tm.emit_object(mod))
    finally:
        if mod is not None:
            mod.close()
        ctx.close()


def _check_triple(triple: str, job: CompileJob) -> None:
    # An x86-64 Linux triple with another vendor is fine, and so is none
    # (llvmlite.ir says "unknown-unknown-unknown"); another architecture or OS
    # would give code or an object format the linker cannot use.
    parts = triple.split("-")
    arch_ok = parts[0] in ("x86_64", "unknown", "")
    os_ok = "linux" in triple or all(p in ("unknown", "") for p in parts[1:3])
    if not (arch_ok and os_ok):
        raise CompileError(f"{job.origin}: target triple {triple!r} is not x86_64 Linux")
