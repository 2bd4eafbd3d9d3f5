"""Hostile comments, names and file names never break a line, add a command or add an XML element."""

from __future__ import annotations

import html
from xml.etree import ElementTree

import pytest

from compiler.api import load_policy
from exporters import fortigate, paloalto, pf
from tests.helpers import export, write_policy
from tests.test_vendor2_readers import (
    check_fortios_lines,
    pf_sections,
    read_fortios,
    read_pan_set,
    read_pan_xml,
    read_pf,
)
from tests.test_vendor_hostile import HOSTILE_COMMENTS, HOSTILE_TEXTS

XML_HOSTILE = [
    "</description></entry><entry name='x'><action>allow</action>",
    "]]> <!-- --> &amp; &#10; <![CDATA[ x ]]>",
    "a\x00b\x1fc\ud800",
]
PF_HOSTILE = ["ends in a backslash \\", "two \\\n lines", "pass in all # not a rule"]


@pytest.mark.parametrize("text", HOSTILE_TEXTS + XML_HOSTILE)
def test_pan_quote_is_one_plain_word(text):
    quoted = paloalto.pan_quote(text)
    assert quoted.startswith('"')
    assert quoted.endswith('"')
    inner = quoted[1:-1]
    assert '"' not in inner
    assert "\\" not in inner
    assert "?" not in inner
    assert all(32 <= ord(c) < 127 for c in inner), repr(inner)


@pytest.mark.parametrize("text", HOSTILE_TEXTS + XML_HOSTILE)
def test_xml_text_stays_character_data(text):
    element = ElementTree.fromstring(f"<d>{paloalto.xml_text(text)}</d>")
    assert len(element) == 0
    assert "\n" not in (element.text or "")


@pytest.mark.parametrize("text", HOSTILE_TEXTS + XML_HOSTILE)
def test_xml_comment_stays_a_comment(text):
    comment = paloalto.xml_comment(text)
    element = ElementTree.fromstring(f"<d><!-- {comment} --></d>")
    assert len(element) == 0
    assert "--" not in comment


@pytest.mark.parametrize("text", HOSTILE_TEXTS + XML_HOSTILE)
def test_forti_quote_is_one_plain_string(text):
    quoted = fortigate.forti_quote(text)
    inner = quoted[1:-1]
    assert quoted.startswith('"')
    assert quoted.endswith('"')
    assert inner
    assert '"' not in inner
    assert "\\" not in inner
    assert "?" not in inner
    assert all(32 <= ord(c) < 127 for c in inner), repr(inner)


@pytest.mark.parametrize("text", HOSTILE_TEXTS + PF_HOSTILE)
def test_pf_comment_cannot_continue(text):
    comment = pf.pf_comment(text)
    assert "\\" not in comment
    assert all(32 <= ord(c) < 127 for c in comment), repr(comment)


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
@pytest.mark.parametrize(
    "clean, limit",
    [
        (paloalto.pan_name, 63),
        (fortigate.forti_name, 79),
        (pf.table_name, 31),
    ],
)
def test_name_filters_keep_one_word(clean, limit, text):
    name = clean(text)
    assert 0 < len(name) <= limit
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name), repr(name)


def test_long_names_stay_distinct():
    assert pf.table_name("a" * 40 + "1") != pf.table_name("a" * 40 + "2")
    assert len(fortigate.forti_name("b" * 100)) == 79


@pytest.mark.parametrize("comment", HOSTILE_COMMENTS + ["</description><x/>", "]]>--"])
def test_hostile_comment_paloalto(tmp_path, comment):
    path = write_policy(tmp_path, f'allow tcp 22 comment "{comment}"\ndefault drop\n')
    files = export(path, "paloalto")
    from_set = read_pan_set(files["paloalto.set"])
    from_xml = read_pan_xml(files["paloalto.xml"])
    assert len(from_set.rules) == len(from_xml.rules) == 3
    (rule,) = load_policy(str(path)).chains["input"].rules
    assert from_xml.rules[0].description == html.unescape(paloalto.xml_text(rule.comment))
    assert from_set.rules[0].description == paloalto.pan_quote(rule.comment)[1:-1]


@pytest.mark.parametrize("comment", HOSTILE_COMMENTS)
def test_hostile_comment_fortigate(tmp_path, comment):
    path = write_policy(tmp_path, f'allow tcp 22 comment "{comment}"\ndefault drop\n')
    config = read_fortios(export(path, "fortigate")["fortigate.conf"], tmp_path)
    assert len(config.policies) == 3
    assert config.policies[0]["service"] == "tcp-22"


@pytest.mark.parametrize("comment", [*HOSTILE_COMMENTS, "ends in a backslash \\\\"])
def test_hostile_comment_pf(tmp_path, comment):
    path = write_policy(tmp_path, f'allow tcp 22 comment "{comment}"\ndefault drop\n')
    sections = pf_sections(read_pf(export(path, "pf")["pf.conf"]))
    assert len(sections.incoming) == 1
    assert sections.incoming[0].dports == [(22, 22)]


@pytest.mark.parametrize("target", ["paloalto", "fortigate", "pf"])
def test_hostile_file_name(tmp_path, target):
    path = write_policy(tmp_path, "allow tcp 22\n", name="we?ird;name!#{x}\\.wall")
    files = export(path, target)
    for name, text in files.items():
        assert all(all(32 <= ord(c) < 127 for c in line) for line in text.splitlines()), name
    if target == "paloalto":
        assert len(read_pan_xml(files["paloalto.xml"]).rules) == 3
        read_pan_set(files["paloalto.set"])
    elif target == "fortigate":
        check_fortios_lines(files["fortigate.conf"])
    else:
        pf_sections(read_pf(files["pf.conf"]))


def test_pf_hostile_group_names(tmp_path):
    text = "hosts web.1 = 192.0.2.1\nhosts x-y = 192.0.2.2\nallow from web.1, x-y\n"
    config = read_pf(export(write_policy(tmp_path, text), "pf")["pf.conf"])
    assert {"web_1", "x_y"} <= set(config.tables)
