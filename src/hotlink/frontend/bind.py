"""Bind IR to a running host's internal globals (the ORC recipe).

IR extracted from a program (say, a function recompiled with new flags)
still *defines* the program's internal (``static``) functions and variables.
Linked as is, the JIT code would get private copies: a fresh ``counter``
starting at zero, a second copy of every helper. ``bind_to_host`` rewrites
each internal definition:

* found in the side table (from ``host_symbols``): it becomes
  ``available_externally`` - for the linker an external reference, bound
  through ``Session.define`` to the host's own definition, so the JIT code
  reads and writes the host's real state and calls its real functions.
  (Function bodies stay available to LLVM's analyses; ``noinline`` keeps the
  calls real calls into the host);
* not found: it is promoted to an external definition, which then serves
  from now on (later modules bind to it through the library).

Unnamed-address constants (string literals) have no identity to share and
stay as they are. The rewrite is done on LLVM's own printing of the module,
so it sees canonical syntax, and the result is parsed and verified again.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompileError, LinkError
from .llvm import binding
from .source import is_bitcode

ModuleRef = Any        # llvmlite.binding.ModuleRef (llvmlite ships no type hints)

_NAME = r'(?:"(?:[^"\\]|\\.)*"|[-a-zA-Z$._0-9]+)'
_VAR = re.compile(rf"^@({_NAME}) = (internal|private) (.*)$")
_FUNC = re.compile(rf"^define (internal|private) (.*?)@({_NAME})\((.*)$")
_COMDAT = re.compile(r",? comdat(?:\(\$[^)]*\))?")
_KIND = re.compile(r"((?:[^\s\"]+ )*?)(global|constant|alias|ifunc) ")


@dataclass
class BoundIR:
    """The rewritten module and what happened to each internal global."""
    module: ModuleRef                                  # ready for Library.add
    bound: dict[str, int] = field(default_factory=dict)  # name -> host address: pass to Session.define
    promoted: list[str] = field(default_factory=list)    # now external definitions of the JIT code
    kept: list[str] = field(default_factory=list)        # left internal (no identity, or promote=False)

    @property
    def ir(self) -> str:
        return str(self.module)


def _unquote(name: str) -> str:
    if name.startswith('"'):
        return re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), name[1:-1])
    return name


def _module_text(ir: object) -> str:
    llvm = binding()
    if isinstance(ir, (bytes, bytearray)) and is_bitcode(bytes(ir[:4])):
        try:
            return str(llvm.parse_bitcode(bytes(ir)))
        except RuntimeError as e:
            raise CompileError("bind_to_host: invalid bitcode", str(e)) from None
    try:
        text = ir.decode() if isinstance(ir, (bytes, bytearray)) else str(ir)   # ir.Module, ModuleRef: str()
    except UnicodeDecodeError as e:
        raise CompileError(f"bind_to_host: the IR is neither bitcode nor UTF-8 text ({e})") from None
    try:
        return str(llvm.parse_assembly(text))         # canonical syntax, one global per line
    except RuntimeError as e:
        raise CompileError("bind_to_host: invalid LLVM IR", str(e)) from None


def bind_to_host(ir: object, side_table: Mapping[str, int], *, promote: bool = True) -> BoundIR:
    """Rewrite ``ir`` (text, bitcode, ``llvmlite.ir.Module`` or ``ModuleRef``)
    so its internal globals bind to the host definitions in ``side_table``
    (name -> address, e.g. ``Session.host_symbols(...)``); the others are
    promoted to external definitions (or kept internal if ``promote=False``).

    Link it with ``session.define(result.bound)`` then ``lib.add(result.module)``.
    """
    lines = _module_text(ir).split("\n")
    result = BoundIR(module=None)
    # Aliases come before functions in LLVM's printing: decide every binding first.
    hosted = {n: _address(n, side_table[n]) for n in _local_definitions(lines) if n in side_table}
    out = []
    for line in lines:
        m = _VAR.match(line)
        if m:
            line = _variable(m.group(1), m.group(2), m.group(3), hosted, promote, result)
        else:
            f = _FUNC.match(line)
            if f:
                line = _function(f.group(1), f.group(2), f.group(3), f.group(4), hosted, promote, result)
        out.append(line)
    llvm = binding()
    try:
        mod = llvm.parse_assembly("\n".join(out))
        for fn in mod.functions:
            if fn.name in result.bound and not any(b"alwaysinline" in a for a in fn.attributes):
                fn.add_function_attribute("noinline")   # call the host's function, do not inline a copy
        mod.verify()
    except RuntimeError as e:
        raise CompileError("bind_to_host: the rewritten module does not verify", str(e)) from None
    result.module = mod
    return result


def _address(name: str, value: Any) -> int:     # Any: checked here, at run time
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TypeError(f"bind_to_host: side_table[{name!r}] = {value!r}: expected an address (an int)") from None


def _local_definitions(lines: list[str]) -> list[str]:
    names = []
    for line in lines:
        m = _VAR.match(line)
        if m and (k := _KIND.match(m.group(3))) and k.group(2) in ("global", "constant"):
            names.append(_unquote(m.group(1)))
        f = _FUNC.match(line)
        if f:
            names.append(_unquote(f.group(3)))
    return names


def _variable(qname: str, linkage: str, rest: str, hosted: dict[str, int], promote: bool, result: BoundIR) -> str:
    name = _unquote(qname)
    km = _KIND.match(rest)
    words = km.group(1).split() if km else []          # what precedes "global"/"constant"
    kind = km.group(2) if km else "?"
    if kind == "alias":
        return _alias(qname, linkage, rest, hosted, promote, result)
    if kind not in ("global", "constant"):             # an ifunc, or syntax we do not know
        result.kept.append(name)
        return f"@{qname} = {linkage} {rest}"
    if name in hosted:
        if any(w.startswith("thread_local") for w in words):
            raise LinkError(f"bind_to_host: cannot bind thread-local @{name} to one host address")
        result.bound[name] = hosted[name]
        return f"@{qname} = available_externally {_COMDAT.sub('', rest)}"
    if promote and "unnamed_addr" not in words:
        result.promoted.append(name)
        return f"@{qname} = {rest}"
    result.kept.append(name)
    return f"@{qname} = {linkage} {rest}"


def _alias(qname: str, linkage: str, rest: str, hosted: dict[str, int], promote: bool, result: BoundIR) -> str:
    """An alias of a bound global cannot stay an alias (it must point to a
    definition): it becomes a declaration bound to the same host address."""
    name = _unquote(qname)
    m = re.match(rf"alias ([^,]+), ptr @({_NAME})$", rest)
    target = _unquote(m.group(2)) if m else None
    addr = hosted.get(name, hosted.get(target) if target else None)
    if m and addr is not None:
        result.bound[name] = addr
        return f"@{qname} = external global {m.group(1)}"
    if any(f"@{n}" in rest for n in hosted):
        raise LinkError(f"bind_to_host: alias @{name} points into a bound host global through an "
                        f"expression; only a plain alias can be bound")
    if promote:
        result.promoted.append(name)
        return f"@{qname} = {rest}"
    result.kept.append(name)
    return f"@{qname} = {linkage} {rest}"


def _function(linkage: str, head: str, qname: str, tail: str, hosted: dict[str, int], promote: bool,
              result: BoundIR) -> str:
    name = _unquote(qname)
    if name in hosted:
        result.bound[name] = hosted[name]
        return f"define available_externally {head}@{qname}({_COMDAT.sub('', tail)}"
    if promote:
        result.promoted.append(name)
        return f"define {head}@{qname}({tail}"
    result.kept.append(name)
    return f"define {linkage} {head}@{qname}({tail}"
