"""The one source classifier (``hotlink.frontend.source.classify``): every
kind of input, described once; a file read exactly once per ``add``,
``add_many``, ``replace`` and ``compile_many``; objects and archives passed
through without any front-end work."""
from __future__ import annotations

import builtins
import os
import threading
from ctypes import c_int
from pathlib import Path

import llvmlite.binding as llvm
import llvmlite.ir as ir
import pytest

import hotlink
from hotlink.frontend import SourceKind, classify
from hotlink.frontend import build as frontend_build
from hotlink.frontend.jobs import CompileJob, Options, make_job

IR = "define i32 @src_ir(i32 %x) {\n  %r = mul i32 %x, 3\n  ret i32 %r\n}\n"
C = "int src_c(int x) { return x + 5; }\n"
CXX = "extern \"C\" int src_cxx(int x) { return x * 7; }\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's object cache."""
    monkeypatch.setenv("HOTLINK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def obj(compile_c) -> Path:
    return compile_c("int src_obj(int x) { return x - 1; }\n", name="srcobj")


@pytest.fixture
def archive(compile_c, toolchain) -> Path:
    return toolchain.archive([compile_c("int src_ar(int x) { return -x; }\n", name="srcar")], name="libsrc")


# --- classify: one description per input ------------------------------------


def test_classify_paths_by_magic_then_extension_then_content(tmp_path, obj, archive):
    files = {"k.ll": IR.encode(), "k.bc": bytes(llvm.parse_assembly(IR).as_bitcode()),
             "k.c": C.encode(), "k.cpp": CXX.encode(), "k.cc": CXX.encode(), "k.txt": IR.encode()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    want = {"k.ll": SourceKind.IR_TEXT, "k.bc": SourceKind.BITCODE, "k.c": SourceKind.C,
            "k.cpp": SourceKind.CXX, "k.cc": SourceKind.CXX, "k.txt": SourceKind.IR_TEXT}
    for name, kind in want.items():
        for source in (tmp_path / name, str(tmp_path / name)):         # os.PathLike and str
            d = classify(source)
            assert (d.kind, d.data, d.origin, d.path, d.name) == \
                (kind, files[name], str(tmp_path / name), str(tmp_path / name), str(tmp_path / name))
    for path, kind in ((obj, SourceKind.OBJECT), (archive, SourceKind.ARCHIVE)):
        d = classify(path)
        assert d.kind is kind and d.kind.linkable and d.language is None and d.data == path.read_bytes()
    # an object named like a source is still an object; language= is believed, magic or not
    (tmp_path / "really_an_object.c").write_bytes(obj.read_bytes())
    assert classify(tmp_path / "really_an_object.c").kind is SourceKind.OBJECT
    assert classify(obj, language="c").kind is SourceKind.C
    assert classify(tmp_path / "k.txt", language="cxx").kind is SourceKind.CXX


def test_classify_text_bytes_and_modules():
    d = classify(IR)
    assert (d.kind, d.data, d.origin, d.path, d.name) == (SourceKind.IR_TEXT, IR.encode(), "<string>", None, "<bytes>")
    assert classify(C, language="c").kind is SourceKind.C
    assert classify(C, language="C++").kind is SourceKind.CXX
    assert classify(IR.encode()).kind is SourceKind.IR_TEXT
    assert classify(bytearray(IR.encode())).origin == "<bytes>"
    bc = bytes(llvm.parse_assembly(IR).as_bitcode())
    assert classify(memoryview(bc)).kind is SourceKind.BITCODE
    elf = b"\x7fELF" + bytes(60)
    assert classify(elf).kind is SourceKind.OBJECT
    assert classify(b"!<arch>\n").kind is SourceKind.ARCHIVE
    assert classify(elf, language="llvm").kind is SourceKind.IR_TEXT      # language= wins over magic

    mod = ir.Module(name="built")
    ir.Function(mod, ir.FunctionType(ir.VoidType(), []), name="f")
    d = classify(mod, language="c")                                      # a module is IR, whatever language says
    assert (d.kind, d.language, d.origin, d.data) == (SourceKind.MODULE, "llvm", "<llvm module built>", str(mod).encode())
    ref = llvm.parse_assembly(IR)
    d = classify(ref)
    assert d.kind is SourceKind.MODULE and d.data[:4] == b"BC\xc0\xde"


def test_classify_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(TypeError, match="cannot link or compile a int"):
        classify(42)
    with pytest.raises(FileNotFoundError, match="no such file"):
        classify("no/such/file.o")                                        # one line: a mistyped path
    with pytest.raises(hotlink.MalformedObjectError, match=r"<bytes>: the input is not an ELF object"):
        classify(b"neither an object nor IR")
    with pytest.raises(hotlink.MalformedObjectError, match=r"<string>: the input is not"):
        classify("int f(void) {\n  return 1;\n}\n")                       # C text needs language=
    (tmp_path / "blob").write_bytes(b"\x01\x02\x03")
    with pytest.raises(hotlink.MalformedObjectError, match=r"blob: a file is not"):
        classify(tmp_path / "blob")
    (tmp_path / "dir.c").mkdir()
    with pytest.raises(IsADirectoryError, match="source is a directory"):
        classify(str(tmp_path / "dir.c"))
    with pytest.raises(FileNotFoundError, match="cannot read source file"):
        classify(tmp_path / "missing.o")                                  # os.PathLike: always a path
    with pytest.raises(ValueError, match="language='fortran' is not supported"):
        classify(IR, language="fortran")


def test_compile_job_from_classified_source(tmp_path):
    (tmp_path / "k.c").write_text(C)
    job = CompileJob.from_source(classify(tmp_path / "k.c"), Options())
    assert (job.language, job.path, job.origin) == ("c", str(tmp_path / "k.c"), str(tmp_path / "k.c"))
    job = make_job(IR, Options())
    assert (job.language, job.path, job.origin) == ("llvm", None, "<string>")
    with pytest.raises(ValueError, match="needs no compiling"):
        CompileJob.from_source(classify(b"\x7fELF" + bytes(60)), Options())


# --- read once, and objects pass through untouched ---------------------------


@pytest.fixture
def opens(monkeypatch):
    """Counts this process's ``open`` calls per path."""
    counts: dict[str, int] = {}
    real = builtins.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            key = os.path.realpath(os.fspath(file))
            counts[key] = counts.get(key, 0) + 1
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    return lambda path: counts.get(os.path.realpath(path), 0)


def test_each_file_is_read_once_per_add(session, tmp_path, obj, archive, opens):
    ll = tmp_path / "k.ll"
    ll.write_text(IR)
    c = tmp_path / "k.c"
    c.write_text(C)
    lib = session.library("once")
    for source in (obj, str(archive), ll, str(c)):
        before = opens(source)
        unit = lib.add(source)
        assert opens(source) == before + 1, source
        assert unit.name == os.path.basename(source)
    assert lib.function("src_ir", c_int, [c_int])(4) == 12
    assert lib.function("src_c", c_int, [c_int])(4) == 9
    assert lib.function("src_ar", c_int, [c_int])(4) == -4
    # replace: once too
    before = opens(c)
    lib.replace(unit, c)
    assert opens(c) == before + 1
    # add_many and compile_many: once each
    lib2 = session.library("once-many")
    sources = [obj, archive, ll, c]
    before = [opens(s) for s in sources]
    lib2.add_many(sources)
    assert [opens(s) for s in sources] == [b + 1 for b in before]
    session.compile_many(sources, workers=1)
    assert [opens(s) for s in sources] == [b + 2 for b in before]


def test_objects_and_archives_need_no_front_end(session, obj, archive, monkeypatch):
    def no(*args, **kwargs):
        raise AssertionError("front-end work for an object or archive")

    monkeypatch.setattr(frontend_build, "compile_jobs", no)
    monkeypatch.setattr(frontend_build.ObjectCache, "for_options", no)
    lib = session.library("plain")
    u = lib.add(obj)
    lib.replace(u, obj.read_bytes())
    lib.add_many([archive.read_bytes()])
    assert lib.function("src_obj", c_int, [c_int])(4) == 3
    assert lib.function("src_ar", c_int, [c_int])(4) == -4
    assert session.compile_many([obj, archive]) == [obj.read_bytes(), archive.read_bytes()]
    # the options are still checked: a misspelt one is an error for an object too
    with pytest.raises(TypeError, match="unknown front-end option"):
        session.library("typo").add(obj, optimise=3)


def _fifo_with(tmp_path: Path, name: str, data: bytes) -> tuple[Path, threading.Thread]:
    """A FIFO that yields ``data`` to its first reader only: a second open
    would block (the writer is gone), so reading it twice would hang the test."""
    fifo = tmp_path / name
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return fifo, t


def test_a_pipe_is_read_once_and_classified_by_content(session, tmp_path, obj):
    """/dev/fd/N paths (``hotlink run <(...)``) and FIFOs are not regular files:
    read once, their object passes through and their IR or C is compiled
    from the bytes read."""
    lib = session.library("fifo")
    fifo, t = _fifo_with(tmp_path, "obj.fifo", obj.read_bytes())
    assert lib.add(str(fifo)).name == "obj.fifo"
    t.join(10)
    fifo, t = _fifo_with(tmp_path, "ir.fifo", IR.encode())
    lib.add_many([fifo])
    t.join(10)
    fifo, t = _fifo_with(tmp_path, "c.fifo", C.encode())
    lib.add(fifo, language="c", cache=False)
    t.join(10)
    assert lib.function("src_obj", c_int, [c_int])(1) == 0
    assert lib.function("src_ir", c_int, [c_int])(2) == 6
    assert lib.function("src_c", c_int, [c_int])(2) == 7


def test_source_wrapper_in_add_goes_through_the_same_classifier(session):
    lib = session.library("wrapped")
    lib.add(hotlink.Source(C, language="c", flags=["-DUNUSED"]))
    assert lib.function("src_c", c_int, [c_int])(0) == 5
    with pytest.raises(hotlink.MalformedObjectError):
        lib.add(hotlink.Source(b"junk"))
