"""Signatures of the functions a compiled source defines, so that
``Library.function("dot")`` needs no signature for code hotlink compiled.

A compiled object comes back from the front end as a ``CompiledObject``: the
object's bytes (a ``bytes`` subclass, so everything else treats it as bytes)
carrying the ``Declarations`` of its source. The linker keeps them on the
unit. Nothing is inferred until a signature is asked for, so ``add`` pays
nothing:

* LLVM IR: the function's type from the IR (llvmlite), ``zeroext`` marking
  unsigned integers and ``readonly`` const pointers; the element type of a
  typed pointer (``double*``) from the IR text where it says so.
* C: the prototypes of the functions the translation unit defines, from the
  compiler itself (gcc's ``-aux-info``, one ``-fsyntax-only`` run over the
  exact source that was compiled). Type names the translation unit defines
  with ``typedef`` are resolved by asking the compiler too (one static
  assertion per candidate type), then everything is parsed with pycparser
  (``signature.py``).
* C++: not inferred (names are mangled, and ``-aux-info`` is C only).
"""
from __future__ import annotations

import ctypes
import os
import re
import subprocess
import tempfile
import threading
from typing import Any

from ..signature import STANDARD_TYPEDEFS, CType, Param, Signature, SignatureError, identifiers, parse, scalar
from .jobs import CompileJob
from .source import is_bitcode


class CompiledObject(bytes):
    """An object compiled by the front end, with what its source declares."""

    declarations: Declarations

    def __new__(cls, data: bytes, declarations: Declarations) -> CompiledObject:
        obj = super().__new__(cls, data)
        obj.declarations = declarations
        return obj

    def __reduce__(self) -> Any:          # pickles (worker processes) as what it is
        return (CompiledObject, (bytes(self), self.declarations))


def with_declarations(obj: bytes, job: CompileJob) -> CompiledObject:
    return CompiledObject(obj, Declarations(job))


class Declarations:
    """The signatures of what one compiled source defines, inferred on first use."""

    def __init__(self, job: CompileJob):
        self.job = job
        self._signatures: dict[str, Signature | SignatureError] | SignatureError | None = None
        self._lock = threading.Lock()

    def signature(self, symbol: str) -> Signature:
        """The signature of ``symbol``; SignatureError if the source does not
        define it or its type cannot be called."""
        with self._lock:
            if self._signatures is None:
                try:
                    self._signatures = self._infer()
                except SignatureError as e:       # once: the compiler is not asked again
                    self._signatures = e
        if isinstance(self._signatures, SignatureError):
            raise self._signatures.with_traceback(None)
        found = self._signatures.get(symbol)
        if found is None:
            raise SignatureError(f"{symbol}: {self.job.origin} defines no function of that name with a "
                                 f"signature hotlink could infer; pass a C declaration, "
                                 f"e.g. lib.function({symbol!r}, \"double(double *, long)\")")
        if isinstance(found, SignatureError):
            raise found.with_traceback(None)
        return found

    def _infer(self) -> dict[str, Signature | SignatureError]:
        lang = self.job.language
        if lang == "llvm":
            return ir_signatures(self.job)
        if lang == "c":
            return c_signatures(self.job)
        raise SignatureError(f"{self.job.origin}: hotlink cannot infer the signatures of {lang.upper()} "
                             f"functions (mangled names, and the compiler reports C prototypes only); "
                             f"pass a C declaration for each extern \"C\" function")

    def __reduce__(self) -> Any:
        return (Declarations, (self.job,))


# --- LLVM IR -------------------------------------------------------------------------------

_IR_INTS = {1: "_Bool", 8: "int8_t", 16: "int16_t", 32: "int32_t", 64: "int64_t"}
_IR_FLOATS = {"float": "float", "double": "double", "x86_fp80": "long double"}
_IR_TYPED_POINTER = re.compile(r"^\s*(i1|i8|i16|i32|i64|float|double|x86_fp80)\s*\*")


def ir_signatures(job: CompileJob) -> dict[str, Signature | SignatureError]:
    from .llvm import binding
    llvm = binding()
    text = "" if is_bitcode(job.data) else job.data.decode("utf-8", "replace")
    try:
        mod = llvm.parse_assembly(text) if text else llvm.parse_bitcode(job.data)
    except RuntimeError as e:
        raise SignatureError(f"{job.origin}: cannot read the IR to infer signatures: {e}") from None
    out: dict[str, Signature | SignatureError] = {}
    for fn in mod.functions:
        if fn.is_declaration:
            continue
        try:
            out[fn.name] = _ir_function(fn, *_define_line(text, fn.name))
        except SignatureError as e:
            out[fn.name] = SignatureError(f"{fn.name} ({job.origin}): {e}")
    return out


def _ir_function(fn: Any, result_attrs: set[str], typed: list[str | None]) -> Signature:
    ftype = fn.global_value_type
    if ftype.is_function_vararg:
        raise SignatureError("the function is variadic ('...'): hotlink cannot call variadic functions")
    elements = list(ftype.elements)
    params = []
    for i, arg in enumerate(fn.arguments):
        attrs = {bytes(a).decode() for a in arg.attributes}
        t = _ir_type(str(elements[i + 1]), attrs, typed[i] if i < len(typed) else None, f"parameter {i + 1}")
        params.append(Param(arg.name or None, t))
    return Signature(_ir_type(str(elements[0]), result_attrs, None, "the result"), tuple(params))


def _ir_type(t: str, attrs: set[str], typed: str | None, what: str) -> CType:
    if t == "void":
        return CType("void", None)
    if t in _IR_FLOATS:
        return scalar(_IR_FLOATS[t])
    m = re.fullmatch(r"i(\d+)", t)
    if m and int(m.group(1)) in _IR_INTS:
        bits = int(m.group(1))
        name = _IR_INTS[bits]
        if bits == 1:
            return scalar("_Bool")
        if "zeroext" in attrs:
            name = "u" + name
        base = scalar(STANDARD_TYPEDEFS[name])
        return CType(name, base.ctype, element=base.element)
    if t == "ptr":
        const = "readonly" in attrs or "readnone" in attrs
        pointee: CType | None = _ir_type(typed, set(), None, what) if typed else None
        element = pointee.element if pointee is not None else None
        spelling = f"{'const ' if const else ''}{pointee.spelling if pointee else 'void'} *"
        return CType(spelling, ctypes.c_void_p, pointer=True, const=const, element=element)
    raise SignatureError(f"{what} has the LLVM type {t}, which hotlink cannot pass from Python "
                         f"(scalars up to 64 bits, floating point and pointers only)")


def _define_line(text: str, name: str) -> tuple[set[str], list[str | None]]:
    """What only the IR text says (llvmlite does not report it): the result's
    attributes (``zeroext``), and for typed pointers (``double*``) each
    parameter's pointee type (None where it says ``ptr``)."""
    if not text:
        return set(), []
    m = re.search(r"^define\b([^@\n]*)@(?:" + re.escape(name) + r"|\"" + re.escape(name) + r"\")\(", text, re.M)
    if m is None:
        return set(), []
    depth, i, start, parts = 1, m.end(), m.end(), []
    while i < len(text) and depth:
        c = text[i]
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        if (c == "," and depth == 1) or depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    out: list[str | None] = []
    for p in parts:
        tm = _IR_TYPED_POINTER.match(p)
        out.append(tm.group(1) if tm else None)
    return set(m.group(1).split()), out


# --- C ---------------------------------------------------------------------------------------

# /* file:line:NF */ extern double dot (double *a, long int n); /* (a, n) double *a; long int n; */
_AUX_LINE = re.compile(r"^/\* (?P<file>.*):(?P<line>\d+):(?P<kind>[NOI][CF]) \*/ (?P<decl>.*?);"
                       r"(?: /\* \((?P<names>[^)]*)\).*\*/)?\s*$")
_NAME = re.compile(r"(\w+) \(")
_TAG = re.compile(r"\b(?:struct|union|enum)\s+(\w+)")

# candidate types for a typedef name the translation unit defines
_PROBE_SCALARS = ("char", "signed char", "unsigned char", "short", "unsigned short", "int", "unsigned int",
                  "long", "unsigned long", "long long", "unsigned long long", "float", "double",
                  "long double", "_Bool")
_PROBE_TYPES = (*_PROBE_SCALARS, *(f"{c} *" for c in (*_PROBE_SCALARS, "void")),
                *(f"const {c} *" for c in (*_PROBE_SCALARS, "void")))
_CLASSES = {5: "void *", 12: "struct", 13: "union"}        # gcc's __builtin_classify_type
_PROBE_HIT = re.compile(r"hotlink-probe:(\w+)=([\w *]+)")


def c_signatures(job: CompileJob) -> dict[str, Signature | SignatureError]:
    """The signatures of the functions ``job``'s C source defines (not the static ones)."""
    protos: list[tuple[str, str, set[str]]] = []        # (name, declaration, parameter names)
    for line in _compiler_output(job, "-aux-info", "").splitlines():
        m = _AUX_LINE.match(line)
        if m is None or not m.group("kind").endswith("F"):
            continue
        decl = m.group("decl").strip()
        words = decl.split()
        if "static" in words[:3]:
            continue
        decl = re.sub(r"^(?:(?:extern|inline|__inline__|__inline|_Noreturn)\s+)+", "", decl)
        nm = _NAME.search(decl)
        if nm is None:
            continue
        params = {p.strip() for p in (m.group("names") or "").split(",") if p.strip()}
        protos.append((nm.group(1), decl, params))
    unknown: set[str] = set()
    for name, decl, params in protos:
        unknown |= identifiers(decl) - set(STANDARD_TYPEDEFS) - {name} - params - set(_TAG.findall(decl))
    typedefs = _resolve_typedefs(job, sorted(unknown)) if unknown else {}
    out: dict[str, Signature | SignatureError] = {}
    for name, decl, _ in protos:
        try:
            out[name] = parse(decl, name, typedefs)
        except SignatureError as e:
            out[name] = SignatureError(f"{e} (inferred from {job.origin})")
    return out


def _resolve_typedefs(job: CompileJob, names: list[str]) -> dict[str, str]:
    """What each typedef name in ``names`` stands for, asked of the compiler:
    a static assertion per candidate type fails (and says so) where it matches."""
    probe = ["", "/* hotlink: which type is each typedef name? */"]
    for n in names:
        for c in _PROBE_TYPES:
            probe.append(f'_Static_assert(!__builtin_types_compatible_p({n}, {c}), "hotlink-probe:{n}={c}");')
        for k, what in _CLASSES.items():
            probe.append(f'_Static_assert(__builtin_classify_type(*({n} *)0) != {k}, "hotlink-probe:{n}={what}");')
    found: dict[str, str] = {}
    for n, t in _PROBE_HIT.findall(_compiler_output(job, None, "\n".join(probe) + "\n")):
        t = t.strip()
        if n not in found or (found[n] in ("void *", "struct", "union") and t not in ("struct", "union")):
            found[n] = t                 # an exact type beats a class
    return {n: f"{t} __hotlink_{n}" if t in ("struct", "union") else t for n, t in found.items()}


def _compiler_output(job: CompileJob, flag: str | None, extra: str) -> str:
    """Run the compiler with ``-fsyntax-only`` on the exact source ``job``
    compiled (plus ``extra``): the ``-aux-info`` file if ``flag`` asks for it,
    else the diagnostics."""
    from .cc import base_args, compiler
    src = job.data + extra.encode()
    inc = ["-iquote", os.path.dirname(os.path.abspath(job.path))] if job.path else []
    with tempfile.TemporaryDirectory(prefix="hotlink-proto-") as tmp:
        out = os.path.join(tmp, "aux.txt")
        cmd = [*compiler(job.language, job.origin), *base_args(job), *inc, "-fsyntax-only",
               *([flag, out] if flag else []), "-"]
        try:
            proc = subprocess.run(cmd, input=src, capture_output=True)
        except OSError as e:
            raise SignatureError(f"{job.origin}: cannot run the compiler to infer signatures: {e}") from None
        if flag is None:
            return proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise SignatureError(f"{job.origin}: the compiler failed while inferring signatures: "
                                 + proc.stderr.decode("utf-8", "replace").strip()[-2000:])
        try:
            with open(out, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            raise SignatureError(f"{job.origin}: the compiler ({cmd[0]}) wrote no prototypes with -aux-info "
                                 f"(only gcc does); pass a C declaration instead") from None
