"""A terminal simulation loop: a ball bouncing in a box, with a score.

Run it under `thinlink dev app.py` and edit `sim.py` while it runs: the next frame
uses the new code, and the ball, the score and the frame counter carry on.
"""

import argparse
import time

import sim

import hotpatch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--frames", type=int, default=0, help="stop after N frames (0: run forever)"
    )
    parser.add_argument("--fps", type=float, default=20.0)
    args = parser.parse_args()

    state = sim.State()
    frame = 0
    while not args.frames or frame < args.frames:
        # The outermost hotpatch.call is a safe point: patches land between frames.
        hotpatch.call(sim.step, state)
        print(hotpatch.call(sim.render, state), flush=True)
        frame += 1
        time.sleep(1 / args.fps)


if __name__ == "__main__":
    main()
