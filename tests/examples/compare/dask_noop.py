"""N no-op tasks on a local Dask distributed cluster of 2 single-thread worker
processes; prints tasks per second.

Run by `small_chunks --compare` (tests/examples/small_chunks.rs). The cluster starts
first; the timing covers submitting the tasks and gathering every result.
"""
import sys
import time

import distributed
from distributed import Client, LocalCluster


def noop(i):
    return i


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(noop, range(100), pure=False))  # workers up and warm
        started = time.perf_counter()
        client.gather(client.map(noop, range(tasks), pure=False))
        elapsed = time.perf_counter() - started
    print(f"{tasks / elapsed:.0f} tasks/s (Dask distributed {distributed.__version__})")


if __name__ == "__main__":
    main()
