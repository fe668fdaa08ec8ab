"""Numeric archives: glibc's libm (libc6-dev), GMP, MPFR.

libm's ``floor``, ``ceil``, ``trunc``, ``rint``, ``fma``, ``sin``, ``exp`` ...
are ``STT_GNU_IFUNC`` symbols: a link that bound the resolver would return the
argument (``floor(2.7) == 2.7``). libm.a is a GNU ld script naming
libm-2.36.a and libmvec.a; the harness follows it. MPFR keeps its flags and
exponent range in ``__thread`` variables.
"""
from __future__ import annotations

import ctypes
import decimal
import math
from fractions import Fraction

import pytest

from realworld.harness import Api, case

c_double = ctypes.c_double
c_long = ctypes.c_long
c_ulong = ctypes.c_ulong
c_int = ctypes.c_int
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p

POINTS = [0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 2.7, -2.7, 3.14159, 1e-310, 123456.789, -1e15 + 0.5, 2.0 ** 52 + 1]
UNARY = ["floor", "ceil", "trunc", "rint", "nearbyint", "round", "atan", "sin", "cos", "tan", "exp", "expm1",
         "log1p", "sqrt", "cbrt", "erf", "erfc", "tanh", "asinh", "atan2", "hypot", "pow", "fma", "log", "log2",
         "log10", "lgamma", "tgamma", "exp2", "fmod"]
PY = {"floor": math.floor, "ceil": math.ceil, "trunc": math.trunc, "atan": math.atan, "sin": math.sin,
      "cos": math.cos, "tan": math.tan, "exp": math.exp, "expm1": math.expm1, "log1p": math.log1p,
      "sqrt": math.sqrt, "cbrt": math.cbrt, "erf": math.erf, "erfc": math.erfc,
      "tanh": math.tanh, "asinh": math.asinh, "log": math.log, "log2": math.log2, "log10": math.log10,
      "exp2": math.exp2}     # lgamma, tgamma: CPython has its own, only the shared build compares


D = decimal.Decimal


def _fma_exact(a: float, b: float, c: float) -> float:
    # int/int true division rounds correctly, so this is fma's exact answer
    return float(Fraction(a) * Fraction(b) + Fraction(c))


@case("m", "libm.a", "libm.so.6", package="libc6-dev")
def LIBM(api: Api) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in UNARY:
        if name in ("atan2", "hypot", "pow", "fmod"):
            f = api(name, c_double, c_double, c_double)
            vals = [f(x, 1.75) for x in POINTS]
            ref = {"atan2": math.atan2, "hypot": math.hypot, "pow": lambda x, y: math.pow(abs(x), y),
                   "fmod": math.fmod}[name]
            if name == "pow":
                vals = [f(abs(x), 1.75) for x in POINTS]
            assert vals == [ref(x, 1.75) for x in POINTS], name
        elif name == "fma":
            f = api(name, c_double, c_double, c_double, c_double)
            vals = [f(x, 3.0000000000000004, -x * 3) for x in POINTS]
            assert vals == [_fma_exact(x, 3.0000000000000004, -x * 3) for x in POINTS], name
        else:
            f = api(name, c_double, c_double)
            vals = [f(x) for x in POINTS]
            py = PY.get(name)
            for x, v in zip(POINTS, vals):
                if py is not None:
                    try:
                        want = float(py(x))
                    except (ValueError, OverflowError):   # domain/range errors: the shared build decides
                        continue
                elif name in ("lgamma", "tgamma"):
                    continue
                elif name in ("rint", "nearbyint"):        # round half to even, like Python's round()
                    want = float(round(x))
                else:                                      # round(): half away from zero
                    want = math.copysign(float(D(x).quantize(D(1), decimal.ROUND_HALF_UP)), x)
                assert v == want, (name, x, v, want)
        out[name] = [v.hex() for v in vals]      # hex: NaN results compare equal too
    # the IFUNC symptom: a resolver bound instead of the function returns its argument
    assert out["floor"][POINTS.index(2.7)] == (2.0).hex() and out["ceil"][POINTS.index(2.7)] == (3.0).hex()
    remquo = api("remquo", c_double, c_double, c_double, ctypes.POINTER(c_int))
    q = c_int()
    r = remquo(29.0, 3.0, ctypes.byref(q))
    assert (r, q.value & 7) == (math.remainder(29.0, 3.0), 10 & 7)
    nextafter = api("nextafter", c_double, c_double, c_double)
    assert nextafter(1.0, 2.0) == math.nextafter(1.0, 2.0)
    out["remquo"] = [r.hex(), str(q.value)]
    return out


class Mpz(ctypes.Structure):
    _fields_ = [("alloc", c_int), ("size", c_int), ("d", c_void_p)]


@case("gmp", "libgmp.a", "libgmp.so.10", package="libgmp-dev")
def GMP(api: Api) -> list[object]:
    init = api("__gmpz_init", None, ctypes.POINTER(Mpz))
    clear = api("__gmpz_clear", None, ctypes.POINTER(Mpz))
    set_str = api("__gmpz_set_str", c_int, ctypes.POINTER(Mpz), c_char_p, c_int)
    get_str = api("__gmpz_get_str", c_char_p, c_char_p, c_int, ctypes.POINTER(Mpz))
    sizeinbase = api("__gmpz_sizeinbase", ctypes.c_size_t, ctypes.POINTER(Mpz), c_int)
    mul = api("__gmpz_mul", None, ctypes.POINTER(Mpz), ctypes.POINTER(Mpz), ctypes.POINTER(Mpz))
    pow_ui = api("__gmpz_pow_ui", None, ctypes.POINTER(Mpz), ctypes.POINTER(Mpz), c_ulong)
    powm = api("__gmpz_powm", None, *[ctypes.POINTER(Mpz)] * 4)
    gcd = api("__gmpz_gcd", None, *[ctypes.POINTER(Mpz)] * 3)
    fac = api("__gmpz_fac_ui", None, ctypes.POINTER(Mpz), c_ulong)
    tdiv_qr = api("__gmpz_tdiv_qr", None, *[ctypes.POINTER(Mpz)] * 4)
    sqrt = api("__gmpz_sqrt", None, ctypes.POINTER(Mpz), ctypes.POINTER(Mpz))
    prime = api("__gmpz_probab_prime_p", c_int, ctypes.POINTER(Mpz), c_int)
    version = ctypes.c_char_p.in_dll(api.target, "__gmp_version") if api.kind == "shared" else \
        ctypes.c_char_p.from_address(api.target.address("__gmp_version"))

    regs = [Mpz() for _ in range(5)]
    for r in regs:
        init(ctypes.byref(r))
    a, b, c, d, e = (ctypes.byref(r) for r in regs)

    def value(z: ctypes._CArgObject) -> int:
        out = ctypes.create_string_buffer(sizeinbase(z, 16) + 2)
        return int(get_str(out, 16, z), 16)

    x = 3 ** 200 + 12345
    y = 7 ** 150 - 1
    m = 2 ** 521 - 1
    assert set_str(a, hex(x)[2:].encode(), 16) == 0 and set_str(b, str(y).encode(), 10) == 0
    assert value(a) == x and value(b) == y
    mul(c, a, b)
    assert value(c) == x * y
    pow_ui(c, a, 7)
    assert value(c) == x ** 7
    set_str(d, str(m).encode(), 10)
    powm(c, a, b, d)
    assert value(c) == pow(x, y, m)
    gcd(c, a, b)
    assert value(c) == math.gcd(x, y)
    fac(c, 500)
    assert value(c) == math.factorial(500)
    tdiv_qr(c, e, a, b)
    assert (value(c), value(e)) == divmod(x, y)
    sqrt(c, a)
    assert value(c) == math.isqrt(x)
    assert prime(d, 25) >= 1             # 2^521 - 1 is a Mersenne prime
    set_str(d, str(m * 3).encode(), 10)
    assert prime(d, 25) == 0
    dec = ctypes.create_string_buffer(sizeinbase(a, 10) + 2)
    result = [version.value, get_str(dec, 10, a), get_str(ctypes.create_string_buffer(600), 36, ctypes.byref(regs[2]))]
    for r in regs:
        clear(ctypes.byref(r))
    return result


class Mpfr(ctypes.Structure):
    _fields_ = [("prec", c_long), ("sign", c_int), ("exp", c_long), ("d", c_void_p)]


@case("mpfr", ("libmpfr.a", "libgmp.a"), "libmpfr.so.6", package="libmpfr-dev libgmp-dev")
def MPFR(api: Api) -> list[object]:
    P = ctypes.POINTER(Mpfr)
    init2 = api("mpfr_init2", None, P, c_long)
    clear = api("mpfr_clear", None, P)
    set_ui = api("mpfr_set_ui", c_int, P, c_ulong, c_int)
    set_d = api("mpfr_set_d", c_int, P, c_double, c_int)
    get_d = api("mpfr_get_d", c_double, P, c_int)
    get_str = api("mpfr_get_str", c_char_p, c_char_p, ctypes.POINTER(c_long), c_int, ctypes.c_size_t, P, c_int)
    version = api("mpfr_get_version", c_char_p)
    fns = {n: api(f"mpfr_{n}", c_int, P, P, c_int) for n in ("sqrt", "exp", "log", "sin", "atan", "gamma")}
    const_pi = api("mpfr_const_pi", c_int, P, c_int)
    inexact = api("mpfr_inexflag_p", c_int)
    clear_flags = api("mpfr_clear_flags", None)
    RNDN = 0

    x, r = Mpfr(), Mpfr()
    init2(ctypes.byref(x), 200)
    init2(ctypes.byref(r), 200)

    def digits(z: Mpfr, n: int = 50) -> str:
        e = c_long()
        s = get_str(ctypes.create_string_buffer(n + 8), ctypes.byref(e), 10, n, ctypes.byref(z), RNDN).decode()
        assert s.lstrip("-").isdigit(), f"mpfr_get_str gave {s!r} (inf/nan: a wrong result)"
        sign = "-" if s.startswith("-") else ""
        return f"{sign}0.{s.lstrip('-')}e{e.value}"

    decimal.getcontext().prec = 50
    out: list[object] = [version()]
    set_ui(ctypes.byref(x), 2, RNDN)
    clear_flags()
    assert inexact() == 0
    fns["sqrt"](ctypes.byref(r), ctypes.byref(x), RNDN)
    assert inexact() != 0                   # the flags live in thread-local storage
    assert D(digits(r)) == D(2).sqrt()
    fns["exp"](ctypes.byref(r), ctypes.byref(x), RNDN)
    assert D(digits(r)) == D(2).exp()
    fns["log"](ctypes.byref(r), ctypes.byref(x), RNDN)
    assert D(digits(r)) == D(2).ln()
    const_pi(ctypes.byref(r), RNDN)
    assert digits(r) == "0.31415926535897932384626433832795028841971693993751e1"
    assert get_d(ctypes.byref(r), RNDN) == math.pi
    set_d(ctypes.byref(x), 0.5, RNDN)
    for name in ("sin", "atan", "gamma"):
        fns[name](ctypes.byref(r), ctypes.byref(x), RNDN)
        out.append(digits(r))
    assert D(out[-1]) == D("1.7724538509055160272981674833411451827975494561224")   # gamma(1/2) = sqrt(pi)
    clear(ctypes.byref(x))
    clear(ctypes.byref(r))
    return out


@pytest.mark.parametrize("c", [LIBM, GMP, MPFR], ids=lambda c: c.name)
def test_math_archive(run_case, c):
    run_case(c)
