#!/usr/bin/env python3
"""Reads filtermon's TensorBoard event files with TensorBoard's own reader.

    python scripts/check_tensorboard.py DIR

Every folder under DIR that holds event files is loaded the way `tensorboard --logdir DIR`
loads a run: EventAccumulator reads its files in name order, each up to a torn or corrupt
record, and checks every record's CRCs. Prints one JSON object,
{run: {tag: [[step, value], ...]}}, where run is the folder's path relative to DIR (`/`
between parts) and the points of each tag are in the order they were read.
"""

import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator


def load(root):
    runs = {}
    for folder, _dirs, files in sorted(os.walk(root)):
        if not any("tfevents" in name for name in files):
            continue
        # 0 keeps every point; the default keeps a random sample of 10,000 per tag.
        acc = event_accumulator.EventAccumulator(
            folder, size_guidance={event_accumulator.SCALARS: 0}
        )
        acc.Reload()
        run = os.path.relpath(folder, root).replace(os.sep, "/")
        runs[run] = {
            tag: [[e.step, e.value] for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]
        }
    return runs


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_tensorboard.py DIR")
    root = sys.argv[1]
    if not os.path.isdir(root):
        sys.exit(f"{root}: no such folder")
    json.dump(load(root), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
