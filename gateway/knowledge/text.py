"""Words for the knowledge base's index and queries: segmentation, synonyms, the FTS5 query.

Pure but for `segmenter()`, which loads jieba's dictionary once per process (the wheel ships it; its
cache goes to a temporary directory, never into the repo). Everything else takes a `Segment`
function, so tests and callers can pass their own.

How a query is built (`build_query`): the text is cut into words (jieba's search mode, so
`养老保险` also yields `养老` and `保险`), stop words and punctuation dropped, each word widened by its
synonyms (colloquial <-> official: 社保 / 社会保险), and the words OR-ed. A long text (a ticket, a
transcript) keeps only the `max_terms` rarest words the index knows: rare words carry the meaning,
and each term costs a posting-list scan, so the cap is what keeps a search fast.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

Segment = Callable[[str], list[str]]

# Words that say nothing about the topic: asking words, particles, pronouns. Single characters are
# dropped too unless they are in `KEEP_SINGLE` (a 12345 query's topic is rarely one character).
_STOP = """
我 你 他 她 它 我们 你们 他们 咱 俺 的 了 吗 呢 吧 啊 呀 哦 嘛 么 是 不是 在 有 没有 和 与 或 还 也 都 就 又 要 能
可以 可不可以 能不能 会 想 请问 问 问一下 一下 咨询 想问 怎么 怎么样 怎样 如何 什么 啥 哪 哪里 哪儿 哪个 哪些 多少 几
为什么 咋 咋办 怎么办 办 那个 这个 这 那 就是 然后 现在 今天 还是 个 下 给 让 被 把 对 从 到 去 来 说 知道 需要
一个 您好 你好 谢谢 麻烦 帮 帮忙 嗯 呃 那么 这么 一些 有没有 不 没 是否 应该 得 找 谁
"""
_KEEP = "水 电 气 税 房 车 证 卡 药 病 猫 狗 树 桥 路 灯"
STOP_WORDS = frozenset(_STOP.split())
KEEP_SINGLE = frozenset(_KEEP.split())

# Colloquial <-> official words, and a few common misrecognitions of speech (ASR homophones): each
# group's words stand for each other in a query. Extend it with `[knowledge] synonyms` (a file, one
# group per line).
BUILTIN_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("社保", "社会保险", "五险"),
    ("医保", "医疗保险", "医保卡"),
    ("公积金", "住房公积金", "公基金", "公机金"),
    ("户口", "户籍", "落户", "上户"),
    ("户口本", "户口簿"),
    ("暖气", "供暖", "采暖", "供热", "暖气片"),
    ("营业执照", "工商登记", "执照"),
    ("个体户", "个体工商户"),
    ("养老金", "退休金", "退休工资", "养老钱"),
    ("失业金", "失业保险金", "失业保险"),
    ("补交", "补缴", "补上"),
    ("交", "缴", "缴纳", "缴费"),
    ("取", "提取", "取出", "提"),
    ("孩子", "小孩", "子女", "娃", "儿子", "闺女", "女儿", "宝宝"),
    ("新生儿", "刚出生", "小宝宝", "婴儿"),
    ("老人", "老年人", "老头", "老太太", "爷爷", "奶奶"),
    ("煤气", "燃气", "天然气"),
    ("停水", "没水", "断水"),
    ("停电", "没电", "断电"),
    ("噪音", "噪声", "太吵", "吵", "动静"),
    ("工资", "工钱", "薪水", "薪资", "血汗钱"),
    ("拖欠", "欠", "欠薪", "不给钱"),
    ("辞退", "开除", "解雇", "炒鱿鱼"),
    ("辞职", "离职"),
    ("发票", "开票"),
    ("个税", "个人所得税"),
    ("房产证", "不动产证", "房本", "不动产权证书"),
    ("过户", "转移登记"),
    ("结婚", "婚姻登记", "领证"),
    ("低保", "最低生活保障"),
    ("残疾人", "残疾", "残障"),
    ("电动车", "电动自行车", "电瓶车"),
    ("上牌", "挂牌", "牌照"),
    ("违章", "违法", "罚单"),
    ("出租车", "的士", "出租"),
    ("网约车", "滴滴"),
    ("公交", "公交车", "公共汽车"),
    ("学生", "学生娃"),
    ("上学", "入学", "读书"),
    ("幼儿园", "托儿所"),
    ("身份证", "身份证件"),
    ("异地", "外地", "外省"),
    ("看病", "就医", "就诊"),
    ("报销", "报", "结算"),
    ("物业", "物业公司", "物业费"),
    ("电梯", "升降梯"),
    ("漏水", "渗水", "滴水"),
    ("垃圾", "废品"),
    ("小广告", "牛皮癣"),
    ("摆摊", "占道", "小摊"),
    ("违建", "私搭乱建", "违章建筑"),
    ("退休", "退下来"),
    ("补办", "补领", "重办", "丢"),
    ("开发商", "房地产公司"),
    ("定金", "订金"),
    ("外卖", "网上订餐"),
    ("假货", "假冒", "山寨"),
    ("退货", "退款"),
    ("贷款", "借款", "贷"),
    ("补贴", "补助", "津贴"),
    ("疫苗", "打针", "预防针"),
    ("鞭炮", "烟花爆竹", "放炮"),
    ("灵活就业", "打零工", "零工", "自由职业", "打短工"),
    ("年龄", "岁数", "几岁", "多大"),
    ("打印", "打出来", "开具", "开个"),
    ("新生儿", "刚生", "刚出生的"),
    ("药店", "药房", "药铺"),
    ("提取", "提出来", "取出来", "拿出来"),
    ("买房", "购房", "买了房", "买房子"),
    ("商贷", "商业贷款"),
    ("房贷", "月供", "按揭"),
    ("什么时候", "啥时候", "几号", "哪天", "何时", "时候"),
    ("燃气味", "煤气味", "天然气味", "燃气泄漏", "漏气"),
    ("顶楼", "顶层"),
    ("漏水", "漏雨"),
)


@dataclass(frozen=True, slots=True)
class Synonyms:
    """word -> the other words of its groups (a word may sit in several groups)."""

    table: Mapping[str, frozenset[str]]

    def of(self, word: str) -> frozenset[str]:
        return self.table.get(word, frozenset())


def build_synonyms(groups: Iterable[Iterable[str]]) -> Synonyms:
    table: dict[str, set[str]] = {}
    for group in groups:
        words = {normalise(word) for word in group if word.strip()}
        for word in words:
            table.setdefault(word, set()).update(words - {word})
    return Synonyms({word: frozenset(others) for word, others in table.items() if others})


def parse_synonyms(text: str) -> list[tuple[str, ...]]:
    """One group per line, words separated by spaces, commas or `/`; `#` starts a comment."""
    groups = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].replace(",", " ").replace("，", " ").replace("/", " ").split()
        if len(words) > 1:
            groups.append(tuple(words))
    return groups


def normalise(text: str) -> str:
    """Full-width to half-width, lower case: `ＡＢＣ１` and `abc1` are one word."""
    return unicodedata.normalize("NFKC", text).lower().strip()


def _wordlike(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def words(segment: Segment, text: str) -> list[str]:
    """The text's words for the index: every word-like token, normalised (stop words kept: bm25
    weighs them down, and the index must hold what any query may ask)."""
    return [token for token in (normalise(t) for t in segment(normalise(text))) if _wordlike(token)]


def contained(text: str, synonyms: Synonyms) -> list[str]:
    """The synonym table's words (two characters or more) written in the text, however jieba cuts
    it (电动自行车 -> 电动 / 自行车; 公基金, a speech homophone, -> 公 / 基金)."""
    flat = normalise(text)
    return [word for word in synonyms.table if len(word) > 1 and word in flat]


def index_words(segment: Segment, text: str, synonyms: Synonyms) -> list[str]:
    """An entry's words for the index: jieba's, and the synonym table's words it contains."""
    own = words(segment, text)
    present = set(own)
    return own + [word for word in contained(text, synonyms) if word not in present]


def query_words(segment: Segment, text: str, synonyms: Synonyms) -> list[str]:
    """The text's distinct meaningful words, in order: no stop words, no lone characters but a few
    (and those with synonyms: 交 / 缴)."""
    seen: dict[str, None] = {}
    for token in words(segment, text):
        single = len(token) == 1 and token not in KEEP_SINGLE and not synonyms.of(token)
        if token in STOP_WORDS or single:
            continue
        seen.setdefault(token, None)
    for word in contained(text, synonyms):
        seen.setdefault(word, None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class Query:
    """The words searched (the text's own first, then synonyms) and the FTS5 MATCH expression."""

    terms: tuple[str, ...]
    match: str


def build_query(
    terms: list[str],
    synonyms: Synonyms,
    doc_freq: Mapping[str, int],
    max_terms: int,
    max_postings: int | None = None,
) -> Query | None:
    """OR of the text's words and their synonyms that the index holds: the text's own words before
    synonyms, the rarest (lowest `doc_freq`) first, at most `max_terms` of them and, after the
    rarest, no more than `max_postings` rows matched in all (None: no bound). A search costs about
    one bm25 score per matched row, and common words add rows but little rank (their idf is near
    zero), so the bound keeps searches fast at scale. None: nothing to search."""
    own = sorted((term for term in terms if doc_freq.get(term, 0) > 0), key=lambda term: doc_freq[term])
    extra = sorted(
        {alt for term in terms for alt in synonyms.of(term) if doc_freq.get(alt, 0) > 0} - set(own),
        key=lambda term: (doc_freq[term], term),
    )
    chosen: list[str] = []
    postings = 0
    for term in own + extra:
        if len(chosen) >= max_terms:
            break
        if chosen and max_postings is not None and postings + doc_freq[term] > max_postings:
            continue
        chosen.append(term)
        postings += doc_freq[term]
    if not chosen:
        return None
    return Query(tuple(chosen), " OR ".join(f'"{term}"' for term in chosen))


def matched(terms: Iterable[str], indexed: str) -> tuple[str, ...]:
    """The query terms an entry's indexed words contain (what the agent sees as evidence)."""
    present = set(indexed.split())
    return tuple(term for term in terms if term in present)


_LOCK = threading.Lock()
_SEGMENT: Segment | None = None


def segmenter(cache_dir: Path | None = None) -> Segment:
    """jieba's search-mode cut (`养老保险` -> 养老, 保险, 养老保险), loaded once per process; its
    dictionary cache is written to `cache_dir` (default: the system's temporary directory)."""
    global _SEGMENT
    with _LOCK:
        if _SEGMENT is None:
            import jieba_fast_dat

            # jieba logs its loading at INFO (and prints timings): nothing of it is ours to show.
            jieba_fast_dat.setLogLevel(logging.WARNING)
            tokenizer = jieba_fast_dat.Tokenizer()
            directory = cache_dir or Path(tempfile.gettempdir())
            tokenizer.cache_file = str(directory / "hotline-gateway-jieba.cache")
            tokenizer.initialize()
            cut: Segment = tokenizer.lcut_for_search
            _SEGMENT = cut
        return _SEGMENT
