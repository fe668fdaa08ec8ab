"""Text archives: PCRE2, utf8proc, cmark, expat, libyaml, jansson, libxml2,
libidn2.

Regular expressions are checked against Python's ``re``, normalization
against ``unicodedata``, JSON against ``json``, XML events against
``xml.parsers.expat`` and ``xml.etree``, IDNA against Python's ``idna``
codec; every result must also match the shared build's.
"""
from __future__ import annotations

import ctypes
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
import xml.parsers.expat

import pytest

from realworld.harness import Api, case

c_size_t = ctypes.c_size_t
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint
buf = ctypes.create_string_buffer
libc = ctypes.CDLL(None)
libc.free.argtypes = [c_void_p]


def take(ptr: int | None) -> bytes:
    """A malloc'd C string handed to the caller: copy it, then free it."""
    assert ptr, "NULL result"
    s = ctypes.string_at(ptr)
    libc.free(ptr)
    return s


SUBJECT = (b"2024-01-15 ERROR disk /dev/sda1 95% full; 2024-02-03 WARN cpu 88%; "
           b"2024-03-30 ERROR net eth0 down; contact admin@example.org or ops@example.com")
PATTERNS = [rb"(\d{4})-(\d\d)-(\d\d)", rb"\b(ERROR|WARN)\b", rb"[\w.]+@([\w-]+)\.(org|com)", rb"(\d+)%",
            rb"(?i)error\s+(\w+)", rb"/dev/(\w+?)(\d)"]


@case("pcre2", "libpcre2-8.a", "libpcre2-8.so.0", package="libpcre2-dev")
def PCRE2(api: Api) -> list[object]:
    compile_ = api("pcre2_compile_8", c_void_p, c_char_p, c_size_t, c_uint, ctypes.POINTER(c_int),
                   ctypes.POINTER(c_size_t), c_void_p)
    jit = api("pcre2_jit_compile_8", c_int, c_void_p, c_uint)
    md_create = api("pcre2_match_data_create_from_pattern_8", c_void_p, c_void_p, c_void_p)
    match = api("pcre2_match_8", c_int, c_void_p, c_char_p, c_size_t, c_size_t, c_uint, c_void_p, c_void_p)
    ovector = api("pcre2_get_ovector_pointer_8", ctypes.POINTER(c_size_t), c_void_p)
    substitute = api("pcre2_substitute_8", c_int, c_void_p, c_char_p, c_size_t, c_size_t, c_uint, c_void_p,
                     c_void_p, c_char_p, c_size_t, c_char_p, ctypes.POINTER(c_size_t))
    error_message = api("pcre2_get_error_message_8", c_int, c_int, c_char_p, c_size_t)
    md_free = api("pcre2_match_data_free_8", None, c_void_p)
    code_free = api("pcre2_code_free_8", None, c_void_p)
    config = api("pcre2_config_8", c_int, c_uint, c_char_p)
    version = buf(64)
    config(11, version)                                   # PCRE2_CONFIG_VERSION
    out: list[object] = [version.value]
    err, off = c_int(), c_size_t()
    for use_jit in (False, True):
        for pat in PATTERNS:
            code = compile_(pat, len(pat), 0, ctypes.byref(err), ctypes.byref(off), None)
            assert code, pat
            if use_jit:
                assert jit(code, 1) == 0                      # PCRE2_JIT_COMPLETE: generates machine code
            md = md_create(code, None)
            spans, start = [], 0
            while start <= len(SUBJECT):
                rc = match(code, SUBJECT, len(SUBJECT), start, 0, md, None)
                if rc < 0:
                    assert rc == -1                       # PCRE2_ERROR_NOMATCH
                    break
                ov = ovector(md)
                spans.append(tuple(ov[i] for i in range(2 * rc)))
                start = ov[1] if ov[1] > ov[0] else ov[1] + 1
            want = [tuple(x for g in range(m.re.groups + 1) for x in m.span(g)) for m in re.finditer(pat, SUBJECT)]
            assert spans == want, (pat, spans, want)
            out.append(spans)
            md_free(md)
            code_free(code)
    code = compile_(rb"(\d{4})-(\d\d)-(\d\d)", c_size_t(-1).value, 0, ctypes.byref(err), ctypes.byref(off), None)
    res, n = buf(512), c_size_t(512)
    rc = substitute(code, SUBJECT, len(SUBJECT), 0, 0x100, None, None, b"$3/$2/$1", 8, res, ctypes.byref(n))
    assert rc == 3 and res.raw[:n.value] == re.sub(rb"(\d{4})-(\d\d)-(\d\d)", rb"\3/\2/\1", SUBJECT)
    code_free(code)
    assert not compile_(b"(unclosed", 9, 0, ctypes.byref(err), ctypes.byref(off), None)
    msg = buf(256)
    assert error_message(err.value, msg, 256) > 0 and b"missing closing parenthesis" in msg.value
    out.append((err.value, off.value, msg.value))
    return out


TEXTS = ["e\u0301cole", "\u212b ngstr\u00f6m", "\ufb01ne \u2460 \u00bd", "\uac00\u11a8 \u1100\u1161",
         "Stra\u00dfe \u0130stanbul", "\u1e9b\u0323 \u0073\u0323\u0307", "A\u030a\u0327"]


@case("utf8proc", "libutf8proc.a", "libutf8proc.so.2", package="libutf8proc-dev")
def UTF8PROC(api: Api) -> list[object]:
    forms = {f: api(f"utf8proc_{f}", c_void_p, c_char_p) for f in ("NFC", "NFD", "NFKC", "NFKD")}
    toupper = api("utf8proc_toupper", ctypes.c_int32, ctypes.c_int32)
    tolower = api("utf8proc_tolower", ctypes.c_int32, ctypes.c_int32)
    category = api("utf8proc_category", c_int, ctypes.c_int32)
    charwidth = api("utf8proc_charwidth", c_int, ctypes.c_int32)
    version = api("utf8proc_version", c_char_p)
    out: list[object] = [version()]
    for t in TEXTS:
        for f, fn in forms.items():
            got = take(fn(t.encode())).decode()
            assert got == unicodedata.normalize(f, t), (f, t)
            out.append(got)
    cats = ["Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
            "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"]
    for ch in "aZ\u00e9\u0130\u03a3\u01c5 5\u2460\u00bd-([\u20ac+\u4e2d\u0301":
        cp = ord(ch)
        assert cats[category(cp)] == unicodedata.category(ch), ch
        if len(ch.upper()) == 1:
            assert toupper(cp) == ord(ch.upper()), ch
        if len(ch.lower()) == 1:
            assert tolower(cp) == ord(ch.lower()), ch
        out.append((category(cp), toupper(cp), tolower(cp), charwidth(cp)))
    assert charwidth(ord("\u4e2d")) == 2 and charwidth(ord("\u0301")) == 0
    return out


MARKDOWN = b"""# Title

Some *emphasis*, **strong**, `code` and a [link](http://example.org "t").

- one
- two
  1. nested
  2. list

> quote with <b>html</b> & entities &amp; &copy;

```python
print("fenced")
```

| not | a table in core CommonMark |
"""


@case("cmark", "libcmark.a", "libcmark.so.0.30.2", package="libcmark-dev")
def CMARK(api: Api) -> list[object]:
    to_html = api("cmark_markdown_to_html", c_void_p, c_char_p, c_size_t, c_int)
    version = api("cmark_version_string", c_char_p)
    parse = api("cmark_parse_document", c_void_p, c_char_p, c_size_t, c_int)
    render_xml = api("cmark_render_xml", c_void_p, c_void_p, c_int)
    render_cm = api("cmark_render_commonmark", c_void_p, c_void_p, c_int, c_int)
    free_node = api("cmark_node_free", None, c_void_p)
    html = take(to_html(MARKDOWN, len(MARKDOWN), 0))
    assert b"<h1>Title</h1>" in html and b"<em>emphasis</em>" in html and b"<strong>strong</strong>" in html
    assert b'<a href="http://example.org" title="t">link</a>' in html
    assert b'<code class="language-python">print(&quot;fenced&quot;)' in html
    unsafe = take(to_html(MARKDOWN, len(MARKDOWN), 1 << 17))    # CMARK_OPT_UNSAFE: raw HTML kept
    assert b"<b>html</b>" in unsafe and b"<b>html</b>" not in html and b"raw HTML omitted" in html
    doc = parse(MARKDOWN, len(MARKDOWN), 0)
    x = take(render_xml(doc, 0))
    ET.fromstring(x[x.index(b"<document"):])          # well-formed XML
    cm = take(render_cm(doc, 0, 0))
    free_node(doc)
    assert take(to_html(cm, len(cm), 0)) == html      # CommonMark round trip renders the same
    return [version(), html, unsafe, x, cm]


DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- inventory -->
<inventory xmlns:x="urn:x" version="2">
  <item id="1" x:kind="tool">hammer &amp; nails</item>
  <item id="2"><![CDATA[<saw>]]></item>
  <group name="g"><item id="3">caf\xc3\xa9</item><empty/></group>
</inventory>
"""


@case("expat", "libexpat.a", "libexpat.so.1", package="libexpat1-dev")
def EXPAT(api: Api) -> list[object]:
    create = api("XML_ParserCreate", c_void_p, c_char_p)
    free = api("XML_ParserFree", None, c_void_p)
    set_elements = api("XML_SetElementHandler", None, c_void_p, c_void_p, c_void_p)
    set_chars = api("XML_SetCharacterDataHandler", None, c_void_p, c_void_p)
    parse = api("XML_Parse", c_int, c_void_p, c_char_p, c_int, c_int)
    error_code = api("XML_GetErrorCode", c_int, c_void_p)
    error_string = api("XML_ErrorString", c_char_p, c_int)
    line = api("XML_GetCurrentLineNumber", ctypes.c_ulong, c_void_p)
    version = api("XML_ExpatVersion", c_char_p)

    def run(doc: bytes, chunks: int) -> tuple[list[tuple[str, ...]], int, int]:
        events: list[tuple[str, ...]] = []

        @api.callback(None, c_void_p, c_char_p, ctypes.POINTER(c_char_p))
        def start(_ud, name, atts):
            attrs, i = [], 0
            while atts[i]:
                attrs += [atts[i].decode(), atts[i + 1].decode()]
                i += 2
            events.append(("start", name.decode(), *attrs))

        @api.callback(None, c_void_p, c_char_p)
        def end(_ud, name):
            events.append(("end", name.decode()))

        @api.callback(None, c_void_p, ctypes.POINTER(ctypes.c_char), c_int)
        def chars(_ud, s, n):
            text = ctypes.string_at(s, n).decode()
            if events and events[-1][0] == "chars":
                events[-1] = ("chars", events[-1][1] + text)
            else:
                events.append(("chars", text))

        p = create(None)
        set_elements(p, start, end)
        set_chars(p, chars)
        step = max(1, len(doc) // chunks)
        ok = 1
        for i in range(0, len(doc), step):
            ok = parse(p, doc[i:i + step], len(doc[i:i + step]), 0)
            if not ok:
                break
        if ok:
            ok = parse(p, b"", 0, 1)
        code, ln = error_code(p), line(p)
        free(p)
        return events, code, ln

    def python_events(doc: bytes) -> list[tuple[str, ...]]:
        events: list[tuple[str, ...]] = []
        p = xml.parsers.expat.ParserCreate()
        p.ordered_attributes = True
        p.StartElementHandler = lambda name, attrs: events.append(("start", name, *attrs))
        p.EndElementHandler = lambda name: events.append(("end", name))

        def chars(text: str) -> None:
            if events and events[-1][0] == "chars":
                events[-1] = ("chars", events[-1][1] + text)
            else:
                events.append(("chars", text))
        p.CharacterDataHandler = chars
        p.Parse(doc, True)
        return events

    events, code, _ = run(DOC, 1)
    assert code == 0 and events == python_events(DOC)
    assert run(DOC, 17)[0] == events                   # fed in pieces: same events
    bad = DOC.replace(b"</group>", b"</grp>")
    _, code, ln = run(bad, 3)
    assert error_string(code) == b"mismatched tag" and ln == 6
    return [version(), events, code, ln]


YAML = b"""# config
name: hotlink
tags: [linker, jit, "x86-64"]
nested:
  - {a: 1, b: two}
  - &anchor plain
  - *anchor
text: |
  line one
  line two
---
second: document
"""


@case("yaml", "libyaml.a", "libyaml-0.so.2", package="libyaml-dev")
def YAML_(api: Api) -> list[object]:
    init = api("yaml_parser_initialize", c_int, c_void_p)
    set_input = api("yaml_parser_set_input_string", None, c_void_p, c_char_p, c_size_t)
    parse = api("yaml_parser_parse", c_int, c_void_p, c_void_p)
    event_delete = api("yaml_event_delete", None, c_void_p)
    parser_delete = api("yaml_parser_delete", None, c_void_p)
    version = api("yaml_get_version_string", c_char_p)
    parser, event = buf(4096), buf(256)
    assert init(parser) == 1
    set_input(parser, YAML, len(YAML))
    events: list[object] = []
    while True:
        assert parse(parser, event) == 1
        kind = ctypes.c_int.from_buffer(event).value
        if kind == 6:                                   # YAML_SCALAR_EVENT: data.scalar.value, .length
            value, length = ctypes.cast(event, ctypes.POINTER(ctypes.c_size_t))[3:5]
            events.append(ctypes.string_at(value, length).decode())
        elif kind == 5:                                 # an alias
            events.append("*alias")
        else:
            events.append(kind)
        event_delete(event)
        if kind == 2:                                   # YAML_STREAM_END_EVENT
            break
    parser_delete(parser)
    assert events == [1, 3, 9, "name", "hotlink", "tags", 7, "linker", "jit", "x86-64", 8, "nested", 7,
                      9, "a", "1", "b", "two", 10, "plain", "*alias", 8, "text", "line one\nline two\n", 10, 4,
                      3, 9, "second", "document", 10, 4, 2], events
    # a syntax error is reported with its position (problem_mark is in the parser)
    assert init(parser) == 1
    set_input(parser, b"a: [1, 2\nb: 3", 13)
    while parse(parser, event) == 1 and ctypes.c_int.from_buffer(event).value != 2:
        event_delete(event)
    assert ctypes.c_int.from_buffer(parser).value != 0          # parser->error
    parser_delete(parser)
    return [version(), events]


JSONS = ['{"name": "hotlink", "n": 42, "neg": -7, "ok": true, "none": null, "list": [1, [2, [3, []]], {}],'
         ' "s": "tab\\tnew\\nline \\"q\\" \\u00e9\\u4e2d \\ud83d\\ude00", "big": 9007199254740993}',
         '[]', '{"b": {"z": 1, "a": [true, false]}, "a": ""}', '"just a string"']


@case("jansson", "libjansson.a", "libjansson.so.4", package="libjansson-dev")
def JANSSON(api: Api) -> list[object]:
    loads = api("json_loads", c_void_p, c_char_p, c_size_t, c_char_p)
    dumps = api("json_dumps", c_void_p, c_void_p, c_size_t)
    delete = api("json_delete", None, c_void_p)
    obj_get = api("json_object_get", c_void_p, c_void_p, c_char_p)
    int_value = api("json_integer_value", ctypes.c_longlong, c_void_p)
    version = api("jansson_version_str", c_char_p)
    SORT, COMPACT, ASCII, DECODE_ANY, ENCODE_ANY = 0x80, 0x20, 0x40, 0x4, 0x200
    out: list[object] = [version()]
    for text in JSONS:
        j = loads(text.encode(), DECODE_ANY, None)
        assert j, text
        s = take(dumps(j, SORT | COMPACT | ASCII | ENCODE_ANY)).decode()
        lower_escapes = re.sub(r"\\u[0-9A-F]{4}", lambda m: m.group().lower(), s)    # jansson writes \u00E9
        assert lower_escapes == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=True), s
        pretty = take(dumps(j, SORT | 4 | ENCODE_ANY)).decode()           # indent 4, UTF-8
        assert json.loads(pretty) == json.loads(text)
        if text.startswith('{"name"'):
            assert int_value(obj_get(j, b"n")) == 42 and int_value(obj_get(j, b"big")) == 9007199254740993
        delete(j)
        out += [s, pretty]
    err = buf(512)                                       # json_error_t: line, column, position, source, text
    assert not loads(b'{"a": [1, 2,]}', 0, err)
    line, column = ctypes.c_int.from_buffer(err).value, ctypes.c_int.from_buffer(err, 4).value
    text = err.raw[12 + 80:].split(b"\0")[0]
    assert (line, column) == (1, 13) and text, (line, column, text)
    out.append((line, column, text))
    return out


XMLDOC = b"""<?xml version="1.0"?>
<catalog xmlns="urn:books"><book id="b1" lang="en"><title>Linkers &amp; Loaders</title><price>39.95</price></book>
<book id="b2" lang="de"><title>Stra\xc3\x9fe</title><price>12.50</price></book><!-- c --><book id="b3"/></catalog>
"""


@case("xml2", ("libxml2.a", "liblzma.a", "libz.a"), "libxml2.so.2", shared=["libicuuc.so.72"],
      package="libxml2-dev liblzma-dev zlib1g-dev")
def XML2(api: Api) -> list[object]:
    read_memory = api("xmlReadMemory", c_void_p, c_char_p, c_int, c_char_p, c_char_p, c_int)
    free_doc = api("xmlFreeDoc", None, c_void_p)
    dump = api("xmlDocDumpFormatMemoryEnc", None, c_void_p, ctypes.POINTER(c_void_p), ctypes.POINTER(c_int),
               c_char_p, c_int)
    xpath_ctx = api("xmlXPathNewContext", c_void_p, c_void_p)
    register_ns = api("xmlXPathRegisterNs", c_int, c_void_p, c_char_p, c_char_p)
    xpath_eval = api("xmlXPathEvalExpression", c_void_p, c_char_p, c_void_p)
    to_number = api("xmlXPathCastToNumber", ctypes.c_double, c_void_p)
    to_string = api("xmlXPathCastToString", c_void_p, c_void_p)
    free_obj = api("xmlXPathFreeObject", None, c_void_p)
    free_ctx = api("xmlXPathFreeContext", None, c_void_p)
    check_version = api("xmlCheckVersion", None, c_int)
    utf8_strlen = api("xmlUTF8Strlen", c_int, c_char_p)
    cleanup = api("xmlCleanupParser", None)
    check_version(20900)
    doc = read_memory(XMLDOC, len(XMLDOC), b"mem.xml", None, 0)
    assert doc
    ctx = xpath_ctx(doc)
    assert register_ns(ctx, b"b", b"urn:books") == 0
    results: list[object] = []
    root = ET.fromstring(XMLDOC)
    ns = {"b": "urn:books"}
    for expr, want in ((b"count(//b:book)", float(len(root.findall("b:book", ns)))),
                       (b"sum(//b:price)", sum(float(p.text or "") for p in root.iterfind(".//b:price", ns))),
                       (b"string(//b:book[@lang='de']/b:title)", root.find("b:book[@lang='de']/b:title", ns).text)):
        obj = xpath_eval(expr, ctx)
        assert obj, expr
        got: object = to_number(obj) if isinstance(want, float) else take(to_string(obj)).decode()
        assert got == want, (expr, got, want)
        results.append(got)
        free_obj(obj)
    mem, size = c_void_p(), c_int()
    dump(doc, ctypes.byref(mem), ctypes.byref(size), b"UTF-8", 1)
    text = ctypes.string_at(mem.value, size.value)
    libc.free(mem.value)
    assert ET.tostring(ET.fromstring(text)) == ET.tostring(root)
    assert utf8_strlen("Stra\u00dfe".encode()) == 6
    free_ctx(ctx)
    free_doc(doc)
    assert not read_memory(b"<a><b></a>", 10, None, None, 0x20 | 0x40)   # NOERROR | NOWARNING
    cleanup()
    return [results, text]


DOMAINS = ["b\u00fccher.example", "m\u00fcnchen.de", "xn--mnchen-3ya.de", "example.com", "\u4f8b\u3048.jp",
           "\u0645\u062b\u0627\u0644.test"]


@case("idn2", "libidn2.a", "libidn2.so.0", shared=["libunistring.so.2"], package="libidn2-dev")
def IDN2(api: Api) -> list[object]:
    to_ascii = api("idn2_to_ascii_8z", c_int, c_char_p, ctypes.POINTER(c_void_p), c_int)
    to_unicode = api("idn2_to_unicode_8z8z", c_int, c_char_p, ctypes.POINTER(c_void_p), c_int)
    strerror = api("idn2_strerror", c_char_p, c_int)
    check_version = api("idn2_check_version", c_char_p, c_char_p)
    out: list[object] = [check_version(None)]
    for d in DOMAINS:
        p = c_void_p()
        assert to_ascii(d.encode(), ctypes.byref(p), 0) == 0, d
        a = take(p.value)
        assert a == d.encode("idna"), (d, a)            # these names read the same under IDNA 2003 and 2008
        assert to_unicode(a, ctypes.byref(p), 0) == 0
        u = take(p.value)
        assert u.decode() == a.decode("idna")
        out += [a, u]
    p = c_void_p()
    rc = to_ascii("a\u2488b.example".encode(), ctypes.byref(p), 0)   # DISALLOWED in IDNA 2008
    assert rc < 0
    out.append((rc, strerror(rc)))
    return out


@pytest.mark.parametrize("c", [PCRE2, UTF8PROC, CMARK, EXPAT, YAML_, JANSSON, XML2, IDN2], ids=lambda c: c.name)
def test_text_archive(run_case, c):
    run_case(c)
