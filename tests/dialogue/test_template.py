from __future__ import annotations

from gateway.dialogue.template import compile_template, variable_names


def test_template_fills_variables_and_blanks_unknown_ones() -> None:
    t = compile_template("${name}您好，余额${balance}元")
    assert t.render({"name": "张三", "balance": "12.5"}) == "张三您好，余额12.5元"
    assert t.render({}) == "您好，余额元"
    assert variable_names(t) == ("name", "balance")


def test_plain_template_renders_itself() -> None:
    t = compile_template("no variables $ here {x}")
    assert t.is_plain
    assert t.render({"x": "1"}) == "no variables $ here {x}"


def test_escaped_placeholder_is_literal() -> None:
    assert (
        compile_template("cost $${price} is ${price}").render({"price": "3"})
        == "cost ${price} is 3"
    )
