"""The chaos soak (issue 20 item 4): seeded mixed traffic while workers are SIGKILLed and brokers restarted.

``plan`` decides the traffic and the faults from a seed, ``driver`` runs them (supervisor, sender, fault runner),
``report`` holds the counts and the verdict. The soak itself: ``tests/support/chaos_soak.py``; the reduced run in
the suite ``tests/integration/test_chaos_soak.py``, the full one ``bench/bench_chaos_soak.py``; ``docs/chaos-soak.md``.
"""
