"""Seeing JIT code (issue 10): Session.symbolize, the perf map and jitdump
files, the GDB JIT interface's descriptor and images, the switches by
argument and by environment variable, and what the features cost (nothing
when off; no growth after 10,000 registered units are removed).

gdb and perf themselves run in tests/test_gdb.py and tests/test_perf.py;
crash reports in tests/faults/test_crash_report.py."""
from __future__ import annotations

import ctypes
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import hotlink
from hotlink.debug import gdb as gdb_jit_module
from hotlink.debug.perf import JITDUMP_MAGIC

ROOT = Path(__file__).resolve().parent.parent
TWO = """\
int twice(int x) { return 2 * x; }
static int hidden(int x) { return x ^ 0x5a5a; }
int (*keep_hidden)(int) = hidden;
int thrice(int x) { return 3 * x + twice(x) - 2 * x; }
"""
DEBUG_ENV = ("HOTLINK_DEBUG_INFO", "HOTLINK_PERF_MAP", "HOTLINK_JITDUMP", "HOTLINK_CRASH_REPORT")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEBUG_ENV}
    env.update(extra)
    return env


def run_python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def symbol_sizes(obj: Path) -> dict[str, int]:
    with open(obj, "rb") as f:
        return {s.name: s["st_size"] for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC"}


# --- symbolize ---------------------------------------------------------------------

def test_symbolize_inside_outside_and_after_removal(session, compile_c):
    obj = compile_c(TWO, name="two")
    lib = session.library("math")
    u = lib.add(obj)
    twice, thrice = lib.address("twice"), lib.address("thrice")
    sizes = symbol_sizes(obj)

    assert session.symbolize(twice) == hotlink.Symbolized("math", u, "twice", 0)
    last = thrice + sizes["thrice"] - 1
    assert session.symbolize(last) == ("math", u, "thrice", sizes["thrice"] - 1)
    # the static function is in the unit but not published: no symbol, offset in the unit
    hidden = ctypes.c_void_p.from_address(lib.address("keep_hidden")).value
    where = session.symbolize(hidden)
    assert where is not None and where.unit is u and where.symbol is None

    # outside JIT code: libc, Python's heap, NULL
    assert session.symbolize(ctypes.cast(ctypes.CDLL(None).printf, ctypes.c_void_p).value) is None
    assert session.symbolize(id(session)) is None
    assert session.symbolize(0) is None

    u.remove()          # gone at once, before the grace period frees the memory
    assert session.symbolize(twice) is None
    assert session.symbolize(last) is None


def test_symbolize_in_a_patchable_library(session, compile_c):
    v1 = compile_c("int value(void) { return 1; }\n", name="v1")
    v2 = compile_c("int pad(void) { return 0; }\nint value(void) { return 2; }\n", name="v2")
    lib = session.library("kernels", patchable=True)
    u1 = lib.add(v1)
    stub = lib.address("value")
    assert session.symbolize(stub) == ("kernels", u1, "value", 0)      # the stub names its target
    assert session.symbolize(stub + 5) == ("kernels", u1, "value", 5)
    assert lib.function("value", ctypes.c_int)() == 1

    u2 = lib.replace(u1, v2)
    assert lib.function("value", ctypes.c_int)() == 2
    assert session.symbolize(stub) == ("kernels", u2, "value", 0)      # now leads to the new code
    target = ctypes.c_uint64.from_address(lib.entry_stubs["value"].slot).value
    assert target != stub
    assert session.symbolize(target) == ("kernels", u2, "value", 0)
    assert session.symbolize(target + 1) == ("kernels", u2, "value", 1)
    u2.remove()
    assert session.symbolize(stub) is None and session.symbolize(target) is None


# --- perf map and jitdump -----------------------------------------------------------

def test_perf_map_lists_every_function_as_it_is_linked(compile_c):
    obj = compile_c(TWO, name="two")
    v2 = compile_c("int twice(int x) { return x + x + 0 * x; }\n", name="v2")
    path = Path(f"/tmp/perf-{os.getpid()}.map")
    before = path.read_text() if path.exists() else ""
    with hotlink.Session(perf_map=True, jitdump=False) as s:
        lib = s.library("math")
        u = lib.add(obj)
        text = path.read_text()[len(before):]
        lines = {ln.split(" ", 2)[2]: (int(ln.split()[0], 16), int(ln.split()[1], 16)) for ln in text.splitlines()}
        sizes = symbol_sizes(obj)
        assert lines["twice"] == (lib.address("twice"), sizes["twice"])
        assert lines["thrice"] == (lib.address("thrice"), sizes["thrice"])
        assert lines["hidden"][1] == sizes["hidden"]        # static functions too
        old = lib.address("twice")
        lib.replace(u, v2)
        text = path.read_text()[len(before):]
        twices = [ln for ln in text.splitlines() if ln.endswith(" twice")]
        # the replaced code keeps its line; the new one is added
        assert [int(t.split()[0], 16) for t in twices] == [old, lib.address("twice")]
    if not before:
        path.unlink()


def read_jitdump(path: Path) -> tuple[tuple[int, ...], list[dict]]:
    data = path.read_bytes()
    header = struct.unpack_from("<IIIIIIQQ", data, 0)
    records, at = [], header[2]
    while at < len(data):
        rid, size, ts = struct.unpack_from("<IIQ", data, at)
        rec = {"id": rid, "timestamp": ts}
        if rid == 0:
            pid, tid, vma, addr, code_size, index = struct.unpack_from("<IIQQQQ", data, at + 16)
            name_end = data.index(b"\0", at + 56)
            rec.update(pid=pid, tid=tid, vma=vma, addr=addr, index=index, name=data[at + 56:name_end].decode(),
                       code=data[name_end + 1:name_end + 1 + code_size])
            assert size == 56 + (name_end + 1 - at - 56) + code_size
        records.append(rec)
        at += size
    return header, records


def test_jitdump_by_environment_variable(tmp_path, compile_c):
    obj = compile_c(TWO, name="two")
    code = f"""
        import ctypes, json, os, time, hotlink
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        s = hotlink.Session()
        lib = s.library("math")
        lib.add({str(obj)!r})
        t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        from hotlink.debug.perf import JITDUMP
        maps = [ln for ln in open("/proc/self/maps") if ln.rstrip().endswith(os.path.basename(JITDUMP.path))]
        addr = {{n: lib.address(n) for n in ("twice", "thrice")}}
        code = {{n: ctypes.string_at(a, 64).hex() for n, a in addr.items()}}
        print(json.dumps(dict(pid=os.getpid(), t0=t0, t1=t1, path=JITDUMP.path, maps=maps, addr=addr, code=code,
                              observers=[type(o).__name__ for o in s.observers])))
    """
    out = json.loads(run_python(code, clean_env(HOTLINK_JITDUMP="1", JITDUMPDIR=str(tmp_path)), tmp_path).stdout)
    assert out["observers"] == ["PerfObserver"]
    path = Path(out["path"])
    assert path.parent.parent == tmp_path / "jit" and path.name == f"jit-{out['pid']}.dump"
    assert len(out["maps"]) == 1 and out["maps"][0].split()[1].startswith("r-x"), out["maps"]   # perf sees the path
    header, records = read_jitdump(path)
    assert header[:6] == (JITDUMP_MAGIC, 1, 40, 62, 0, out["pid"])
    loads = {r["name"]: r for r in records if r["id"] == 0}
    assert set(loads) == {"twice", "thrice", "hidden"}
    sizes = symbol_sizes(obj)
    for name, addr in out["addr"].items():
        r = loads[name]
        assert r["vma"] == r["addr"] == addr and r["pid"] == out["pid"]
        assert len(r["code"]) == sizes[name] and out["code"][name].startswith(r["code"].hex())
        assert out["t0"] <= r["timestamp"] <= out["t1"]          # CLOCK_MONOTONIC, as perf -k mono
    assert sorted(r["index"] for r in loads.values()) == [0, 1, 2]
    assert not Path(f"/tmp/perf-{out['pid']}.map").exists()      # only the switch that was asked for


def test_switches_by_argument_and_environment(tmp_path):
    code = """
        import json, hotlink
        kinds = lambda s: sorted(type(o).__name__ for o in s.observers)
        print(json.dumps([kinds(hotlink.Session()),
                          kinds(hotlink.Session(debug_info=False, perf_map=False, jitdump=False))]))
    """
    out = json.loads(run_python(code, clean_env(HOTLINK_DEBUG_INFO="1", HOTLINK_PERF_MAP="yes"), tmp_path).stdout)
    assert out == [["GdbObserver", "PerfObserver"], []]          # an explicit False wins over the variable
    out = json.loads(run_python(code, clean_env(HOTLINK_DEBUG_INFO="0", HOTLINK_PERF_MAP="off"), tmp_path).stdout)
    assert out == [[], []]
    with hotlink.Session(debug_info=True, perf_map=True) as s:   # arguments alone
        assert sorted(type(o).__name__ for o in s.observers) == ["GdbObserver", "PerfObserver"]


# --- the GDB JIT interface -------------------------------------------------------------

def registered_images() -> list[bytes]:
    jit = gdb_jit_module.gdb_jit()
    out, at = [], jit.descriptor.first_entry
    while at:
        nxt, _, addr, size = struct.unpack("<QQQQ", ctypes.string_at(at, 32))
        out.append(ctypes.string_at(addr, size))
        at = nxt
    return out


def test_registration_object_is_a_loaded_file_gdb_can_read():
    jit = gdb_jit_module.gdb_jit()
    path = Path(jit.path)
    assert path.is_file() and path.read_bytes() == gdb_jit_module.registration_object()
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert any(ln.rstrip().endswith(str(path)) for ln in open("/proc/self/maps"))   # loaded from that path
    with open(path, "rb") as f:
        syms = {s.name: s for s in ELFFile(f).get_section_by_name(".dynsym").iter_symbols()}
    assert syms["__jit_debug_register_code"]["st_info"]["type"] == "STT_FUNC"
    assert syms["__jit_debug_descriptor"]["st_size"] == 24
    assert jit.descriptor.version == 1


@pytest.mark.parametrize("flags", ["-g", "-g -gz=zlib"])     # compressed debug sections are inflated
def test_images_carry_run_addresses_and_relocated_dwarf(compile_c, flags):
    src = "int twice(int x) {\n    return 2 * x;\n}\nint thrice(int x) {\n    return 3 * x;\n}\n"
    obj = compile_c(src, flags, name="lines")
    before = len(registered_images())
    with hotlink.Session(debug_info=True) as s:
        lib = s.library("dbg")
        u = lib.add(obj)
        images = registered_images()
        assert len(images) == before + 1
        image = ELFFile(io.BytesIO(images[0]))            # the newest is first in gdb's list
        assert image.header.e_type == "ET_REL"
        assert image.get_section_by_name(".rela.debug_info") is None   # applied, not left for gdb
        assert not image.get_section_by_name(".debug_info")["sh_flags"] & 0x800      # not SHF_COMPRESSED
        syms = {sym.name: sym for sym in image.get_section_by_name(".symtab").iter_symbols()}
        for name in ("twice", "thrice"):
            sec = image.get_section(syms[name]["st_shndx"])
            assert sec["sh_addr"] + syms[name]["st_value"] == lib.address(name)
        eh = image.get_section_by_name(".eh_frame")
        assert eh["sh_addr"] and eh.data() == ctypes.string_at(eh["sh_addr"], eh["sh_size"])  # as linked
        dwarf = image.get_dwarf_info()
        subprograms = {}
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag == "DW_TAG_subprogram" and "DW_AT_low_pc" in die.attributes:
                    subprograms[die.attributes["DW_AT_name"].value.decode()] = die.attributes["DW_AT_low_pc"].value
            rows = [e.state for e in dwarf.line_program_for_CU(cu).get_entries() if e.state]
            lines: dict[int, set[int]] = {}
            for r in rows:
                lines.setdefault(r.address, set()).add(r.line)
        assert subprograms == {"twice": lib.address("twice"), "thrice": lib.address("thrice")}
        assert lines[lib.address("twice")] <= {1, 2} and 2 in lines[lib.address("twice")]      # "return 2 * x;"
        assert lines[lib.address("thrice")] <= {4, 5} and 5 in lines[lib.address("thrice")]

        debug_bytes = s.memory().debug
        assert debug_bytes >= len(images[0])                 # accounted for in memory()
        v2 = compile_c("int twice(int x) {\n    return x + x;\n}\n", "-g", name="v2")
        u2 = lib.replace(u, v2)
        images = registered_images()
        assert len(images) == before + 1                     # the old image went with the old code
        assert b"thrice" not in images[0]
        u2.remove()
        assert len(registered_images()) == before
        assert s.memory().debug == 0


def test_no_observers_and_no_debug_memory_when_off(session, compile_c):
    lib = session.library("plain")
    lib.add(compile_c(TWO))
    assert session.observers == [] and session.memory().debug == 0


@pytest.mark.slow
def test_10000_units_registered_and_removed_leave_no_growth(tmp_path):
    """10,000 tiny units with debug info, removed, three times: no descriptor
    entries and no debug memory are left, and resident memory after the
    later rounds stays at what the first left (malloc's noise is about
    1 MiB either way, so the lower of the later rounds is compared: a leak
    of even 32 bytes per unit would add 640 KiB over them)."""
    code = f"""
        import gc, json, sys
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        import _tiny, hotlink
        from hotlink.debug.gdb import gdb_jit
        objs = _tiny.variants(10000)
        s = hotlink.Session(debug_info=True)
        lib = s.library("tiny")
        def cycle():
            units = [lib.add(o) for o in objs]
            peak = (gdb_jit().entries(), s.memory().debug)
            for u in reversed(units):
                u.remove()
            assert s.synchronize(10)
            gc.collect()
            return peak, (gdb_jit().entries(), s.memory().debug, _tiny.rss())
        rounds = [cycle() for _ in range(3)]
        print(json.dumps(rounds))
    """
    rounds = json.loads(run_python(code, clean_env(), tmp_path).stdout)
    for peak, after in rounds:
        assert peak[0] == 10000 and peak[1] > 10000 * 100
        assert after[:2] == [0, 0]
    base = rounds[0][1][2]
    grown = min(after[2] for _, after in rounds[1:]) - base
    assert grown < 512 * 1024, f"resident memory grew by {grown} bytes over 20,000 registered units"
    print(f"descriptor entries 0 -> {rounds[0][0][0]} -> 0; debug bytes {rounds[0][0][1]} at peak -> 0; "
          f"RSS after each round {[after[2] for _, after in rounds]}")


def test_footprint_with_debug_features_off(tmp_path):
    """Nothing per unit when the features are off: at most 1 KiB resident per tiny unit."""
    code = f"""
        import ctypes, gc, json, sys
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        import _tiny, hotlink
        objs = _tiny.variants(4000)
        s = hotlink.Session()
        lib = s.library("tiny")
        keep = [None] * len(objs)
        for i, o in enumerate(objs):
            keep[i] = lib.add(o)
            assert lib.function(_tiny.name(i), ctypes.c_int, [ctypes.c_int])(7) == _tiny.expected(i)
            if i + 1 == 500:
                gc.collect()
                warm = _tiny.rss()
        gc.collect()
        print(json.dumps(dict(per_unit=(_tiny.rss() - warm) / (len(objs) - 500), observers=len(s.observers),
                              debug=s.memory().debug)))
    """
    out = json.loads(run_python(code, clean_env(), tmp_path).stdout)
    assert out["observers"] == 0 and out["debug"] == 0
    assert out["per_unit"] <= 1024, f"{out['per_unit']:.0f} resident bytes per tiny unit"
    print(f"{out['per_unit']:.0f} resident bytes per tiny unit with the debug features off")


def test_cli_switches(tmp_path):
    """``hotlink run --perf-map --jitdump --crash-report`` switches them on for one run."""
    src = tmp_path / "prog.c"
    src.write_text("#include <stdio.h>\n#include <unistd.h>\n"
                   "int deref(volatile int *p) { return *p; }\n"
                   "int main(void) { printf(\"%d\\n\", getpid()); fflush(stdout); return deref(0) + 1; }\n")
    proc = subprocess.run([sys.executable, "-m", "hotlink", "run", "--perf-map", "--jitdump", "--crash-report",
                           str(src)], env=clean_env(JITDUMPDIR=str(tmp_path)), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -11, proc.stderr
    pid = int(proc.stdout.split()[0])
    perf_map = Path(f"/tmp/perf-{pid}.map")
    try:
        names = {ln.split(" ", 2)[2] for ln in perf_map.read_text().splitlines()}
    finally:
        perf_map.unlink()
    assert {"main", "deref"} <= names
    assert len(list((tmp_path / "jit").glob(f"*/jit-{pid}.dump"))) == 1
    assert "hotlink: fatal signal SIGSEGV (11) at address 0x0; JIT frames:" in proc.stderr
    assert " main:deref+0x" in proc.stderr and "(prog.c)" in proc.stderr
