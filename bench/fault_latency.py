"""How long a caller waits when the bot is late: the turn budget plus how much.

A gateway process with a webhook bot that answers after 5 s, and an
instance whose TurnBudget is 500 ms; N sequential Dialogue turns, each timed
at the client. Then the same with the bot's breaker open. Prints the worst
and median overshoot past the budget. Run: `python -m bench.fault_latency`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.bots.test_webhook import BUDGET_MS, Bot, begin, say, start_gateway
from tests.conftest import Client
from tests.loopback import LoopbackServer


def main(turns: int = 30) -> None:
    with tempfile.TemporaryDirectory() as tmp, LoopbackServer(Bot()) as bot:
        for label, failures in (("late bot", 1000), ("breaker open", 1)):
            d = Path(tmp) / label.replace(" ", "-")
            gw = start_gateway(d, bot.port, failures=failures, reset_ms=3_600_000)
            try:
                with Client(gw.port) as c:
                    conv = begin(c)
                    waits = []
                    for _ in range(turns):
                        started = time.perf_counter()
                        reply = say(c, conv, "slow")
                        waits.append(time.perf_counter() - started)
                        assert reply["Action"] == "TransferToAgent"
            finally:
                gw.stop()
            over = [w * 1000 - BUDGET_MS for w in waits]
            print(
                f"{label:<14} budget {BUDGET_MS} ms, {turns} turns: wait median "
                f"{statistics.median(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms; "
                f"past the budget: median {statistics.median(over):+.1f} ms, "
                f"max {max(over):+.1f} ms"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
