"""Unit tests of ``hotlink.archive``: archives written byte by byte here (no
``ar``, no compiler), in every layout hotlink reads:

* GNU: a ``/`` (32-bit) or ``/SYM64/`` (64-bit) symbol table, big-endian;
  names of 16 bytes or more in ``//``, referenced as ``/offset``;
* BSD: ``__.SYMDEF``, ``__.SYMDEF SORTED`` and ``__.SYMDEF_64`` tables
  (little-endian ranlib pairs and a string table); long names as ``#1/len``
  with the name after the header;
* no symbol table at all: the index is built from the members' own ELF
  symbol tables.

Members are tiny relocatable objects (also written here) defining the
hypothesis-chosen symbols.  ``Archive(...).index`` must map each symbol to
the header offset of the first member that defines it, ``load_member`` must
give back that member's object, and thin or inconsistent archives must be
refused with ``MalformedObjectError``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotlink.archive import Archive
from hotlink.elf import ObjectFile
from hotlink.errors import MalformedObjectError

# --- a tiny ELF writer ------------------------------------------------------


def elf_object(symbols: list[str], trailing: bytes = b"") -> bytes:
    """An x86-64 ET_REL object: .text (16 bytes per symbol), .symtab with one
    global function per name, .strtab, .shstrtab; ``trailing`` after it all."""
    text = b"\xc3" * (16 * max(len(symbols), 1))
    strtab = bytearray(b"\0")
    syms = [struct.pack("<IBBHQQ", 0, 0, 0, 0, 0, 0)]                   # the null symbol (local)
    for i, name in enumerate(symbols):
        syms.append(struct.pack("<IBBHQQ", len(strtab), (1 << 4) | 2, 0, 1, 16 * i, 16))  # GLOBAL FUNC in .text
        strtab += name.encode() + b"\0"
    symtab = b"".join(syms)
    shstrtab = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    body = bytearray(64)
    offsets = []
    for blob in (text, symtab, bytes(strtab), shstrtab):
        body += b"\0" * (-len(body) % 8)
        offsets.append(len(body))
        body += blob
    body += b"\0" * (-len(body) % 8)
    shoff = len(body)
    shdrs = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (1, 1, 0x6, 0, offsets[0], len(text), 0, 0, 16, 0),               # .text PROGBITS AX
        (7, 2, 0, 0, offsets[1], len(symtab), 3, 1, 8, 24),               # .symtab, link .strtab, 1 local
        (15, 3, 0, 0, offsets[2], len(strtab), 0, 0, 1, 0),               # .strtab
        (23, 3, 0, 0, offsets[3], len(shstrtab), 0, 0, 1, 0),             # .shstrtab
    ]
    for h in shdrs:
        body += struct.pack("<IIQQQQIIQQ", *h)
    body[:64] = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 1, 62, 1, 0, 0,
                            shoff, 0, 64, 0, 0, 64, len(shdrs), 4)
    return bytes(body) + trailing


# --- a tiny ar writer ---------------------------------------------------------

GNU32, GNU64, BSD, BSD_SORTED, BSD64, NONE_GNU, NONE_BSD = (
    "gnu /", "gnu /SYM64/", "bsd __.SYMDEF", "bsd __.SYMDEF SORTED", "bsd __.SYMDEF_64", "gnu none", "bsd none")
FLAVORS = (GNU32, GNU64, BSD, BSD_SORTED, BSD64, NONE_GNU, NONE_BSD)


@dataclass
class Built:
    data: bytes
    offsets: list[int]          # header offset of each member, in order
    blobs: list[bytes]          # each member's contents


def header(name: str, size: int) -> bytes:
    h = f"{name:<16}{0:<12}{0:<6}{0:<6}{644:<8}{size:<10}`\n".encode()
    assert len(h) == 60, h
    return h


def pad(blob: bytes) -> bytes:
    return blob + b"\n" * (len(blob) & 1)


def write_archive(flavor: str, members: list[tuple[str, bytes, list[str]]]) -> Built:
    """The archive of ``members`` (name, contents, symbols for the table) in ``flavor``."""
    gnu = flavor.startswith("gnu")
    table_name = flavor.split(" ", 1)[1]
    # member headers (and BSD name prefixes), GNU long names
    longnames = bytearray()
    entries: list[tuple[bytes, bytes]] = []          # (header name part, bytes before the contents)
    for name, _blob, _syms in members:
        if gnu:
            if len(name) < 16:
                entries.append((name.encode() + b"/", b""))
            else:
                entries.append((b"/%d" % len(longnames), b""))
                longnames += name.encode() + b"/\n"
        else:
            if len(name) <= 16:
                entries.append((name.encode(), b""))
            else:
                raw = name.encode() + b"\0" * (-len(name) % 4)
                entries.append((b"#1/%d" % len(raw), raw))

    def symbol_table(offsets: list[int]) -> bytes:
        pairs = [(sym, off) for (_n, _b, syms), off in zip(members, offsets) for sym in syms]
        if gnu:
            width, word = (8, "Q") if table_name == "/SYM64/" else (4, "I")
            return (struct.pack(f">{len(pairs) + 1}{word}", len(pairs), *(off for _s, off in pairs))
                    + b"".join(s.encode() + b"\0" for s, _o in pairs))
        word = "Q" if "_64" in table_name else "I"
        strtab = bytearray()
        ranlib = []
        for sym, off in pairs:
            ranlib += [len(strtab), off]
            strtab += sym.encode() + b"\0"
        width = struct.calcsize(word)
        return (struct.pack(f"<{len(ranlib) + 1}{word}", len(ranlib) * width, *ranlib)
                + struct.pack(f"<{word}", len(strtab)) + strtab)

    def table_member(offsets: list[int]) -> bytes:
        if table_name == "none":
            return b""
        body = symbol_table(offsets)
        if gnu or len(table_name) <= 16:
            return header(table_name, len(body)) + pad(body)
        raw = table_name.encode() + b"\0" * (-len(table_name) % 4)
        return header(f"#1/{len(raw)}", len(raw) + len(body)) + pad(raw + body)

    def layout(offsets: list[int]) -> tuple[bytes, list[int]]:
        out = bytearray(b"!<arch>\n")
        out += table_member(offsets)
        if longnames:
            out += header("//", len(longnames)) + pad(bytes(longnames))
        where = []
        for (hname, prefix), (_n, blob, _s) in zip(entries, members):
            where.append(len(out))
            out += header(hname.decode(), len(prefix) + len(blob)) + pad(prefix + blob)
        return bytes(out), where

    # the table's size does not depend on the offsets in it: lay out twice
    _, offsets = layout([0] * len(members))
    data, again = layout(offsets)
    assert again == offsets
    return Built(data, offsets, [blob for _n, blob, _s in members])


# --- strategies -------------------------------------------------------------

member_names = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1,
                       max_size=40).filter(lambda n: not n.startswith("__.SYMDEF"))
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
symbol_names = st.builds(str.__add__, st.sampled_from(_LETTERS), st.text(_LETTERS + "0123456789.$", max_size=30))


@st.composite
def archives(draw: st.DrawFn, flavors: tuple[str, ...] = FLAVORS) -> tuple[str, list[tuple[str, bytes, list[str]]]]:
    flavor = draw(st.sampled_from(flavors))
    n = draw(st.integers(1, 7))
    members = []
    for _ in range(n):
        name = draw(member_names)
        syms = draw(st.lists(symbol_names, max_size=6, unique=True))
        trailing = b"\0" * draw(st.integers(0, 3))    # odd sizes: the padding byte between members
        members.append((name, elf_object(syms, trailing), syms))
    if draw(st.booleans()):   # a member that is no object (e.g. a text file): indexes nothing
        at = draw(st.integers(0, n))
        members.insert(at, (draw(member_names), b"not an object\n" * draw(st.integers(0, 3)), []))
    return flavor, members


def expected_index(built: Built, members: list[tuple[str, bytes, list[str]]]) -> dict[str, int]:
    index: dict[str, int] = {}
    for (_n, _b, syms), off in zip(members, built.offsets):
        for s in syms:
            index.setdefault(s, off)          # the first member (in archive order) that defines it
    return index


# --- properties -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(archives())
def test_index_maps_every_symbol_to_its_member(case: tuple[str, list[tuple[str, bytes, list[str]]]]) -> None:
    flavor, members = case
    built = write_archive(flavor, members)
    a = Archive(built.data, "lib.a")
    assert a.index == expected_index(built, members), flavor
    assert sorted(a.members) == built.offsets
    for (name, blob, syms), off in zip(members, built.offsets):
        m = a.members[off]
        assert (m.name, m.offset, m.size) == (name, off, len(blob))
        assert built.data[m.data_start:m.data_start + m.size] == blob
        if blob.startswith(b"\x7fELF"):
            obj = a.load_member(off)
            assert isinstance(obj, ObjectFile)
            assert obj.name == f"lib.a({name})"
            assert obj.defined_globals() == syms
        first = [s for s in syms if a.index[s] == off]
        assert sorted(a.member_symbols(off)) == sorted(first)


@settings(max_examples=100, deadline=None)
@given(archives(flavors=(GNU32, GNU64, BSD, BSD_SORTED, BSD64)))
def test_table_and_members_agree(case: tuple[str, list[tuple[str, bytes, list[str]]]]) -> None:
    """Whatever the layout, a table-less archive of the same members indexes the same."""
    flavor, members = case
    with_table = Archive(write_archive(flavor, members).data)
    without = Archive(write_archive(NONE_GNU if flavor.startswith("gnu") else NONE_BSD, members).data)

    # the member offsets differ by the table member's size: compare by position
    def by_position(a: Archive) -> dict[str, int]:
        order = sorted(a.members)
        return {sym: order.index(off) for sym, off in a.index.items()}
    assert by_position(with_table) == by_position(without)


# --- layouts, spelled out -------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_each_layout(flavor: str) -> None:
    members = [("short.o", elf_object(["alpha", "beta"]), ["alpha", "beta"]),
               ("a_rather_long_member_name.o", elf_object(["gamma"], b"\0"), ["gamma"]),
               ("dup.o", elf_object(["alpha", "delta"]), ["alpha", "delta"])]
    built = write_archive(flavor, members)
    a = Archive(built.data, "x.a")
    o = built.offsets
    assert a.index == {"alpha": o[0], "beta": o[0], "gamma": o[1], "delta": o[2]}
    assert [m.name for m in a.members.values()] == ["short.o", "a_rather_long_member_name.o", "dup.o"]
    assert a.load_member(o[1]).defined_globals() == ["gamma"]


def test_sym64_offsets_are_eight_bytes() -> None:
    members = [("m.o", elf_object(["f"]), ["f"])]
    data = write_archive(GNU64, members).data
    at = data.index(b"/SYM64/")
    body = data[at + 60:]
    assert struct.unpack_from(">QQ", body) == (1, write_archive(GNU64, members).offsets[0])
    assert Archive(data).index == {"f": write_archive(GNU64, members).offsets[0]}


# --- refused ----------------------------------------------------------------


def test_thin_archive_refused() -> None:
    data = b"!<thin>\n" + header("/", 0) + header("member.o/", 1234)
    with pytest.raises(MalformedObjectError, match=r"thin\.a: thin archives are not supported"):
        Archive(data, "thin.a")


def test_not_an_archive() -> None:
    with pytest.raises(MalformedObjectError, match="not an ar archive"):
        Archive(b"\x7fELF" + bytes(60), "x.a")


@pytest.mark.parametrize("flavor", (GNU32, GNU64, BSD, BSD64))
def test_table_entry_pointing_at_no_member(flavor: str) -> None:
    members = [("m.o", elf_object(["f"]), ["f"])]
    built = write_archive(flavor, members)
    off = built.offsets[0]
    wrong = {GNU32: (struct.pack(">I", off), struct.pack(">I", off + 2)),
             GNU64: (struct.pack(">Q", off), struct.pack(">Q", off + 2)),
             BSD: (struct.pack("<I", off), struct.pack("<I", off + 2)),
             BSD64: (struct.pack("<Q", off), struct.pack("<Q", off + 2))}[flavor]
    data = built.data.replace(*wrong, 1)
    with pytest.raises(MalformedObjectError, match=f"points at {off + 2:#x}, which is no member"):
        Archive(data, "x.a")


@pytest.mark.parametrize("flavor", (GNU32, GNU64))
def test_gnu_count_larger_than_the_table(flavor: str) -> None:
    built = write_archive(flavor, [("m.o", elf_object(["f"]), ["f"])])
    width, word = (8, ">Q") if flavor == GNU64 else (4, ">I")
    at = 8 + 60
    for count in (2, 1 << (8 * width - 1)):
        data = built.data[:at] + struct.pack(word, count) + built.data[at + width:]
        with pytest.raises(MalformedObjectError, match=f"lists {count} symbols but"):
            Archive(data, "x.a")


def test_bsd_name_offset_outside_the_string_table() -> None:
    built = write_archive(BSD, [("m.o", elf_object(["f"]), ["f"])])
    at = 8 + 60 + 4           # the first ranlib entry's name offset
    data = built.data[:at] + struct.pack("<I", 99) + built.data[at + 4:]
    with pytest.raises(MalformedObjectError, match="name offset 0x63 outside its string table"):
        Archive(data, "x.a")


def test_bsd_ranlib_array_past_the_table() -> None:
    built = write_archive(BSD, [("m.o", elf_object(["f"]), ["f"])])
    at = 8 + 60
    data = built.data[:at] + struct.pack("<I", 800) + built.data[at + 4:]
    with pytest.raises(MalformedObjectError, match="ranlib array of 800 bytes"):
        Archive(data, "x.a")


def test_long_name_outside_the_long_name_table() -> None:
    built = write_archive(NONE_GNU, [("a_rather_long_member_name.o", elf_object(["f"]), ["f"])])
    data = built.data.replace(b"/0              ", b"/999            ", 1)
    with pytest.raises(MalformedObjectError, match="long member name offset 999"):
        Archive(data, "x.a")


def test_member_running_past_the_end() -> None:
    built = write_archive(NONE_GNU, [("m.o", elf_object(["f"]), ["f"])])
    with pytest.raises(MalformedObjectError, match="runs past the end of the archive"):
        Archive(built.data[:-10], "x.a")


@pytest.mark.parametrize("size", (b"-5", b"1e3", b"0x10", b"12 3"))
def test_bad_size_field(size: bytes) -> None:
    data = b"!<arch>\n" + header("m.o/", 0)
    data = data[:8 + 48] + size.ljust(10) + data[8 + 58:]
    with pytest.raises(MalformedObjectError, match="size field"):
        Archive(data, "x.a")
