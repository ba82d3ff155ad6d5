"""Disaster-recovery drills (issue 20): a seeded P2P flow through a real plain worker while something fails.

``leader_kill`` SIGKILLs the broker leading the busiest input partition; ``failover`` SIGKILLs every node of the
primary region, fails over to the standby that MirrorMaker 2 feeds, and back. Both measure what was lost, repeated
or conflicting against a clean in-process run (``flow.reference_run``) and the RTO. The suite runs them reduced
(``tests/integration/test_cluster_leader_kill.py``, ``test_standby_failover.py``), ``bench/`` in full.
"""
