"""N no-op tasks on a local Ray cluster of 2 worker CPUs; prints tasks per second.

Run by `small_chunks --compare` (tests/examples/small_chunks.rs). Ray starts its
workers first; the timing covers submitting the tasks and getting every result.
"""
import sys
import time

import ray


@ray.remote
def noop(i):
    return i


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.get([noop.remote(i) for i in range(100)])  # workers up and warm
    started = time.perf_counter()
    ray.get([noop.remote(i) for i in range(tasks)])
    elapsed = time.perf_counter() - started
    ray.shutdown()
    print(f"{tasks / elapsed:.0f} tasks/s (Ray {ray.__version__})")


if __name__ == "__main__":
    main()
