"""Hostile comments, file names and text never break a line or add a command in vendor output."""

from __future__ import annotations

import pytest

from exporters import cisco_asa, cisco_ios, juniper_srx
from tests.helpers import export, write_policy
from tests.test_vendor_readers import read_asa, read_ios, read_srx

HOSTILE_TEXTS = [
    'quote " and \\" backslash \\ end',
    "line\nbreak\r\nand\x00nul\x1b[31m",
    "exit ; write erase ! # /* */ { } [ ]",
    "?help? and tab\there",
    "ünïcødé → 漢字",
    "x" * 250,
    "",
]

HOSTILE_COMMENTS = [
    'say \\"hi\\"; end',
    "exit; write erase! # /* }{ ]",
    "? help ?",
    "ünïcødé → 漢字",
    "y" * 240,
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
@pytest.mark.parametrize("split", [cisco_asa.asa_remarks, cisco_ios.ios_remarks])
def test_remark_filter_keeps_one_line(split, text):
    for remark in split(text):
        assert remark
        assert len(remark) <= 100
        assert all(32 <= ord(c) < 127 for c in remark), repr(remark)
        assert "?" not in remark


@pytest.mark.parametrize("text", [t for t in HOSTILE_TEXTS if t])
def test_remark_filter_loses_no_text(text):
    kept = "".join(cisco_asa.asa_remarks(text)).replace(" ", "")
    visible = "".join(c for c in text if 32 < ord(c) < 127 and c != "?")
    assert kept.replace(".", "") == visible.replace(".", "")


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_srx_quote_is_one_plain_string(text):
    quoted = juniper_srx.srx_quote(text)
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    assert '"' not in inner and "\\" not in inner and "?" not in inner
    assert all(32 <= ord(c) < 127 for c in inner), repr(inner)


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
@pytest.mark.parametrize(
    "clean, limit",
    [(cisco_asa.asa_name, 64), (cisco_ios.ios_name, 64), (juniper_srx.srx_name, 63)],
)
def test_name_filters_keep_one_word(clean, limit, text):
    name = clean(text)
    assert 0 < len(name) <= limit
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name), repr(name)
    assert name[0].isalnum()


def test_long_names_stay_distinct():
    first = juniper_srx.srx_name("a" * 70 + "1")
    second = juniper_srx.srx_name("a" * 70 + "2")
    assert first != second
    assert len(first) == len(second) == 63


@pytest.mark.parametrize("comment", HOSTILE_COMMENTS)
def test_hostile_comment_asa(tmp_path, comment):
    path = write_policy(tmp_path, f'allow tcp 22 comment "{comment}"\ndefault drop\n')
    config = read_asa(export(path, "cisco-asa")["cisco-asa.cfg"])
    assert len(config.acls["outside_in"]) == 2
    assert config.bindings == {"outside_in": "outside", "inside_in": "inside"}


@pytest.mark.parametrize("comment", HOSTILE_COMMENTS)
def test_hostile_comment_ios(tmp_path, comment):
    path = write_policy(tmp_path, f'allow tcp 22 comment "{comment}"\ndefault drop\n')
    config = read_ios(export(path, "cisco-ios")["cisco-ios.cfg"])
    assert config.entries["outside_in"] == ["permit tcp any any eq 22", "deny ip any any"]


@pytest.mark.parametrize("comment", HOSTILE_COMMENTS)
def test_hostile_comment_srx(tmp_path, comment):
    path = write_policy(tmp_path, f'allow tcp 22 comment "{comment}"\ndefault drop\n')
    config = read_srx(export(path, "juniper-srx")["juniper-srx.set"])
    assert len(config.policy_names[("untrust", "trust")]) == 2
    assert len(config.descriptions) == 1


@pytest.mark.parametrize("target", ["cisco-asa", "cisco-ios", "juniper-srx"])
def test_hostile_file_name(tmp_path, target):
    path = write_policy(tmp_path, "allow tcp 22\n", name="we?ird;name!#{x}.wall")
    text = next(iter(export(path, target).values()))
    readers = {"cisco-asa": read_asa, "cisco-ios": read_ios, "juniper-srx": read_srx}
    readers[target](text)
    assert all(all(32 <= ord(c) < 127 for c in line) for line in text.splitlines())
