"""Temp names are ignored and undecodable or control-character names are refused."""

from __future__ import annotations

import os

import pytest

from handlers.names import display_name, is_temp_name, name_problem


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".hidden", True),
        (".report.pdf.swx", True),
        ("~lock.docx", True),
        ("big.iso.part", True),
        ("x.TMP", True),
        ("download.pdf.crdownload", True),
        ("notes.md.swp", True),
        ("report.pdf", False),
        ("report.pdf.reason.json", False),
        ("report.pdf.upload.json", False),
        ("a~b.txt", False),
        ("partial", False),
        ("tmp", False),
    ],
)
def test_is_temp_name(name: str, expected: bool) -> None:
    """Only the documented temp patterns are ignored; our sidecars are not temp names."""
    assert is_temp_name(name) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", None),
        ("отчёт 2024 (final).pdf", None),
        ("报告.docx", None),
        ("emoji 📄.txt", None),
        ("", "name is empty"),
        (b"bad\xffname.txt", "name is not valid UTF-8 (byte 0xff at offset 3)"),
        (os.fsdecode(b"bad\xffname.txt"), "name is not valid UTF-8 (byte 0xff at character 3)"),
        (b"ok.txt", None),
        ("tab\there.txt", "name holds control character U+0009 at character 3"),
        ("new\nline.txt", "name holds control character U+000A at character 3"),
        ("del\x7f.txt", "name holds control character U+007F at character 3"),
        ("c1\x85.txt", "name holds control character U+0085 at character 2"),
        ("evil\u202etxt.exe", "name holds bidi/line-separator U+202E at character 4"),
        ("sep\u2028x.txt", "name holds bidi/line-separator U+2028 at character 3"),
        ("\ud800.txt", "name holds a lone surrogate U+D800 at character 0"),
    ],
)
def test_name_problem(raw: bytes | str, expected: str | None) -> None:
    """Each invalid kind of name gets its own exact detail; good names get None."""
    assert name_problem(raw) == expected


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain.txt", "plain.txt"),
        (os.fsdecode(b"bad\xffname"), "bad\\xffname"),
        (b"bad\xfe", "bad\\xfe"),
        ("a\nb", "a\\x0ab"),
        ("x\u202ey", "x\\u202ey"),
    ],
)
def test_display_name(name: str | bytes, shown: str) -> None:
    """Odd characters are escaped so a name cannot break a log line."""
    assert display_name(name) == shown
