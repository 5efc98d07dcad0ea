from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gateway.asr.text import Gazetteer, counted_value, extract, find_phone, join_tokens, normalize, spoken_numbers


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("我 要 投诉", "我要投诉"),
        ("我的 ETC 卡 坏 了", "我的ETC卡坏了"),
        ("wifi password 忘 了", "wifi password忘了"),
        ("  ", ""),
    ],
)
def test_join_tokens(raw: str, text: str) -> None:
    assert join_tokens(raw) == text


@pytest.mark.parametrize(
    ("spoken", "digits"),
    [
        ("一三八五三五七二四六九", "13853572469"),
        ("幺三八幺二三四五六七八", "13812345678"),
        ("十七号", "17号"),
        ("五零二室", "502室"),
        ("三点", "3点"),
        ("下午三点十五分", "下午3点15分"),
        ("三单元", "3单元"),
        ("二十三号楼", "23号楼"),
        ("十一点以后", "11点以后"),
        ("十四度", "14度"),
        ("二零二四年三月五日", "2024年3月5日"),
        ("两千零二十四年", "2024年"),
        ("一百零五号", "105号"),
        # Words that merely contain numerals stay words.
        ("一个多月", "一个多月"),
        ("一二线城市", "一二线城市"),
        ("十分危险", "十分危险"),
        ("想咨询一下", "想咨询一下"),
        ("二马路", "二马路"),
    ],
)
def test_spoken_numbers(spoken: str, digits: str) -> None:
    assert spoken_numbers(spoken) == digits


@pytest.mark.parametrize(
    ("numeral", "value"), [("十", 10), ("十七", 17), ("九十九", 99), ("三百", 300), ("十百", None)]
)
def test_counted_value(numeral: str, value: int | None) -> None:
    assert counted_value(numeral) == value


def test_phone_number_from_the_reference_sentence() -> None:
    e = extract("我的电话号码是一三八五三五七二四六九，有问题请给我回电话。")
    assert e.phone == "13853572469"
    assert e.raw.startswith("我的电话号码是一三八")  # raw kept beside the normalized text
    assert e.text.startswith("我的电话号码是13853572469")


def test_landline_and_non_numbers() -> None:
    assert find_phone(spoken_numbers("座机是零五三五六一二三四五六")) == ("0535-6123456", (3, 14))
    assert find_phone("订单号12345") is None
    assert find_phone("号码123856789012") is None  # 12 digits is not a mobile number


def test_address_from_the_reference_sentence() -> None:
    e = extract("我家住在莱山区观海路十七号三单元五零二室，楼道的灯坏了一个多月了。")
    assert (e.district, e.road, e.number) == ("莱山区", "观海路", "17号3单元502室")
    assert e.address == "莱山区观海路17号3单元502室"
    assert e.time is None


def test_address_from_vosk_style_spaced_text() -> None:
    e = extract("我 家 住 在 莱山 区 观海 路 十七 号 三 单元 五 零 二 室")
    assert e.address == "莱山区观海路17号3单元502室"


def test_gazetteer_is_data() -> None:
    e = extract("我住在西城区长安街三号", Gazetteer(districts=["西城区"], roads=["长安街"]))
    assert (e.district, e.road, e.number) == ("西城区", "长安街", "3号")


def test_time_expressions() -> None:
    assert extract("时间是今天下午三点左右").time == "今天下午3点左右"
    assert extract("每天晚上十一点以后").time == "每天晚上11点以后"
    assert extract("三月五号上午九点半").time == "3月5号上午9点半"


def read_manifest(shared: Path) -> dict[str, str]:
    with (shared / "manifest.tsv").open(encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return {row["file"]: row["reference_text"] for row in rows}


def test_every_manifest_reference_text(shared_audio: Path) -> None:
    refs = read_manifest(shared_audio)
    found = {name.split("/")[-1].rsplit("_", 1)[0]: extract(text) for name, text in refs.items()}
    assert found["hotline_01"].address == "芝罘区二马路"
    assert found["hotline_02"].phone == "13853572469"
    assert found["hotline_03"].number == "17号3单元502室"
    assert found["hotline_04"].time == "每天晚上11点以后"
    assert found["hotline_07"].street == "幸福街道"
    assert found["hotline_08"].time == "今天下午3点左右"
    assert "14度" in found["hotline_10"].text
    assert found["hotline_05"].text == normalize(refs["tts/hotline_05_8k.wav"])
    assert "一二线城市" in found["BAC009S0764W0122"].text  # not a number
    # Nothing invented where nothing was said.
    assert all(e.phone is None for key, e in found.items() if key != "hotline_02")
