"""A small FastAPI service: a to-do list kept in memory, served by uvicorn.

    pip install fastapi uvicorn
    thinlink dev -m uvicorn app:app --host 127.0.0.1 --port 8000

Edit it while it runs: a handler's body, its parameters (`/todos?done=true` once you add
`done: bool | None = None`), a new route, the `todos` router's routes. Each save is live
at once, in the same process: the to-do list you made is still there, and `/docs` shows
the new signatures.
"""

import os

import todos
from fastapi import Depends, FastAPI

app = FastAPI(title="to-do")


def owner() -> str:
    return "you"


@app.get("/")
def index(who: str = Depends(owner)):
    return {"message": f"{len(todos.TODOS)} things to do for {who}", "pid": os.getpid()}


app.include_router(todos.router, prefix="/todos")
