"""C function signatures: what ``Library.function(sym, "double(double *, long)")``
parses, and what the front ends infer for the functions they compile.

A declaration is parsed with pycparser (never by hand) into a ``Signature``:
the ctypes types the call uses, and for each pointer parameter what a buffer
passed to it must hold (``Element``) and whether the callee may write through
it (``const``).  Only pointer parameters need anything beyond ctypes, so a
signature of scalars calls exactly like the ctypes form (``Signature.plain``).

Accepted: scalars (``char`` … ``long long``, signed and unsigned, ``float``,
``double``, ``long double``, ``_Bool``, enums, the ``<stdint.h>``/``<stddef.h>``
names), pointers to anything (structs by pointer included), arrays as
parameters (they are pointers), function pointers and ``void``.  Refused with
a ``SignatureError``: variadic functions, structs or unions by value, and
types ctypes cannot pass (``__int128``, ``_Complex``).
"""
from __future__ import annotations

import ctypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from .errors import LinkError


class SignatureError(LinkError, ValueError):
    """A C declaration hotlink cannot parse or cannot call (a variadic function,
    a struct by value), or a function whose signature is not known."""


class Element(NamedTuple):
    """What the items of a buffer passed to a pointer parameter must be:
    ``kind`` ``"i"`` (signed integer), ``"u"`` (unsigned), ``"f"`` (floating
    point), ``"b"`` (``_Bool``) or ``"c"`` (``char``: any 1-byte integer), and
    their size in bytes."""
    kind: str
    size: int

    def describe(self) -> str:
        what = {"i": "signed integers", "u": "unsigned integers", "f": "floating point numbers",
                "b": "booleans", "c": "chars (any 1-byte integer)"}[self.kind]
        return f"{what} of {self.size} byte{'s' if self.size > 1 else ''}"


@dataclass(frozen=True)
class CType:
    """One parameter or result type: its C spelling and how ctypes passes it."""
    spelling: str
    ctype: Any                       # the ctypes type of the call (None: void)
    pointer: bool = False            # a data pointer: takes buffers (conversion needed)
    const: bool = False              # pointers: the pointee is const, read-only buffers are fine
    element: Element | None = None   # pointers: what buffer items must be; None: any bytes

    def __str__(self) -> str:
        return self.spelling


@dataclass(frozen=True)
class Param:
    name: str | None
    type: CType

    def __str__(self) -> str:
        s = self.type.spelling
        return f"{s}{'' if s.endswith('*') else ' '}{self.name}" if self.name else s


@dataclass(frozen=True)
class Signature:
    """A function's C signature: ``result`` and ``params``; ``restype`` and
    ``argtypes`` are what ctypes calls it with."""
    result: CType
    params: tuple[Param, ...]

    @property
    def restype(self) -> Any:
        return self.result.ctype

    @property
    def argtypes(self) -> list[Any]:
        return [p.type.ctype for p in self.params]

    @property
    def pointer_params(self) -> tuple[int, ...]:
        """Indices of the parameters that take buffers."""
        return tuple(i for i, p in enumerate(self.params) if p.type.pointer)

    @property
    def plain(self) -> bool:
        """No parameter needs converting: the call is a plain ctypes call."""
        return not self.pointer_params

    def declaration(self, name: str) -> str:
        params = ", ".join(map(str, self.params)) or "void"
        r = self.result.spelling
        return f"{r}{'' if r.endswith('*') else ' '}{name}({params})"

    def __str__(self) -> str:
        return f"{self.result.spelling}({', '.join(map(str, self.params)) or 'void'})"


# --- scalar types -------------------------------------------------------------------

# canonical spelling -> (ctypes type, element kind); sizes come from ctypes
_SCALARS: dict[str, tuple[Any, str]] = {
    "char": (ctypes.c_char, "c"),
    "signed char": (ctypes.c_byte, "i"), "unsigned char": (ctypes.c_ubyte, "u"),
    "short": (ctypes.c_short, "i"), "unsigned short": (ctypes.c_ushort, "u"),
    "int": (ctypes.c_int, "i"), "unsigned int": (ctypes.c_uint, "u"),
    "long": (ctypes.c_long, "i"), "unsigned long": (ctypes.c_ulong, "u"),
    "long long": (ctypes.c_longlong, "i"), "unsigned long long": (ctypes.c_ulonglong, "u"),
    "float": (ctypes.c_float, "f"), "double": (ctypes.c_double, "f"),
    "long double": (ctypes.c_longdouble, "f"),
    "_Bool": (ctypes.c_bool, "b"),
}

# names every declaration may use without declaring them (x86-64 Linux, LP64)
STANDARD_TYPEDEFS: Mapping[str, str] = {
    "size_t": "unsigned long", "ssize_t": "long", "ptrdiff_t": "long", "intptr_t": "long",
    "uintptr_t": "unsigned long", "off_t": "long", "intmax_t": "long", "uintmax_t": "unsigned long",
    "int8_t": "signed char", "int16_t": "short", "int32_t": "int", "int64_t": "long",
    "uint8_t": "unsigned char", "uint16_t": "unsigned short", "uint32_t": "unsigned int",
    "uint64_t": "unsigned long", "wchar_t": "int", "bool": "_Bool",
    "FILE": "struct _IO_FILE",
}


def scalar(spelling: str) -> CType:
    """The CType of a canonical scalar spelling (``"unsigned long"``)."""
    if spelling == "void":
        return CType("void", None)
    ct, kind = _SCALARS[spelling]
    return CType(spelling, ct, element=Element(kind, ctypes.sizeof(ct)))


def pointer(pointee: CType | None, const: bool, spelling: str) -> CType:
    """A data pointer; ``pointee`` None: anything (void, a struct, a pointer)."""
    return CType(spelling, ctypes.c_void_p, pointer=True, const=const,
                 element=pointee.element if pointee is not None else None)


def _canonical(words: list[str]) -> str | None:
    """``["long", "unsigned", "int"]`` -> ``"unsigned long"``; None if not a scalar."""
    unsigned = "unsigned" in words
    signed = "signed" in words
    rest = [w for w in words if w not in ("signed", "unsigned", "int")]
    has_int = "int" in words
    if unsigned and signed:
        return None
    key = " ".join(rest)
    if key in ("", "short", "long", "long long"):
        base = key or "int"
        return f"unsigned {base}" if unsigned else base
    if key == "char":
        return "unsigned char" if unsigned else ("signed char" if signed else "char")
    if has_int or unsigned or signed:
        return None
    if key in ("float", "double", "long double", "_Bool", "void"):
        return key
    return None


BY_VALUE = "struct by value"      # the ctype of a struct or union used by value: not callable


# --- parsing ----------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_]\w*")
_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct switch typedef
    union unsigned void volatile while _Bool _Complex _Atomic __restrict __restrict__ __const __inline
    __inline__ __extension__ __signed__ __volatile__""".split())


def identifiers(text: str) -> set[str]:
    """The identifiers in ``text`` that are not C keywords."""
    return set(_IDENT.findall(text)) - _KEYWORDS


def parse(declaration: str, symbol: str | None = None,
          typedefs: Mapping[str, str] | None = None) -> Signature:
    """The Signature of a C function declaration: a type (``"double(double *, long)"``)
    or a prototype (``"double dot(double *a, long n)"``, whose name must then be
    ``symbol``).  ``typedefs`` maps extra type names to what they stand for
    (``{"vec": "struct vec"}``).  SignatureError for anything else."""
    from pycparser import c_ast, c_parser

    where = f"{symbol}: " if symbol else ""
    text = declaration.strip().rstrip(";").strip()
    names = {**STANDARD_TYPEDEFS, **(typedefs or {})}
    prelude = "".join(f"typedef {t} {n};\n" for n, t in names.items())
    parser = c_parser.CParser()
    func: Any = None
    named: str | None = None
    errors = []
    # a prototype parses as a declaration, a bare function type as the operand of sizeof
    for source in (f"{prelude}{text};", f"{prelude}int __hotlink_t = sizeof({text});"):
        try:
            ast = parser.parse(source, filename="<declaration>")
        except Exception as e:           # pycparser's ParseError, or its lexer's complaints
            errors.append(str(e))
            continue
        last = ast.ext[-1]
        if isinstance(last, c_ast.Decl) and isinstance(last.type, c_ast.FuncDecl):
            func, named = last.type, last.name
            break
        if isinstance(last, c_ast.Decl) and isinstance(last.init, c_ast.UnaryOp) \
                and isinstance(last.init.expr, c_ast.Typename) and isinstance(last.init.expr.type, c_ast.FuncDecl):
            func = last.init.expr.type
            break
        errors.append("not a function type")
    if func is None:
        unknown = sorted(identifiers(text) - set(names) - ({symbol} if symbol else set()))
        hint = (f" (unknown names: {', '.join(unknown)}; a type name must be a C type, a <stdint.h> name, "
                f"or a struct/union/enum tag)") if unknown else ""
        raise SignatureError(f"{where}cannot parse the C declaration {declaration!r}: expected a function "
                             f"type such as 'double(double *, long)' or a prototype{hint}")
    if named is not None and symbol is not None and named != symbol:
        raise SignatureError(f"{where}the declaration {declaration!r} is for {named!r}, not {symbol!r}")
    tdefs = {e.name: e.type for e in ast.ext if isinstance(e, c_ast.Typedef)}
    return _function(func, tdefs, where, declaration)


def _function(func: Any, tdefs: dict[str, Any], where: str, declaration: str) -> Signature:
    from pycparser import c_ast

    params: list[Param] = []
    args = func.args.params if func.args is not None else []
    for i, p in enumerate(args):
        if isinstance(p, c_ast.EllipsisParam):
            raise SignatureError(f"{where}{declaration!r} is variadic ('...'): hotlink cannot call variadic "
                                 f"functions (their calling convention needs the argument types of each call); "
                                 f"wrap it in a C function with fixed parameters")
        if isinstance(p, c_ast.ID):      # K&R identifier list: no types
            raise SignatureError(f"{where}{declaration!r}: parameter {p.name!r} has no type")
        t = _type(p.type, tdefs, f"{where}parameter {i + 1} of {declaration!r}", param=True)
        if t.ctype is None:
            if len(args) == 1 and not getattr(p, "name", None) and t.spelling == "void":
                break                    # f(void)
            raise SignatureError(f"{where}parameter {i + 1} of {declaration!r} is void")
        params.append(Param(getattr(p, "name", None), t))
    result = _type(func.type, tdefs, f"{where}the result of {declaration!r}", param=False)
    if result.pointer and result.const and result.element == Element("c", 1):
        result = CType(result.spelling, ctypes.c_char_p)        # const char *: bytes, as ctypes does
    elif result.pointer:
        result = CType(result.spelling, ctypes.c_void_p)        # an address (int, or None for NULL)
    return check_callable(Signature(result, tuple(params)), where)


def _type(node: Any, tdefs: dict[str, Any], what: str, param: bool, quals: tuple[str, ...] = ()) -> CType:
    """The CType of a pycparser type node (typedefs resolved)."""
    from pycparser import c_ast

    if isinstance(node, c_ast.TypeDecl):
        inner = node.type
        q = tuple(node.quals) + quals
        if isinstance(inner, c_ast.IdentifierType):
            if len(inner.names) == 1 and inner.names[0] in tdefs:
                t = _type(tdefs[inner.names[0]], tdefs, what, param, q)    # spelled as the user wrote it
                cq = "const " if "const" in q and not t.pointer else ""
                return replace(t, spelling=cq + inner.names[0])
            canon = _canonical(list(inner.names))
            if canon is None:
                raise SignatureError(f"{what}: type {' '.join(inner.names)!r} cannot be passed "
                                     f"(not a C scalar type hotlink knows)")
            t = scalar(canon)
            return CType(("const " if "const" in q else "") + t.spelling, t.ctype, element=t.element)
        cq = "const " if "const" in q else ""
        if isinstance(inner, c_ast.Enum):
            return CType(f"{cq}enum {inner.name}", ctypes.c_int, element=Element("i", 4))
        if isinstance(inner, (c_ast.Struct, c_ast.Union)):
            kind = "struct" if isinstance(inner, c_ast.Struct) else "union"
            return CType(f"{cq}{kind} {inner.name or '<anonymous>'}", BY_VALUE)
        raise SignatureError(f"{what}: unsupported type")
    if isinstance(node, (c_ast.PtrDecl, c_ast.ArrayDecl)):
        inner = node.type
        if isinstance(inner, c_ast.FuncDecl):
            return CType("void (*)()", ctypes.c_void_p)      # a function pointer: an address
        pointee = _type(inner, tdefs, what, param)
        const = _const(inner, tdefs)
        base = pointee.spelling + (" const" if pointee.pointer and const else "")
        spelling = base + ("*" if base.endswith("*") else " *")
        if pointee.ctype is None or pointee.ctype is BY_VALUE or pointee.ctype is ctypes.c_void_p:
            return pointer(None, const, spelling)
        return pointer(pointee, const, spelling)
    if isinstance(node, c_ast.FuncDecl):
        if param:                         # a function type parameter is a function pointer
            return CType("void (*)()", ctypes.c_void_p)
        raise SignatureError(f"{what}: a function cannot return a function")
    raise SignatureError(f"{what}: unsupported type {type(node).__name__}")


def _const(node: Any, tdefs: dict[str, Any]) -> bool:
    """Whether the pointee type node carries ``const`` (through typedefs)."""
    from pycparser import c_ast
    if isinstance(node, c_ast.TypeDecl):
        if "const" in node.quals:
            return True
        inner = node.type
        if isinstance(inner, c_ast.IdentifierType) and len(inner.names) == 1 and inner.names[0] in tdefs:
            return _const(tdefs[inner.names[0]], tdefs)
        return False
    return "const" in getattr(node, "quals", ())


def check_callable(sig: Signature, where: str) -> Signature:
    """``sig`` if ctypes can call it: no struct or union by value."""
    for i, p in enumerate(sig.params):
        if p.type.ctype is BY_VALUE:
            raise SignatureError(f"{where}parameter {i + 1} ({p.type.spelling}) is passed by value: "
                                 f"hotlink passes structs and unions by pointer only")
    if sig.result.ctype is BY_VALUE:
        raise SignatureError(f"{where}the result ({sig.result.spelling}) is returned by value: hotlink "
                             f"passes structs and unions by pointer only")
    return sig
