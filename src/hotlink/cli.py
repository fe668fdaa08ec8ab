"""Command line: ``hotlink run FILE... [--entry main] [-- ARGS]`` and ``hotlink demo``."""
from __future__ import annotations

import argparse
import ctypes
import sys
from collections.abc import Sequence

from . import libc
from .errors import LinkError


def _run(files: Sequence[str], entry: str, args: Sequence[str], shared: Sequence[str]) -> int:
    from .session import Session

    with Session() as session:
        for so in shared:
            session.load_shared(so)
        lib = session.library("main")
        lib.add_many(files)
        argv = [files[0], *args]
        c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
        main = lib.function(entry, ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)])
        sys.stdout.flush()
        try:
            rc: int = main(len(argv), c_argv)      # restype c_int: ctypes gives an int
        finally:
            libc.fflush(None)    # the program's stdio buffers, before Python prints more
        return rc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:          # the benchmark runner parses its own options
        from .bench import main as bench_main
        return bench_main(argv[1:])
    program_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, program_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="hotlink",
        description="JIT-link native code into a running Python process.",
        epilog="Arguments after '--' are passed to the program run by 'hotlink run'.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="link FILEs (.o, .a, .ll, .bc, .c, .cpp) and call the entry point, like lli",
                         description="Link the files into one library, call ENTRY(argc, argv) with "
                                     "the arguments after '--', and exit with its return value.")
    run.add_argument("files", nargs="+", metavar="FILE",
                     help="ELF objects (.o), static archives (.a), LLVM IR (.ll, .bc), C/C++ source (.c, .cpp)")
    run.add_argument("--entry", default="main", help="function to call (default: main)")
    run.add_argument("--shared", action="append", default=[], metavar="SO",
                     help="also resolve symbols from this shared object (repeatable)")
    sub.add_parser("demo", help="the live autotuner demo")
    sub.add_parser("bench", help="run every benchmark against dlopen, LLJIT and MCJIT (see 'hotlink bench --help')",
                   add_help=False)
    ns = parser.parse_args(argv)
    if ns.command == "run":
        try:
            return _run(ns.files, ns.entry, program_args, ns.shared)
        except (LinkError, OSError) as e:
            print(f"hotlink: {e}", file=sys.stderr)
            return 127
    from .demo import main as demo_main
    return demo_main()


if __name__ == "__main__":
    sys.exit(main())
