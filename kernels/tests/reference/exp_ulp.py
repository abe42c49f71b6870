#!/usr/bin/env python3
"""Finds where numpy's exp differs from the platform libm's on the acceptance tables.

numpy on an AVX-512 CPU computes `np.exp` of a float64 array with its own vector code,
which differs from libm's `exp` (what Rust's f64::exp calls) by one ulp on a few percent
of arguments. The Rust kernel computes the tables with libm. This script lists, for the
default `sa` schedule (T_k = 2·0.85^k, k < 30, d ≤ 3072), every argument where the two
differ, and scans every table the CLI can reach (k < 200, d ≤ 2·(1024 + 256·24)) for an
entry floor(exp·2^32) that the difference would move. Output: JSON on stdout, kept as
kernels/tests/fixtures/exp_ulp.json; the test `exp_ulp_differences_move_no_entry` checks
the Rust side against it.

    /tmp/cd_ref_venv/bin/python kernels/tests/reference/exp_ulp.py > kernels/tests/fixtures/exp_ulp.json
"""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..",
                                "shared", "reference", "change"))
import cdref  # noqa: E402

UNIT = 1.0 / 64


def args_for(T, dmax):
    d = np.arange(dmax + 1, dtype=np.float64)
    return -d * UNIT / T


def libm_exp(a):
    return np.array([math.exp(x) for x in a])


def main():
    temps = cdref.temperature_schedule("geom", 2.0, 30, 0.85)
    diffs = []
    for k, T in enumerate(temps):
        a = args_for(T, 3072)
        e_np, e_lm = np.exp(a), libm_exp(a)
        for d in np.nonzero(e_np != e_lm)[0]:
            # numpy's value, in ulps from libm's
            ulps = int(np.int64(e_np[d].view(np.int64)) - np.int64(e_lm[d].view(np.int64)))
            diffs.append([k, int(d), ulps])
    moved = []
    n_ulp = 0
    for k, T in enumerate(cdref.temperature_schedule("geom", 2.0, 200, 0.85)):
        a = args_for(T, 2 * (1024 + 256 * 24))
        e_np, e_lm = np.exp(a), libm_exp(a)
        n_ulp += int((e_np != e_lm).sum())
        t_np = np.minimum(np.floor(e_np * 4294967296.0), 4294967295.0)
        t_lm = np.minimum(np.floor(e_lm * 4294967296.0), 4294967295.0)
        for d in np.nonzero(t_np != t_lm)[0]:
            moved.append([k, int(d), int(t_np[d]), int(t_lm[d])])
    from numpy._core._multiarray_umath import __cpu_features__ as features
    json.dump({"numpy": np.__version__,
               "avx512f": bool(features.get("AVX512F")),
               "default_sa_ulp_differences": diffs,
               "scan": {"sweeps": 200, "dmax": 2 * (1024 + 256 * 24), "ulp_differences": n_ulp,
                        "moved_entries": moved}}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
