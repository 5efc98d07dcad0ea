"""Chinese text post-processing for recognizer output (pure: no I/O, no clock).

* `join_tokens`: Vosk and PocketSphinx put spaces between words/characters ("我 要 投诉"); Chinese is
  written without them. Spaces survive only between two Latin/digit words ("ETC 卡" -> "ETC卡",
  "wifi password" stays).
* `spoken_numbers`: digits read one by one (phone numbers, room numbers, years) become digits,
  `幺` counts as 1; counted numbers become digits only before a unit that makes them an address,
  date or time (十七号 -> 17号, 三点 -> 3点, 十四度 -> 14度) so that 一个, 一下, 十分, 一二线 stay
  words. Written here (about 60 lines) instead of pulling `cn2an`, which converts 一个 -> 1个.
* `extract`: phone number, address fragment from a gazetteer given as data, time expression.

Every result keeps the raw text beside the normalized one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

DIGITS = {"零": 0, "〇": 0, "洞": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
          "六": 6, "七": 7, "八": 8, "九": 9}  # fmt: skip
MULTIPLIERS = {"十": 10, "百": 100, "千": 1000}
_NUMERAL = "".join(DIGITS) + "".join(MULTIPLIERS)
# Units after which a number is an address, date, time or measure; longest first for the regex.
UNITS = ("号楼", "单元", "分钟", "小时", "公里", "号", "室", "户", "栋", "幢", "楼", "层", "点", "月", "日",
         "年", "岁", "度", "元", "块", "路", "米", "周")  # fmt: skip
_UNIT_RE = "|".join(UNITS)
_RUN = re.compile(f"[{_NUMERAL}]+(?={_UNIT_RE})|[{_NUMERAL}]{{3,}}")
_MINUTES = re.compile(f"(?<=[0-9]点)([{_NUMERAL}]+)(?=分)")
_LATIN = re.compile(r"[A-Za-z0-9]")


def join_tokens(text: str) -> str:
    """Remove the spaces an engine puts between Chinese words; keep those between Latin words."""
    words = text.split()
    out = ""
    for word in words:
        if out and _LATIN.match(out[-1]) and _LATIN.match(word[0]):
            out += " "
        out += word
    return out


def counted_value(numeral: str) -> int | None:
    """十七 -> 17, 二十三 -> 23, 一百零五 -> 105, 两千零二十四 -> 2024; None if malformed."""
    total, digit, last_multiplier = 0, None, 10_000
    for ch in numeral:
        if ch in DIGITS:
            if digit is not None and DIGITS[ch] != 0:
                return None  # two digits in a row inside a counted number: 二三十
            digit = DIGITS[ch] if DIGITS[ch] != 0 else None
        else:
            multiplier = MULTIPLIERS[ch]
            if multiplier >= last_multiplier:
                return None  # 十百: multipliers must fall
            total += (1 if digit is None else digit) * multiplier
            digit, last_multiplier = None, multiplier
    return total + (digit or 0)


def _convert(run: str) -> str:
    if any(ch in MULTIPLIERS for ch in run):
        value = counted_value(run)
        return run if value is None else str(value)
    return "".join(str(DIGITS[ch]) for ch in run)


def spoken_numbers(text: str) -> str:
    """Spoken numbers to digits where they are numbers (see module docstring)."""
    text = _RUN.sub(lambda m: _convert(m.group(0)), text)
    return _MINUTES.sub(lambda m: _convert(m.group(0)), text)


def normalize(raw: str) -> str:
    """Engine output -> the text shown to agents and stored on tickets."""
    return spoken_numbers(join_tokens(raw))


@dataclass(frozen=True, slots=True)
class Gazetteer:
    """Place names of the hotline's city; loaded from configuration, never hard-wired in logic."""

    districts: Sequence[str] = ()
    streets: Sequence[str] = ()  # 街道 / 镇: sub-district administrations
    roads: Sequence[str] = ()


YANTAI = Gazetteer(
    districts=("芝罘区", "莱山区", "福山区", "牟平区", "蓬莱区", "开发区", "高新区"),
    streets=("幸福街道", "只楚街道", "黄务街道", "初家街道", "滨海路街道", "向阳街道"),
    roads=("观海路", "二马路", "南大街", "北马路", "迎春大街", "长江路", "港城大街"),
)

_MOBILE = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")
_LANDLINE = re.compile(r"(?<![0-9])(0[1-9][0-9]{1,2})-?([2-9][0-9]{6,7})(?![0-9])")
_HOUSE = re.compile(r"[0-9]+号(?:[0-9]+(?:号楼|栋|幢))?(?:[0-9]+单元)?(?:[0-9]+(?:室|户))?")
_TIME = re.compile(
    r"(?:今天|明天|昨天|前天|后天|每天|[0-9]{1,2}月[0-9]{1,2}[日号])?"
    r"(?:早上|上午|中午|下午|傍晚|晚上|凌晨|半夜|夜里)?"
    r"[0-9]{1,2}点(?:半|[0-9]{1,2}分)?(?:左右|以后|之后|以前|之前)?"
)


@dataclass(frozen=True, slots=True)
class Extraction:
    raw: str
    text: str
    phone: str | None = None
    district: str | None = None
    street: str | None = None
    road: str | None = None
    number: str | None = None  # house/building/unit/room: 17号3单元502室
    address: str | None = None  # the fragment from the first place name through the number
    time: str | None = None
    spans: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)


def find_phone(text: str) -> tuple[str, tuple[int, int]] | None:
    """A mobile number (11 digits, 1[3-9]...) or a landline with area code (0535-6123456)."""
    mobile = _MOBILE.search(text)
    if mobile:
        return mobile.group(0), mobile.span()
    landline = _LANDLINE.search(text)
    if landline:
        return f"{landline.group(1)}-{landline.group(2)}", landline.span()
    return None


def _first(text: str, names: Sequence[str]) -> tuple[str, tuple[int, int]] | None:
    hits = [(text.find(name), -len(name), name) for name in names if name and name in text]
    if not hits:
        return None
    at, _, name = min(hits)
    return name, (at, at + len(name))


def _places(text: str, gazetteer: Gazetteer) -> dict[str, tuple[str, tuple[int, int]]]:
    found = {}
    for kind, names in (("district", gazetteer.districts), ("street", gazetteer.streets), ("road", gazetteer.roads)):
        hit = _first(text, names)
        if hit:
            found[kind] = hit
    return found


def _house_number(text: str, after: int) -> tuple[str, tuple[int, int]] | None:
    match = _HOUSE.match(text, after) or _HOUSE.search(text, after)
    return (match.group(0), match.span()) if match else None


def extract(raw: str, gazetteer: Gazetteer = YANTAI) -> Extraction:
    """Phone, place names, house number and time from one utterance or a whole transcript."""
    text = normalize(raw)
    spans: dict[str, tuple[int, int]] = {}
    values: dict[str, str] = {}
    phone = find_phone(text)
    if phone:
        values["phone"], spans["phone"] = phone
    for kind, (name, span) in _places(text, gazetteer).items():
        values[kind], spans[kind] = name, span
    if spans:
        place_end = max((spans[k][1] for k in ("district", "street", "road") if k in spans), default=None)
        number = _house_number(text, place_end) if place_end is not None else None
        if number:
            values["number"], spans["number"] = number
            start = min(spans[k][0] for k in ("district", "street", "road") if k in spans)
            values["address"] = text[start : number[1][1]]
        elif place_end is not None:
            start = min(spans[k][0] for k in ("district", "street", "road") if k in spans)
            values["address"] = text[start:place_end]
    time = _TIME.search(text)
    if time:
        values["time"], spans["time"] = time.group(0), time.span()
    return Extraction(raw=raw, text=text, spans=spans, **values)
