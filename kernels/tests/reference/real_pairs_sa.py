#!/usr/bin/env python3
"""Writes the reference's mask sha256 for every real pair in shared/data/change.

The shared expected_results.json records only kappa/F1 for the real pairs; the Rust
bit-exactness test needs the mask hash of each. This script imports the reference
(cdref.py, untouched) and prints JSON {pair: {method: sha256}} for the methods the
Rust kernel implements, with the reference's parameters of run_benchmark.METHODS.

    /tmp/cd_ref_venv/bin/python kernels/tests/reference/real_pairs_sa.py \
        > kernels/tests/fixtures/real_pairs_expected.json
"""
import json
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
WORKSPACE = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SHARED = os.path.abspath(os.path.join(WORKSPACE, "..", "shared"))
sys.path.insert(0, os.path.join(SHARED, "reference", "change"))
import cdref  # noqa: E402
import run_benchmark  # noqa: E402

METHODS = {k: run_benchmark.METHODS[k] for k in ("sa", "icm_em", "otsu", "bayes_doc", "doc_literal")}


def pairs():
    root = os.path.join(SHARED, "data", "change")
    out = []
    for name in sorted(os.listdir(os.path.join(root, "sztaki"))):
        out.append(("sztaki/" + name, os.path.join(root, "sztaki", name)))
    out.append(("ottawa", os.path.join(root, "ottawa")))
    return out


def main():
    res = {}
    for tag, d in pairs():
        a = np.asarray(Image.open(os.path.join(d, "im1.png")))
        b = np.asarray(Image.open(os.path.join(d, "im2.png")))
        g = np.asarray(Image.open(os.path.join(d, "gt.png")))
        if g.ndim == 3:
            g = g[..., 0]
        row = {}
        for name, p in METHODS.items():
            mask, _ = cdref.detect(a, b, p)
            m = cdref.metrics(mask, g)
            row[name] = {"sha256": cdref.sha256(mask), "kappa": m["kappa"], "F1": m["F1"],
                         "FA": m["FP_false_alarms"], "MA": m["FN_missed"]}
        res[tag] = row
        print(tag, row["sa"]["sha256"], file=sys.stderr)
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
