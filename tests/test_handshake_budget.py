"""TLS handshakes take at most their share of the server's time, and those kept waiting take turns."""

from __future__ import annotations

from twisted.internet.task import Clock

from spore.handshake_budget import HandshakeBudget


class Connection:
    def __init__(self, budget: HandshakeBudget, cost: float, log: list) -> None:
        self.budget, self.cost, self.log = budget, cost, log

    def resume_handshake(self) -> None:
        self.log.append(self)
        self.budget.spend(self.cost)


def test_handshakes_go_on_until_the_windows_share_is_spent():
    clock = Clock()
    budget = HandshakeBudget(clock, share=0.5, window=0.1)
    for _ in range(5):
        assert budget.available()
        budget.spend(0.01)
    assert not budget.available()  # 0.05 s of a 0.1 s window
    clock.advance(0.1)
    assert budget.available() and budget.spent == 0


def test_the_waiting_take_turns_by_source_in_later_windows():
    clock = Clock()
    spent = []
    budget = HandshakeBudget(clock, share=0.5, window=0.1, on_spent=spent.append)
    budget.spend(0.05)
    resumed = []
    flood = [Connection(budget, 0.02, resumed) for _ in range(6)]
    real = Connection(budget, 0.02, resumed)
    for connection in flood[:3]:
        budget.wait("flood-a", connection)
    for connection in flood[3:]:
        budget.wait("flood-b", connection)
    budget.wait("real", real)
    assert len(budget) == 7 and resumed == []
    clock.advance(0.1)
    # 0.05 s a window, 0.02 s each: three handshakes, one from each source.
    assert resumed == [flood[0], flood[3], real]
    clock.advance(0.1)
    assert resumed[3:] == [flood[1], flood[4], flood[2]]
    clock.advance(0.1)
    assert resumed[6:] == [flood[5]] and len(budget) == 0
    assert clock.getDelayedCalls() == []  # nothing waits: no timer
    assert spent == [0.05] + 7 * [0.02]


def test_a_connection_gone_while_waiting_is_forgotten():
    clock = Clock()
    budget = HandshakeBudget(clock, share=0.5, window=0.1)
    budget.spend(1)
    resumed = []
    gone, stays = Connection(budget, 0, resumed), Connection(budget, 0, resumed)
    budget.wait("a", gone)
    budget.wait("a", stays)
    budget.forget("a", gone)
    budget.forget("b", gone)  # never waited there: harmless
    clock.advance(0.1)
    assert resumed == [stays]


def test_the_source_holding_the_fewest_connections_goes_first():
    clock = Clock()
    held = {"flood": 100, "real": 1}
    budget = HandshakeBudget(clock, share=0.5, window=0.1, weight=held.__getitem__)
    budget.spend(1)
    resumed = []
    flood = [Connection(budget, 0.03, resumed) for _ in range(3)]
    for connection in flood:
        budget.wait("flood", connection)
    real = Connection(budget, 0.03, resumed)
    budget.wait("real", real)
    clock.advance(0.1)
    assert resumed == [real, flood[0]]
