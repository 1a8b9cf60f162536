"""The leader election's timing rule, with a real elector actor and a real SQLite store.

A standby claims the convention's lead every third of a lease; when a claim it lost read a
lease that ends before its next one, it claims again right at that expiry, so a dead
leader is replaced when its lease runs out rather than up to a third of a lease later
(``_nodes/leadership.py``; the failover bound in docs/deployment.md depends on it).
"""

from __future__ import annotations

from pathlib import Path

from thespian.actors import ActorExitRequest

import genagent_thespian as g
from genagent_thespian._durable.location import open_store
from genagent_thespian._nodes.leadership import Elect, Elector
from genagent_thespian.testing import wait_until

#: A long lease: the standby's regular claims come 20 s apart, its expiry claim after 1 s.
LEASE = 60.0


def test_a_standby_claims_the_lead_when_the_leaders_lease_runs_out(tmp_path: Path) -> None:
    store_path = str(tmp_path / "store.sqlite3")
    store = open_store(store_path)
    system = g.start_system(make_default=False)
    try:
        # A leader that renewed for the last time a moment ago: its lease ends in 1 s.
        assert store.claim_leadership("c", "dead-leader", 1.0).acquired
        elector = system.asys.createActor(Elector)
        address = ("127.0.0.1", system.admin_port or 0)
        system.asys.tell(
            elector, Elect(store_path, "c", "standby/1", "node-s", LEASE, address, (address,))
        )

        def standby_leads() -> bool:
            current = store.leadership("c")
            return current is not None and current.holder == "standby/1"

        # Well before the standby's next regular claim (a third of the lease: 20 s).
        wait_until(standby_leads, timeout=LEASE / 6, message="the standby did not claim")
        current = store.leadership("c")
        assert current is not None and current.epoch == 2  # a new epoch fences the old leader
        # Before its services would boot (a sixth of a lease after the claim): it leaves and
        # releases the lead.
        system.asys.tell(elector, ActorExitRequest())
        wait_until(lambda: store.leadership("c").expires_in <= 0)  # type: ignore[union-attr]
    finally:
        system.shutdown()
        store.close()
