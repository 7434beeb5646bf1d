"""The to-do routes: a router included by the app at start."""

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

router = APIRouter()
TODOS: list[dict] = []  # kept across patches, lost on a restart


class Todo(BaseModel):
    title: str


@router.get("/")
def list_todos():
    return TODOS


@router.post("/")
def add_todo(todo: Todo):
    TODOS.append({"id": len(TODOS) + 1, "title": todo.title, "done": False})
    return TODOS[-1]


@router.post("/{todo_id}/done")
def finish(todo_id: int):
    for item in TODOS:
        if item["id"] == todo_id:
            item["done"] = True
            return item
    raise HTTPException(404, "no such to-do")
