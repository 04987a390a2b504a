#!/usr/bin/env python3
"""Peak resident memory of ONNX Runtime on one model, for BENCHMARKS.md's "Memory" section.

Loads MODEL into an onnxruntime session (one thread, CPU), runs it once on random inputs of
the declared shapes (open dims as 1), and exits. Measure the whole process the way hlstmc is
measured:

    /usr/bin/time -v python3 bench/ort_memory.py MODEL.onnx   # "Maximum resident set size"

The script prints its own peak (ru_maxrss, the same number) on its last line.
"""
import resource
import sys

import numpy as np
import onnxruntime as ort


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    outs = sess.run(None, feeds)
    print(f"outputs: {[o.shape for o in outs]}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
