"""Input bytes -> text: ``--encoding utf-8`` (default), ``cp932``, any codec, or ``auto``.

Japanese appliances and Windows exports often write Shift_JIS, which in
practice means Microsoft's CP932 (Shift_JIS plus the NEC and IBM extension
characters such as ``①`` and ``髙``); ``shift_jis``, ``sjis``, ``ms932`` and
``windows-31j`` are therefore read as CP932. ``auto`` reads UTF-8 and falls
back to CP932 for a record that is not valid UTF-8 (UTF-8 is tried first: a
CP932 byte string with Japanese text is almost never valid UTF-8, the other
way round it often would be). A UTF-8 byte order mark is dropped in every
mode. A record no encoding reads is refused with the reason; the pipeline
keeps its raw bytes (base64) in the dead letter.
"""

from __future__ import annotations

import codecs
from collections import Counter

from zonewatch.errors import ConfigError

AUTO = "auto"
UTF8 = "utf-8"
_CP932_NAMES = frozenset(
    {"cp932", "ms932", "windows-31j", "shift_jis", "shift-jis", "sjis", "s_jis"}
)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class DecodeFailed(ValueError):
    """The record's bytes are not text in the configured encoding."""


def resolve_encoding(name: str) -> str:
    """The codec name to use for ``name``; ConfigError when Python knows none."""
    lowered = name.strip().lower()
    if lowered == AUTO:
        return AUTO
    if lowered in _CP932_NAMES:
        return "cp932"
    try:
        canonical = codecs.lookup(lowered).name
    except LookupError as exc:
        raise ConfigError(
            f"unknown encoding {name!r}: use utf-8, cp932 (Shift_JIS), auto or a Python codec name"
        ) from exc
    if canonical.startswith("utf-16") or canonical.startswith("utf-32"):
        raise ConfigError(
            f"encoding {name!r} is not line-oriented: convert the input to UTF-8 first "
            "(iconv -f UTF-16 -t UTF-8)"
        )
    return "utf-8" if canonical == "utf-8" else canonical


class Decoder:
    """Decodes records of one stream and counts the encodings it used."""

    def __init__(self, encoding: str = UTF8):
        self.encoding = resolve_encoding(encoding)
        self.used: Counter[str] = Counter()

    def __call__(self, data: bytes) -> str:
        if self.encoding == AUTO:
            return self._auto(data)
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise DecodeFailed(
                f"not {self.encoding}: {exc.reason} at byte {exc.start}"
                + (" (try --encoding auto or cp932)" if self.encoding == UTF8 else "")
            ) from None
        self.used[self.encoding] += 1
        return text

    def _auto(self, data: bytes) -> str:
        try:
            text = data.decode(UTF8)
        except UnicodeDecodeError as exc:
            utf8_error = f"{exc.reason} at byte {exc.start}"
        else:
            self.used[UTF8] += 1
            return text
        if data.startswith(_UTF16_BOMS) or b"\x00" in data:
            raise DecodeFailed(
                "not UTF-8 and holds NUL bytes (UTF-16 or binary?): convert the input to UTF-8"
            )
        try:
            text = data.decode("cp932")
        except UnicodeDecodeError as exc:
            raise DecodeFailed(
                f"neither UTF-8 ({utf8_error}) nor CP932 ({exc.reason} at byte {exc.start})"
            ) from None
        self.used["cp932"] += 1
        return text
