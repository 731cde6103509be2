"""Partitioning: clusters bounded in reaches and travel time, cluster DAG, waves, placement.

A :class:`Partition` cuts a :class:`~hydroscale.network.RiverNetwork` into clusters (connected
subtrees of big basins, and forests of small basins), numbers them in a topological order of
the cluster DAG, groups them into waves and pins each to a worker (DESIGN §3)::

    from hydroscale.partition import partition_network, travel_time_bound

    t = travel_time_bound("muskingum", params, substeps=24)  # [N] routing steps
    part = partition_network(net, max_reaches=1024, travel_time=t, max_travel_time=16.0,
                             n_workers=4)
    table = part.report()  # a text table; part.plot("partition.png") draws it
"""

from ._cut import PartitionError
from ._partition import Partition, network_checksums, partition_network
from ._travel import travel_time_bound

__all__ = [
    "Partition",
    "PartitionError",
    "network_checksums",
    "partition_network",
    "travel_time_bound",
]
