"""Command line: ``hotlink run FILE... [--entry main] [--debug-info] [--perf-map] [--jitdump]
[--crash-report] [-- ARGS]`` and ``hotlink demo [--quick]``.

(The benchmarks need the repository: ``python benchmarks/run.py`` in a checkout.)"""
from __future__ import annotations

import argparse
import ctypes
import sys
from collections.abc import Sequence

from . import libc
from .errors import LinkError


def _run(files: Sequence[str], entry: str, args: Sequence[str], shared: Sequence[str],
         debug: tuple[bool | None, bool | None, bool | None]) -> int:
    from .session import Session

    debug_info, perf_map, jitdump = debug
    with Session(debug_info=debug_info, perf_map=perf_map, jitdump=jitdump) as session:
        for so in shared:
            session.load_shared(so)
        lib = session.library("main")
        # with debug info on, C/C++ sources are compiled with -g so gdb shows file:line
        lib.add_many(files, **({"flags": ["-g"]} if session.observers and debug_info else {}))
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
    # unset switches leave each feature to its HOTLINK_* environment variable
    run.add_argument("--debug-info", action="store_true", default=None,
                     help="register the code with gdb (GDB JIT interface; HOTLINK_DEBUG_INFO=1)")
    run.add_argument("--perf-map", action="store_true", default=None,
                     help="write /tmp/perf-PID.map (HOTLINK_PERF_MAP=1)")
    run.add_argument("--jitdump", action="store_true", default=None,
                     help="write perf's jit-PID.dump for 'perf inject --jit' (HOTLINK_JITDUMP=1)")
    run.add_argument("--crash-report", action="store_true",
                     help="name the JIT frames of a fatal signal on stderr (HOTLINK_CRASH_REPORT=1)")
    demo = sub.add_parser("demo", help="the live autotuner demo")
    demo.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    ns = parser.parse_args(argv)
    if ns.command == "run":
        try:
            if ns.crash_report:
                from .debug.crash import enable_crash_report
                enable_crash_report()
            return _run(ns.files, ns.entry, program_args, ns.shared,
                        (ns.debug_info, ns.perf_map, ns.jitdump))
        except (LinkError, OSError) as e:
            print(f"hotlink: {e}", file=sys.stderr)
            return 127
    from .demo import main as demo_main
    return demo_main(seconds_per_variant=0.3) if ns.quick else demo_main()


if __name__ == "__main__":
    sys.exit(main())
