"""Contacts for the merge tests, written for the project: thirty citizens reporting one broken
manhole cover (井盖) on 芝罘区南大街 in thirty wordings (typed, WeChat, speech-recognised without
punctuation), and contacts that must stay apart from them."""

from __future__ import annotations

STREET = "芝罘区/南大街"

MANHOLE = [
    "芝罘区南大街有个井盖坏了，车一压就响，麻烦派人来修",
    "南大街上的井盖坏了，晚上走路差点崴脚",
    "你好，我要反映南大街井盖破损的问题",
    "南大街那个井盖裂了，中间塌下去一块",
    "南大街路中间井盖坏了好几天了也没人管",
    "喂 南大街的井盖坏掉了 很危险",
    "南大街靠近银座那块的下水道井盖碎了",
    "我举报一下南大街井盖损坏，小孩子很容易掉下去",
    "南大街的窨井盖坏了，请尽快维修",
    "南大街井盖塌陷，车辆经过很危险",
    "请问南大街的井盖什么时候修，已经坏了一个星期了",
    "南大街人行道上井盖松动了，踩上去晃",
    "南大街有个井盖缺了一角，晚上看不清",
    "南大街的井盖翘起来了，电动车过去容易摔",
    "芝罘南大街井盖损坏，希望相关部门处理",
    "南大街井盖烂了",
    "南大街井盖破了个大洞",
    "南大街上井盖坏了赶紧修吧",
    "我在南大街这边 看到一个坏井盖",
    "南大街的污水井盖子坏了，臭水往外冒",
    "南大街公交站旁边井盖坏了",
    "南大街井盖被压坏了，车过的时候哐当哐当的",
    "反映南大街井盖问题，盖子碎成好几块",
    "南大街那里井盖坏了有人摔倒了",
    "南大街的井盖坏了，拿个锥桶围着也不修",
    "芝罘区南大街井盖破损存在安全隐患",
    "南大街马路上井盖坏了，晚上开车很危险",
    "那个就是南大街这个井盖坏了都快半个月了",
    "南大街十字路口井盖坏了",
    "就是南大街那个坏掉的井盖你们管不管啊",
]

# The same problem on another street.
OTHER_STREET = "北马路有个井盖坏了，车一压就响，麻烦派人来修"
# Another problem of the same category on the same street.
OTHER_PROBLEM = [
    "南大街的路灯不亮了，晚上黑乎乎的",
    "南大街护栏被撞坏了，一直没人修",
]
