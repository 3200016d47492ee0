from __future__ import annotations

from gateway.dialogue.operations import Action
from gateway.metrics import Metrics, Series


def test_series_buckets_are_le_bounds_and_cumulative() -> None:
    s = Series((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        s.observe(v)
    assert s.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert s.total == 0.05 + 0.1 + 0.5 + 1.0 + 7.0


def test_exposition_has_public_names_labels_and_derived_gauge() -> None:
    m = Metrics(lambda: [("demo", 3)])
    m.bind_front("rpc")
    m.observe_turn("Dialogue", "rpc", "ok", 0.00007)
    m.count_reply(Action.TRANSFER_TO_AGENT)
    m.count_error("InvalidParameter")
    text = m.exposition().decode()
    assert (
        'ivrgw_turn_duration_seconds_bucket{front="rpc",le="5e-05",operation="Dialogue",outcome="ok"} 0.0'
        in text
    )
    assert (
        'ivrgw_turn_duration_seconds_bucket{front="rpc",le="0.0001",operation="Dialogue",outcome="ok"} 1.0'
        in text
    )
    assert (
        'ivrgw_turn_duration_seconds_count{front="rpc",operation="SilenceTimeout",outcome="fallback"} 0.0'
        in text
    )
    assert 'ivrgw_replies_total{action="TransferToAgent"} 1.0' in text
    assert 'ivrgw_errors_total{code="InvalidParameter"} 1.0' in text
    assert 'ivrgw_active_conversations{instance="demo"} 3.0' in text
    assert "process_cpu_seconds_total" in text
