"""The simulation: edit these functions while the app runs."""

from dataclasses import dataclass

WIDTH = 40


@dataclass
class State:
    x: int = 0
    dx: int = 1
    score: int = 0
    frames: int = 0


def step(state: State) -> None:
    state.frames += 1
    state.x += state.dx
    if state.x <= 0 or state.x >= WIDTH - 1:
        state.dx = -state.dx
        state.score += 1


def render(state: State) -> str:
    row = [" "] * WIDTH
    row[state.x] = "o"
    return f"|{''.join(row)}| score {state.score:3d}  frame {state.frames:4d}"
