from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.dialogue.matching import PhraseSet, normalize


def test_normalize_folds_width_case_punctuation_and_space() -> None:
    assert normalize("再说 一遍！") == "再说一遍"
    assert normalize("ＡＧＥＮＴ，ｐｌｅａｓｅ") == "agent please"
    assert normalize("  Say it AGAIN,   please!! ") == "say it again please"
    assert normalize("不用了，谢谢") == normalize("不用了,谢谢") == "不用了谢谢"
    assert normalize("１２３") == "123"
    assert normalize("？！。…") == ""


def test_phrases_respect_latin_word_boundaries() -> None:
    assert PhraseSet(["human"]).matches("i want a human")
    assert not PhraseSet(["human"]).matches("that was inhuman")
    assert not PhraseSet(["agent"]).matches("agents are busy")
    assert PhraseSet(["转人工"]).matches("我要转人工谢谢")
    assert PhraseSet(["agent"]).matches("转agent")
    assert PhraseSet(["a.b (c)"]).matches("x a b c y")  # punctuation in phrases is normalised too


def test_phrase_set_matches_whole_and_contained_phrases() -> None:
    phrases = PhraseSet(["投诉", "有没有人工", "Talk to an agent"])
    assert phrases.matches(normalize("投诉"))
    assert phrases.matches(normalize("我要投诉你们"))
    assert phrases.matches(normalize("please, TALK to an agent!"))
    assert not phrases.matches(normalize("查询余额"))
    assert not PhraseSet([])
    assert not PhraseSet([]).matches("anything")


@given(st.text(max_size=40))
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_a_normalised_phrase_surrounded_by_cjk_always_matches(a: str, phrase: str, b: str) -> None:
    p = normalize(phrase)
    if p:
        assert PhraseSet([phrase]).matches(normalize("我" + p + "的"))
