"""The P2P market's record processors (spec §2.1): matching over energy.orders, the ledger over ledger.commands.

Both runtimes build them here: the Faust agents (`streams.p2p.agents`) and the plain loop (`python -m streams.p2p`).
"""

from __future__ import annotations

from functools import partial

from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS, Topic
from domain.staking import StakingConfig
from streams.kafka.processor import RecordProcessor
from streams.kafka.topic_admin import topic_id
from streams.p2p import epoch_timer
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition
from streams.p2p.snapshots import LedgerSnapshots
from streams.settings import Settings, pick_roles

# The role each input stands for (NEXUS_AGENTS picks a subset, as for the Faust worker).
ROLES: dict[str, Topic] = {"matching": ENERGY_ORDERS, "settlement": LEDGER_COMMANDS}


def matching_processor(settings: Settings) -> RecordProcessor:
    return RecordProcessor(
        ENERGY_ORDERS, MatchingPartition, settings.bootstrap_servers, settings.max_ingress_message_bytes
    )


def ledger_processor(settings: Settings) -> RecordProcessor:
    """The ledger, restored from its newest usable snapshot and snapshotted every NEXUS_LEDGER_SNAPSHOT_EVERY_S; with
    snapshots on, its applied ids are on disk (streams/p2p/id_store.py), else in memory (a restart replays all)."""
    snapshots = None
    if settings.ledger_snapshot_every_s:
        directory = settings.data_dir / "snapshots" / settings.app_id
        snapshots = LedgerSnapshots(directory, topic_id(settings.bootstrap_servers, LEDGER_COMMANDS.name))
    epoch_timer.start(settings)  # the ledger's own DECLARE_DIVIDENDS, once per epoch
    staking = StakingConfig(settings.staking_lock_minutes * 60_000, settings.staking_unbonding_minutes * 60_000)
    factory = partial(LedgerPartition, staking=staking, schedule=epoch_timer.schedule_of(settings))
    return RecordProcessor(
        LEDGER_COMMANDS,
        factory if snapshots is None else snapshots.on_disk(factory),  # applied ids on disk, beside the snapshots
        settings.bootstrap_servers,
        settings.max_ingress_message_bytes,
        snapshots=snapshots,
        snapshot_every_s=settings.ledger_snapshot_every_s,
    )


BUILDERS = {"matching": matching_processor, "settlement": ledger_processor}


def roles_of(agents: str) -> list[str]:
    return pick_roles(agents, list(ROLES), "P2P loop")


def processors_for(agents: str, settings: Settings) -> dict[str, RecordProcessor]:
    """Input topic name -> its processor, for the roles in `agents` (empty = both)."""
    return {ROLES[role].name: BUILDERS[role](settings) for role in roles_of(agents)}
