"""The UTF-16 value modifiers (``wide``/``utf16le``, ``utf16be``, ``utf16``), as
the Sigma specification defines them, also when ``base64`` or ``base64offset``
follows them.

pySigma 1.5 keeps a modified value as text: ``wide`` turns ``cmd`` into the
text ``"c\\0m\\0d\\0"``, and the base64 modifiers then encode that text as
UTF-8. That is right for ASCII, but

- ``utf16`` writes its byte order mark as U+FEFF, which UTF-8 spells
  EF BB BF instead of FF FE: ``|utf16|base64`` never matched a real UTF-16
  blob with a BOM (such as a PowerShell ``-EncodedCommand`` written by a tool
  that keeps the BOM);
- non-ASCII text (``パスワード``) was refused: its UTF-16 bytes are not UTF-8.

Here each UTF-16 modifier also keeps the exact bytes of its encoding
(:class:`EncodedString`); pySigma's base64 modifiers read a value through
``bytes()`` and ``len()``, which give those bytes, so ``base64`` and
``base64offset`` encode what a Windows program writes. Without a base64
modifier after it, a UTF-16 modifier gives pySigma's text as before.

Under ``base64offset`` (always with ``contains``: the text is somewhere in
the blob) ``utf16`` leaves its BOM out: the BOM is at the start of a blob,
not in front of the words a rule looks for, and the text alone is found at
any offset of a blob with or without a BOM.
"""

from __future__ import annotations

import codecs
from typing import Any

from sigma import modifiers as sigma_modifiers
from sigma.exceptions import SigmaValueError
from sigma.types import SigmaString

__all__ = ["EncodedString", "install"]


class EncodedString(SigmaString):
    """A value in pySigma's text form that also carries its encoded bytes:
    ``bytes(value)`` and ``len(value)`` are those of the bytes, which is what
    the base64 modifiers read."""

    encoded: bytes

    def __bytes__(self) -> bytes:
        return self.encoded

    def __len__(self) -> int:
        return len(self.encoded)


def _followed_by_base64(modifier: sigma_modifiers.SigmaModifier[Any, Any]) -> type | None:
    """The base64 modifier class right after ``modifier`` in its detection
    item, if there is one."""
    chain = list(modifier.detection_item.modifiers)
    at = len(modifier.applied_modifiers)
    following = chain[at + 1] if at + 1 < len(chain) else None
    if isinstance(following, type) and issubclass(
        following,
        (sigma_modifiers.SigmaBase64Modifier, sigma_modifiers.SigmaBase64OffsetModifier),
    ):
        return following
    return None


class _UTF16Encoding(sigma_modifiers.SigmaValueModifier[SigmaString, SigmaString]):
    codec = "utf-16-le"
    bom = b""
    # pySigma's own modifier: the text form, and its errors without base64
    pysigma: type[sigma_modifiers.SigmaValueModifier[SigmaString, SigmaString]]

    def modify(self, val: SigmaString) -> SigmaString:
        base64 = _followed_by_base64(self)
        if base64 is None or val.contains_special():
            # the text form (base64 refuses wildcards anyway, with its own message)
            return self.pysigma(self.detection_item, self.applied_modifiers, self.source).modify(
                val
            )
        plain = "".join(part for part in val.s if isinstance(part, str))
        bom = b"" if issubclass(base64, sigma_modifiers.SigmaBase64OffsetModifier) else self.bom
        try:
            raw = bom + plain.encode(self.codec)
        except UnicodeEncodeError as exc:  # lone surrogates
            raise SigmaValueError(
                f"cannot encode {plain!r} as {self.codec}: {exc.reason}", source=self.source
            ) from exc
        out = EncodedString()
        out.s = [raw.decode("latin-1")]  # one character per byte; base64 reads .encoded
        out.encoded = raw
        return out


class UTF16LEModifier(_UTF16Encoding):
    """``wide`` / ``utf16le``: UTF-16LE, no BOM."""

    pysigma = sigma_modifiers.SigmaWideModifier


class UTF16BEModifier(_UTF16Encoding):
    """``utf16be``: UTF-16BE, no BOM."""

    codec = "utf-16-be"
    pysigma = sigma_modifiers.SigmaUTF16BEModifier


class UTF16Modifier(_UTF16Encoding):
    """``utf16``: the BOM FF FE, then UTF-16LE (what Windows writes)."""

    bom = codecs.BOM_UTF16_LE
    pysigma = sigma_modifiers.SigmaUTF16Modifier


_OURS: dict[str, type[sigma_modifiers.SigmaModifier[Any, Any]]] = {
    "wide": UTF16LEModifier,
    # The specification names utf16le; pySigma 1.5 knows it only as "wide".
    "utf16le": UTF16LEModifier,
    "utf16be": UTF16BEModifier,
    "utf16": UTF16Modifier,
}


def install() -> None:
    """Put these modifiers in pySigma's modifier table (rules parsed from
    now on use them). ``to_dict`` of a rule names them as pySigma does."""
    sigma_modifiers.modifier_mapping.update(_OURS)
    for name, cls in _OURS.items():
        if name != "utf16le":  # "wide" is the name pySigma writes back
            sigma_modifiers.reverse_modifier_mapping[cls.__name__] = name
