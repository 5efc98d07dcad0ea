"""主单 + 子单 (issue #15, item 5), pure: where a contact is, how alike two contacts read, which
open ticket a new one joins, and the same citizen's other open tickets.

- **Place** (`Gazetteer.place`): the longest district or street name (or a common short form:
  `芝罘` for 芝罘区, `毓璜顶` for 毓璜顶街道; a street's only when three characters are left, as
  `幸福` or `文化` are words too; a district's `aliases`) of `[triage.merge] districts` in the text, as
  `district/street` (`芝罘区/南大街`), `district` when only a district is named, '' when none. A
  street listed under two districts goes to the district the text names, else the first listed.
- **Signature** (`signature`): the text folded (NFKC, lower case, ideographs, letters and digits
  only), every place name and filler character (的了吗我你这那个...) dropped, cut at
  `SIGNATURE_CHARS`. What a bucket keeps of each ticket.
- **Similarity** (`similarity`): the weighted overlap of two signatures' character 2-grams
  (shared weight over the smaller one's), each 2-gram weighted by how particular it is to a
  category of the dispatch catalogue (the dispatch model's idf: `井盖`, `路灯` weigh, `晚上`,
  `坏了` barely; a 2-gram the catalogue never saw weighs most). Within one category and one
  street, what tells two contacts apart is the thing they are about.
- **Decision** (`merge_target`): the parent (主单) a ticket joins, or None: same category, same
  street-level place, received within `window` of it (before or after: consumers may take
  tickets out of order), open (queued, offered, claimed), not itself a 子单, similarity at least
  `threshold`; the most similar wins, the older on a tie. A possible
  parent is filed under one category (`category_of`: the agent's, else triage's first
  suggestion); a new ticket looks under the agent's category, else under its first two
  suggestions (`categories_of`): the same 井盖 worded as 塌陷 or 什么时候修 is suggested to 安全隐患
  or 供水 first and 市政设施 second, and still joins the others.
- **一人多诉** (`related`): the citizen's other open tickets received before this one (same phone,
  WeChat openid or Telegram chat id: `gateway.ticket.identities`, whose index the intake writes)
  are linked as `related`, newest first: a link, never a merge.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.ticket import Ticket
from gateway.ticket import identities as identities  # re-exported: the citizen, as merging reads them
from gateway.triage.dispatch import DispatchModel

SIGNATURE_CHARS = 100
OPEN = frozenset({"queued", "offered", "claimed"})
# Characters that say nothing about the problem: particles, pronouns, politeness.
FILLER = frozenset("的了吗呢吧啊呀哦嘛么呗啦哈嗯喂我你您他她它们这那个是在有也就都还很把被给和与请麻烦帮忙一下")
# Suffixes whose removal leaves a name's common short form (芝罘区 -> 芝罘, 向阳街道 -> 向阳).
SHORT_SUFFIXES = ("街道办事处", "街道", "区", "县", "市", "镇", "乡")

PlaceName = Annotated[str, StringConstraints(min_length=2, max_length=32, strip_whitespace=True)]


class District(BaseModel):
    """A district of the gazetteer: its name, extra short forms, and its streets (街道, roads)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: PlaceName
    aliases: list[PlaceName] = Field(default_factory=list, max_length=32)
    streets: list[PlaceName] = Field(default_factory=list, max_length=1000)


class MergeSettings(BaseModel):
    """`[triage.merge]`: similar tickets become 子单 of one 主单 (see the module). `window`: how far
    back a parent may have been received (s); `threshold`: the least similarity; a bucket (one
    category on one street) keeps its newest `max_bucket` tickets; a parent takes at most
    `max_children`; a ticket links at most `max_related` of its citizen's open tickets, out of the
    newest `max_citizen` tickets it reads from their index (`[history]` keeps it, at intake)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    window: float = Field(default=3 * 86400.0, gt=0, le=31 * 86400)
    threshold: float = Field(default=0.1, gt=0, le=1)
    max_bucket: int = Field(default=30, ge=1, le=1000)
    max_children: int = Field(default=200, ge=1, le=1000)
    max_related: int = Field(default=10, ge=0, le=100)
    max_citizen: int = Field(default=20, ge=1, le=200)
    districts: list[District] = Field(default_factory=list, max_length=200)


def fold(text: str) -> str:
    """NFKC, lower case, ideographs, letters and digits only: typed and recognised text alike."""
    normal = unicodedata.normalize("NFKC", text).lower()
    return "".join(char for char in normal if unicodedata.category(char)[0] in "LN")


def _short(name: str, least: int) -> str | None:
    """The name without its administrative suffix, when at least `least` characters are left."""
    for suffix in SHORT_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= least:
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True, slots=True)
class _Form:
    district: str
    street: str  # '' for the district itself
    full: bool  # the name as listed (not a short form)


class Gazetteer:
    """The districts and streets of `[triage.merge] districts`, matched in folded text."""

    def __init__(self, districts: Sequence[District]) -> None:
        found: dict[str, list[_Form]] = {}
        for district in districts:
            names = [(district.name, True)] + [(alias, False) for alias in district.aliases]
            short = _short(district.name, 2)
            names += [(short, False)] if short else []
            for name, full in names:
                found.setdefault(fold(name), []).append(_Form(district.name, "", full))
            for street in district.streets:
                found.setdefault(fold(street), []).append(_Form(district.name, street, True))
                short = _short(street, 3)
                if short:
                    found.setdefault(fold(short), []).append(_Form(district.name, street, False))
        # A form naming two places is kept only as a full name (a short form that collides is dropped).
        self._forms: dict[str, tuple[_Form, ...]] = {}
        for form, places in found.items():
            named = [place for place in places if place.full]
            kept = named or (places if len({(p.district, p.street) for p in places}) == 1 else [])
            if form and kept:
                self._forms[form] = tuple(kept)
        ordered = sorted(self._forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def names(self, folded: str) -> list[str]:
        """The place forms in folded text, left to right, the longest at each position."""
        return [] if self._pattern is None else self._pattern.findall(folded)

    def place(self, text: str) -> str:
        """`district/street`, `district`, or '' (see the module)."""
        found = self.names(fold(text))
        districts = [form.district for name in found for form in self._forms[name] if not form.street]
        streets = [name for name in found if any(form.street for form in self._forms[name])]
        if streets:
            longest = max(streets, key=len)  # max keeps the first of equal lengths: the earliest
            forms = [form for form in self._forms[longest] if form.street]
            chosen = next((form for form in forms if form.district in districts), forms[0])
            return f"{chosen.district}/{chosen.street}"
        return districts[0] if districts else ""

    def strip(self, folded: str) -> str:
        return folded if self._pattern is None else self._pattern.sub("", folded)


def is_street(place: str) -> bool:
    """A street-level place (`district/street`): only those merge (a district is too wide)."""
    return "/" in place


def signature(text: str, gazetteer: Gazetteer) -> str:
    """What a bucket keeps of a ticket's text (see the module)."""
    kept = gazetteer.strip(fold(text))
    return "".join(char for char in kept if char not in FILLER)[:SIGNATURE_CHARS]


def bigrams(signature: str) -> frozenset[str]:
    if len(signature) < 2:
        return frozenset({signature}) if signature else frozenset()
    return frozenset(signature[i : i + 2] for i in range(len(signature) - 1))


Profile = tuple[frozenset[str], float]  # a signature's 2-grams and their total weight


def profile(signature: str, weights: Mapping[str, float], unseen: float) -> Profile:
    grams = bigrams(signature)
    return grams, sum(weights.get(gram, unseen) for gram in grams)


def overlap(first: Profile, second: Profile, weights: Mapping[str, float], unseen: float) -> float:
    """The weight two profiles share over the smaller one's total."""
    smaller = min(first[1], second[1])
    if smaller <= 0:
        return 0.0
    return sum(weights.get(gram, unseen) for gram in first[0] & second[0]) / smaller


def similarity(a: str, b: str, weights: Mapping[str, float], unseen: float) -> float:
    """The weighted overlap of two signatures' 2-grams, 0 to 1 (see the module); `unseen`: the
    weight of a 2-gram `weights` does not have."""
    return overlap(profile(a, weights, unseen), profile(b, weights, unseen), weights, unseen)


PROFILES_KEPT = 4096  # candidates' profiles kept (about 20 MB at most): a bucket's are met again and again


@dataclass(frozen=True, slots=True)
class Similarity:
    """What the text measure needs: each 2-gram's weight and the weight of one never seen; and the
    profiles of signatures met before (a bucket's candidates are compared with every new ticket of
    that category and street), kept up to `PROFILES_KEPT`, then forgotten all at once."""

    weights: Mapping[str, float]
    unseen: float
    _profiles: dict[str, Profile] = field(default_factory=dict, compare=False, repr=False)

    def profile(self, signature: str) -> Profile:
        found = self._profiles.get(signature)
        if found is None:
            if len(self._profiles) >= PROFILES_KEPT:
                self._profiles.clear()
            found = self._profiles[signature] = profile(signature, self.weights, self.unseen)
        return found


def category_weights(model: DispatchModel) -> Similarity:
    """Each 2-gram's weight: log(categories / categories whose words have it), read off the
    dispatch model (a category that never saw a 2-gram has the smoothing floor, its column's
    least log-likelihood); one never seen weighs log(categories)."""
    table = model.log_likelihood
    seen = table > table.min(axis=0, keepdims=True) + 1e-9
    count = len(model.categories)
    bigram = np.array([len(gram) == 2 for gram in model.vocabulary], dtype=bool)
    spread = seen[bigram].sum(axis=1)
    grams = [gram for gram, keep in zip(model.vocabulary, bigram, strict=True) if keep]
    weights = {gram: math.log(count / max(int(n), 1)) for gram, n in zip(grams, spread, strict=True)}
    return Similarity(weights, math.log(max(count, 2)))


def category_of(ticket: Ticket) -> str:
    """The category a possible parent is filed under: the agent's, else triage's first suggestion."""
    return ticket.category or (ticket.suggestions[0].category if ticket.suggestions else "")


LOOKED_UNDER = 2  # suggestions a ticket without the agent's category looks for its parent under


def categories_of(ticket: Ticket) -> tuple[str, ...]:
    """The categories a ticket looks for its parent under: the agent's, else its first two
    suggestions' (every category looked under is a bucket's signatures compared)."""
    if ticket.category:
        return (ticket.category,)
    return tuple(dict.fromkeys(suggestion.category for suggestion in ticket.suggestions[:LOOKED_UNDER]))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A ticket a new one may join, as its bucket and its hash tell: its category and place (the
    bucket's), its signature, when it was received, its status and its own parent ('' = none)."""

    id: str
    category: str
    place: str
    signature: str
    at: datetime
    status: str = "queued"
    parent: str = ""


def merge_target(
    ticket: Ticket, own: str, candidates: Iterable[Candidate], settings: MergeSettings, measure: Similarity
) -> tuple[str, float] | None:
    """The parent `ticket` (whose signature is `own`) joins and the similarity, or None (see the module)."""
    categories = categories_of(ticket)
    if not settings.enabled or not categories or not is_street(ticket.place) or not own:
        return None
    window = timedelta(seconds=settings.window)
    weights, unseen = measure.weights, measure.unseen
    mine = profile(own, weights, unseen)
    best: tuple[float, datetime, str] | None = None
    for candidate in candidates:
        if (
            candidate.id == ticket.id
            or candidate.category not in categories
            or candidate.place != ticket.place
            or candidate.status not in OPEN
            or candidate.parent
            or abs(candidate.at - ticket.received_at) > window
        ):
            continue
        score = overlap(mine, measure.profile(candidate.signature), weights, unseen)
        if score < settings.threshold:
            continue
        if best is None or (score, -candidate.at.timestamp()) > (best[0], -best[1].timestamp()):
            best = (score, candidate.at, candidate.id)
    return None if best is None else (best[2], best[0])


def related(ticket_id: str, others: Iterable[tuple[str, str]], limit: int) -> tuple[str, ...]:
    """The citizen's other open tickets among `others` ((id, status), newest first), at most `limit`."""
    found = [other for other, status in others if other != ticket_id and status in OPEN]
    return tuple(dict.fromkeys(found))[:limit]


def lanes(keyed: Sequence[tuple[str, tuple[str, ...]]]) -> list[list[str]]:
    """A batch's tickets (id, the keys that tie it to others: `lane_keys`) in lanes that may be
    triaged at the same time: tickets sharing a key are in one lane, in their order, so the one
    triaged second sees the first as a merge candidate or a related ticket, as it would one by one."""
    lane_of: dict[str, int] = {}
    found: list[list[str]] = []
    for ticket_id, keys in keyed:
        joined = sorted({lane_of[key] for key in keys if key in lane_of})
        if not joined:
            joined = [len(found)]
            found.append([])
        into = joined[0]
        for other in joined[1:]:  # this ticket ties two lanes: they become one
            found[into].extend(found[other])
            found[other] = []
            lane_of.update({key: into for key, lane in lane_of.items() if lane == other})
        found[into].append(ticket_id)
        lane_of.update({key: into for key in keys})
    return [lane for lane in found if lane]


def lane_keys(ticket: Ticket, text: str, gazetteer: Gazetteer) -> tuple[str, ...]:
    """What ties a ticket to others of its batch: its citizen, and the street it names."""
    place = gazetteer.place(f"{ticket.address}\n{text}")
    return (*identities(ticket), *((f"street:{place}",) if is_street(place) else ()))
